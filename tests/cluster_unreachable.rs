//! A cluster that does not answer (issue 11): the message names the server URL, the context and
//! the kubeconfig, and the cause once; library log lines stay off unless KUBESTRAP_LOG asks;
//! `plan` says in one line that its plan is static.

use std::path::Path;
use std::process::Output;

use kubestrap_test_support::{self as common, kubestrap_bin};

/// A kubeconfig whose context `far-away` names a port nobody listens on.
fn dead_kubeconfig(dir: &Path) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.join("dead.yaml"),
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: far-away\nclusters:\n- name: c\n  cluster: {{server: 'https://127.0.0.1:{port}'}}\ncontexts:\n- name: far-away\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .unwrap();
    let _ = common::write_existing_playbook(dir, Path::new("dead.yaml"), "");
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec![("KS_TEST_TOKEN", "unreachable-canary")];
    all.extend_from_slice(env);
    common::run(&kubestrap_bin!(), args, dir, &all)
}

#[test]
fn an_unreachable_cluster_is_named_with_its_url_context_and_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    dead_kubeconfig(dir.path());
    let out = run(dir.path(), &["apply", "--output", "text"], &[]);
    let all = common::text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout
        .lines()
        .find(|l| l.starts_with("Result:"))
        .unwrap_or_else(|| panic!("no result line:\n{all}"));
    for wanted in [
        "cannot reach the Kubernetes API at https://127.0.0.1:",
        "context \"far-away\"",
        "dead.yaml",
        "read lease kube-system/kubestrap-test",
        "Connection refused",
    ] {
        assert!(result.contains(wanted), "{wanted:?} missing from {result}");
    }
    assert_eq!(result.matches("Connection refused").count(), 1, "{result}");
    assert!(!result.contains("ServiceError"), "{result}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ERROR") && !stderr.contains('\u{1b}'),
        "library log lines reached stderr by default:\n{stderr}"
    );
}

#[test]
fn plan_against_a_cluster_that_does_not_answer_says_once_that_it_is_static() {
    let dir = tempfile::tempdir().unwrap();
    dead_kubeconfig(dir.path());
    let out = run(dir.path(), &["plan"], &[]);
    let all = common::text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr:\n{all}");
    assert!(lines[0].contains("the plan is static"), "{all}");
    assert!(lines[0].contains("context \"far-away\""), "{all}");
    assert!(lines[0].contains("Connection refused"), "{all}");

    // Asked for, the library's own lines are there.
    let out = run(
        dir.path(),
        &["plan"],
        &[("KUBESTRAP_LOG", "kube_client=error")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ERROR"), "{}", common::text(&out));
}
