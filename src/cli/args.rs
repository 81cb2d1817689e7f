//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::examples;

/// Bootstrap a Kubernetes cluster into a GitOps platform (k3s, Flux, Vault, External Secrets)
/// in five resumable phases.
///
/// Exit codes: 0 success; 1 a step failed (checkpoint written, `apply --resume` continues);
/// 2 bad input (playbook, flags, missing secret, unusable checkpoint) before anything was
/// touched; 3 refused (another run holds the lock).
#[derive(Debug, Parser)]
#[command(name = "kubestrap", version, about, long_about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the DAG and what each step would do, changing nothing.
    #[command(after_help = examples::PLAN)]
    Plan(PlanArgs),
    /// Run the bootstrap (or continue it with --resume).
    #[command(after_help = examples::APPLY)]
    Apply(ApplyArgs),
    /// Show what the checkpoint says: done / failed / pending per step.
    #[command(after_help = examples::STATUS)]
    Status(StatusArgs),
    /// Run or stop the local sandbox cluster (a stand-in for k3s and its add-ons).
    #[cfg(feature = "sandbox")]
    #[command(after_help = examples::SANDBOX)]
    Sandbox(super::SandboxCli),
    /// Write a commented starter playbook for a provider (never overwrites without --force).
    #[command(after_help = examples::INIT)]
    Init(super::init::InitArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell) on stdout.
    #[command(after_help = examples::COMPLETIONS)]
    Completions(CompletionsArgs),
    /// Unseal Vault (or OpenBao) from the keys Secret, once or, with --watch, after every
    /// restart until Ctrl-C.
    ///
    /// Reads the unseal shares from the keys Secret (`[vault] keys_secret` in Vault's namespace)
    /// through the Kubernetes API of the playbook's cluster, reaches Vault as `apply` does
    /// (port-forward to its pod, or `[vault] access = "address"`) and submits shares until Vault
    /// reports unsealed: never more than it still needs, never the root token, never a share
    /// on a command line or in a log. Exit codes: 0 unsealed (or already); 1 Vault could not
    /// be unsealed (the message says what to do); 2 bad input (playbook, flags).
    #[command(after_help = examples::UNSEAL)]
    Unseal(UnsealArgs),
}

/// The playbook `-p` defaults to, in the working directory.
pub const DEFAULT_PLAYBOOK: &str = "kubestrap.toml";

/// Options shared by every command that reads a playbook.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Playbook file (TOML); relative paths inside it resolve against its directory.
    #[arg(
        short = 'p',
        long = "playbook",
        default_value = DEFAULT_PLAYBOOK,
        value_name = "PLAYBOOK"
    )]
    pub playbook: PathBuf,
    /// Kubeconfig file; wins over the playbook's and over KUBECONFIG (as with kubectl).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; wins over the playbook's and the current context.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Test hook: replace the real steps with synthetic ones described in FILE (see
    /// `kubestrap::steps::synthetic`). Never use it on a real cluster.
    #[cfg(feature = "test-hooks")]
    #[arg(long, value_name = "FILE", hide = true)]
    pub synthetic_steps: Option<PathBuf>,
}

/// Output formats of `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// `terraform plan`-style text.
    Text,
    /// One versioned JSON document.
    Json,
    /// Graphviz DOT of the DAG.
    Dot,
}

/// Output formats of `apply` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people: live progress on a TTY, plain lines otherwise.
    Text,
    /// For machines: versioned JSON (apply: one event per line).
    Json,
}

/// `kubestrap plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = PlanFormat::Text)]
    pub output: PlanFormat,
}

/// `kubestrap apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Continue from the checkpoint: verify steps recorded as done, run the rest.
    #[arg(long, conflicts_with = "fresh")]
    pub resume: bool,
    /// Ignore the checkpoint and start from the first step.
    #[arg(long)]
    pub fresh: bool,
    /// Run only this step (repeatable); its dependencies are assumed done, and named.
    #[arg(long, value_name = "STEP")]
    pub only: Vec<String>,
    /// Steps running at once inside a phase.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Only show the plan (alias of `kubestrap plan`).
    #[arg(long, conflicts_with_all = ["resume", "fresh", "only"])]
    pub dry_run: bool,
}

/// `kubestrap unseal`.
#[derive(Debug, Args)]
pub struct UnsealArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Keep watching: unseal Vault whenever it is sealed again (a restarted pod is seen within
    /// a second), one line per change, until Ctrl-C (SIGINT) or SIGTERM, then exit 0.
    #[arg(long)]
    pub watch: bool,
}

/// `kubestrap completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `kubestrap status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
    pub output: Format,
}
