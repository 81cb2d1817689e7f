//! `kubestrap::kube::client` picks the same kubeconfig, context, cluster and namespace as the
//! real kubectl, for each of kubectl's loading rules. kubectl runs as a child with its own
//! environment (`KUBECONFIG`, `HOME`); nothing here touches the test process's environment.
//!
//! Without kubectl on PATH the test prints `SKIP: kubectl not found` and passes.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kubestrap::kube::client::config_from_sources;

const FIRST: &str = include_str!("fixtures/kubeconfig/two-contexts.yaml");

const SECOND: &str = include_str!("fixtures/kubeconfig/second-file.yaml");

struct Case<'a> {
    name: &'a str,
    flag: Option<PathBuf>,
    env: Option<String>,
    context: Option<&'a str>,
}

/// What kubectl resolves: (server, namespace).
async fn kubectl_view(kubectl: &Path, home: &Path, case: &Case<'_>) -> (String, String) {
    let mut cmd = tokio::process::Command::new(kubectl);
    cmd.env_clear()
        .env("HOME", home)
        .args(["config", "view", "--minify", "-o"])
        .arg("jsonpath={.clusters[0].cluster.server} {.contexts[0].context.namespace}");
    if let Some(env) = &case.env {
        cmd.env("KUBECONFIG", env);
    }
    if let Some(flag) = &case.flag {
        cmd.arg("--kubeconfig").arg(flag);
    }
    if let Some(context) = case.context {
        cmd.arg("--context").arg(context);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("kubectl finished")
        .unwrap();
    assert!(
        out.status.success(),
        "{}: kubectl failed: {}",
        case.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (server, namespace) = text.split_once(' ').unwrap_or((&text, ""));
    let namespace = if namespace.trim().is_empty() {
        "default"
    } else {
        namespace.trim()
    };
    (
        server.trim_end_matches('/').to_owned(),
        namespace.to_owned(),
    )
}

#[tokio::test]
async fn the_same_cluster_and_namespace_as_kubectl() {
    let Some(kubectl) = kubestrap_test_support::kubectl_or_skip("toolkit_kube") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".kube")).unwrap();
    std::fs::write(home.join(".kube/config"), SECOND).unwrap();
    let first = dir.path().join("first.yaml");
    let second = dir.path().join("second.yaml");
    std::fs::write(&first, FIRST).unwrap();
    std::fs::write(&second, SECOND).unwrap();
    let list = |paths: &[&Path]| std::env::join_paths(paths).unwrap().into_string().unwrap();
    let missing = dir.path().join("missing.yaml");
    let cases = [
        Case {
            name: "home default",
            flag: None,
            env: None,
            context: None,
        },
        Case {
            name: "empty KUBECONFIG falls back to home",
            flag: None,
            env: Some(String::new()),
            context: None,
        },
        Case {
            name: "KUBECONFIG list, first wins",
            flag: None,
            env: Some(list(&[&first, &missing, &second])),
            context: None,
        },
        Case {
            name: "KUBECONFIG list, context from the second file",
            flag: None,
            env: Some(list(&[&first, &second])),
            context: Some("gamma"),
        },
        Case {
            name: "first file's cluster wins for a second-file context",
            flag: None,
            env: Some(list(&[&first, &second])),
            context: Some("delta"),
        },
        Case {
            name: "--kubeconfig wins over KUBECONFIG",
            flag: Some(second.clone()),
            env: Some(list(&[&first])),
            context: None,
        },
        Case {
            name: "--kubeconfig with --context",
            flag: Some(first.clone()),
            env: None,
            context: Some("second"),
        },
    ];
    for case in &cases {
        let want = kubectl_view(&kubectl, &home, case).await;
        let config = config_from_sources(
            case.flag.as_deref(),
            case.env.as_deref().map(OsStr::new),
            Some(&home),
            case.context,
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let got = (
            config
                .cluster_url
                .to_string()
                .trim_end_matches('/')
                .to_owned(),
            config.default_namespace.clone(),
        );
        assert_eq!(got, want, "{}", case.name);
    }
}
