use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

use super::*;
use crate::kube::mock::{self, Recorded, Reply, Store};

const MANIFESTS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: apps}
data: {level: info}
---
---
apiVersion: v1
kind: Namespace
metadata: {name: apps}
"#;

fn core_discovery() -> Reply {
    mock::resource_list(
        "v1",
        &[
            ("namespaces", "Namespace", false),
            ("configmaps", "ConfigMap", true),
            ("secrets", "Secret", true),
        ],
    )
}

/// A mock cluster serving core kinds, CRDs, and `example.com/v1 Widget` once its CRD exists.
type Log = Arc<Mutex<Vec<Recorded>>>;

fn cluster() -> (Client, Arc<Mutex<Store>>, Log) {
    let store = Arc::new(Mutex::new(Store::default()));
    let s = Arc::clone(&store);
    let (client, log) = mock::client(move |method, path, query, body| {
        let mut store = s.lock().unwrap();
        match path {
            "/api/v1" => core_discovery(),
            "/apis/apiextensions.k8s.io/v1" => mock::resource_list(
                "apiextensions.k8s.io/v1",
                &[(
                    "customresourcedefinitions",
                    "CustomResourceDefinition",
                    false,
                )],
            ),
            "/apis/example.com/v1" => {
                let established = store.objects.contains_key(
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
                );
                if established {
                    mock::resource_list("example.com/v1", &[("widgets", "Widget", true)])
                } else {
                    mock::status(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    )
                }
            }
            _ => {
                let reply = store.serve(method, path, query, body);
                // The mock CRD controller: an applied CRD is Established at once.
                if method == "PATCH"
                    && path.contains("/customresourcedefinitions/")
                    && !query.contains("dryRun")
                    && let Some(crd) = store.objects.get_mut(path)
                {
                    crd["status"] = json!({"conditions":[{"type":"Established","status":"True","reason":"InitialNamesAccepted"}]});
                }
                reply
            }
        }
    });
    (client, store, log)
}

fn writes(log: &Mutex<Vec<Recorded>>) -> Vec<Recorded> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|r| r.is_write())
        .cloned()
        .collect()
}

#[test]
fn parse_skips_empty_documents_and_flattens_lists() {
    let objs = parse_manifests(MANIFESTS).unwrap();
    assert_eq!(objs.len(), 2);
    let list = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n- {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n";
    let names: Vec<String> = parse_manifests(list)
        .unwrap()
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn parse_errors_name_the_document_and_never_echo_content() {
    let err =
        parse_manifests("apiVersion: v1\nkind: Secret\nmetadata: {namespace: x}\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "manifest document 0 has no metadata.name: every object needs apiVersion, kind and metadata.name"
    );
    let err = parse_manifests("---\nkind: Secret\nstringData: {token: \"hunter2\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("manifest document 0 is not valid YAML: syntax error at line"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn namespaces_then_crds_then_the_rest_in_author_order() {
    let yaml = r#"
apiVersion: example.com/v1
kind: Widget
metadata: {name: w, namespace: apps}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c, namespace: apps}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps}
"#;
    let sorted = sort_for_apply(parse_manifests(yaml).unwrap());
    let kinds: Vec<&str> = sorted.iter().map(kind_of).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "CustomResourceDefinition",
            "Widget",
            "ConfigMap"
        ]
    );
}

#[tokio::test]
async fn apply_creates_then_second_run_is_unchanged_without_writes() {
    let (client, _store, log) = cluster();
    let applier = Applier::new(client, ApplyOptions::default());
    let first = applier
        .apply(parse_manifests(MANIFESTS).unwrap())
        .await
        .unwrap();
    let summary: Vec<(String, ApplyAction)> = first
        .iter()
        .map(|o| (o.object.to_string(), o.action))
        .collect();
    assert_eq!(
        summary,
        [
            ("Namespace apps".to_owned(), ApplyAction::Created),
            ("ConfigMap apps/settings".to_owned(), ApplyAction::Created)
        ]
    );
    let w = writes(&log);
    assert_eq!(w.len(), 2);
    assert!(
        w.iter()
            .all(|r| r.method == "PATCH" && r.query.contains("fieldManager=kubestrap"))
    );
    assert!(w.iter().all(|r| !r.query.contains("force")));

    log.lock().unwrap().clear();
    let second = applier
        .apply(parse_manifests(MANIFESTS).unwrap())
        .await
        .unwrap();
    assert!(
        second.iter().all(|o| o.action == ApplyAction::Unchanged),
        "{second:?}"
    );
    assert!(writes(&log).is_empty(), "{:?}", writes(&log));
    // Discovery was cached: no second lookup of /api/v1.
    assert!(log.lock().unwrap().iter().all(|r| r.path != "/api/v1"));
}

#[tokio::test]
async fn a_changed_field_is_configured_and_planned_as_update() {
    let (client, _store, _log) = cluster();
    let applier = Applier::new(client, ApplyOptions::default());
    applier
        .apply(parse_manifests(MANIFESTS).unwrap())
        .await
        .unwrap();
    let changed = MANIFESTS.replace("level: info", "level: debug");
    let plan = applier
        .plan(parse_manifests(&changed).unwrap())
        .await
        .unwrap();
    assert_eq!(plan[0].action, PlanAction::Unchanged);
    assert_eq!(
        plan[1].action,
        PlanAction::Update {
            paths: vec!["/data/level".to_owned()]
        }
    );
    let applied = applier
        .apply(parse_manifests(&changed).unwrap())
        .await
        .unwrap();
    assert_eq!(applied[1].action, ApplyAction::Configured);
}

#[tokio::test]
async fn plan_on_empty_cluster_creates_and_unserved_kinds_would_be_created() {
    let (client, _store, log) = cluster();
    let applier = Applier::new(client, ApplyOptions::default());
    let yaml = format!(
        "{MANIFESTS}---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w, namespace: apps}}\n"
    );
    let plan = applier.plan(parse_manifests(&yaml).unwrap()).await.unwrap();
    let actions: Vec<&PlanAction> = plan.iter().map(|p| &p.action).collect();
    assert_eq!(actions[0], &PlanAction::Create);
    assert_eq!(actions[1], &PlanAction::Create);
    assert_eq!(
        actions[2],
        &PlanAction::WouldCreate {
            reason: "its kind is not served yet".to_owned()
        }
    );
    assert!(writes(&log).is_empty());
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|r| r.query.contains("dryRun=All"))
    );
}

#[tokio::test]
async fn crds_are_established_before_their_objects_are_applied() {
    let (client, store, _log) = cluster();
    let applier = Applier::new(client, ApplyOptions::default());
    let yaml = r#"
apiVersion: example.com/v1
kind: Widget
metadata: {name: w, namespace: apps}
spec: {size: 3}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec: {group: example.com}
"#;
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        applier.apply(parse_manifests(yaml).unwrap()),
    )
    .await
    .expect("apply finished")
    .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].object.to_string(), "Widget apps/w");
    assert!(
        store
            .lock()
            .unwrap()
            .objects
            .contains_key("/apis/example.com/v1/namespaces/apps/widgets/w")
    );
}

#[tokio::test]
async fn unreachable_api_plans_would_create() {
    // A client whose transport always fails.
    let svc = tower::service_fn(|_req: http::Request<::kube::client::Body>| async {
        Err::<http::Response<http_body_util::Full<bytes::Bytes>>, _>(std::io::Error::other(
            "connection refused",
        ))
    });
    let broken = Client::new(svc, "default");
    let applier = Applier::new(broken, ApplyOptions::default());
    let plan = applier
        .plan(parse_manifests(MANIFESTS).unwrap())
        .await
        .unwrap();
    assert!(plan.iter().all(|p| p.action
        == PlanAction::WouldCreate {
            reason: "the API is not reachable".to_owned()
        }));
}

#[tokio::test]
async fn a_field_manager_conflict_names_the_object_and_the_way_out() {
    let (client, _log) = mock::client(|method, path, _query, _body| match (method, path) {
        ("GET", "/api/v1") => core_discovery(),
        ("GET", _) => Reply::Json(
            200,
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings","namespace":"apps"},"data":{"level":"warn"}}),
        ),
        _ => mock::status(
            409,
            "Conflict",
            "Apply failed with 1 conflict: conflict with \"kubectl\" using v1: .data.level",
        ),
    });
    let applier = Applier::new(client, ApplyOptions::default());
    let obj = parse_manifests(MANIFESTS).unwrap().remove(0);
    let err = applier.apply_one(obj).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "ConfigMap apps/settings: dry-run apply was rejected by the API (409 Conflict): Apply failed with 1 conflict: \
         conflict with \"kubectl\" using v1: .data.level: another field manager owns these fields; change them there, \
         or apply with force to take them over"
    );
}

fn secret(labels: Option<(&str, &str)>) -> Secret {
    let mut s: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "flux-system", "namespace": "flux-system"},
        "stringData": {"username": "git", "password": "canary-not-logged"}
    }))
    .unwrap();
    if let Some((k, v)) = labels {
        s.metadata.labels = Some([(k.to_owned(), v.to_owned())].into());
    }
    s
}

#[tokio::test]
async fn create_if_absent_creates_once_and_never_overwrites() {
    let (client, store, log) = cluster();
    assert!(
        create_secret_if_absent(&client, &secret(None))
            .await
            .unwrap()
    );
    assert!(
        !create_secret_if_absent(&client, &secret(None))
            .await
            .unwrap()
    );
    let w = writes(&log);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].method, "POST");
    assert_eq!(w[0].path, "/api/v1/namespaces/flux-system/secrets");
    assert!(
        store
            .lock()
            .unwrap()
            .objects
            .contains_key("/api/v1/namespaces/flux-system/secrets/flux-system")
    );
    assert_eq!(
        plan_secret_if_absent(&client, "flux-system", "flux-system")
            .await
            .unwrap(),
        PlanAction::Unchanged
    );
    assert_eq!(
        plan_secret_if_absent(&client, "flux-system", "other")
            .await
            .unwrap(),
        PlanAction::Create
    );
}

#[tokio::test]
async fn create_if_absent_refuses_gitops_tracking_labels() {
    let (client, _store, log) = cluster();
    let err = create_secret_if_absent(
        &client,
        &secret(Some(("kustomize.toolkit.fluxcd.io/name", "x"))),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("kustomize.toolkit.fluxcd.io/name"),
        "{err}"
    );
    assert!(!err.to_string().contains("canary"), "{err}");
    assert!(log.lock().unwrap().is_empty());
}

#[test]
fn offline_plan_would_create_everything_in_apply_order() {
    let plan = plan_offline(
        parse_manifests(MANIFESTS).unwrap(),
        "the cluster does not exist yet",
    )
    .unwrap();
    let names: Vec<String> = plan.iter().map(|p| p.object.to_string()).collect();
    assert_eq!(names, ["Namespace apps", "ConfigMap apps/settings"]);
    assert!(plan.iter().all(|p| p.action
        == PlanAction::WouldCreate {
            reason: "the cluster does not exist yet".to_owned()
        }));
}
