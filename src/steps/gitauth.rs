//! Phase 3: Flux's Git credentials are handed over from the bootstrap Secret to External
//! Secrets, which keeps them in sync with Vault.
//!
//! # Design: hand over the Secret the repository already names
//!
//! The ExternalSecret (`[git_auth] external_secret`) targets the very Secret the GitRepository's
//! `secretRef` names (`[flux] bootstrap_secret`, `flux-system` by default), with
//! `creationPolicy: Owner`. ESO adopts an existing Secret that has no controller owner: it adds
//! its owner reference and rewrites the data from Vault (ESO's "ownership and deletion policy"
//! guide: a target without an ownerReference is treated as orphaned and taken over), in place,
//! with no delete-and-recreate, so Flux never sees the Secret missing. The GitRepository
//! itself never changes.
//!
//! Why not point `secretRef` at a second, ESO-made Secret (kubestrap's first design)? A fleet
//! repository made by `flux bootstrap` holds `flux-system/gotk-sync.yaml`, which declares the
//! GitRepository with `secretRef: flux-system`, and Flux's own Kustomization re-applies it with
//! forced field ownership on every reconcile. Any `secretRef` kubestrap writes is reverted
//! within one interval, and after the old Secret's deletion Flux loses Git access. Changing the
//! Secret instead of the reference works whether the GitRepository is managed by kubestrap,
//! by Flux from Git, or by both, and needs no edit of the user's repository.
//!
//! So "no bootstrap secret" means: no Secret that kubestrap made from `$token_env` is left;
//! the one Flux reads is owned by the ExternalSecret (`gitauth.cleanup` and
//! `verify.no-bootstrap-secrets` check that).

use ::kube::api::Api;
use ::kube::core::DynamicObject;
use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;

use super::flux::FluxSource;
use super::obj;
use super::support::checks::{condition_now, missing, read};
use super::support::{
    ClusterContext, StepWaits, TemplateStep, apply_yaml, external_secret, git_repository,
    plan_yaml, step_identity,
};
use crate::engine::{Action, Step, StepContext, StepError, StepOutcome, Verified};
use crate::kube::ConditionSpec;
use crate::playbook::{HumanDuration, LoadedPlaybook};
use crate::templates::{self, Manifest};

/// Waits until an ExternalSecret is `Ready=True` with reason `SecretSynced`; a timeout carries
/// ESO's last reason and message (which name the cause: store, auth or missing key).
pub(crate) async fn wait_synced(
    ctx: &StepContext,
    namespace: &str,
    name: &str,
    timeout: HumanDuration,
) -> Result<(), StepError> {
    StepWaits::new(ctx, ctx.kube().await?, timeout)
        .condition(
            &external_secret(),
            Some(namespace),
            name,
            &crate::kube::ConditionSpec::is_true("Ready").with_reason("SecretSynced"),
        )
        .await
        .map(|_| ())
}

/// Whether `secret` is controlled by the ExternalSecret `external_secret` (ESO's owner
/// reference with `controller: true`).
fn owned_by(secret: &Secret, external_secret: &str) -> bool {
    secret.metadata.owner_references.iter().flatten().any(|o| {
        o.kind == "ExternalSecret" && o.name == external_secret && o.controller == Some(true)
    })
}

/// Whether the Secret Flux reads is handed over: it exists and the ExternalSecret controls it.
async fn handed_over(
    ctx: &StepContext,
    namespace: &str,
    secret: &str,
    external_secret: &str,
) -> Result<Verified, StepError> {
    let api: Api<Secret> = Api::namespaced(ctx.kube().await?, namespace);
    let what = obj("Secret", namespace, secret);
    Ok(match read(&api, secret, &what).await? {
        None => missing(&what),
        Some(s) if owned_by(&s, external_secret) => Verified::Holds,
        Some(_) => Verified::DoesNotHold {
            reason: format!(
                "{what} is still the bootstrap copy: ExternalSecret {namespace}/{external_secret} does not own it yet"
            ),
        },
    })
}

/// `gitauth.external-secret`: the ExternalSecret that takes over Flux's Git Secret (the one the
/// GitRepository names) and keeps it in sync with Vault.
#[derive(Debug, Clone, Serialize)]
pub struct GitAuthExternalSecret {
    /// Flux's namespace.
    pub namespace: String,
    /// ExternalSecret name (`[git_auth] external_secret`).
    pub name: String,
    /// The Secret it adopts: the one the GitRepository names (`[flux] bootstrap_secret`).
    pub target: String,
    /// ClusterSecretStore.
    pub store: String,
    /// Vault path (under the KV mount) of the token.
    pub vault_path: String,
    /// Key of the token.
    pub vault_key: String,
    /// User name written next to it.
    pub username: String,
    /// Refresh interval.
    pub refresh_interval: HumanDuration,
    /// Wait limit.
    pub timeout: HumanDuration,
}

impl GitAuthExternalSecret {
    /// From `[git_auth]`, `[flux]`, `[[secrets]]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let p = &pb.playbook;
        let from = p
            .git_auth
            .from_secret
            .as_deref()
            .unwrap_or(&p.flux.token_env);
        let decl = pb.secret(from);
        Self {
            namespace: p.flux.namespace.clone(),
            name: p.git_auth.external_secret.clone(),
            target: p.flux.bootstrap_secret.clone(),
            store: p.external_secrets.store.clone(),
            vault_path: decl.map(|d| d.vault_path.clone()).unwrap_or_default(),
            vault_key: decl.map(|d| d.vault_key.clone()).unwrap_or_default(),
            username: p.flux.git_username.clone(),
            refresh_interval: p.git_auth.refresh_interval,
            timeout: p.timeouts.secret_sync,
        }
    }
}

#[async_trait::async_trait]
impl TemplateStep for GitAuthExternalSecret {
    fn kind(&self) -> &'static str {
        "gitauth.external-secret"
    }

    fn manifest(&self) -> Result<String, StepError> {
        templates::GitExternalSecret {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            store_name: self.store.clone(),
            refresh_interval: self.refresh_interval.to_string(),
            target_name: self.target.clone(),
            vault_key: self.vault_path.clone(),
            username: self.username.clone(),
            password_property: self.vault_key.clone(),
        }
        .render()
        .map_err(|e| StepError::permanent(e.to_string()))
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            Action::create(obj("ExternalSecret", &self.namespace, &self.name)).with_detail(format!(
                "target {} (adopted in place), store {}, password from {}#{}, username {:?}, refresh {}, creationPolicy Owner, deletionPolicy Retain",
                self.target, self.store, self.vault_path, self.vault_key, self.username, self.refresh_interval
            )),
            Action::run(format!(
                "wait for {} SecretSynced and owning {} (timeout {})",
                obj("ExternalSecret", &self.namespace, &self.name),
                obj("Secret", &self.namespace, &self.target),
                self.timeout
            )),
        ]
    }

    fn waits(&self) -> Vec<Action> {
        self.actions().split_off(1)
    }

    /// Waits for ESO to sync the Secret, then checks that ESO owns it (a Secret controlled by
    /// something else is never taken over: ESO reports that, and so does this step).
    async fn after_apply(&self, ctx: &StepContext) -> Result<(), StepError> {
        wait_synced(ctx, &self.namespace, &self.name, self.timeout).await?;
        match handed_over(ctx, &self.namespace, &self.target, &self.name).await? {
            Verified::Holds => Ok(()),
            Verified::DoesNotHold { reason } => Err(StepError::permanent(format!(
                "{reason}; remove the other owner reference from it (kubestrap's bootstrap Secret has none)"
            ))),
        }
    }
}

/// `gitauth.switch`: the GitRepository reads the Secret ESO now owns and is Ready with it,
/// after a reconcile requested once the handover happened (so the credentials ESO wrote are
/// the ones it fetched with).
#[derive(Debug, Clone, Serialize)]
pub struct GitAuthSwitch {
    /// Flux's namespace.
    pub namespace: String,
    /// GitRepository name.
    pub repository: String,
    /// The Secret the GitRepository names (`[flux] bootstrap_secret`), owned by ESO now.
    pub secret: String,
    /// The ExternalSecret that owns it.
    pub external_secret: String,
    /// Wait limit.
    pub timeout: HumanDuration,
    /// The sync objects as flux.source applies them (re-applied with the new secretRef, so
    /// kubestrap's field manager keeps owning the whole spec).
    pub source: FluxSource,
}

impl GitAuthSwitch {
    /// From `[git_auth]` and `[flux]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let p = &pb.playbook;
        Self {
            namespace: p.flux.namespace.clone(),
            repository: p.flux.namespace.clone(),
            secret: p.flux.bootstrap_secret.clone(),
            external_secret: p.git_auth.external_secret.clone(),
            timeout: p.timeouts.flux_ready,
            source: FluxSource::from_playbook(pb),
        }
    }

    /// Whether the GitRepository reads the ESO-owned Secret and is Ready at its latest
    /// generation.
    async fn switched_and_ready(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        if let Verified::DoesNotHold { reason } =
            handed_over(ctx, &self.namespace, &self.secret, &self.external_secret).await?
        {
            return Ok(Verified::DoesNotHold { reason });
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.kube().await?, &self.namespace, &git_repository());
        let what = obj("GitRepository", &self.namespace, &self.repository);
        let Some(repo) = read(&api, &self.repository, &what).await? else {
            return Ok(missing(&what));
        };
        let secret = repo
            .data
            .pointer("/spec/secretRef/name")
            .and_then(serde_json::Value::as_str);
        if secret != Some(self.secret.as_str()) {
            return Ok(Verified::DoesNotHold {
                reason: format!("GitRepository uses Secret {}", secret.unwrap_or("(none)")),
            });
        }
        Ok(condition_now(
            &repo,
            &what,
            &ConditionSpec::is_true("Ready"),
        ))
    }

    fn actions(&self) -> Vec<Action> {
        let repo = obj("GitRepository", &self.namespace, &self.repository);
        vec![
            Action::run(format!(
                "check {} is owned by {}",
                obj("Secret", &self.namespace, &self.secret),
                obj("ExternalSecret", &self.namespace, &self.external_secret)
            )),
            Action::run(format!(
                "wait for {repo} Ready with the ESO-managed credentials (timeout {})",
                self.timeout
            )),
        ]
    }
}

#[async_trait::async_trait]
impl Step for GitAuthSwitch {
    step_identity!("gitauth.switch");

    async fn plan(&self, ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        match plan_yaml(ctx, &self.source.sync(&self.secret)?).await {
            Ok(mut a) => {
                a.extend(self.actions());
                Ok(a)
            }
            Err(_) => Ok(self.actions()),
        }
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        // ESO must own the Secret before Flux counts as switched.
        if let Verified::DoesNotHold { reason } =
            handed_over(ctx, &self.namespace, &self.secret, &self.external_secret).await?
        {
            return Err(StepError::permanent(format!(
                "{reason}: gitauth.external-secret must sync it first"
            )));
        }
        // The same sync objects as flux.source (secretRef unchanged): a no-op unless someone
        // changed them, in which case kubestrap's copy is restored.
        let changed = apply_yaml(ctx, &self.source.sync(&self.secret)?).await?;
        self.source.wait_ready(ctx, &ctx.kube().await?).await?;
        Ok(StepOutcome::new(changed))
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        self.switched_and_ready(ctx).await
    }
}

/// `gitauth.cleanup`: no bootstrap copy of the Git token is left. The handover rewrote the
/// bootstrap Secret in place (see the module's design note), so nothing is deleted: the step
/// checks that the Secret Flux reads is ESO's now. Deleting it would cut Flux off Git.
#[derive(Debug, Clone, Serialize)]
pub struct GitAuthCleanup {
    /// Flux's namespace.
    pub namespace: String,
    /// The bootstrap Secret, now ESO's.
    pub bootstrap_secret: String,
    /// `[git_auth] delete_bootstrap_secret`: whether the bootstrap copy must be gone.
    pub delete: bool,
    /// The switch that must hold before anything is deleted.
    pub switch: GitAuthSwitch,
}

impl GitAuthCleanup {
    /// From `[git_auth]` and `[flux]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let p = &pb.playbook;
        Self {
            namespace: p.flux.namespace.clone(),
            bootstrap_secret: p.flux.bootstrap_secret.clone(),
            delete: p.git_auth.delete_bootstrap_secret,
            switch: GitAuthSwitch::from_playbook(pb),
        }
    }

    fn actions(&self) -> Vec<Action> {
        let secret = obj("Secret", &self.namespace, &self.bootstrap_secret);
        if self.delete {
            vec![
                Action::run(format!(
                    "check {secret} is no bootstrap copy: owned by {}",
                    obj(
                        "ExternalSecret",
                        &self.namespace,
                        &self.switch.external_secret
                    )
                ))
                .with_detail("handed over in place, nothing deleted: Flux keeps reading it"),
            ]
        } else {
            vec![
                Action::unchanged(secret)
                    .with_detail("not checked: [git_auth] delete_bootstrap_secret = false"),
            ]
        }
    }
}

#[async_trait::async_trait]
impl Step for GitAuthCleanup {
    step_identity!("gitauth.cleanup");

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        Ok(self.actions())
    }

    /// Fails when the Secret Flux reads is still kubestrap's bootstrap copy; deletes nothing
    /// (see the module's design note), so it never changes the cluster.
    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        if !self.delete {
            return Ok(StepOutcome::new(false));
        }
        if let Verified::DoesNotHold { reason } = self.switch.switched_and_ready(ctx).await? {
            return Err(StepError::permanent(format!(
                "the bootstrap Git token is still in the cluster outside External Secrets' control: {reason}"
            )));
        }
        Ok(StepOutcome::new(false))
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        if !self.delete {
            return Ok(Verified::Holds);
        }
        handed_over(
            ctx,
            &self.namespace,
            &self.bootstrap_secret,
            &self.switch.external_secret,
        )
        .await
    }
}
