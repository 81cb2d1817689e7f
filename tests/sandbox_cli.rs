//! `kubestrap sandbox up` in the foreground and `sandbox down` stopping it through its pid file.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kubestrap_test_support::{kube_client_from, kubestrap_bin, within_for};
use tokio::process::{Child, Command};

const T: Duration = Duration::from_secs(30);

/// `kubestrap ARGS` to completion.
async fn kubestrap(args: &[&str], dir: &Path) -> Output {
    within_for(
        T,
        "kubestrap to finish",
        Command::new(kubestrap_bin!()).args(args).arg(dir).output(),
    )
    .await
    .expect("kubestrap runs")
}

/// `sandbox up ARGS --dir DIR` in the foreground, once its pid file exists.
async fn up(args: &[&str], dir: &Path) -> Child {
    let child = Command::new(kubestrap_bin!())
        .args(["sandbox", "up"])
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sandbox up starts");
    let pid_file = dir.join("sandbox.pid");
    within_for(T, "the pid file", async {
        while !pid_file.exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    child
}

/// `sandbox down --dir DIR` succeeds and the foreground `up` exits 0.
async fn down(mut up: Child, dir: &Path) {
    let down = kubestrap(&["sandbox", "down", "--dir"], dir).await;
    assert!(
        down.status.success(),
        "down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    let status = within_for(T, "up to exit", up.wait())
        .await
        .expect("status");
    assert!(status.success(), "graceful stop exits 0");
}

#[tokio::test]
async fn up_writes_kubeconfig_and_down_stops_it_gracefully() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sdir = dir.path().join("cluster");
    let up = up(&["--faults", "seed=3,delay.node=100ms"], &sdir).await;
    let kubeconfig = std::fs::read_to_string(sdir.join("kubeconfig")).expect("kubeconfig written");
    assert!(kubeconfig.contains("server: https://127.0.0.1:"));
    assert!(kubeconfig.contains("name: default"));
    assert!(kubeconfig.contains("certificate-authority-data:"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sdir.join("kubeconfig"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "kubeconfig holds the admin token: not group/world readable"
        );
    }

    // A second `up` on the same directory refuses to share its state.
    let second = kubestrap(&["sandbox", "up", "--dir"], &sdir).await;
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));

    down(up, &sdir).await;
    assert!(sdir.join("state.json").exists(), "state flushed on stop");
    assert!(!sdir.join("sandbox.pid").exists(), "pid file removed");

    // Nothing is running any more: down says so and fails.
    let again = kubestrap(&["sandbox", "down", "--dir"], &sdir).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no sandbox is running"));
}

#[tokio::test]
async fn bad_fault_spec_is_rejected_before_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = kubestrap(
        &["sandbox", "up", "--faults", "api_error_rate=7", "--dir"],
        dir.path(),
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("api_error_rate"));
    assert!(!dir.path().join("kubeconfig").exists());
}

#[tokio::test]
async fn up_with_preinstalled_vault_and_git_repos_records_the_flux_url() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let sdir = dir.path().join("cluster");
    let fleet = dir.path().join("fleet");
    std::fs::create_dir_all(&fleet).expect("fleet");
    let repo = format!("https://git.sandbox.local/org/fleet={}", fleet.display());
    let up = up(&["--preinstall", "vault", "--git-repo", &repo], &sdir).await;
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sdir.join("sandbox.json")).expect("sandbox.json"))
            .expect("json");
    let url = info["flux_install_url"]
        .as_str()
        .expect("flux url")
        .to_string();
    assert!(url.starts_with("https://127.0.0.1:") && url.ends_with("/sandbox/flux/install.yaml"));
    let ca = std::fs::read(info["ca_file"].as_str().expect("ca file")).expect("ca");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("pem"))
        .build()
        .expect("http");
    let body = within_for(T, "the manifest", async {
        http.get(&url).send().await?.text().await
    })
    .await
    .expect("manifest");
    assert!(body.contains("kind: CustomResourceDefinition"));

    let client = kube_client_from(&sdir.join("kubeconfig")).await;
    let pods: kube::Api<Pod> = kube::Api::namespaced(client, "vault");
    kubestrap_test_support::wait_for(&pods, "vault-0", "preinstalled vault-0 Running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    down(up, &sdir).await;
}

#[tokio::test]
async fn bad_git_repo_mapping_is_rejected_before_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = kubestrap(
        &["sandbox", "up", "--git-repo", "no-equals-sign", "--dir"],
        dir.path(),
    )
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad git repository mapping"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_vault_server_that_is_not_one_is_rejected_before_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sdir = dir.path().join("cluster");
    for (binary, says) in [
        (
            "/nonexistent/bao",
            "cannot run the vault server binary /nonexistent/bao",
        ),
        ("/bin/true", "/bin/true is not a Vault or OpenBao server"),
    ] {
        let out = kubestrap(&["sandbox", "up", "--vault-server", binary, "--dir"], &sdir).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "bad input: {stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(!sdir.exists(), "nothing touched");
    }
}

/// Whether `pid` runs (a zombie waiting for its reaper has stopped).
fn process_runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// The pid the sandbox recorded for its Vault server.
async fn server_pid(dir: &Path) -> u32 {
    let path = dir.join("vault-server/server.pid");
    within_for(T, "the vault server's pid file", async {
        loop {
            if let Some(pid) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_real_vault_server_stops_with_the_sandbox_even_a_sigkilled_one() {
    let Some(server) = kubestrap_test_support::vault_server_or_skip(
        "a_real_vault_server_stops_with_the_sandbox_even_a_sigkilled_one",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sdir = dir.path().join("cluster");
    let server = server.display().to_string();
    let args = ["--preinstall", "vault", "--vault-server", server.as_str()];

    // Graceful: `sandbox down` stops the server before the sandbox exits.
    let first = up(&args, &sdir).await;
    let pid = server_pid(&sdir).await;
    assert!(process_runs(pid), "the server runs");
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sdir.join("sandbox.json")).expect("sandbox.json"))
            .expect("json");
    assert_eq!(info["vault_server"]["flavor"], "OpenBao", "{info}");
    assert!(
        info["vault_server"]["addr"]
            .as_str()
            .expect("addr")
            .starts_with("http://127.0.0.1:")
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(String::from_utf8_lossy(&cmdline).contains("server\0-config="));
    down(first, &sdir).await;
    assert!(!process_runs(pid), "the server stopped with the sandbox");
    assert!(!sdir.join("vault-server/server.pid").exists());

    // SIGKILL: nothing of the sandbox runs any more, yet the server dies too (parent-death
    // signal), instead of keeping its ports and raft files.
    let mut second = up(&args, &sdir).await;
    let pid = server_pid(&sdir).await;
    assert!(process_runs(pid));
    second.start_kill().expect("SIGKILL the sandbox");
    second.wait().await.expect("reaped");
    within_for(
        Duration::from_secs(10),
        "the server to die with its SIGKILLed sandbox",
        async {
            while process_runs(pid) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
}
