//! The first ten minutes of a new user (issue 14): `kubestrap init` writes a playbook that
//! `plan` and `apply` take as written, `apply` ends with the result block (plain, terminal and
//! JSON), `init` never overwrites, a `TODO` stops `plan` with a clear message, and completion
//! scripts generate for every shell.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kubestrap_test_support::{events, kubestrap_bin, run, text, wait_with_timeout};

/// Stops the sandbox an applied starter playbook left running, whatever the test's outcome.
struct SandboxGuard {
    bin: PathBuf,
    dir: PathBuf,
}

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        let _ = Command::new(&self.bin)
            .args(["sandbox", "down", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// How long one apply of the starter playbook may take.
const APPLY_LIMIT: Duration = Duration::from_secs(300);

fn apply(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    let child = Command::new(bin)
        .arg("apply")
        .args(args)
        .current_dir(dir)
        .env_remove("KUBECONFIG")
        .env("GITHUB_TOKEN", "first-run-token")
        .env("CLOUDFLARE_API_TOKEN", "first-run-cf")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_timeout(child, APPLY_LIMIT)
}

/// The result block's `key: value` lines, as a user would read them.
fn block_value<'a>(stdout: &'a str, key: &str) -> Option<&'a str> {
    stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(key))
        .map(str::trim)
}

/// The sandbox starter as written, planned and applied: the apply ends (stdout) with the
/// result block in plain mode and on a terminal, and `--output json` ends with the `result`
/// event carrying the same values.
#[test]
fn init_sandbox_plans_and_applies_unedited_and_apply_ends_with_the_result_block() {
    let bin = kubestrap_bin!();
    let dir = tempfile::tempdir().unwrap();
    let out = run(&bin, &["init", "--provider", "sandbox"], dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.path().join("kubestrap.toml").is_file());
    let _guard = SandboxGuard {
        bin: bin.clone(),
        dir: dir.path().join(".kubestrap/sandbox/sandbox"),
    };

    let plan = run(&bin, &["plan"], dir.path(), &[]);
    assert!(plan.status.success(), "{}", text(&plan));

    // Plain mode (stderr is a pipe): progress on stderr, summary and block on stdout.
    let first = apply(&bin, dir.path(), &[]);
    assert!(first.status.success(), "{}", text(&first));
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains("Cluster sandbox is ready (provider sandbox)."),
        "{stdout}"
    );
    let kubeconfig = block_value(&stdout, "kubeconfig:").expect("kubeconfig line");
    assert!(
        dir.path().join(kubeconfig).is_file(),
        "{kubeconfig}: {stdout}"
    );
    assert_eq!(
        block_value(&stdout, "keys:"),
        Some("Secret vault/vault-init-keys (unseal keys, root token)")
    );
    let exported = block_value(&stdout, "export KUBECONFIG=").expect("export line");
    assert!(
        Path::new(exported).is_absolute() && Path::new(exported).is_file(),
        "{exported}"
    );
    let report = block_value(&stdout, "report:").expect("report line");
    assert!(dir.path().join(report).is_file(), "{report}");
    assert_eq!(
        block_value(&stdout, "VAULT_ADDR:"),
        Some("http://127.0.0.1:8200 (with the port-forward below)")
    );
    assert!(
        stdout
            .lines()
            .any(|l| l == "  kubectl -n vault port-forward svc/vault 8200:8200"),
        "{stdout}"
    );
    let stop = block_value(&stdout, "Stop:").expect("stop line");
    let sandbox_dir = stop
        .strip_prefix("kubestrap sandbox down --dir ")
        .expect("stop command");
    assert!(
        dir.path().join(sandbox_dir).join("kubeconfig").is_file(),
        "{stop}"
    );
    assert_eq!(
        stdout.lines().last(),
        Some("Resume:  kubestrap apply -p kubestrap.toml --resume"),
        "{stdout}"
    );
    assert!(stdout.contains(" ready, 0 failed"), "{stdout}");
    // The old ending (cleanup's progress lines) is gone from stderr.
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(!stderr.contains("cleanup: look:"), "{stderr}");
    assert!(stderr.contains("k3s.ready: ready ("), "{stderr}");

    // JSON: the last line is the result event with the same values.
    let json = apply(&bin, dir.path(), &["--fresh", "--output", "json"]);
    assert!(json.status.success(), "{}", text(&json));
    let last: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&json.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["event"], "result", "{last}");
    assert_eq!(last["status"], "succeeded");
    assert_eq!(last["kubeconfig"], kubeconfig);
    assert_eq!(last["report"], report);
    assert_eq!(last["keys_secret"], "vault/vault-init-keys");
    assert_eq!(last["vault"]["address"], "http://vault.vault.svc:8200");
    assert_eq!(last["vault"]["vault_addr"], "http://127.0.0.1:8200");
    assert_eq!(last["stop"], stop);
    let finished = events(&json, "step_finished");
    let ready: Vec<&str> = finished
        .iter()
        .filter(|e| e["outcome"] == "ready")
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    for step in ["k3s.ready", "vault.ready", "eso.ready", "secrets.verify"] {
        assert!(ready.contains(&step), "{step} not ready: {ready:?}");
    }
    assert!(finished.iter().all(|e| e["waited_ms"].is_u64()));
    // The bug this guards: flux.ready and eso.ready wait for several objects side by side, and
    // each wait's time was added up (flux.ready reported 88 ms waited in 17 ms).
    for e in &finished {
        assert!(
            e["waited_ms"].as_u64() <= e["duration_ms"].as_u64(),
            "waited longer than it took: {e}"
        );
    }

    // A terminal (`script` gives the run a pty): the live lines are drawn on it, and the
    // screen still ends with the block.
    let script = Command::new("script")
        .args([
            "-qec",
            &format!("{} apply --fresh", bin.display()),
            "/dev/null",
        ])
        .current_dir(dir.path())
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(child) = script else {
        eprintln!("SKIP: no `script` (util-linux) to give apply a terminal");
        return;
    };
    let tty = wait_with_timeout(child, APPLY_LIMIT);
    assert!(tty.status.success(), "{}", text(&tty));
    let screen = String::from_utf8_lossy(&tty.stdout);
    assert!(
        screen.contains("\x1b[32m✓\x1b[0m"),
        "not TTY mode: {screen}"
    );
    assert!(
        screen.contains("Cluster sandbox is ready (provider sandbox)."),
        "{screen}"
    );
    assert!(
        screen
            .trim_end()
            .ends_with("Resume:  kubestrap apply -p kubestrap.toml --resume"),
        "{screen}"
    );
}

/// `init` refuses when any file it would write exists, and writes nothing then (not even the
/// files that do not exist yet); `--force` overwrites.
#[test]
fn init_refuses_to_overwrite_without_force() {
    let bin = kubestrap_bin!();
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("kubestrap.toml");
    std::fs::write(&playbook, "# mine\n").unwrap();
    let out = run(&bin, &["init", "--provider", "sandbox"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kubestrap.toml already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&playbook).unwrap(), "# mine\n");
    assert!(
        !dir.path().join("sandbox").exists(),
        "wrote the fleet anyway"
    );
    assert!(
        !dir.path().join("terraform").exists(),
        "wrote terraform anyway"
    );

    let forced = run(
        &bin,
        &["init", "--provider", "sandbox", "--force"],
        dir.path(),
        &[],
    );
    assert!(forced.status.success(), "{}", text(&forced));
    assert!(
        std::fs::read_to_string(&playbook)
            .unwrap()
            .contains("provider = \"sandbox\"")
    );
}

/// A starter with values left as `TODO` is rejected by `plan` (exit 2), each TODO named with
/// file:line:col and its key; once the values are given as flags, `plan` accepts the file.
#[test]
fn plan_rejects_init_todos_with_their_place_and_key() {
    let bin = kubestrap_bin!();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &bin,
        &["init", "--provider", "k3s-ssh", "-p", "ssh.toml"],
        dir.path(),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let told = String::from_utf8_lossy(&out.stdout);
    assert!(
        told.contains("set these values in ssh.toml first"),
        "{told}"
    );

    let plan = run(&bin, &["plan", "-p", "ssh.toml"], dir.path(), &[]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    let err = String::from_utf8_lossy(&plan.stderr);
    assert!(err.contains("has 2 problems"), "{err}");
    let text_pb = std::fs::read_to_string(dir.path().join("ssh.toml")).unwrap();
    for key in ["cluster.ssh.host", "flux.git_url"] {
        let leaf = key.rsplit('.').next().unwrap();
        let line = text_pb
            .lines()
            .position(|l| l.starts_with(&format!("{leaf} = \"TODO:")))
            .unwrap()
            + 1;
        assert!(
            err.contains(&format!(
                "ssh.toml:{line}:{}: `{key}`: still the placeholder `kubestrap init` wrote: set it to",
                leaf.len() + 4
            )),
            "{key} at line {line}: {err}"
        );
    }

    // With the values given as flags, every provider's starter passes `plan` as written (no
    // cluster to ask: the kubeconfig points nowhere, so plan describes what it would create).
    let git = ["--git-url", "https://github.com/example-org/fleet"];
    for (file, extra) in [
        ("local.toml", vec!["--provider", "k3s-local"]),
        (
            "remote.toml",
            vec!["--provider", "k3s-ssh", "--ssh-host", "node1.example.org"],
        ),
        (
            "existing.toml",
            vec!["--provider", "existing", "--context", "nowhere"],
        ),
    ] {
        let mut args = vec!["init", "-p", file];
        args.extend(extra);
        args.extend(git);
        let filled = run(&bin, &args, dir.path(), &[]);
        assert!(filled.status.success(), "{file}: {}", text(&filled));
        let check = Command::new(&bin)
            .args(["plan", "-p", file])
            .current_dir(dir.path())
            .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
            .output()
            .unwrap();
        assert!(check.status.success(), "{file}: {}", text(&check));
    }
}

/// `kubestrap completions SHELL` prints a script for every supported shell, naming the
/// subcommands; bash's is checked by bash itself.
#[test]
fn completions_generate_for_each_shell() {
    let bin = kubestrap_bin!();
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = run(&bin, &["completions", shell], dir.path(), &[]);
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        for sub in ["apply", "plan", "status", "init", "completions"] {
            assert!(script.contains(sub), "{shell} script lacks {sub}");
        }
        if shell == "bash" {
            let path = dir.path().join("kubestrap.bash");
            std::fs::write(&path, script.as_bytes()).unwrap();
            let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
            assert!(syntax.status.success(), "{}", text(&syntax));
        }
    }
    let bad = run(&bin, &["completions", "tcsh"], dir.path(), &[]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
}

/// Every subcommand's `--help` ends with three examples.
#[test]
fn every_subcommand_help_has_examples() {
    let bin = kubestrap_bin!();
    let dir = tempfile::tempdir().unwrap();
    for sub in [
        "plan",
        "apply",
        "status",
        "init",
        "completions",
        "sandbox",
        "unseal",
    ] {
        let out = run(&bin, &[sub, "--help"], dir.path(), &[]);
        assert!(out.status.success(), "{sub}: {}", text(&out));
        let help = String::from_utf8_lossy(&out.stdout);
        let examples = help.split("Examples:").nth(1).unwrap_or_default();
        let commands = examples
            .lines()
            .filter(|l| l.trim_start().starts_with("kubestrap ") || l.contains(" kubestrap "))
            .count();
        assert!(
            commands >= 3,
            "{sub} --help has {commands} examples: {help}"
        );
    }
}

/// Issue 14: without a playbook, the first command said "file not found"; now it says how to
/// get one (and still exits 2, touching nothing).
#[test]
fn a_missing_playbook_points_at_init() {
    let bin = kubestrap_bin!();
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["plan", "apply", "status"] {
        let out = run(&bin, &[cmd], dir.path(), &[]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no playbook at kubestrap.toml: write a commented starter with `kubestrap init --provider sandbox`"),
            "{cmd}: {err}"
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
