//! A real Vault-API server (`bao server` or `vault server`) as the Vault pod's process: one
//! supervisor keeps exactly one server running, restarts it when the pod is deleted (it comes
//! back sealed, with its raft data) and stops it gracefully with the sandbox; a prober reads
//! `sys/seal-status` every [`PROBE_INTERVAL`] so readiness and the in-cluster clients see the
//! server's real state.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::{self, Flavor, Layout, Ports};
use super::spawn::Spawner;
use super::{ServerError, call_over};
use crate::vault::VaultStatus;

/// How often the prober asks the server for its seal status (a loopback request, microseconds
/// of work for the server).
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long a stopping server gets between SIGTERM and SIGKILL (an active OpenBao took up to
/// 3.5 s to exit).
const GRACE: Duration = Duration::from_secs(10);
/// How long `sandbox up` waits for the first answer of a freshly started server.
const FIRST_ANSWER: Duration = Duration::from_secs(30);
/// How long a connection waits for a (re)starting server to listen.
const CONNECT_WAIT: Duration = Duration::from_secs(15);
/// Pause before a crashed server is started again (doubling up to [`MAX_BACKOFF`]).
const BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The pod token a Vault server reads for its TokenReviews when its auth config allows.
const HOST_POD_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// What the sandbox needs to run the server.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The `bao` or `vault` binary.
    pub binary: PathBuf,
    /// The sandbox directory (the server lives in `vault-server/` under it).
    pub dir: PathBuf,
    /// The port of the sandbox's API server, which the server's kubernetes auth reaches
    /// through the proxy.
    pub api_port: u16,
}

/// The running server (see the module docs).
pub struct ServerProcess {
    binary: PathBuf,
    flavor: Flavor,
    version: String,
    layout: Layout,
    ports: Ports,
    proxy_port: u16,
    /// The last probe: `None` while the server does not answer (starting, restarting, dead).
    probe: watch::Sender<Option<VaultStatus>>,
    /// Incremented by every restart request.
    wanted: AtomicU64,
    /// The request generation the running process was started for.
    live: AtomicU64,
    pid: AtomicU32,
    restarts: mpsc::UnboundedSender<()>,
    stopped: watch::Sender<bool>,
}

impl std::fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProcess")
            .field("binary", &self.binary)
            .field("flavor", &self.flavor)
            .field("version", &self.version)
            .field("ports", &self.ports)
            .field("status", &*self.probe.borrow())
            .finish_non_exhaustive()
    }
}

/// Runs `<binary> version` and tells which server it is (and its version): how `sandbox up`
/// rejects a wrong `--vault-server` before it touches anything.
///
/// # Errors
/// The binary cannot be run, or it is neither OpenBao nor Vault.
pub async fn identify(binary: &Path) -> Result<(Flavor, String), ServerError> {
    let run = Command::new(binary)
        .arg("version")
        .env_clear()
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .map_err(|_| ServerError::Binary {
            path: binary.into(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "`version` did not finish within 20s",
            ),
        })?
        .map_err(|source| ServerError::Binary {
            path: binary.into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Flavor::detect(&text).ok_or_else(|| ServerError::NotAServer {
        path: binary.into(),
        output: text
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(120)
            .collect(),
    })
}

impl ServerProcess {
    /// Identifies the binary, writes the configuration, starts the proxy, the supervisor and
    /// the prober (all ending with `shutdown`), and waits for the server's first answer.
    ///
    /// # Errors
    /// The binary is not a Vault-API server, the files cannot be written, or the server does
    /// not answer within 30 s (its log says why).
    pub async fn start(
        settings: &ServerSettings,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Self>, ServerError> {
        let (flavor, version) = identify(&settings.binary).await?;
        let layout = Layout::new(&settings.dir);
        layout.create()?;
        let ports = Ports::load_or_pick(&layout)?;
        let config_path = layout.config();
        // A server whose data is sealed by the static seal refuses to start without it
        // ("cannot seal migrate from \"static\" to Shamir", measured with OpenBao 2.7.2), so a
        // restarted sandbox keeps the seal its pod last started with until the pod says again.
        let previous_seal = std::fs::read_to_string(&config_path)
            .ok()
            .and_then(|t| hcl::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                v["seal"]["static"]["current_key_id"]
                    .as_str()
                    .map(str::to_owned)
            })
            .filter(|_| layout.static_seal_key().exists());
        let text = config::render(flavor, &layout, ports, previous_seal.as_deref());
        std::fs::write(&config_path, text).map_err(|source| ServerError::Io {
            path: config_path.clone(),
            source,
        })?;
        let proxy = super::proxy::bind()
            .await
            .map_err(|source| ServerError::Io {
                path: "127.0.0.1:0 (the vault server's API proxy)".into(),
                source,
            })?;
        let proxy_port = proxy.local_addr().map(|a| a.port()).unwrap_or(0);
        tracker.spawn(super::proxy::serve(
            proxy,
            settings.api_port,
            shutdown.clone(),
        ));
        let spawner = Spawner::start().map_err(|source| ServerError::Io {
            path: "vault-server-spawner thread".into(),
            source,
        })?;
        let (restarts, restart_rx) = mpsc::unbounded_channel();
        let server = Arc::new(Self {
            binary: settings.binary.clone(),
            flavor,
            version,
            layout,
            ports,
            proxy_port,
            probe: watch::channel(None).0,
            wanted: AtomicU64::new(0),
            live: AtomicU64::new(u64::MAX),
            pid: AtomicU32::new(0),
            restarts,
            stopped: watch::channel(false).0,
        });
        if Path::new(HOST_POD_TOKEN).exists() {
            tracing::warn!(
                "{HOST_POD_TOKEN} exists on this host (is the sandbox running inside a pod?): the \
                 vault server's kubernetes auth presents that token as its TokenReview bearer \
                 unless the auth config sets disable_local_ca_jwt=true, and the sandbox API \
                 does not know it"
            );
        }
        tracing::info!(
            server = %server.flavor.name(),
            version = %server.version,
            addr = %server.api_addr(),
            "the vault pod runs a real server"
        );
        tracker.spawn(
            server
                .clone()
                .supervise(spawner, restart_rx, shutdown.clone()),
        );
        tracker.spawn(server.clone().probe_loop(shutdown.clone()));
        let mut rx = server.probe.subscribe();
        let first = tokio::time::timeout(FIRST_ANSWER, rx.wait_for(Option::is_some)).await;
        if !matches!(first, Ok(Ok(_))) {
            return Err(ServerError::NoAnswer {
                log: server.layout.log(),
                secs: FIRST_ANSWER.as_secs(),
            });
        }
        Ok(server)
    }

    /// `OpenBao` or `Vault`.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The version the binary reports (`2.7.2`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `http://127.0.0.1:<port>`: the server's listener (what the pod's port 8200 forwards to).
    pub fn api_addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.api)
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.layout.log()
    }

    /// The running server's pid, if one runs.
    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::SeqCst)).filter(|p| *p != 0)
    }

    /// The last probe: `None` while the server does not answer.
    pub fn status(&self) -> Option<VaultStatus> {
        *self.probe.borrow()
    }

    /// Follows the probe (it changes when the seal state changes or the server goes away).
    pub fn subscribe(&self) -> watch::Receiver<Option<VaultStatus>> {
        self.probe.subscribe()
    }

    /// Whether a restart was requested and its new process is not running yet.
    fn restarting(&self) -> bool {
        self.live.load(Ordering::SeqCst) != self.wanted.load(Ordering::SeqCst)
    }

    /// The pod was deleted (or a fault restarts it): the server stops and starts again. Returns
    /// at once (the caller may hold the store lock); from now on the server counts as not
    /// answering until the new process does.
    pub fn restart(&self) {
        self.wanted.fetch_add(1, Ordering::SeqCst);
        self.probe.send_replace(None);
        let _ = self.restarts.send(());
    }

    /// Starts the server with the seal of its pod's configuration: `None` for Shamir, or the
    /// static seal's key id and the key its Secret volume presents (`Err` when the container
    /// cannot read one: the server is then started without the file and fails, as it would).
    /// Restarts the process only when the configuration or the key file changes.
    pub fn configure_seal(&self, seal: Option<super::StaticSealStart>) {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let key_path = self.layout.static_seal_key();
        let text = config::render(
            self.flavor,
            &self.layout,
            self.ports,
            seal.as_ref().map(|(id, _)| id.as_str()),
        );
        let config_path = self.layout.config();
        let mut changed = std::fs::read_to_string(&config_path).ok().as_deref() != Some(&text);
        if changed && let Err(e) = std::fs::write(&config_path, &text) {
            tracing::error!(error = %e, path = %config_path.display(), "cannot write the vault server configuration");
        }
        let old = std::fs::read(&key_path).ok().map(zeroize::Zeroizing::new);
        match seal.as_ref().map(|(_, key)| key) {
            Some(Ok(key)) if old.as_ref().is_some_and(|o| o.as_slice() == key.as_slice()) => {}
            Some(Ok(key)) => {
                changed = true;
                let _ = std::fs::remove_file(&key_path);
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key_path)
                    .and_then(|mut f| f.write_all(key.as_slice()));
                if let Err(e) = written {
                    tracing::error!(error = %e, path = %key_path.display(), "cannot write the static seal key file");
                }
            }
            Some(Err(())) | None => {
                if old.is_some() {
                    changed = true;
                    let _ = std::fs::remove_file(&key_path);
                }
            }
        }
        if changed {
            tracing::info!("the vault pod's seal configuration changed: restarting its server");
            self.restart();
        }
    }

    /// Waits (at most `limit`) until the server answers; whether it does.
    pub async fn answering(&self, limit: Duration) -> bool {
        let mut rx = self.probe.subscribe();
        let wait = rx.wait_for(|p| p.is_some() && !self.restarting());
        matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(_)))
    }

    /// A connection to the server's port, after waiting (at most 15 s) for a (re)starting
    /// server to listen, as a container's process binds its port moments after it starts.
    pub async fn connect(&self) -> Option<tokio::net::TcpStream> {
        if !self.answering(CONNECT_WAIT).await {
            return None;
        }
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.ports.api))
            .await
            .ok()?;
        let _ = tcp.set_nodelay(true);
        Some(tcp)
    }

    /// Waits (at most `limit`) until the server was stopped after shutdown.
    pub async fn stopped(&self, limit: Duration) {
        let mut rx = self.stopped.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|s| *s)).await;
    }

    fn command(&self) -> Result<Command, ServerError> {
        let log = self.layout.log();
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|source| ServerError::Io {
                    path: log.clone(),
                    source,
                })
        };
        let mut cmd = Command::new(&self.binary);
        cmd.arg("server")
            .arg(format!("-config={}", self.layout.config().display()))
            // Nothing of the sandbox's environment (tokens, proxies, VAULT_* settings)
            // reaches the server: only what a container would have.
            .env_clear()
            .env("HOME", self.layout.home())
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env(
                "HTTPS_PROXY",
                format!("http://127.0.0.1:{}", self.proxy_port),
            )
            .current_dir(&self.layout.root)
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?)
            // Its own process group: a Ctrl-C at the sandbox's terminal is the sandbox's to
            // handle (it stops the server gracefully), not the server's.
            .process_group(0)
            .kill_on_drop(false);
        Ok(cmd)
    }

    /// Keeps one server running until `shutdown` (see the module docs).
    async fn supervise(
        self: Arc<Self>,
        spawner: Spawner,
        mut restarts: mpsc::UnboundedReceiver<()>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = BACKOFF;
        'run: while !shutdown.is_cancelled() {
            let generation = self.wanted.load(Ordering::SeqCst);
            let spawned = match self.command() {
                Ok(cmd) => spawner.spawn(cmd).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) => {
                    tracing::error!(error = %e, binary = %self.binary.display(), "cannot start the vault server");
                    if !pause(backoff, &mut restarts, &shutdown).await {
                        break 'run;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let pid = child.id().unwrap_or(0);
            self.pid.store(pid, Ordering::SeqCst);
            let pid_path = self.layout.pid();
            let _ = std::fs::write(&pid_path, format!("{pid}\n"));
            self.live.store(generation, Ordering::SeqCst);
            tracing::info!(pid, "vault server started");
            tokio::select! {
                () = shutdown.cancelled() => {
                    stop(&mut child, pid).await;
                    break 'run;
                }
                Some(()) = restarts.recv() => {
                    while restarts.try_recv().is_ok() {}
                    tracing::info!(pid, "vault pod restarts: stopping its server");
                    stop(&mut child, pid).await;
                    backoff = BACKOFF;
                }
                status = child.wait() => {
                    self.probe.send_replace(None);
                    tracing::warn!(?status, log = %self.layout.log().display(), "the vault server exited; starting it again");
                    if !pause(backoff, &mut restarts, &shutdown).await {
                        break 'run;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            self.pid.store(0, Ordering::SeqCst);
        }
        self.pid.store(0, Ordering::SeqCst);
        let _ = std::fs::remove_file(self.layout.pid());
        self.probe.send_replace(None);
        drop(spawner);
        self.stopped.send_replace(true);
    }

    /// Asks the server for `sys/seal-status` until `shutdown`.
    async fn probe_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
            let generation = self.wanted.load(Ordering::SeqCst);
            if self.live.load(Ordering::SeqCst) != generation {
                continue;
            }
            let seen = self.probe_once().await;
            // A restart requested meanwhile makes this answer stale (the old process).
            if self.wanted.load(Ordering::SeqCst) != generation || self.restarting() {
                continue;
            }
            self.probe.send_if_modified(|p| {
                let changed = *p != seen;
                *p = seen;
                changed
            });
        }
    }

    async fn probe_once(&self) -> Option<VaultStatus> {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.ports.api))
                .await
                .ok()?;
            let (code, body) = call_over(tcp, "GET", "sys/seal-status", None, None)
                .await
                .ok()?;
            if code != 200 {
                return None;
            }
            Some(VaultStatus {
                initialized: body["initialized"].as_bool()?,
                sealed: body["sealed"].as_bool()?,
            })
        };
        tokio::time::timeout(Duration::from_secs(2), exchange)
            .await
            .ok()
            .flatten()
    }
}

/// Waits `d` (or less, when a restart is requested); `false` on shutdown.
async fn pause(
    d: Duration,
    restarts: &mut mpsc::UnboundedReceiver<()>,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        _ = restarts.recv() => true,
        () = tokio::time::sleep(d) => true,
    }
}

/// SIGTERM, then SIGKILL after [`GRACE`]: how the kubelet stops a container.
async fn stop(child: &mut Child, pid: u32) {
    use rustix::process::{Pid, Signal, kill_process};
    if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(p, Signal::TERM);
    }
    match tokio::time::timeout(GRACE, child.wait()).await {
        Ok(status) => tracing::info!(pid, ?status, "vault server stopped"),
        Err(_) => {
            tracing::warn!(
                pid,
                "the vault server ignored SIGTERM for {GRACE:?}; killing it"
            );
            let _ = child.kill().await;
        }
    }
}
