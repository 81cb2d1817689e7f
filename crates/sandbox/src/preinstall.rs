//! Objects that installers would have created, for tests that start "preinstalled" without
//! the add-ons' chart renderer. (`sandbox up --preinstall vault` renders the same chart from
//! `assets/charts/vault.yaml` through `addons`, the objects its helm-controller creates.)
//!
//! [`VAULT`] is what the `hashicorp/vault` chart creates in standalone mode for release
//! `vault` in namespace `vault` (server only): the `vault-0` pod comes from the
//! StatefulSet, and `vault:8200` is what `kubectl port-forward svc/vault` resolves.
//! Apply it with [`SandboxHandle::apply_manifest`](super::SandboxHandle::apply_manifest).

/// The Kubernetes objects of a standalone Vault as the chart leaves them.
pub const VAULT: &str = include_str!("assets/preinstalled-vault.yaml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_objects_parse_as_typed_kubernetes_objects() {
        use serde::Deserialize;
        let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(VAULT)
            .map(|d| serde_json::Value::deserialize(d).expect("yaml"))
            .filter(|v| !v.is_null())
            .collect();
        assert_eq!(docs.len(), 7);
        let sts = docs
            .iter()
            .find(|d| d["kind"] == "StatefulSet")
            .expect("sts");
        let typed: k8s_openapi::api::apps::v1::StatefulSet =
            serde_json::from_value(sts.clone()).expect("typed");
        assert_eq!(
            typed.spec.expect("spec").service_name.as_deref(),
            Some("vault-internal")
        );
    }
}
