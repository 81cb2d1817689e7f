//! Issue 9: kubestrap's auto-unsealer could not work on a real node. It ran as uid 100 without
//! `fsGroup`, with its keys mounted 0400: the kubelet makes those files root-owned, so the
//! process could not read them, and the script swallowed the error. The sandbox now gives the
//! pod's process and files the kubelet's uid/gid/groups and owner/group/mode, so this proves
//! the rendered manifest both ways: as kubestrap deploys it, a restarted Vault is unsealed;
//! with `fsGroup` removed, Vault stays sealed and the pod says why.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, LogParams};
use kubestrap::playbook::VaultFlavor;
use kubestrap::templates::{Manifest, VaultAutoUnseal};
use kubestrap_sandbox::{SandboxConfig, SandboxHandle};
use kubestrap_test_support::{apply, apply_yaml, forward, start_sandbox, vault_client, within};
use serde_json::json;

/// A sandbox with the vault chart preinstalled, Vault initialised (3 shares, threshold 2) and
/// unsealed, and the keys Secret as `vault.init` writes it.
async fn vault_with_keys() -> (SandboxHandle, Client, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = SandboxConfig::new(tmp.path().join("sandbox"));
    cfg.preinstall_vault = true;
    let (h, c) = start_sandbox(cfg).await;
    wait_running(&c, "vault-0").await;
    let addr = forward(&c, "vault", "vault-0", 8200).await;
    let anon = vault_client(&addr, "");
    let init = within(
        "init",
        vaultrs::sys::start_initialization(&anon, 3, 2, None),
    )
    .await
    .expect("init");
    for key in &init.keys[..2] {
        within(
            "unseal",
            vaultrs::sys::unseal(&anon, Some(key.clone()), None, None),
        )
        .await
        .expect("unseal");
    }
    assert!(!h.vault().expect("vault").status().sealed);
    let mut data = json!({"root-token": init.root_token});
    for (i, k) in init.keys.iter().enumerate() {
        data[format!("unseal-key-{i}")] = json!(k);
    }
    apply(
        &c,
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "vault-init-keys", "namespace": "vault"}, "stringData": data}),
    )
    .await;
    (h, c, tmp)
}

/// kubestrap's unsealer manifest, as `vault.auto-unseal` renders it for the defaults.
fn unsealer(fs_group: bool) -> String {
    let text = VaultAutoUnseal {
        namespace: "vault".into(),
        keys_secret: "vault-init-keys".into(),
        vault_image: "hashicorp/vault:1.19.0".into(),
        flavor: kubestrap::playbook::VaultFlavor::Vault,
        vault_addr: "http://vault.vault.svc:8200".into(),
        poll_interval: VaultAutoUnseal::DEFAULT_POLL_INTERVAL,
        unseal_keys: 2,
    }
    .render()
    .expect("render");
    assert!(text.contains("fsGroup: 1000"), "{text}");
    if fs_group {
        text
    } else {
        text.lines()
            .filter(|l| l.trim() != "fsGroup: 1000")
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn wait_running(c: &Client, name: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(c.clone(), "vault");
    within(&format!("{name} running"), async {
        loop {
            if let Ok(p) = pods.get(name).await
                && p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Deletes `vault-0` (Vault restarts sealed) and returns once its replacement runs.
async fn restart_vault(c: &Client) {
    let pods: Api<Pod> = Api::namespaced(c.clone(), "vault");
    let old = pods.get("vault-0").await.expect("pod").metadata.uid;
    within("delete", pods.delete("vault-0", &DeleteParams::default()))
        .await
        .expect("delete");
    within("replaced", async {
        loop {
            let p = wait_running(c, "vault-0").await;
            if p.metadata.uid != old {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn auto_unseal_reads_its_root_owned_keys_and_unseals_a_restarted_vault() {
    let (h, c, _tmp) = vault_with_keys().await;
    let vault = h.vault().expect("vault");
    apply_yaml(&c, &unsealer(true)).await;
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), "vault");
    within("unsealer available", async {
        loop {
            if let Ok(d) = deploys.get("vault-unsealer").await
                && d.status.and_then(|s| s.available_replicas).unwrap_or(0) >= 1
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for round in 0..2 {
        restart_vault(&c).await;
        let ran = Instant::now();
        within("unsealed by the unsealer", async {
            while vault.status().sealed {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        // A measurement for the report (issue 10 asks for < 1 s), not an assertion.
        eprintln!(
            "restart {round}: vault unsealed {:?} after its new pod ran (poll {:?})",
            ran.elapsed(),
            VaultAutoUnseal::DEFAULT_POLL_INTERVAL
        );
    }
    h.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn auto_unseal_without_fs_group_leaves_vault_sealed_and_the_pod_says_why() {
    let (h, c, _tmp) = vault_with_keys().await;
    let vault = h.vault().expect("vault");
    apply_yaml(&c, &unsealer(false)).await;
    restart_vault(&c).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "vault");
    let pod = within("crash loop", async {
        loop {
            let list = pods
                .list(&ListParams::default().labels("app.kubernetes.io/name=vault-unsealer"))
                .await
                .expect("list");
            if let Some(p) = list.items.into_iter().find(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|cs| cs.first())
                    .and_then(|cs| cs.state.as_ref())
                    .and_then(|s| s.waiting.as_ref())
                    .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
            }) {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let log = within(
        "logs",
        pods.logs(
            pod.metadata.name.as_deref().expect("name"),
            &LogParams::default(),
        ),
    )
    .await
    .expect("logs");
    assert!(
        log.contains("vault-unsealer: cannot read /vault-keys/unseal-key-0 as uid 100 gid 1000 (file -r--r----- owner 0:0): Permission denied"),
        "{log}"
    );
    assert!(vault.status().sealed, "no readable key, no unseal");
    h.shutdown().await.expect("shutdown");
}

/// The unsealer manifest `vault.auto-unseal` renders for `flavor`, run from `image`, aimed at
/// the preinstalled Vault pod's Service.
fn unsealer_for(flavor: VaultFlavor, image: &str) -> String {
    VaultAutoUnseal {
        flavor,
        namespace: "vault".into(),
        keys_secret: "vault-init-keys".into(),
        vault_image: image.into(),
        vault_addr: "http://vault.vault.svc:8200".into(),
        poll_interval: VaultAutoUnseal::DEFAULT_POLL_INTERVAL,
        unseal_keys: 2,
    }
    .render()
    .expect("render")
}

/// The unsealer pod's log once it contains every one of `needles`.
async fn unsealer_log_with(c: &Client, needles: &[&str]) -> String {
    let pods: Api<Pod> = Api::namespaced(c.clone(), "vault");
    within(&format!("unsealer log with {needles:?}"), async {
        loop {
            let list = pods
                .list(&ListParams::default().labels("app.kubernetes.io/name=vault-unsealer"))
                .await
                .expect("list");
            for p in &list.items {
                if let Ok(log) = pods
                    .logs(
                        p.metadata.name.as_deref().expect("name"),
                        &LogParams::default(),
                    )
                    .await
                    && needles.iter().all(|n| log.contains(n))
                {
                    return log;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Issue 10: with `flavor = "openbao"` the unsealer runs the OpenBao image's `bao` CLI, which
/// reads `BAO_ADDR`; a restarted server is unsealed as with the Vault CLI.
#[tokio::test]
async fn auto_unseal_with_the_bao_cli_and_bao_addr_unseals_a_restarted_vault() {
    let (h, c, _tmp) = vault_with_keys().await;
    let vault = h.vault().expect("vault");
    let text = unsealer_for(VaultFlavor::Openbao, VaultFlavor::Openbao.image());
    assert!(
        text.contains("BAO_ADDR") && text.contains("value: bao"),
        "{text}"
    );
    apply_yaml(&c, &text).await;
    restart_vault(&c).await;
    within("unsealed by the bao unsealer", async {
        while vault.status().sealed {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let log = unsealer_log_with(
        &c,
        &[
            "watching http://vault.vault.svc:8200",
            "vault-unsealer: vault is unsealed",
        ],
    )
    .await;
    assert!(!log.contains("not found"), "{log}");
    h.shutdown().await.expect("shutdown");
}

/// What a real container refuses, the sandbox refuses: the `bao` CLI is not in the
/// hashicorp/vault image, so the script's unseal command fails as busybox sh reports it and
/// Vault stays sealed.
#[tokio::test]
async fn bao_cli_in_the_hashicorp_vault_image_is_not_found_and_vault_stays_sealed() {
    let (h, c, _tmp) = vault_with_keys().await;
    let vault = h.vault().expect("vault");
    apply_yaml(
        &c,
        &unsealer_for(VaultFlavor::Openbao, VaultFlavor::Vault.image()),
    )
    .await;
    restart_vault(&c).await;
    unsealer_log_with(
        &c,
        &[
            "vault-unsealer: vault is sealed, submitting unseal keys",
            "sh: bao: not found",
            "vault-unsealer: submitting unseal-key-0 failed",
            "vault-unsealer: vault is still sealed after the mounted keys",
        ],
    )
    .await;
    assert!(vault.status().sealed, "no CLI, no unseal");
    h.shutdown().await.expect("shutdown");
}

/// HashiCorp's `vault` CLI reads only `VAULT_ADDR`: given only `BAO_ADDR`, the script's wget
/// sees Vault sealed but the CLI dials its default, the unsealer pod's own loopback, and Vault
/// stays sealed with the CLI's error in the log.
#[tokio::test]
async fn vault_cli_given_only_bao_addr_dials_its_own_loopback_and_vault_stays_sealed() {
    let (h, c, _tmp) = vault_with_keys().await;
    let vault = h.vault().expect("vault");
    let text = unsealer_for(VaultFlavor::Vault, VaultFlavor::Vault.image());
    assert!(text.contains("- name: VAULT_ADDR"), "{text}");
    apply_yaml(&c, &text.replace("- name: VAULT_ADDR", "- name: BAO_ADDR")).await;
    restart_vault(&c).await;
    unsealer_log_with(
        &c,
        &[
            "vault-unsealer: vault is sealed, submitting unseal keys",
            "Error writing data to sys/unseal: Put \"https://127.0.0.1:8200/v1/sys/unseal\": dial tcp 127.0.0.1:8200: connect: connection refused",
            "vault-unsealer: submitting unseal-key-0 failed",
        ],
    )
    .await;
    assert!(vault.status().sealed, "the CLI never reached Vault");
    h.shutdown().await.expect("shutdown");
}

/// OpenBao's images link `vault` to `bao` (`ln -s … /bin/vault` in its Dockerfile, since
/// 2.0), so an unsealer still running the `vault` CLI with `VAULT_ADDR` keeps working when its
/// image is switched to OpenBao's: the sandbox accepts what the real image accepts.
#[tokio::test]
async fn vault_cli_in_the_openbao_image_is_bao_and_unseals() {
    let (h, c, _tmp) = vault_with_keys().await;
    let vault = h.vault().expect("vault");
    apply_yaml(
        &c,
        &unsealer_for(VaultFlavor::Vault, VaultFlavor::Openbao.image()),
    )
    .await;
    restart_vault(&c).await;
    within("unsealed by the vault-named bao", async {
        while vault.status().sealed {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let log = unsealer_log_with(&c, &["vault-unsealer: vault is unsealed"]).await;
    assert!(!log.contains("not found"), "{log}");
    h.shutdown().await.expect("shutdown");
}
