//! `kubestrap unseal [--watch]` at the CLI edge: the same playbook, preflight and cluster
//! resolution as `apply`, then [`crate::steps::unseal`]; one line per result on stdout, errors
//! through the one reporting layer (exit 1, or 2 for bad input).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::{CliError, ExitStatus, UnsealArgs};
use crate::engine::{Finish, RunEnv};
use crate::secrets::{self, Redactor, SecretStore};
use crate::steps::unseal::{self, UnsealError, UnsealTarget, WatchEvent};

/// How long the command waits for the API server's first answer before it says it cannot
/// reach the cluster.
const PROBE: Duration = Duration::from_secs(5);

/// Runs `kubestrap unseal`.
///
/// # Errors
/// [`CliError`]: bad input (exit 2) before anything is asked, [`UnsealError`] (exit 1).
pub(super) fn run(a: &UnsealArgs) -> Result<ExitStatus, CliError> {
    let (pb, engine) = super::prepare(&a.common)?;
    // Declared secrets leave the environment whatever the command (no child inherits them);
    // unseal uses none of them.
    let store = super::capture(&pb, &engine)?;
    super::preflight::check_cluster(&a.common, &pb)?;
    // Installed process-wide, the redactor learns each share the moment it is read.
    let redactor = Arc::new(Redactor::new(&store));
    drop(store);
    secrets::redact::install_global(Arc::clone(&redactor));
    let target = UnsealTarget::from_playbook(&pb, a.common.playbook.clone());
    if let Some(dir) = pb
        .sandbox_dir()
        .filter(|d| a.common.kubeconfig.is_none() && !d.join("kubeconfig").exists())
    {
        return Err(UnsealError::SandboxDown {
            dir: dir.display().to_string(),
            playbook: a.common.playbook.display().to_string(),
        }
        .into());
    }
    let cluster = super::cluster(&a.common, &pb);
    let rt = super::runtime()?;
    let env = RunEnv::new(pb).with_secrets(Arc::new(SecretStore::new()), redactor);
    let env = env.with_resource(Arc::clone(&cluster));
    let interrupt = env.interrupt.clone();
    let ctx = unseal::context(env);
    let outcome = rt.block_on(async {
        let result = if a.watch {
            let stop = super::cancel_on_signal(interrupt);
            say(&format!(
                "watching {} every {} ms; Ctrl-C stops",
                target_name(&target),
                unseal::WATCH_INTERVAL.as_millis()
            ));
            unseal::watch(&ctx, &target, |event| say(&watch_line(&event))).await;
            stop.abort();
            say("stopped watching (signal received)");
            Ok(())
        } else {
            match cluster.probe(PROBE).await {
                Err(why) => Err(UnsealError::ClusterUnreachable(why)),
                Ok(()) => unseal::unseal_once(&ctx, &target).await.map(|done| {
                    print_line(&format!("{}: {done}", target_name(&target)));
                }),
            }
        };
        let _ = cluster.finish().await;
        result
    });
    drop(ctx);
    rt.shutdown_timeout(Duration::from_secs(1));
    outcome?;
    Ok(ExitStatus::Success)
}

fn target_name(target: &UnsealTarget) -> String {
    let e = &target.endpoint;
    match e.access {
        crate::playbook::VaultAccess::PortForward => format!(
            "Vault {}/{} (port-forward to Service {}/{})",
            e.namespace, e.pod, e.namespace, e.service
        ),
        crate::playbook::VaultAccess::Address => {
            format!("Vault at {}", e.address.as_deref().unwrap_or("?"))
        }
    }
}

/// One `--watch` line (without the time stamp).
fn watch_line(event: &WatchEvent) -> String {
    match event {
        WatchEvent::Unsealed { version: Some(v) } => format!("unsealed (version {v})"),
        WatchEvent::Unsealed { version: None } => "unsealed".to_owned(),
        WatchEvent::Resealed(unsealed) => match unsealed {
            unseal::Unsealed::Now { took, .. } => {
                format!("sealed: {unsealed} in {} ms", took.as_millis())
            }
            unseal::Unsealed::Already { .. } | unseal::Unsealed::Itself { .. } => {
                format!("sealed: {unsealed}")
            }
        },
        WatchEvent::Problem(e) => format!("not unsealed: {e}"),
    }
}

/// Prints a `--watch` line on stdout after the UTC time.
fn say(line: &str) {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
    print_line(&format!("{now} {line}"));
}

/// Prints `line` on stdout, redacted, flushed at once (`--watch` is read line by line).
fn print_line(line: &str) {
    let line =
        secrets::redact::global().map_or_else(|| line.to_owned(), |r| r.redact(line).into_owned());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines_name_the_event() {
        let line = watch_line(&WatchEvent::Resealed(unseal::Unsealed::Now {
            used: 3,
            shares: 5,
            threshold: 3,
            took: Duration::from_millis(42),
        }));
        assert_eq!(
            line,
            "sealed: unsealed with 3 of 5 shares (threshold 3) in 42 ms"
        );
    }
}
