//! `kubestrap sandbox down -p PLAYBOOK` (issue 11): stops the playbook's sandbox and returns
//! only once its process is gone; bad `sandbox` input exits 2 and creates nothing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubestrap_test_support::{self as common, kubestrap_bin, sandbox_playbook_copy};

#[test]
fn sandbox_down_by_playbook_returns_only_once_the_sandbox_process_is_gone() {
    let copy = sandbox_playbook_copy();
    let root = copy.path();
    // Where `apply` keeps the sandbox of playbooks/sandbox.toml: <state_dir>/<cluster>/sandbox.
    let dir = root.join("playbooks/.kubestrap/sandbox/sandbox");
    let mut up = Command::new(kubestrap_bin!())
        .args(["sandbox", "up", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sandbox up starts");
    let pid_file = dir.join("sandbox.pid");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pid_file.exists() {
        if let Some(status) = up.try_wait().unwrap() {
            panic!("sandbox up exited early: {status}");
        }
        assert!(Instant::now() < deadline, "no pid file within 60s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let down = common::run(
        &kubestrap_bin!(),
        &["sandbox", "down", "-p", "playbooks/sandbox.toml"],
        root,
        &[],
    );
    assert_eq!(down.status.code(), Some(0), "{}", common::text(&down));
    // Not waited for here: it must already have exited when `down` returned.
    let status = up.try_wait().unwrap();
    if status.is_none() {
        let _ = up.kill();
        let _ = up.wait();
        panic!("sandbox down returned while the sandbox process was still running");
    }
    assert!(status.unwrap().success(), "a graceful stop exits 0");
    assert!(!pid_file.exists(), "the pid file is removed");
}

#[test]
fn sandbox_down_by_a_playbook_without_a_sandbox_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let _ = common::write_playbook(dir.path(), common::MINIMAL);
    let out = common::run(
        &kubestrap_bin!(),
        &["sandbox", "down", "-p", "kubestrap.toml"],
        dir.path(),
        &[],
    );
    let all = common::text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("uses provider \"existing\", which has no sandbox to stop"),
        "{all}"
    );
    let out = common::run(
        &kubestrap_bin!(),
        &["sandbox", "down", "-p", "nope.toml"],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
}

#[test]
fn sandbox_up_with_a_bad_git_repo_exits_2_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("sb");
    let sdir_arg = sdir.display().to_string();
    for (repo, wanted) in [
        ("nonsense", "expected URL=DIR"),
        (
            "https://git.sandbox.local/org/fleet=no-such-checkout",
            "no-such-checkout is not a directory",
        ),
    ] {
        let out = common::run(
            &kubestrap_bin!(),
            &["sandbox", "up", "--dir", &sdir_arg, "--git-repo", repo],
            dir.path(),
            &[],
        );
        let all = common::text(&out);
        assert_eq!(out.status.code(), Some(2), "{all}");
        assert!(all.contains(wanted), "{all}");
        assert!(!sdir.exists(), "nothing created: {all}");
    }
}
