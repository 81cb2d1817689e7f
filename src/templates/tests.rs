use serde_json::Value;

use super::*;
use crate::kube::apply::parse_manifests;

fn flux_sync() -> FluxSync {
    FluxSync {
        url: "https://github.com/example/fleet".to_owned(),
        branch: "main".to_owned(),
        path: "./clusters/sandbox".to_owned(),
        secret_name: "flux-system".to_owned(),
        namespace: "flux-system".to_owned(),
        name: "flux-system".to_owned(),
        interval: std::time::Duration::from_secs(60),
    }
}

fn vault_auto_unseal() -> VaultAutoUnseal {
    VaultAutoUnseal {
        flavor: crate::playbook::VaultFlavor::Vault,
        namespace: "vault".to_owned(),
        keys_secret: "vault-init-keys".to_owned(),
        vault_image: "hashicorp/vault:1.17.2".to_owned(),
        vault_addr: "http://vault.vault.svc:8200".to_owned(),
        poll_interval: VaultAutoUnseal::DEFAULT_POLL_INTERVAL,
        unseal_keys: 3,
    }
}

fn cluster_secret_store() -> ClusterSecretStore {
    ClusterSecretStore {
        name: "vault".to_owned(),
        vault_server: "http://vault.vault.svc:8200".to_owned(),
        kv_mount: "secret".to_owned(),
        auth_mount: "kubernetes".to_owned(),
        role: "eso".to_owned(),
        eso_namespace: "external-secrets".to_owned(),
        eso_service_account: "external-secrets".to_owned(),
    }
}

fn git_external_secret() -> GitExternalSecret {
    GitExternalSecret {
        name: "flux-system-git".to_owned(),
        namespace: "flux-system".to_owned(),
        store_name: "vault".to_owned(),
        refresh_interval: "1h".to_owned(),
        target_name: "flux-system-git".to_owned(),
        vault_key: "bootstrap/github".to_owned(),
        username: "git".to_owned(),
        password_property: "password".to_owned(),
    }
}

/// Every template rendered with a sample context, as JSON objects.
fn rendered() -> Vec<(&'static str, Vec<Value>)> {
    let all = [
        (FluxSync::TEMPLATE.path, flux_sync().render()),
        (
            VaultRelease::TEMPLATE.path,
            VaultRelease {
                flavor: crate::playbook::VaultFlavor::Vault,
                namespace: "vault".to_owned(),
                release: "vault".to_owned(),
                flux_namespace: "flux-system".to_owned(),
                repository: crate::playbook::Vault::default().chart_repo,
                chart_version: "0.28.1".to_owned(),
                static_seal: None,
            }
            .render(),
        ),
        (
            EsoRelease::TEMPLATE.path,
            EsoRelease {
                namespace: "external-secrets".to_owned(),
                release: "external-secrets".to_owned(),
                flux_namespace: "flux-system".to_owned(),
                service_account: "external-secrets".to_owned(),
                repository: crate::playbook::ExternalSecrets::default().chart_repo,
                chart_version: "1.0.0".to_owned(),
            }
            .render(),
        ),
        (VaultAutoUnseal::TEMPLATE.path, vault_auto_unseal().render()),
        (
            ClusterSecretStore::TEMPLATE.path,
            cluster_secret_store().render(),
        ),
        (
            GitExternalSecret::TEMPLATE.path,
            git_external_secret().render(),
        ),
    ];
    assert_eq!(all.len(), ALL.len(), "a template has no rendering test");
    all.into_iter()
        .map(|(path, text)| {
            let text = text.unwrap_or_else(|e| panic!("{path}: {e}"));
            let objects = parse_manifests(&text)
                .unwrap_or_else(|e| panic!("{path}: {e}"))
                .into_iter()
                .map(|o| serde_json::to_value(o).unwrap())
                .collect();
            (path, objects)
        })
        .collect()
}

/// The objects of a rendered manifest, as JSON.
fn values_of(text: &str) -> Vec<Value> {
    parse_manifests(text)
        .unwrap()
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn every_template_renders_into_named_objects() {
    for (path, objects) in rendered() {
        assert!(!objects.is_empty(), "{path} rendered no object");
        for o in &objects {
            for field in ["apiVersion", "kind"] {
                assert!(
                    o[field].as_str().is_some_and(|s| !s.is_empty()),
                    "{path}: {o}"
                );
            }
            assert!(
                o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{path}: {o}"
            );
        }
    }
}

#[test]
fn flux_sync_matches_flux_bootstrap() {
    let all = rendered();
    let objects = &all[0].1;
    let repo = find(objects, "GitRepository");
    assert_eq!(repo["metadata"]["name"], "flux-system");
    assert_eq!(repo["metadata"]["namespace"], "flux-system");
    assert_eq!(repo["spec"]["interval"], "1m0s");
    assert_eq!(repo["spec"]["ref"]["branch"], "main");
    assert_eq!(repo["spec"]["secretRef"]["name"], "flux-system");
    let ks = find(objects, "Kustomization");
    assert_eq!(ks["spec"]["interval"], "10m0s");
    assert_eq!(ks["spec"]["prune"], true);
    assert_eq!(ks["spec"]["path"], "./clusters/sandbox");
    assert_eq!(ks["spec"]["sourceRef"]["name"], "flux-system");
}

#[test]
fn vault_values_avoid_the_sealed_readiness_deadlock() {
    let all = rendered();
    let release = find(&all[1].1, "HelmRelease");
    assert_eq!(release["spec"]["chart"]["spec"]["version"], "0.28.1");
    let server = &release["spec"]["values"]["server"];
    let probe = server["readinessProbe"]["path"].as_str().unwrap();
    assert!(
        probe.contains("sealedcode=204") && probe.contains("uninitcode=204"),
        "{probe}"
    );
    assert_eq!(server["service"]["publishNotReadyAddresses"], true);
    let eso = find(&all[2].1, "HelmRelease");
    assert_eq!(eso["spec"]["values"]["installCRDs"], true);
    assert_eq!(eso["spec"]["chart"]["spec"]["version"], "1.0.0");
}

#[test]
fn unsealer_has_least_privilege_and_mounts_only_the_unseal_shares() {
    let all = rendered();
    let objects = &all[3].1;
    let role = find(objects, "Role");
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups":[""],"resources":["secrets"],"resourceNames":["vault-init-keys"],"verbs":["get"]}])
    );
    let deploy = find(objects, "Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["serviceAccountName"], "vault-unsealer");
    let items = &pod["volumes"][0]["secret"]["items"];
    assert_eq!(items.as_array().unwrap().len(), 3);
    assert_eq!(items[2]["key"], "unseal-key-2");
    let script = pod["containers"][0]["args"][0].as_str().unwrap();
    // The seal status is polled over HTTP (busybox wget: cheap at a sub-second interval);
    // the keys still go through the Vault CLI from their files.
    assert!(
        script.contains("/v1/sys/seal-status") && script.contains("key=@\"$key\""),
        "{script}"
    );
    assert_eq!(pod["containers"][0]["image"], "hashicorp/vault:1.17.2");
    assert_eq!(pod["containers"][0]["env"][1]["value"], "0.5");
}

/// On a real node the kubelet writes the keys root-owned with the volume's mode: uid 100 reads
/// them only through a group the pod gets from fsGroup (issue 9: a restarted Vault stayed
/// sealed because the unsealer could not read 0400 root:root keys, and hid the error).
#[test]
fn unsealer_can_read_its_keys_on_a_real_node_and_shows_its_errors() {
    let all = rendered();
    let deploy = find(&all[3].1, "Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    let sc = &pod["securityContext"];
    assert_eq!(sc["runAsUser"], 100);
    assert_eq!(sc["runAsGroup"], 1000);
    assert_eq!(
        sc["fsGroup"], 1000,
        "the key files' group must be the pod's"
    );
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(pod["volumes"][0]["secret"]["defaultMode"], 0o440);
    let script = pod["containers"][0]["args"][0].as_str().unwrap();
    assert!(
        !script.contains("2>&1 >/dev/null") && !script.contains(">/dev/null 2>&1"),
        "the script must not swallow the CLI's errors: {script}"
    );
    assert!(
        script.contains("[ ! -r \"$key\" ]") && script.contains("exit 1"),
        "{script}"
    );
}

#[test]
fn store_and_external_secret_shapes() {
    let all = rendered();
    let store = find(&all[4].1, "ClusterSecretStore");
    let vault = &store["spec"]["provider"]["vault"];
    assert_eq!(vault["path"], "secret");
    assert_eq!(vault["version"], "v2");
    assert_eq!(
        vault["auth"]["kubernetes"]["serviceAccountRef"],
        serde_json::json!({"name":"external-secrets","namespace":"external-secrets"})
    );
    let binding = find(&all[4].1, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], "system:auth-delegator");

    let es = find(&all[5].1, "ExternalSecret");
    assert_eq!(es["apiVersion"], "external-secrets.io/v1");
    assert_eq!(es["spec"]["refreshInterval"], "1h");
    assert_eq!(es["spec"]["target"]["creationPolicy"], "Owner");
    assert_eq!(es["spec"]["target"]["deletionPolicy"], "Retain");
    let keys: Vec<&str> = es["spec"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["secretKey"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["password"]);
    let template = &es["spec"]["target"]["template"];
    assert_eq!(template["engineVersion"], "v2");
    assert_eq!(template["mergePolicy"], "Replace");
    assert_eq!(template["data"]["username"], "git");
    assert_eq!(template["data"]["password"], "{{ .password }}");
    for d in es["spec"]["data"].as_array().unwrap() {
        let r = &d["remoteRef"];
        assert_eq!(r["key"], "bootstrap/github");
        assert_eq!(r["conversionStrategy"], "Default");
        assert_eq!(r["decodingStrategy"], "None");
        assert_eq!(r["metadataPolicy"], "None");
    }
}

#[test]
fn values_are_escaped_and_cannot_change_the_structure() {
    let mut ctx = flux_sync();
    ctx.url = "https://example.com/a\"b\\c\nkind: Secret".to_owned();
    let text = ctx.render().unwrap();
    let objects = parse_manifests(&text).unwrap();
    assert_eq!(objects.len(), 2);
    let repo = serde_json::to_value(&objects[0]).unwrap();
    assert_eq!(
        repo["spec"]["url"],
        "https://example.com/a\"b\\c\nkind: Secret"
    );
}

const T: Template = Template {
    path: "test.yaml",
    source: "a: \"{{ one }}\"\nb: \"x-{{two}}-y\"\n",
};

#[test]
fn missing_unused_and_unquoted_placeholders_fail() {
    let ok = render(&T, &[("one", "1".into()), ("two", "2".into())]).unwrap();
    assert_eq!(ok, "a: \"1\"\nb: \"x-2-y\"\n");
    assert_eq!(
        render(&T, &[("one", "1".into())]).unwrap_err().to_string(),
        "template test.yaml: no value for {{ two }}: add it to the template's context"
    );
    assert_eq!(
        render(
            &T,
            &[
                ("one", "1".into()),
                ("two", "2".into()),
                ("three", "3".into())
            ]
        )
        .unwrap_err()
        .to_string(),
        "template test.yaml: value \"three\" is not used by the template: remove it from the context or use it"
    );
    let unquoted = Template {
        path: "u.yaml",
        source: "a: {{ one }}\n",
    };
    assert_eq!(
        render(&unquoted, &[("one", "1".into())])
            .unwrap_err()
            .to_string(),
        "template u.yaml line 1: {{ one }} must be inside a double-quoted string"
    );
    let open = Template {
        path: "o.yaml",
        source: "a: \"{{ one\"\n",
    };
    assert!(matches!(
        render(&open, &[("one", "1".into())]),
        Err(TemplateError::Syntax { line: 1, .. })
    ));
}

#[test]
fn the_example_module_takes_the_fixture_variables() {
    for v in [
        "variable \"secrets\"",
        "variable \"mount\"",
        "vault_kv_secret_v2",
        "sensitive   = true",
    ] {
        assert!(EXAMPLE_SECRETS_MODULE.contains(v), "{v}");
    }
}

#[test]
fn go_duration_prints_like_go() {
    use std::time::Duration;
    assert_eq!(go_duration(Duration::from_secs(60)), "1m0s");
    assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
    assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    assert_eq!(go_duration(Duration::from_secs(45)), "45s");
    assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
    assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
    assert_eq!(go_duration(Duration::ZERO), "0s");
}

/// Regression (issue 9): the templates hard-coded `vault`, `external-secrets`, `flux-system`
/// and `1m0s` while the steps waited on the playbook's names.
#[test]
fn templates_honour_every_playbook_name() {
    let text = FluxSync {
        namespace: "gitops".to_owned(),
        name: "gitops".to_owned(),
        interval: std::time::Duration::from_secs(300),
        secret_name: "git-bootstrap".to_owned(),
        ..flux_sync()
    }
    .render()
    .unwrap();
    assert!(!text.contains("flux-system"), "{text}");
    let objects: Vec<Value> = values_of(&text);
    let repo = find(&objects, "GitRepository");
    assert_eq!(repo["metadata"]["name"], "gitops");
    assert_eq!(repo["metadata"]["namespace"], "gitops");
    assert_eq!(repo["spec"]["interval"], "5m0s");
    assert_eq!(repo["spec"]["secretRef"]["name"], "git-bootstrap");
    assert_eq!(
        find(&objects, "Kustomization")["spec"]["sourceRef"]["name"],
        "gitops"
    );

    let text = VaultRelease {
        flavor: crate::playbook::VaultFlavor::Vault,
        namespace: "secrets-mgmt".to_owned(),
        release: "bank".to_owned(),
        flux_namespace: "gitops".to_owned(),
        repository: "https://example.test".to_owned(),
        chart_version: "0.30.0".to_owned(),
        static_seal: None,
    }
    .render()
    .unwrap();
    assert!(
        !text.contains("flux-system") && !text.contains("name: vault"),
        "{text}"
    );
    let objects: Vec<Value> = values_of(&text);
    assert_eq!(
        find(&objects, "Namespace")["metadata"]["name"],
        "secrets-mgmt"
    );
    let hr = find(&objects, "HelmRelease");
    assert_eq!(hr["metadata"]["name"], "bank");
    assert_eq!(hr["metadata"]["namespace"], "secrets-mgmt");
    assert_eq!(hr["spec"]["releaseName"], "bank");
    assert_eq!(
        hr["spec"]["chart"]["spec"]["sourceRef"]["namespace"],
        "gitops"
    );
    assert_eq!(
        find(&objects, "HelmRepository")["metadata"]["namespace"],
        "gitops"
    );

    let text = EsoRelease {
        namespace: "ops".to_owned(),
        release: "eso".to_owned(),
        flux_namespace: "gitops".to_owned(),
        service_account: "eso-sa".to_owned(),
        repository: "https://example.test".to_owned(),
        chart_version: "0.16.2".to_owned(),
    }
    .render()
    .unwrap();
    let objects: Vec<Value> = values_of(&text);
    assert_eq!(find(&objects, "Namespace")["metadata"]["name"], "ops");
    let hr = find(&objects, "HelmRelease");
    assert_eq!(hr["metadata"]["name"], "eso");
    assert_eq!(hr["spec"]["releaseName"], "eso");
    assert_eq!(hr["spec"]["values"]["serviceAccount"]["name"], "eso-sa");

    let text = VaultAutoUnseal {
        namespace: "secrets-mgmt".to_owned(),
        ..vault_auto_unseal()
    }
    .render()
    .unwrap();
    assert!(!text.contains("namespace: vault"), "{text}");
    assert_eq!(text.matches("namespace: secrets-mgmt").count(), 5, "{text}");
}

/// The OpenBao release with the flavor's defaults (namespace and release `openbao`).
fn openbao_release(static_seal: Option<super::StaticSealMount>) -> VaultRelease {
    use crate::playbook::VaultFlavor;
    VaultRelease {
        flavor: VaultFlavor::Openbao,
        namespace: "openbao".to_owned(),
        release: "openbao".to_owned(),
        flux_namespace: "flux-system".to_owned(),
        repository: VaultFlavor::Openbao.default_chart_repo().to_owned(),
        chart_version: VaultFlavor::Openbao.default_chart_version().to_owned(),
        static_seal,
    }
}

/// `[vault] flavor = "openbao"`: the OpenBao chart from its own repository, the same values
/// (openbao-helm keeps vault-helm's keys), and an unsealer running the image's `bao` CLI with
/// `BAO_ADDR`, the variable that CLI reads.
#[test]
fn openbao_flavor_renders_the_openbao_chart_and_the_bao_cli() {
    use crate::playbook::VaultFlavor;
    let text = openbao_release(None).render().unwrap();
    assert!(!text.contains("hashicorp"), "{text}");
    let vault_text = VaultRelease {
        flavor: VaultFlavor::Vault,
        namespace: "vault".to_owned(),
        release: "vault".to_owned(),
        flux_namespace: "flux-system".to_owned(),
        repository: VaultFlavor::Vault.default_chart_repo().to_owned(),
        chart_version: "0.30.0".to_owned(),
        static_seal: None,
    }
    .render()
    .unwrap();
    assert!(
        !vault_text.contains("raft"),
        "Vault keeps its chart's default"
    );
    let objects: Vec<Value> = values_of(&text);
    let repo = find(&objects, "HelmRepository");
    assert_eq!(repo["metadata"]["name"], "openbao");
    assert_eq!(
        repo["spec"]["url"],
        "https://openbao.github.io/openbao-helm"
    );
    let hr = find(&objects, "HelmRelease");
    assert_eq!(hr["spec"]["chart"]["spec"]["chart"], "openbao");
    assert_eq!(hr["spec"]["chart"]["spec"]["version"], "0.29.2");
    assert_eq!(hr["spec"]["chart"]["spec"]["sourceRef"]["name"], "openbao");
    assert_eq!(
        hr["spec"]["values"]["server"]["authDelegator"]["enabled"],
        true
    );
    let config = hr["spec"]["values"]["server"]["standalone"]["config"]
        .as_str()
        .expect("openbao gets its standalone config");
    assert!(
        config.contains("storage \"raft\"") && !config.contains("\"file\""),
        "{config}"
    );
    assert_eq!(
        hr["spec"]["values"]["server"]["standalone"]["enabled"],
        true
    );
    assert!(
        hr["spec"]["values"]["server"]["readinessProbe"]["path"]
            .as_str()
            .unwrap()
            .contains("sealedcode=204")
    );

    let text = VaultAutoUnseal {
        flavor: VaultFlavor::Openbao,
        namespace: "openbao".to_owned(),
        vault_image: VaultFlavor::Openbao.image().to_owned(),
        vault_addr: "http://openbao.openbao.svc:8200".to_owned(),
        ..vault_auto_unseal()
    }
    .render()
    .unwrap();
    let objects: Vec<Value> = values_of(&text);
    let container = &find(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "quay.io/openbao/openbao:2.6.2");
    let env = |name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(
        env("BAO_ADDR"),
        Some("http://openbao.openbao.svc:8200".into())
    );
    assert_eq!(env("VAULT_ADDR"), None);
    assert_eq!(env("UNSEAL_CLI"), Some("bao".into()));
    let script = container["args"][0].as_str().unwrap();
    assert!(
        script.contains("\"$UNSEAL_CLI\" write sys/unseal") && !script.contains("vault write"),
        "{script}"
    );
}

/// `[vault] seal = "static"`: the key Secret mounted read-only into the server pod through
/// the chart's `server.volumes`/`server.volumeMounts`, and the seal stanza in the server's
/// configuration reading the mounted file.
#[test]
fn static_seal_mounts_the_key_secret_and_adds_the_seal_stanza() {
    let text = openbao_release(Some(super::StaticSealMount {
            secret: "openbao-static-seal".to_owned(),
            volume: "static-seal-key".to_owned(),
            mount_dir: "/openbao/userconfig/openbao-static-seal".to_owned(),
            stanza: "seal \"static\" {\n  current_key_id = \"k\"\n  current_key = \"file:///openbao/userconfig/openbao-static-seal/key\"\n}\n".to_owned(),
    }))
    .render()
    .unwrap();
    let objects: Vec<Value> = values_of(&text);
    let server = &find(&objects, "HelmRelease")["spec"]["values"]["server"];
    assert_eq!(server["volumes"][0]["name"], "static-seal-key");
    assert_eq!(
        server["volumes"][0]["secret"]["secretName"],
        "openbao-static-seal"
    );
    assert_eq!(server["volumeMounts"][0]["name"], "static-seal-key");
    assert_eq!(
        server["volumeMounts"][0]["mountPath"],
        "/openbao/userconfig/openbao-static-seal"
    );
    assert_eq!(server["volumeMounts"][0]["readOnly"], true);
    let config = server["standalone"]["config"].as_str().unwrap();
    assert!(
        config.contains("storage \"raft\"")
            && config.contains("seal \"static\"")
            && config.contains("file:///openbao/userconfig/openbao-static-seal/key"),
        "{config}"
    );
}
