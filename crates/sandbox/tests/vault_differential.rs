//! The emulated Vault against a real OpenBao: the same requests, in the same order, to the
//! sandbox's Vault pod on each, comparing status codes and the JSON shape of every answer
//! (key sets and value types, not values). It keeps the emulator honest as both change.
//!
//! The emulator models HashiCorp Vault 1.19, and OpenBao is a fork of Vault; the differences
//! they are allowed to have are listed in [`KNOWN`], each with its reason. An unlisted difference
//! fails the test, and so does a listed one that no longer occurs (so the list stays true).
//!
//! Deliberate differences not visible in shapes (values are not compared): OpenBao's tokens
//! carry the legacy `s.` prefix where Vault's carry `hvs.`; versions differ (`1.19.0` vs
//! `2.7.2`); OpenBao's built-in plugin versions end in `+builtin.bao`.
//!
//! Skips loudly without a server binary (`KUBESTRAP_VAULT_SERVER`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kubestrap_sandbox::{SandboxConfig, SandboxHandle};
use kubestrap_test_support::{
    apply, forward, start_sandbox, vault_server_or_skip, vault_wait_active, vault_wait_kv2,
    wait_pod_running, within,
};
use serde_json::{Value, json};

/// A difference the two servers are allowed to have: in the steps `step` names (`*` for every
/// step, `name*` for a prefix), at JSON path `path` (`status` for the status code, `*` for any
/// JSON path, `*/key` for `key` at any depth), and why.
struct Known {
    step: &'static str,
    path: &'static str,
    why: &'static str,
}

const fn known(step: &'static str, path: &'static str, why: &'static str) -> Known {
    Known { step, path, why }
}

/// Every allowed difference, with its reason.
#[rustfmt::skip]
const KNOWN: &[Known] = &[
    // --- HashiCorp Vault 1.19 (the emulator's model) sends more health fields than OpenBao 2.7.
    known("*", "/performance_standby", "Vault-only health field (OpenBao has no performance standbys)"),
    known("*", "/enterprise", "Vault-only health field"),
    known("*", "/echo_duration_ms", "Vault-only health field"),
    known("*", "/clock_skew_ms", "Vault-only health field"),
    known("*", "/replication_primary_canary_age_ms", "Vault-only health field"),
    known("*", "/removed_from_cluster", "Vault 1.19 health and seal-status field"),
    // --- seal-status (also the body of sys/unseal).
    known("*", "/build_date", "Vault's field; OpenBao sends commit_date instead"),
    known("*", "/commit_date", "OpenBao's field; Vault sends build_date instead"),
    // --- The response envelope.
    known("*", "/mount_type", "Vault (1.14+) names the serving mount's type in every response; OpenBao does not"),
    // --- OpenBao's additions to KV v2 and ACL policies.
    known("kv_*", "/data/current_metadata_version", "OpenBao's KV v2 metadata versioning"),
    known("kv_*", "/data/metadata_cas_required", "OpenBao's KV v2 metadata check-and-set"),
    known("policy_read*", "*/version", "OpenBao's versioned policies"),
    known("policy_read*", "*/modified", "OpenBao's versioned policies"),
    known("policy_read*", "*/cas_required", "OpenBao's policy check-and-set"),
    known("policy_read*", "*/allow_slashes_in_identity_templates", "OpenBao's policy templating options"),
    known("policy_read*", "*/allow_wildcards_in_identity_templates", "OpenBao's policy templating options"),
    // --- The kubernetes auth plugin: Vault's is newer, OpenBao's dropped deprecated fields.
    known("k8s_config_read", "/data/use_annotations_as_alias_metadata", "Vault plugin field (0.19+), not in OpenBao"),
    known("k8s_role", "status", "Vault answers 200 with a warning for a role without an audience; OpenBao 204"),
    known("k8s_role", "/", "Vault's warning envelope vs OpenBao's empty 204"),
    known("k8s_role_read", "/data/audience", "Vault reports the audience even when unset; OpenBao omits it then"),
    known("k8s_role_read", "/data/max_ttl", "Vault's deprecated role field, removed from OpenBao"),
    known("k8s_role_read", "/data/num_uses", "Vault's deprecated role field, removed from OpenBao"),
    known("k8s_role_read", "/data/period", "Vault's deprecated role field, removed from OpenBao"),
    known("k8s_role_read", "/data/policies", "Vault's deprecated role field, removed from OpenBao"),
    known("k8s_role_read", "/data/ttl", "Vault's deprecated role field, removed from OpenBao"),
    known("k8s_role_read", "/data/token_strictly_bind_ip", "OpenBao-only token field"),
];

/// One request of the script.
struct Step {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    auth: Auth,
    body: Body,
}

#[derive(Clone, Copy)]
enum Auth {
    None,
    Root,
    Bogus,
    Login,
}

#[derive(Clone, Copy)]
enum Body {
    None,
    Json(&'static str),
    /// `{"key": <share n>}`.
    Share(usize),
    /// The kubernetes auth config for this sandbox (its CA).
    KubeConfig,
    /// A login with this sandbox's service-account token.
    Login(&'static str),
}

const fn step(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    auth: Auth,
    body: Body,
) -> Step {
    Step {
        name,
        method,
        path,
        auth,
        body,
    }
}

const POLICY: &str = r#"{"policy": "path \"secret/data/app/*\" { capabilities = [\"read\"] }"}"#;

/// The script: every unauthenticated seal endpoint in every state, then KV v2, policies,
/// kubernetes auth and a non-root token, as kubestrap and ESO use them.
#[rustfmt::skip]
const SCRIPT: &[Step] = &[
    step("health_uninitialised", "GET", "sys/health", Auth::None, Body::None),
    step("seal_status_uninitialised", "GET", "sys/seal-status", Auth::None, Body::None),
    step("init_status", "GET", "sys/init", Auth::None, Body::None),
    step("unseal_before_init", "PUT", "sys/unseal", Auth::None, Body::Json(r#"{"key":"abcd"}"#)),
    step("init", "PUT", "sys/init", Auth::None, Body::Json(r#"{"secret_shares":3,"secret_threshold":2}"#)),
    step("init_again", "PUT", "sys/init", Auth::None, Body::Json(r#"{"secret_shares":3,"secret_threshold":2}"#)),
    step("init_status_after", "GET", "sys/init", Auth::None, Body::None),
    step("health_sealed", "GET", "sys/health", Auth::None, Body::None),
    step("health_sealed_codes", "GET", "sys/health?sealedcode=204&uninitcode=204", Auth::None, Body::None),
    step("seal_status_sealed", "GET", "sys/seal-status", Auth::None, Body::None),
    step("mounts_when_sealed", "GET", "sys/mounts", Auth::Root, Body::None),
    step("seal_when_sealed", "PUT", "sys/seal", Auth::Root, Body::None),
    step("unseal_get", "GET", "sys/unseal", Auth::None, Body::None),
    step("unseal_empty", "PUT", "sys/unseal", Auth::None, Body::Json("{}")),
    step("unseal_not_a_key", "PUT", "sys/unseal", Auth::None, Body::Json(r#"{"key":"zz"}"#)),
    step("unseal_short_key", "PUT", "sys/unseal", Auth::None, Body::Json(r#"{"key":"deadbeef"}"#)),
    step("unseal_first", "PUT", "sys/unseal", Auth::None, Body::Share(0)),
    step("unseal_reset", "PUT", "sys/unseal", Auth::None, Body::Json(r#"{"reset":true}"#)),
    step("unseal_first_again", "PUT", "sys/unseal", Auth::None, Body::Share(0)),
    step("unseal_last", "PUT", "sys/unseal", Auth::None, Body::Share(1)),
    // (Both wait here until they are the active node, and before kv_write until the fresh
    // KV v2 mount is set up.)
    step("health_active", "GET", "sys/health", Auth::None, Body::None),
    step("seal_status_unsealed", "GET", "sys/seal-status", Auth::None, Body::None),
    step("unseal_when_unsealed", "PUT", "sys/unseal", Auth::None, Body::Share(2)),
    step("no_token", "GET", "sys/mounts", Auth::None, Body::None),
    step("bogus_token", "GET", "sys/mounts", Auth::Bogus, Body::None),
    step("enable_kv2", "POST", "sys/mounts/secret", Auth::Root, Body::Json(r#"{"type":"kv","options":{"version":"2"},"description":"app secrets"}"#)),
    step("enable_kv2_again", "POST", "sys/mounts/secret", Auth::Root, Body::Json(r#"{"type":"kv","options":{"version":"2"}}"#)),
    step("kv_write", "POST", "secret/data/app/db", Auth::Root, Body::Json(r#"{"data":{"user":"u","password":"p1"}}"#)),
    step("kv_write_cas", "POST", "secret/data/app/db", Auth::Root, Body::Json(r#"{"options":{"cas":1},"data":{"user":"u","password":"p2"}}"#)),
    step("kv_write_cas_stale", "POST", "secret/data/app/db", Auth::Root, Body::Json(r#"{"options":{"cas":1},"data":{"user":"u"}}"#)),
    step("kv_read", "GET", "secret/data/app/db", Auth::Root, Body::None),
    step("kv_read_version", "GET", "secret/data/app/db?version=1", Auth::Root, Body::None),
    step("kv_read_missing", "GET", "secret/data/app/none", Auth::Root, Body::None),
    step("kv_v1_path_on_v2", "GET", "secret/app/db", Auth::Root, Body::None),
    step("kv_metadata", "GET", "secret/metadata/app/db", Auth::Root, Body::None),
    step("kv_list", "LIST", "secret/metadata/app", Auth::Root, Body::None),
    step("kv_config", "GET", "secret/config", Auth::Root, Body::None),
    step("kv_delete", "DELETE", "secret/data/app/db", Auth::Root, Body::None),
    step("kv_read_deleted", "GET", "secret/data/app/db", Auth::Root, Body::None),
    step("kv_write_other", "POST", "secret/data/app/api", Auth::Root, Body::Json(r#"{"data":{"token":"t"}}"#)),
    step("kv_write_private", "POST", "secret/data/private", Auth::Root, Body::Json(r#"{"data":{"k":"v"}}"#)),
    step("policy_write", "PUT", "sys/policies/acl/reader", Auth::Root, Body::Json(POLICY)),
    step("policy_read", "GET", "sys/policies/acl/reader", Auth::Root, Body::None),
    step("policy_read_legacy", "GET", "sys/policy/reader", Auth::Root, Body::None),
    step("policy_list", "LIST", "sys/policies/acl", Auth::Root, Body::None),
    step("policy_missing", "GET", "sys/policies/acl/none", Auth::Root, Body::None),
    step("policy_bad", "PUT", "sys/policies/acl/bad", Auth::Root, Body::Json(r#"{"policy":"path {"}"#)),
    step("auth_enable", "POST", "sys/auth/kubernetes", Auth::Root, Body::Json(r#"{"type":"kubernetes"}"#)),
    step("k8s_config_missing", "GET", "auth/kubernetes/config", Auth::Root, Body::None),
    step("k8s_config", "POST", "auth/kubernetes/config", Auth::Root, Body::KubeConfig),
    step("k8s_config_read", "GET", "auth/kubernetes/config", Auth::Root, Body::None),
    step("k8s_role_unbound", "POST", "auth/kubernetes/role/bad", Auth::Root, Body::Json(r#"{"bound_service_account_names":["reader"]}"#)),
    step("k8s_role", "POST", "auth/kubernetes/role/reader", Auth::Root, Body::Json(r#"{"bound_service_account_names":["reader"],"bound_service_account_namespaces":["apps"],"token_policies":["reader"],"token_ttl":"1h"}"#),
    ),
    step("k8s_role_read", "GET", "auth/kubernetes/role/reader", Auth::Root, Body::None),
    step("k8s_role_list", "LIST", "auth/kubernetes/role", Auth::Root, Body::None),
    step("k8s_role_missing", "GET", "auth/kubernetes/role/none", Auth::Root, Body::None),
    step("k8s_login_unknown_role", "POST", "auth/kubernetes/login", Auth::None, Body::Login("none")),
    step("k8s_login", "POST", "auth/kubernetes/login", Auth::None, Body::Login("reader")),
    step("lookup_self", "GET", "auth/token/lookup-self", Auth::Login, Body::None),
    step("read_allowed", "GET", "secret/data/app/api", Auth::Login, Body::None),
    step("read_denied", "GET", "secret/data/private", Auth::Login, Body::None),
    step("write_denied", "POST", "secret/data/app/api", Auth::Login, Body::Json(r#"{"data":{"token":"x"}}"#)),
    step("seal", "PUT", "sys/seal", Auth::Root, Body::None),
    step("health_resealed", "GET", "sys/health", Auth::None, Body::None),
];

/// One sandbox whose Vault pod is the emulator or the real server, and what the script learns.
struct Target {
    label: &'static str,
    h: SandboxHandle,
    addr: String,
    jwt: String,
    keys: Vec<String>,
    root: String,
    login: String,
    _tmp: tempfile::TempDir,
}

async fn target(label: &'static str, vault_server: Option<PathBuf>) -> Target {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = SandboxConfig::new(tmp.path().join("sandbox"));
    cfg.preinstall_vault = true;
    cfg.vault_server = vault_server;
    let (h, c) = start_sandbox(cfg).await;
    wait_pod_running(&c, "vault", "vault-0").await;
    apply(
        &c,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}),
    )
    .await;
    apply(&c, json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader", "namespace": "apps"}})).await;
    // Both review logins with the login JWT (`disable_local_ca_jwt`, as a server outside a pod
    // does), so the account needs `create tokenreviews`.
    apply(&c, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "reader-tokenreview"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "apps"}]})).await;
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "apps");
    let jwt = within(
        "token",
        sas.create_token_request("reader", &PostParams::default(), &TokenRequest::default()),
    )
    .await
    .expect("token")
    .status
    .expect("status")
    .token;
    let addr = forward(&c, "vault", "vault-0", 8200).await;
    Target {
        label,
        h,
        addr,
        jwt,
        keys: Vec::new(),
        root: String::new(),
        login: String::new(),
        _tmp: tmp,
    }
}

impl Target {
    async fn send(&mut self, http: &reqwest::Client, s: &Step) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(s.method.as_bytes()).expect("method");
        let mut req = http.request(method, format!("{}/v1/{}", self.addr, s.path));
        let token = match s.auth {
            Auth::None => None,
            Auth::Root => Some(self.root.clone()),
            Auth::Bogus => Some("s.bogusbogusbogusbogus000".to_string()),
            Auth::Login => Some(self.login.clone()),
        };
        if let Some(t) = token {
            req = req.header("x-vault-token", t);
        }
        let body = match s.body {
            Body::None => None,
            Body::Json(j) => Some(serde_json::from_str::<Value>(j).expect("script json")),
            Body::Share(n) => Some(json!({"key": self.keys[n]})),
            Body::KubeConfig => Some(json!({
                "kubernetes_host": "https://kubernetes.default.svc",
                "kubernetes_ca_cert": self.h.ca_pem(),
                "disable_local_ca_jwt": true,
            })),
            Body::Login(role) => Some(json!({"role": role, "jwt": self.jwt})),
        };
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = within(s.name, req.send())
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", self.label, s.name));
        let code = resp.status().as_u16();
        let text = within(s.name, resp.text()).await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        match s.name {
            "init" => {
                self.keys = v["keys"]
                    .as_array()
                    .expect("keys")
                    .iter()
                    .map(|k| k.as_str().expect("key").to_string())
                    .collect();
                self.root = v["root_token"].as_str().expect("root").to_string();
            }
            "k8s_login" => {
                self.login = v["auth"]["client_token"].as_str().unwrap_or("").to_string()
            }
            _ => {}
        }
        (code, v)
    }
}

/// The shape of a JSON value: types instead of values; arrays by their first element.
fn shape(v: &Value) -> Value {
    match v {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
    }
}

/// Where two shapes differ: `(json path, what)`.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<(String, String)>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => diff(&p, u, v, out),
                    (Some(_), None) => out.push((p, "only in the emulator".into())),
                    (None, Some(_)) => out.push((p, "only in OpenBao".into())),
                    (None, None) => {}
                }
            }
        }
        // An empty array says nothing about its elements' type.
        (Value::Array(x), Value::Array(y)) => {
            if let (Some(u), Some(v)) = (x.first(), y.first()) {
                diff(&format!("{path}/0"), u, v, out);
            }
        }
        _ if a == b => {}
        _ => out.push((
            if path.is_empty() {
                "/".into()
            } else {
                path.to_string()
            },
            format!("{a} vs {b}"),
        )),
    }
}

/// The entry of [`KNOWN`] that allows a difference at `path` in `step`.
fn allowed(step: &str, path: &str) -> Option<usize> {
    KNOWN.iter().position(|k| {
        let step_ok = match k.step.strip_suffix('*') {
            Some(prefix) => step.starts_with(prefix),
            None => k.step == step,
        };
        let path_ok = match k.path {
            "*" => path != "status",
            p => match p.strip_prefix('*') {
                Some(suffix) => path.ends_with(suffix),
                None => p == path,
            },
        };
        step_ok && path_ok
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_answers_like_openbao() {
    let Some(server) = vault_server_or_skip("the_emulator_answers_like_openbao") else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let mut emu = target("emulator", None).await;
    let mut bao = target("openbao", Some(server)).await;
    let mut unexpected = Vec::new();
    let mut seen = vec![false; KNOWN.len()];
    let mut table = String::new();
    let mut codes = std::collections::BTreeMap::new();
    for s in SCRIPT {
        if s.name == "health_active" {
            vault_wait_active(&emu.addr).await;
            vault_wait_active(&bao.addr).await;
        }
        if s.name == "kv_write" {
            vault_wait_kv2(&emu.addr, &emu.root, "secret").await;
            vault_wait_kv2(&bao.addr, &bao.root, "secret").await;
        }
        let (ec, ev) = emu.send(&http, s).await;
        let (bc, bv) = bao.send(&http, s).await;
        table.push_str(&format!(
            "{:<28} {:<7} {:<44} {ec} {bc}\n",
            s.name, s.method, s.path
        ));
        codes.insert(s.name, (ec, bc));
        let mut found = Vec::new();
        if ec != bc {
            found.push(("status".to_string(), format!("{ec} vs {bc}")));
        }
        diff("", &shape(&ev), &shape(&bv), &mut found);
        for (path, what) in found {
            match allowed(s.name, &path) {
                Some(i) => seen[i] = true,
                None => unexpected.push(format!("{}: {path}: {what}", s.name)),
            }
        }
    }
    eprintln!("step / method / path / emulator status / OpenBao status\n{table}");
    // The script did what it means to on both (equal codes alone could be equal failures).
    for (step, want) in [
        ("init", 200),
        ("unseal_last", 200),
        ("health_active", 200),
        ("kv_write", 200),
        ("k8s_login", 200),
        ("lookup_self", 200),
        ("read_allowed", 200),
        ("read_denied", 403),
        ("health_resealed", 503),
    ] {
        assert_eq!(codes[step], (want, want), "{step}\n{table}");
    }
    let stale: Vec<String> = KNOWN
        .iter()
        .zip(&seen)
        .filter(|(_, s)| !**s)
        .map(|(k, _)| format!("{} {}: {}", k.step, k.path, k.why))
        .collect();
    assert!(
        unexpected.is_empty(),
        "the emulator differs from OpenBao:\n{}",
        unexpected.join("\n")
    );
    assert!(
        stale.is_empty(),
        "listed differences that no longer occur (remove them from KNOWN):\n{}",
        stale.join("\n")
    );
    emu.h.shutdown().await.expect("shutdown");
    bao.h.shutdown().await.expect("shutdown");
}

/// The chart objects of an OpenBao server under the static seal, as kubestrap's release makes
/// the openbao chart render them: the key Secret, the server configuration with its
/// `seal "static"` stanza, and a StatefulSet mounting the Secret where the stanza reads it.
const STATIC_SEAL_OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: openbao}
---
apiVersion: v1
kind: Secret
metadata: {name: openbao-static-seal, namespace: openbao}
stringData: {key: "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk="}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: openbao-config, namespace: openbao}
data:
  extraconfig-from-values.hcl: |
    ui = false
    listener "tcp" {
      tls_disable = 1
      address = "[::]:8200"
    }
    storage "raft" {
      path = "/openbao/data"
    }
    seal "static" {
      current_key_id = "kubestrap-1"
      current_key = "file:///openbao/userconfig/openbao-static-seal/key"
    }
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: openbao
  namespace: openbao
  labels: {app.kubernetes.io/name: openbao, app.kubernetes.io/instance: openbao}
spec:
  serviceName: openbao-internal
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: openbao, app.kubernetes.io/instance: openbao}
  template:
    metadata:
      labels: {app.kubernetes.io/name: openbao, app.kubernetes.io/instance: openbao}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 100, runAsGroup: 1000, fsGroup: 1000}
      containers:
      - name: openbao
        image: quay.io/openbao/openbao:2.6.2
        readinessProbe:
          httpGet: {path: "/v1/sys/health?standbyok=true&sealedcode=204&uninitcode=204", port: 8200}
        volumeMounts:
        - {name: static-seal-key, mountPath: /openbao/userconfig/openbao-static-seal, readOnly: true}
      volumes:
      - name: static-seal-key
        secret: {secretName: openbao-static-seal, defaultMode: 288}
"#;

/// One request of the static-seal script: name, method, path, body.
type StaticStep = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
);

/// What the servers answer under the static seal: before init, init with Shamir parameters
/// (refused) and with recovery shares, and after a pod restart (unsealed by itself).
const STATIC_SCRIPT: &[StaticStep] = &[
    (
        "static_seal_status_uninitialised",
        "GET",
        "sys/seal-status",
        None,
    ),
    ("static_health_uninitialised", "GET", "sys/health", None),
    (
        "static_init_shamir",
        "PUT",
        "sys/init",
        Some(r#"{"secret_shares":3,"secret_threshold":2}"#),
    ),
    (
        "static_init",
        "PUT",
        "sys/init",
        Some(r#"{"recovery_shares":3,"recovery_threshold":2}"#),
    ),
    ("static_seal_status", "GET", "sys/seal-status", None),
];

/// A sandbox with the static-seal objects, its Vault pod on the emulator or the real server.
async fn static_target(
    vault_server: Option<PathBuf>,
) -> (SandboxHandle, kube::Client, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = SandboxConfig::new(tmp.path().join("sandbox"));
    cfg.vault_server = vault_server;
    let (h, c) = start_sandbox(cfg).await;
    kubestrap_test_support::apply_yaml(&c, STATIC_SEAL_OBJECTS).await;
    wait_pod_running(&c, "openbao", "openbao-0").await;
    (h, c, tmp)
}

async fn static_send(http: &reqwest::Client, addr: &str, s: &StaticStep) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(s.1.as_bytes()).expect("method");
    let mut req = http.request(method, format!("{addr}/v1/{}", s.2));
    if let Some(body) = s.3 {
        req = req.json(&serde_json::from_str::<Value>(body).expect("script json"));
    }
    let resp = within(s.0, req.send()).await.expect(s.0);
    let code = resp.status().as_u16();
    let text = within(s.0, resp.text()).await.expect("body");
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The seal status after deleting the pod and waiting for its successor to run.
async fn after_restart(c: &kube::Client, http: &reqwest::Client) -> (u16, Value) {
    use k8s_openapi::api::core::v1::Pod;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "openbao");
    let old = pods.get("openbao-0").await.expect("pod").metadata.uid;
    pods.delete("openbao-0", &Default::default())
        .await
        .expect("delete");
    within("the restarted pod", async {
        loop {
            if let Ok(p) = pods.get("openbao-0").await
                && p.metadata.uid != old
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let addr = forward(c, "openbao", "openbao-0", 8200).await;
    // The emulator answers at once; the real server once its new process listens.
    vault_wait_active(&addr).await;
    static_send(
        http,
        &addr,
        &(
            "static_seal_status_restarted",
            "GET",
            "sys/seal-status",
            None,
        ),
    )
    .await
}

/// OpenBao's static seal, emulated and real, over the same pod objects: the same status codes
/// and JSON shapes (the differences in [`KNOWN`] aside), and both unsealed after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_answers_like_openbao_under_the_static_seal() {
    let Some(server) =
        vault_server_or_skip("the_emulator_answers_like_openbao_under_the_static_seal")
    else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let (emu_h, emu_c, _emu_tmp) = static_target(None).await;
    let (bao_h, bao_c, _bao_tmp) = static_target(Some(server)).await;
    let emu = forward(&emu_c, "openbao", "openbao-0", 8200).await;
    let bao = forward(&bao_c, "openbao", "openbao-0", 8200).await;
    let mut unexpected = Vec::new();
    let mut answers = Vec::new();
    for s in STATIC_SCRIPT {
        let e = static_send(&http, &emu, s).await;
        let b = static_send(&http, &bao, s).await;
        answers.push((s.0, e, b));
    }
    let e = after_restart(&emu_c, &http).await;
    let b = after_restart(&bao_c, &http).await;
    answers.push(("static_seal_status_restarted", e, b));
    for (name, (ec, ev), (bc, bv)) in &answers {
        let mut found = Vec::new();
        if ec != bc {
            found.push(("status".to_string(), format!("{ec} vs {bc}")));
        }
        diff("", &shape(ev), &shape(bv), &mut found);
        for (path, what) in found {
            if allowed(name, &path).is_none() {
                unexpected.push(format!(
                    "{name}: {path}: {what}\n  emulator {ev}\n  openbao  {bv}"
                ));
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "the emulator differs from OpenBao under the static seal:\n{}",
        unexpected.join("\n")
    );
    let by_name = |n: &str| answers.iter().find(|a| a.0 == n).expect(n);
    let (_, (ec, ev), (bc, bv)) = by_name("static_init_shamir");
    assert_eq!((*ec, *bc), (400, 400));
    assert_eq!(ev["errors"], bv["errors"], "the same refusal");
    for name in [
        "static_seal_status_uninitialised",
        "static_seal_status",
        "static_seal_status_restarted",
    ] {
        let (_, (_, ev), (_, bv)) = by_name(name);
        for field in [
            "type",
            "recovery_seal",
            "recovery_seal_type",
            "initialized",
            "sealed",
            "t",
            "n",
        ] {
            assert_eq!(ev[field], bv[field], "{name} {field}: {ev} vs {bv}");
        }
    }
    let (_, (_, ev), _) = by_name("static_seal_status_restarted");
    assert_eq!(ev["sealed"], false, "unsealed by itself after the restart");
    emu_h.shutdown().await.expect("shutdown");
    bao_h.shutdown().await.expect("shutdown");
}
