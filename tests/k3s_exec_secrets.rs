//! A secret `k3s_exec` needs (a join token) is referenced as `${K3S_TOKEN}`, declared in
//! `[[secrets]]`, and handed to the k3s installer over ssh's stdin: it never reaches the ssh
//! command line, the plan, the checkpoint or the output (issue 11, "secrets in k3s_exec move
//! to declared secret env vars"). A fake `ssh` on PATH stands in for the host: it records
//! every argv and what the install command read on stdin.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kubestrap_test_support::{self as common, kubestrap_bin};

const CANARY: &str = "K10canaryjointoken::server:4f2e9a7c1b";

/// The host side of `ssh`: `-G` answers like OpenSSH, `k3s --version` finds no k3s, the
/// install reads its stdin (recorded), `cat` prints k3s's kubeconfig.
const FAKE_SSH: &str = r#"#!/bin/sh
log="$FAKE_SSH_LOG"
n=$(ls "$log" | wc -l | tr -d ' ')
printf '%s\n' "$@" > "$log/argv-$n"
for a in "$@"; do
  if [ "$a" = "-G" ]; then
    printf 'hostname k3s.test\nport 22\nuserknownhostsfile %s\n' "$FAKE_KNOWN_HOSTS"
    exit 0
  fi
done
for last in "$@"; do :; done
case "$last" in
  "k3s --version") echo "sh: 1: k3s: not found" >&2; exit 127 ;;
  "cat /etc/rancher/k3s/k3s.yaml")
    printf 'apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://127.0.0.1:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nusers:\n- name: default\n  user:\n    token: fake\n'
    exit 0 ;;
  *) cat > "$log/stdin-$n"; exit 0 ;;
esac
"#;

/// `ssh-keygen -F`: the host key is known.
const FAKE_KEYGEN: &str = "#!/bin/sh\nexit 0\n";

fn executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Every file below `dir`, as text.
fn all_text(dir: &Path) -> String {
    let mut text = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                text.push_str(&all_text(&path));
            } else {
                text.push_str(&String::from_utf8_lossy(
                    &std::fs::read(&path).unwrap_or_default(),
                ));
            }
        }
    }
    text
}

#[test]
fn a_join_token_in_k3s_exec_reaches_the_installer_only_through_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let log = dir.path().join("ssh-log");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&log).unwrap();
    executable(&bin.join("ssh"), FAKE_SSH);
    executable(&bin.join("ssh-keygen"), FAKE_KEYGEN);
    let text = common::MINIMAL
        .replace(
            "provider = \"existing\"",
            "provider = \"k3s-ssh\"\nk3s_version = \"v1.33.1+k3s1\"\nk3s_exec = \"server --token ${K3S_TOKEN}\"\nkubeconfig = \"k3s.kubeconfig\"",
        )
        .replace(
            "[flux]",
            "[cluster.ssh]\nhost = \"k3s.test\"\nuser = \"root\"\n\n[flux]",
        )
        + "\n[[secrets]]\nenv = \"K3S_TOKEN\"\nvault_path = \"bootstrap/k3s\"\nvault_key = \"token\"\n";
    let _ = common::write_playbook(dir.path(), &text);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log_dir = log.display().to_string();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, "k3s.test ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake\n").unwrap();
    let known_hosts = known_hosts.display().to_string();
    let env = [
        ("PATH", path.as_str()),
        ("FAKE_SSH_LOG", log_dir.as_str()),
        ("FAKE_KNOWN_HOSTS", known_hosts.as_str()),
        ("K3S_TOKEN", CANARY),
        ("KUBESTRAP_LOG", "debug"),
    ];

    for format in ["text", "json"] {
        let out = common::run(
            &kubestrap_bin!(),
            &["plan", "--output", format],
            dir.path(),
            &env,
        );
        let all = common::text(&out);
        assert_eq!(out.status.code(), Some(0), "{all}");
        assert!(
            all.contains("${K3S_TOKEN}") && all.contains("K3S_TOKEN handed to the installer"),
            "the plan names the reference, not the value:\n{all}"
        );
        assert!(
            !all.contains(CANARY),
            "the token reached the {format} plan:\n{all}"
        );
    }

    let out = common::run(
        &kubestrap_bin!(),
        &["apply", "--only", "k3s.install", "--output", "json"],
        dir.path(),
        &env,
    );
    let all = common::text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        !all.contains(CANARY),
        "the token reached the output:\n{all}"
    );
    let state = all_text(&dir.path().join(".kubestrap"));
    assert!(state.contains("k3s.install"), "a checkpoint was written");
    assert!(
        !state.contains(CANARY),
        "the token reached the checkpoint:\n{state}"
    );

    // What ssh saw: the reference in its command line, the value only on the install's stdin.
    let mut argvs = String::new();
    let mut stdins = Vec::new();
    for entry in std::fs::read_dir(&log).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let body = std::fs::read_to_string(entry.path()).unwrap();
        if name.starts_with("argv-") {
            argvs.push_str(&body);
        } else {
            stdins.push(body);
        }
    }
    assert!(
        argvs.contains("IFS= read -r K3S_TOKEN && export K3S_TOKEN")
            && argvs.contains("server --token ${K3S_TOKEN}"),
        "the install command reads the token from stdin:\n{argvs}"
    );
    assert!(
        !argvs.contains(CANARY),
        "the token reached ssh's argv:\n{argvs}"
    );
    assert_eq!(
        stdins,
        [format!("{CANARY}\n")],
        "the installer got the token"
    );
}
