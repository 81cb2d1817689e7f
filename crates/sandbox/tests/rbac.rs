//! RBAC in the sandbox as a k3s apiserver enforces it, driven by kube-rs with the admin
//! kubeconfig and with service-account tokens (issue 9: before, any token could do anything).

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kubestrap_sandbox::{SandboxConfig, SandboxHandle};
use kubestrap_test_support::{
    apply_yaml, kube_client_with_token, kube_config, start_sandbox, within,
};
use serde_json::{Value, json};

async fn start(dir: &std::path::Path) -> (SandboxHandle, Client) {
    start_sandbox(SandboxConfig::new(dir)).await
}

/// Namespace `team` with service account `bot`, Secrets `keys` and `other`, and a pod.
async fn team(c: &Client) {
    apply_yaml(c, include_str!("fixtures/rbac-team.yaml")).await;
}

async fn token_for(c: &Client, ns: &str, sa: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), ns);
    within(
        "token",
        sas.create_token_request(sa, &PostParams::default(), &TokenRequest::default()),
    )
    .await
    .expect("token")
    .status
    .expect("status")
    .token
}

/// `(code, reason, message)` of an API error.
fn status(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

const BOT: &str = "system:serviceaccount:team:bot";

/// Issue 9: the sandbox let any service-account token do anything. Now a token gets exactly
/// what RBAC grants it, on every path (reads, lists, watches, port-forwards, logs, tokens, the
/// admin API), and a denial is the apiserver's Forbidden, word for word.
#[tokio::test]
async fn service_account_tokens_get_only_what_rbac_grants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    team(&c).await;
    let bot = kube_client_with_token(&h, &token_for(&c, "team", "bot").await).await;
    let secrets: Api<Secret> = Api::namespaced(bot.clone(), "team");
    let e = within("get", secrets.get("keys"))
        .await
        .expect_err("no grant");
    assert_eq!(
        status(e),
        (
            403,
            "Forbidden".into(),
            format!(
                r#"secrets "keys" is forbidden: User "{BOT}" cannot get resource "secrets" in API group "" in the namespace "team""#
            )
        )
    );
    let e = within("list", secrets.list(&ListParams::default()))
        .await
        .expect_err("no grant");
    assert_eq!(
        status(e).2,
        format!(
            r#"secrets is forbidden: User "{BOT}" cannot list resource "secrets" in API group "" in the namespace "team""#
        )
    );
    let e = within("watch", secrets.watch(&WatchParams::default(), "0"))
        .await
        .err()
        .expect("watch denied");
    assert_eq!(status(e).0, 403);
    let pods: Api<Pod> = Api::namespaced(bot.clone(), "team");
    let e = within("log", pods.logs("web", &Default::default()))
        .await
        .expect_err("no grant");
    assert_eq!(
        status(e).2,
        format!(
            r#"pods "web" is forbidden: User "{BOT}" cannot get resource "pods/log" in API group "" in the namespace "team""#
        )
    );
    let e = within("port-forward", pods.portforward("web", &[80]))
        .await
        .err()
        .expect("port-forward denied");
    assert!(format!("{e:?}").contains("403"), "{e:?}");
    let sas: Api<ServiceAccount> = Api::namespaced(bot.clone(), "team");
    let e = within(
        "token",
        sas.create_token_request("bot", &PostParams::default(), &TokenRequest::default()),
    )
    .await
    .expect_err("no grant");
    assert_eq!(
        status(e).2,
        format!(
            r#"serviceaccounts "bot" is forbidden: User "{BOT}" cannot create resource "serviceaccounts/token" in API group "" in the namespace "team""#
        )
    );
    let req = http::Request::builder()
        .uri("/sandbox/v1/writes")
        .body(Vec::new())
        .expect("req");
    let e = within("admin api", bot.request::<Value>(req))
        .await
        .expect_err("admin only");
    assert_eq!(status(e).0, 403);
    // Discovery and version are everyone's (system:discovery, system:public-info-viewer).
    within("version", bot.apiserver_version())
        .await
        .expect("version");
    within("discovery", bot.list_api_groups())
        .await
        .expect("groups");

    // resourceNames: get/list/watch of the named Secret only; a bare list names nothing.
    apply_yaml(
        &c,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: keys-reader, namespace: team}
rules:
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [keys]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: keys-reader, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: keys-reader}
subjects:
- {kind: ServiceAccount, name: bot, namespace: team}
"#,
    )
    .await;
    within("get keys", secrets.get("keys"))
        .await
        .expect("granted by name");
    assert_eq!(
        status(
            within("get other", secrets.get("other"))
                .await
                .expect_err("other name")
        )
        .0,
        403
    );
    assert_eq!(
        status(
            within("list", secrets.list(&ListParams::default()))
                .await
                .expect_err("unnamed")
        )
        .0,
        403
    );
    let pinned = within(
        "list pinned",
        secrets.list(&ListParams::default().fields("metadata.name=keys")),
    )
    .await
    .expect("a field selector on the name names it");
    assert_eq!(pinned.items.len(), 1);
    let other_ns: Api<Secret> = Api::namespaced(bot.clone(), "default");
    assert_eq!(
        status(
            within("other ns", other_ns.list(&ListParams::default()))
                .await
                .expect_err("scoped")
        )
        .0,
        403
    );

    // `edit` in the namespace: port-forward, logs and tokens too.
    apply_yaml(
        &c,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bot-edit, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects:
- {kind: ServiceAccount, name: bot, namespace: team}
"#,
    )
    .await;
    within("list", secrets.list(&ListParams::default()))
        .await
        .expect("edit lists secrets");
    within("log", pods.logs("web", &Default::default()))
        .await
        .expect("edit reads logs");
    within(
        "token",
        sas.create_token_request("bot", &PostParams::default(), &TokenRequest::default()),
    )
    .await
    .expect("edit creates tokens");
    h.shutdown().await.expect("shutdown");
}

/// `kubectl auth can-i` and webhook authorizers ask SelfSubjectAccessReview and
/// SubjectAccessReview; impersonation (`--as`) is itself authorized with verb `impersonate`.
#[tokio::test]
async fn access_reviews_and_impersonation_answer_from_the_same_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    team(&c).await;
    let post = |client: Client, path: &str, body: Value| {
        let req = http::Request::builder()
            .method("POST")
            .uri(path)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).expect("json"))
            .expect("req");
        async move { client.request::<Value>(req).await }
    };
    let attrs = json!({"namespace": "team", "verb": "get", "resource": "secrets"});
    let sar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": BOT, "groups": ["system:serviceaccounts", "system:serviceaccounts:team", "system:authenticated"], "resourceAttributes": attrs}});
    let r = within(
        "sar",
        post(
            c.clone(),
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            sar.clone(),
        ),
    )
    .await
    .expect("sar");
    assert_eq!(r["status"]["allowed"], false);
    let mut as_bot = kube_config(&h).await;
    as_bot.auth_info.impersonate = Some(BOT.into());
    let as_bot = Client::try_from(as_bot).expect("client");
    let ssar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attrs}});
    let r = within(
        "ssar as bot",
        post(
            as_bot.clone(),
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            ssar.clone(),
        ),
    )
    .await
    .expect("ssar");
    assert_eq!(r["status"]["allowed"], false);
    let r = within(
        "ssar as admin",
        post(
            c.clone(),
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            ssar.clone(),
        ),
    )
    .await
    .expect("ssar");
    assert_eq!(r["status"]["allowed"], true);
    apply_yaml(
        &c,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bot-edit, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects:
- {kind: ServiceAccount, name: bot, namespace: team}
"#,
    )
    .await;
    let r = within(
        "sar",
        post(
            c.clone(),
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            sar,
        ),
    )
    .await
    .expect("sar");
    assert_eq!(r["status"]["allowed"], true);
    assert_eq!(
        r["status"]["reason"],
        r#"RBAC: allowed by RoleBinding "bot-edit/team" of ClusterRole "edit" to ServiceAccount "bot/team""#
    );
    let r = within(
        "ssar as bot",
        post(
            as_bot.clone(),
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            ssar,
        ),
    )
    .await
    .expect("ssar");
    assert_eq!(r["status"]["allowed"], true);
    // The impersonated request itself runs as the account.
    let secrets: Api<Secret> = Api::namespaced(as_bot.clone(), "team");
    within("as bot", secrets.get("keys"))
        .await
        .expect("edit reads secrets");
    let default_secrets: Api<Secret> = Api::namespaced(as_bot, "default");
    assert_eq!(
        status(
            within("elsewhere", default_secrets.list(&ListParams::default()))
                .await
                .expect_err("team only")
        )
        .0,
        403
    );
    // A service account may not impersonate without the verb.
    let bot_token = token_for(&c, "team", "bot").await;
    let mut cfg = kube_config(&h).await;
    cfg.auth_info.token = Some(bot_token.into());
    cfg.auth_info.impersonate = Some("alice".into());
    let bot_as_alice = Client::try_from(cfg).expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(bot_as_alice, "team");
    let e = within("impersonate", cms.list(&ListParams::default()))
        .await
        .expect_err("no impersonate grant");
    assert_eq!(
        status(e).2,
        format!(
            r#"users "alice" is forbidden: User "{BOT}" cannot impersonate resource "users" in API group "" at the cluster scope"#
        )
    );
    // SelfSubjectRulesReview lists what the account holds in the namespace.
    let bot = kube_client_with_token(&h, &token_for(&c, "team", "bot").await).await;
    let r = within(
        "rules",
        post(bot, "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": "team"}})),
    )
    .await
    .expect("ssrr");
    let rules = r["status"]["resourceRules"].as_array().expect("rules");
    assert!(
        rules.iter().any(|r| r["resources"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("secrets")))
            && r["verbs"]
                .as_array()
                .is_some_and(|v| v.contains(&json!("get")))),
        "{rules:?}"
    );
    h.shutdown().await.expect("shutdown");
}

/// Escalation prevention: a namespace admin may write Roles and RoleBindings, but only for
/// permissions it holds itself; and a server-side apply that creates needs `create`.
#[tokio::test]
async fn rbac_writes_cannot_escalate_and_apply_creates_need_create() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, c) = start(dir.path()).await;
    team(&c).await;
    apply_yaml(
        &c,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bot-admin, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}
subjects:
- {kind: ServiceAccount, name: bot, namespace: team}
"#,
    )
    .await;
    let bot = kube_client_with_token(&h, &token_for(&c, "team", "bot").await).await;
    let roles: Api<Role> = Api::namespaced(bot.clone(), "team");
    let held: Role = serde_json::from_value(json!({"metadata": {"name": "readers"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}))
    .expect("role");
    within("held", roles.create(&PostParams::default(), &held))
        .await
        .expect("admin holds it");
    let more: Role = serde_json::from_value(json!({"metadata": {"name": "nodes"},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]}))
    .expect("role");
    let e = within("escalate", roles.create(&PostParams::default(), &more))
        .await
        .expect_err("not held");
    assert_eq!(
        status(e),
        (
            403,
            "Forbidden".into(),
            format!(
                "roles.rbac.authorization.k8s.io \"nodes\" is forbidden: user \"{BOT}\" (groups=[\"system:serviceaccounts\" \"system:serviceaccounts:team\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\" \"list\"]}}"
            )
        )
    );
    let bindings: Api<RoleBinding> = Api::namespaced(bot.clone(), "team");
    let to_admin: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "all"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "team"}]}))
    .expect("rb");
    let e = within("bind", bindings.create(&PostParams::default(), &to_admin))
        .await
        .expect_err("cannot bind what it does not hold");
    assert!(
        status(e)
            .2
            .contains("is attempting to grant RBAC permissions not currently held")
    );

    // Only `patch` on ConfigMaps: a server-side apply that would create is forbidden.
    apply_yaml(
        &c,
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: patcher, namespace: team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: patch-cm, namespace: team}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: patch-cm, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: patch-cm}
subjects:
- {kind: ServiceAccount, name: patcher, namespace: team}
"#,
    )
    .await;
    let patcher = kube_client_with_token(&h, &token_for(&c, "team", "patcher").await).await;
    let cms: Api<ConfigMap> = Api::namespaced(patcher, "team");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}});
    let e = within(
        "apply create",
        cms.patch("x", &PatchParams::apply("t"), &Patch::Apply(&cm)),
    )
    .await
    .expect_err("create-on-apply needs create");
    assert_eq!(
        status(e),
        (
            403,
            "Forbidden".into(),
            r#"configmaps "x" is forbidden: "#.into()
        )
    );
    let admin_cms: Api<ConfigMap> = Api::namespaced(c.clone(), "team");
    within(
        "admin creates",
        admin_cms.patch("x", &PatchParams::apply("t"), &Patch::Apply(&cm)),
    )
    .await
    .expect("admin");
    within(
        "apply update",
        cms.patch("x", &PatchParams::apply("t").force(), &Patch::Apply(&cm)),
    )
    .await
    .expect("patch on an existing object");
    h.shutdown().await.expect("shutdown");
}
