//! Runs the auto-unsealer workload kubestrap deploys (`phases/1-infrastructure/
//! vault-auto-unseal.yaml`): while its Deployment (label `app.kubernetes.io/name:
//! vault-unsealer`) has a running pod, every `UNSEAL_INTERVAL` seconds it checks Vault at
//! `VAULT_ADDR` and, when sealed, submits the keys mounted from the Secret of its `keys`
//! volume (only the volume's `items`, as the kubelet would mount them) through
//! `sys/unseal` over HTTP. No unsealer, no unseal: Vault stays sealed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{Value, json};

use super::kit;
use super::vault::VaultHttp;
use crate::controllers::{Action, Controller};
use crate::server::Shared;
use crate::store::{ObjectKey, StoreEvent};

const DEPLOY: &str = "apps/deployments";
const LABEL: &str = "vault-unsealer";

/// The simulated unsealer loop.
pub struct Unsealer {
    vault: VaultHttp,
}

impl Unsealer {
    /// An unsealer talking to `vault`.
    pub fn new(vault: VaultHttp) -> Self {
        Self { vault }
    }
}

fn env(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_string))
}

/// The keys the pod would see: `(secret name, key names)`; empty names = every
/// `unseal-key-*` entry of the Secret.
fn mounted_keys(spec: &Value) -> Option<(String, Vec<String>)> {
    let vol = spec["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["secret"]["secretName"].is_string())?;
    let name = vol["secret"]["secretName"].as_str()?.to_string();
    let items = vol["secret"]["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["key"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Some((name, items))
}

#[async_trait]
impl Controller for Unsealer {
    fn name(&self) -> &'static str {
        "vault-unsealer"
    }

    fn watches(&self) -> Vec<String> {
        vec![DEPLOY.into()]
    }

    fn map(&self, _shared: &Shared, e: &StoreEvent) -> Vec<ObjectKey> {
        if e.object["metadata"]["labels"]["app.kubernetes.io/name"] == LABEL {
            vec![e.key.clone()]
        } else {
            Vec::new()
        }
    }

    async fn reconcile(&self, shared: &Arc<Shared>, key: &ObjectKey) -> Action {
        let Some(d) = kit::get(shared, DEPLOY, &key.namespace, &key.name) else {
            return Action::Done;
        };
        if d["metadata"]["labels"]["app.kubernetes.io/name"] != LABEL
            || d["metadata"]["deletionTimestamp"].is_string()
        {
            return Action::Done;
        }
        let spec = &d["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
        let interval = env(container, "UNSEAL_INTERVAL")
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .map_or(Duration::from_secs(10), Duration::from_secs_f64);
        // The loop runs in the pod: only while one is Running.
        let selector = d["spec"]["selector"]["matchLabels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let running = kit::list(shared, "/pods", Some(&key.namespace))
            .iter()
            .any(|p| {
                selector
                    .iter()
                    .all(|(k, v)| p["metadata"]["labels"][k] == *v)
                    && p["status"]["phase"] == "Running"
                    && p["metadata"]["deletionTimestamp"].is_null()
            });
        let status = self.vault_status();
        if !running || !status.0 || !status.1 {
            return Action::RequeueAfter(interval);
        }
        let addr = env(container, "VAULT_ADDR").unwrap_or_default();
        if let Err(e) = self.vault.resolve(shared, &addr, &key.namespace) {
            tracing::info!(error = %e, "vault-unsealer: vault not reachable");
            return Action::RequeueAfter(interval);
        }
        let Some((secret_name, items)) = mounted_keys(spec) else {
            return Action::RequeueAfter(interval);
        };
        let Some(secret) = kit::get(shared, "/secrets", &key.namespace, &secret_name) else {
            tracing::info!("vault-unsealer: no unseal keys mounted yet");
            return Action::RequeueAfter(interval);
        };
        let mut names: Vec<String> = secret["data"]
            .as_object()
            .map(|m| {
                m.keys()
                    .filter(|k| k.starts_with("unseal-key-"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !items.is_empty() {
            names.retain(|n| items.contains(n));
        }
        names.sort();
        tracing::info!(
            keys = names.len(),
            "vault-unsealer: vault is sealed, submitting unseal keys"
        );
        for n in names {
            let Some(raw) = secret["data"][&n]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
            else {
                continue;
            };
            match self
                .vault
                .call("PUT", "sys/unseal", None, Some(&json!({"key": raw.trim()})))
                .await
            {
                Ok((200, body)) if body["sealed"] == false => {
                    tracing::info!("vault-unsealer: vault is unsealed");
                    break;
                }
                Ok((200, _)) => {}
                Ok((code, _)) => {
                    tracing::info!(code, key = %n, "vault-unsealer: submitting a key failed")
                }
                Err(e) => tracing::info!(error = %e, "vault-unsealer: vault not reachable"),
            }
        }
        Action::RequeueAfter(interval)
    }
}

impl Unsealer {
    /// `(initialized, sealed)` as `vault status` would learn them.
    fn vault_status(&self) -> (bool, bool) {
        let s = self.vault.status();
        (s.initialized, s.sealed)
    }
}
