//! An in-process sandbox and the clients a test talks to it with.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::Scope;
use kube::{Client, Config};
use kubestrap_sandbox::{Sandbox, SandboxConfig, SandboxHandle};
use serde::Deserialize;
use serde_json::Value;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

use crate::wait::within;

/// Start a sandbox with `cfg` and connect an admin client to it (shut it down with
/// [`SandboxHandle::shutdown`], or let the test's runtime abort it).
///
/// # Panics
/// When it does not start in time.
pub async fn start_sandbox(cfg: SandboxConfig) -> (SandboxHandle, Client) {
    let handle = within("sandbox start", Sandbox::start(cfg))
        .await
        .expect("sandbox starts");
    let client = kube_client(&handle).await;
    (handle, client)
}

/// The kube-rs configuration of `handle`'s kubeconfig (admin token), for tests that change
/// the token or the retry policy before building a client.
///
/// # Panics
/// When the kubeconfig is unusable.
pub async fn kube_config(handle: &SandboxHandle) -> Config {
    kube_config_from(&handle.kubeconfig_path()).await
}

/// The kube-rs configuration of the kubeconfig file `path` (its current context).
///
/// # Panics
/// When the kubeconfig is unusable.
pub async fn kube_config_from(path: &std::path::Path) -> Config {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(path).expect("kubeconfig");
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config")
}

/// A kube-rs client on the kubeconfig file `path` (a sandbox started as a process).
///
/// # Panics
/// When the kubeconfig is unusable.
pub async fn kube_client_from(path: &std::path::Path) -> Client {
    Client::try_from(kube_config_from(path).await).expect("client")
}

/// An admin kube-rs client on `handle`'s kubeconfig, exactly as a user's.
///
/// # Panics
/// When the kubeconfig is unusable.
pub async fn kube_client(handle: &SandboxHandle) -> Client {
    Client::try_from(kube_config(handle).await).expect("client")
}

/// A client on `handle`'s API server that authenticates with `token` instead (e.g. a
/// service account's).
///
/// # Panics
/// When the kubeconfig is unusable.
pub async fn kube_client_with_token(handle: &SandboxHandle, token: &str) -> Client {
    let mut cfg = kube_config(handle).await;
    cfg.auth_info.token = Some(token.to_string().into());
    Client::try_from(cfg).expect("client")
}

/// Waits until pod `ns/name` exists, is not being deleted and is `Running`.
///
/// # Panics
/// When it is not within [`crate::DEFAULT_LIMIT`].
pub async fn wait_pod_running(c: &Client, ns: &str, name: &str) {
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    within(&format!("pod {ns}/{name} running"), async {
        loop {
            if let Ok(p) = pods.get(name).await
                && p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// A local TCP listener that forwards every connection through a new kube-rs port-forward to
/// `pod`'s `port`, as `kubectl port-forward` does. Returns `http://127.0.0.1:PORT`.
///
/// # Panics
/// When no local port can be bound.
pub async fn forward(c: &Client, ns: &str, pod: &str, port: u16) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let pod = pod.to_string();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let pods = pods.clone();
            let pod = pod.clone();
            tokio::spawn(async move {
                let Ok(mut pf) = pods.portforward(&pod, &[port]).await else {
                    return;
                };
                let Some(mut stream) = pf.take_stream(port) else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
                drop(stream);
                let _ = pf.join().await;
            });
        }
    });
    addr
}

/// A vaultrs client for `addr` with `token` (empty for unauthenticated calls).
///
/// # Panics
/// When the settings are invalid.
#[must_use]
pub fn vault_client(addr: &str, token: &str) -> VaultClient {
    VaultClient::new(
        VaultClientSettingsBuilder::default()
            .address(addr)
            .token(token)
            .build()
            .expect("vault settings"),
    )
    .expect("vault client")
}

/// Waits until Vault at `addr` is the active node (`GET /v1/sys/health` answers 200): a real
/// server answers 429 (standby) and refuses writes with 500 "local node not active" for up to
/// about 0.2 s after the last unseal key, while its raft node takes leadership. Raw HTTP, since
/// vaultrs cannot read OpenBao's health body.
///
/// # Panics
/// When Vault is not active within [`crate::DEFAULT_LIMIT`].
pub async fn vault_wait_active(addr: &str) {
    wait_vault_200(addr, "sys/health", None, "vault is not active").await;
}

/// Waits until the KV v2 mount `mount` of Vault at `addr` is set up (`GET
/// /v1/<mount>/config` answers 200 to `token`): right after `sys/mounts` creates it, a real
/// server answers 400 "Upgrading from non-versioned to versioned data" for a moment.
///
/// # Panics
/// When it is not set up within [`crate::DEFAULT_LIMIT`].
pub async fn vault_wait_kv2(addr: &str, token: &str, mount: &str) {
    let path = format!("{mount}/config");
    wait_vault_200(addr, &path, Some(token), "KV v2 is not set up").await;
}

/// Polls `GET <addr>/v1/<path>` (with `token`, if any) until it answers 200.
async fn wait_vault_200(addr: &str, path: &str, token: Option<&str>, failure: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let url = format!("{}/v1/{path}", addr.trim_end_matches('/'));
    let mut last = String::new();
    let answered = tokio::time::timeout(crate::DEFAULT_LIMIT, async {
        loop {
            let mut req = http.get(&url);
            if let Some(token) = token {
                req = req.header("x-vault-token", token);
            }
            match req.send().await {
                Ok(r) if r.status() == 200 => return,
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(answered.is_ok(), "{failure} at {url}; last answer: {last}");
}

/// Server-side apply every document of `text` (field manager `test`, forced), discovering
/// each type.
///
/// # Panics
/// When a document is not valid YAML or the apply fails.
pub async fn apply_yaml(c: &Client, text: &str) -> Vec<DynamicObject> {
    let mut applied = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).expect("yaml");
        if v.is_null() {
            continue;
        }
        applied.push(apply(c, v).await);
    }
    applied
}

/// Server-side apply one object (field manager `test`, forced).
///
/// # Panics
/// When the kind is not served or the apply fails.
pub async fn apply(c: &Client, v: Value) -> DynamicObject {
    let api = api_for(c, &v).await;
    let name = v["metadata"]["name"].as_str().expect("name").to_string();
    within(
        &format!("apply {name}"),
        api.patch(
            &name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&v),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"))
}

/// The dynamic API for the object `v` (its apiVersion, kind and namespace), discovered.
///
/// # Panics
/// When the kind is not served.
pub async fn api_for(c: &Client, v: &Value) -> Api<DynamicObject> {
    let g = gvk(
        v["apiVersion"].as_str().expect("apiVersion"),
        v["kind"].as_str().expect("kind"),
    );
    let (ar, caps) = within("discovery", kube::discovery::pinned_kind(c, &g))
        .await
        .unwrap_or_else(|e| panic!("discover {g:?}: {e}"));
    match (caps.scope, v["metadata"]["namespace"].as_str()) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(c.clone(), ns, &ar),
        (Scope::Namespaced, None) => Api::default_namespaced_with(c.clone(), &ar),
        (Scope::Cluster, _) => Api::all_with(c.clone(), &ar),
    }
}

/// The group/version/kind of `api_version` + `kind`.
#[must_use]
pub fn gvk(api_version: &str, kind: &str) -> GroupVersionKind {
    let (g, v) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(g, v, kind)
}
