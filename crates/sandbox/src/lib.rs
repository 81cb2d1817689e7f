//! The sandbox cluster: a local process speaking the real Kubernetes REST API over HTTPS
//! (token auth, RBAC authorization and impersonation, discovery, OpenAPI v3 and v2,
//! CRUD/patch/apply/watch, CRDs, TokenRequest and TokenReview, access reviews, pod
//! port-forward and logs) with simulated controllers, persisted in a directory, so kubestrap
//! can be proven against it exactly as against k3s. The admin kubeconfig is cluster-admin
//! (`system:masters`); every other identity gets what RBAC grants ([`rbac`]), including the
//! add-ons, which act as their workloads' service accounts.
//!
//! In-process use (tests): [`Sandbox::start`] returns a [`SandboxHandle`]. Command line:
//! `kubestrap sandbox up --dir DIR [--faults SPEC]` ([`run_up`]) and `sandbox down` ([`run_down`]).
//!
//! # The directory
//! `kubeconfig` (server `https://127.0.0.1:PORT`, CA data, admin bearer token; cluster,
//! context and user named `default` like k3s), `ca.crt`/`ca.key` (kept across restarts),
//! `token` and `sa.key` (admin token, service-account signing key), `port` (reused on
//! restart when free), `state.json` (every
//! object; written atomically shortly after changes and at shutdown), `sandbox.pid` and
//! `sandbox.log` (`sandbox up` only), `vault/` (the emulated Vault's storage) or
//! `vault-server/` (a real server's configuration, raft data, log and pid; [`vault_pod`]).
//! Secret files are mode 0600, the directory 0700.
//!
//! # Admin endpoints (admin token only)
//! `GET /sandbox/v1/writes` (the write log: `count` of accepted API-client writes,
//! `changed`, `controllerCount`, and each `(verb, resource, namespace, name, fieldManager,
//! actor)`), `GET|PUT /sandbox/v1/faults` (read or replace the spec), `POST
//! /sandbox/v1/compact` (forget watch history so older watches get 410).
//!
//! # Faults
//! `seed=7,api_error_rate=0.1,api_error=503|500|429,latency_ms=50,delay.node=2s,delay_scale=0.5`:
//! API error rate and codes (429 carries `Retry-After`), added latency, readiness delays per
//! component (`node`, `pods`, or a workload's name such as `vault`), periodic pod restarts
//! per component (`restart.vault=30s`), one Vault restart after start (`vault_restart=30s`),
//! ClusterSecretStore flapping (`eso_store_flap=10s`), and `vault.*`/`eso.*`/`flux.*`/`helm.*`
//! knobs that controllers read through [`faults::Faults::extra`]. Add-on readiness delays are
//! `delay.vault`, `delay.eso` and `delay.flux`.
//!
//! # Add-ons
//! [`addons`] runs Vault behind pod `vault-0` (the emulator, or a real `bao`/`vault` server
//! with `--vault-server PATH`, see [`vault_pod`]), Flux (`GET /sandbox/flux/install.yaml`,
//! GitRepository, Kustomization, HelmRepository, HelmRelease), ESO and the auto-unsealer;
//! `DIR/sandbox.json` records the server, kubeconfig, CA file and Flux install URL.
//! Decisions are a deterministic sequence for a seed.
//!
//! # Extending
//! Controllers implement [`Controller`] and run with [`SandboxHandle::add_controller`];
//! they read and write through [`Shared::cluster`] ([`cluster::Cluster`]) with
//! [`cluster::WriteOpts::controller`], so watches fire and the write log keeps them apart
//! from API clients. What runs inside a pod (port-forward target, readiness probe, restart
//! reaction) is a [`PodBackend`] registered with [`SandboxHandle::register_pod_backend`].

pub mod addons;
mod admin;
pub mod auth;
mod builtin;
mod cli;
pub mod cluster;
pub mod controllers;
mod crd;
mod discovery;
pub mod faults;
mod gnostic;
mod http;
mod json_fields;
mod kubeconfig;
pub mod kubelet;
mod openapi;
mod openapi_v2;
pub mod patch;
pub mod portforward;
pub mod preinstall;
mod private_file;
mod protobuf;
pub mod rbac;
pub mod resources;
mod rest;
pub mod runtime;
mod server;
mod signal;
mod spdy;
pub mod status;
pub mod store;
mod table;
mod tls;
mod tokens;
mod validation;
pub mod vault;
pub mod vault_pod;
mod watch;
pub mod webhooks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::AuthError;
pub use cli::{DownArgs, SandboxArgs, SandboxCommand, UpArgs, run, run_down, run_up, run_up_with};
pub use controllers::{Action, Controller, Triggers};
pub use faults::{FaultSpec, FaultSpecError};
pub use portforward::{PodBackend, PodIo, PodStream};
pub use server::Shared;
pub use store::PersistError;
pub use tls::TlsError;

use cluster::Cluster;
use faults::Faults;
use portforward::Backends;
use resources::Registry;
use store::{ObjectKey, Store};

/// Everything that can stop the sandbox from starting or stopping.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A file or directory could not be created or written.
    #[error("cannot write {path}: {source}; check that the sandbox directory is writable")]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The listening port could not be bound.
    #[error("cannot listen on 127.0.0.1:{port}: {source}; pick another port or stop what uses it")]
    Bind {
        /// Requested port (0 = random).
        port: u16,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificates could not be created or loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Tokens or the signing key could not be created or loaded.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The persisted state could not be loaded or saved.
    #[error(transparent)]
    State(#[from] PersistError),
    /// The `--faults` spec is invalid.
    #[error(transparent)]
    Faults(#[from] FaultSpecError),
    /// `sandbox up` found another sandbox running from the same directory.
    #[error(
        "a sandbox is already running from {dir} (pid {pid}); stop it with `kubestrap sandbox down --dir {dir}`"
    )]
    AlreadyRunning {
        /// The directory.
        dir: PathBuf,
        /// Its process.
        pid: i32,
    },
    /// `sandbox down` found no running sandbox.
    #[error("no sandbox is running from {0} (no live pid file); nothing to stop")]
    NotRunning(PathBuf),
    /// `sandbox down` could not stop the process in time.
    #[error(
        "the sandbox (pid {pid}) did not stop within {secs}s; stop it by hand with `kill {pid}`"
    )]
    StopTimeout {
        /// The process.
        pid: i32,
        /// How long we waited.
        secs: u64,
    },
    /// Signal handling failed.
    #[error("cannot signal the sandbox process: {0}")]
    Signal(#[source] std::io::Error),
    /// Vault, Flux or ESO could not start.
    #[error(transparent)]
    Addons(#[from] addons::AddonsError),
    /// `--vault-server` names no Vault-API server binary.
    #[error(transparent)]
    VaultServer(#[from] vault_pod::ServerError),
    /// A `--git-repo` flag or `git-repos.json` entry is malformed.
    #[error(
        "bad git repository mapping {0:?}: expected URL=DIR (e.g. https://git.sandbox.local/org/fleet=./fleet)"
    )]
    GitRepo(String),
    /// A `--git-repo` flag maps a URL to something that is not a directory.
    #[error(
        "--git-repo {url}={}: {} is not a directory; point it at a checkout of the repository",
        .dir.display(),
        .dir.display()
    )]
    GitRepoDir {
        /// The URL.
        url: String,
        /// The directory named for it.
        dir: PathBuf,
    },
}

/// How to start a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// State directory: kubeconfig, CA, keys, state snapshot, pid file, log.
    pub dir: PathBuf,
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Initial faults.
    pub faults: FaultSpec,
    /// Interval between watch bookmarks.
    pub bookmark_interval: Duration,
    /// How many events the watch history keeps for resuming watches.
    pub history_limit: usize,
    /// Git repository URL -> local directory, served by the sandbox Git host (merged with
    /// `DIR/git-repos.json` when that file exists).
    pub git_repos: BTreeMap<String, PathBuf>,
    /// Start with the vault chart's objects deployed (`--preinstall vault`).
    pub preinstall_vault: bool,
    /// Run this `bao` or `vault` server binary as the Vault pod's process
    /// (`--vault-server PATH`) instead of the in-process emulator; see [`vault_pod`].
    pub vault_server: Option<PathBuf>,
}

impl SandboxConfig {
    /// Defaults for a directory: random port, no faults.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            port: 0,
            faults: FaultSpec::default(),
            bookmark_interval: Duration::from_secs(15),
            history_limit: 10_000,
            git_repos: BTreeMap::new(),
            preinstall_vault: false,
            vault_server: None,
        }
    }
}

/// The sandbox entry point.
#[derive(Debug)]
pub struct Sandbox;

/// A running sandbox. Dropping it does not stop it; call [`SandboxHandle::shutdown`].
#[derive(Debug)]
pub struct SandboxHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    dir: PathBuf,
    tracker: TaskTracker,
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError + '_ {
    move |source| SandboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Sandbox {
    /// Starts a sandbox in this process: loads or creates its state in `config.dir`,
    /// serves HTTPS on 127.0.0.1, writes `DIR/kubeconfig`, and runs the controllers.
    ///
    /// # Errors
    /// Directory, TLS, key, state or bind failures.
    pub async fn start(config: SandboxConfig) -> Result<SandboxHandle, SandboxError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err(&dir))?;
        }
        let tls = tls::load_or_create(&dir)?;
        let auth = auth::Authenticator::load_or_create(&dir)?;
        let store = Arc::new(Store::open(dir.join("state.json"), config.history_limit)?);
        let registry = Registry::new();
        let crds = store
            .list("apiextensions.k8s.io/customresourcedefinitions", None)
            .0;
        crd::register_all(&registry, &crds);
        // Like k3s on 6443, a restarted sandbox keeps its port when it can, so clients
        // holding the old kubeconfig reconnect.
        let port_file = dir.join("port");
        let previous = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok());
        let listener = match (config.port, previous) {
            (0, Some(p)) => match tokio::net::TcpListener::bind(("127.0.0.1", p)).await {
                Ok(l) => Ok(l),
                Err(_) => tokio::net::TcpListener::bind(("127.0.0.1", 0)).await,
            },
            (port, _) => tokio::net::TcpListener::bind(("127.0.0.1", port)).await,
        }
        .map_err(|source| SandboxError::Bind {
            port: config.port,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
            port: config.port,
            source,
        })?;
        let shutdown = CancellationToken::new();
        let backends = Backends::default();
        let shared = Arc::new(Shared {
            cluster: Cluster::new(store.clone(), registry, backends.clone()),
            auth,
            faults: Faults::new(config.faults.clone()),
            ca_pem: tls.ca_pem.clone(),
            backends,
            bookmark_interval: config.bookmark_interval,
            shutdown: shutdown.clone(),
            triggers: Triggers::default(),
            vault: std::sync::OnceLock::new(),
            runtime: runtime::Runtime::default(),
        });
        // The default roles and bindings exist before the first request, as on a real cluster.
        rbac::ensure_defaults(&shared.cluster);
        std::fs::write(&port_file, addr.port().to_string()).map_err(io_err(&port_file))?;
        let url = format!("https://127.0.0.1:{}", addr.port());
        let kc_path = dir.join("kubeconfig");
        kubeconfig::write(
            &kc_path,
            &kubeconfig::render(&url, &tls.ca_pem, shared.auth.admin_token()),
        )
        .map_err(io_err(&kc_path))?;
        let tracker = TaskTracker::new();
        tracker.spawn(server::serve(
            listener,
            tls.server_config.clone(),
            shared.clone(),
            tracker.clone(),
        ));
        {
            let store = store.clone();
            let token = shutdown.clone();
            tracker.spawn(async move {
                tokio::select! {
                    () = store.persist_loop() => {}
                    () = token.cancelled() => {}
                }
            });
        }
        tracker.spawn(controllers::restarts::run(shared.clone()));
        for c in controllers::builtin() {
            controllers::spawn(shared.clone(), c, &tracker);
        }
        let mut git_repos = read_git_repos(&dir)?;
        git_repos.extend(config.git_repos.clone());
        let addons_config = addons::AddonsConfig {
            git_repos,
            preinstall_vault: config.preinstall_vault,
            vault_server: config.vault_server.clone(),
        };
        if let Err(e) = addons::start(&shared, &dir, addr.port(), &addons_config, &tracker).await {
            shutdown.cancel();
            tracker.close();
            let _ = tokio::time::timeout(Duration::from_secs(15), tracker.wait()).await;
            return Err(e.into());
        }
        schedule_vault_restart(&shared, &tracker);
        let info_path = dir.join("sandbox.json");
        let mut info = serde_json::json!({
            "server": url,
            "kubeconfig": kc_path,
            "ca_file": dir.join("ca.crt"),
            "flux_install_url": format!("{url}{}", addons::FLUX_INSTALL_PATH),
        });
        if let Some(server) = shared.vault.get().and_then(|v| v.server()) {
            info["vault_server"] = serde_json::json!({
                "flavor": server.flavor().name(),
                "version": server.version(),
                "addr": server.api_addr(),
                "log": server.log_path(),
            });
        }
        std::fs::write(
            &info_path,
            serde_json::to_vec_pretty(&info).unwrap_or_default(),
        )
        .map_err(io_err(&info_path))?;
        tracing::info!(%url, dir = %dir.display(), "sandbox cluster started");
        Ok(SandboxHandle {
            shared,
            addr,
            dir,
            tracker,
        })
    }
}

/// Reads `DIR/git-repos.json` (`{"URL": "DIR", ...}`; relative directories are relative to
/// the sandbox directory), so a playbook's `[sandbox] git_repos` can be handed over by file.
fn read_git_repos(dir: &Path) -> Result<BTreeMap<String, PathBuf>, SandboxError> {
    let path = dir.join("git-repos.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(BTreeMap::new());
    };
    let map: BTreeMap<String, PathBuf> = serde_json::from_str(&text)
        .map_err(|e| SandboxError::GitRepo(format!("{}: {e}", path.display())))?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, if v.is_absolute() { v } else { dir.join(v) }))
        .collect())
}

/// Parses `URL=DIR`.
///
/// # Errors
/// [`SandboxError::GitRepo`] when there is no `=` or a side is empty.
pub fn parse_git_repo(s: &str) -> Result<(String, PathBuf), SandboxError> {
    match s.rsplit_once('=') {
        Some((u, d)) if u.contains("://") && !d.is_empty() => Ok((u.to_string(), PathBuf::from(d))),
        _ => Err(SandboxError::GitRepo(s.to_string())),
    }
}

/// The `vault_restart=<delay>` fault: one restart of Vault that long after start.
fn schedule_vault_restart(shared: &Arc<Shared>, tracker: &TaskTracker) {
    let Some(delay) = shared
        .faults
        .extra("vault.restart_at")
        .and_then(|v| faults::parse_duration(&v))
    else {
        return;
    };
    let shared = shared.clone();
    tracker.spawn(async move {
        tokio::select! {
            () = shared.shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => {
                if let Some(v) = shared.vault.get() {
                    tracing::info!("injected fault: vault restarts");
                    v.restart();
                }
            }
        }
    });
}

impl SandboxHandle {
    /// The sandbox's emulated Vault server (seal state, restarts); `None` when a real server
    /// runs as the Vault pod (see [`Self::vault_pod`]).
    pub fn vault(&self) -> Option<Arc<vault::VaultServer>> {
        self.shared.vault.get().and_then(|v| v.emulated().cloned())
    }

    /// What backs the Vault pod: the emulator or a real server process.
    pub fn vault_pod(&self) -> Option<vault_pod::VaultPod> {
        self.shared.vault.get().cloned()
    }

    /// `https://127.0.0.1:PORT/sandbox/flux/install.yaml`: Flux's install manifest.
    pub fn flux_install_url(&self) -> String {
        format!("{}{}", self.url(), addons::FLUX_INSTALL_PATH)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `DIR/kubeconfig`.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM) that signs the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.shared.ca_pem
    }

    /// State shared with request handlers and controllers (for in-process controllers
    /// added by later work, e.g. Flux/ESO simulators).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves pods in `namespace` whose names start with `pod_prefix` from `backend`
    /// (port-forward target, readiness probe, restart hook).
    pub fn register_pod_backend(
        &self,
        namespace: &str,
        pod_prefix: &str,
        backend: Arc<dyn PodBackend>,
    ) {
        self.shared
            .backends
            .register(namespace, pod_prefix, backend);
        self.pod_readiness_changed(namespace, pod_prefix);
    }

    /// Re-evaluates a pod's readiness now (call when a backend's probe result changes).
    pub fn pod_readiness_changed(&self, namespace: &str, pod: &str) {
        self.shared
            .triggers
            .fire(ObjectKey::new("/pods", namespace, pod));
    }

    /// Runs an extra controller until shutdown.
    pub fn add_controller(&self, controller: Arc<dyn Controller>) {
        controllers::spawn(self.shared.clone(), controller, &self.tracker);
    }

    /// Server-side applies a multi-document YAML manifest as an installer would (a
    /// controller actor, so it does not count as client writes), e.g. to preinstall what a
    /// chart creates. Namespaced objects without a namespace go to `default`.
    ///
    /// # Errors
    /// Invalid YAML, unknown kinds, or a rejected object.
    pub fn apply_manifest(
        &self,
        yaml: &str,
        manager: &str,
    ) -> Result<Vec<serde_json::Value>, status::ApiError> {
        self.shared.cluster.apply_manifest(yaml, manager, "default")
    }

    /// Replaces the fault spec.
    pub fn set_faults(&self, spec: FaultSpec) {
        self.shared.faults.set(spec);
    }

    /// Stops serving, ends watches and controllers, and writes the final snapshot.
    ///
    /// # Errors
    /// The final snapshot could not be written.
    pub async fn shutdown(self) -> Result<(), SandboxError> {
        self.shared.shutdown.cancel();
        self.tracker.close();
        // A real Vault server gets its grace period to stop (it seals and closes raft).
        if let Some(server) = self.shared.vault.get().and_then(|v| v.server().cloned()) {
            server.stopped(Duration::from_secs(15)).await;
        }
        if tokio::time::timeout(Duration::from_secs(5), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some sandbox tasks did not stop within 5s");
        }
        self.shared.cluster.store.flush()?;
        tracing::info!("sandbox cluster stopped");
        Ok(())
    }
}
