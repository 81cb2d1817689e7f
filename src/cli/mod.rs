//! The command line: parse, load, capture secrets (before the runtime starts threads), run, map
//! the outcome onto an exit code.

mod args;
pub mod audit;
mod diagnosis;
mod examples;
mod exit;
pub mod init;
mod preflight;
mod result;
#[cfg(feature = "sandbox")]
mod sandbox;
mod unseal;

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

pub use args::{
    ApplyArgs, Cli, Command, Common, CompletionsArgs, DEFAULT_PLAYBOOK, Format, PlanArgs,
    PlanFormat, StatusArgs, UnsealArgs,
};
pub use exit::{CliError, ExitStatus};
#[cfg(feature = "sandbox")]
pub use sandbox::{DownCli, SandboxCli, SandboxCommand};

use crate::engine::{
    self, ApplyRequest, Built, CheckpointMode, Engine, RunEnv, RunStatus, StepId, StepStatus,
};
use crate::kube::KubeAccess;
use crate::output;
use crate::playbook::{LoadedPlaybook, Playbook};
use crate::secrets::{self, Redactor, SecretStore};
use crate::steps::{self, Cluster};

/// Entry point of the `kubestrap` binary.
#[must_use]
pub fn main() -> ExitCode {
    // Crash points for resume tests, configured by FAILPOINTS (cargo feature `failpoints`).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    install_redacting_panic_hook();
    let cli = Cli::parse();
    let audit = matches!(&cli.command, Command::Apply(a) if !a.dry_run) && audit::requested();
    init_tracing();
    let status = finish(run(cli));
    if audit {
        audit::release_and_pause();
    }
    status
}

/// A panic's report passes the process-wide redactor before it reaches stderr: the message
/// of a panicking step may quote a value it held (the default hook prints it verbatim).
fn install_redacting_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let text = info.to_string();
        let text = secrets::redact::global()
            .map_or_else(|| text.clone(), |r| r.redact(&text).into_owned());
        let thread = std::thread::current();
        eprintln!("thread '{}' {text}", thread.name().unwrap_or("<unnamed>"));
    }));
}

/// Report the outcome of [`run`] (the error, redacted, on stderr) as an exit code.
fn finish(outcome: Result<ExitStatus, CliError>) -> ExitCode {
    match outcome {
        Ok(status) => status.into(),
        // `kubestrap plan | head`: the reader left; not an error worth a message.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitStatus::Success.into()
        }
        Err(err) => {
            let text = err.to_string();
            let text = secrets::redact::global()
                .map_or_else(|| text.clone(), |r| r.redact(&text).into_owned());
            eprintln!("error: {}", text.trim_end());
            err.exit_status().into()
        }
    }
}

/// Run a parsed command line.
///
/// # Errors
/// [`CliError`] for every expected failure; its [`CliError::exit_status`] is the exit code.
pub fn run(cli: Cli) -> Result<ExitStatus, CliError> {
    match cli.command {
        Command::Plan(a) => plan_cmd(&a.common, a.output),
        Command::Apply(a) if a.dry_run => {
            let format = match a.output {
                Format::Text => PlanFormat::Text,
                Format::Json => PlanFormat::Json,
            };
            plan_cmd(&a.common, format)
        }
        Command::Apply(a) => apply_cmd(&a),
        Command::Status(a) => status_cmd(&a),
        #[cfg(feature = "sandbox")]
        Command::Sandbox(a) => sandbox::run(a),
        Command::Init(a) => init_cmd(&a),
        Command::Completions(a) => completions_cmd(&a),
        Command::Unseal(a) => unseal::run(&a),
    }
}

/// `kubestrap init`: the starter files, then what is left to fill in.
fn init_cmd(a: &init::InitArgs) -> Result<ExitStatus, CliError> {
    let written = init::run(a)?;
    print!("{}", init::summary(a, &written));
    Ok(ExitStatus::Success)
}

/// `kubestrap completions SHELL`: the script on stdout (see the README for where it goes).
fn completions_cmd(a: &CompletionsArgs) -> Result<ExitStatus, CliError> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(a.shell, &mut cmd, "kubestrap", &mut out);
    out.flush().map_err(CliError::Output)?;
    Ok(ExitStatus::Success)
}

/// Default log filter. vaultrs/rustify log every non-2xx answer (a sealed Vault's health check
/// is one) at error level; kube's client logs a response body it cannot decode at warn level,
/// which could be a Secret list. Waits report watch errors themselves, so those stay quiet.
///
/// Libraries stay silent by default altogether: an unreachable cluster made kube's client log
/// `ERROR failed with error client error (Connect)` once per request, in colour, before the
/// step's own message (which names the server, context and cause). `KUBESTRAP_LOG` or
/// `RUST_LOG` bring them back for diagnosis.
const DEFAULT_LOG_FILTER: &str = "off,kubestrap=warn,kubestrap_sandbox=warn";

/// Targets whose logs carry raw wire payloads at `trace`, and so any secret on the wire:
/// tungstenite dumps every WebSocket frame of a port-forward (Vault's HTTP traffic, with its
/// token and `sys/init` response, in text and hex, split at frame boundaries where the
/// redactor cannot recognise a value). They are off whatever filter the user sets.
const WIRE_DUMP_TARGETS: [&str; 2] = ["tungstenite", "tokio_tungstenite"];

/// Logs follow `KUBESTRAP_LOG`, else `RUST_LOG` (tracing filter syntax), else
/// [`DEFAULT_LOG_FILTER`]; the [`WIRE_DUMP_TARGETS`] are always off.
fn init_tracing() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("KUBESTRAP_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    for target in WIRE_DUMP_TARGETS {
        if let Ok(off) = format!("{target}=off").parse() {
            filter = filter.add_directive(off);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(secrets::RedactingStderr)
        .with_target(false)
        .try_init();
}

fn prepare(common: &Common) -> Result<(LoadedPlaybook, Engine<Built>), CliError> {
    // A new user's first command (no -p, no kubestrap.toml): say how to get a playbook rather
    // than "file not found". A wrong -p FILE keeps the read error, which names the cause.
    if common.playbook == std::path::Path::new(DEFAULT_PLAYBOOK)
        && common.playbook.symlink_metadata().is_err()
    {
        return Err(CliError::NoPlaybook(common.playbook.clone()));
    }
    let pb = Playbook::load(&common.playbook)?;
    #[cfg(feature = "test-hooks")]
    if let Some(file) = &common.synthetic_steps {
        let engine = steps::synthetic::build_from_file(file)?;
        return Ok((pb, engine));
    }
    let engine = steps::build(&pb)?;
    Ok((pb, engine))
}

/// Capture every declared secret (and every secret a step names), wiping them from the
/// environment whatever the command, so no child process ever inherits them.
fn capture(pb: &LoadedPlaybook, engine: &Engine<Built>) -> Result<SecretStore, CliError> {
    let mut names: BTreeSet<String> = pb.playbook.secrets.iter().map(|s| s.env.clone()).collect();
    names.extend(engine.secret_users().into_keys());
    Ok(secrets::capture(names.iter().map(String::as_str))?)
}

fn check_required(
    pb: &LoadedPlaybook,
    engine: &Engine<Built>,
    store: &SecretStore,
    only: &[String],
) -> Result<(), CliError> {
    let users = engine.secret_users();
    let mut needed: BTreeSet<&str> = pb
        .playbook
        .secrets
        .iter()
        .filter(|s| s.required)
        .map(|s| s.env.as_str())
        .collect();
    needed.extend(users.keys().map(String::as_str));
    let selected: Option<BTreeSet<&str>> =
        (!only.is_empty()).then(|| only.iter().map(String::as_str).collect());
    // A finished bootstrap needs no environment variables again (the self-referencing property
    // of seed 003): when an earlier checkpoint of this cluster records every step that uses a
    // secret as done, that secret may be missing. Those steps then compare with what the
    // cluster and Vault already hold, and one that really needs the value fails naming it.
    let done_before: BTreeSet<String> =
        engine::Checkpoint::load(&engine::Checkpoint::path_in(&pb.cluster_dir()))
            .ok()
            .flatten()
            .map(|cp| {
                cp.steps
                    .iter()
                    .filter(|(_, r)| r.status == StepStatus::Done)
                    .map(|(id, _)| id.as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default();
    let mut missing = Vec::new();
    for env in needed {
        if store.contains(env) {
            continue;
        }
        let users_done = users
            .get(env)
            .is_some_and(|s| !s.is_empty() && s.iter().all(|id| done_before.contains(id.as_str())));
        if users_done {
            tracing::warn!(
                "{env} is not set: the steps that use it are done according to the checkpoint, so the run continues with the values already in the cluster and Vault"
            );
            continue;
        }
        let steps: Vec<StepId> = users
            .get(env)
            .map(|s| {
                s.iter()
                    .filter(|id| {
                        selected
                            .as_ref()
                            .is_none_or(|sel| sel.contains(id.as_str()))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if selected.is_some() && steps.is_empty() {
            continue;
        }
        missing.push((env.to_owned(), steps));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CliError::MissingSecrets(missing))
    }
}

/// The playbook's cluster, reached as `--kubeconfig`/`--context` (or the playbook) say.
fn cluster(common: &Common, pb: &LoadedPlaybook) -> Arc<Cluster> {
    let access = KubeAccess::new(
        kubeconfig_path(common, pb),
        common
            .context
            .clone()
            .or_else(|| pb.playbook.cluster.context.clone()),
    );
    Arc::new(Cluster::for_playbook(pb, access))
}

/// `--kubeconfig`, else the playbook's (or the sandbox's), else kube's own default
/// (`KUBECONFIG`, then `~/.kube/config`).
fn kubeconfig_path(common: &Common, pb: &LoadedPlaybook) -> Option<PathBuf> {
    common.kubeconfig.clone().or_else(|| pb.kubeconfig())
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // A stopped thread's stack stays mapped in glibc's stack cache: burn what it held.
        .on_thread_stop(secrets::burn_stack)
        .build()
        .map_err(CliError::Runtime)
}

/// Cancel `token` on SIGINT or SIGTERM: running steps are interrupted, nothing new starts.
fn watch_signals(token: tokio_util::sync::CancellationToken) {
    let warn = tokio_util::sync::CancellationToken::new();
    drop(cancel_on_signal(warn.clone()));
    tokio::spawn(async move {
        warn.cancelled().await;
        tracing::warn!("interrupted: letting running steps stop, starting nothing new");
        token.cancel();
    });
}

/// Cancel `token` on the first SIGINT or SIGTERM (quietly; the caller says what it means).
fn cancel_on_signal(token: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminated => {}
        }
        token.cancel();
    })
}

/// How long `apply` waits to learn the cluster's identity before it starts without it.
const IDENTITY_PROBE: Duration = Duration::from_secs(5);

/// How long `plan` waits for the API server's `/version` before it plans statically.
const PLAN_PROBE: Duration = Duration::from_secs(5);

fn plan_cmd(common: &Common, format: PlanFormat) -> Result<ExitStatus, CliError> {
    let (pb, engine) = prepare(common)?;
    let store = capture(&pb, &engine)?;
    // Plan never uses secret values, but it reads the keys Secret (the root token) and Vault:
    // its redactor knows the captured secrets and, installed process-wide, learns Vault's root
    // token and unseal keys the moment a step reads them, like apply's.
    let redactor = Arc::new(Redactor::new(&store));
    drop(store);
    secrets::redact::install_global(Arc::clone(&redactor));
    // The same problems `apply` would stop at, shown up front; the plan itself still renders
    // (it describes, it touches nothing), so a starter playbook can be planned before its host
    // or kubeconfig exists.
    if let Err(problems) = preflight::check(common, &pb, &[]) {
        eprintln!(
            "warning: `apply` would stop before its first step (exit 2): {}",
            problems.to_string().trim_end()
        );
    }
    let cluster = cluster(common, &pb);
    let rt = runtime()?;
    let sandbox_down = pb
        .sandbox_dir()
        .filter(|d| common.kubeconfig.is_none() && !d.join("kubeconfig").exists());
    let unanswered = match sandbox_down {
        Some(dir) => Err(format!(
            "the sandbox in {} is not running yet (`kubestrap apply` starts it)",
            dir.display()
        )),
        None => rt.block_on(cluster.probe(PLAN_PROBE)),
    };
    if let Err(why) = unanswered {
        eprintln!(
            "note: the plan is static (what a run would do on a cluster where nothing exists yet, not a diff): {why}"
        );
    }
    let env = RunEnv::new(pb)
        .with_finished_resource(cluster)
        .with_secrets(Arc::new(SecretStore::new()), redactor);
    let plan = rt.block_on(async {
        watch_signals(env.interrupt.clone());
        engine::plan(&engine, &env, 8).await
    });
    let mut out = std::io::stdout().lock();
    match format {
        PlanFormat::Text => output::render_text(&plan, &mut out),
        PlanFormat::Json => output::render_json(&plan, &mut out),
        PlanFormat::Dot => output::render_dot(&plan, &mut out),
    }
    .map_err(CliError::Output)?;
    Ok(if plan.has_errors() {
        ExitStatus::StepFailed
    } else {
        ExitStatus::Success
    })
}

fn apply_cmd(a: &ApplyArgs) -> Result<ExitStatus, CliError> {
    let (pb, engine) = prepare(&a.common)?;
    let store = capture(&pb, &engine)?;
    CliError::all([
        check_required(&pb, &engine, &store, &a.only),
        preflight::check(&a.common, &pb, &a.only),
    ])?;
    let redactor = Arc::new(Redactor::new(&store));
    secrets::redact::install_global(Arc::clone(&redactor));
    let cluster = cluster(&a.common, &pb);
    let rt = runtime()?;
    // Which cluster this is, when it already answers: a checkpoint of another one is refused.
    let uid = rt.block_on(cluster.identity(IDENTITY_PROBE));
    let env = RunEnv::new(pb)
        .with_cluster_uid(uid)
        .with_finished_resource(cluster)
        .with_secrets(Arc::new(store), redactor);
    let tty = match a.output {
        Format::Json => {
            env.events
                .subscribe(Box::new(output::JsonLines::new(std::io::stdout())));
            None
        }
        Format::Text if std::io::stderr().is_terminal() => {
            let p = output::TtyProgress::new();
            env.events.subscribe(p.subscriber());
            Some(p)
        }
        Format::Text => {
            env.events
                .subscribe(Box::new(output::PlainLines::new(std::io::stderr())));
            None
        }
    };
    let req = ApplyRequest {
        checkpoint: if a.resume {
            CheckpointMode::Resume
        } else if a.fresh {
            CheckpointMode::Fresh
        } else {
            CheckpointMode::Default
        },
        only: a.only.clone(),
        concurrency: usize::from(a.concurrency),
    };
    let report = rt.block_on(async {
        watch_signals(env.interrupt.clone());
        let ticker = tty.clone().map(|p| {
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(500));
                loop {
                    every.tick().await;
                    p.tick();
                }
            })
        });
        let result = engine::apply(&engine, &env, &req).await;
        if let Some(t) = ticker {
            t.abort();
        }
        result
    })?;
    let kubeconfig = kubeconfig_path(&a.common, &env.playbook);
    let context = a
        .common
        .context
        .clone()
        .or_else(|| env.playbook.playbook.cluster.context.clone());
    let outcome = result::build(
        &env.playbook,
        &a.common.playbook,
        kubeconfig.as_deref(),
        context.as_deref(),
        report.status,
    );
    let mut stdout = std::io::stdout().lock();
    if a.output == Format::Text {
        let selected = if a.only.is_empty() {
            engine.len()
        } else {
            a.only.len()
        };
        output::render_summary(&report, selected, &mut stdout).map_err(CliError::Output)?;
        outcome.write_text(&mut stdout).map_err(CliError::Output)?;
    } else {
        outcome.write_json(&mut stdout).map_err(CliError::Output)?;
    }
    drop(stdout);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(match report.status {
        RunStatus::Succeeded => ExitStatus::Success,
        RunStatus::Failed | RunStatus::Interrupted => ExitStatus::StepFailed,
    })
}

fn status_cmd(a: &StatusArgs) -> Result<ExitStatus, CliError> {
    let (pb, engine) = prepare(&a.common)?;
    let _ = capture(&pb, &engine)?;
    let kubeconfig = kubeconfig_path(&a.common, &pb)
        .map(|p| p.display().to_string())
        .or_else(|| std::env::var("KUBECONFIG").ok());
    let access = KubeAccess::new(
        kubeconfig_path(&a.common, &pb),
        a.common
            .context
            .clone()
            .or_else(|| pb.playbook.cluster.context.clone()),
    );
    let env = RunEnv::new(pb);
    let report = engine::status(&engine, &env)?;
    let diagnoses = diagnosis::failed_steps(&report, &access);
    let mut out = std::io::stdout().lock();
    let written = match a.output {
        Format::Json => {
            let mut doc = output::StatusDoc::new(&report, kubeconfig);
            for step in &mut doc.steps {
                if let Some(d) = diagnoses.get(step.id) {
                    step.diagnosis = Some(d.chain.clone());
                    step.diagnosis_live = Some(d.live);
                }
            }
            serde_json::to_writer_pretty(&mut out, &doc)
                .map_err(std::io::Error::other)
                .and_then(|()| writeln!(out))
        }
        Format::Text => render_status_text(&report, &env, &diagnoses, &mut out),
    };
    written.map_err(CliError::Output)?;
    Ok(ExitStatus::Success)
}

fn render_status_text(
    report: &engine::StatusReport,
    env: &RunEnv,
    diagnoses: &std::collections::BTreeMap<String, diagnosis::StepDiagnosis>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let path = engine::Checkpoint::path_in(&env.playbook.cluster_dir());
    if report.has_checkpoint {
        writeln!(
            out,
            "cluster {} (checkpoint {})",
            report.cluster,
            path.display()
        )?;
    } else {
        writeln!(
            out,
            "cluster {}: no checkpoint yet (nothing applied)",
            report.cluster
        )?;
    }
    if report.playbook_changed {
        writeln!(
            out,
            "note: the playbook changed since the checkpoint was written"
        )?;
    }
    writeln!(
        out,
        "{:<16} {:<30} {:<12} ATTEMPTS",
        "PHASE", "STEP", "STATUS"
    )?;
    for s in &report.steps {
        let mut status = engine::status_name(s.status).to_owned();
        if s.inputs_changed {
            status.push('*');
        }
        writeln!(
            out,
            "{:<16} {:<30} {:<12} {}",
            s.phase.name(),
            s.id,
            status,
            s.attempts
        )?;
        if let (StepStatus::Failed | StepStatus::Interrupted, Some(e)) = (s.status, &s.last_error) {
            writeln!(out, "{:<16} {}", "", engine::Diagnosis::strip(e))?;
            if let Some(d) = diagnoses.get(s.id.as_str()) {
                let source = if d.live {
                    "read live from the cluster now"
                } else {
                    "as recorded; the cluster did not answer"
                };
                writeln!(out, "{:<16} ({source})", "")?;
                for line in d.chain.render().lines() {
                    writeln!(out, "{:<16} {line}", "")?;
                }
            }
        }
    }
    if report.steps.iter().any(|s| s.inputs_changed) {
        writeln!(
            out,
            "* inputs changed since recorded: `apply --resume` applies it again"
        )?;
    }
    Ok(())
}
