//! The real binary with synthetic steps: crash (SIGKILL) and resume, lock contention, unusable
//! checkpoints, missing secrets, secret hygiene, `--only`.

#![cfg(feature = "test-hooks")]

use kubestrap_test_support::{self as common, Lines, kubestrap_bin};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kubestrap::engine::{Checkpoint, RunLock, StepStatus};

const CHAIN: &str = r#"
[[step]]
id = "s1"
phase = "infrastructure"
sleep_ms = 20

[[step]]
id = "s2"
phase = "infrastructure"
depends_on = ["s1"]
sleep_ms = 20

[[step]]
id = "s3"
phase = "infrastructure"
depends_on = ["s2"]
sleep_ms = 3000

[[step]]
id = "s4"
phase = "infrastructure"
depends_on = ["s3"]
sleep_ms = 20

[[step]]
id = "s5"
phase = "secrets"
sleep_ms = 20
"#;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(steps: &str) -> Self {
        Self::with_playbook(steps, common::MINIMAL)
    }

    fn with_playbook(steps: &str, playbook: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kubestrap.toml"), playbook).unwrap();
        std::fs::write(dir.path().join("steps.toml"), steps).unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cluster_dir(&self) -> std::path::PathBuf {
        self.path().join(".kubestrap/test")
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint::load(&Checkpoint::path_in(&self.cluster_dir()))
            .unwrap()
            .unwrap()
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.cluster_dir().join("synthetic/log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `apply --output json` of the synthetic steps, running, its stdout piped.
    fn spawn_apply_json(&self) -> std::process::Child {
        Command::new(kubestrap_bin!())
            .args([
                "apply",
                "--synthetic-steps",
                "steps.toml",
                "--output",
                "json",
            ])
            .current_dir(self.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn apply(&self, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut args = vec!["apply", "--synthetic-steps", "steps.toml"];
        args.extend_from_slice(extra);
        common::run(&kubestrap_bin!(), &args, self.path(), env)
    }
}

/// The long step s3 reports progress: s1 and s2 are done.
fn s3_is_working(event: &serde_json::Value) -> bool {
    event["event"] == "step_progress" && event["step"] == "s3"
}

#[test]
fn crash_half_way_then_resume_verifies_done_steps_and_runs_the_rest() {
    let fx = Fixture::new(CHAIN);
    let mut child = fx.spawn_apply_json();
    // Kill while s3 (the long step) is working: s1 and s2 are done by then.
    let _ = Lines::follow(&mut child).events_until(Duration::from_secs(30), s3_is_working);
    child.kill().unwrap(); // SIGKILL: no cleanup, no final checkpoint write
    child.wait().unwrap();

    let cp = fx.checkpoint();
    assert_eq!(cp.steps["s1"].status, StepStatus::Done);
    assert_eq!(cp.steps["s2"].status, StepStatus::Done);
    assert_eq!(
        cp.steps["s3"].status,
        StepStatus::Running,
        "the killed step must show as running"
    );
    assert!(!cp.steps.contains_key("s4"));
    assert_eq!(fx.log(), vec!["apply s1", "apply s2", "apply s3"]);

    let out = fx.apply(&["--resume", "--output", "json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("reclaimed a stale lock left by pid"),
        "{stdout}"
    );
    for id in ["s1", "s2"] {
        assert!(
            stdout.contains(&format!(
                r#""event":"step_finished","step":"{id}","status":"skipped""#
            )),
            "{stdout}"
        );
    }
    for id in ["s3", "s4", "s5"] {
        assert!(
            stdout.contains(&format!(
                r#""event":"step_finished","step":"{id}","status":"done""#
            )),
            "{stdout}"
        );
    }
    let log = fx.log();
    assert_eq!(&log[3..5], &["verify s1", "verify s2"], "{log:?}");
    assert_eq!(
        log.iter().filter(|l| *l == "apply s1").count(),
        1,
        "s1 was re-applied: {log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| *l == "apply s2").count(),
        1,
        "s2 was re-applied: {log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| *l == "apply s3").count(),
        2,
        "s3 must run again: {log:?}"
    );
    let cp = fx.checkpoint();
    assert!(
        cp.steps.values().all(|r| r.status == StepStatus::Done),
        "{cp:#?}"
    );
}

#[test]
fn resume_reapplies_a_done_step_whose_postcondition_no_longer_holds() {
    let fx = Fixture::new(&CHAIN.replace("sleep_ms = 3000", "sleep_ms = 1"));
    assert_eq!(fx.apply(&[], &[]).status.code(), Some(0));
    std::fs::remove_file(fx.cluster_dir().join("synthetic/done-s2")).unwrap();
    let out = fx.apply(&["--resume"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("s2: no longer holds"),
        "{}",
        common::text(&out)
    );
    let log = fx.log();
    assert_eq!(
        log.iter().filter(|l| *l == "apply s2").count(),
        2,
        "{log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| *l == "apply s1").count(),
        1,
        "{log:?}"
    );
}

#[test]
fn a_second_run_is_refused_with_exit_3_while_the_lock_is_held() {
    let fx = Fixture::new(CHAIN);
    let held = RunLock::acquire(&fx.cluster_dir()).unwrap();
    let out = fx.apply(&[], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", common::text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("(pid {})", std::process::id())),
        "{stderr}"
    );
    assert!(fx.log().is_empty(), "nothing may run without the lock");
    drop(held);
}

#[test]
fn a_corrupt_checkpoint_exits_2_and_is_never_overwritten() {
    let fx = Fixture::new(CHAIN);
    std::fs::create_dir_all(fx.cluster_dir()).unwrap();
    let path = Checkpoint::path_in(&fx.cluster_dir());
    std::fs::write(&path, "{ this is not json").unwrap();
    for flags in [&["--resume"][..], &["--fresh"][..], &[][..]] {
        let out = fx.apply(flags, &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{flags:?}: {}",
            common::text(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("is corrupt"),
            "{}",
            common::text(&out)
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{ this is not json"
        );
    }
    let out = common::run(
        &kubestrap_bin!(),
        &["status", "--synthetic-steps", "steps.toml"],
        fx.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
    assert!(fx.log().is_empty());
}

#[test]
fn a_newer_checkpoint_exits_2_and_is_left_alone() {
    let fx = Fixture::new(CHAIN);
    std::fs::create_dir_all(fx.cluster_dir()).unwrap();
    let path = Checkpoint::path_in(&fx.cluster_dir());
    let newer = r#"{"version": 99, "cluster": "test", "future": true}"#;
    std::fs::write(&path, newer).unwrap();
    let out = fx.apply(&["--resume"], &[]);
    assert_refused(&out, "format version 99, newer");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), newer);
}

#[test]
fn an_existing_checkpoint_without_resume_or_fresh_exits_2() {
    let fx = Fixture::new(&CHAIN.replace("sleep_ms = 3000", "sleep_ms = 1"));
    assert_eq!(fx.apply(&[], &[]).status.code(), Some(0));
    let out = fx.apply(&[], &[]);
    assert_refused(&out, "pass --resume");
}

#[test]
fn checkpoint_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new(&CHAIN.replace("sleep_ms = 3000", "sleep_ms = 1"));
    assert_eq!(fx.apply(&[], &[]).status.code(), Some(0));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&fx.cluster_dir()), 0o700);
    assert_eq!(mode(&Checkpoint::path_in(&fx.cluster_dir())), 0o600);
    assert_eq!(fx.checkpoint().version, 1);
}

#[test]
fn missing_required_secrets_exit_2_before_anything_is_touched() {
    let steps = r#"
[[step]]
id = "uses-two"
phase = "infrastructure"
secrets = ["KS_TEST_TOKEN", "KS_OTHER"]
"#;
    let fx = Fixture::with_playbook(
        steps,
        &common::MINIMAL.replace("required = false", "required = true"),
    );
    let out = fx.apply(&[], &[("KS_TEST_TOKEN", "")]);
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 required secrets are not set"),
        "{stderr}"
    );
    assert!(stderr.contains("KS_OTHER (needed by uses-two)"), "{stderr}");
    assert!(
        stderr.contains("KS_TEST_TOKEN (needed by uses-two)"),
        "{stderr}"
    );
    assert!(
        !fx.cluster_dir().exists(),
        "nothing may be written before the secrets check"
    );
    // plan never needs secrets.
    let out = common::run(
        &kubestrap_bin!(),
        &["plan", "--synthetic-steps", "steps.toml"],
        fx.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
}

#[test]
fn secrets_leave_the_environment_and_never_reach_records_or_output() {
    let secret = "s3cr3t-value-for-redaction-test";
    let steps = r#"
[[step]]
id = "holds"
phase = "infrastructure"
sleep_ms = 1500
secrets = ["KS_TEST_TOKEN"]
output_secret = "KS_TEST_TOKEN"

[[step]]
id = "leaks"
phase = "secrets"
fail_with_secret = "KS_TEST_TOKEN"
"#;
    let fx = Fixture::new(steps);
    let child = Command::new(kubestrap_bin!())
        .args([
            "apply",
            "--synthetic-steps",
            "steps.toml",
            "--output",
            "json",
        ])
        .current_dir(fx.path())
        .env("KS_TEST_TOKEN", secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While the first step runs, the process environment no longer holds the secret.
    let environ_path = format!("/proc/{}/environ", child.id());
    let mut checked = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        if fx.log().iter().any(|l| l == "apply holds") {
            let environ = std::fs::read(&environ_path).unwrap();
            let environ = String::from_utf8_lossy(&environ);
            assert!(
                !environ.contains(secret),
                "secret still in /proc/<pid>/environ"
            );
            // /proc shows the kernel's copy of the initial environment block: the entry's
            // name stays, its value bytes were overwritten with zeros in place.
            assert!(
                environ.contains("KS_TEST_TOKEN=\0\0\0"),
                "value not wiped in place"
            );
            checked = true;
            break;
        }
    }
    assert!(checked, "the first step never started");
    let out = common::wait_with_timeout(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", common::text(&out));
    let all = common::text(&out);
    assert!(!all.contains(secret), "secret in output: {all}");
    assert!(
        all.contains("upstream rejected credential [redacted KS_TEST_TOKEN]"),
        "{all}"
    );
    let raw = std::fs::read_to_string(Checkpoint::path_in(&fx.cluster_dir())).unwrap();
    assert!(!raw.contains(secret), "secret in checkpoint");
    assert!(raw.contains("[redacted KS_TEST_TOKEN]"), "{raw}");
    let cp = fx.checkpoint();
    assert_eq!(
        cp.steps["holds"].outputs["leaked"],
        "[redacted KS_TEST_TOKEN]"
    );
    assert!(
        all.contains("step holds returned a secret value in its outputs"),
        "{all}"
    );
}

#[test]
fn only_runs_the_named_step_and_names_the_dependencies_it_assumes() {
    let fx = Fixture::new(&CHAIN.replace("sleep_ms = 3000", "sleep_ms = 1"));
    let out = fx.apply(&["--only", "s3"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "running only s3; assuming these dependencies are done: s1 (pending), s2 (pending)"
        ),
        "{stderr}"
    );
    assert_eq!(fx.log(), vec!["apply s3"]);
    let out = fx.apply(&["--only", "s33"], &[]);
    assert_refused(&out, "did you mean s3?");
}

#[test]
fn resume_explains_a_changed_playbook_and_reapplies_steps_whose_inputs_changed() {
    let fast = CHAIN.replace("sleep_ms = 3000", "sleep_ms = 1");
    let fx = Fixture::new(&fast);
    assert_eq!(fx.apply(&[], &[]).status.code(), Some(0));
    // Same steps, different playbook values: explained, nothing re-applied.
    let pb = common::MINIMAL.replace("clusters/test", "clusters/changed");
    std::fs::write(fx.path().join("kubestrap.toml"), pb).unwrap();
    let out = fx.apply(&["--resume"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the playbook changed since the checkpoint was written; no recorded step's inputs changed"),
        "{stderr}"
    );
    assert_eq!(
        fx.log().iter().filter(|l| l.starts_with("apply")).count(),
        5
    );
    // One step's inputs change: it alone is applied again.
    let changed = fast.replacen("sleep_ms = 20", "sleep_ms = 21", 2).replacen(
        "sleep_ms = 21",
        "sleep_ms = 20",
        1,
    );
    std::fs::write(fx.path().join("steps.toml"), changed).unwrap();
    let out = fx.apply(&["--resume"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("inputs changed and will be applied again: s2"),
        "{stderr}"
    );
    let applies: Vec<_> = fx
        .log()
        .into_iter()
        .filter(|l| l.starts_with("apply"))
        .skip(5)
        .collect();
    assert_eq!(applies, vec!["apply s2"]);
}

#[test]
fn sigterm_interrupts_the_run_and_resume_finishes_it() {
    let fx = Fixture::new(CHAIN);
    let mut child = fx.spawn_apply_json();
    let lines = Lines::follow(&mut child);
    let _ = lines.events_until(Duration::from_secs(30), s3_is_working);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest = lines.rest(Duration::from_secs(30));
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(1), "{rest:#?}");
    assert!(
        rest.iter()
            .any(|l| l.contains(r#""step":"s3","status":"interrupted""#)),
        "{rest:#?}"
    );
    assert!(
        rest.iter()
            .any(|l| l.contains(r#""event":"run_finished","status":"interrupted""#)),
        "{rest:#?}"
    );
    assert!(
        !rest.iter().any(|l| l.contains(r#""step":"s4""#)),
        "s4 must not start: {rest:#?}"
    );
    assert_eq!(fx.checkpoint().steps["s3"].status, StepStatus::Interrupted);
    let out = fx.apply(&["--resume"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
}

#[test]
fn status_reports_a_step_of_a_dead_run_as_interrupted_not_running() {
    let fx = Fixture::new(CHAIN);
    std::fs::create_dir_all(fx.cluster_dir()).unwrap();
    // A checkpoint as a SIGKILLed run leaves it: s1 done, s2 running, nobody holding the lock.
    let mut cp = Checkpoint::new("test", "sha256:x");
    for (id, status) in [("s1", StepStatus::Done), ("s2", StepStatus::Running)] {
        cp.steps.insert(
            id.into(),
            kubestrap::engine::StepRecord {
                attempts: 1,
                ..kubestrap::engine::StepRecord::new(
                    status,
                    kubestrap::engine::Phase::Infrastructure,
                    String::new(),
                )
            },
        );
    }
    cp.save(&Checkpoint::path_in(&fx.cluster_dir())).unwrap();
    let status = |fx: &Fixture| {
        let out = common::run(
            &kubestrap_bin!(),
            &["status", "--synthetic-steps", "steps.toml", "-o", "json"],
            fx.path(),
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["status"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        status(&fx),
        ["done", "interrupted", "pending", "pending", "pending"]
    );
    let held = RunLock::acquire(&fx.cluster_dir()).unwrap();
    assert_eq!(
        status(&fx),
        ["done", "running", "pending", "pending", "pending"]
    );
    drop(held);
}

#[test]
fn a_secret_that_is_not_utf8_exits_2() {
    use std::os::unix::ffi::OsStrExt;
    let fx = Fixture::new(&CHAIN.replace("sleep_ms = 3000", "sleep_ms = 1"));
    let out = Command::new(kubestrap_bin!())
        .args(["apply", "--synthetic-steps", "steps.toml"])
        .current_dir(fx.path())
        .env(
            "KS_TEST_TOKEN",
            std::ffi::OsStr::from_bytes(b"\xff\xfe-not-utf8"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::wait_with_timeout(out, Duration::from_secs(60));
    assert_refused(&out, "KS_TEST_TOKEN is not valid UTF-8");
    assert!(fx.log().is_empty());
}

/// The run was refused as bad input (exit 2) with `needle` in its message.
#[track_caller]
fn assert_refused(out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(2), "{}", common::text(out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(needle),
        "{}",
        common::text(out)
    );
}
