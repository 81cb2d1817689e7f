//! Phase 2: bootstrap secrets from the environment through Terraform into Vault, then checked.

use serde::Serialize;

use crate::engine::Action;
use crate::playbook::{HumanDuration, LoadedPlaybook};

/// Where one bootstrap secret goes (names and locations only, never the value).
#[derive(Debug, Clone, Serialize)]
pub struct SecretRoute {
    /// Source env var.
    pub env: String,
    /// Terraform variable.
    pub tf_var: String,
    /// Path under the KV mount.
    pub vault_path: String,
    /// Key in the Vault secret.
    pub vault_key: String,
}

fn routes(pb: &LoadedPlaybook) -> Vec<SecretRoute> {
    pb.playbook
        .secrets
        .iter()
        .map(|s| SecretRoute {
            env: s.env.clone(),
            tf_var: s.tf_var(),
            vault_path: s.vault_path.clone(),
            vault_key: s.vault_key.clone(),
        })
        .collect()
}

/// `secrets.terraform`: run the self-referencing module with the secrets on a pipe.
#[derive(Debug, Clone, Serialize)]
pub struct SecretsTerraform {
    /// `terraform` or `tofu`.
    pub binary: String,
    /// Module directory.
    pub dir: String,
    /// KV mount.
    pub kv_mount: String,
    /// Secrets to pass.
    pub secrets: Vec<SecretRoute>,
    /// Time limit.
    pub timeout: HumanDuration,
}

impl SecretsTerraform {
    /// From `[terraform]`, `[[secrets]]`, `[vault]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        Self {
            binary: pb.playbook.terraform.binary.as_str().to_owned(),
            dir: pb.playbook.terraform.dir.display().to_string(),
            kv_mount: pb.playbook.vault.kv_mount.clone(),
            secrets: routes(pb),
            timeout: pb.playbook.timeouts.terraform,
        }
    }

    fn env_names(&self) -> Vec<String> {
        self.secrets.iter().map(|s| s.env.clone()).collect()
    }

    fn actions(&self) -> Vec<Action> {
        let vars: Vec<&str> = self.secrets.iter().map(|s| s.tf_var.as_str()).collect();
        let mut actions = vec![
            Action::run(format!(
                "{} init -input=false -no-color (in {})",
                self.binary, self.dir
            )),
            Action::run(format!(
                "{} apply -auto-approve -input=false -var-file=/dev/fd/N",
                self.binary
            ))
            .with_detail(format!(
                "variables {} through a pipe, never argv or a file",
                vars.join(", ")
            )),
        ];
        actions.extend(self.secrets.iter().map(|s| {
            Action::create(format!(
                "Vault {}/data/{} key {}",
                self.kv_mount, s.vault_path, s.vault_key
            ))
            .with_detail(format!("from ${}", s.env))
        }));
        actions
    }
}
pending_step!(SecretsTerraform, "secrets.terraform", secrets = env_names);

/// `secrets.verify`: every declared secret is at its Vault path and key.
#[derive(Debug, Clone, Serialize)]
pub struct SecretsVerify {
    /// KV mount.
    pub kv_mount: String,
    /// What must be there.
    pub secrets: Vec<SecretRoute>,
}

impl SecretsVerify {
    /// From `[[secrets]]` and `[vault]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        Self {
            kv_mount: pb.playbook.vault.kv_mount.clone(),
            secrets: routes(pb),
        }
    }

    fn actions(&self) -> Vec<Action> {
        self.secrets
            .iter()
            .map(|s| {
                Action::run(format!(
                    "GET /v1/{}/data/{} (key {} present)",
                    self.kv_mount, s.vault_path, s.vault_key
                ))
            })
            .collect()
    }
}
pending_step!(SecretsVerify, "secrets.verify");
