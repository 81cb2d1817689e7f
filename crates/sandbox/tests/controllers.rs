//! The sandbox's simulated controllers driven by kube-rs (and vaultrs through a pod
//! port-forward) against an in-process sandbox on a random port: Flux (GitRepository,
//! Kustomization, HelmRepository, HelmRelease), the Vault pod, ESO, the auto-unsealer,
//! faults and persistence across a restart.
//!
//! Every Vault-facing test runs twice: on the emulated Vault, and (`..._real_server`) on a real
//! OpenBao server as the Vault pod's process (`KUBESTRAP_VAULT_SERVER`, see
//! `kubestrap_test_support::vault_server_or_skip`), which must pass the same assertions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kubestrap_sandbox::{SandboxConfig, SandboxHandle};
use kubestrap_test_support::{
    apply, apply_yaml, forward, gvk, start_sandbox as start, vault_client as vault,
    vault_server_or_skip, vault_wait_active, vault_wait_kv2, wait_for, wait_pod_running, within,
};
use serde_json::{Value, json};

fn dynamic(
    c: &Client,
    api_version: &str,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&gvk(api_version, kind), plural);
    match ns {
        Some(ns) => Api::namespaced_with(c.clone(), ns, &ar),
        None => Api::all_with(c.clone(), &ar),
    }
}

fn ready_cond(o: &DynamicObject) -> Option<Value> {
    o.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
}

/// Polls `name` until `pred` holds on its JSON; returns it.
async fn wait_json(
    api: &Api<DynamicObject>,
    name: &str,
    what: &str,
    pred: impl Fn(&DynamicObject) -> bool,
) -> DynamicObject {
    wait_for(api, name, what, pred).await
}

async fn wait_ready(api: &Api<DynamicObject>, name: &str, reason: &str) -> DynamicObject {
    wait_json(api, name, &format!("{name} Ready/{reason}"), |o| {
        ready_cond(o).is_some_and(|c| c["status"] == "True" && c["reason"] == reason)
    })
    .await
}

async fn wait_not_ready(
    api: &Api<DynamicObject>,
    name: &str,
    reason: &str,
    contains: &str,
) -> Value {
    let o = wait_json(
        api,
        name,
        &format!("{name} failing with {reason} / {contains}"),
        |o| {
            ready_cond(o).is_some_and(|c| {
                c["status"] == "False"
                    && c["reason"] == reason
                    && c["message"].as_str().unwrap_or("").contains(contains)
            })
        },
    )
    .await;
    ready_cond(&o).expect("condition")
}

/// Fetches the install manifest over HTTPS as kubestrap's flux.install does and applies it.
async fn install_flux(h: &SandboxHandle, c: &Client) {
    let info: Value =
        serde_json::from_slice(&std::fs::read(h.dir().join("sandbox.json")).expect("sandbox.json"))
            .expect("json");
    assert_eq!(info["flux_install_url"], h.flux_install_url());
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(h.ca_pem().as_bytes()).expect("ca"))
        .build()
        .expect("http");
    // Unauthenticated, like downloading a release asset.
    let resp = within("flux manifest", http.get(h.flux_install_url()).send())
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
    let text = within("body", resp.text()).await.expect("text");
    assert!(text.contains("gitrepositories.source.toolkit.fluxcd.io"));
    apply_yaml(c, &text).await;
    let deploys: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(c.clone(), "flux-system");
    for d in [
        "source-controller",
        "kustomize-controller",
        "helm-controller",
    ] {
        within(d, async {
            loop {
                if let Ok(o) = deploys.get(d).await
                    && o.status
                        .as_ref()
                        .and_then(|s| s.available_replicas)
                        .unwrap_or(0)
                        >= 1
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    }
}

/// `flux reconcile`: sets `reconcile.fluxcd.io/requestedAt` with a merge patch.
async fn request_reconcile(api: &Api<DynamicObject>, name: &str, at: &str) {
    let patch = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": at}}});
    within(
        "annotate",
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await
    .expect("annotate");
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

const REPO: &str = "https://git.sandbox.test/org/fleet";

fn git_secret(name: &str, token: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "flux-system"},
           "stringData": {"username": "git", "password": token}})
}

fn git_repo(name: &str, secret: &str) -> Value {
    json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
           "metadata": {"name": name, "namespace": "flux-system"},
           "spec": {"interval": "1m0s", "url": REPO, "ref": {"branch": "main"}, "secretRef": {"name": secret}}})
}

fn kustomization(name: &str, path: &str, depends: &[&str]) -> Value {
    let deps: Vec<Value> = depends.iter().map(|d| json!({"name": d})).collect();
    json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
           "metadata": {"name": name, "namespace": "flux-system"},
           "spec": {"interval": "10m0s", "path": path, "prune": true, "dependsOn": deps,
                    "sourceRef": {"kind": "GitRepository", "name": "flux-system"}}})
}

#[tokio::test]
async fn flux_is_inert_until_installed_then_git_and_kustomizations_reconcile() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("fleet");
    write(
        &repo,
        "clusters/test/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml, b.yaml]\n",
    );
    write(
        &repo,
        "clusters/test/a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: default}\ndata: {k: a}\n",
    );
    write(
        &repo,
        "clusters/test/b.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: default}\ndata: {k: b}\n",
    );
    write(
        &repo,
        "apps/x.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app, namespace: default}\n",
    );
    write(
        &repo,
        "broken/w.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: default}\n",
    );
    let mut cfg = SandboxConfig::new(tmp.path().join("sandbox"));
    cfg.git_repos.insert(REPO.into(), repo.clone());
    let (h, c) = start(cfg).await;
    install_flux(&h, &c).await;

    let repos = dynamic(
        &c,
        "source.toolkit.fluxcd.io/v1",
        "GitRepository",
        "gitrepositories",
        Some("flux-system"),
    );
    // The first token the Git host sees is the trusted one.
    apply(&c, git_secret("flux-system", "right-token")).await;
    apply(&c, git_repo("flux-system", "flux-system")).await;
    let ok = wait_ready(&repos, "flux-system", "Succeeded").await;
    let rev = ok.data["status"]["artifact"]["revision"]
        .as_str()
        .expect("revision")
        .to_string();
    assert!(
        rev.starts_with("main@sha1:") && rev.len() == "main@sha1:".len() + 40,
        "{rev}"
    );
    assert_eq!(
        ready_cond(&ok).expect("ready")["message"],
        format!("stored artifact for revision '{rev}'")
    );
    assert_eq!(ok.data["status"]["observedGeneration"], 1);

    // A different token is rejected; fixing the Secret makes the repository Ready.
    apply(&c, git_secret("other-auth", "wrong-token")).await;
    apply(&c, git_repo("other", "other-auth")).await;
    let cond = wait_not_ready(
        &repos,
        "other",
        "AuthenticationFailed",
        "failed to checkout and determine revision",
    )
    .await;
    assert!(cond["message"].as_str().expect("msg").contains(REPO));
    let failed = repos.get("other").await.expect("other");
    let fetch = failed.data["status"]["conditions"]
        .as_array()
        .expect("conds")
        .iter()
        .any(|c| c["type"] == "FetchFailed" && c["status"] == "True");
    assert!(fetch, "{:?}", failed.data["status"]);
    apply(&c, git_secret("other-auth", "right-token")).await;
    wait_ready(&repos, "other", "Succeeded").await;

    // Refs the sandbox Git host does not serve fail loudly rather than fetching a branch.
    let mut tagged = git_repo("tagged", "flux-system");
    tagged["spec"]["ref"] = json!({"tag": "v1.0.0"});
    apply(&c, tagged).await;
    wait_not_ready(
        &repos,
        "tagged",
        "GitOperationFailed",
        "not implemented in the sandbox: ref.tag",
    )
    .await;

    // A manual reconcile request is acknowledged.
    request_reconcile(&repos, "other", "now-1").await;
    wait_json(&repos, "other", "lastHandledReconcileAt", |o| {
        o.data["status"]["lastHandledReconcileAt"] == "now-1"
    })
    .await;

    // Kustomizations: dependsOn holds the child until its parent is Ready.
    let ks = dynamic(
        &c,
        "kustomize.toolkit.fluxcd.io/v1",
        "Kustomization",
        "kustomizations",
        Some("flux-system"),
    );
    apply(&c, kustomization("child", "./apps", &["parent"])).await;
    wait_not_ready(
        &ks,
        "child",
        "DependencyNotReady",
        "dependency 'flux-system/parent' is not ready",
    )
    .await;
    apply(&c, kustomization("parent", "./clusters/test", &[])).await;
    let parent = wait_ready(&ks, "parent", "ReconciliationSucceeded").await;
    assert_eq!(
        ready_cond(&parent).expect("ready")["message"],
        format!("Applied revision: {rev}")
    );
    assert_eq!(parent.data["status"]["lastAppliedRevision"], rev.as_str());
    wait_ready(&ks, "child", "ReconciliationSucceeded").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let a = cms.get("a").await.expect("a applied");
    let managers: Vec<String> = a
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"kustomize-controller".to_string()),
        "{managers:?}"
    );
    assert_eq!(
        a.metadata.labels.unwrap_or_default()["kustomize.toolkit.fluxcd.io/name"],
        "parent"
    );
    cms.get("b").await.expect("b applied");
    cms.get("app").await.expect("child applied");

    // Removing a resource from Git prunes it once the new revision is applied.
    write(
        &repo,
        "clusters/test/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml]\n",
    );
    request_reconcile(&repos, "flux-system", "now-2").await;
    wait_json(&ks, "parent", "new revision applied", |o| {
        o.data["status"]["lastAppliedRevision"]
            .as_str()
            .is_some_and(|r| r != rev)
    })
    .await;
    within("prune", async {
        while cms.get_opt("b").await.expect("get").is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    cms.get("a").await.expect("a kept");

    // An unknown kind fails the apply and is retried later.
    apply(&c, kustomization("broken", "./broken", &[])).await;
    let cond = wait_not_ready(
        &ks,
        "broken",
        "ReconciliationFailed",
        "no matches for kind \"Widget\"",
    )
    .await;
    assert!(
        cond["message"]
            .as_str()
            .expect("msg")
            .contains("example.com/v1"),
        "{cond}"
    );
    h.shutdown().await.expect("shutdown");
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_pod_ready(c: &Client, ns: &str, name: &str, want: bool) {
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    within(&format!("pod {name} ready={want}"), async {
        loop {
            if let Ok(p) = pods.get(name).await
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && pod_ready(&p) == want
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

const HELM_REPOS: &str = r#"
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: hashicorp, namespace: flux-system}
spec: {interval: 1h0m0s, url: "https://helm.releases.hashicorp.com"}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: external-secrets, namespace: flux-system}
spec: {interval: 1h0m0s, url: "https://charts.external-secrets.io"}
"#;

fn release(name: &str, ns: &str, chart: &str, repo: &str, values: Value) -> Value {
    json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"interval": "10m0s", "releaseName": name, "install": {"createNamespace": true},
                 "chart": {"spec": {"chart": chart, "version": "1.2.3",
                     "sourceRef": {"kind": "HelmRepository", "name": repo, "namespace": "flux-system"}}},
                 "values": values}})
}

/// Flux installed, both charts released through HelmReleases, Vault initialised and unsealed
/// through a port-forward to `vault-0`, KV v2, a policy, kubernetes auth and a role for ESO.
struct Platform {
    h: SandboxHandle,
    c: Client,
    addr: String,
    root: String,
    key: String,
    _tmp: tempfile::TempDir,
}

/// The workspace's sandbox playbook's fleet repository, as `playbooks/sandbox.toml` maps it.
const FLEET_URL: &str = "https://git.sandbox.local/org/fleet";

/// Whether the sandbox's Vault is sealed (or, for a real server, not answering: restarting).
fn vault_sealed(h: &SandboxHandle) -> bool {
    h.vault_pod()
        .expect("vault")
        .status()
        .is_none_or(|s| s.sealed)
}

/// Waits until the sandbox sees the Vault pod unsealed. A real server's seal state reaches the
/// sandbox through its prober, a moment after the unseal call itself answered.
async fn wait_vault_unsealed(h: &SandboxHandle, what: &str) {
    within(what, async {
        while vault_sealed(h) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

async fn platform(vault_server: Option<PathBuf>) -> Platform {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = SandboxConfig::new(tmp.path().join("sandbox"));
    cfg.vault_server = vault_server;
    cfg.git_repos.insert(
        FLEET_URL.into(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../playbooks/sandbox/git/fleet"),
    );
    let (h, c) = start(cfg).await;
    install_flux(&h, &c).await;
    apply_yaml(&c, HELM_REPOS).await;
    for ns in ["vault", "external-secrets"] {
        apply(
            &c,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await;
    }
    let hr = |ns| {
        dynamic(
            &c,
            "helm.toolkit.fluxcd.io/v2",
            "HelmRelease",
            "helmreleases",
            Some(ns),
        )
    };
    let probe = json!({"server": {"readinessProbe": {"path": "/v1/sys/health?standbyok=true&sealedcode=204&uninitcode=204"}}});
    apply(&c, release("vault", "vault", "vault", "hashicorp", probe)).await;
    let vr = wait_ready(&hr("vault"), "vault", "InstallSucceeded").await;
    assert_eq!(
        ready_cond(&vr).expect("ready")["message"],
        "Helm install succeeded for release vault/vault.v1 with chart vault@1.2.3"
    );
    let released = vr.data["status"]["conditions"]
        .as_array()
        .expect("conds")
        .iter()
        .any(|c| c["type"] == "Released" && c["status"] == "True");
    assert!(released);
    let sts: Api<StatefulSet> = Api::namespaced(c.clone(), "vault");
    sts.get("vault")
        .await
        .expect("chart created the statefulset");
    wait_pod_running(&c, "vault", "vault-0").await;
    apply(
        &c,
        release(
            "external-secrets",
            "external-secrets",
            "external-secrets",
            "external-secrets",
            json!({"installCRDs": true, "serviceAccount": {"name": "external-secrets"}}),
        ),
    )
    .await;
    wait_ready(
        &hr("external-secrets"),
        "external-secrets",
        "InstallSucceeded",
    )
    .await;
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "external-secrets");
    sas.get("external-secrets")
        .await
        .expect("eso service account");
    if h.vault_pod().is_some_and(|v| v.server().is_some()) {
        // A real server outside any pod has no pod token of its own: it reviews each login
        // with the login JWT, so ESO's account needs what kubestrap's
        // cluster-secret-store.yaml grants it for that case.
        apply(&c, eso_review_binding()).await;
    }

    let addr = forward(&c, "vault", "vault-0", 8200).await;
    let anon = vault(&addr, "");
    let init = within(
        "init",
        vaultrs::sys::start_initialization(&anon, 1, 1, None),
    )
    .await
    .expect("init");
    let key = init.keys[0].clone();
    let st = within(
        "unseal",
        vaultrs::sys::unseal(&anon, Some(key.clone()), None, None),
    )
    .await
    .expect("unseal");
    assert!(!st.sealed);
    // The port-forward reaches the pod's process: the real server when one runs.
    let pod = h.vault_pod().expect("vault");
    match pod.server() {
        Some(server) => {
            assert_eq!(st.version, server.version());
            assert!(server.pid().is_some());
        }
        None => assert!(pod.emulated().is_some()),
    }
    vault_wait_active(&addr).await;
    let root = init.root_token.clone();
    let admin = vault(&addr, &root);
    within(
        "mount",
        vaultrs::sys::mount::enable(&admin, "secret", "kv-v2", None),
    )
    .await
    .expect("kv");
    vault_wait_kv2(&addr, &root, "secret").await;
    within(
        "kv",
        vaultrs::kv2::set(
            &admin,
            "secret",
            "bootstrap/cloudflare",
            &json!({"api_token": "cf-123"}),
        ),
    )
    .await
    .expect("set");
    within(
        "kv",
        vaultrs::kv2::set(&admin, "secret", "private/x", &json!({"v": "no"})),
    )
    .await
    .expect("set");
    within(
        "policy",
        vaultrs::sys::policy::set(
            &admin,
            "eso-read",
            r#"path "secret/data/bootstrap/*" { capabilities = ["read"] }"#,
        ),
    )
    .await
    .expect("policy");
    within(
        "auth",
        vaultrs::sys::auth::enable(&admin, "kubernetes", "kubernetes", None),
    )
    .await
    .expect("auth");
    configure_kubernetes_auth(&h, &admin, "https://kubernetes.default.svc").await;
    Platform {
        h,
        c,
        addr,
        root,
        key,
        _tmp: tmp,
    }
}

/// Points Vault's kubernetes auth at `host`, trusting the cluster's CA, without a reviewer JWT:
/// as kubestrap configures it (so Vault reviews with its pod's token, or, outside a pod, with
/// the login JWT itself).
async fn configure_kubernetes_auth(
    h: &SandboxHandle,
    admin: &vaultrs::client::VaultClient,
    host: &str,
) {
    within(
        "config",
        vaultrs::auth::kubernetes::configure(
            admin,
            "kubernetes",
            host,
            Some(
                vaultrs::api::auth::kubernetes::requests::ConfigureKubernetesAuthRequest::builder()
                    .kubernetes_ca_cert(h.ca_pem().to_string()),
            ),
        ),
    )
    .await
    .expect("config");
}

/// `system:auth-delegator` for ESO's service account (kubestrap's
/// `external-secrets-vault-tokenreview`).
fn eso_review_binding() -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "external-secrets-vault-tokenreview"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": [{"kind": "ServiceAccount", "name": "external-secrets", "namespace": "external-secrets"}]})
}

async fn create_eso_role(p: &Platform) {
    let admin = vault(&p.addr, &p.root);
    within(
        "role",
        vaultrs::auth::kubernetes::role::create(
            &admin,
            "kubernetes",
            "eso",
            Some(
                vaultrs::api::auth::kubernetes::requests::CreateKubernetesRoleRequest::builder()
                    .bound_service_account_names(vec!["external-secrets".to_string()])
                    .bound_service_account_namespaces(vec!["external-secrets".to_string()])
                    .token_policies(vec!["eso-read".to_string()]),
            ),
        ),
    )
    .await
    .expect("role");
}

/// Server-side applies ClusterSecretStore `name` (as [`store`] writes it) through `stores`.
async fn apply_store(
    stores: &Api<DynamicObject>,
    name: &str,
) -> Result<DynamicObject, kube::Error> {
    stores
        .patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&store(name)),
        )
        .await
}

fn store(name: &str) -> Value {
    json!({"apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore", "metadata": {"name": name},
        "spec": {"provider": {"vault": {"server": "http://vault.vault.svc:8200", "path": "secret", "version": "v2",
            "auth": {"kubernetes": {"mountPath": "kubernetes", "role": "eso",
                "serviceAccountRef": {"name": "external-secrets", "namespace": "external-secrets"}}}}}}})
}

fn external_secret(name: &str, store: &str, key: &str, property: &str) -> Value {
    json!({"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"refreshInterval": "1h", "secretStoreRef": {"kind": "ClusterSecretStore", "name": store},
            "target": {"name": name, "template": {"data": {"token": "Bearer {{ .api }}"}}},
            "data": [{"secretKey": "api", "remoteRef": {"key": key, "property": property}}]}})
}

#[tokio::test]
async fn helm_releases_vault_pod_and_eso_sync_secrets_from_vault() {
    helm_releases_vault_pod_and_eso_sync(None).await;
}

#[tokio::test]
async fn helm_releases_vault_pod_and_eso_sync_secrets_from_vault_real_server() {
    let test = "helm_releases_vault_pod_and_eso_sync_secrets_from_vault_real_server";
    if let Some(server) = vault_server_or_skip(test) {
        helm_releases_vault_pod_and_eso_sync(Some(server)).await;
    }
}

async fn helm_releases_vault_pod_and_eso_sync(vault_server: Option<PathBuf>) {
    let p = platform(vault_server).await;
    let c = &p.c;
    let hr = dynamic(
        c,
        "helm.toolkit.fluxcd.io/v2",
        "HelmRelease",
        "helmreleases",
        Some("vault"),
    );
    apply(
        c,
        release("mystery", "vault", "no-such-chart", "hashicorp", json!({})),
    )
    .await;
    let cond = wait_not_ready(
        &hr,
        "mystery",
        "InstallFailed",
        "Helm install failed for release vault/mystery with chart no-such-chart@1.2.3",
    )
    .await;
    assert!(cond["message"].as_str().expect("msg").contains("not found"));

    // The store is Ready only once a real login succeeds (no role yet: rejected).
    let stores = dynamic(
        c,
        "external-secrets.io/v1",
        "ClusterSecretStore",
        "clustersecretstores",
        None,
    );
    apply(c, store("vault-backend")).await;
    wait_not_ready(
        &stores,
        "vault-backend",
        "InvalidProviderConfig",
        "unable to create client",
    )
    .await;
    create_eso_role(&p).await;
    let s = wait_ready(&stores, "vault-backend", "Valid").await;
    assert_eq!(ready_cond(&s).expect("ready")["message"], "store validated");
    assert_eq!(s.data["status"]["capabilities"], "ReadWrite");

    // A synced ExternalSecret writes its Secret as ESO does.
    let ess = dynamic(
        c,
        "external-secrets.io/v1",
        "ExternalSecret",
        "externalsecrets",
        Some("default"),
    );
    apply(
        c,
        external_secret("cf", "vault-backend", "bootstrap/cloudflare", "api_token"),
    )
    .await;
    let es = wait_ready(&ess, "cf", "SecretSynced").await;
    assert_eq!(ready_cond(&es).expect("ready")["message"], "secret synced");
    assert_eq!(es.data["status"]["binding"]["name"], "cf");
    assert!(es.data["status"]["refreshTime"].is_string());
    assert!(
        es.data["status"]["syncedResourceVersion"]
            .as_str()
            .expect("srv")
            .starts_with("1-")
    );
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "default");
    let sec = secrets.get("cf").await.expect("target secret");
    let data = sec.data.clone().expect("data");
    assert_eq!(data["token"].0, b"Bearer cf-123");
    let meta = &sec.metadata;
    assert_eq!(
        meta.labels.as_ref().expect("labels")["reconcile.external-secrets.io/managed"],
        "true"
    );
    assert!(
        meta.annotations
            .as_ref()
            .expect("ann")
            .contains_key("reconcile.external-secrets.io/data-hash")
    );
    let owner = &meta.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("ExternalSecret", "cf", Some(true))
    );
    assert_eq!(Some(owner.uid.clone()), es.metadata.uid);

    // refreshInterval is honoured: a changed Vault value reaches the Secret.
    let mut fast = external_secret("fast", "vault-backend", "bootstrap/cloudflare", "api_token");
    fast["spec"]["refreshInterval"] = json!("1s");
    apply(c, fast).await;
    wait_ready(&ess, "fast", "SecretSynced").await;
    let admin = vault(&p.addr, &p.root);
    within(
        "kv",
        vaultrs::kv2::set(
            &admin,
            "secret",
            "bootstrap/cloudflare",
            &json!({"api_token": "cf-456"}),
        ),
    )
    .await
    .expect("set");
    within("refresh", async {
        loop {
            if let Ok(s) = secrets.get("fast").await
                && s.data
                    .as_ref()
                    .is_some_and(|d| d["token"].0 == b"Bearer cf-456")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    within(
        "kv",
        vaultrs::kv2::set(
            &admin,
            "secret",
            "bootstrap/cloudflare",
            &json!({"api_token": "cf-123"}),
        ),
    )
    .await
    .expect("set back");

    // The playbook's fleet: flux-system -> apps -> the demo app, whose ExternalSecret syncs.
    apply(c, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "flux-system", "namespace": "flux-system"},
        "stringData": {"username": "git", "password": "bootstrap-token"}})).await;
    let mut gr = git_repo("flux-system", "flux-system");
    gr["spec"]["url"] = json!(FLEET_URL);
    apply(c, gr).await;
    let mut root = kustomization("flux-system", "clusters/sandbox", &[]);
    root["spec"]["dependsOn"] = json!([]);
    apply(c, root).await;
    let ks = dynamic(
        c,
        "kustomize.toolkit.fluxcd.io/v1",
        "Kustomization",
        "kustomizations",
        Some("flux-system"),
    );
    wait_ready(&ks, "flux-system", "ReconciliationSucceeded").await;
    wait_ready(&ks, "apps", "ReconciliationSucceeded").await;
    let demo = dynamic(
        c,
        "external-secrets.io/v1",
        "ExternalSecret",
        "externalsecrets",
        Some("demo"),
    );
    wait_ready(&demo, "cloudflare-api-token", "SecretSynced").await;
    let demo_secrets: Api<Secret> = Api::namespaced(c.clone(), "demo");
    let s = demo_secrets
        .get("cloudflare-api-token")
        .await
        .expect("demo secret");
    assert_eq!(s.data.expect("data")["api-token"].0, b"cf-123");

    // A namespaced SecretStore logs in as the service account of its own namespace.
    let mut local = store("local");
    local["kind"] = json!("SecretStore");
    local["metadata"]["namespace"] = json!("external-secrets");
    local["spec"]["provider"]["vault"]["auth"]["kubernetes"]["serviceAccountRef"] =
        json!({"name": "external-secrets"});
    apply(c, local).await;
    let ns_stores = dynamic(
        c,
        "external-secrets.io/v1",
        "SecretStore",
        "secretstores",
        Some("external-secrets"),
    );
    wait_ready(&ns_stores, "local", "Valid").await;
    let mut es_local = external_secret("local-cf", "local", "bootstrap/cloudflare", "api_token");
    es_local["metadata"]["namespace"] = json!("external-secrets");
    es_local["spec"]["secretStoreRef"]["kind"] = json!("SecretStore");
    apply(c, es_local).await;
    let ess_local = dynamic(
        c,
        "external-secrets.io/v1",
        "ExternalSecret",
        "externalsecrets",
        Some("external-secrets"),
    );
    wait_ready(&ess_local, "local-cf", "SecretSynced").await;

    // Changing a release's values upgrades it.
    let eso_hr = dynamic(
        c,
        "helm.toolkit.fluxcd.io/v2",
        "HelmRelease",
        "helmreleases",
        Some("external-secrets"),
    );
    let patch = json!({"spec": {"values": {"installCRDs": true, "serviceAccount": {"name": "external-secrets"}, "replicaCount": 1}}});
    within(
        "upgrade",
        eso_hr.patch(
            "external-secrets",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        ),
    )
    .await
    .expect("patch");
    let up = wait_ready(&eso_hr, "external-secrets", "UpgradeSucceeded").await;
    assert_eq!(
        ready_cond(&up).expect("ready")["message"],
        "Helm upgrade succeeded for release external-secrets/external-secrets.v2 with chart external-secrets@1.2.3"
    );
    let helm_secrets: Api<Secret> = Api::namespaced(c.clone(), "external-secrets");
    helm_secrets
        .get("sh.helm.release.v1.external-secrets.v2")
        .await
        .expect("helm release record");

    // The three failure causes are told apart.
    apply(
        c,
        external_secret("missing", "vault-backend", "bootstrap/nothing", "x"),
    )
    .await;
    apply(
        c,
        external_secret("denied", "vault-backend", "private/x", "v"),
    )
    .await;
    apply(
        c,
        external_secret(
            "nostore",
            "no-such-store",
            "bootstrap/cloudflare",
            "api_token",
        ),
    )
    .await;
    let m = wait_not_ready(&ess, "missing", "SecretSyncedError", "key not found").await;
    let d = wait_not_ready(&ess, "denied", "SecretSyncedError", "auth denied").await;
    let n = wait_not_ready(&ess, "nostore", "SecretSyncedError", "store not ready").await;
    for cond in [&m, &d, &n] {
        assert!(
            cond["message"]
                .as_str()
                .expect("msg")
                .starts_with("could not get secret data from provider"),
            "{cond}"
        );
    }
    assert!(
        d["message"]
            .as_str()
            .expect("msg")
            .contains("permission denied"),
        "{d}"
    );
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    within("warning event", async {
        loop {
            let list = events.list(&Default::default()).await.expect("events");
            if list.items.iter().any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.involved_object.name.as_deref() == Some("nostore")
                    && e.message.as_deref().unwrap_or("").contains("no-such-store")
            }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    p.h.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn faults_delay_flux_and_flap_the_store() {
    faults_delay_flux_and_flap_the_store_on(None).await;
}

#[tokio::test]
async fn faults_delay_flux_and_flap_the_store_real_server() {
    if let Some(server) = vault_server_or_skip("faults_delay_flux_and_flap_the_store_real_server") {
        faults_delay_flux_and_flap_the_store_on(Some(server)).await;
    }
}

async fn faults_delay_flux_and_flap_the_store_on(vault_server: Option<PathBuf>) {
    let p = platform(vault_server).await;
    let c = &p.c;
    create_eso_role(&p).await;
    let stores = dynamic(
        c,
        "external-secrets.io/v1",
        "ClusterSecretStore",
        "clustersecretstores",
        None,
    );
    apply(c, store("vault-backend")).await;
    wait_ready(&stores, "vault-backend", "Valid").await;
    // Store flapping: the store goes invalid and recovers, on its own.
    p.h.set_faults(
        kubestrap_sandbox::FaultSpec::parse("seed=3,eso_store_flap=400ms").expect("spec"),
    );
    let cond = wait_not_ready(
        &stores,
        "vault-backend",
        "InvalidProviderConfig",
        "unable to create client",
    )
    .await;
    assert_eq!(cond["message"], "unable to create client");
    wait_ready(&stores, "vault-backend", "Valid").await;

    // Vault reviews logins only against this cluster: a wrong kubernetes_host breaks them.
    let admin = vault(&p.addr, &p.root);
    configure_kubernetes_auth(&p.h, &admin, "https://kube.example.invalid").await;
    let touch = json!({"metadata": {"annotations": {"test/revalidate": "1"}}});
    within(
        "touch",
        stores.patch(
            "vault-backend",
            &PatchParams::default(),
            &Patch::Merge(&touch),
        ),
    )
    .await
    .expect("touch");
    wait_not_ready(
        &stores,
        "vault-backend",
        "InvalidProviderConfig",
        "unable to create client",
    )
    .await;
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    within("login failure event", async {
        loop {
            let list = events.list(&Default::default()).await.expect("events");
            if list.items.iter().any(|e| {
                e.involved_object.name.as_deref() == Some("vault-backend")
                    && e.message
                        .as_deref()
                        .unwrap_or("")
                        .contains("permission denied")
            }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    configure_kubernetes_auth(&p.h, &admin, "https://kubernetes.default.svc").await;
    wait_ready(&stores, "vault-backend", "Valid").await;

    // A long Flux readiness delay holds new sources back until the fault is lifted.
    p.h.set_faults(kubestrap_sandbox::FaultSpec::parse("delay.flux=3600s").expect("spec"));
    let repos = dynamic(
        c,
        "source.toolkit.fluxcd.io/v1",
        "HelmRepository",
        "helmrepositories",
        Some("flux-system"),
    );
    apply(
        c,
        json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
        "metadata": {"name": "late", "namespace": "flux-system"},
        "spec": {"interval": "1h0m0s", "url": "https://example.com/charts"}}),
    )
    .await;
    // An object the (undelayed) ESO controller handles after it proves time has passed.
    let ess = dynamic(
        c,
        "external-secrets.io/v1",
        "ExternalSecret",
        "externalsecrets",
        Some("default"),
    );
    apply(
        c,
        external_secret(
            "probe",
            "vault-backend",
            "bootstrap/cloudflare",
            "api_token",
        ),
    )
    .await;
    wait_ready(&ess, "probe", "SecretSynced").await;
    let late = repos.get("late").await.expect("late");
    assert!(
        ready_cond(&late).is_none(),
        "delayed: {:?}",
        late.data["status"]
    );
    p.h.set_faults(kubestrap_sandbox::FaultSpec::default());
    wait_ready(&repos, "late", "Succeeded").await;
    p.h.shutdown().await.expect("shutdown");
}

/// The auto-unsealer contract the sandbox runs: label `app.kubernetes.io/name: vault-unsealer`,
/// `VAULT_ADDR`, `UNSEAL_INTERVAL` and the keys from a Secret volume's `items`.
const UNSEALER: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: vault-unsealer
  namespace: vault
  labels:
    app.kubernetes.io/name: vault-unsealer
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: vault-unsealer
  template:
    metadata:
      labels:
        app.kubernetes.io/name: vault-unsealer
    spec:
      automountServiceAccountToken: false
      containers:
        - name: unsealer
          image: "hashicorp/vault:1.19.0"
          env:
            - name: VAULT_ADDR
              value: "http://vault-0.vault-internal:8200"
            - name: UNSEAL_INTERVAL
              value: "1"
          volumeMounts:
            - name: keys
              mountPath: /vault-keys
              readOnly: true
      volumes:
        - name: keys
          secret:
            secretName: vault-init-keys
            optional: true
            items:
              - key: unseal-key-0
                path: unseal-key-0
"#;

#[tokio::test]
async fn deleting_vault_0_seals_vault_until_the_unsealer_runs() {
    deleting_vault_0_seals_vault_until_the_unsealer_runs_on(None).await;
}

#[tokio::test]
async fn deleting_vault_0_seals_vault_until_the_unsealer_runs_real_server() {
    let test = "deleting_vault_0_seals_vault_until_the_unsealer_runs_real_server";
    if let Some(server) = vault_server_or_skip(test) {
        deleting_vault_0_seals_vault_until_the_unsealer_runs_on(Some(server)).await;
    }
}

async fn deleting_vault_0_seals_vault_until_the_unsealer_runs_on(vault_server: Option<PathBuf>) {
    let p = platform(vault_server).await;
    let c = &p.c;
    wait_vault_unsealed(&p.h, "unsealed before the restart").await;
    // No unsealer: a deleted pod comes back sealed and stays so (its probe accepts sealed).
    let pods: Api<Pod> = Api::namespaced(c.clone(), "vault");
    let uid = pods.get("vault-0").await.expect("pod").metadata.uid;
    within("delete", pods.delete("vault-0", &DeleteParams::default()))
        .await
        .expect("delete");
    assert!(vault_sealed(&p.h), "a pod restart seals vault");
    within("recreated", async {
        loop {
            if let Ok(p) = pods.get("vault-0").await
                && p.metadata.uid != uid
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    wait_pod_running(c, "vault", "vault-0").await;
    let health = within("status", vaultrs::sys::status(&vault(&p.addr, "")))
        .await
        .expect("status");
    assert!(
        matches!(health, vaultrs::sys::ServerStatus::SEALED),
        "{health:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        vault_sealed(&p.h),
        "nothing unseals vault without the unsealer"
    );

    // The unsealer workload with the keys Secret brings it back within its period.
    apply(c, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vault-init-keys", "namespace": "vault"},
        "stringData": {"unseal-key-0": p.key, "root-token": p.root}})).await;
    // An unsealer workload of the shape kubestrap deploys (its own template is proven against
    // the sandbox by the product's end-to-end tests), addressing the pod through the headless
    // Service.
    let unsealer = UNSEALER;
    apply_yaml(c, unsealer).await;
    wait_vault_unsealed(&p.h, "auto-unseal").await;
    vault_wait_active(&p.addr).await;
    // Data survived the restart.
    let v: Value = within(
        "read",
        vaultrs::kv2::read(&vault(&p.addr, &p.root), "secret", "bootstrap/cloudflare"),
    )
    .await
    .expect("read");
    assert_eq!(v["api_token"], "cf-123");

    // A fault-driven restart (admin endpoint) is healed the same way.
    let req = http::Request::builder()
        .method("POST")
        .uri("/sandbox/v1/vault/restart")
        .body(Vec::new())
        .expect("req");
    let r: Value = within("admin restart", c.request(req))
        .await
        .expect("restart");
    assert_eq!(r["sealed"], true);
    wait_vault_unsealed(&p.h, "auto-unseal again").await;
    p.h.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn preinstalled_vault_is_uninitialised_and_everything_persists_across_a_restart() {
    preinstalled_vault_persists_on(None).await;
}

#[tokio::test]
async fn preinstalled_vault_is_uninitialised_and_everything_persists_across_a_restart_real_server()
{
    let test =
        "preinstalled_vault_is_uninitialised_and_everything_persists_across_a_restart_real_server";
    if let Some(server) = vault_server_or_skip(test) {
        preinstalled_vault_persists_on(Some(server)).await;
    }
}

async fn preinstalled_vault_persists_on(vault_server: Option<PathBuf>) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("sandbox");
    let mut cfg = SandboxConfig::new(&dir);
    cfg.preinstall_vault = true;
    cfg.vault_server = vault_server.clone();
    let (h, c) = start(cfg).await;
    wait_pod_running(&c, "vault", "vault-0").await;
    // The chart's default probe: a sealed, uninitialised Vault is not Ready.
    wait_pod_ready(&c, "vault", "vault-0", false).await;
    let addr = forward(&c, "vault", "vault-0", 8200).await;
    let status = within("status", vaultrs::sys::status(&vault(&addr, "")))
        .await
        .expect("status");
    assert!(
        matches!(status, vaultrs::sys::ServerStatus::UNINITIALIZED),
        "{status:?}"
    );
    let init = within(
        "init",
        vaultrs::sys::start_initialization(&vault(&addr, ""), 1, 1, None),
    )
    .await
    .expect("init");
    within(
        "unseal",
        vaultrs::sys::unseal(&vault(&addr, ""), Some(init.keys[0].clone()), None, None),
    )
    .await
    .expect("unseal");
    wait_pod_ready(&c, "vault", "vault-0", true).await;
    vault_wait_active(&addr).await;
    let admin = vault(&addr, &init.root_token);
    within(
        "mount",
        vaultrs::sys::mount::enable(&admin, "secret", "kv-v2", None),
    )
    .await
    .expect("kv");
    vault_wait_kv2(&addr, &init.root_token, "secret").await;
    within(
        "kv",
        vaultrs::kv2::set(&admin, "secret", "a/b", &json!({"k": "v"})),
    )
    .await
    .expect("set");
    h.shutdown().await.expect("shutdown");

    // Restarted: the objects and Vault's data are kept; Vault is sealed like a fresh pod.
    let mut cfg = SandboxConfig::new(&dir);
    cfg.vault_server = vault_server;
    let (h, c) = start(cfg).await;
    wait_pod_running(&c, "vault", "vault-0").await;
    wait_pod_ready(&c, "vault", "vault-0", false).await;
    let addr = forward(&c, "vault", "vault-0", 8200).await;
    let status = within("status", vaultrs::sys::status(&vault(&addr, "")))
        .await
        .expect("status");
    assert!(
        matches!(status, vaultrs::sys::ServerStatus::SEALED),
        "{status:?}"
    );
    within(
        "unseal",
        vaultrs::sys::unseal(&vault(&addr, ""), Some(init.keys[0].clone()), None, None),
    )
    .await
    .expect("unseal");
    vault_wait_active(&addr).await;
    let v: Value = within(
        "read",
        vaultrs::kv2::read(&vault(&addr, &init.root_token), "secret", "a/b"),
    )
    .await
    .expect("read");
    assert_eq!(v["k"], "v");
    wait_pod_ready(&c, "vault", "vault-0", true).await;
    h.shutdown().await.expect("shutdown");
}

/// The unsealer as kubestrap deployed it before issue 9: uid 100, keys Secret mounted 0400,
/// no fsGroup. `$FS_GROUP` is replaced by a pod `fsGroup` line (or nothing).
const STRICT_UNSEALER: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: vault-unsealer, namespace: vault}
automountServiceAccountToken: false
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: vault-unsealer
  namespace: vault
  labels: {app.kubernetes.io/name: vault-unsealer}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: vault-unsealer}
  template:
    metadata:
      labels: {app.kubernetes.io/name: vault-unsealer}
    spec:
      serviceAccountName: vault-unsealer
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 100
        runAsGroup: 1000
$FS_GROUP
      containers:
        - name: unsealer
          image: "hashicorp/vault:1.19.0"
          env:
            - {name: VAULT_ADDR, value: "http://vault.vault.svc:8200"}
            - {name: UNSEAL_INTERVAL, value: "0.5"}
          volumeMounts:
            - {name: keys, mountPath: /vault-keys, readOnly: true}
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: ["ALL"]}
      volumes:
        - name: keys
          secret:
            secretName: vault-init-keys
            optional: true
            defaultMode: 256
            items:
              - {key: unseal-key-0, path: unseal-key-0}
"#;

/// Restarts `vault-0` and waits for the new pod to run (sealed).
async fn restart_vault_pod(c: &Client) {
    let pods: Api<Pod> = Api::namespaced(c.clone(), "vault");
    let uid = pods.get("vault-0").await.expect("pod").metadata.uid;
    within("delete", pods.delete("vault-0", &DeleteParams::default()))
        .await
        .expect("delete");
    within("recreated", async {
        loop {
            if let Ok(p) = pods.get("vault-0").await
                && p.metadata.uid != uid
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    wait_pod_running(c, "vault", "vault-0").await;
}

/// The unsealer's pod, once its container is in `state` (`waiting` reason, or `running`).
async fn unsealer_pod_in(c: &Client, state: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(c.clone(), "vault");
    within(&format!("unsealer pod {state}"), async {
        loop {
            let list = pods
                .list(
                    &kube::api::ListParams::default()
                        .labels("app.kubernetes.io/name=vault-unsealer"),
                )
                .await
                .expect("list");
            for p in list.items {
                let st = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|cs| cs.first())
                    .and_then(|cs| cs.state.clone());
                let hit = match state {
                    "running" => st.as_ref().is_some_and(|s| s.running.is_some()),
                    reason => st
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .is_some_and(|w| w.reason.as_deref() == Some(reason)),
                };
                if hit && p.metadata.deletion_timestamp.is_none() {
                    return p;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// Issue 9: the sandbox ran the unsealer's effect whatever its pod could read, so an unsealer
/// whose uid cannot read the root-owned 0400 key files (no fsGroup) "unsealed" Vault in every
/// test while a real node leaves Vault sealed. Now the keys are files with the kubelet's owner,
/// group and mode: without fsGroup the container says why and crash-loops, Vault stays sealed;
/// with fsGroup the same unsealer unseals a restarted Vault.
#[tokio::test]
async fn unsealer_that_cannot_read_its_root_owned_keys_leaves_vault_sealed() {
    let p = platform(None).await;
    let c = &p.c;
    let vault_srv = p.h.vault().expect("vault");
    apply(c, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vault-init-keys", "namespace": "vault"},
        "stringData": {"unseal-key-0": p.key, "root-token": p.root}})).await;
    apply_yaml(c, &STRICT_UNSEALER.replace("$FS_GROUP", "")).await;
    restart_vault_pod(c).await;
    let pod = unsealer_pod_in(c, "CrashLoopBackOff").await;
    let status = &pod
        .status
        .as_ref()
        .expect("status")
        .container_statuses
        .as_ref()
        .expect("cs")[0];
    assert!(status.restart_count >= 1, "{status:?}");
    assert!(!status.ready);
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("last terminated");
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    let waiting = status
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .expect("waiting");
    assert!(
        waiting
            .message
            .as_deref()
            .unwrap_or("")
            .starts_with("back-off 10s restarting failed container=unsealer pod="),
        "{waiting:?}"
    );
    let pods: Api<Pod> = Api::namespaced(c.clone(), "vault");
    let name = pod.metadata.name.clone().expect("name");
    let log = within("logs", pods.logs(&name, &kube::api::LogParams::default()))
        .await
        .expect("logs");
    assert!(
        log.contains("vault-unsealer: cannot read /vault-keys/unseal-key-0 as uid 100 gid 1000 (file -r-------- owner 0:0): Permission denied"),
        "{log}"
    );
    assert!(
        vault_srv.status().sealed,
        "an unreadable key unseals nothing"
    );
    let deploys: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(c.clone(), "vault");
    let d = deploys.get("vault-unsealer").await.expect("deploy");
    assert_eq!(
        d.status.and_then(|s| s.available_replicas).unwrap_or(0),
        0,
        "a crash-looping unsealer is not Available"
    );

    // fsGroup: the kubelet gives the files the pod's group (0400 | 0440 = 0440): it unseals.
    apply_yaml(
        c,
        &STRICT_UNSEALER.replace("$FS_GROUP", "        fsGroup: 1000"),
    )
    .await;
    within("auto-unseal with fsGroup", async {
        while vault_srv.status().sealed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let pod = unsealer_pod_in(c, "running").await;
    let log = within(
        "logs",
        pods.logs(
            &pod.metadata.name.clone().expect("name"),
            &kube::api::LogParams::default(),
        ),
    )
    .await
    .expect("logs");
    assert!(log.contains("vault-unsealer: vault is unsealed"), "{log}");
    // A later restart is healed too, within the poll period.
    restart_vault_pod(c).await;
    within("auto-unseal after a restart", async {
        while vault_srv.status().sealed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    p.h.shutdown().await.expect("shutdown");
}

/// The newest Warning Event about `name` whose message contains `text`.
async fn wait_event(c: &Client, name: &str, text: &str) -> Event {
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    within(&format!("event on {name}: {text}"), async {
        loop {
            let list = events.list(&Default::default()).await.expect("events");
            if let Some(e) = list.items.into_iter().find(|e| {
                e.involved_object.name.as_deref() == Some(name)
                    && e.message.as_deref().unwrap_or("").contains(text)
            }) {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// Issue 9: ESO and Vault's TokenReview ran with the sandbox's own rights, so a chart or
/// kubestrap manifest missing a grant passed. Now ESO requests its login token as its service
/// account (the chart's ClusterRole grants `create serviceaccounts/token`), and Vault reviews
/// the login with its own pod token (the chart's `system:auth-delegator` binding).
#[tokio::test]
async fn eso_and_vault_act_as_their_service_accounts() {
    let p = platform(None).await;
    let c = &p.c;
    create_eso_role(&p).await;
    let stores = dynamic(
        c,
        "external-secrets.io/v1",
        "ClusterSecretStore",
        "clustersecretstores",
        None,
    );
    apply(c, store("granted")).await;
    wait_ready(&stores, "granted", "Valid").await;
    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(c.clone());
    // Without the chart's `serviceaccounts/token` rule its service account may not request
    // the login token (every other grant kept, so ESO still sees its stores).
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(c.clone());
    let chart_role = roles
        .get("external-secrets-controller")
        .await
        .expect("chart role");
    let without_token: Vec<Value> = serde_json::to_value(&chart_role.rules)
        .expect("rules")
        .as_array()
        .expect("list")
        .iter()
        .filter(|r| r["resources"] != json!(["serviceaccounts/token"]))
        .cloned()
        .collect();
    let set_rules = |rules: Value| {
        let roles = roles.clone();
        async move {
            within(
                "rules",
                roles.patch(
                    "external-secrets-controller",
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"rules": rules})),
                ),
            )
            .await
            .expect("patch rules");
        }
    };
    set_rules(json!(without_token)).await;
    apply(c, store("no-eso-rbac")).await;
    wait_not_ready(
        &stores,
        "no-eso-rbac",
        "InvalidProviderConfig",
        "unable to create client",
    )
    .await;
    wait_event(
        c,
        "no-eso-rbac",
        r#"cannot request Kubernetes service account token for service account "external-secrets": serviceaccounts "external-secrets" is forbidden: User "system:serviceaccount:external-secrets:external-secrets" cannot create resource "serviceaccounts/token" in API group "" in the namespace "external-secrets""#,
    )
    .await;
    set_rules(serde_json::to_value(&chart_role.rules).expect("rules")).await;
    wait_ready(&stores, "no-eso-rbac", "Valid").await;

    // Without the chart's auth-delegator binding, Vault's TokenReview is forbidden: the login
    // is denied.
    within(
        "unbind vault",
        crbs.delete("vault-server-binding", &DeleteParams::default()),
    )
    .await
    .expect("delete");
    apply(c, store("no-vault-rbac")).await;
    wait_not_ready(
        &stores,
        "no-vault-rbac",
        "InvalidProviderConfig",
        "unable to create client",
    )
    .await;
    wait_event(c, "no-vault-rbac", "permission denied").await;
    p.h.shutdown().await.expect("shutdown");
}

/// Issue 9: Flux applied whatever a Kustomization held, whoever it named. Now
/// kustomize-controller applies as its own service account (cluster-admin through Flux's
/// `cluster-reconciler` binding) or impersonates `spec.serviceAccountName`, which gets only what
/// RBAC grants it.
#[tokio::test]
async fn kustomizations_apply_as_their_service_account() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("fleet");
    write(
        &repo,
        "apps/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: limited, namespace: default}\ndata: {a: b}\n",
    );
    let mut cfg = SandboxConfig::new(tmp.path().join("sandbox"));
    cfg.git_repos.insert(REPO.into(), repo);
    let (h, c) = start(cfg).await;
    install_flux(&h, &c).await;
    apply(&c, git_secret("git-creds", "sandbox-token")).await;
    apply(&c, git_repo("fleet", "git-creds")).await;
    apply(
        &c,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer", "namespace": "flux-system"}}),
    )
    .await;
    let mut ks = kustomization("apps", "./apps", &[]);
    ks["spec"]["sourceRef"]["name"] = json!("fleet");
    ks["spec"]["serviceAccountName"] = json!("deployer");
    apply(&c, ks).await;
    let kss = dynamic(
        &c,
        "kustomize.toolkit.fluxcd.io/v1",
        "Kustomization",
        "kustomizations",
        Some("flux-system"),
    );
    wait_not_ready(
        &kss,
        "apps",
        "ReconciliationFailed",
        r#"ConfigMap/default/limited dry-run failed (Forbidden): configmaps "limited" is forbidden: User "system:serviceaccount:flux-system:deployer" cannot patch resource "configmaps" in API group "" in the namespace "default""#,
    )
    .await;
    apply(
        &c,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "deployer-edit", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": "flux-system"}]}),
    )
    .await;
    request_reconcile(&kss, "apps", "1").await;
    wait_ready(&kss, "apps", "ReconciliationSucceeded").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    assert!(cms.get("limited").await.is_ok());
    h.shutdown().await.expect("shutdown");
}

/// Issue 9: readiness delays were counted from the start of the creation second
/// (creationTimestamp has second precision), adding up to a second per delayed object. A pod
/// created early in a second with `delay.pods=2s` became Ready almost 3 s later.
#[tokio::test]
async fn readiness_delay_counts_from_the_creation_instant_not_its_second() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = SandboxConfig::new(tmp.path().join("sandbox"));
    cfg.faults = kubestrap_sandbox::FaultSpec::parse("delay.pods=2s").expect("spec");
    let (h, c) = start(cfg).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    // Create early in a wall-clock second, where the old rounding added almost a second.
    within("early in a second", async {
        while jiff::Timestamp::now().subsec_millisecond() > 150 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    .expect("pod");
    let started = std::time::Instant::now();
    within("create", pods.create(&Default::default(), &pod))
        .await
        .expect("create");
    within("ready", async {
        loop {
            if let Ok(p) = pods.get("p").await
                && pod_ready(&p)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "not before the delay: {took:?}"
    );
    assert!(
        took < Duration::from_millis(2700),
        "counted from the creation instant, not the start of its second: {took:?}"
    );
    h.shutdown().await.expect("shutdown");
}

/// Regression (issue 9): ESO's webhook did not gate CR writes. The chart registers
/// `secretstore-validate` and `externalsecret-validate`; the cert-controller injects their CA;
/// with no webhook pod behind the Service the API server refuses store writes, as a real one
/// does, until the webhook serves again.
#[tokio::test]
async fn eso_webhook_refuses_store_writes_until_it_serves() {
    let p = platform(None).await;
    let c = &p.c;
    let configs: Api<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration> =
        Api::all(c.clone());
    for name in ["secretstore-validate", "externalsecret-validate"] {
        let config = wait_for(&configs, name, "CA injected", |v| {
            v.webhooks.iter().flatten().all(|w| {
                w.client_config
                    .ca_bundle
                    .as_ref()
                    .is_some_and(|b| !b.0.is_empty())
            })
        })
        .await;
        let svc = config.webhooks.expect("webhooks")[0]
            .client_config
            .service
            .clone()
            .expect("service");
        assert_eq!(
            (svc.namespace.as_str(), svc.name.as_str()),
            ("external-secrets", "external-secrets-webhook")
        );
    }
    apply(c, store("before")).await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(c.clone(), "external-secrets");
    let scale = |n: i32| {
        let deployments = deployments.clone();
        async move {
            within(
                "scale",
                deployments.patch(
                    "external-secrets-webhook",
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"spec": {"replicas": n}})),
                ),
            )
            .await
            .expect("scale");
        }
    };
    scale(0).await;
    let stores = dynamic(
        c,
        "external-secrets.io/v1",
        "ClusterSecretStore",
        "clustersecretstores",
        None,
    );
    let refused = within("refused", async {
        loop {
            match apply_store(&stores, "during").await {
                Err(kube::Error::Api(e)) if e.code == 500 => return e,
                Ok(_) => {
                    let _ = stores.delete("during", &Default::default()).await;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
    })
    .await;
    assert!(
        refused.message.starts_with(
            "Internal error occurred: failed calling webhook \"validate.clustersecretstore.external-secrets.io\": failed to call webhook: Post \"https://external-secrets-webhook.external-secrets.svc:443/validate-external-secrets-io-v1-clustersecretstore?timeout=5s\": no endpoints available for service \"external-secrets-webhook\""
        ),
        "{}",
        refused.message
    );
    scale(1).await;
    within("served again", async {
        while apply_store(&stores, "after").await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn openbao_chart_serves_vault_behind_openbao_0_and_only_from_its_repository() {
    openbao_chart_on(None).await;
}

#[tokio::test]
async fn openbao_chart_serves_vault_behind_openbao_0_and_only_from_its_repository_real_server() {
    let test =
        "openbao_chart_serves_vault_behind_openbao_0_and_only_from_its_repository_real_server";
    if let Some(server) = vault_server_or_skip(test) {
        openbao_chart_on(Some(server)).await;
    }
}

/// Issue 10: the `openbao` chart stand-in, released from OpenBao's repository, names its
/// objects by openbao-helm's fullname rule (release `openbao`: StatefulSet `openbao`, pod
/// `openbao-0`; release `bank`: `bank-openbao`), and the pod serves the sandbox's Vault on
/// 8200 (the real server when one runs). The hashicorp repository has no `openbao` chart.
async fn openbao_chart_on(vault_server: Option<PathBuf>) {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = SandboxConfig::new(tmp.path().join("sandbox"));
    cfg.vault_server = vault_server;
    let (h, c) = start(cfg).await;
    install_flux(&h, &c).await;
    apply_yaml(
        &c,
        &format!(
            "{HELM_REPOS}---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: openbao, namespace: flux-system}}\nspec: {{interval: 1h0m0s, url: \"https://openbao.github.io/openbao-helm\"}}\n"
        ),
    )
    .await;
    apply(
        &c,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "openbao"}}),
    )
    .await;
    let hr = dynamic(
        &c,
        "helm.toolkit.fluxcd.io/v2",
        "HelmRelease",
        "helmreleases",
        Some("openbao"),
    );
    apply(
        &c,
        release("wrong-repo", "openbao", "openbao", "hashicorp", json!({})),
    )
    .await;
    wait_not_ready(
        &hr,
        "wrong-repo",
        "InstallFailed",
        "chart \"openbao\" version \"1.2.3\" not found in https://helm.releases.hashicorp.com repository",
    )
    .await;

    let probe = json!({"server": {"readinessProbe": {"path": "/v1/sys/health?standbyok=true&sealedcode=204&uninitcode=204"}}});
    apply(
        &c,
        release("openbao", "openbao", "openbao", "openbao", probe.clone()),
    )
    .await;
    wait_ready(&hr, "openbao", "InstallSucceeded").await;
    let sts: Api<StatefulSet> = Api::namespaced(c.clone(), "openbao");
    let set = sts.get("openbao").await.expect("StatefulSet openbao");
    assert_eq!(
        set.metadata.labels.unwrap_or_default()["app.kubernetes.io/name"],
        "openbao"
    );
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "openbao");
    sas.get("openbao").await.expect("server account");
    wait_pod_ready(&c, "openbao", "openbao-0", true).await;

    let addr = forward(&c, "openbao", "openbao-0", 8200).await;
    let seal: Value = within("seal-status", async {
        reqwest::get(format!("{addr}/v1/sys/seal-status"))
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    })
    .await;
    assert_eq!(seal["initialized"], false, "{seal}");
    let pod = h.vault_pod().expect("vault");
    if let Some(server) = pod.server() {
        assert_eq!(seal["version"], server.version(), "{seal}");
    }

    // A release without "openbao" in its name: `<release>-openbao`.
    apply(&c, release("bank", "openbao", "openbao", "openbao", probe)).await;
    wait_ready(&hr, "bank", "InstallSucceeded").await;
    sts.get("bank-openbao")
        .await
        .expect("StatefulSet bank-openbao");
    wait_pod_running(&c, "openbao", "bank-openbao-0").await;
    h.shutdown().await.expect("shutdown");
}
