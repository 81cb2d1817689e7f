//! Phase 3: Flux's Git credentials move from the bootstrap Secret to one ESO makes from Vault.

use serde::Serialize;

use super::obj;
use crate::engine::Action;
use crate::playbook::{HumanDuration, LoadedPlaybook};

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
}
pending_step!(GitAuthExternalSecret, "gitauth.external-secret");

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
}

impl GitAuthSwitch {
    /// From `[git_auth]` and `[flux]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let p = &pb.playbook;
        Self {
            namespace: p.flux.namespace.clone(),
            repository: p.flux.bootstrap_secret.clone(),
            from_secret: p.flux.bootstrap_secret.clone(),
            to_secret: p.git_auth.external_secret.clone(),
            timeout: p.timeouts.flux_ready,
        }
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
pending_step!(GitAuthSwitch, "gitauth.switch");

/// `gitauth.cleanup`: delete the bootstrap Git Secret (unless the playbook keeps it).
#[derive(Debug, Clone, Serialize)]
pub struct GitAuthCleanup {
    /// Flux's namespace.
    pub namespace: String,
    /// The bootstrap Secret.
    pub bootstrap_secret: String,
    /// Whether to delete it.
    pub delete: bool,
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
pending_step!(GitAuthCleanup, "gitauth.cleanup");
