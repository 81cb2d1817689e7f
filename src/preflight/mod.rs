//! The preflight: every fact a run needs that this machine can check before the first step.
//!
//! A missing Terraform module, a binary not on PATH, a kubeconfig without the context, an SSH
//! host not in known_hosts: each needs only the playbook, a local file or PATH, yet used to
//! surface mid-run, after Vault was initialised and dozens of cluster writes. The preflight
//! checks them all up front and reports every problem at once, so a bad input exits 2 with
//! nothing written: no checkpoint, no lock file, no cluster request. Rules that need the
//! cluster stay in the steps.
//!
//! Pure apart from reading files, running `ssh -G` and `ssh-keygen -F` (which only read local
//! configuration); the environment (PATH, KUBECONFIG, HOME) is passed in as [`Env`].

mod ssh;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::kube::client::{ClientError, kubeconfig_paths, select_context};
use crate::playbook::{LoadedPlaybook, Provider};
use crate::terraform::find_on_path;

/// The step ids whose local facts the preflight checks.
pub mod steps {
    /// Installs or finds the cluster (kubeconfig, ssh, curl).
    pub const K3S_INSTALL: &str = "k3s.install";
    /// Reads a local install manifest.
    pub const FLUX_INSTALL: &str = "flux.install";
    /// Runs the Terraform module.
    pub const SECRETS_TERRAFORM: &str = "secrets.terraform";
}

/// The process environment the checks read, passed in so tests need not change the real one.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `PATH`.
    pub path: OsString,
    /// `KUBECONFIG`, when set.
    pub kubeconfig: Option<OsString>,
    /// `HOME`, when set.
    pub home: Option<PathBuf>,
}

impl Env {
    /// This process's environment.
    #[must_use]
    pub fn current() -> Self {
        Self {
            path: std::env::var_os("PATH").unwrap_or_default(),
            kubeconfig: std::env::var_os("KUBECONFIG"),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }
}

/// What to check: the playbook, the command line's overrides and which steps will run.
pub struct Inputs<'a> {
    /// The loaded, validated playbook.
    pub playbook: &'a LoadedPlaybook,
    /// `--kubeconfig`, when given.
    pub kubeconfig_flag: Option<&'a Path>,
    /// `--context`, when given.
    pub context_flag: Option<&'a str>,
    /// Whether a step (by id) will run; facts only one step needs are checked only then.
    pub runs: &'a dyn Fn(&str) -> bool,
    /// The environment.
    pub env: Env,
}

/// One local fact that does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where it comes from: a dotted playbook key (`terraform.dir`) or a flag (`--context`).
    pub key: String,
    /// 1-based (line, column) of the key in the playbook, when it is written there.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub remedy: String,
}

/// Every problem the preflight found; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PreflightError {
    /// The playbook file, for the `file:line:col` of each problem.
    pub playbook: PathBuf,
    /// The problems, in playbook order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for PreflightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "preflight found {n} problem{} before the first step; nothing was written (no checkpoint, no lock, no cluster request):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "  ")?;
            if p.key.starts_with("--") {
                write!(f, "{}", p.key)?;
            } else {
                write!(f, "{}", self.playbook.display())?;
                if let Some((line, col)) = p.position {
                    write!(f, ":{line}:{col}")?;
                }
                write!(f, ": `{}`", p.key)?;
            }
            writeln!(f, ": {}; {}", p.message, p.remedy)?;
        }
        Ok(())
    }
}

/// Runs every check.
///
/// # Errors
/// [`PreflightError`] listing every fact that does not hold.
pub fn check(inputs: &Inputs<'_>) -> Result<(), PreflightError> {
    let mut found = Vec::new();
    cluster(inputs, &mut found);
    if (inputs.runs)(steps::FLUX_INSTALL) {
        flux_manifest(inputs.playbook, &mut found);
    }
    if (inputs.runs)(steps::SECRETS_TERRAFORM) {
        terraform(inputs, &mut found);
    }
    if found.is_empty() {
        return Ok(());
    }
    let pb = inputs.playbook;
    let mut problems: Vec<Problem> = found
        .into_iter()
        .map(|f| Problem {
            position: if f.key.starts_with("--") {
                None
            } else {
                pb.position_of(&f.key)
            },
            key: f.key,
            message: f.message,
            remedy: f.remedy,
        })
        .collect();
    problems.sort_by_key(|p| (p.position.is_none(), p.position));
    Err(PreflightError {
        playbook: pb.path.clone(),
        problems,
    })
}

/// A problem before its position is looked up.
struct Found {
    key: String,
    message: String,
    remedy: String,
}

fn found(key: &str, message: impl Into<String>, remedy: impl Into<String>) -> Found {
    Found {
        key: key.to_owned(),
        message: message.into(),
        remedy: remedy.into(),
    }
}

fn cluster(inputs: &Inputs<'_>, out: &mut Vec<Found>) {
    let pb = inputs.playbook;
    let c = &pb.playbook.cluster;
    let named = inputs
        .kubeconfig_flag
        .map(Path::to_path_buf)
        .or_else(|| pb.kubeconfig());
    match c.provider {
        Provider::Existing => existing_kubeconfig(inputs, named.as_deref(), out),
        Provider::K3sSsh => {
            if named.is_none() {
                let host = c.ssh.as_ref().map_or("the host", |s| s.host.as_str());
                out.push(found(
                    "cluster.kubeconfig",
                    format!(
                        "provider \"k3s-ssh\" copies k3s's kubeconfig from {host} into a local file, and none is named"
                    ),
                    format!(
                        "set [cluster] kubeconfig = \"{}.kubeconfig\" (relative to the playbook), or pass --kubeconfig FILE",
                        c.name
                    ),
                ));
            }
            if (inputs.runs)(steps::K3S_INSTALL)
                && let Some(target) = &c.ssh
            {
                ssh::check(target, &inputs.env, out);
            }
        }
        Provider::K3sLocal => {
            if (inputs.runs)(steps::K3S_INSTALL) {
                binary_on_path(
                    "cluster.provider",
                    "curl",
                    &inputs.env,
                    "provider \"k3s-local\" downloads the k3s install script with it: install curl",
                    out,
                );
            }
        }
        Provider::Sandbox => {}
    }
}

/// `existing`: the kubeconfig kubectl would pick must exist and define the context.
fn existing_kubeconfig(inputs: &Inputs<'_>, named: Option<&Path>, out: &mut Vec<Found>) {
    let pb = inputs.playbook;
    let (key, remedy_file) = if inputs.kubeconfig_flag.is_some() {
        ("--kubeconfig", "pass the existing cluster's kubeconfig")
    } else if pb.playbook.cluster.kubeconfig.is_some() {
        (
            "cluster.kubeconfig",
            "point [cluster] kubeconfig (relative to the playbook) or --kubeconfig at the existing cluster's kubeconfig",
        )
    } else {
        (
            "cluster.kubeconfig",
            "set [cluster] kubeconfig, pass --kubeconfig, or set KUBECONFIG to the existing cluster's kubeconfig",
        )
    };
    let paths = match kubeconfig_paths(
        named,
        inputs.env.kubeconfig.as_deref(),
        inputs.env.home.as_deref(),
    ) {
        Ok(p) => p,
        Err(ClientError::MissingFile { path }) => {
            out.push(found(
                key,
                format!("kubeconfig {} does not exist", path.display()),
                remedy_file,
            ));
            return;
        }
        Err(e) => {
            out.push(found(key, e.to_string(), remedy_file));
            return;
        }
    };
    let mut merged = ::kube::config::Kubeconfig::default();
    for path in &paths {
        let loaded = ::kube::config::Kubeconfig::read_from(path).and_then(|k| merged.merge(k));
        match loaded {
            Ok(m) => merged = m,
            Err(e) => {
                out.push(found(
                    key,
                    format!("kubeconfig {} cannot be read: {e}", path.display()),
                    "fix the file or name another one",
                ));
                return;
            }
        }
    }
    let files = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let context = inputs
        .context_flag
        .map(str::to_owned)
        .or_else(|| pb.playbook.cluster.context.clone());
    let context_key = if inputs.context_flag.is_some() {
        "--context"
    } else if pb.playbook.cluster.context.is_some() {
        "cluster.context"
    } else {
        key
    };
    match select_context(&merged, context.as_deref()) {
        Ok(_) => {}
        Err(ClientError::UnknownContext { context, available }) => {
            let names: Vec<&str> = merged.contexts.iter().map(|c| c.name.as_str()).collect();
            let near = crate::playbook::nearest_name(&context, &names)
                .map(|n| format!(" (did you mean {n:?}?)"))
                .unwrap_or_default();
            out.push(found(
                context_key,
                format!("context {context:?} is not defined in {files}{near}"),
                format!("name one of its contexts: {available}"),
            ));
        }
        Err(ClientError::NoContext) => out.push(found(
            context_key,
            format!("{files} has no current-context and no context is named"),
            "set [cluster] context or pass --context NAME",
        )),
        Err(e) => out.push(found(context_key, e.to_string(), "fix the kubeconfig")),
    }
}

fn flux_manifest(pb: &LoadedPlaybook, out: &mut Vec<Found>) {
    let Some(src) = &pb.playbook.flux.install_manifest else {
        return;
    };
    if src.contains("://") || src.starts_with("sandbox:") {
        return;
    }
    let path = Path::new(src);
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {
            if let Err(e) = std::fs::File::open(path) {
                out.push(found(
                    "flux.install_manifest",
                    format!("{src} cannot be read: {e}"),
                    "make it readable, or name the release URL",
                ));
            }
        }
        Ok(_) => out.push(found(
            "flux.install_manifest",
            format!("{src} is not a file"),
            "name Flux's install.yaml (a file relative to the playbook, or an https:// URL)",
        )),
        Err(_) => out.push(found(
            "flux.install_manifest",
            format!("{src} does not exist"),
            "name Flux's install.yaml (a file relative to the playbook, or an https:// URL), or remove the key to use the release's",
        )),
    }
}

fn terraform(inputs: &Inputs<'_>, out: &mut Vec<Found>) {
    let tf = &inputs.playbook.playbook.terraform;
    let dir = &tf.dir;
    if !dir.is_dir() {
        out.push(found(
            "terraform.dir",
            format!("module directory {} does not exist", dir.display()),
            "point [terraform] dir at the Terraform module that writes the bootstrap secrets (relative to the playbook)",
        ));
    } else if !has_terraform_files(dir) {
        out.push(found(
            "terraform.dir",
            format!("{} holds no .tf or .tf.json file", dir.display()),
            "point [terraform] dir at the module's directory itself",
        ));
    }
    let name = tf.binary.as_str();
    let other = match name {
        "terraform" => "tofu",
        _ => "terraform",
    };
    let remedy = if find_on_path(other, &inputs.env.path).is_some() {
        format!("install {name}, or set binary = {other:?}, which is on PATH")
    } else {
        format!("install {name} (or {other}) and put it on PATH")
    };
    binary_on_path("terraform.binary", name, &inputs.env, &remedy, out);
}

fn has_terraform_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".tf") || name.ends_with(".tf.json")
        })
    })
}

fn binary_on_path(key: &str, binary: &str, env: &Env, remedy: &str, out: &mut Vec<Found>) {
    if find_on_path(binary, &env.path).is_none() {
        out.push(found(
            key,
            format!("{binary:?} is not on PATH ({})", env.path.to_string_lossy()),
            remedy,
        ));
    }
}

#[cfg(test)]
mod tests;
