//! kubestrap: bootstrap a Kubernetes cluster into a GitOps platform.
//!
//! Minimal entry point: only `kubestrap sandbox up|down` until the full CLI is merged.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "kubestrap", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run or stop the local sandbox cluster.
    Sandbox(kubestrap::sandbox::SandboxArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Sandbox(args) => kubestrap::sandbox::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
