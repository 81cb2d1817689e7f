//! `k3s-ssh`: the ssh client, the identity file and the host key, checked the way ssh will.
//!
//! The install runs `ssh -o BatchMode=yes -o StrictHostKeyChecking=yes`, so an unknown host
//! key fails it. Which known_hosts files count, and under which name the host is looked up
//! (`HostKeyAlias`, `HostName`, `[host]:port`), is ssh's own configuration: `ssh -G` prints it
//! without connecting, and `ssh-keygen -F` finds the name in a file (hashed entries too).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Env, Found, binary_on_path, found};
use crate::playbook::SshTarget;
use crate::terraform::find_on_path;

/// Checks `target`: ssh on PATH, the identity file readable, the host key known.
pub(super) fn check(target: &SshTarget, env: &Env, out: &mut Vec<Found>) {
    binary_on_path(
        "cluster.ssh.host",
        "ssh",
        env,
        "provider \"k3s-ssh\" installs k3s over ssh: install the OpenSSH client",
        out,
    );
    if let Some(key) = &target.identity_file {
        match std::fs::File::open(key) {
            Ok(_) if key.is_file() => {}
            Ok(_) => out.push(found(
                "cluster.ssh.identity_file",
                format!("{} is not a file", key.display()),
                "name the private key file (relative to the playbook)",
            )),
            Err(e) => out.push(found(
                "cluster.ssh.identity_file",
                format!("{} cannot be read: {e}", key.display()),
                "name a readable private key (relative to the playbook), or remove the key to use the ssh agent",
            )),
        }
    }
    let (Some(ssh), Some(keygen)) = (
        find_on_path("ssh", &env.path),
        find_on_path("ssh-keygen", &env.path),
    ) else {
        return;
    };
    let Some(config) = effective_config(&ssh, target) else {
        return;
    };
    let files: Vec<PathBuf> = config
        .known_hosts
        .iter()
        .filter(|p| p.is_file())
        .cloned()
        .collect();
    if files.iter().any(|f| known(&keygen, &config.lookup_name, f)) {
        return;
    }
    let listed = config
        .known_hosts
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let port = if target.port == 22 {
        String::new()
    } else {
        format!("-p {} ", target.port)
    };
    let user_file = config.known_hosts.first().map_or_else(
        || "~/.ssh/known_hosts".to_owned(),
        |p| p.display().to_string(),
    );
    out.push(found(
        "cluster.ssh.host",
        format!(
            "the host key of {} is not in known_hosts ({listed}), and ssh runs with StrictHostKeyChecking=yes",
            config.lookup_name
        ),
        format!(
            "add it once you have checked its fingerprint: `ssh-keyscan {port}{} >> {user_file}`, then compare `ssh-keygen -lf {user_file}` with the host's own `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`",
            config.host
        ),
    ));
}

/// What `ssh -G` says about a target.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct EffectiveConfig {
    /// The name known_hosts is searched for: `host` or `[host]:port`.
    pub lookup_name: String,
    /// The host ssh connects to.
    pub host: String,
    /// UserKnownHostsFile then GlobalKnownHostsFile entries.
    pub known_hosts: Vec<PathBuf>,
}

fn effective_config(ssh: &Path, target: &SshTarget) -> Option<EffectiveConfig> {
    let out = Command::new(ssh)
        .arg("-G")
        .arg("-p")
        .arg(target.port.to_string())
        .arg(format!("{}@{}", target.user, target.host))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| parse_effective(&String::from_utf8_lossy(&out.stdout)))
        .flatten()
}

/// Parses `ssh -G` output.
pub(super) fn parse_effective(text: &str) -> Option<EffectiveConfig> {
    let mut host = None;
    let mut port = 22u16;
    let mut alias = None;
    let mut user_files = Vec::new();
    let mut global_files = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        match key.to_ascii_lowercase().as_str() {
            "hostname" => host = Some(value.trim().to_owned()),
            "port" => port = value.trim().parse().unwrap_or(22),
            "hostkeyalias" => alias = Some(value.trim().to_owned()),
            "userknownhostsfile" => {
                user_files.extend(value.split_whitespace().map(PathBuf::from));
            }
            "globalknownhostsfile" => {
                global_files.extend(value.split_whitespace().map(PathBuf::from));
            }
            _ => {}
        }
    }
    let host = host?;
    let name = alias.unwrap_or_else(|| host.clone());
    let lookup_name = if port == 22 {
        name
    } else {
        format!("[{name}]:{port}")
    };
    user_files.extend(global_files);
    Some(EffectiveConfig {
        lookup_name,
        host,
        known_hosts: user_files,
    })
}

/// Whether `ssh-keygen -F name -f file` finds an entry.
pub(super) fn known(keygen: &Path, name: &str, file: &Path) -> bool {
    Command::new(keygen)
        .arg("-F")
        .arg(name)
        .arg("-f")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
