//! External Secrets Operator: install through Flux, wait, and the ClusterSecretStore for Vault.

use serde::Serialize;

use super::chart::{EsoNames, VaultNames};
use super::obj;
use ::kube::Api;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;

use super::support::checks::{exists_with, missing, read};
use super::support::{
    ClusterContext, StepWaits, TemplateStep, cluster_secret_store, deployments_available,
    step_identity,
};
use crate::engine::{Action, Step, StepContext, StepError, StepOutcome, Verified};
use crate::kube::Check;
use crate::kube::ConditionSpec;
use crate::playbook::{HumanDuration, LoadedPlaybook};
use crate::templates::{self, Manifest};

/// `eso.ready`: the release is Ready, its CRDs Established, the operator, its admission webhook
/// and its cert-controller Available, and the webhook's CA injected.
///
/// Why the webhook: the chart registers ValidatingWebhookConfigurations (`secretstore-validate`,
/// `externalsecret-validate`, failurePolicy Fail), so the API server refuses every
/// ClusterSecretStore and ExternalSecret write ("failed calling webhook") until the webhook
/// Deployment serves and the cert-controller has injected its CA bundle into them. The
/// controller Deployment alone being Available says nothing about that.
#[derive(Debug, Clone, Serialize)]
pub struct EsoReady {
    /// ESO's namespace.
    pub namespace: String,
    /// Release name (the HelmRelease's).
    pub release: String,
    /// The chart's controller Deployment (its fullname, see [`EsoNames`]).
    pub deployment: String,
    /// The webhook Deployment (`<fullname>-webhook`).
    pub webhook: String,
    /// The cert-controller Deployment (`<fullname>-cert-controller`).
    pub cert_controller: String,
    /// Wait limit.
    pub timeout: HumanDuration,
}

impl EsoReady {
    /// From `[external_secrets]` and `[timeouts]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let e = &pb.playbook.external_secrets;
        Self {
            namespace: e.namespace.clone(),
            release: e.release.clone(),
            deployment: EsoNames::new(&e.release).controller().to_owned(),
            webhook: EsoNames::new(&e.release).webhook(),
            cert_controller: EsoNames::new(&e.release).cert_controller(),
            timeout: pb.playbook.timeouts.eso_ready,
        }
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            Action::run(format!(
                "wait for {} Ready (timeout {})",
                obj("HelmRelease", &self.namespace, &self.release),
                self.timeout
            )),
            Action::run(
                "wait for CustomResourceDefinition clustersecretstores.external-secrets.io Established",
            ),
            Action::run(
                "wait for CustomResourceDefinition externalsecrets.external-secrets.io Established",
            ),
            Action::run(format!(
                "wait for Deployments {}/{{{}, {}, {}}} Available",
                self.namespace, self.deployment, self.webhook, self.cert_controller
            )),
            Action::run(format!(
                "wait for ValidatingWebhookConfigurations {} with the webhook's CA injected",
                WEBHOOK_CONFIGS.join(", ")
            )),
        ]
    }

    fn deployments(&self) -> [&str; 3] {
        [&self.deployment, &self.webhook, &self.cert_controller]
    }
}

/// The chart's ValidatingWebhookConfigurations (literal names in every chart version).
pub(crate) const WEBHOOK_CONFIGS: [&str; 2] = ["secretstore-validate", "externalsecret-validate"];

/// Whether every webhook of `config` has a CA bundle (the cert-controller injected it).
fn ca_injected(config: &ValidatingWebhookConfiguration) -> bool {
    config.webhooks.iter().flatten().all(|w| {
        w.client_config
            .ca_bundle
            .as_ref()
            .is_some_and(|b| !b.0.is_empty())
    })
}

#[async_trait::async_trait]
impl Step for EsoReady {
    step_identity!("eso.ready");

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        Ok(self.actions())
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let waits = StepWaits::new(ctx, ctx.kube().await?, self.timeout);
        // Everything side by side with the release, so the step goes on one watch event after
        // the last of them holds; one walk from the release names whatever is stuck.
        let shared = waits.sharing_a_walk(&self.namespace, &self.release);
        let api: Api<ValidatingWebhookConfiguration> = Api::all(ctx.kube().await?);
        let described: Vec<String> = WEBHOOK_CONFIGS
            .iter()
            .map(|name| format!("ValidatingWebhookConfiguration {name}"))
            .collect();
        let webhooks = WEBHOOK_CONFIGS
            .iter()
            .zip(&described)
            .map(|(name, object)| {
                shared.until(
                    api.clone(),
                    name,
                    object,
                    "CA bundle injected",
                    |o: Option<&ValidatingWebhookConfiguration>| match o {
                        Some(c) if ca_injected(c) => Check::done("CA bundle injected"),
                        Some(_) => {
                            Check::pending("no CA bundle yet (the cert-controller injects it)")
                        }
                        None => Check::pending("not created yet"),
                    },
                )
            });
        let deployments = self.deployments();
        let rest = async {
            tokio::try_join!(
                shared.crds_established(&CRDS),
                shared.deployments_available(&self.namespace, &deployments),
                futures::future::try_join_all(webhooks),
            )
        };
        waits
            .below_release(&self.namespace, &self.release, rest)
            .await?;
        Ok(StepOutcome::ready())
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        let deployments = deployments_available(ctx, &self.namespace, &self.deployments()).await?;
        if let Verified::DoesNotHold { .. } = deployments {
            return Ok(deployments);
        }
        let api: Api<ValidatingWebhookConfiguration> = Api::all(ctx.kube().await?);
        for name in WEBHOOK_CONFIGS {
            let what = format!("ValidatingWebhookConfiguration {name}");
            match read(&api, name, &what).await? {
                Some(c) if ca_injected(&c) => {}
                Some(_) => {
                    return Ok(Verified::DoesNotHold {
                        reason: format!(
                            "{what} has no CA bundle: ESO's cert-controller has not injected it"
                        ),
                    });
                }
                None => return Ok(missing(&what)),
            }
        }
        Ok(Verified::Holds)
    }
}

/// The ESO CRDs later steps create objects of.
const CRDS: [&str; 2] = [
    "clustersecretstores.external-secrets.io",
    "externalsecrets.external-secrets.io",
];

/// `eso.store`: the ClusterSecretStore that reads Vault with Kubernetes auth.
#[derive(Debug, Clone, Serialize)]
pub struct EsoStore {
    /// Store name.
    pub store: String,
    /// Vault's in-cluster address.
    pub vault_server: String,
    /// KV mount.
    pub kv_mount: String,
    /// Kubernetes auth mount.
    pub auth_mount: String,
    /// Vault role.
    pub role: String,
    /// ESO's namespace.
    pub namespace: String,
    /// ESO's service account.
    pub service_account: String,
    /// Wait limit.
    pub timeout: HumanDuration,
}

impl EsoStore {
    /// From `[external_secrets]` and `[vault]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let e = &pb.playbook.external_secrets;
        let v = &pb.playbook.vault;
        Self {
            store: e.store.clone(),
            vault_server: VaultNames::new(v.flavor, &v.release).address(&v.namespace),
            kv_mount: v.kv_mount.clone(),
            auth_mount: v.auth_mount.clone(),
            role: v.eso_role.clone(),
            namespace: e.namespace.clone(),
            service_account: e.service_account.clone(),
            timeout: pb.playbook.timeouts.eso_ready,
        }
    }
}

impl EsoStore {
    /// Whether the store reports Ready now, with its status otherwise.
    pub(crate) async fn ready_now(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        let api: ::kube::Api<::kube::core::DynamicObject> =
            ::kube::Api::all_with(ctx.kube().await?, &cluster_secret_store());
        let what = format!("ClusterSecretStore {}", self.store);
        exists_with(&api, &self.store, &what, &ConditionSpec::is_true("Ready")).await
    }
}

#[async_trait::async_trait]
impl TemplateStep for EsoStore {
    fn kind(&self) -> &'static str {
        "eso.store"
    }

    fn manifest(&self) -> Result<String, StepError> {
        templates::ClusterSecretStore {
            name: self.store.clone(),
            vault_server: self.vault_server.clone(),
            kv_mount: self.kv_mount.clone(),
            auth_mount: self.auth_mount.clone(),
            role: self.role.clone(),
            eso_namespace: self.namespace.clone(),
            eso_service_account: self.service_account.clone(),
        }
        .render()
        .map_err(|e| StepError::permanent(e.to_string()))
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            Action::create(format!("ClusterSecretStore {}", self.store)).with_detail(format!(
                "vault {} path {} (v2), kubernetes auth {} role {} as {}/{}",
                self.vault_server,
                self.kv_mount,
                self.auth_mount,
                self.role,
                self.namespace,
                self.service_account
            )),
            Action::run(format!(
                "wait for ClusterSecretStore {} Ready (timeout {})",
                self.store, self.timeout
            )),
        ]
    }

    fn waits(&self) -> Vec<Action> {
        self.actions().split_off(1)
    }

    /// Waits for the store to be Ready; a timeout carries ESO's own reason and message.
    async fn after_apply(&self, ctx: &StepContext) -> Result<(), StepError> {
        StepWaits::new(ctx, ctx.kube().await?, self.timeout)
            .ready(&cluster_secret_store(), None, &self.store)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                StepError::Cancelled => e,
                timeout => StepError::permanent(format!(
                    "ClusterSecretStore {} is not Ready, so External Secrets cannot log in to Vault: {timeout}; check that vault.configure's role {} binds {}/{} and that Vault is unsealed",
                    self.store, self.role, self.namespace, self.service_account
                )),
            })
    }
}
