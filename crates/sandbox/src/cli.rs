//! `kubestrap sandbox up|down`: arguments (clap) and the two commands, so the real CLI
//! can mount them as a subcommand.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::faults::FaultSpec;
use super::{Sandbox, SandboxConfig, SandboxError, SandboxHandle, io_err, parse_git_repo, signal};

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
    /// Run this Vault-API server binary (`bao` or `vault`) as the Vault pod's process, with raft
    /// storage in DIR/vault-server, instead of the in-process emulator.
    #[arg(long, value_name = "PATH")]
    pub vault_server: Option<PathBuf>,
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
    run_up_with(args, |_| Ok(())).await
}

/// [`run_up`] with a `setup` step between start and the pid file (which marks the sandbox
/// as up): the place to register pod backends (the sandbox Vault on `vault/vault-0`),
/// add controllers, or apply preinstalled objects.
///
/// # Errors
/// Start-up failures, `setup`'s error (the sandbox is shut down first), or the final
/// snapshot could not be written.
pub async fn run_up_with<F>(args: UpArgs, setup: F) -> Result<(), SandboxError>
where
    F: FnOnce(&SandboxHandle) -> Result<(), SandboxError>,
{
    let faults = FaultSpec::parse(&args.faults)?;
    let mut git_repos = std::collections::BTreeMap::new();
    for g in &args.git_repos {
        let (url, dir) = parse_git_repo(g)?;
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir().map_err(io_err(&dir))?.join(dir)
        };
        // Checked before anything is created: a wrong path is bad input, not a sandbox that
        // starts and then serves nothing.
        if !dir.is_dir() {
            return Err(SandboxError::GitRepoDir { url, dir });
        }
        git_repos.insert(url, dir);
    }
    let pid_path = args.dir.join("sandbox.pid");
    if let Some(pid) = std::fs::read_to_string(&pid_path)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        && signal::alive(pid)
        && signal::is_sandbox(pid)
    {
        return Err(SandboxError::AlreadyRunning {
            dir: args.dir.clone(),
            pid,
        });
    }
    let vault_server = match args.vault_server {
        Some(p) if p.is_relative() => Some(std::env::current_dir().map_err(io_err(&p))?.join(p)),
        other => other,
    };
    if let Some(binary) = &vault_server {
        crate::vault_pod::identify(binary).await?;
    }
    std::fs::create_dir_all(&args.dir).map_err(io_err(&args.dir))?;
    init_file_logging(&args.dir);
    let mut config = SandboxConfig::new(&args.dir);
    config.port = args.port;
    config.faults = faults;
    config.git_repos = git_repos;
    config.preinstall_vault = args.preinstall.iter().any(|p| p == "vault");
    config.vault_server = vault_server;
    let handle = Sandbox::start(config).await?;
    if let Err(e) = setup(&handle) {
        let _ = handle.shutdown().await;
        return Err(e);
    }
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
