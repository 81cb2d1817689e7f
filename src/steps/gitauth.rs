//! Phase 3: Flux's Git credentials move from the bootstrap Secret to one ESO makes from Vault.

use ::kube::api::{Api, DeleteParams};
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

/// `gitauth.external-secret`: the ExternalSecret that builds Flux's Git Secret from Vault.
#[derive(Debug, Clone, Serialize)]
pub struct GitAuthExternalSecret {
    /// Flux's namespace.
    pub namespace: String,
    /// ExternalSecret and target Secret name.
    pub name: String,
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
            target_name: self.name.clone(),
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
                "store {}, password from {}#{}, username {:?}, refresh {}, creationPolicy Owner, deletionPolicy Retain",
                self.store, self.vault_path, self.vault_key, self.username, self.refresh_interval
            )),
            Action::run(format!(
                "wait for {} SecretSynced, then {} exists (timeout {})",
                obj("ExternalSecret", &self.namespace, &self.name),
                obj("Secret", &self.namespace, &self.name),
                self.timeout
            )),
        ]
    }

    fn waits(&self) -> Vec<Action> {
        self.actions().split_off(1)
    }

    /// Waits for ESO to sync the Secret.
    async fn after_apply(&self, ctx: &StepContext) -> Result<(), StepError> {
        wait_synced(ctx, &self.namespace, &self.name, self.timeout).await
    }
}

/// `gitauth.switch`: the GitRepository uses the ESO-managed Secret and is Ready with it.
#[derive(Debug, Clone, Serialize)]
pub struct GitAuthSwitch {
    /// Flux's namespace.
    pub namespace: String,
    /// GitRepository name.
    pub repository: String,
    /// Secret used before.
    pub from_secret: String,
    /// Secret used after.
    pub to_secret: String,
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
            from_secret: p.flux.bootstrap_secret.clone(),
            to_secret: p.git_auth.external_secret.clone(),
            timeout: p.timeouts.flux_ready,
            source: FluxSource::from_playbook(pb),
        }
    }

    /// Whether the GitRepository uses the new Secret and is Ready at its latest generation.
    async fn switched_and_ready(&self, ctx: &StepContext) -> Result<Verified, StepError> {
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
        if secret != Some(self.to_secret.as_str()) {
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
            Action::update(repo.clone()).with_detail(format!(
                "spec.secretRef.name {} -> {}",
                self.from_secret, self.to_secret
            )),
            Action::run(format!(
                "wait for {repo} Ready with the new credentials (timeout {})",
                self.timeout
            )),
        ]
    }
}

#[async_trait::async_trait]
impl Step for GitAuthSwitch {
    step_identity!("gitauth.switch");

    async fn plan(&self, ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        match plan_yaml(ctx, &self.source.sync(&self.to_secret)?).await {
            Ok(mut a) => {
                a.extend(self.actions().split_off(1));
                Ok(a)
            }
            Err(_) => Ok(self.actions()),
        }
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        // The target Secret must exist before Flux is pointed at it.
        let secrets: Api<Secret> = Api::namespaced(ctx.kube().await?, &self.namespace);
        if secrets
            .get_opt(&self.to_secret)
            .await
            .map_err(|e| StepError::classify("read the ESO-managed Git Secret", e))?
            .is_none()
        {
            return Err(StepError::permanent(format!(
                "Secret {}/{} does not exist yet: gitauth.external-secret must sync it first",
                self.namespace, self.to_secret
            )));
        }
        let changed = apply_yaml(ctx, &self.source.sync(&self.to_secret)?).await?;
        // A changed secretRef bumps the generation; Ready only counts once observed at it.
        self.source.wait_ready(ctx, &ctx.kube().await?).await?;
        Ok(StepOutcome::new(changed))
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        self.switched_and_ready(ctx).await
    }
}

/// `gitauth.cleanup`: delete the bootstrap Git Secret (unless the playbook keeps it).
#[derive(Debug, Clone, Serialize)]
pub struct GitAuthCleanup {
    /// Flux's namespace.
    pub namespace: String,
    /// The bootstrap Secret.
    pub bootstrap_secret: String,
    /// Whether to delete it.
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
            vec![Action::delete(secret).with_detail("the bootstrap Git token leaves the cluster")]
        } else {
            vec![
                Action::unchanged(secret)
                    .with_detail("kept: [git_auth] delete_bootstrap_secret = false"),
            ]
        }
    }
}

#[async_trait::async_trait]
impl Step for GitAuthCleanup {
    step_identity!("gitauth.cleanup");

    async fn plan(&self, ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        if self.delete
            && let Ok(client) = ctx.kube().await
            && let Ok(None) = Api::<Secret>::namespaced(client, &self.namespace)
                .get_opt(&self.bootstrap_secret)
                .await
        {
            return Ok(vec![
                Action::unchanged(obj("Secret", &self.namespace, &self.bootstrap_secret))
                    .with_detail("already deleted"),
            ]);
        }
        Ok(self.actions())
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        if !self.delete {
            return Ok(StepOutcome::new(false));
        }
        if let Verified::DoesNotHold { reason } = self.switch.switched_and_ready(ctx).await? {
            return Err(StepError::permanent(format!(
                "refusing to delete the bootstrap Git Secret while Flux may still need it: {reason}"
            )));
        }
        let api: Api<Secret> = Api::namespaced(ctx.kube().await?, &self.namespace);
        match api
            .delete(&self.bootstrap_secret, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(StepOutcome::new(true)),
            Err(::kube::Error::Api(s)) if s.code == 404 => Ok(StepOutcome::new(false)),
            Err(e) => Err(StepError::classify("delete the bootstrap Git Secret", e)),
        }
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        if !self.delete {
            return Ok(Verified::Holds);
        }
        let api: Api<Secret> = Api::namespaced(ctx.kube().await?, &self.namespace);
        Ok(
            match api
                .get_opt(&self.bootstrap_secret)
                .await
                .map_err(|e| StepError::classify("read the bootstrap Git Secret", e))?
            {
                None => Verified::Holds,
                Some(_) => Verified::DoesNotHold {
                    reason: format!(
                        "Secret {}/{} still exists",
                        self.namespace, self.bootstrap_secret
                    ),
                },
            },
        )
    }
}
