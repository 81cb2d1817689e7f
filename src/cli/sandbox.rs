//! `kubestrap sandbox up|down`: the sandbox crate's own commands, plus `down -p PLAYBOOK`,
//! which finds the sandbox's directory the way `apply` does (`[sandbox] dir`, else
//! `<state_dir>/<cluster>/sandbox`), so nobody has to know where a playbook keeps it.

use std::path::PathBuf;

use kubestrap_sandbox::{DownArgs, UpArgs};

use super::{CliError, ExitStatus};
use crate::playbook::Playbook;

/// `kubestrap sandbox ...` arguments.
#[derive(Debug, clap::Args)]
pub struct SandboxCli {
    /// What to do.
    #[command(subcommand)]
    pub command: SandboxCommand,
}

/// `sandbox` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SandboxCommand {
    /// Run the sandbox cluster in the foreground until SIGTERM or Ctrl-C.
    Up(UpArgs),
    /// Stop a sandbox running in the background (SIGTERM via its pid file) and wait until its
    /// process is gone.
    Down(DownCli),
}

/// `sandbox down`: by directory or by playbook.
#[derive(Debug, Clone, clap::Args)]
pub struct DownCli {
    /// State directory of the running sandbox.
    #[arg(
        long,
        required_unless_present = "playbook",
        conflicts_with = "playbook"
    )]
    pub dir: Option<PathBuf>,
    /// The playbook whose sandbox to stop (provider = "sandbox").
    #[arg(short = 'p', long = "playbook", value_name = "PLAYBOOK")]
    pub playbook: Option<PathBuf>,
    /// Seconds to wait for a graceful stop.
    #[arg(long, default_value_t = 15)]
    pub timeout: u64,
}

/// Runs a `sandbox` subcommand on a runtime of its own.
///
/// # Errors
/// The playbook is unreadable or names no sandbox (exit 2), or the sandbox's own errors.
pub(super) fn run(args: SandboxCli) -> Result<ExitStatus, CliError> {
    let command = match args.command {
        SandboxCommand::Up(a) => kubestrap_sandbox::SandboxCommand::Up(a),
        SandboxCommand::Down(a) => kubestrap_sandbox::SandboxCommand::Down(down_args(a)?),
    };
    let rt = tokio::runtime::Runtime::new().map_err(CliError::Runtime)?;
    rt.block_on(kubestrap_sandbox::run(kubestrap_sandbox::SandboxArgs {
        command,
    }))?;
    Ok(ExitStatus::Success)
}

fn down_args(a: DownCli) -> Result<DownArgs, CliError> {
    let dir = match (a.dir, a.playbook) {
        (Some(dir), _) => dir,
        (None, Some(path)) => {
            let pb = Playbook::load(&path)?;
            pb.sandbox_dir().ok_or_else(|| CliError::NoSandbox {
                playbook: path.clone(),
                provider: pb.playbook.cluster.provider.as_str(),
            })?
        }
        // clap requires one of them.
        (None, None) => PathBuf::from("."),
    };
    Ok(DownArgs {
        dir,
        timeout: a.timeout,
    })
}
