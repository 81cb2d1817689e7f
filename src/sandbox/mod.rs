//! The sandbox cluster: a local process speaking the real Kubernetes REST API over HTTPS
//! (token auth, discovery, OpenAPI v3, CRUD/patch/apply/watch, CRDs, TokenRequest and
//! TokenReview, pod port-forward) with simulated controllers, persisted in a directory,
//! so kubestrap can be proven against it exactly as against k3s.
//!
//! In-process use (tests): [`Sandbox::start`] returns a [`SandboxHandle`]. Command line:
//! `kubestrap sandbox up --dir DIR [--faults SPEC]` ([`run_up`]) and `sandbox down` ([`run_down`]).

pub mod addons;
mod admin;
pub mod auth;
mod builtin;
pub mod cluster;
pub mod controllers;
mod crd;
mod discovery;
pub mod faults;
mod http;
mod kubeconfig;
mod openapi;
pub mod patch;
pub mod portforward;
mod protobuf;
pub mod resources;
mod rest;
mod server;
mod signal;
mod spdy;
pub mod status;
pub mod store;
mod table;
mod tls;
mod tokens;
pub mod vault;
mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::AuthError;
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
    /// A `--git-repo` flag or `git-repos.json` entry is malformed.
    #[error(
        "bad git repository mapping {0:?}: expected URL=DIR (e.g. https://git.sandbox.local/org/fleet=./fleet)"
    )]
    GitRepo(String),
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

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError + '_ {
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
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
            .await
            .map_err(|source| SandboxError::Bind {
                port: config.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
            port: config.port,
            source,
        })?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            cluster: Cluster::new(store.clone(), registry),
            auth,
            faults: Faults::new(config.faults.clone()),
            ca_pem: tls.ca_pem.clone(),
            backends: Backends::default(),
            bookmark_interval: config.bookmark_interval,
            shutdown: shutdown.clone(),
            triggers: Triggers::default(),
            vault: std::sync::OnceLock::new(),
        });
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
        for c in controllers::builtin() {
            controllers::spawn(shared.clone(), c, &tracker);
        }
        let mut git_repos = read_git_repos(&dir)?;
        git_repos.extend(config.git_repos.clone());
        let addons_config = addons::AddonsConfig {
            git_repos,
            preinstall_vault: config.preinstall_vault,
        };
        addons::start(&shared, &dir, addr.port(), &addons_config, &tracker)?;
        schedule_vault_restart(&shared, &tracker);
        let info_path = dir.join("sandbox.json");
        let info = serde_json::json!({
            "server": url,
            "kubeconfig": kc_path,
            "ca_file": dir.join("ca.crt"),
            "flux_install_url": format!("{url}{}", addons::FLUX_INSTALL_PATH),
        });
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
    /// The sandbox's Vault server (seal state, restarts).
    pub fn vault(&self) -> Option<Arc<vault::VaultServer>> {
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

/// `kubestrap sandbox ...` arguments.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SandboxCommand,
}

/// `sandbox` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SandboxCommand {
    /// Run the sandbox cluster in the foreground until SIGTERM or Ctrl-C.
    Up(UpArgs),
    /// Stop a sandbox running in the background (SIGTERM via its pid file).
    Down(DownArgs),
}

/// `sandbox up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// State directory (kubeconfig, certificates, objects, pid file, log).
    #[arg(long)]
    pub dir: PathBuf,
    /// Faults, e.g. `seed=7,api_error_rate=0.1,api_error=503|500|429,latency_ms=50,delay.node=2s`.
    #[arg(long, default_value = "")]
    pub faults: String,
    /// Port on 127.0.0.1 (0: a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Serve a Git repository URL from a local directory (`URL=DIR`, repeatable); also read
    /// from `DIR/git-repos.json`.
    #[arg(long = "git-repo", value_name = "URL=DIR")]
    pub git_repos: Vec<String>,
    /// Start with a component already deployed; `vault`: the vault chart's objects and an
    /// uninitialised Vault in namespace `vault`.
    #[arg(long, value_parser = ["vault"])]
    pub preinstall: Vec<String>,
}

/// `sandbox down`.
#[derive(Debug, Clone, clap::Args)]
pub struct DownArgs {
    /// State directory of the running sandbox.
    #[arg(long)]
    pub dir: PathBuf,
    /// Seconds to wait for a graceful stop.
    #[arg(long, default_value_t = 15)]
    pub timeout: u64,
}

/// Runs a `sandbox` subcommand.
///
/// # Errors
/// See [`run_up`] and [`run_down`].
pub async fn run(args: SandboxArgs) -> Result<(), SandboxError> {
    match args.command {
        SandboxCommand::Up(a) => run_up(a).await,
        SandboxCommand::Down(a) => run_down(a).await,
    }
}

fn init_file_logging(dir: &Path) {
    let path = dir.join("sandbox.log");
    if let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .try_init();
    }
}

/// `sandbox up`: runs in the foreground, writes `DIR/kubeconfig`, `DIR/sandbox.pid` and
/// `DIR/sandbox.log`, and stops gracefully on SIGTERM or Ctrl-C.
///
/// # Errors
/// Start-up failures, or the final snapshot could not be written.
pub async fn run_up(args: UpArgs) -> Result<(), SandboxError> {
    let faults = FaultSpec::parse(&args.faults)?;
    std::fs::create_dir_all(&args.dir).map_err(io_err(&args.dir))?;
    init_file_logging(&args.dir);
    let mut config = SandboxConfig::new(&args.dir);
    config.port = args.port;
    config.faults = faults;
    for g in &args.git_repos {
        let (url, dir) = parse_git_repo(g)?;
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir().map_err(io_err(&dir))?.join(dir)
        };
        config.git_repos.insert(url, dir);
    }
    config.preinstall_vault = args.preinstall.iter().any(|p| p == "vault");
    let handle = Sandbox::start(config).await?;
    let pid_path = args.dir.join("sandbox.pid");
    std::fs::write(&pid_path, format!("{}\n", std::process::id())).map_err(io_err(&pid_path))?;
    println!("sandbox cluster listening on {}", handle.url());
    println!("kubeconfig: {}", handle.kubeconfig_path().display());
    println!("flux install manifest: {}", handle.flux_install_url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(SandboxError::Signal)?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let result = handle.shutdown().await;
    let _ = std::fs::remove_file(&pid_path);
    result
}

/// `sandbox down`: sends SIGTERM to the sandbox in `DIR` and waits until it has exited.
///
/// # Errors
/// No running sandbox, or it did not stop in time.
pub async fn run_down(args: DownArgs) -> Result<(), SandboxError> {
    let pid_path = args.dir.join("sandbox.pid");
    let pid: i32 = std::fs::read_to_string(&pid_path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| SandboxError::NotRunning(args.dir.clone()))?;
    if !signal::alive(pid) || !signal::is_sandbox(pid) {
        let _ = std::fs::remove_file(&pid_path);
        return Err(SandboxError::NotRunning(args.dir.clone()));
    }
    signal::terminate(pid).map_err(SandboxError::Signal)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    while signal::alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            return Err(SandboxError::StopTimeout {
                pid,
                secs: args.timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
