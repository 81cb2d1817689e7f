//! `kubestrap sandbox up` in the foreground and `sandbox down` stopping it through its pid file.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

const T: Duration = Duration::from_secs(30);

/// `kubestrap sandbox down --dir DIR`, to completion.
async fn sandbox_down(dir: &std::path::Path) -> std::process::Output {
    tokio::time::timeout(
        T,
        Command::new(env!("CARGO_BIN_EXE_kubestrap"))
            .args(["sandbox", "down", "--dir"])
            .arg(dir)
            .output(),
    )
    .await
    .expect("down finishes")
    .expect("down runs")
}

#[tokio::test]
async fn up_writes_kubeconfig_and_down_stops_it_gracefully() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sdir = dir.path().join("cluster");
    let bin = env!("CARGO_BIN_EXE_kubestrap");
    let mut up = Command::new(bin)
        .args(["sandbox", "up", "--dir"])
        .arg(&sdir)
        .args(["--faults", "seed=3,delay.node=100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sandbox up starts");
    let pid_file = sdir.join("sandbox.pid");
    tokio::time::timeout(T, async {
        while !pid_file.exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("pid file appears");
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
    let second = tokio::time::timeout(
        T,
        Command::new(bin)
            .args(["sandbox", "up", "--dir"])
            .arg(&sdir)
            .output(),
    )
    .await
    .expect("second up exits")
    .expect("runs");
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));

    let down = sandbox_down(&sdir).await;
    assert!(
        down.status.success(),
        "down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    let status = tokio::time::timeout(T, up.wait())
        .await
        .expect("up exits")
        .expect("status");
    assert!(status.success(), "graceful stop exits 0");
    assert!(sdir.join("state.json").exists(), "state flushed on stop");
    assert!(!pid_file.exists(), "pid file removed");

    // Nothing is running any more: down says so and fails.
    let again = sandbox_down(&sdir).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no sandbox is running"));
}

#[tokio::test]
async fn bad_fault_spec_is_rejected_before_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tokio::time::timeout(
        T,
        Command::new(env!("CARGO_BIN_EXE_kubestrap"))
            .args(["sandbox", "up", "--dir"])
            .arg(dir.path())
            .args(["--faults", "api_error_rate=7"])
            .output(),
    )
    .await
    .expect("exits")
    .expect("runs");
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
    let bin = env!("CARGO_BIN_EXE_kubestrap");
    let mut up = Command::new(bin)
        .args(["sandbox", "up", "--preinstall", "vault", "--dir"])
        .arg(&sdir)
        .arg("--git-repo")
        .arg(format!(
            "https://git.sandbox.local/org/fleet={}",
            fleet.display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sandbox up starts");
    let pid_file = sdir.join("sandbox.pid");
    tokio::time::timeout(T, async {
        while !pid_file.exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("pid file appears");
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
    let body = tokio::time::timeout(T, async { http.get(&url).send().await?.text().await })
        .await
        .expect("in time")
        .expect("manifest");
    assert!(body.contains("kind: CustomResourceDefinition"));

    let kc = kube::config::Kubeconfig::read_from(sdir.join("kubeconfig")).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg).expect("client");
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, "vault");
    tokio::time::timeout(T, async {
        loop {
            if let Ok(p) = pods.get("vault-0").await
                && p.status.and_then(|s| s.phase).as_deref() == Some("Running")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("preinstalled vault-0 runs");

    let down = sandbox_down(&sdir).await;
    assert!(down.status.success());
    let status = tokio::time::timeout(T, up.wait())
        .await
        .expect("up exits")
        .expect("status");
    assert!(status.success());
}

#[tokio::test]
async fn bad_git_repo_mapping_is_rejected_before_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tokio::time::timeout(
        T,
        Command::new(env!("CARGO_BIN_EXE_kubestrap"))
            .args(["sandbox", "up", "--git-repo", "no-equals-sign", "--dir"])
            .arg(dir.path())
            .output(),
    )
    .await
    .expect("exits")
    .expect("runs");
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
        let out = tokio::time::timeout(
            T,
            Command::new(env!("CARGO_BIN_EXE_kubestrap"))
                .args(["sandbox", "up", "--vault-server", binary, "--dir"])
                .arg(&sdir)
                .output(),
        )
        .await
        .expect("exits")
        .expect("runs");
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

async fn wait_for_file(path: &std::path::Path) -> String {
    tokio::time::timeout(T, async {
        loop {
            if let Ok(s) = std::fs::read_to_string(path)
                && !s.trim().is_empty()
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} appears", path.display()))
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
    let bin = env!("CARGO_BIN_EXE_kubestrap");
    let up = || {
        Command::new(bin)
            .args(["sandbox", "up", "--preinstall", "vault", "--dir"])
            .arg(&sdir)
            .arg("--vault-server")
            .arg(&server)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("sandbox up starts")
    };
    let server_pid = || async {
        wait_for_file(&sdir.join("vault-server/server.pid"))
            .await
            .trim()
            .parse::<u32>()
            .expect("pid")
    };

    // Graceful: `sandbox down` stops the server before the sandbox exits.
    let mut first = up();
    wait_for_file(&sdir.join("sandbox.pid")).await;
    let pid = server_pid().await;
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
    let down = sandbox_down(&sdir).await;
    assert!(down.status.success());
    assert!(
        tokio::time::timeout(T, first.wait())
            .await
            .expect("up exits")
            .expect("status")
            .success()
    );
    assert!(!process_runs(pid), "the server stopped with the sandbox");
    assert!(!sdir.join("vault-server/server.pid").exists());

    // SIGKILL: nothing of the sandbox runs any more, yet the server dies too (parent-death
    // signal), instead of keeping its ports and raft files.
    let mut second = up();
    wait_for_file(&sdir.join("sandbox.pid")).await;
    let pid = server_pid().await;
    assert!(process_runs(pid));
    second.start_kill().expect("SIGKILL the sandbox");
    second.wait().await.expect("reaped");
    tokio::time::timeout(Duration::from_secs(10), async {
        while process_runs(pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the server dies with its SIGKILLed sandbox");
}
