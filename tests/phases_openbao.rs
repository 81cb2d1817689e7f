//! Issue 10: `[vault] flavor = "openbao"` end to end. The five phases on the sandbox with the
//! restart proof (`[verify] restart_vault = true`): kubestrap installs the `openbao` chart from
//! OpenBao's repository into namespace `openbao` (release `openbao`, so pod `openbao-0` by the
//! chart's fullname rule), runs its auto-unsealer with the image's `bao` CLI and `BAO_ADDR`,
//! and everything else (init, keys Secret, unseal, KV v2, kubernetes auth, ESO's store,
//! Terraform, verification) works through those names. Once on the emulated Vault, once with
//! the real `bao` server behind the pod (`[sandbox] vault_server`; skips loudly without
//! `KUBESTRAP_VAULT_SERVER`, mandatory under `KUBESTRAP_REQUIRE_VAULT_SERVER=1`).

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Api;
use kube::api::LogParams;
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kubestrap_test_support::{
    Bootstrap, Options, assert_all_done, assert_vault_restarted, finished, kubestrap_bin, runtime,
    sandbox_playbook_copy, workspace_root,
};
use serde_json::Value;

const NS: &str = "openbao";

fn dynamic(client: &kube::Client, ns: Option<&str>, gvk: (&str, &str, &str)) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(gvk.0, gvk.1, gvk.2));
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Bootstraps with `flavor = "openbao"` and the restart proof; returns the fixture and the
/// seal status read through a port-forward to the `openbao` Service.
fn bootstrap_openbao(vault_server: Option<PathBuf>) -> (Bootstrap, Value) {
    let fx = Bootstrap::new(
        kubestrap_bin!(),
        &Options {
            vault_server,
            restart_vault: true,
            vault_extra: "flavor = \"openbao\"\n",
            ..Options::default()
        },
    );
    assert_vault_restarted(&finished(&fx.apply_all_done()));

    let status = runtime().block_on(async {
        let client = fx.client().await;
        // The chart came from OpenBao's repository, named as kubestrap's template names it.
        let repo = dynamic(
            &client,
            Some("flux-system"),
            ("source.toolkit.fluxcd.io", "v1", "HelmRepository"),
        )
        .get("openbao")
        .await
        .expect("HelmRepository flux-system/openbao");
        assert_eq!(
            repo.data["spec"]["url"],
            "https://openbao.github.io/openbao-helm"
        );
        let release = dynamic(
            &client,
            Some(NS),
            ("helm.toolkit.fluxcd.io", "v2", "HelmRelease"),
        )
        .get("openbao")
        .await
        .expect("HelmRelease openbao/openbao");
        assert_eq!(release.data["spec"]["chart"]["spec"]["chart"], "openbao");

        // Objects named by openbao-helm's fullname rule (release `openbao` = fullname).
        let sts: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
        sts.get("openbao")
            .await
            .expect("StatefulSet openbao/openbao");
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        let pod = pods.get("openbao-0").await.expect("pod openbao/openbao-0");
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("app.kubernetes.io/name").map(String::as_str),
            Some("openbao")
        );
        let container = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(container.name, "openbao");
        assert_eq!(
            container.image.as_deref(),
            Some("quay.io/openbao/openbao:2.6.2")
        );
        // Raft storage (OpenBao 2.7 has no `file`), as the chart writes its config.
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
        let cm = cms.get("openbao-config").await.expect("openbao-config");
        assert!(
            cm.data.unwrap_or_default()["extraconfig-from-values.hcl"].contains("storage \"raft\""),
            "standalone config"
        );
        let crb: Api<ClusterRoleBinding> = Api::all(client.clone());
        let binding = crb
            .get("openbao-server-binding")
            .await
            .expect("authDelegator binding");
        assert_eq!(binding.role_ref.name, "system:auth-delegator");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        assert!(
            namespaces.get_opt("vault").await.unwrap().is_none(),
            "nothing went to the vault flavor's namespace"
        );

        // The keys Secret sits beside OpenBao; the unsealer runs `bao` with BAO_ADDR.
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
        secrets.get("vault-init-keys").await.expect("keys Secret");
        let deploys: Api<Deployment> = Api::namespaced(client.clone(), NS);
        let unsealer = deploys.get("vault-unsealer").await.expect("unsealer");
        let uc = &unsealer.spec.unwrap().template.spec.unwrap().containers[0];
        let env = |name: &str| {
            uc.env
                .as_ref()
                .unwrap()
                .iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(
            env("BAO_ADDR").as_deref(),
            Some("http://openbao.openbao.svc:8200")
        );
        assert_eq!(env("UNSEAL_CLI").as_deref(), Some("bao"));
        assert_eq!(env("VAULT_ADDR"), None);
        let unsealer_pod = pods
            .list(&kube::api::ListParams::default().labels("app.kubernetes.io/name=vault-unsealer"))
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
            .expect("unsealer pod");
        let logs = pods
            .logs(
                unsealer_pod.metadata.name.as_deref().unwrap(),
                &LogParams::default(),
            )
            .await
            .unwrap();
        assert!(
            logs.contains("watching http://openbao.openbao.svc:8200")
                && logs.contains("vault-unsealer: vault is unsealed")
                && !logs.contains("not found"),
            "{logs}"
        );

        // ESO's store (provider `vault`) points at OpenBao's Service and is Ready.
        let store = dynamic(
            &client,
            None,
            ("external-secrets.io", "v1", "ClusterSecretStore"),
        )
        .get("vault-backend")
        .await
        .expect("ClusterSecretStore");
        assert_eq!(
            store.data["spec"]["provider"]["vault"]["server"],
            "http://openbao.openbao.svc:8200"
        );
        // Phase 4: the demo app's secret came from OpenBao through ESO.
        let demo: Api<Secret> = Api::namespaced(client.clone(), "demo");
        let s = demo.get("cloudflare-api-token").await.unwrap();
        assert_eq!(s.data.unwrap()["api-token"].0, fx.cloudflare.as_bytes());

        // The port-forward to the Service reaches the server, unsealed after the restart.
        let forward = kubestrap::kube::portforward::to_service(&client, NS, "openbao", 8200)
            .await
            .unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let status: Value = reqwest::get(format!("{}/v1/sys/seal-status", forward.http_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(status["sealed"], false, "{status}");
        assert_eq!(status["initialized"], true, "{status}");
        status
    });

    // A second run changes nothing.
    let _ = fx.assert_second_apply_unchanged(false);
    (fx, status)
}

#[test]
fn five_phases_with_flavor_openbao_on_the_emulator_with_the_restart_proof() {
    let _ = bootstrap_openbao(None);
}

#[test]
fn five_phases_with_flavor_openbao_on_a_real_bao_server_with_the_restart_proof() {
    let Some(server) = kubestrap_test_support::vault_server_or_skip(
        "five_phases_with_flavor_openbao_on_a_real_bao_server_with_the_restart_proof",
    ) else {
        return;
    };
    let (_fx, status) = bootstrap_openbao(Some(server));
    // The real server answered through the pod's port-forward.
    kubestrap_test_support::assert_real_openbao(&status);
}

/// Stops the sandbox an `apply` of a shipped playbook left running, pass or fail.
struct SandboxDown {
    root: PathBuf,
    playbook: &'static str,
}

impl Drop for SandboxDown {
    fn drop(&mut self) {
        let _ = kubestrap_test_support::run(
            &kubestrap_bin!(),
            &["sandbox", "down", "-p", self.playbook],
            &self.root,
            &[],
        );
    }
}

/// The shipped example `playbooks/sandbox-openbao.toml` bootstraps as written (its restart
/// proof included), with OpenBao's names.
#[test]
fn shipped_sandbox_openbao_playbook_bootstraps_with_the_restart_proof() {
    const PLAYBOOK: &str = "playbooks/sandbox-openbao.toml";
    let copy = sandbox_playbook_copy();
    let root = copy.path();
    std::fs::copy(workspace_root().join(PLAYBOOK), root.join(PLAYBOOK)).expect("copy");
    let _down = SandboxDown {
        root: root.to_path_buf(),
        playbook: PLAYBOOK,
    };
    let out = kubestrap_test_support::run(
        &kubestrap_bin!(),
        &["apply", "-p", PLAYBOOK, "--output", "json"],
        root,
        &[
            ("GITHUB_TOKEN", "ghp_shipped_openbao_example"),
            ("CLOUDFLARE_API_TOKEN", "cf_shipped_openbao_example"),
        ],
    );
    assert_vault_restarted(&assert_all_done(&out));
    let kubeconfig = root.join("playbooks/.kubestrap/sandbox-openbao/sandbox/kubeconfig");
    runtime().block_on(async {
        let client = kubestrap_test_support::kube_client_from(&kubeconfig).await;
        let pods: Api<Pod> = Api::namespaced(client, NS);
        pods.get("openbao-0").await.expect("pod openbao/openbao-0");
    });
}
