//! `kubestrap init`: write a commented starter playbook for a provider, and the files it points
//! at (the sandbox's fleet repository, a Terraform module for phase 2), so a new user starts
//! from a file that `plan` accepts once the values marked `TODO` are set; the sandbox's needs no
//! edit at all.
//!
//! Nothing is overwritten without `--force`, and every target is checked before the first one
//! is written, so a refusal leaves the directory as it was.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::playbook::PLACEHOLDER_PREFIX;

/// The providers `init` has a starter for (the playbook's `[cluster] provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitProvider {
    /// The embedded sandbox cluster: runs here, nothing to fill in.
    Sandbox,
    /// k3s installed on this machine.
    K3sLocal,
    /// k3s installed on another machine over SSH.
    K3sSsh,
    /// A cluster that already exists, reached through a kubeconfig.
    Existing,
}

/// `kubestrap init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Which kind of cluster the playbook is for.
    #[arg(long, value_enum)]
    pub provider: InitProvider,
    /// Where to write the playbook; the files it refers to go next to it.
    #[arg(
        short = 'p',
        long = "playbook",
        default_value = super::DEFAULT_PLAYBOOK,
        value_name = "PLAYBOOK"
    )]
    pub playbook: PathBuf,
    /// Overwrite files that already exist.
    #[arg(long)]
    pub force: bool,
    /// Cluster name (a DNS label): names the state directory and Flux's path.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Flux's Git repository (https://host/org/repo); left as a TODO when not given.
    #[arg(long, value_name = "URL")]
    pub git_url: Option<String>,
    /// k3s-ssh: the machine to install k3s on; left as a TODO when not given.
    #[arg(long, value_name = "HOST")]
    pub ssh_host: Option<String>,
    /// k3s-ssh: the login user.
    #[arg(long, value_name = "USER", default_value = "root")]
    pub ssh_user: String,
    /// existing: the kubeconfig context (else kubectl's current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

/// Why `init` wrote nothing (or not everything).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A target exists and `--force` was not given; nothing was written.
    #[error(
        "{}; nothing was written: pass --force to overwrite, or -p to write elsewhere",
        existing(.0)
    )]
    Exists(Vec<PathBuf>),
    /// A flag's value cannot go into a playbook.
    #[error("--{flag} {value:?}: {why}")]
    BadValue {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// What is wrong and what to pass.
        why: String,
    },
    /// Writing failed.
    #[error("failed to write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
}

/// `X already exists`, and how many more of init's files do.
fn existing(paths: &[PathBuf]) -> String {
    let first = paths
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    match paths.len() {
        0 | 1 => format!("{first} already exists"),
        n => format!(
            "{first} already exists (and {} more of the files init writes)",
            n - 1
        ),
    }
}

impl InitError {
    /// Bad input (exit 2) unless the disk failed.
    #[must_use]
    pub const fn is_bad_input(&self) -> bool {
        !matches!(self, Self::Write { .. })
    }
}

const SANDBOX: &str = include_str!("init/sandbox.toml");
const K3S_LOCAL: &str = include_str!("init/k3s-local.toml");
const K3S_SSH: &str = include_str!("init/k3s-ssh.toml");
const EXISTING: &str = include_str!("init/existing.toml");
const FLUX: &str = include_str!("init/flux.toml");
const COMMON: &str = include_str!("init/common.toml");

/// The sandbox's fleet repository (the same one `playbooks/sandbox.toml` uses).
const FLEET: [(&str, &str); 9] = [
    (
        "README.md",
        include_str!("../../playbooks/sandbox/git/fleet/README.md"),
    ),
    (
        "clusters/sandbox/kustomization.yaml",
        include_str!("../../playbooks/sandbox/git/fleet/clusters/sandbox/kustomization.yaml"),
    ),
    (
        "clusters/sandbox/flux-system/kustomization.yaml",
        include_str!(
            "../../playbooks/sandbox/git/fleet/clusters/sandbox/flux-system/kustomization.yaml"
        ),
    ),
    (
        "clusters/sandbox/flux-system/gotk-sync.yaml",
        include_str!(
            "../../playbooks/sandbox/git/fleet/clusters/sandbox/flux-system/gotk-sync.yaml"
        ),
    ),
    (
        "clusters/sandbox/apps.yaml",
        include_str!("../../playbooks/sandbox/git/fleet/clusters/sandbox/apps.yaml"),
    ),
    (
        "apps/sandbox/kustomization.yaml",
        include_str!("../../playbooks/sandbox/git/fleet/apps/sandbox/kustomization.yaml"),
    ),
    (
        "apps/sandbox/namespace.yaml",
        include_str!("../../playbooks/sandbox/git/fleet/apps/sandbox/namespace.yaml"),
    ),
    (
        "apps/sandbox/deployment.yaml",
        include_str!("../../playbooks/sandbox/git/fleet/apps/sandbox/deployment.yaml"),
    ),
    (
        "apps/sandbox/external-secret.yaml",
        include_str!("../../playbooks/sandbox/git/fleet/apps/sandbox/external-secret.yaml"),
    ),
];

/// Phase 2's offline module (Terraform built-ins and curl only), for the sandbox.
const OFFLINE_MODULE: &str = include_str!("../../tests/fixtures/terraform/vault-kv/main.tf");
/// Phase 2's module for real clusters (hashicorp/vault provider).
const VAULT_MODULE: &str = include_str!("../../phases/2-secrets/main.tf");

/// Where the sandbox's fleet repository goes, relative to the playbook.
const FLEET_DIR: &str = "sandbox/git/fleet";

/// One file to write: its path and content.
type File = (PathBuf, String);

/// A TODO value: the placeholder prefix, then what to write instead.
fn todo(what: &str) -> String {
    format!("{PLACEHOLDER_PREFIX} {what}")
}

/// Whether `name` is a DNS label (what `[cluster] name` must be).
fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A value that goes between TOML double quotes as is.
fn quotable(flag: &'static str, value: &str) -> Result<String, InitError> {
    if value
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return Err(InitError::BadValue {
            flag,
            value: value.to_owned(),
            why: "must not contain quotes, backslashes or control characters".into(),
        });
    }
    Ok(value.to_owned())
}

/// The files `init` writes for `args`, the playbook first.
///
/// # Errors
/// [`InitError::BadValue`] for a flag value that cannot go into the playbook.
pub fn files(args: &InitArgs) -> Result<Vec<File>, InitError> {
    let name = match &args.name {
        Some(n) if !is_dns_label(n) => {
            return Err(InitError::BadValue {
                flag: "name",
                value: n.clone(),
                why: "must be a DNS label: lowercase letters, digits and '-', at most 63".into(),
            });
        }
        Some(n) => n.clone(),
        None if args.provider == InitProvider::Sandbox => "sandbox".into(),
        None => "my-cluster".into(),
    };
    let dir = args
        .playbook
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let playbook_arg = args.playbook.display().to_string();
    let git_url = match &args.git_url {
        Some(u) => quotable("git-url", u)?,
        None => todo("your fleet repository, e.g. https://github.com/ORG/fleet"),
    };
    let terraform_dir = if args.provider == InitProvider::Sandbox {
        "terraform/vault-kv"
    } else {
        "terraform/vault-secrets"
    };
    let template = match args.provider {
        InitProvider::Sandbox => SANDBOX,
        InitProvider::K3sLocal => K3S_LOCAL,
        InitProvider::K3sSsh => K3S_SSH,
        InitProvider::Existing => EXISTING,
    };
    let context = match &args.context {
        Some(c) => format!("context = \"{}\"\n", quotable("context", c)?),
        None => "# context = \"my-context\"            # else kubectl's current context\n".into(),
    };
    let ssh_host = match &args.ssh_host {
        Some(h) => quotable("ssh-host", h)?,
        None => todo("the machine to install k3s on (host name or address)"),
    };
    let playbook = template
        .replace("@FLUX@", FLUX.trim_end())
        .replace("@COMMON@", COMMON.trim_end())
        .replace("@CONTEXT@", &context)
        .replace("@PLAYBOOK@", &playbook_arg)
        .replace("@NAME@", &name)
        .replace("@GIT_URL@", &git_url)
        .replace("@SSH_HOST@", &ssh_host)
        .replace("@SSH_USER@", &quotable("ssh-user", &args.ssh_user)?)
        .replace("@FLEET_DIR@", FLEET_DIR)
        .replace("@TERRAFORM_DIR@", terraform_dir);
    let mut out = vec![(args.playbook.clone(), playbook)];
    if args.provider == InitProvider::Sandbox {
        for (path, text) in FLEET {
            out.push((dir.join(FLEET_DIR).join(path), text.to_owned()));
        }
        out.push((
            dir.join(terraform_dir).join("main.tf"),
            OFFLINE_MODULE.to_owned(),
        ));
    } else {
        out.push((
            dir.join(terraform_dir).join("main.tf"),
            VAULT_MODULE.to_owned(),
        ));
    }
    Ok(out)
}

/// Write the starter files; returns what was written, the playbook first.
///
/// # Errors
/// [`InitError::Exists`] (nothing written) when a target exists without `--force`; bad flag
/// values; IO errors.
pub fn run(args: &InitArgs) -> Result<Vec<PathBuf>, InitError> {
    // A file that already holds exactly what init would write (the Terraform module shared by
    // two playbooks in one directory) is neither a conflict nor written again.
    let files: Vec<File> = files(args)?
        .into_iter()
        .filter(|(p, text)| std::fs::read_to_string(p).ok().as_ref() != Some(text))
        .collect();
    if !args.force {
        let existing: Vec<PathBuf> = files
            .iter()
            .filter(|(p, _)| p.symlink_metadata().is_ok())
            .map(|(p, _)| p.clone())
            .collect();
        if !existing.is_empty() {
            return Err(InitError::Exists(existing));
        }
    }
    let mut written = Vec::new();
    for (path, text) in files {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| InitError::Write {
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::write(&path, text).map_err(|source| InitError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// What to tell the user after writing: the files, the TODOs left, the next command.
#[must_use]
pub fn summary(args: &InitArgs, written: &[PathBuf]) -> String {
    let mut text = String::new();
    for p in written {
        text.push_str(&format!("wrote {}\n", p.display()));
    }
    if written.is_empty() {
        text.push_str("every file is already as init writes it\n");
    }
    let todos = std::fs::read_to_string(&args.playbook)
        .ok()
        .map(|t| {
            t.lines()
                .enumerate()
                .filter(|(_, l)| l.contains(&format!("\"{PLACEHOLDER_PREFIX}")))
                .map(|(i, l)| (i + 1, l.trim().to_owned()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let pb = args.playbook.display();
    if todos.is_empty() {
        text.push_str(&format!(
            "next: kubestrap plan -p {pb}, then kubestrap apply -p {pb}\n"
        ));
    } else {
        text.push_str(&format!("set these values in {pb} first:\n"));
        for (line, l) in todos {
            text.push_str(&format!("  {pb}:{line}: {l}\n"));
        }
        text.push_str(&format!("then: kubestrap plan -p {pb}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of the checkout's sandbox fleet, relative to the fleet's root.
    fn fleet_files(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                fleet_files(&path, root, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }

    #[test]
    fn init_embeds_every_file_of_the_sandbox_fleet() {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/sandbox/git/fleet");
        let mut on_disk = Vec::new();
        fleet_files(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = FLEET.iter().map(|(p, _)| (*p).to_owned()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "add the fleet's new files to FLEET");
    }

    fn args(provider: InitProvider) -> InitArgs {
        InitArgs {
            provider,
            playbook: PathBuf::from("dir/kubestrap.toml"),
            force: false,
            name: None,
            git_url: None,
            ssh_host: None,
            ssh_user: "root".into(),
            context: None,
        }
    }

    #[test]
    fn every_template_placeholder_is_filled() {
        for p in [
            InitProvider::Sandbox,
            InitProvider::K3sLocal,
            InitProvider::K3sSsh,
            InitProvider::Existing,
        ] {
            let files = files(&args(p)).unwrap();
            assert!(!files[0].1.contains('@'), "{p:?}: {}", files[0].1);
        }
    }

    #[test]
    fn sandbox_has_no_todo_and_others_mark_what_to_set() {
        let sandbox = files(&args(InitProvider::Sandbox)).unwrap();
        assert!(!sandbox[0].1.contains(PLACEHOLDER_PREFIX));
        let ssh = files(&args(InitProvider::K3sSsh)).unwrap();
        assert_eq!(ssh[0].1.matches(PLACEHOLDER_PREFIX).count(), 2);
        let mut given = args(InitProvider::K3sSsh);
        given.git_url = Some("https://example.org/o/fleet".into());
        given.ssh_host = Some("10.0.0.5".into());
        let filled = files(&given).unwrap();
        assert!(!filled[0].1.contains(PLACEHOLDER_PREFIX), "{}", filled[0].1);
    }

    #[test]
    fn bad_flag_values_are_refused() {
        let mut a = args(InitProvider::Existing);
        a.name = Some("Prod_EU".into());
        assert!(matches!(
            files(&a),
            Err(InitError::BadValue { flag: "name", .. })
        ));
        let mut a = args(InitProvider::Existing);
        a.git_url = Some("https://x\"y".into());
        assert!(matches!(
            files(&a),
            Err(InitError::BadValue {
                flag: "git-url",
                ..
            })
        ));
    }
}
