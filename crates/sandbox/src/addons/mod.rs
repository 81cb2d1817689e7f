//! The sandbox's add-ons: what k3s plus the bootstrap's Helm charts would run — the Vault
//! server behind pod `vault-0`, Flux (source, kustomize and helm controllers over a local Git
//! host), External Secrets (stores and ExternalSecrets reading that Vault over HTTP) and the
//! auto-unsealer workload kubestrap deploys. Each is a [`Controller`] over the store, so it
//! reacts to objects written through the API exactly as the real controllers would.

mod charts;
mod eso;
mod flux_helm;
mod flux_kustomize;
mod flux_source;
mod git;
pub mod kit;
mod static_seal;
mod unsealer;
mod vault;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio_util::task::TaskTracker;

pub use charts::{FLUX_INSTALL, FLUX_INSTALL_PATH};
pub use git::{GitError, GitHost};
pub use vault::{ClusterReviewer, VaultBackend, VaultCallError, VaultHttp};

use crate::controllers::{self, Action, Controller};
use crate::server::Shared;
use crate::store::{ObjectKey, StoreEvent};
use crate::vault::VaultServer;
use crate::vault_pod::{ServerProcess, ServerSettings, VaultPod};

/// What the add-ons need from the sandbox's configuration.
#[derive(Debug, Clone, Default)]
pub struct AddonsConfig {
    /// Git repository URL -> local directory served as its `main` branch.
    pub git_repos: BTreeMap<String, PathBuf>,
    /// Start with the vault chart's objects deployed in namespace `vault` (uninitialised Vault).
    pub preinstall_vault: bool,
    /// Run this `bao` or `vault` binary as the Vault pod's process instead of the emulator.
    pub vault_server: Option<PathBuf>,
}

/// The running add-ons.
pub struct Addons {
    /// The one Vault of the sandbox.
    pub vault: VaultPod,
    backend: Arc<VaultBackend>,
    served: Mutex<HashSet<(String, String)>>,
}

impl std::fmt::Debug for Addons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Addons").finish_non_exhaustive()
    }
}

impl Addons {
    /// Serves pod `ns/pod` from the Vault backend (idempotent), with the readiness probe
    /// accepting a sealed Vault when `sealed_ok`.
    pub fn serve_vault_pod(&self, shared: &Shared, ns: &str, pod: &str, sealed_ok: bool) {
        self.backend.set_sealed_ok(ns, pod, sealed_ok);
        let fresh = self
            .served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((ns.to_string(), pod.to_string()));
        if fresh {
            shared.backends.register(ns, pod, self.backend.clone());
            if self.backend.mark_registered() {
                tracing::info!(%ns, %pod, "sandbox vault served behind this pod");
            }
        }
        shared.triggers.fire(ObjectKey::new("/pods", ns, pod));
    }
}

/// Serves Vault behind the pod of every StatefulSet the vault or openbao chart created (helm-controller,
/// `--preinstall vault`, or a restart of the sandbox finding them in its state).
struct VaultPods(Arc<Addons>);

#[async_trait]
impl Controller for VaultPods {
    fn name(&self) -> &'static str {
        "vault-pods"
    }

    fn watches(&self) -> Vec<String> {
        vec!["apps/statefulsets".into()]
    }

    fn map(&self, _shared: &Shared, e: &StoreEvent) -> Vec<ObjectKey> {
        vec![e.key.clone()]
    }

    async fn reconcile(&self, shared: &Arc<Shared>, key: &ObjectKey) -> Action {
        if let Some(sts) = kit::get(shared, &key.resource, &key.namespace, &key.name)
            && charts::is_vault_server_name(&sts["metadata"]["labels"]["app.kubernetes.io/name"])
        {
            let pod = format!("{}-0", key.name);
            self.0.serve_vault_pod(
                shared,
                &key.namespace,
                &pod,
                charts::probe_accepts_sealed(&sts),
            );
        }
        Action::Done
    }
}

/// Why the add-ons could not start.
#[derive(Debug, thiserror::Error)]
pub enum AddonsError {
    /// The Vault storage could not be opened.
    #[error("cannot open the sandbox vault storage: {0}")]
    Vault(#[from] crate::vault::VaultError),
    /// The real Vault server could not be started.
    #[error(transparent)]
    VaultServer(#[from] crate::vault_pod::ServerError),
    /// `--preinstall vault` could not apply the chart.
    #[error("cannot preinstall vault: {0}")]
    Preinstall(#[from] kit::ApplyError),
}

/// Starts the sandbox's Vault (the emulator with its storage in `dir/vault/storage.json`, its
/// TokenReview wired to the cluster; or the real server of `config.vault_server`) and every
/// add-on controller.
///
/// # Errors
/// The Vault storage cannot be opened, the real server cannot start, or the preinstall failed.
pub async fn start(
    shared: &Arc<Shared>,
    dir: &std::path::Path,
    port: u16,
    config: &AddonsConfig,
    tracker: &TaskTracker,
) -> Result<Arc<Addons>, AddonsError> {
    let vault = match &config.vault_server {
        None => {
            let reviewer = ClusterReviewer::new(port);
            reviewer.attach(shared);
            let vault_dir = dir.join("vault");
            let _ = std::fs::create_dir_all(&vault_dir);
            let emulated = VaultServer::open(vault_dir.join("storage.json"), reviewer)?;
            tracker.spawn(vault::follow_status(shared.clone(), emulated.subscribe()));
            VaultPod::Emulated(emulated)
        }
        Some(binary) => {
            let settings = ServerSettings {
                binary: binary.clone(),
                dir: dir.to_path_buf(),
                api_port: port,
            };
            let server = ServerProcess::start(&settings, &shared.shutdown, tracker).await?;
            tracker.spawn(vault::follow_status(shared.clone(), server.subscribe()));
            VaultPod::Server(server)
        }
    };
    let _ = shared.vault.set(vault.clone());
    let addons = Arc::new(Addons {
        vault: vault.clone(),
        backend: VaultBackend::new(vault.clone()),
        served: Mutex::default(),
    });
    if config.preinstall_vault {
        let mut docs = vec![
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vault"}}),
        ];
        docs.extend(charts::Chart::Vault.render("vault", "vault", &serde_json::Value::Null)?);
        kit::apply_all(shared, &docs, "helm", "vault")?;
    }
    let git = Arc::new(GitHost::new(
        config.git_repos.clone(),
        dir.join("git-host.json"),
    ));
    let list: Vec<Arc<dyn Controller>> = vec![
        Arc::new(VaultPods(addons.clone())),
        Arc::new(flux_source::SourceController::new(git.clone())),
        Arc::new(flux_kustomize::KustomizeController::new(git)),
        Arc::new(flux_helm::HelmController::default()),
        Arc::new(eso::CertController),
        Arc::new(eso::StoreController::new(VaultHttp::new(vault.clone()))),
        Arc::new(eso::ExternalSecretController::new(VaultHttp::new(
            vault.clone(),
        ))),
        Arc::new(unsealer::Unsealer::new(VaultHttp::new(vault))),
    ];
    for c in list {
        controllers::spawn(shared.clone(), c, tracker);
    }
    Ok(addons)
}
