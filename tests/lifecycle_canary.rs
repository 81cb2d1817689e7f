//! The secret-lifecycle proof (issue 5): run kubestrap with canary values for the bootstrap
//! secrets, `RUST_LOG=trace`, paused at the end (`KUBESTRAP_AUDIT_PAUSE=1`), and look for the
//! canaries everywhere kubestrap could have left them:
//!
//! - every readable mapping of the paused process (`/proc/PID/maps` + `/proc/PID/mem`), raw,
//!   hex, UTF-16LE and base64 at all three alignments;
//! - `/proc/PID/environ` (the original values must be overwritten in place);
//! - the state directory, stdout, stderr and the plan output;
//! - argv and environ of every child process (a `terraform` wrapper first on PATH, the
//!   sandbox's own `/proc` records, a watcher for any other direct child).
//!
//! Every check expects 0 copies. Positive controls (a non-secret marker that must be found
//! in memory, the redaction labels that prove the secrets were really used) keep the scans
//! from passing by looking nowhere.
#![cfg(target_os = "linux")]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kubestrap_test_support::scan::audit::{Finished, PausedRun, run_until_pause};
use kubestrap_test_support::scan::{Form, assert_no_hits, forms_of, scan_bytes, scan_tree};

/// Canary values: long, unmistakable, different from each other in every form.
const GITHUB_CANARY: &str = "ghp_CANARYgh7Qx2Lm9Vw4Tz8Kp3Rs6Yb1Nd5Jf0";
const CLOUDFLARE_CANARY: &str = "CANARYcf0Jh7Uq2Wx9Ev4Mk8Pz3Tc6Ga1Lr5Ns";

/// A non-secret value passed the same way, which must still be found in memory: proof that
/// the memory scan reads the process at all (it lives in the environment block on the stack).
const CONTROL_MARKER: &str = "KSCONTROLmarker9f3b7e21c4a8d6";

const PAUSE_LIMIT: Duration = Duration::from_secs(300);
const EXIT_LIMIT: Duration = Duration::from_secs(30);

fn canary_forms() -> Vec<Form> {
    let mut forms = forms_of("GITHUB_TOKEN", GITHUB_CANARY);
    forms.extend(forms_of("CLOUDFLARE_API_TOKEN", CLOUDFLARE_CANARY));
    forms
}

fn kubestrap(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubestrap"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("KUBECONFIG")
        .env_remove("KUBESTRAP_LOG")
        .env("RUST_LOG", "trace")
        .env("GITHUB_TOKEN", GITHUB_CANARY)
        .env("CLOUDFLARE_API_TOKEN", CLOUDFLARE_CANARY)
        .env("KS_AUDIT_CONTROL", CONTROL_MARKER);
    cmd
}

/// The checks made on every paused run: memory (with its positive control) and environ.
fn audit_paused(run: &PausedRun, forms: &[Form]) {
    let scan = run.scan_memory(forms);
    eprintln!(
        "memory: {} regions, {} MiB scanned, {} unreadable ({:?}), {} canary copies",
        scan.regions,
        scan.bytes >> 20,
        scan.unreadable.len(),
        scan.unreadable,
        scan.hits.len()
    );
    assert_no_hits("the paused kubestrap's memory", &scan.hits);
    let control = forms_of("control", CONTROL_MARKER)[..1].to_vec();
    let found = run.scan_memory(&control);
    assert!(
        !found.hits.is_empty(),
        "the memory scan did not even find the non-secret control marker: it scans nothing"
    );

    let (environ, hits) = run.scan_environ(forms);
    assert_no_hits("/proc/PID/environ", &hits);
    for (name, value) in [
        ("GITHUB_TOKEN", GITHUB_CANARY),
        ("CLOUDFLARE_API_TOKEN", CLOUDFLARE_CANARY),
    ] {
        // The original block keeps `NAME=` followed by zeros where the value was.
        let mut wiped = format!("{name}=").into_bytes();
        wiped.extend(std::iter::repeat_n(0u8, value.len()));
        assert!(
            memchr::memmem::find(&environ, &wiped).is_some(),
            "{name}'s original bytes in the environment block were not overwritten in place"
        );
    }
}

/// stdout and stderr of a finished run.
fn audit_output(done: &Finished, what: &str, forms: &[Form]) {
    assert_no_hits(
        &format!("{what} stdout"),
        &scan_bytes(&done.stdout, forms, "stdout", 0),
    );
    assert_no_hits(
        &format!("{what} stderr"),
        &scan_bytes(&done.stderr, forms, "stderr", 0),
    );
}

/// Every file under the state directory except `exclude` (the sandbox's own storage).
fn audit_state_dir(state: &Path, exclude: &[PathBuf], forms: &[Form]) -> usize {
    let (hits, files) = scan_tree(state, exclude, forms);
    assert_no_hits(&format!("the state dir {}", state.display()), &hits);
    files
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The state dir and every directory kubestrap made in it are 0700, the checkpoint 0600.
fn audit_modes(state: &Path, cluster_dir: &Path) {
    assert_eq!(mode(state), 0o700, "state dir {}", state.display());
    assert_eq!(
        mode(cluster_dir),
        0o700,
        "cluster dir {}",
        cluster_dir.display()
    );
    let checkpoint = kubestrap::engine::Checkpoint::path_in(cluster_dir);
    assert_eq!(
        mode(&checkpoint),
        0o600,
        "checkpoint {}",
        checkpoint.display()
    );
    let lock = cluster_dir.join("lock");
    assert_eq!(mode(&lock), 0o600, "lock {}", lock.display());
    // Written only when the keys Secret cannot be; private whenever it exists.
    let emergency = cluster_dir.join("vault-init-keys.emergency.json");
    if emergency.exists() {
        assert_eq!(mode(&emergency), 0o600, "{}", emergency.display());
    }
}

/// `kubestrap plan` with the canaries in its environment: nothing of them in its output.
fn audit_plan(dir: &Path, args: &[&str], forms: &[Form]) {
    let mut cmd = kubestrap(dir, args);
    let out_dir = tempfile::tempdir().unwrap();
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(out_dir.path().join("out")).unwrap())
        .stderr(std::fs::File::create(out_dir.path().join("err")).unwrap())
        .spawn()
        .unwrap();
    let status = wait(child, PAUSE_LIMIT);
    let stdout = std::fs::read(out_dir.path().join("out")).unwrap();
    let stderr = std::fs::read(out_dir.path().join("err")).unwrap();
    assert!(
        !stdout.is_empty(),
        "plan printed nothing ({status}): {}",
        String::from_utf8_lossy(&stderr)
    );
    assert_no_hits("plan stdout", &scan_bytes(&stdout, forms, "plan stdout", 0));
    assert_no_hits("plan stderr", &scan_bytes(&stderr, forms, "plan stderr", 0));
}

fn wait(mut child: std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("kubestrap did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A playbook declaring both secrets, for the synthetic run.
#[cfg(feature = "test-hooks")]
const SYNTHETIC_PLAYBOOK: &str = include_str!("fixtures/playbooks/canary-synthetic.toml");

/// Steps that handle the secrets the way leaks happen: read them, put one in the outputs
/// (redacted before recording) and fail with the other quoted in the error (redacted before
/// printing and recording), with retries so errors are formatted several times.
#[cfg(feature = "test-hooks")]
const SYNTHETIC_STEPS: &str = r#"
[[step]]
id = "uses-both"
phase = "infrastructure"
secrets = ["GITHUB_TOKEN", "CLOUDFLARE_API_TOKEN"]
output_secret = "GITHUB_TOKEN"
sleep_ms = 20

[[step]]
id = "echoes-credential"
phase = "secrets"
depends_on = ["uses-both"]
secrets = ["CLOUDFLARE_API_TOKEN"]
fail_with_secret = "CLOUDFLARE_API_TOKEN"
max_attempts = 2
"#;

/// The engine's own secret paths (capture, redaction of outputs, errors and logs, checkpoint,
/// release at the end) through the real binary, with synthetic steps instead of a cluster.
#[test]
#[cfg(feature = "test-hooks")]
fn synthetic_run_leaves_no_canary_anywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("kubestrap.toml"), SYNTHETIC_PLAYBOOK).unwrap();
    std::fs::write(dir.join("steps.toml"), SYNTHETIC_STEPS).unwrap();
    let args = ["apply", "--synthetic-steps", "steps.toml"];

    let forms = canary_forms();
    let run = run_until_pause(kubestrap(dir, &args), dir, PAUSE_LIMIT);
    audit_paused(&run, &forms);
    let done = run.release(EXIT_LIMIT);
    assert_eq!(done.status.code(), Some(1), "{}", done.text());
    audit_output(&done, "apply", &forms);

    // The secrets were really used and caught: the failure quotes one, redacted.
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(
        stderr.contains("upstream rejected credential [redacted CLOUDFLARE_API_TOKEN]"),
        "{}",
        done.text()
    );
    let state = dir.join(".kubestrap");
    let cluster_dir = state.join("canary");
    let checkpoint =
        std::fs::read_to_string(kubestrap::engine::Checkpoint::path_in(&cluster_dir)).unwrap();
    assert!(
        checkpoint.contains("[redacted GITHUB_TOKEN]"),
        "the output secret was not recorded (redacted): {checkpoint}"
    );
    assert!(audit_state_dir(&state, &[], &forms) >= 1);
    audit_modes(&state, &cluster_dir);
    for child in &done.children {
        let hits = scan_bytes(&child.argv.concat(), &forms, &child.origin, 0);
        assert_no_hits("a child's argv", &hits);
    }

    audit_plan(dir, &["plan", "--synthetic-steps", "steps.toml"], &forms);
    eprintln!(
        "canary audit (synthetic run): 0 copies of {} forms in memory, /proc/PID/environ, \
         stdout, stderr, the state dir and the plan output",
        forms.len()
    );
}

/// Variables a Terraform child may receive (README "Secrets"): the runner's own, the step's
/// `VAULT_ADDR`/`VAULT_TOKEN` and Terraform's `TF_*` settings. Nothing else of kubestrap's
/// environment is inherited.
fn documented_terraform_variable(name: &str) -> bool {
    matches!(
        name,
        "PATH" | "HOME" | "VAULT_ADDR" | "VAULT_TOKEN" | "CHECKPOINT_DISABLE"
    ) || name.starts_with("TF_")
}

/// Copy `from` into `to` recursively.
/// Stops the background sandbox a test's apply started, even when the test fails.
struct SandboxGuard {
    dir: PathBuf,
}

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        if self.dir.join("sandbox.pid").exists() {
            let child = Command::new(env!("CARGO_BIN_EXE_kubestrap"))
                .args(["sandbox", "down", "--dir"])
                .arg(&self.dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            if let Ok(child) = child {
                let _ = wait(child, Duration::from_secs(30));
            }
        }
    }
}

/// Every form of Vault's unseal keys and root token, read from the keys Secret
/// (`vault/vault-init-keys`, design §5) through the sandbox's kubeconfig. A hex unseal key
/// also counts in its base64 form (`keys_base64` of `sys/init`).
fn vault_secret_forms(kubeconfig: &Path) -> Vec<Form> {
    use base64::Engine as _;
    use k8s_openapi::api::core::v1::Secret;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let secret = rt.block_on(async {
        let client = tokio::time::timeout(
            Duration::from_secs(30),
            kubestrap::kube::connect(Some(kubeconfig), None),
        )
        .await
        .expect("connect to the sandbox in time")
        .expect("connect to the sandbox");
        let api: kube::Api<Secret> = kube::Api::namespaced(client, "vault");
        tokio::time::timeout(Duration::from_secs(30), api.get("vault-init-keys"))
            .await
            .expect("read the keys Secret in time")
            .expect("read the keys Secret")
    });
    let mut forms = Vec::new();
    for (key, value) in secret.data.unwrap_or_default() {
        let text = String::from_utf8(value.0).expect("keys are text");
        let label = format!("vault {key}");
        forms.extend(forms_of(&label, &text));
        if let Ok(bytes) = hex::decode(&text) {
            forms.push(Form {
                label: format!("{label} base64 of its bytes"),
                bytes: base64::engine::general_purpose::STANDARD
                    .encode(bytes)
                    .into_bytes(),
            });
        }
    }
    assert!(
        forms.len() > 10,
        "the keys Secret holds unseal keys and the root token"
    );
    forms
}

/// The real thing: the whole five-phase bootstrap of a sandbox cluster (the sandbox runs as
/// its own process and is left out of the scans: its storage holds the secrets by design).
#[test]
fn full_sandbox_apply_leaves_no_canary_anywhere() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let Some(real_terraform) = kubestrap::terraform::find_on_path("terraform", &path) else {
        assert!(
            std::env::var("KUBESTRAP_REQUIRE_TERRAFORM").as_deref() != Ok("1"),
            "terraform not found on PATH but KUBESTRAP_REQUIRE_TERRAFORM=1"
        );
        eprintln!("SKIP: terraform not found");
        return;
    };
    // The repository's sandbox playbook, laid out in a private temp dir.
    let tmp = kubestrap_test_support::sandbox_playbook_copy();
    let root = tmp.path();
    let state = root.join("playbooks/.kubestrap");
    let cluster_dir = state.join("sandbox");
    let sandbox_dir = cluster_dir.join("sandbox");
    let _sandbox = SandboxGuard {
        dir: sandbox_dir.clone(),
    };

    // `terraform` first on PATH records how kubestrap starts it.
    let children_log = root.join("children");
    kubestrap_test_support::scan::children::install_wrapper(
        &root.join("bin"),
        "terraform",
        &real_terraform,
        &children_log,
    );
    let mut wrapped_path = std::ffi::OsString::from(root.join("bin"));
    wrapped_path.push(":");
    wrapped_path.push(&path);

    let mut cmd = kubestrap(root, &["apply", "-p", "playbooks/sandbox.toml"]);
    cmd.env("PATH", &wrapped_path);
    let run = run_until_pause(cmd, root, PAUSE_LIMIT);
    // Besides the canaries, the secrets kubestrap itself creates: Vault's unseal keys and
    // root token (read back from the keys Secret while the sandbox still runs).
    let vault_forms = vault_secret_forms(&sandbox_dir.join("kubeconfig"));
    let mut forms = canary_forms();
    forms.extend(vault_forms.iter().cloned());
    audit_paused(&run, &forms);
    let sandbox = std::fs::read_to_string(sandbox_dir.join("sandbox.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .and_then(|pid| kubestrap_test_support::scan::children::read_pid(pid, "sandbox"));
    let done = run.release(EXIT_LIMIT);
    assert_eq!(done.status.code(), Some(0), "{}", done.text());
    audit_output(&done, "apply", &forms);

    let files = audit_state_dir(&state, std::slice::from_ref(&sandbox_dir), &forms);
    assert!(
        files >= 2,
        "the state dir holds the checkpoint and the lock"
    );
    audit_modes(&state, &cluster_dir);

    // Children: Terraform exactly as started, the sandbox, anything else the watcher saw.
    // (Terraform is given the Vault token on purpose, so only the canaries are looked for.)
    let canaries = canary_forms();
    let terraform = kubestrap_test_support::scan::children::wrapper_records(&children_log);
    assert!(
        terraform.len() >= 2,
        "terraform init and apply were recorded: {terraform:?}"
    );
    let mut saw_token = false;
    for child in &terraform {
        let names = child.env_names();
        let extra: Vec<&String> = names
            .iter()
            .filter(|n| !documented_terraform_variable(n))
            .collect();
        assert!(
            extra.is_empty(),
            "{} got undocumented variables {extra:?}",
            child.origin
        );
        saw_token |= names.iter().any(|n| n == "VAULT_TOKEN");
        if child.argv.iter().any(|a| a.as_slice() == b"apply") {
            assert!(
                child
                    .argv
                    .iter()
                    .any(|a| a.starts_with(b"-var-file=/dev/fd/")),
                "terraform apply reads its variables from a pipe: {}",
                child.command_line()
            );
        }
    }
    assert!(saw_token, "no terraform run received VAULT_TOKEN");
    let sandbox = sandbox.expect("the sandbox was running during the pause");
    assert!(
        sandbox.argv.iter().any(|a| a.as_slice() == b"sandbox"),
        "{}",
        sandbox.command_line()
    );
    let all = terraform
        .iter()
        .chain(std::iter::once(&sandbox))
        .chain(&done.children);
    for child in all {
        eprintln!(
            "child {}: {} | env {:?}",
            child.origin,
            child.command_line(),
            child.env_names()
        );
        assert_no_hits(
            &format!("argv of {}", child.origin),
            &scan_bytes(&child.argv.concat(), &canaries, &child.command_line(), 0),
        );
        assert_no_hits(
            &format!("environ of {}", child.origin),
            &scan_bytes(&child.environ.join(&0u8), &canaries, &child.origin, 0),
        );
        let names = child.env_names();
        for secret in ["GITHUB_TOKEN", "CLOUDFLARE_API_TOKEN"] {
            assert!(
                !names.iter().any(|n| n == secret),
                "{} inherited {secret}",
                child.origin
            );
        }
    }

    audit_plan(root, &["plan", "-p", "playbooks/sandbox.toml"], &forms);
    eprintln!(
        "canary audit (full sandbox apply): 0 copies of {} forms in memory, /proc/PID/environ, \
         stdout, stderr, {files} state files and the plan output; 0 in argv/environ of {} \
         child records",
        forms.len(),
        terraform.len() + 1 + done.children.len()
    );
}
