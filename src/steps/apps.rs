//! Phase 4: applications reconcile and their secrets sync.

use ::kube::ResourceExt;
use ::kube::api::{Api, ListParams};
use ::kube::core::DynamicObject;
use k8s_openapi::api::core::v1::Event;
use serde::Serialize;
use serde_json::Value;

use super::support::checks::exists_with;
use super::support::{
    ClusterContext, StepWaits, cluster_secret_store, external_secret, kustomization, ready_state,
    step_identity,
};
use crate::engine::{Action, Step, StepContext, StepError, StepOutcome, Verified};
use crate::kube::ConditionSpec;
use crate::playbook::{HumanDuration, LoadedPlaybook};

/// `namespace/name` -> (namespace, name).
fn split(k: &str) -> (&str, &str) {
    k.split_once('/').unwrap_or(("flux-system", k))
}

/// `apps.reconcile`: the root and the named Kustomizations are Ready.
#[derive(Debug, Clone, Serialize)]
pub struct AppsReconcile {
    /// `namespace/name` of every Kustomization to wait for, root first.
    pub kustomizations: Vec<String>,
    /// Wait limit.
    pub timeout: HumanDuration,
}

impl AppsReconcile {
    /// From `[apps]` and `[flux]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let p = &pb.playbook;
        let ns = &p.flux.namespace;
        // The root Kustomization is named after Flux's namespace, as flux.source names it.
        let mut kustomizations = vec![format!("{ns}/{ns}")];
        kustomizations.extend(p.apps.kustomizations.iter().map(|k| {
            if k.contains('/') {
                k.clone()
            } else {
                format!("{ns}/{k}")
            }
        }));
        Self {
            kustomizations,
            timeout: p.timeouts.reconcile,
        }
    }

    fn actions(&self) -> Vec<Action> {
        self.kustomizations
            .iter()
            .map(|k| {
                Action::run(format!(
                    "wait for Kustomization {k} Ready (timeout {})",
                    self.timeout
                ))
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Step for AppsReconcile {
    step_identity!("apps.reconcile");

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        Ok(self.actions())
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let waits = StepWaits::new(ctx, ctx.kube().await?, self.timeout);
        let mut revisions = serde_json::Map::new();
        for k in &self.kustomizations {
            let (ns, name) = split(k);
            let found = waits.ready(&kustomization(), Some(ns), name).await?;
            let rev = found
                .data
                .pointer("/status/lastAppliedRevision")
                .cloned()
                .unwrap_or(Value::Null);
            revisions.insert(k.clone(), rev);
        }
        Ok(StepOutcome {
            changed: false,
            ready: true,
            outputs: Value::Object(revisions),
        })
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        let client = ctx.kube().await?;
        for k in &self.kustomizations {
            let (ns, name) = split(k);
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), ns, &kustomization());
            let what = format!("Kustomization {k}");
            let ready = exists_with(&api, name, &what, &ConditionSpec::is_true("Ready")).await?;
            if ready != Verified::Holds {
                return Ok(ready);
            }
        }
        Ok(Verified::Holds)
    }
}

/// `apps.secrets-synced`: every ExternalSecret is `SecretSynced`; failures are diagnosed (store
/// not ready vs value missing in Vault).
#[derive(Debug, Clone, Serialize)]
pub struct AppsSecretsSynced {
    /// Namespaces to check (empty: all).
    pub namespaces: Vec<String>,
    /// Wait limit.
    pub timeout: HumanDuration,
    /// KV mount, to name the full Vault path in diagnoses.
    pub kv_mount: String,
}

impl AppsSecretsSynced {
    /// From `[apps]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let p = &pb.playbook;
        Self {
            namespaces: p.apps.external_secret_namespaces.clone(),
            timeout: p.timeouts.secret_sync,
            kv_mount: p.vault.kv_mount.clone(),
        }
    }

    fn actions(&self) -> Vec<Action> {
        let scope = if self.namespaces.is_empty() {
            "in every namespace".to_owned()
        } else {
            format!("in {}", self.namespaces.join(", "))
        };
        vec![Action::run(format!("wait for every ExternalSecret {scope} SecretSynced (timeout {})", self.timeout))
            .with_detail("a failure names the ExternalSecret and says whether the store or the Vault value is the problem")]
    }
}

/// Why an ExternalSecret does not sync, told apart from ESO's status, events and the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnosis {
    /// The ClusterSecretStore / SecretStore is not Ready (ESO cannot log in to Vault).
    StoreNotReady(String),
    /// Vault refused the read (403): the policy does not cover the path.
    AuthDenied,
    /// The path or property does not exist in Vault.
    KeyMissing,
    /// Something else; ESO's own words.
    Other,
}

/// Classifies ESO's messages (condition message and events) for one ExternalSecret.
#[must_use]
pub fn classify(store_ready: Result<(), String>, messages: &[String]) -> Diagnosis {
    if let Err(status) = store_ready {
        return Diagnosis::StoreNotReady(status);
    }
    let text = messages.join(" ").to_ascii_lowercase();
    if text.contains("permission denied") || text.contains("403") || text.contains("forbidden") {
        Diagnosis::AuthDenied
    } else if text.contains("not found")
        || text.contains("404")
        || text.contains("does not exist")
        || text.contains("missing")
        || text.contains("no secret")
    {
        Diagnosis::KeyMissing
    } else if text.contains("store") && (text.contains("not ready") || text.contains("invalid")) {
        Diagnosis::StoreNotReady("the store reports an error".into())
    } else {
        Diagnosis::Other
    }
}

impl AppsSecretsSynced {
    async fn list(&self, ctx: &StepContext) -> Result<Vec<DynamicObject>, StepError> {
        let client = ctx.kube().await?;
        let mut out = Vec::new();
        if self.namespaces.is_empty() {
            let api: Api<DynamicObject> = Api::all_with(client, &external_secret());
            out = api
                .list(&ListParams::default())
                .await
                .map_err(|e| StepError::classify("list ExternalSecrets", e))?
                .items;
        } else {
            for ns in &self.namespaces {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), ns, &external_secret());
                out.extend(
                    api.list(&ListParams::default())
                        .await
                        .map_err(|e| StepError::classify("list ExternalSecrets", e))?
                        .items,
                );
            }
        }
        Ok(out)
    }

    /// Explains why `es` is not synced: store state, ESO's condition, events, Vault path.
    async fn diagnose(&self, ctx: &StepContext, es: &DynamicObject) -> String {
        let ns = es.namespace().unwrap_or_default();
        let name = es.name_any();
        let client = match ctx.kube().await {
            Ok(c) => c,
            Err(e) => return e.to_string(),
        };
        let current =
            Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &external_secret())
                .get_opt(&name)
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| es.clone());
        let value = serde_json::to_value(&current).unwrap_or_default();
        let (_, status) = ready_state(&value);
        let mut messages = vec![status.clone()];
        if let Ok(events) = Api::<Event>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
        {
            messages.extend(
                events
                    .items
                    .iter()
                    .filter(|e| e.involved_object.name.as_deref() == Some(name.as_str()))
                    .filter_map(|e| {
                        e.message
                            .clone()
                            .map(|m| format!("{}: {m}", e.reason.clone().unwrap_or_default()))
                    }),
            );
        }
        let store_kind = value
            .pointer("/spec/secretStoreRef/kind")
            .and_then(Value::as_str)
            .unwrap_or("SecretStore");
        let store_name = value
            .pointer("/spec/secretStoreRef/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let store_ready = if store_kind == "ClusterSecretStore" {
            match Api::<DynamicObject>::all_with(client, &cluster_secret_store())
                .get_opt(store_name)
                .await
            {
                Ok(Some(s)) => {
                    let (ok, st) = ready_state(&serde_json::to_value(&s).unwrap_or_default());
                    if ok {
                        Ok(())
                    } else {
                        Err(format!("ClusterSecretStore {store_name}: {st}"))
                    }
                }
                Ok(None) => Err(format!("ClusterSecretStore {store_name} does not exist")),
                Err(e) => Err(format!(
                    "ClusterSecretStore {store_name} could not be read: {e}"
                )),
            }
        } else {
            Ok(())
        };
        let paths: Vec<String> = value
            .pointer("/spec/data")
            .and_then(Value::as_array)
            .map(|d| {
                d.iter()
                    .map(|x| {
                        let key = x
                            .pointer("/remoteRef/key")
                            .and_then(Value::as_str)
                            .unwrap_or("?");
                        match x.pointer("/remoteRef/property").and_then(Value::as_str) {
                            Some(p) => format!("{}/data/{key} key {p}", self.kv_mount),
                            None => format!("{}/data/{key}", self.kv_mount),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let paths = if paths.is_empty() {
            "(dataFrom)".to_owned()
        } else {
            paths.join(", ")
        };
        let what = match classify(store_ready, &messages) {
            Diagnosis::StoreNotReady(s) => format!(
                "the secret store is not ready ({s}): ESO cannot log in to Vault; check the store's status, the Vault role and that Vault is unsealed"
            ),
            Diagnosis::AuthDenied => format!(
                "Vault denied the read (auth denied): the policy of the store's role does not allow reading {paths}; add the path to a [[secrets]] entry or fix the policy"
            ),
            Diagnosis::KeyMissing => format!(
                "the value is missing in Vault: {paths} does not exist; write it (declare it in [[secrets]]) or fix the ExternalSecret"
            ),
            Diagnosis::Other => "ESO reports an error it did not explain further".to_owned(),
        };
        format!(
            "ExternalSecret {ns}/{name} is not synced: {what}; ESO says: {}",
            messages.join("; ")
        )
    }
}

#[async_trait::async_trait]
impl Step for AppsSecretsSynced {
    step_identity!("apps.secrets-synced");

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        Ok(self.actions())
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let all = self.list(ctx).await?;
        let mut synced = Vec::new();
        for es in &all {
            let ns = es.namespace().unwrap_or_default();
            let name = es.name_any();
            match super::gitauth::wait_synced(ctx, &ns, &name, self.timeout).await {
                Ok(()) => synced.push(format!("{ns}/{name}")),
                Err(StepError::Cancelled) => return Err(StepError::Cancelled),
                Err(_) => return Err(StepError::permanent(self.diagnose(ctx, es).await)),
            }
        }
        StepOutcome::with_outputs(false, &serde_json::json!({ "synced": synced }))
            .map(StepOutcome::as_ready)
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        for es in self.list(ctx).await? {
            let v = serde_json::to_value(&es).unwrap_or_default();
            let check = crate::kube::wait::evaluate_condition(
                Some(&v),
                &crate::kube::ConditionSpec::is_true("Ready").with_reason("SecretSynced"),
            );
            if !check.done {
                return Ok(Verified::DoesNotHold {
                    reason: format!(
                        "ExternalSecret {}/{}: {}",
                        es.namespace().unwrap_or_default(),
                        es.name_any(),
                        check.status
                    ),
                });
            }
        }
        Ok(Verified::Holds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnoses_are_told_apart() {
        assert!(matches!(
            classify(Err("Ready=False reason=InvalidProviderConfig".into()), &[]),
            Diagnosis::StoreNotReady(_)
        ));
        assert_eq!(
            classify(Ok(()), &["could not get secret data from provider".into(), "UpdateFailed: Error making API request. Code: 403. Errors: * permission denied".into()]),
            Diagnosis::AuthDenied
        );
        assert_eq!(
            classify(Ok(()), &["UpdateFailed: cannot find secret data for key: \"api_token\": secret not found".into()]),
            Diagnosis::KeyMissing
        );
        assert_eq!(classify(Ok(()), &["odd".into()]), Diagnosis::Other);
    }
}
