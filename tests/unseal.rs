//! `kubestrap unseal -p PLAYBOOK [--watch]` (issue 10, deliverable 5) on a bootstrapped sandbox:
//! with the auto-unsealer scaled to 0, a deleted Vault pod comes back sealed and stays so until
//! `kubestrap unseal` unseals it from the keys Secret; `--watch` unseals it again after each
//! restart, one line per event, and ends with exit 0 on SIGINT; a missing Secret or wrong
//! shares end with exit 1 and a message that says what to do. No share ever reaches the output.
//! The same against a real OpenBao server behind the sandbox when `KUBESTRAP_VAULT_SERVER` is
//! set (a loud SKIP otherwise, mandatory under `KUBESTRAP_REQUIRE_VAULT_SERVER=1`).

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubestrap_test_support::{
    self as common, Bootstrap, Options, kubestrap_bin, runtime, text, wait_with_timeout,
};
use serde_json::{Value, json};

/// The log filter of the canary runs: every crate a share passes through, at trace level (all
/// crates at trace would overflow the test's pipe with TLS records).
const CANARY_LOG: &str = "kubestrap=trace,vaultrs=trace,rustify=trace,reqwest=trace,kube=trace";

/// How long a condition in the sandbox may take before the test fails.
const LIMIT: Duration = Duration::from_secs(60);

/// `kubestrap ARGS -p PLAYBOOK`, without the ambient kubeconfig or bootstrap secrets.
fn command(fx: &Bootstrap, args: &[&str]) -> Command {
    let mut cmd = Command::new(kubestrap_bin!());
    cmd.args(args)
        .arg("-p")
        .arg(fx.playbook())
        .current_dir(fx.path())
        .env_remove("KUBECONFIG")
        .env_remove("GITHUB_TOKEN")
        .env_remove("CLOUDFLARE_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn unseal(fx: &Bootstrap) -> Output {
    unseal_logging(fx, "")
}

/// `kubestrap unseal` with `KUBESTRAP_LOG=filter` (every library's trace lines: the canary run).
fn unseal_logging(fx: &Bootstrap, filter: &str) -> Output {
    let mut cmd = command(fx, &["unseal"]);
    if !filter.is_empty() {
        cmd.env("KUBESTRAP_LOG", filter);
    }
    wait_with_timeout(cmd.spawn().unwrap(), Duration::from_secs(90))
}

/// Polls `check` every 50 ms until it returns `Some`, failing after [`LIMIT`].
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Vault's `sys/seal-status` through a fresh port-forward to the Service (`None` while the pod
/// does not answer).
async fn seal_status(client: &kube::Client) -> Option<Value> {
    let forward = kubestrap::kube::portforward::to_service(client, "vault", "vault", 8200)
        .await
        .ok()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let resp = http
        .get(format!("{}/v1/sys/seal-status", forward.http_url()))
        .send()
        .await
        .ok()?;
    resp.json().await.ok()
}

async fn sealed(client: &kube::Client) -> Option<bool> {
    seal_status(client)
        .await
        .and_then(|s| s["sealed"].as_bool())
}

/// Scales the auto-unsealer to 0 and waits until none of its pods is left.
async fn stop_auto_unsealer(client: &kube::Client) {
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "vault");
    deploys
        .patch(
            "vault-unsealer",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "vault");
    let lp = ListParams::default().labels("app.kubernetes.io/name=vault-unsealer");
    until("the auto-unsealer's pods to be gone", || async {
        pods.list(&lp)
            .await
            .ok()
            .filter(|l| l.items.is_empty())
            .map(|_| ())
    })
    .await;
}

/// Deletes Pod vault/vault-0 and waits for its successor to run; returns when it was deleted
/// and when the successor was seen Running.
async fn restart_vault(client: &kube::Client) -> (Instant, Instant) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "vault");
    let old = pods.get("vault-0").await.unwrap().metadata.uid;
    pods.delete("vault-0", &DeleteParams::default())
        .await
        .unwrap();
    let deleted = Instant::now();
    until("a new vault-0 Running", || async {
        let p = pods.get_opt("vault-0").await.ok()??;
        let running = p.status.as_ref()?.phase.as_deref() == Some("Running");
        (p.metadata.uid != old && running).then_some(())
    })
    .await;
    (deleted, Instant::now())
}

/// The unseal shares in the keys Secret (to prove none reaches the output).
async fn shares(client: &kube::Client) -> Vec<String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "vault");
    let s = secrets.get("vault-init-keys").await.unwrap();
    s.data
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("unseal-key-"))
        .map(|(_, v)| String::from_utf8(v.0.clone()).unwrap())
        .collect()
}

fn assert_no_share(shares: &[String], all: &str) {
    assert!(!shares.is_empty());
    for s in shares {
        assert!(
            !all.contains(s.trim()),
            "an unseal share reached the output:\n{all}"
        );
    }
}

/// The stdout lines of a running child, read on a thread.
fn follow(child: &mut Child) -> mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line containing `wanted`, failing after [`LIMIT`] with every line seen.
fn line_with(rx: &mpsc::Receiver<String>, wanted: &str, seen: &mut Vec<String>) -> String {
    let start = Instant::now();
    loop {
        let left = LIMIT.saturating_sub(start.elapsed());
        let Ok(line) = rx.recv_timeout(left) else {
            panic!("no line with {wanted:?} within {LIMIT:?}; lines: {seen:#?}");
        };
        seen.push(line.clone());
        if line.contains(wanted) {
            return line;
        }
    }
}

/// The whole proof on one bootstrapped sandbox (its Vault emulated or a real server).
fn unseal_proof(vault_server: Option<PathBuf>) {
    let real = vault_server.is_some();
    let fx = Bootstrap::new(
        kubestrap_bin!(),
        &Options {
            vault_server,
            restart_vault: false,
            ..Options::default()
        },
    );
    let _ = fx.apply_all_done();
    let rt = runtime();
    let client = rt.block_on(fx.client());
    let shares = rt.block_on(shares(&client));
    if real {
        let status = rt.block_on(seal_status(&client)).unwrap();
        assert_eq!(status["version"], common::OPENBAO_VERSION, "{status}");
    }

    // Unsealed already: nothing to do, exit 0.
    let out = unseal(&fx);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{}", text(&out));
    assert!(stdout.contains("already unsealed"), "{}", text(&out));

    // Deliverable 6: with the auto-unsealer running, a restarted pod is unsealed within about a
    // second of running (its 0.5 s poll of the seal status, then one round of shares).
    let (auto, answering) = rt.block_on(async {
        let (_, running) = restart_vault(&client).await;
        let answered: std::cell::Cell<Option<Instant>> = std::cell::Cell::new(None);
        until("Vault unsealed by the auto-unsealer", || {
            let client = client.clone();
            let first = &answered;
            async move {
                let now = sealed(&client).await?;
                if first.get().is_none() {
                    first.set(Some(Instant::now()));
                }
                (!now).then_some(())
            }
        })
        .await;
        (running.elapsed(), answered.get().map(|a| a.elapsed()))
    });
    eprintln!(
        "auto-unsealer: unsealed {auto:?} after the new pod was seen Running, {answering:?} after Vault first answered"
    );
    assert!(auto < Duration::from_secs(5), "{auto:?}");

    // No auto-unsealer: a restarted Vault stays sealed until `kubestrap unseal`.
    rt.block_on(async {
        stop_auto_unsealer(&client).await;
        let _ = restart_vault(&client).await;
        until("Vault sealed after the restart", || async {
            sealed(&client).await.filter(|s| *s).map(|_| ())
        })
        .await;
    });
    // verify.vault on the sealed Vault points at this command, with the playbook to pass.
    let verify = fx.run(
        &[
            "apply",
            "--resume",
            "--only",
            "verify.vault",
            "--output",
            "json",
        ],
        false,
    );
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    let pointer = format!("run `kubestrap unseal -p {}`", fx.playbook().display());
    assert!(
        text(&verify).contains(&pointer),
        "{pointer:?} missing: {}",
        text(&verify)
    );

    // The canary run: everything that handles a share logs at trace level, and still no share
    // is printed.
    let out = unseal_logging(&fx, CANARY_LOG);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Vault vault/vault-0 (port-forward to Service vault/vault): unsealed with 3 of 5 shares (threshold 3)"),
        "{}",
        text(&out)
    );
    assert_eq!(rt.block_on(sealed(&client)), Some(false), "{}", text(&out));
    let logged = String::from_utf8_lossy(&out.stderr);
    assert!(
        logged.contains("/v1/sys/unseal"),
        "the canary run logged the submissions: {logged}"
    );
    assert_no_share(&shares, &text(&out));

    // `[vault] access = "address"`: the real server's own listener, reached without a
    // port-forward (the keys still come through the Kubernetes API).
    if real {
        let info: Value =
            serde_json::from_slice(&std::fs::read(fx.sandbox_dir().join("sandbox.json")).unwrap())
                .unwrap();
        let addr = info["vault_server"]["addr"].as_str().unwrap().to_owned();
        let addr = if addr.contains("://") {
            addr
        } else {
            format!("http://{addr}")
        };
        let original = std::fs::read_to_string(fx.playbook()).unwrap();
        let by_address = original.replacen(
            "key_threshold = 3\n",
            &format!(
                "key_threshold = 3\naccess = \"address\"\naddress = {addr:?}\nallow_http = true\n"
            ),
            1,
        );
        assert_ne!(by_address, original);
        std::fs::write(fx.playbook(), by_address).unwrap();
        rt.block_on(async {
            let _ = restart_vault(&client).await;
            until("Vault sealed after the restart", || async {
                sealed(&client).await.filter(|s| *s).map(|_| ())
            })
            .await;
        });
        let out = unseal(&fx);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(
            text(&out).contains(&format!("Vault at {addr}: unsealed with 3 of 5 shares")),
            "{}",
            text(&out)
        );
        std::fs::write(fx.playbook(), original).unwrap();
    }

    // --watch: unseals after each restart, one line per event; SIGINT ends it with exit 0.
    let mut child = command(&fx, &["unseal", "--watch"]).spawn().unwrap();
    let rx = follow(&mut child);
    let mut seen = Vec::new();
    let _ = line_with(&rx, "unsealed", &mut seen);
    for round in 1..=2 {
        let (deleted, _) = rt.block_on(restart_vault(&client));
        let line = line_with(&rx, "sealed: unsealed with", &mut seen);
        let reaction = deleted.elapsed();
        eprintln!("round {round}: unsealed {reaction:?} after the pod was deleted: {line}");
        assert!(line.contains("of 5 shares"), "{line}");
        assert_eq!(rt.block_on(sealed(&client)), Some(false), "round {round}");
        // Measured: the pod is recreated and unsealed within a second, plus the sandbox's
        // restart of the pod; the bound leaves room for a loaded CI machine.
        assert!(
            reaction < Duration::from_secs(10),
            "{reaction:?}: {seen:#?}"
        );
    }
    let sigint = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sigint.success());
    let status = wait_for_exit(&mut child);
    seen.extend(rx.iter());
    let stderr = read_stderr(&mut child);
    let all = format!("{}\n{stderr}", seen.join("\n"));
    assert_eq!(status.code(), Some(0), "{all}");
    assert!(
        seen.last().is_some_and(|l| l.contains("stopped watching")),
        "{all}"
    );
    // One line per event: start, unsealed, two restarts, stop (no repeated poll lines).
    assert!(seen.len() <= 8, "{all}");
    assert_no_share(&shares, &all);
    eprintln!("--watch printed:\n{all}");

    // The keys Secret gone: exit 1, saying how to recover.
    rt.block_on(async {
        let _ = restart_vault(&client).await;
        until("Vault sealed after the restart", || async {
            sealed(&client).await.filter(|s| *s).map(|_| ())
        })
        .await;
    });
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "vault");
    let saved = rt.block_on(secrets.get("vault-init-keys")).unwrap();
    rt.block_on(secrets.delete("vault-init-keys", &DeleteParams::default()))
        .unwrap();
    let out = unseal(&fx);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for wanted in [
        "Secret vault/vault-init-keys with its unseal keys does not exist",
        "kubectl -n vault create secret generic vault-init-keys",
        "kubestrap unseal -p ",
    ] {
        assert!(stderr.contains(wanted), "{wanted:?} missing: {stderr}");
    }
    eprintln!("missing Secret: {stderr}");

    // Wrong shares (another Vault's): exit 1, still sealed, no share printed.
    let wrong: Vec<String> = (0..5).map(|i| format!("{:064x}", 0x5eed_u64 + i)).collect();
    let mut data = std::collections::BTreeMap::new();
    for (i, w) in wrong.iter().enumerate() {
        data.insert(
            format!("unseal-key-{i}"),
            k8s_openapi::ByteString(w.clone().into_bytes()),
        );
    }
    let mut bad = Secret::default();
    bad.metadata.name = Some("vault-init-keys".into());
    bad.data = Some(data);
    rt.block_on(secrets.create(&PostParams::default(), &bad))
        .unwrap();
    let out = unseal_logging(&fx, CANARY_LOG);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is still sealed"), "{stderr}");
    assert!(
        stderr.contains("put the right unseal-key-<n> entries"),
        "{stderr}"
    );
    assert_no_share(&wrong, &text(&out));
    assert_eq!(rt.block_on(sealed(&client)), Some(true));

    // The right Secret back: unsealed again.
    rt.block_on(secrets.delete("vault-init-keys", &DeleteParams::default()))
        .unwrap();
    let mut restored = Secret {
        data: saved.data,
        ..Secret::default()
    };
    restored.metadata.name = Some("vault-init-keys".into());
    rt.block_on(secrets.create(&PostParams::default(), &restored))
        .unwrap();
    let out = unseal(&fx);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("unsealed with 3 of 5 shares"),
        "{}",
        text(&out)
    );
}

fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("`kubestrap unseal --watch` did not end within 20 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_stderr(child: &mut Child) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut text);
    }
    text
}

#[test]
fn unseal_and_watch_unseal_a_restarted_vault_from_the_keys_secret() {
    unseal_proof(None);
}

#[test]
fn unseal_and_watch_unseal_a_restarted_real_openbao() {
    let Some(server) =
        common::vault_server_or_skip("unseal_and_watch_unseal_a_restarted_real_openbao")
    else {
        return;
    };
    unseal_proof(Some(server));
}

/// Bad input is exit 2 as in every command: no playbook, an invalid one.
#[test]
fn unseal_with_bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run(&kubestrap_bin!(), &["unseal"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("kubestrap init"), "{}", text(&out));
    let _ = common::write_playbook(dir.path(), "[cluster]\nname = \"x\"\nprovider = 7\n");
    let out = common::run(
        &kubestrap_bin!(),
        &["unseal", "-p", "kubestrap.toml", "--watch"],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("kubestrap.toml:"), "{}", text(&out));
}

/// A sandbox playbook whose sandbox is not running: exit 1, saying how to start it.
#[test]
fn unseal_on_a_sandbox_that_is_not_running_says_how_to_start_it() {
    let copy = common::sandbox_playbook_copy();
    let out = common::run(
        &kubestrap_bin!(),
        &["unseal", "-p", "playbooks/sandbox.toml"],
        copy.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("is not running"), "{all}");
    assert!(
        all.contains("kubestrap apply -p playbooks/sandbox.toml"),
        "{all}"
    );
}

/// An uninitialised Vault (the chart installed, `sys/init` never called): exit 1 saying to run
/// `apply`, once and in `--watch` (one line, however many polls; SIGTERM ends it with exit 0);
/// a Vault Service that does not exist: exit 1 saying Vault cannot be reached.
#[test]
fn unseal_on_an_uninitialised_or_missing_vault_says_what_to_do() {
    let rt = common::serving_runtime();
    let sdir = tempfile::tempdir().unwrap();
    let mut cfg = kubestrap_sandbox::SandboxConfig::new(sdir.path());
    cfg.preinstall_vault = true;
    let (handle, client) = rt.block_on(common::start_sandbox(cfg));
    rt.block_on(common::wait_pod_running(&client, "vault", "vault-0"));
    let dir = tempfile::tempdir().unwrap();
    let _ = common::write_existing_playbook(dir.path(), &handle.kubeconfig_path(), "");

    let out = common::run(&kubestrap_bin!(), &["unseal"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not initialised"), "{stderr}");
    assert!(
        stderr.contains("run `kubestrap apply -p kubestrap.toml`"),
        "{stderr}"
    );

    let mut child = Command::new(kubestrap_bin!())
        .args(["unseal", "--watch"])
        .current_dir(dir.path())
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = follow(&mut child);
    let mut seen = Vec::new();
    let _ = line_with(&rx, "is not initialised", &mut seen);
    // Several polls later, still that one line.
    let quiet = rx.recv_timeout(Duration::from_secs(1));
    assert!(quiet.is_err(), "a repeated line: {quiet:?} after {seen:#?}");
    let sigterm = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sigterm.success());
    let status = wait_for_exit(&mut child);
    seen.extend(rx.iter());
    assert_eq!(status.code(), Some(0), "{seen:#?}");
    assert!(
        seen.last().is_some_and(|l| l.contains("stopped watching")),
        "{seen:#?}"
    );

    let _ = common::write_existing_playbook(
        dir.path(),
        &handle.kubeconfig_path(),
        "namespace = \"nowhere\"\n",
    );
    let out = common::run(&kubestrap_bin!(), &["unseal"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach Vault (Pod nowhere/vault-0"),
        "{stderr}"
    );
    assert!(
        stderr.contains("kubectl -n nowhere get pod vault-0"),
        "{stderr}"
    );
    let _ = rt.block_on(handle.shutdown());
}

/// A cluster that does not answer: exit 1 naming the server, context and kubeconfig.
#[test]
fn unseal_on_an_unreachable_cluster_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = dir.path().join("dead.yaml");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: far-away\nclusters:\n- name: c\n  cluster: {{server: 'https://127.0.0.1:{port}'}}\ncontexts:\n- name: far-away\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .unwrap();
    let _ = common::write_existing_playbook(dir.path(), &kubeconfig, "");
    let out = common::run(&kubestrap_bin!(), &["unseal"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for wanted in [
        "cannot reach",
        &format!("https://127.0.0.1:{port}"),
        "far-away",
        "check that the cluster is up",
    ] {
        assert!(stderr.contains(wanted), "{wanted:?} missing: {stderr}");
    }
}
