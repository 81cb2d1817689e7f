//! ESO's cert-controller: once its Deployment runs, it injects the webhook's CA bundle into
//! the chart's ValidatingWebhookConfigurations (`secretstore-validate`,
//! `externalsecret-validate`, labelled `external-secrets.io/component: webhook`), acting as its
//! own service account (the chart's `<fullname>-cert-controller` ClusterRole may patch exactly
//! those two). Until then the API server cannot verify the webhook's TLS and refuses ESO's CR
//! writes (`crate::webhooks`), as on a real cluster.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{Value, json};

use super::super::kit;
use crate::controllers::{Action, Controller};
use crate::server::Shared;
use crate::store::{ObjectKey, StoreEvent};
use crate::webhooks::VALIDATING;

const LABEL: &str = "external-secrets-cert-controller";
const COMPONENT_LABEL: &str = "external-secrets.io/component";

/// The CA the sandbox's webhook "serves" with (no TLS server runs; only its presence counts).
fn ca_bundle() -> String {
    base64::engine::general_purpose::STANDARD.encode(
        "-----BEGIN CERTIFICATE-----\nsandbox external-secrets webhook CA\n-----END CERTIFICATE-----\n",
    )
}

/// Injects the CA bundle into ESO's webhook configurations.
#[derive(Debug, Default)]
pub struct CertController;

/// The ready cert-controller Deployment in `ns`.
fn cert_controller(shared: &Shared, ns: &str) -> Option<Arc<Value>> {
    kit::list(shared, "apps/deployments", Some(ns))
        .into_iter()
        .find(|d| {
            d["metadata"]["labels"]["app.kubernetes.io/name"] == LABEL && kit::workload_ready(d)
        })
}

#[async_trait]
impl Controller for CertController {
    fn name(&self) -> &'static str {
        "external-secrets-cert-controller"
    }

    fn watches(&self) -> Vec<String> {
        vec![VALIDATING.into(), "apps/deployments".into()]
    }

    fn map(&self, shared: &Shared, e: &StoreEvent) -> Vec<ObjectKey> {
        match e.key.resource.as_str() {
            VALIDATING => vec![e.key.clone()],
            _ if e.object["metadata"]["labels"]["app.kubernetes.io/name"] == LABEL => {
                kit::list(shared, VALIDATING, None)
                    .iter()
                    .map(|c| kit::key_of(VALIDATING, c))
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, shared: &Arc<Shared>, key: &ObjectKey) -> Action {
        let Some(config) = kit::get(shared, VALIDATING, "", &key.name) else {
            return Action::Done;
        };
        if config["metadata"]["labels"][COMPONENT_LABEL] != "webhook" {
            return Action::Done;
        }
        let hooks = config["webhooks"].as_array().cloned().unwrap_or_default();
        let Some(ns) = hooks
            .iter()
            .find_map(|h| h["clientConfig"]["service"]["namespace"].as_str())
        else {
            return Action::Done;
        };
        if hooks.iter().all(|h| {
            h["clientConfig"]["caBundle"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        }) {
            return Action::Done;
        }
        let Some(deployment) = cert_controller(shared, ns) else {
            return Action::RequeueAfter(Duration::from_secs(1));
        };
        let user = kit::workload_identity(shared, &deployment);
        let mut doc = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {
                "name": key.name,
                "labels": config["metadata"]["labels"].clone(),
            },
            "webhooks": hooks,
        });
        for hook in doc["webhooks"].as_array_mut().into_iter().flatten() {
            hook["clientConfig"]["caBundle"] = json!(ca_bundle());
        }
        match kit::apply_all_as(shared, user.as_ref(), &[doc], LABEL, "") {
            Ok(_) => Action::Done,
            Err(e) => {
                tracing::warn!(error = %e, "cert-controller cannot inject the webhook CA");
                Action::RequeueAfter(Duration::from_secs(5))
            }
        }
    }
}
