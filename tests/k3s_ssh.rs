//! `k3s-ssh` against a fake host: a fake `ssh` on PATH records every argv and what the
//! install command read on stdin, answers `k3s --version` from a file and prints a kubeconfig.
//!
//! - A secret `k3s_exec` needs (a join token) is referenced as `${K3S_TOKEN}`, declared in
//!   `[[secrets]]`, and handed to the k3s installer over ssh's stdin: it never reaches the ssh
//!   command line, the plan, the checkpoint or the output (issue 11, "secrets in k3s_exec move
//!   to declared secret env vars").
//! - A node no longer on the pinned k3s version is installed again on `--resume` (issue 11,
//!   "k3s.install verify ignores the k3s version").

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
  "k3s --version")
    if [ -f "$FAKE_K3S_VERSION" ]; then echo "k3s version $(cat "$FAKE_K3S_VERSION") (fake)"; exit 0; fi
    echo "sh: 1: k3s: not found" >&2; exit 127 ;;
  "cat /etc/rancher/k3s/k3s.yaml")
    if [ -f "$FAKE_KUBECONFIG" ]; then cat "$FAKE_KUBECONFIG"; exit 0; fi
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

/// A temp dir with the fake `ssh`/`ssh-keygen` on PATH and a `k3s-ssh` playbook for `host`.
struct FakeHost {
    dir: tempfile::TempDir,
    path: String,
}

impl FakeHost {
    /// `cluster` replaces MINIMAL's `provider = "existing"` line; `extra` is appended.
    fn new(host: &str, cluster: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("ssh-log")).unwrap();
        executable(&bin.join("ssh"), FAKE_SSH);
        executable(&bin.join("ssh-keygen"), FAKE_KEYGEN);
        std::fs::write(
            dir.path().join("known_hosts"),
            format!("{host} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFake\n"),
        )
        .unwrap();
        let text = common::MINIMAL
            .replace(
                "provider = \"existing\"",
                &format!("provider = \"k3s-ssh\"\nkubeconfig = \"k3s.kubeconfig\"\n{cluster}"),
            )
            .replace(
                "[flux]",
                &format!("[cluster.ssh]\nhost = \"{host}\"\nuser = \"root\"\n\n[flux]"),
            )
            + extra;
        let _ = common::write_playbook(dir.path(), &text);
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Self { dir, path }
    }

    fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// The fake's environment plus `extra`.
    fn env<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), self.path.clone()),
            (
                "FAKE_SSH_LOG".into(),
                self.file("ssh-log").display().to_string(),
            ),
            (
                "FAKE_KNOWN_HOSTS".into(),
                self.file("known_hosts").display().to_string(),
            ),
            (
                "FAKE_K3S_VERSION".into(),
                self.file("k3s-version").display().to_string(),
            ),
            (
                "FAKE_KUBECONFIG".into(),
                self.file("host-kubeconfig").display().to_string(),
            ),
        ];
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        env
    }

    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> std::process::Output {
        let env = self.env(extra);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        common::run(&kubestrap_bin!(), args, self.dir.path(), &env)
    }

    /// What ssh saw: every command line, and every stdin an install read.
    fn seen(&self) -> (String, Vec<String>) {
        let mut argvs = String::new();
        let mut stdins = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(self.file("ssh-log"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            let body = std::fs::read_to_string(&path).unwrap();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("argv-")
            {
                argvs.push_str(&body);
                argvs.push_str("--\n");
            } else {
                stdins.push(body);
            }
        }
        (argvs, stdins)
    }
}

#[test]
fn a_join_token_in_k3s_exec_reaches_the_installer_only_through_stdin() {
    let host = FakeHost::new(
        "k3s.test",
        "k3s_version = \"v1.33.1+k3s1\"\nk3s_exec = \"server --token ${K3S_TOKEN}\"",
        "\n[[secrets]]\nenv = \"K3S_TOKEN\"\nvault_path = \"bootstrap/k3s\"\nvault_key = \"token\"\n",
    );
    let env = [("K3S_TOKEN", CANARY), ("KUBESTRAP_LOG", "debug")];

    for format in ["text", "json"] {
        let out = host.run(&["plan", "--output", format], &env);
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

    let out = host.run(
        &["apply", "--only", "k3s.install", "--output", "json"],
        &env,
    );
    let all = common::text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        !all.contains(CANARY),
        "the token reached the output:\n{all}"
    );
    let state = all_text(&host.file(".kubestrap"));
    assert!(state.contains("k3s.install"), "a checkpoint was written");
    assert!(
        !state.contains(CANARY),
        "the token reached the checkpoint:\n{state}"
    );

    // What ssh saw: the reference in its command line, the value only on the install's stdin.
    let (argvs, stdins) = host.seen();
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

/// The node was downgraded by hand after the bootstrap (its kubelet reports another version
/// than `[cluster] k3s_version`). The old verify asked only whether the API answered, so
/// `--resume` skipped k3s.install; now it installs the pinned version again.
#[test]
fn a_node_off_the_pinned_k3s_version_is_installed_again_on_resume() {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, Patch, PatchParams};
    use kubestrap_sandbox::SandboxConfig;

    const PIN: &str = "v1.33.1+k3s1";
    const OLD: &str = "v1.32.5+k3s1";
    let rt = common::serving_runtime();
    let tmp = tempfile::tempdir().unwrap();
    let (sandbox, client) = rt.block_on(common::start_sandbox(SandboxConfig::new(
        tmp.path().join("sb"),
    )));
    // The "host" is the sandbox: its kubeconfig names 127.0.0.1, which the fetch keeps.
    let host = FakeHost::new("127.0.0.1", &format!("k3s_version = \"{PIN}\""), "");
    std::fs::copy(sandbox.kubeconfig_path(), host.file("host-kubeconfig")).unwrap();
    std::fs::write(host.file("k3s-version"), PIN).unwrap();
    let out = host.run(&["apply", "--only", "k3s.install", "--output", "json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
    assert!(
        host.seen().1.is_empty(),
        "k3s {PIN} already ran: no install"
    );

    // Someone put another k3s on the node.
    std::fs::write(host.file("k3s-version"), OLD).unwrap();
    rt.block_on(async {
        Api::<Node>::all(client)
            .patch_status(
                "sandbox",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": {"nodeInfo": {"kubeletVersion": OLD}}})),
            )
            .await
            .unwrap();
    });

    // A whole resume: what the later steps need exists (they run after k3s.install, which is
    // all this test watches).
    std::fs::create_dir_all(host.file("terraform")).unwrap();
    std::fs::write(host.file("terraform/main.tf"), "").unwrap();
    let env = host.env(&[("KS_TEST_TOKEN", "unused")]);
    let mut child = std::process::Command::new(kubestrap_bin!())
        .args(["apply", "--resume", "--output", "json"])
        .current_dir(host.file(""))
        .env_remove("KUBECONFIG")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = common::Lines::follow(&mut child);
    let seen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lines.events_until(common::RUN_LIMIT, |e| {
            e["event"] == "step_finished" && e["step"] == "k3s.install"
        })
    }));
    let _ = child.kill();
    let _ = child.wait();
    let events = seen.unwrap_or_else(|p| std::panic::resume_unwind(p));
    let reason = events
        .iter()
        .find(|e| e["event"] == "step_verify_failed" && e["step"] == "k3s.install")
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    assert!(
        reason.contains(PIN) && reason.contains(&format!("runs {OLD}")),
        "the verify names both versions: {reason:?}\n{events:#?}"
    );
    let finished = events.last().unwrap();
    assert_eq!(finished["status"], "done", "{finished}");
    assert_eq!(finished["changed"], true, "{finished}");
    let (argvs, stdins) = host.seen();
    assert_eq!(stdins.len(), 1, "one install ran:\n{argvs}");
    assert!(
        argvs.contains("get.k3s.io") && argvs.contains(PIN),
        "the install pins {PIN}:\n{argvs}"
    );
    rt.block_on(async {
        let _ = sandbox.shutdown().await;
    });
}
