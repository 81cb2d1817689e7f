//! The sandbox's one Vault behind pod `<release>-0` (the emulator or a real server, see
//! [`crate::vault_pod`]): port-forwards to port 8200 reach it, the pod's readiness follows the
//! chart's probe (unsealed, or merely "answering" when the release's probe accepts a sealed
//! Vault), deleting the pod restarts Vault (sealed, data kept), and the emulator's
//! kubernetes-auth logins are reviewed by the sandbox's own TokenReview ([`ClusterReviewer`];
//! a real server calls the API's TokenReview endpoint itself).
//!
//! [`VaultHttp`] is how in-sandbox clients (ESO, the unsealer) talk to that Vault: real
//! HTTP/1.1 requests over the pod's stream, as their real counterparts talk over TCP.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::kit;
use crate::portforward::{PodBackend, PodStream};
use crate::rbac::UserInfo;
use crate::server::Shared;
use crate::store::ObjectKey;
use crate::tokens;
use crate::vault::{ReviewError, ReviewRequest, ReviewedAccount, ReviewerJwt, TokenReviewer};
use crate::vault_pod::{VaultPod, call_over};

/// The port Vault listens on inside its pod.
pub const VAULT_PORT: u16 = 8200;

/// Hosts under which a pod reaches the Kubernetes API (`kubernetes_host` in Vault's auth config).
fn api_host_ok(host: &str, sandbox_port: u16) -> bool {
    let Some(rest) = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
    else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let (name, port) = match authority.rsplit_once(':') {
        Some((n, p)) => (n, p.parse::<u16>().ok()),
        None => (authority, None),
    };
    match name {
        "kubernetes.default.svc"
        | "kubernetes.default.svc.cluster.local"
        | "kubernetes.default"
        | "kubernetes"
        | "10.43.0.1" => port.is_none_or(|p| p == 443),
        "127.0.0.1" | "localhost" => port == Some(sandbox_port),
        _ => false,
    }
}

/// Vault's TokenReview client, answered by the sandbox's TokenReview logic: the review only
/// happens when `kubernetes_host` names this cluster, as a real Vault could only reach it then.
pub struct ClusterReviewer {
    shared: Mutex<Weak<Shared>>,
    port: u16,
}

impl ClusterReviewer {
    /// A reviewer for the sandbox listening on `port`; [`Self::attach`] connects it.
    pub fn new(port: u16) -> Arc<Self> {
        Arc::new(Self {
            shared: Mutex::new(Weak::new()),
            port,
        })
    }

    /// Connects the reviewer to the cluster state (weakly: the state owns the Vault).
    pub fn attach(&self, shared: &Arc<Shared>) {
        *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(shared);
    }
}

/// What the apiserver answers a TokenReview whose bearer does not authenticate, as Vault's
/// kubernetes auth plugin reports it.
const REVIEWER_UNAUTHORIZED: &str = "lookup failed: service account unauthorized; this could mean it has been deleted or recreated with a new token";

/// The identity of the pod Vault runs in, as its mounted service-account token proves it:
/// `None` when no Vault pod runs or its token is not mounted (`automountServiceAccountToken:
/// false`), so Vault has no local token to review with.
fn vault_pod_identity(shared: &Shared) -> Option<Option<UserInfo>> {
    let pod = kit::list(shared, "/pods", None).into_iter().find(|p| {
        super::charts::is_vault_server_name(&p["metadata"]["labels"]["app.kubernetes.io/name"])
            && p["status"]["phase"] == "Running"
            && p["metadata"]["deletionTimestamp"].is_null()
            && shared
                .backends
                .find(kit::meta(p, "namespace"), kit::meta(p, "name"))
                .is_some()
    })?;
    Some(kit::pod_token_identity(shared, &pod))
}

impl ClusterReviewer {
    /// The user the review's bearer authenticates as, or why it does not.
    fn reviewer_identity(
        shared: &Shared,
        reviewer: &ReviewerJwt,
        jwt: &str,
    ) -> Result<UserInfo, ReviewError> {
        let bearer = match reviewer {
            ReviewerJwt::Configured(t) => t.as_str(),
            ReviewerJwt::Local => match vault_pod_identity(shared) {
                Some(Some(user)) => return Ok(user),
                Some(None) => {
                    return Err(ReviewError::Rejected(REVIEWER_UNAUTHORIZED.into()));
                }
                // Vault outside a pod: the plugin falls back to the login JWT.
                None => jwt,
            },
            ReviewerJwt::Client => jwt,
        };
        crate::server::authenticate(shared, bearer)
            .map(|c| c.user)
            .ok_or_else(|| ReviewError::Rejected(REVIEWER_UNAUTHORIZED.into()))
    }
}

#[async_trait]
impl TokenReviewer for ClusterReviewer {
    async fn review(&self, request: &ReviewRequest<'_>) -> Result<ReviewedAccount, ReviewError> {
        self.review_as(request, &ReviewerJwt::Client).await
    }

    /// The review is an API request like any other: its bearer (Vault's pod token, the
    /// configured reviewer JWT or the login JWT) must be allowed `create tokenreviews`.
    async fn review_as(
        &self,
        request: &ReviewRequest<'_>,
        reviewer: &ReviewerJwt,
    ) -> Result<ReviewedAccount, ReviewError> {
        let ReviewRequest {
            kubernetes_host,
            jwt,
            audiences,
        } = *request;
        if !api_host_ok(kubernetes_host, self.port) {
            return Err(ReviewError::Unavailable(format!(
                "dial tcp: lookup {kubernetes_host}: no such host"
            )));
        }
        let shared = self
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upgrade()
            .ok_or_else(|| ReviewError::Unavailable("the cluster is shutting down".into()))?;
        let user = Self::reviewer_identity(&shared, reviewer, jwt)?;
        kit::allowed(
            &shared,
            Some(&user),
            "create",
            "authentication.k8s.io",
            "tokenreviews",
            "",
            "",
            "",
        )
        .map_err(|e| ReviewError::Rejected(e.message))?;
        let mut body = json!({"spec": {"token": jwt}});
        if !audiences.is_empty() {
            body["spec"]["audiences"] = json!(audiences);
        }
        let review =
            tokens::token_review(&shared, body).map_err(|e| ReviewError::Unavailable(e.message))?;
        let st = &review["status"];
        if st["authenticated"] != true {
            return Err(ReviewError::Rejected(
                st["error"]
                    .as_str()
                    .unwrap_or("token not authenticated")
                    .into(),
            ));
        }
        let username = st["user"]["username"].as_str().unwrap_or("");
        let mut parts = username.splitn(4, ':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("system"), Some("serviceaccount"), Some(ns), Some(name)) => Ok(ReviewedAccount {
                namespace: ns.into(),
                name: name.into(),
                uid: st["user"]["uid"].as_str().unwrap_or("").into(),
            }),
            _ => Err(ReviewError::Rejected(format!(
                "lookup failed: service account username {username:?} is not valid"
            ))),
        }
    }
}

/// The Vault pod's behaviour: serves port 8200, probes, restarts on delete, and starts its
/// process with the seal its mounted configuration names ([`super::static_seal`]).
pub struct VaultBackend {
    vault: VaultPod,
    /// The uid of the pod whose configuration the process was last started with.
    started_for: Mutex<Option<String>>,
    /// Why the process does not run (its start error, e.g. an unreadable static seal key):
    /// connections are refused and the probe fails, as for a crashing container.
    broken: Mutex<Option<String>>,
    /// Pods (`ns/name`) whose readiness probe treats a sealed or uninitialised Vault as
    /// ready (`sealedcode=204&uninitcode=204`, vault-helm #954).
    sealed_ok: Mutex<HashSet<String>>,
    /// Whether any pod was registered yet (for logging only).
    registered: AtomicBool,
}

impl VaultBackend {
    /// The backend of `vault`.
    pub fn new(vault: VaultPod) -> Arc<Self> {
        Arc::new(Self {
            vault,
            started_for: Mutex::default(),
            broken: Mutex::default(),
            sealed_ok: Mutex::new(HashSet::new()),
            registered: AtomicBool::new(false),
        })
    }

    /// Sets how the pod `ns/pod`'s readiness probe treats a sealed Vault.
    pub fn set_sealed_ok(&self, ns: &str, pod: &str, ok: bool) {
        let mut s = self.sealed_ok.lock().unwrap_or_else(|p| p.into_inner());
        let k = format!("{ns}/{pod}");
        if ok {
            s.insert(k);
        } else {
            s.remove(&k);
        }
    }

    /// Starts the pod's process with the seal its mounted configuration names (once per pod
    /// uid: a container start), recording why it cannot start, if it cannot.
    fn start_for(&self, shared: &Shared, pod: &Value) {
        let seal = super::static_seal::pod_seal(shared, pod);
        let broken = match seal {
            super::static_seal::PodSeal::Shamir => {
                self.vault.start_with_seal(None);
                None
            }
            super::static_seal::PodSeal::Static { key_id, key } => match key {
                Ok(key) => {
                    self.vault.start_with_seal(Some((key_id, Ok(key))));
                    None
                }
                Err(why) => {
                    tracing::warn!(error = %why, "the vault pod's server cannot start");
                    self.vault.start_with_seal(Some((key_id, Err(()))));
                    Some(why)
                }
            },
        };
        *self.broken.lock().unwrap_or_else(|p| p.into_inner()) = broken;
    }

    /// Whether the process could not start with its pod's configuration.
    fn is_broken(&self) -> bool {
        self.broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Marks that a pod is served (first registration is logged).
    pub fn mark_registered(&self) -> bool {
        !self.registered.swap(true, Ordering::SeqCst)
    }
}

#[async_trait]
impl PodBackend for VaultBackend {
    async fn connect(&self, _namespace: &str, _pod: &str, port: u16) -> Option<PodStream> {
        if port != VAULT_PORT || self.is_broken() {
            return None;
        }
        self.vault.connect().await
    }

    fn pod_running(&self, shared: &Shared, pod: &Value) {
        let uid = kit::meta(pod, "uid").to_string();
        let fresh = {
            let mut started = self.started_for.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = started.as_deref() != Some(uid.as_str());
            *started = Some(uid.clone());
            fresh
        };
        if fresh {
            self.start_for(shared, pod);
        }
        // A server that cannot start exits at once with its error, and the kubelet starts it
        // again after its back-off: CrashLoopBackOff, `kubectl logs` saying why.
        let broken = self
            .broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(why) = broken {
            let container = pod["spec"]["containers"][0]["name"]
                .as_str()
                .unwrap_or_default();
            if shared.runtime.running(&uid, container).is_some() {
                shared.runtime.log(&uid, container, &why);
                shared.runtime.exit(&uid, container, 1);
            }
        }
    }

    fn ready(&self, namespace: &str, pod: &str) -> Option<bool> {
        if self.is_broken() {
            return Some(false);
        }
        // A server that does not answer fails every probe, `sealedcode=204` or not.
        let Some(st) = self.vault.status() else {
            return Some(false);
        };
        let sealed_ok = self
            .sealed_ok
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&format!("{namespace}/{pod}"));
        Some(sealed_ok || (st.initialized && !st.sealed))
    }

    fn pod_deleted(&self, namespace: &str, pod: &str) {
        tracing::info!(%namespace, %pod, "vault pod deleted: vault restarts sealed");
        self.vault.restart();
    }
}

/// Why an in-sandbox HTTP call to Vault failed before an HTTP answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VaultCallError {
    /// The address does not name a Vault Service of this cluster.
    #[error("dial tcp: lookup {0}: no such host")]
    NoSuchHost(String),
    /// The Service exists but its pod is gone or not running.
    #[error("dial tcp {0}: connect: connection refused")]
    Refused(String),
    /// The HTTP exchange failed.
    #[error("http exchange with vault failed: {0}")]
    Http(String),
}

/// An HTTP client for the sandbox Vault from inside the cluster.
#[derive(Clone)]
pub struct VaultHttp {
    vault: VaultPod,
}

impl VaultHttp {
    /// A client of `vault`.
    pub fn new(vault: VaultPod) -> Self {
        Self { vault }
    }

    /// Initialised and sealed flags (what `vault status` reports); a server that does not
    /// answer reads as uninitialised and sealed (`vault status` fails).
    pub fn status(&self) -> crate::vault::VaultStatus {
        self.vault.status().unwrap_or(crate::vault::VaultStatus {
            initialized: false,
            sealed: true,
        })
    }

    /// Resolves an in-cluster address the way cluster DNS would for a pod in `from_ns`:
    /// `<svc>`, `<svc>.<ns>[.svc[.cluster.local]]` (a Service selecting a running Vault pod) or
    /// `<pod>.<headless-svc>[.<ns>…]` (a StatefulSet pod's own name); the port must be 8200.
    ///
    /// # Errors
    /// No such Service or pod, or nothing running behind it.
    pub fn resolve(
        &self,
        shared: &Shared,
        addr: &str,
        from_ns: &str,
    ) -> Result<(), VaultCallError> {
        let rest = addr
            .strip_prefix("http://")
            .or_else(|| addr.strip_prefix("https://"))
            .unwrap_or(addr);
        let authority = rest.split('/').next().unwrap_or("");
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().unwrap_or(0)),
            None => (authority, 80),
        };
        let trimmed = host
            .trim_end_matches(".cluster.local")
            .trim_end_matches(".svc");
        let labels: Vec<&str> = trimmed.split('.').collect();
        let service = |ns: &str, svc: &str| kit::get(shared, "/services", ns, svc);
        let usable = |ns: &str, p: &Value| {
            p["status"]["phase"] == "Running"
                && p["metadata"]["deletionTimestamp"].is_null()
                && shared.backends.find(ns, kit::meta(p, "name")).is_some()
        };
        let refused = || VaultCallError::Refused(format!("{host}:{port}"));
        if port != VAULT_PORT {
            return Err(refused());
        }
        // `<svc>` or `<svc>.<ns>`: any running pod the Service selects.
        let svc_form = match labels.as_slice() {
            [svc] => Some((from_ns, *svc)),
            [svc, ns] if service(ns, svc).is_some() => Some((*ns, *svc)),
            _ => None,
        };
        if let Some((ns, svc)) = svc_form {
            let s = service(ns, svc).ok_or_else(|| VaultCallError::NoSuchHost(host.into()))?;
            let selector = s["spec"]["selector"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let ok = !selector.is_empty()
                && kit::list(shared, "/pods", Some(ns)).iter().any(|p| {
                    selector
                        .iter()
                        .all(|(k, v)| p["metadata"]["labels"][k] == *v)
                        && usable(ns, p)
                });
            return if ok { Ok(()) } else { Err(refused()) };
        }
        // `<pod>.<headless-svc>[.<ns>]`: the pod's hostname/subdomain record.
        let (pod, svc, ns) = match labels.as_slice() {
            [pod, svc] => (*pod, *svc, from_ns),
            [pod, svc, ns] => (*pod, *svc, *ns),
            _ => return Err(VaultCallError::NoSuchHost(host.into())),
        };
        if service(ns, svc).is_none() {
            return Err(VaultCallError::NoSuchHost(host.into()));
        }
        let p = kit::get(shared, "/pods", ns, pod)
            .filter(|p| p["spec"]["hostname"] == pod && p["spec"]["subdomain"] == svc)
            .ok_or_else(|| VaultCallError::NoSuchHost(host.into()))?;
        if usable(ns, &p) {
            Ok(())
        } else {
            Err(refused())
        }
    }

    /// One request: `method` on `/v1/<path>` with an optional token and JSON body; returns
    /// the status code and the JSON body (`null` when empty).
    ///
    /// # Errors
    /// The exchange failed (never for HTTP error statuses, which are returned).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value), VaultCallError> {
        let exchange = async {
            let io = self
                .vault
                .connect()
                .await
                .ok_or_else(|| VaultCallError::Refused("vault:8200".into()))?;
            call_over(io, method, path, token, body)
                .await
                .map_err(VaultCallError::Http)
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| VaultCallError::Http("timed out after 10s".into()))?
    }
}

/// Vault's `{"errors":[...]}` joined the way Vault's Go client prints them.
pub fn vault_errors(code: u16, body: &Value) -> String {
    let errs: Vec<String> = body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if errs.is_empty() {
        format!("Code: {code}. Errors: (none)")
    } else {
        format!("Code: {code}. Errors:\n\n* {}", errs.join("\n* "))
    }
}

/// Fires the readiness trigger of every served Vault pod whenever Vault's status changes,
/// so the pod's Ready condition follows seal/unseal at once (not only at the probe period).
pub async fn follow_status<T: Send + Sync + 'static>(
    shared: Arc<Shared>,
    mut rx: tokio::sync::watch::Receiver<T>,
) {
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
        for p in kit::list(&shared, "/pods", None) {
            let ns = kit::meta(&p, "namespace");
            let name = kit::meta(&p, "name");
            if shared.backends.find(ns, name).is_some() {
                shared.triggers.fire(ObjectKey::new("/pods", ns, name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_hosts_are_the_cluster_names() {
        assert!(api_host_ok("https://kubernetes.default.svc", 6443));
        assert!(api_host_ok("https://kubernetes.default.svc:443", 6443));
        assert!(api_host_ok("https://127.0.0.1:6443", 6443));
        assert!(!api_host_ok("https://127.0.0.1:7000", 6443));
        assert!(!api_host_ok("https://example.com", 6443));
        assert!(!api_host_ok("kubernetes.default.svc", 6443));
    }

    #[test]
    fn vault_errors_read_like_the_go_client() {
        let s = vault_errors(403, &json!({"errors":["permission denied"]}));
        assert!(s.contains("Code: 403") && s.contains("* permission denied"));
    }
}
