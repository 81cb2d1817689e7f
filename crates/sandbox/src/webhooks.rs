//! Validating admission webhooks, called as the API server calls them: a write (create or
//! update, dry-run included, not `/status`) that matches a rule of a
//! `ValidatingWebhookConfiguration` goes to the webhook's Service, and with the default
//! `failurePolicy: Fail` the write is refused while the webhook cannot answer.
//!
//! The sandbox runs no webhook server: a webhook "answers" once its Service has a ready
//! endpoint and its `clientConfig.caBundle` is set (TLS to the webhook is verified with that
//! bundle; ESO's cert-controller injects it). So, as on a real cluster, External Secrets
//! rejects ClusterSecretStore, SecretStore and ExternalSecret writes until its webhook and
//! cert-controller run, with the API server's own `failed calling webhook` 500.

use serde_json::Value;

use crate::resources::ResourceType;
use crate::status::ApiError;
use crate::store::{ObjectKey, Store};

/// Storage key of ValidatingWebhookConfigurations.
pub const VALIDATING: &str = "admissionregistration.k8s.io/validatingwebhookconfigurations";

fn lists(v: &Value, want: &str) -> bool {
    v.as_array()
        .is_some_and(|a| a.iter().any(|x| x == "*" || x == want))
}

/// Whether a webhook rule covers `operation` on `rt`'s main resource.
fn rule_matches(rule: &Value, rt: &ResourceType, operation: &str) -> bool {
    lists(&rule["apiGroups"], &rt.group)
        && lists(&rule["apiVersions"], &rt.version)
        && lists(&rule["operations"], operation)
        && lists(&rule["resources"], &rt.plural)
}

/// Why the webhook `hook` cannot be called now, worded as kube-apiserver words it.
fn unreachable(store: &Store, hook: &Value) -> Option<String> {
    let svc = &hook["clientConfig"]["service"];
    let (ns, name) = (svc["namespace"].as_str()?, svc["name"].as_str()?);
    let path = svc["path"].as_str().unwrap_or("");
    let port = svc["port"].as_i64().unwrap_or(443);
    let timeout = hook["timeoutSeconds"].as_i64().unwrap_or(10);
    let url = format!("https://{name}.{ns}.svc:{port}{path}?timeout={timeout}s");
    let why = if store.get(&ObjectKey::new("/services", ns, name)).is_none() {
        format!("service \"{name}\" not found")
    } else if !store
        .get(&ObjectKey::new("/endpoints", ns, name))
        .is_some_and(|e| {
            e["subsets"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| s["addresses"].as_array().is_some_and(|a| !a.is_empty()))
            })
        })
    {
        format!("no endpoints available for service \"{name}\"")
    } else if hook["clientConfig"]["caBundle"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        "tls: failed to verify certificate: x509: certificate signed by unknown authority"
            .to_string()
    } else {
        return None;
    };
    Some(format!(
        "Internal error occurred: failed calling webhook \"{}\": failed to call webhook: Post \"{url}\": {why}",
        hook["name"].as_str().unwrap_or("")
    ))
}

/// Calls the validating webhooks that match `operation` (`CREATE`, `UPDATE`) on `rt`.
///
/// # Errors
/// 500 `InternalError` when a matching webhook with `failurePolicy: Fail` cannot answer.
pub fn admit(store: &Store, rt: &ResourceType, operation: &str) -> Result<(), ApiError> {
    if rt.group == "admissionregistration.k8s.io" {
        return Ok(());
    }
    let (configs, _) = store.list(VALIDATING, None);
    for config in configs {
        for hook in config["webhooks"].as_array().into_iter().flatten() {
            let matches = hook["rules"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| rule_matches(r, rt, operation)));
            if !matches || hook["failurePolicy"] == "Ignore" {
                continue;
            }
            if let Some(message) = unreachable(store, hook) {
                return Err(ApiError::internal(message));
            }
        }
    }
    Ok(())
}
