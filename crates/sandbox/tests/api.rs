//! The sandbox Kubernetes API driven by kube-rs over HTTPS, as kubestrap drives a real cluster.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kubestrap_sandbox::{FaultSpec, PodBackend, PodStream, SandboxConfig, SandboxHandle};
use kubestrap_test_support::{
    EchoBackend, kube_client_with_token, kube_config, start_sandbox, wait_for, within,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(dir: &std::path::Path) -> SandboxConfig {
    let mut c = SandboxConfig::new(dir);
    c.bookmark_interval = Duration::from_millis(200);
    c
}

async fn start(dir: &std::path::Path) -> (SandboxHandle, Client) {
    start_sandbox(config(dir)).await
}

async fn raw(client: &Client, method: &str, path: &str, body: &str) -> Value {
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "text/plain")
        .body(body.as_bytes().to_vec())
        .expect("request");
    within(path, client.request::<Value>(req))
        .await
        .expect("admin request")
}

fn api_code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn version_health_and_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    let v = within("version", c.apiserver_version())
        .await
        .expect("version");
    assert_eq!(v.major, "1");
    assert!(v.git_version.ends_with("+k3s1"));
    let ping = within(
        "ping",
        c.request_text(hyper::Request::get("/ping").body(vec![]).expect("req")),
    )
    .await
    .expect("ping");
    assert_eq!(ping, "pong");
    // Health and version need a credential too (k3s runs with anonymous-auth=false).
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(h.ca_pem().as_bytes()).expect("ca"))
        .build()
        .expect("http");
    for path in ["/version", "/readyz"] {
        let r = within(path, http.get(format!("{}{path}", h.url())).send())
            .await
            .expect("answer");
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    let ready = within(
        "readyz",
        c.request_text(hyper::Request::get("/readyz").body(vec![]).expect("req")),
    )
    .await
    .expect("readyz with the admin token");
    assert_eq!(ready, "ok");
    // A wrong token gets 401.
    let bad = kube_client_with_token(&h, "wrong").await;
    let err = within(
        "401",
        Api::<Namespace>::all(bad).list(&ListParams::default()),
    )
    .await
    .expect_err("401");
    assert_eq!(api_code(err).0, 401);
    h.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn crud_selectors_conflicts_and_write_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    let ns: Api<Namespace> = Api::all(c.clone());
    wait_for(&ns, "default", "default namespace", |_| true).await;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "default");
    let before = raw(&c, "GET", "/sandbox/v1/writes", "").await["count"]
        .as_u64()
        .expect("count");
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db", "labels": {"app": "db"}},
        "stringData": {"password": "hunter2"}
    }))
    .expect("secret");
    let created = within("create", secrets.create(&PostParams::default(), &s))
        .await
        .expect("create");
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        created.data.as_ref().expect("data")["password"].0,
        b"hunter2"
    );
    assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
    let dup = within("dup", secrets.create(&PostParams::default(), &s))
        .await
        .expect_err("dup");
    assert_eq!(api_code(dup), (409, "AlreadyExists".into()));

    let other: Secret =
        serde_json::from_value(json!({"metadata": {"name": "other", "labels": {"app": "web"}}}))
            .expect("secret");
    within("create", secrets.create(&PostParams::default(), &other))
        .await
        .expect("create other");
    let by_label = within(
        "list",
        secrets.list(&ListParams::default().labels("app=db")),
    )
    .await
    .expect("list");
    assert_eq!(by_label.items.len(), 1);
    assert!(by_label.metadata.resource_version.is_some());
    let by_field = within(
        "list",
        secrets.list(&ListParams::default().fields("metadata.name=other")),
    )
    .await
    .expect("list");
    assert_eq!(by_field.items[0].metadata.name.as_deref(), Some("other"));

    let mut stale = created.clone();
    stale.metadata.resource_version = Some("1".into());
    let e = within(
        "stale",
        secrets.replace("db", &PostParams::default(), &stale),
    )
    .await
    .expect_err("stale");
    assert_eq!(api_code(e), (409, "Conflict".into()));

    let e = within("missing", secrets.get("nope"))
        .await
        .expect_err("missing");
    assert_eq!(api_code(e), (404, "NotFound".into()));

    within("delete", secrets.delete("db", &DeleteParams::default()))
        .await
        .expect("delete");
    assert!(
        within("get", secrets.get_opt("db"))
            .await
            .expect("get")
            .is_none()
    );

    let log = raw(&c, "GET", "/sandbox/v1/writes", "").await;
    assert_eq!(log["count"].as_u64().expect("count") - before, 3, "{log}");
    assert!(log["controllerCount"].as_u64().expect("controller writes") > 0);
    h.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn server_side_apply_merges_and_conflicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}});
    let applied = within(
        "apply",
        cms.patch("cfg", &PatchParams::apply("alice"), &Patch::Apply(&a)),
    )
    .await
    .expect("apply creates");
    let mf = applied.metadata.managed_fields.expect("managed fields");
    assert_eq!(mf[0].manager.as_deref(), Some("alice"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"b": "2"}});
    let merged = within(
        "apply b",
        cms.patch("cfg", &PatchParams::apply("bob"), &Patch::Apply(&b)),
    )
    .await
    .expect("apply merges");
    let data = merged.data.expect("data");
    assert_eq!((data["a"].as_str(), data["b"].as_str()), ("1", "2"));

    let conflicting = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "9"}});
    let e = within(
        "conflict",
        cms.patch(
            "cfg",
            &PatchParams::apply("bob"),
            &Patch::Apply(&conflicting),
        ),
    )
    .await
    .expect_err("conflict");
    match e {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert!(
                s.message.contains("conflict with \"alice\""),
                "{}",
                s.message
            );
        }
        other => panic!("{other:?}"),
    }
    let forced = within(
        "force",
        cms.patch(
            "cfg",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(&conflicting),
        ),
    )
    .await
    .expect("force");
    assert_eq!(forced.data.expect("data")["a"], "9");
    // Missing field manager is 422.
    let e = within(
        "no manager",
        cms.patch("cfg", &PatchParams::default(), &Patch::Apply(&a)),
    )
    .await
    .expect_err("422");
    assert_eq!(api_code(e).0, 422);
    h.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let before = raw(&c, "GET", "/sandbox/v1/writes", "").await["count"].clone();
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "dry"}, "data": {"k": "v"}}))
            .expect("cm");
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let out = within("dry create", cms.create(&pp, &cm))
        .await
        .expect("dry create");
    assert_eq!(out.metadata.name.as_deref(), Some("dry"));
    assert!(
        within("get", cms.get_opt("dry"))
            .await
            .expect("get")
            .is_none()
    );
    let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dry2"}, "data": {"k": "v"}});
    let mut pp = PatchParams::apply("orch");
    pp.dry_run = true;
    within("dry apply", cms.patch("dry2", &pp, &Patch::Apply(&a)))
        .await
        .expect("dry apply");
    assert!(
        within("get", cms.get_opt("dry2"))
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(
        raw(&c, "GET", "/sandbox/v1/writes", "").await["count"],
        before
    );
    h.shutdown().await.expect("shutdown");
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .expect("deployment")
}

#[tokio::test]
async fn status_subresource_and_workload_controllers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    within(
        "create",
        deps.create(&PostParams::default(), &deployment("web", 2)),
    )
    .await
    .expect("create");
    let ready = wait_for(&deps, "web", "deployment available", |d| {
        d.status.as_ref().and_then(|s| s.available_replicas) == Some(2)
    })
    .await;
    let conds = ready
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .expect("conditions");
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
    );
    assert_eq!(ready.metadata.generation, Some(1));
    let rss: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(c.clone(), "default");
    let owned = within(
        "replicasets",
        rss.list(&ListParams::default().labels("app=web")),
    )
    .await
    .expect("replicasets");
    assert_eq!(owned.items.len(), 1, "one ReplicaSet per template");
    assert_eq!(
        owned.items[0]
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .map(|o| o.kind.as_str()),
        Some("Deployment")
    );
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let listed = within("pods", pods.list(&ListParams::default().labels("app=web")))
        .await
        .expect("pods");
    assert_eq!(listed.items.len(), 2);
    assert!(listed.items.iter().all(|p| {
        p.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("web-"))
    }));

    // A status write ignores spec; a spec write ignores status and bumps generation.
    let st = within(
        "status patch",
        deps.patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 7}, "status": {"observedGeneration": 42}})),
        ),
    )
    .await
    .expect("status patch");
    assert_eq!(st.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let sp = within(
        "spec patch",
        deps.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}, "status": {"replicas": 99}})),
        ),
    )
    .await
    .expect("spec patch");
    assert_eq!(sp.metadata.generation, Some(2));
    assert_ne!(sp.status.as_ref().and_then(|s| s.replicas), Some(99));
    wait_for(&deps, "web", "scaled down", |d| {
        d.status.as_ref().and_then(|s| s.replicas) == Some(1)
            && d.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
    })
    .await;

    let sts: Api<StatefulSet> = Api::namespaced(c.clone(), "default");
    let s: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "vault"},
        "spec": {"replicas": 1, "serviceName": "vault", "selector": {"matchLabels": {"app": "vault"}},
            "template": {"metadata": {"labels": {"app": "vault"}}, "spec": {"containers": [{"name": "vault", "image": "hashicorp/vault"}]}}}
    }))
    .expect("sts");
    within("sts", sts.create(&PostParams::default(), &s))
        .await
        .expect("sts create");
    wait_for(&pods, "vault-0", "vault-0 ready", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await;
    wait_for(&sts, "vault", "sts ready", |s| {
        s.status.as_ref().and_then(|s| s.ready_replicas) == Some(1)
    })
    .await;
    // A Job's pod runs to completion and the Job becomes Complete.
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(c.clone(), "default");
    let job = serde_json::from_value(json!({"metadata": {"name": "migrate"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "busybox"}]}}}}))
    .expect("job");
    within("job", jobs.create(&PostParams::default(), &job))
        .await
        .expect("job");
    wait_for(&jobs, "migrate", "job complete", |j| {
        j.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            })
    })
    .await;
    // A Service over the pods gets Endpoints with the ready pod.
    let svcs: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(c.clone(), "default");
    let svc = serde_json::from_value(json!({"metadata": {"name": "vault"},
        "spec": {"selector": {"app": "vault"}, "ports": [{"name": "http", "port": 8200}]}}))
    .expect("svc");
    within("svc", svcs.create(&PostParams::default(), &svc))
        .await
        .expect("svc");
    let eps: Api<k8s_openapi::api::core::v1::Endpoints> = Api::namespaced(c.clone(), "default");
    wait_for(&eps, "vault", "endpoints", |e| {
        e.subsets
            .as_ref()
            .and_then(|s| s.first())
            .and_then(|s| s.addresses.as_ref())
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    // Deleting the owner garbage-collects its pods.
    within("delete sts", sts.delete("vault", &DeleteParams::default()))
        .await
        .expect("delete");
    within("gc", async {
        while pods.get_opt("vault-0").await.expect("get").is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let nodes: Api<Node> = Api::all(c.clone());
    let node = wait_for(&nodes, "sandbox", "node ready", |n| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await;
    assert!(
        node.metadata
            .labels
            .expect("labels")
            .contains_key("node-role.kubernetes.io/control-plane")
    );
    h.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn watch_delivers_events_bookmarks_and_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let list = within("list", cms.list(&ListParams::default()))
        .await
        .expect("list");
    let rv = list.metadata.resource_version.expect("rv");
    let wp = WatchParams::default().timeout(10);
    let mut stream = within("watch", cms.watch(&wp, &rv))
        .await
        .expect("watch")
        .boxed();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "w1"}})).expect("cm");
    within("create", cms.create(&PostParams::default(), &cm))
        .await
        .expect("create");
    within("delete", cms.delete("w1", &DeleteParams::default()))
        .await
        .expect("delete");
    let (mut added, mut deleted, mut bookmark) = (false, false, false);
    within("events", async {
        while !(added && deleted && bookmark) {
            match stream
                .try_next()
                .await
                .expect("event")
                .expect("stream open")
            {
                WatchEvent::Added(o) if o.metadata.name.as_deref() == Some("w1") => added = true,
                WatchEvent::Deleted(o) if o.metadata.name.as_deref() == Some("w1") => {
                    deleted = true
                }
                WatchEvent::Bookmark(_) => bookmark = true,
                _ => {}
            }
        }
    })
    .await;
    // After compaction, a watch from the old version gets 410 Expired.
    raw(&c, "POST", "/sandbox/v1/compact", "").await;
    let mut old = within("watch old", cms.watch(&WatchParams::default(), &rv))
        .await
        .expect("watch")
        .boxed();
    match within("410", old.try_next())
        .await
        .expect("event")
        .expect("event")
    {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected 410, got {other:?}"),
    }
    // kube-runtime's watcher lists, then watches.
    let mut w =
        kube::runtime::watcher(cms.clone(), kube::runtime::watcher::Config::default()).boxed();
    let cm2: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "w2"}})).expect("cm");
    within("create", cms.create(&PostParams::default(), &cm2))
        .await
        .expect("create");
    within("watcher sees w2", async {
        loop {
            match w.try_next().await.expect("watcher").expect("open") {
                kube::runtime::watcher::Event::Apply(o)
                | kube::runtime::watcher::Event::InitApply(o)
                    if o.metadata.name.as_deref() == Some("w2") =>
                {
                    return;
                }
                _ => {}
            }
        }
    })
    .await;
    // Streaming lists: initial ADDED events end with the initial-events-end bookmark.
    let mut streaming = kube::runtime::watcher(
        cms.clone(),
        kube::runtime::watcher::Config::default().streaming_lists(),
    )
    .boxed();
    let mut initial = Vec::new();
    within("streaming list", async {
        loop {
            match streaming.try_next().await.expect("watcher").expect("open") {
                kube::runtime::watcher::Event::InitApply(o) => {
                    initial.push(o.metadata.name.unwrap_or_default())
                }
                kube::runtime::watcher::Event::InitDone => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(initial.contains(&"w2".to_string()), "{initial:?}");
    h.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn crd_lifecycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}, "mode": {"type": "string", "default": "fast"}}},
                    "status": {"type": "object", "default": {"observedGeneration": -1}, "properties": {"observedGeneration": {"type": "integer"}}}}}}}]}
    }))
    .expect("crd");
    within("crd", crds.create(&PostParams::default(), &crd))
        .await
        .expect("create crd");
    wait_for(&crds, "widgets.example.com", "established", |c| {
        c.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
    })
    .await;
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    let w: DynamicObject = serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}}))
        .expect("widget");
    let created = within("widget", widgets.create(&PostParams::default(), &w))
        .await
        .expect("create widget");
    assert_eq!(
        created.data["spec"]["mode"], "fast",
        "schema defaults apply"
    );
    assert_eq!(
        created.data["status"]["observedGeneration"], -1,
        "status defaults apply"
    );
    let e = within(
        "strategic",
        widgets.patch(
            "w",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": 4}})),
        ),
    )
    .await
    .expect_err("415");
    assert_eq!(api_code(e).0, 415);
    // kube-rs discovery, aggregated and legacy, sees built-ins and the new kind.
    for aggregated in [true, false] {
        let d = kube::Discovery::new(c.clone());
        let d = if aggregated {
            within("aggregated discovery", d.run_aggregated()).await
        } else {
            within("discovery", d.run()).await
        }
        .expect("discovery");
        assert!(
            d.resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
                .is_some(),
            "aggregated={aggregated}"
        );
        let (res, caps) = d.resolve_gvk(&gvk).expect("widget discovered");
        assert_eq!(res.plural, "widgets");
        assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    }
    // Served in discovery.
    let disc = raw(&c, "GET", "/apis/example.com/v1", "").await;
    assert!(
        disc["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .any(|r| r["name"] == "widgets")
    );
    within(
        "delete crd",
        crds.delete("widgets.example.com", &DeleteParams::default()),
    )
    .await
    .expect("delete");
    let e = within("gone", widgets.get("w"))
        .await
        .expect_err("not served");
    assert_eq!(api_code(e).0, 404);
    // Instances went with the CRD: re-creating it does not bring them back.
    within("crd again", crds.create(&PostParams::default(), &crd))
        .await
        .expect("re-create crd");
    let e = within("still gone", widgets.get("w"))
        .await
        .expect_err("instances deleted");
    assert_eq!(api_code(e).0, 404);
    h.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn token_request_and_review() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "default");
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "eso"}})).expect("sa");
    within("sa", sas.create(&PostParams::default(), &sa))
        .await
        .expect("sa");
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["vault".into()],
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let issued = within(
        "token",
        sas.create_token_request("eso", &PostParams::default(), &tr),
    )
    .await
    .expect("token");
    let token = issued.status.expect("status").token;
    assert_eq!(token.split('.').count(), 3);
    let reviews: Api<TokenReview> = Api::all(c.clone());
    let review = |aud: &str| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.clone()),
            audiences: Some(vec![aud.to_string()]),
        },
        ..Default::default()
    };
    let ok = within(
        "review",
        reviews.create(&PostParams::default(), &review("vault")),
    )
    .await
    .expect("review");
    let st = ok.status.expect("status");
    assert_eq!(st.authenticated, Some(true));
    assert_eq!(
        st.user.expect("user").username.as_deref(),
        Some("system:serviceaccount:default:eso")
    );
    let wrong = within(
        "review",
        reviews.create(&PostParams::default(), &review("other")),
    )
    .await
    .expect("review");
    assert_ne!(wrong.status.expect("status").authenticated, Some(true));
    // A token for the API server's audience authenticates API requests as the account.
    let api_token = within(
        "api token",
        sas.create_token_request("eso", &PostParams::default(), &TokenRequest::default()),
    )
    .await
    .expect("token")
    .status
    .expect("status")
    .token;
    let as_sa = kube_client_with_token(&h, &api_token).await;
    // Authenticated as the account (403 names it; a bad token is 401), authorized by RBAC only.
    let denied = within(
        "list as sa",
        Api::<Namespace>::all(as_sa.clone()).list(&ListParams::default()),
    )
    .await
    .expect_err("no RBAC grant yet");
    match denied {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
            assert_eq!(
                s.message,
                r#"namespaces is forbidden: User "system:serviceaccount:default:eso" cannot list resource "namespaces" in API group "" at the cluster scope"#
            );
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    let crb: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "eso-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "eso", "namespace": "default"}],
    }))
    .expect("crb");
    within(
        "bind view",
        Api::all(c.clone()).create(&PostParams::default(), &crb),
    )
    .await
    .expect("binding");
    within(
        "list as sa",
        Api::<Namespace>::all(as_sa).list(&ListParams::default()),
    )
    .await
    .expect("service-account token authenticates, and view lets it list namespaces");
    within("delete sa", sas.delete("eso", &DeleteParams::default()))
        .await
        .expect("delete");
    let revoked = within(
        "review",
        reviews.create(&PostParams::default(), &review("vault")),
    )
    .await
    .expect("review");
    assert_ne!(revoked.status.expect("status").authenticated, Some(true));
    h.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn port_forward_reaches_the_pod_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    h.register_pod_backend("default", "echo", Arc::new(EchoBackend { port: 7 }));
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "echo"}, "spec": {"containers": [{"name": "e", "image": "echo"}]}}))
        .expect("pod");
    within("pod", pods.create(&PostParams::default(), &p))
        .await
        .expect("pod");
    wait_for(&pods, "echo", "running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    let mut pf = within("portforward", pods.portforward("echo", &[7]))
        .await
        .expect("portforward");
    let mut stream = pf.take_stream(7).expect("stream");
    within("write", stream.write_all(b"hello sandbox"))
        .await
        .expect("write");
    let mut buf = [0u8; 13];
    within("read", stream.read_exact(&mut buf))
        .await
        .expect("read");
    assert_eq!(&buf, b"hello sandbox");
    drop(stream);
    within("join", pf.join()).await.expect("clean close");
    h.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn state_persists_across_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "keep"}, "data": {"k": "v"}}))
            .expect("cm");
    let first = within("create", cms.create(&PostParams::default(), &cm))
        .await
        .expect("create");
    // A CRD and one of its objects survive too (the type is served again at start).
    h.apply_manifest(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: notes.example.com}\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {plural: notes, kind: Note}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}\n---\napiVersion: example.com/v1\nkind: Note\nmetadata: {name: n1}\ntext: hello\n",
        "test",
    )
    .expect("crd and note");
    let port = h.port();
    h.shutdown().await.expect("shutdown");

    let (h2, c2) = start(dir.path()).await;
    if h2.port() != port {
        // Only acceptable when something else took the port in between.
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_err(),
            "a restarted sandbox keeps its port when it is free"
        );
    }
    let cms2: Api<ConfigMap> = Api::namespaced(c2.clone(), "default");
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Note");
    let notes: Api<DynamicObject> = Api::namespaced_with(
        c2.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, "notes"),
    );
    let note = within("note", notes.get("n1"))
        .await
        .expect("custom object kept and served");
    assert_eq!(note.data["text"], "hello");
    let again = within("get", cms2.get("keep"))
        .await
        .expect("kept across restart");
    assert_eq!(again.metadata.uid, first.metadata.uid);
    let upd = within(
        "patch",
        cms2.patch(
            "keep",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "w"}})),
        ),
    )
    .await
    .expect("patch");
    let rv = |c: &ConfigMap| {
        c.metadata
            .resource_version
            .as_deref()
            .expect("rv")
            .parse::<u64>()
            .expect("int")
    };
    assert!(
        rv(&upd) > rv(&first),
        "resourceVersion keeps growing after a restart"
    );
    h2.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn faults_inject_errors_and_can_be_changed_at_run_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.faults = FaultSpec::parse("seed=1,api_error_rate=1,api_error=503").expect("spec");
    let (h, _) = start_sandbox(cfg).await;
    // kube-rs retries 503 by default; this test wants to see the fault itself.
    let mut kcfg = kube_config(&h).await;
    kcfg.default_retry = false;
    let c = Client::try_from(kcfg).expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let e = within("faulty list", cms.list(&ListParams::default()))
        .await
        .expect_err("503");
    assert_eq!(api_code(e).0, 503);
    let spec = raw(&c, "PUT", "/sandbox/v1/faults", "seed=1,api_error_rate=0").await;
    assert_eq!(spec["api_error_rate"], 0.0);
    within("healthy list", cms.list(&ListParams::default()))
        .await
        .expect("no faults now");
    h.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn namespace_deletion_waits_for_finalizers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    let nss: Api<Namespace> = Api::all(c.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "doomed"}})).expect("ns");
    within("ns", nss.create(&PostParams::default(), &ns))
        .await
        .expect("create ns");
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "doomed");
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
    )
    .expect("cm");
    within("cm", cms.create(&PostParams::default(), &cm))
        .await
        .expect("create cm");
    within("delete ns", nss.delete("doomed", &DeleteParams::default()))
        .await
        .expect("delete ns");
    let terminating = wait_for(&nss, "doomed", "terminating", |n| {
        n.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
    })
    .await;
    assert!(terminating.metadata.deletion_timestamp.is_some());
    // New content is refused while terminating.
    let late: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "late"}})).expect("cm");
    let e = within("late", cms.create(&PostParams::default(), &late))
        .await
        .expect_err("forbidden");
    assert_eq!(api_code(e).0, 403);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        within("still there", nss.get_opt("doomed"))
            .await
            .expect("get")
            .is_some(),
        "held by the finalizer"
    );
    within(
        "release",
        cms.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        ),
    )
    .await
    .expect("release finalizer");
    within("namespace gone", async {
        while nss.get_opt("doomed").await.expect("get").is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    h.shutdown().await.expect("shutdown");
}

/// Counts restarts and reports readiness, like a Vault that is Ready only when unsealed.
struct Restartable {
    deleted: std::sync::atomic::AtomicUsize,
    ready: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl PodBackend for Restartable {
    async fn connect(&self, _ns: &str, _pod: &str, _port: u16) -> Option<PodStream> {
        None
    }

    fn ready(&self, _ns: &str, _pod: &str) -> Option<bool> {
        Some(self.ready.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn pod_deleted(&self, _ns: &str, _pod: &str) {
        self.deleted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.ready.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn restart_fault_and_backend_readiness() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    let backend = Arc::new(Restartable {
        deleted: std::sync::atomic::AtomicUsize::new(0),
        ready: std::sync::atomic::AtomicBool::new(false),
    });
    h.register_pod_backend("default", "vault-0", backend.clone());
    let sts: Api<StatefulSet> = Api::namespaced(c.clone(), "default");
    let s: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "vault"},
        "spec": {"replicas": 1, "serviceName": "vault", "selector": {"matchLabels": {"app": "vault"}},
            "template": {"metadata": {"labels": {"app": "vault"}}, "spec": {"containers": [{"name": "vault", "image": "hashicorp/vault"}]}}}
    }))
    .expect("sts");
    within("sts", sts.create(&PostParams::default(), &s))
        .await
        .expect("sts");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let is_ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let running = wait_for(&pods, "vault-0", "running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    assert!(!is_ready(&running), "not ready while the backend says so");
    backend
        .ready
        .store(true, std::sync::atomic::Ordering::SeqCst);
    h.pod_readiness_changed("default", "vault-0");
    let first = wait_for(&pods, "vault-0", "ready", is_ready).await;

    raw(&c, "PUT", "/sandbox/v1/faults", "restart.vault=200ms").await;
    let again = wait_for(&pods, "vault-0", "recreated", |p| {
        p.metadata.uid != first.metadata.uid
    })
    .await;
    raw(&c, "PUT", "/sandbox/v1/faults", "").await;
    assert!(
        backend.deleted.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the backend saw its pod die"
    );
    assert!(
        !is_ready(&again),
        "a restarted pod is not Ready until its backend says so"
    );
    h.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn preinstalled_vault_objects_come_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    let objs = h
        .apply_manifest(kubestrap_sandbox::preinstall::VAULT, "helm")
        .expect("preinstall applies");
    assert_eq!(objs.len(), 7);
    let pods: Api<Pod> = Api::namespaced(c.clone(), "vault");
    wait_for(&pods, "vault-0", "vault-0 running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    let log = raw(&c, "GET", "/sandbox/v1/writes", "").await;
    assert_eq!(
        log["count"], 0,
        "installer writes are not client writes: {log}"
    );
    h.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn concurrent_writers_watch_sees_every_event_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let rv = within("list", cms.list(&ListParams::default()))
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut stream = within(
        "watch",
        cms.watch(&WatchParams::default().labels("load=yes"), &rv),
    )
    .await
    .expect("watch")
    .boxed();
    const WRITERS: usize = 8;
    const EACH: usize = 50;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let cms = cms.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let cm: ConfigMap = serde_json::from_value(
                    json!({"metadata": {"name": format!("load-{w}-{i}"), "labels": {"load": "yes"}}}),
                )
                .expect("cm");
                cms.create(&PostParams::default(), &cm).await.expect("create");
            }
        }));
    }
    for t in tasks {
        within("writers", t).await.expect("writer");
    }
    let mut seen = std::collections::HashSet::new();
    let mut last = 0u64;
    within("all events", async {
        while seen.len() < WRITERS * EACH {
            if let WatchEvent::Added(o) = stream.try_next().await.expect("event").expect("open") {
                let rv: u64 = o
                    .metadata
                    .resource_version
                    .as_deref()
                    .expect("rv")
                    .parse()
                    .expect("int");
                assert!(rv > last, "events arrive in resourceVersion order");
                last = rv;
                assert!(seen.insert(o.metadata.name.expect("name")), "no duplicates");
            }
        }
    })
    .await;
    h.shutdown().await.expect("shutdown");
}
