//! Issue 10 (optional deliverable): OpenBao's static seal, `[vault] seal = "static"`. The five
//! phases with the restart proof: kubestrap generates the seal key into Secret
//! `openbao/openbao-static-seal` before the release, the chart mounts it read-only and adds the
//! `seal "static"` stanza, `sys/init` hands out recovery keys, and no unsealer runs: a deleted
//! `openbao-0` comes back unsealed by itself. Once on the emulated Vault, once with the real
//! `bao` server behind the pod (skips loudly without `KUBESTRAP_VAULT_SERVER`, mandatory under
//! `KUBESTRAP_REQUIRE_VAULT_SERVER=1`).

use std::path::PathBuf;

use base64::Engine as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use kubestrap_test_support::{
    Bootstrap, Options, assert_vault_restarted, finished, kubestrap_bin, runtime, text, wait_for,
    within,
};
use serde_json::Value;

const NS: &str = "openbao";
const SEAL_SECRET: &str = "openbao-static-seal";

/// Reads `sys/seal-status` through a port-forward to the `openbao` Service.
async fn seal_status(client: &kube::Client) -> Value {
    let forward = kubestrap::kube::portforward::to_service(client, NS, "openbao", 8200)
        .await
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(format!("{}/v1/sys/seal-status", forward.http_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The seal key Secret's `key` entry (base64 text of 32 bytes).
async fn seal_key(client: &kube::Client) -> Vec<u8> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let secret = secrets.get(SEAL_SECRET).await.expect("the seal key Secret");
    secret.data.unwrap()["key"].0.clone()
}

/// Bootstraps with the static seal and the restart proof, checks what it made, runs it again
/// (nothing changes; the key Secret keeps its bytes and Vault its data); returns the fixture
/// and the seal status read through the port-forward.
fn bootstrap_static(vault_server: Option<PathBuf>) -> (Bootstrap, Value) {
    let fx = Bootstrap::new(
        kubestrap_bin!(),
        &Options {
            vault_server,
            restart_vault: true,
            vault_extra: "flavor = \"openbao\"\nseal = \"static\"\n",
            ..Options::default()
        },
    );
    let plan = fx.run(&["plan"], true);
    assert!(plan.status.success(), "{}", text(&plan));
    assert!(
        text(&plan).contains("Secret openbao/openbao-static-seal"),
        "the plan names the seal key Secret: {}",
        text(&plan)
    );
    let out = fx.apply_all_done();
    let steps = finished(&out);
    assert_vault_restarted(&steps);
    // The restart proof's wall time: delete the pod, wait for the new one, see it unsealed by
    // itself (printed for the record; `--nocapture` shows it).
    let proof = steps.iter().find(|s| s["step"] == "verify.vault").unwrap();
    eprintln!(
        "static seal restart proof (verify.vault): {} ms",
        proof["duration_ms"]
    );
    let ids: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert!(ids.contains(&"vault.seal-key"), "{ids:?}");
    assert!(
        !ids.contains(&"vault.auto-unseal"),
        "no unsealer under the static seal: {ids:?}"
    );

    let (key, status) = runtime().block_on(async {
        let client = fx.client().await;
        let key = seal_key(&client).await;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .expect("the key is base64");
        assert_eq!(raw.len(), 32, "an AES-256 key");
        // The pod mounts the Secret read-only; the config reads the mounted file.
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        let pod = pods.get("openbao-0").await.expect("pod openbao-0");
        let spec = pod.spec.unwrap();
        let volume = spec
            .volumes
            .unwrap_or_default()
            .into_iter()
            .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(SEAL_SECRET))
            .expect("a volume of the seal key Secret");
        let mount = spec.containers[0]
            .volume_mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .find(|m| m.name == volume.name)
            .expect("the server mounts it");
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(mount.mount_path, "/openbao/userconfig/openbao-static-seal");
        // The keys Secret holds recovery keys and the root token, no unseal keys.
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
        let keys = secrets.get("vault-init-keys").await.unwrap().data.unwrap();
        let names: Vec<&String> = keys.keys().collect();
        assert!(
            keys.contains_key("recovery-key-0")
                && keys.contains_key("recovery-key-4")
                && keys.contains_key("root-token")
                && !keys.contains_key("unseal-key-0"),
            "{names:?}"
        );
        let deploys: Api<Deployment> = Api::namespaced(client.clone(), NS);
        assert!(
            deploys.get_opt("vault-unsealer").await.unwrap().is_none(),
            "no unsealer Deployment"
        );
        // Phase 4: the demo app's secret came from OpenBao through ESO.
        let demo: Api<Secret> = Api::namespaced(client.clone(), "demo");
        let s = demo.get("cloudflare-api-token").await.unwrap();
        assert_eq!(s.data.unwrap()["api-token"].0, fx.cloudflare.as_bytes());
        let status = seal_status(&client).await;
        assert_eq!(status["type"], "static", "{status}");
        assert_eq!(status["sealed"], false, "{status}");
        assert_eq!(status["initialized"], true, "{status}");
        assert_eq!(status["recovery_seal"], true, "{status}");
        assert_eq!(
            (status["t"].clone(), status["n"].clone()),
            (3.into(), 5.into())
        );
        (key, status)
    });

    // The seal key never reaches the output, the plan or the checkpoint.
    let key_text = String::from_utf8(key.clone()).unwrap();
    for (what, all) in [
        ("apply", text(&out)),
        ("plan", text(&plan)),
        ("checkpoint", fx.checkpoint_text()),
    ] {
        assert!(!all.contains(&key_text), "the seal key reached the {what}");
    }

    // A second run changes nothing: the key Secret keeps its bytes, Vault its data.
    let again = fx.assert_second_apply_unchanged(true);
    assert!(!text(&again).contains(&key_text));
    runtime().block_on(async {
        let client = fx.client().await;
        assert_eq!(seal_key(&client).await, key, "the seal key was kept");
        let after = seal_status(&client).await;
        assert_eq!(after["cluster_id"], status["cluster_id"], "the same Vault");
    });

    // `kubestrap unseal` says it unseals itself and where its key is.
    let unseal = fx.run(&["unseal"], false);
    assert!(unseal.status.success(), "{}", text(&unseal));
    let said = String::from_utf8_lossy(&unseal.stdout).into_owned();
    assert!(
        said.contains("unseals itself") && said.contains("openbao/openbao-static-seal"),
        "{said}"
    );
    assert!(!text(&unseal).contains(&key_text));

    // The sandbox stopped and started again (a real server's data sealed by the static seal
    // does not start without it): the bootstrap holds, Vault unsealed by itself.
    let down = fx.run(&["sandbox", "down"], false);
    assert!(down.status.success(), "{}", text(&down));
    let again = fx.run(&["apply", "--fresh", "--output", "json"], true);
    assert!(again.status.success(), "{}", text(&again));
    runtime().block_on(async {
        let client = fx.client().await;
        let after = seal_status(&client).await;
        assert_eq!(after["sealed"], false, "{after}");
        assert_eq!(after["cluster_id"], status["cluster_id"], "the same Vault");
    });
    (fx, status)
}

#[test]
fn five_phases_with_the_static_seal_on_the_emulator_with_the_restart_proof() {
    let (fx, _) = bootstrap_static(None);
    // Without its key Secret, a restarted pod cannot mount it: ContainerCreating with the
    // kubelet's FailedMount Event, and `kubestrap unseal` fails; the Secret back (same bytes),
    // the pod starts and unseals itself.
    runtime().block_on(async {
        let client = fx.client().await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
        let saved = secrets.get(SEAL_SECRET).await.unwrap();
        secrets
            .delete(SEAL_SECRET, &DeleteParams::default())
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        pods.delete("openbao-0", &DeleteParams::default())
            .await
            .unwrap();
        let events: Api<Event> = Api::namespaced(client.clone(), NS);
        within("the kubelet's FailedMount Event", async {
            loop {
                let failed = events
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .iter()
                    .any(|e| {
                        e.reason.as_deref() == Some("FailedMount")
                            && e.message.as_deref().is_some_and(|m| {
                                m.contains("secret \"openbao-static-seal\" not found")
                            })
                    });
                if failed {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await;
        let pod = pods.get("openbao-0").await.unwrap();
        let status = pod.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        let waiting = status.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("ContainerCreating"));
        let unseal = fx.run(&["unseal"], false);
        assert_eq!(unseal.status.code(), Some(1), "{}", text(&unseal));

        // A Secret with another key: the pod starts, and stays sealed (the key does not open
        // the data); `kubestrap unseal` says where the key should be, exit 1.
        let other = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
        let mut wrong = Secret::default();
        wrong.metadata.name = Some(SEAL_SECRET.into());
        wrong.string_data = Some([("key".to_string(), other)].into());
        secrets
            .create(&PostParams::default(), &wrong)
            .await
            .unwrap();
        wait_for(&pods, "openbao-0", "pod openbao-0 Running", |p: &Pod| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .await;
        let unseal = fx.run(&["unseal"], false);
        assert_eq!(unseal.status.code(), Some(1), "{}", text(&unseal));
        assert!(
            text(&unseal).contains("uses the static seal")
                && text(&unseal).contains("openbao/openbao-static-seal"),
            "{}",
            text(&unseal)
        );

        // A key file OpenBao cannot read as an AES-256 key: the server exits at start, so
        // the restarted pod crash-loops and its log says why.
        secrets
            .delete(SEAL_SECRET, &DeleteParams::default())
            .await
            .unwrap();
        let mut garbled = Secret::default();
        garbled.metadata.name = Some(SEAL_SECRET.into());
        garbled.string_data = Some([("key".to_string(), "not-a-key\n".to_string())].into());
        secrets
            .create(&PostParams::default(), &garbled)
            .await
            .unwrap();
        let old = pods.get("openbao-0").await.unwrap().metadata.uid;
        pods.delete("openbao-0", &DeleteParams::default())
            .await
            .unwrap();
        let crashing = wait_for(
            &pods,
            "openbao-0",
            "pod openbao-0 CrashLoopBackOff",
            |p: &Pod| {
                p.metadata.uid != old
                    && p.status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .and_then(|c| c[0].state.as_ref())
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.reason.as_deref())
                        == Some("CrashLoopBackOff")
            },
        )
        .await;
        let log = pods
            .logs(
                crashing.metadata.name.as_deref().unwrap(),
                &kube::api::LogParams::default(),
            )
            .await
            .unwrap();
        assert!(
            log.contains("Error configuring seal \"static\": unknown encoding for AES-256 key"),
            "{log}"
        );

        // The right key back, the pod restarted: it unseals itself.
        secrets
            .delete(SEAL_SECRET, &DeleteParams::default())
            .await
            .unwrap();
        let mut back = Secret {
            data: saved.data.clone(),
            type_: saved.type_.clone(),
            ..Secret::default()
        };
        back.metadata.name = Some(SEAL_SECRET.into());
        secrets.create(&PostParams::default(), &back).await.unwrap();
        let old = pods.get("openbao-0").await.unwrap().metadata.uid;
        pods.delete("openbao-0", &DeleteParams::default())
            .await
            .unwrap();
        wait_for(
            &pods,
            "openbao-0",
            "pod openbao-0 recreated and Running",
            |p: &Pod| {
                p.metadata.uid != old
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            },
        )
        .await;
        let status = seal_status(&client).await;
        assert_eq!(status["sealed"], false, "unsealed itself: {status}");
    });
}

#[test]
fn five_phases_with_the_static_seal_on_a_real_bao_server_with_the_restart_proof() {
    let Some(server) = kubestrap_test_support::vault_server_or_skip(
        "five_phases_with_the_static_seal_on_a_real_bao_server_with_the_restart_proof",
    ) else {
        return;
    };
    let (_fx, status) = bootstrap_static(Some(server));
    // The real server answered through the pod's port-forward, under its static seal.
    kubestrap_test_support::assert_real_openbao(&status);
    assert_eq!(status["recovery_seal_type"], "shamir", "{status}");
}

/// The seal key is a secret kubestrap handles but never shows: a canary key planted in the
/// seal key Secret before the bootstrap is used (the existing Secret is kept, never
/// overwritten: its key is the one the data is encrypted with) and appears in no output, log
/// line (at trace level), plan, checkpoint or sandbox log, in any encoding.
#[test]
fn static_seal_key_canary_is_reused_and_never_shown() {
    use kube::api::PostParams;
    const CANARY: &str = "staticsealcanary-7e21c9d04b5a1f3";
    assert_eq!(CANARY.len(), 32);
    let fx = Bootstrap::new(
        kubestrap_bin!(),
        &Options {
            vault_extra: "flavor = \"openbao\"\nseal = \"static\"\n",
            ..Options::default()
        },
    );
    let cluster = fx.run(
        &["apply", "--only", "k3s.install", "--only", "k3s.ready"],
        true,
    );
    assert!(cluster.status.success(), "{}", text(&cluster));
    let b64 = base64::engine::general_purpose::STANDARD.encode(CANARY);
    runtime().block_on(async {
        let client = fx.client().await;
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let mut ns = k8s_openapi::api::core::v1::Namespace::default();
        ns.metadata.name = Some(NS.into());
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        let secrets: Api<Secret> = Api::namespaced(client, NS);
        let mut planted = Secret::default();
        planted.metadata.name = Some(SEAL_SECRET.into());
        planted.string_data = Some([("key".to_string(), b64.clone())].into());
        secrets
            .create(&PostParams::default(), &planted)
            .await
            .unwrap();
    });
    let trace = [("KUBESTRAP_LOG", "trace")];
    let out = fx.run_with_env(&["apply", "--resume", "--output", "json"], true, &trace);
    assert!(out.status.success(), "{}", text(&out));
    let seal_key_step = finished(&out)
        .into_iter()
        .find(|s| s["step"] == "vault.seal-key")
        .expect("vault.seal-key ran");
    assert_eq!(
        seal_key_step["changed"], false,
        "the planted Secret was kept"
    );
    runtime().block_on(async {
        let client = fx.client().await;
        assert_eq!(seal_key(&client).await, b64.as_bytes(), "never overwritten");
        let status = seal_status(&client).await;
        assert_eq!(status["sealed"], false, "unsealed with the planted key");
    });
    let mut all = vec![("apply", text(&out)), ("checkpoint", fx.checkpoint_text())];
    for format in ["text", "json"] {
        let plan = fx.run_with_env(&["plan", "--output", format], true, &trace);
        assert!(plan.status.success(), "{}", text(&plan));
        all.push(("plan", text(&plan)));
    }
    let unseal = fx.run_with_env(&["unseal"], false, &trace);
    all.push(("unseal", text(&unseal)));
    let log = std::fs::read_to_string(fx.sandbox_dir().join("sandbox.console.log"))
        .expect("the sandbox's log");
    all.push(("sandbox log", log));
    let raw_b64 = base64::engine::general_purpose::STANDARD.encode(b64.as_bytes());
    for (what, text) in &all {
        for form in [CANARY, b64.as_str(), raw_b64.as_str()] {
            assert!(!text.contains(form), "{form:?} reached the {what}:\n{text}");
        }
    }
}
