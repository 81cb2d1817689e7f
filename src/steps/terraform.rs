//! Phase 2: bootstrap secrets from the environment through Terraform into Vault, then checked.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::support::step_identity;
use super::vault::VaultEndpoint;
use super::vault_api::{VaultSession, connect, is_not_found, root_token};
use crate::engine::{Action, Step, StepContext, StepError, StepOutcome, Verified};
use crate::playbook::{HumanDuration, LoadedPlaybook};
use crate::terraform::{OutputStream, Terraform, VarValue, Variables};

/// Reads a KV v2 secret as key => value; `None` when nothing is there.
///
/// # Errors
/// A classified [`StepError`] when Vault refuses or is unreachable.
pub(crate) async fn read_kv(
    session: &VaultSession,
    mount: &str,
    path: &str,
) -> Result<Option<HashMap<String, SecretString>>, StepError> {
    match vaultrs::kv2::read::<HashMap<String, String>>(&session.client, mount, path).await {
        Ok(map) => Ok(Some(
            map.into_iter()
                .map(|(k, v)| (k, SecretString::from(v)))
                .collect(),
        )),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(StepError::classify(format!("read {mount}/data/{path}"), e)),
    }
}

fn digest(s: &SecretString) -> [u8; 32] {
    Sha256::digest(s.expose_secret().as_bytes()).into()
}

/// How one declared secret compares with Vault (digests only, values never shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compare {
    /// Vault holds the captured value.
    Same,
    /// Vault holds another value.
    Differs,
    /// Vault holds nothing at that path and key.
    Absent,
    /// The value was not captured this run; Vault holds one.
    PresentNotCaptured,
    /// Not captured and not in Vault.
    AbsentNotCaptured,
}

/// Compares every route with Vault; also returns Vault's current values (for routes whose
/// value was not captured, so Terraform can be given the complete map).
async fn compare(
    ctx: &StepContext,
    session: &VaultSession,
    mount: &str,
    routes: &[SecretRoute],
) -> Result<Vec<(Compare, Option<SecretString>)>, StepError> {
    let mut cache: BTreeMap<String, Option<HashMap<String, SecretString>>> = BTreeMap::new();
    let mut out = Vec::with_capacity(routes.len());
    for r in routes {
        if !cache.contains_key(&r.vault_path) {
            let data = read_kv(session, mount, &r.vault_path).await?;
            cache.insert(r.vault_path.clone(), data);
        }
        let in_vault = cache
            .get(&r.vault_path)
            .and_then(Option::as_ref)
            .and_then(|d| d.get(&r.vault_key))
            .cloned();
        let captured = ctx.secret(&r.env).ok();
        let cmp = match (captured, &in_vault) {
            (Some(v), Some(have)) if digest(v) == digest(have) => Compare::Same,
            (Some(_), Some(_)) => Compare::Differs,
            (Some(_), None) => Compare::Absent,
            (None, Some(_)) => Compare::PresentNotCaptured,
            (None, None) => Compare::AbsentNotCaptured,
        };
        out.push((cmp, in_vault));
    }
    Ok(out)
}

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

pub(crate) fn routes(pb: &LoadedPlaybook) -> Vec<SecretRoute> {
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
    /// How to reach Vault.
    pub endpoint: VaultEndpoint,
    /// Secret holding the root token (VAULT_TOKEN for the child).
    pub keys_secret: String,
    /// `[terraform] pass_env`: environment variables (names or globs) handed to Terraform.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pass_env: Vec<String>,
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
            endpoint: VaultEndpoint::from_playbook(pb),
            keys_secret: pb.playbook.vault.keys_secret.clone(),
            pass_env: pb.playbook.terraform.pass_env.clone(),
        }
    }

    /// The variables of `vars` (the process environment) that `pass_env` names, minus the
    /// declared secrets and the variables kubestrap sets itself.
    fn passed_env(&self, vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
        const OWN: [&str; 9] = [
            "PATH",
            "HOME",
            "TF_IN_AUTOMATION",
            "TF_INPUT",
            "CHECKPOINT_DISABLE",
            "TF_DATA_DIR",
            "TF_CLI_ARGS_apply",
            "TF_CLI_ARGS_plan",
            "VAULT_TOKEN",
        ];
        let mut out: Vec<(String, String)> = vars
            .filter(|(k, _)| {
                self.pass_env
                    .iter()
                    .any(|p| crate::playbook::env_pattern_matches(p, k))
                    && !OWN.contains(&k.as_str())
                    && k != "VAULT_ADDR"
                    && !self.secrets.iter().any(|s| &s.env == k)
            })
            .collect();
        out.sort();
        out
    }

    /// The module's variables: `mount` and `secrets` (path => key => value), the interface of
    /// `phases/2-secrets/main.tf` and the test fixture.
    fn variables(&self, values: Vec<SecretString>) -> Variables {
        let mut by_path: BTreeMap<String, BTreeMap<String, VarValue>> = BTreeMap::new();
        for (r, v) in self.secrets.iter().zip(values) {
            by_path
                .entry(r.vault_path.clone())
                .or_default()
                .insert(r.vault_key.clone(), VarValue::Secret(v));
        }
        let mut vars = Variables::new();
        vars.plain("mount", self.kv_mount.clone()).value(
            "secrets",
            VarValue::Map(
                by_path
                    .into_iter()
                    .map(|(p, m)| (p, VarValue::Map(m)))
                    .collect(),
            ),
        );
        vars
    }

    /// Runs `terraform init` and `apply` with the secrets on a pipe and Vault in the env.
    async fn run_terraform(
        &self,
        ctx: &StepContext,
        session: &VaultSession,
        token: SecretString,
        values: Vec<SecretString>,
    ) -> Result<(), StepError> {
        // Absolute: Terraform runs in the module directory, where a relative path would land.
        let work = std::path::absolute(ctx.state_dir().join("terraform"))
            .map_err(|e| StepError::permanent(format!("resolve the state directory: {e}")))?;
        let home = work.join("home");
        // Owner-only: the state, providers' data and home Terraform writes here hold secrets.
        {
            use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&home)
                .and_then(|()| {
                    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|e| StepError::permanent(format!("create {}: {e}", home.display())))?;
        }
        let state = work.join("terraform.tfstate");
        // A Terraform left running by a killed run may still hold the state lock: wait for it.
        let state_arg = format!("-state={} -lock-timeout=120s", state.display());
        let tf = Terraform::new(&self.binary, &PathBuf::from(&self.dir))
            .map_err(|e| StepError::permanent(e.to_string()))?
            .home(&home)
            // Providers and the module's local state live per cluster under the state dir,
            // so the module directory stays clean and two clusters never share state.
            .env("TF_DATA_DIR", &work.join("data").display().to_string())
            .env("TF_CLI_ARGS_apply", &state_arg)
            .env("TF_CLI_ARGS_plan", &state_arg)
            .env("VAULT_ADDR", &session.addr)
            .secret_env("VAULT_TOKEN", token);
        let passed = self.passed_env(std::env::vars());
        if !passed.is_empty() {
            let names: Vec<&str> = passed.iter().map(|(k, _)| k.as_str()).collect();
            ctx.progress(format!(
                "passing {} to terraform ([terraform] pass_env)",
                names.join(", ")
            ));
        }
        let mut tf = tf;
        for (k, v) in &passed {
            tf = tf.env(k, v);
        }
        let vars = self.variables(values);
        let mut sink = |stream: OutputStream, line: &str| {
            let tag = match stream {
                OutputStream::Stdout => "terraform",
                OutputStream::Stderr => "terraform (stderr)",
            };
            if !line.trim().is_empty() {
                ctx.progress(format!("{tag}: {line}"));
            }
        };
        let run = async {
            tf.init(&mut sink).await?;
            tf.apply(&vars, &mut sink).await
        };
        match tokio::time::timeout(
            self.timeout.get(),
            super::support::cancellable(ctx, async { Ok(run.await) }),
        )
        .await
        {
            Err(_) => Err(StepError::permanent(format!(
                "terraform did not finish within {} ([timeouts] terraform)",
                self.timeout
            ))),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Err(e))) => Err(StepError::permanent(e.to_string())),
            Ok(Ok(Ok(()))) => Ok(()),
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

#[async_trait::async_trait]
impl Step for SecretsTerraform {
    step_identity!("secrets.terraform");

    fn secrets(&self) -> Vec<String> {
        self.env_names()
    }

    /// Against a reachable Vault: which declared secrets are already there (presence only,
    /// `plan` reads no secret values) and so whether Terraform would run at all.
    async fn plan(&self, ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        let Ok(token) = root_token(ctx, &self.endpoint, &self.keys_secret).await else {
            return Ok(self.actions());
        };
        let Ok(session) = connect(ctx, &self.endpoint, Some(&token)).await else {
            return Ok(self.actions());
        };
        let Ok(found) = compare(ctx, &session, &self.kv_mount, &self.secrets).await else {
            return Ok(self.actions());
        };
        let mut actions = Vec::new();
        let mut any_missing = false;
        for (r, (c, _)) in self.secrets.iter().zip(&found) {
            let target = format!(
                "Vault {}/data/{} key {}",
                self.kv_mount, r.vault_path, r.vault_key
            );
            actions.push(
                if matches!(c, Compare::Absent | Compare::AbsentNotCaptured) {
                    any_missing = true;
                    Action::create(target).with_detail(format!("from ${}", r.env))
                } else {
                    Action::unchanged(target)
                        .with_detail("present; compared by digest with the exported value at apply")
                },
            );
        }
        let run = Action::run(format!(
            "{} init + apply in {} (variables through a pipe)",
            self.binary, self.dir
        ));
        actions.insert(
            0,
            if any_missing {
                run
            } else {
                run.with_detail("only if an exported value differs from Vault's")
            },
        );
        Ok(actions)
    }

    /// Unchanged (Terraform not run) when Vault already holds every declared value: compared
    /// by SHA-256 digest with the captured value, or, for a value not exported this run, by
    /// presence. A value neither exported nor in Vault is an error that names the variable.
    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let token = root_token(ctx, &self.endpoint, &self.keys_secret).await?;
        let session = connect(ctx, &self.endpoint, Some(&token)).await?;
        let found = compare(ctx, &session, &self.kv_mount, &self.secrets).await?;
        let missing: Vec<&str> = self
            .secrets
            .iter()
            .zip(&found)
            .filter(|(_, (c, _))| *c == Compare::AbsentNotCaptured)
            .map(|(r, _)| r.env.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(StepError::permanent(format!(
                "Vault does not hold {} yet and the environment does not provide it: export {} and run `kubestrap apply --resume`",
                missing.join(", "),
                missing.join(", ")
            )));
        }
        if found
            .iter()
            .all(|(c, _)| matches!(c, Compare::Same | Compare::PresentNotCaptured))
        {
            ctx.progress("every declared secret is already in Vault with the same value");
            return Ok(StepOutcome::new(false));
        }
        let values: Vec<SecretString> = self
            .secrets
            .iter()
            .zip(found)
            .map(|(r, (_, in_vault))| match ctx.secret(&r.env) {
                Ok(v) => v.clone(),
                Err(_) => in_vault.unwrap_or_else(|| SecretString::from(String::new())),
            })
            .collect();
        self.run_terraform(ctx, &session, token, values).await?;
        let after = compare(ctx, &session, &self.kv_mount, &self.secrets).await?;
        let wrong: Vec<String> = self
            .secrets
            .iter()
            .zip(&after)
            .filter(|(_, (c, _))| !matches!(c, Compare::Same | Compare::PresentNotCaptured))
            .map(|(r, _)| {
                format!(
                    "{}/data/{} key {}",
                    self.kv_mount, r.vault_path, r.vault_key
                )
            })
            .collect();
        if !wrong.is_empty() {
            return Err(StepError::permanent(format!(
                "terraform apply succeeded but Vault does not hold the declared value at {}: check the module in {}",
                wrong.join(", "),
                self.dir
            )));
        }
        Ok(StepOutcome::new(true))
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        let token = root_token(ctx, &self.endpoint, &self.keys_secret).await?;
        let session = connect(ctx, &self.endpoint, Some(&token)).await?;
        let found = compare(ctx, &session, &self.kv_mount, &self.secrets).await?;
        Ok(describe(&self.kv_mount, &self.secrets, &found))
    }
}

/// `Holds` when every route is in Vault (with the captured value, when captured).
fn describe(
    mount: &str,
    routes: &[SecretRoute],
    found: &[(Compare, Option<SecretString>)],
) -> Verified {
    let bad: Vec<String> = routes
        .iter()
        .zip(found)
        .filter_map(|(r, (c, _))| {
            let at = format!("{mount}/data/{} key {}", r.vault_path, r.vault_key);
            match c {
                Compare::Same | Compare::PresentNotCaptured => None,
                Compare::Differs => Some(format!("{at} holds another value than ${}", r.env)),
                Compare::Absent | Compare::AbsentNotCaptured => Some(format!("{at} is missing")),
            }
        })
        .collect();
    if bad.is_empty() {
        Verified::Holds
    } else {
        Verified::DoesNotHold {
            reason: bad.join("; "),
        }
    }
}

/// `secrets.verify`: every declared secret is at its Vault path and key.
#[derive(Debug, Clone, Serialize)]
pub struct SecretsVerify {
    /// KV mount.
    pub kv_mount: String,
    /// What must be there.
    pub secrets: Vec<SecretRoute>,
    /// How to reach Vault.
    pub endpoint: VaultEndpoint,
    /// Secret holding the root token.
    pub keys_secret: String,
}

impl SecretsVerify {
    /// From `[[secrets]]` and `[vault]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        Self {
            kv_mount: pb.playbook.vault.kv_mount.clone(),
            secrets: routes(pb),
            endpoint: VaultEndpoint::from_playbook(pb),
            keys_secret: pb.playbook.vault.keys_secret.clone(),
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

#[async_trait::async_trait]
impl Step for SecretsVerify {
    step_identity!("secrets.verify");

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        Ok(self.actions())
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        match self.verify(ctx).await? {
            Verified::Holds => Ok(StepOutcome::ready()),
            Verified::DoesNotHold { reason } => Err(StepError::permanent(format!(
                "declared secrets are not in Vault as expected: {reason}"
            ))),
        }
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        let token = root_token(ctx, &self.endpoint, &self.keys_secret).await?;
        let session = connect(ctx, &self.endpoint, Some(&token)).await?;
        let found = compare(ctx, &session, &self.kv_mount, &self.secrets).await?;
        Ok(describe(&self.kv_mount, &self.secrets, &found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> SecretsTerraform {
        let route = |env: &str, path: &str, key: &str| SecretRoute {
            env: env.into(),
            tf_var: env.to_ascii_lowercase(),
            vault_path: path.into(),
            vault_key: key.into(),
        };
        SecretsTerraform {
            binary: "terraform".into(),
            dir: "/m".into(),
            kv_mount: "secret".into(),
            secrets: vec![
                route("A", "bootstrap/app", "one"),
                route("B", "bootstrap/app", "two"),
                route("C", "bootstrap/other", "token"),
            ],
            timeout: HumanDuration::from_secs(60),
            endpoint: VaultEndpoint::default_port_forward(),
            keys_secret: "vault-init-keys".into(),
            pass_env: Vec::new(),
        }
    }

    #[test]
    fn pass_env_hands_over_named_variables_but_never_a_declared_secret() {
        let mut s = step();
        s.pass_env = vec!["AWS_*".into(), "HTTPS_PROXY".into(), "*".into()];
        let env = [
            ("AWS_ACCESS_KEY_ID", "k"),
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("A", "bootstrap-canary"),
            ("VAULT_TOKEN", "outer-token"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let passed = s.passed_env(env.into_iter());
        let names: Vec<&str> = passed.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["AWS_ACCESS_KEY_ID", "HTTPS_PROXY"]);
        s.pass_env.clear();
        assert!(
            s.passed_env(std::iter::once(("AWS_X".into(), "y".into())))
                .is_empty()
        );
    }

    #[test]
    fn variables_group_keys_by_path_and_keep_values_secret() {
        let vars = step().variables(vec![
            SecretString::from("v1".to_owned()),
            SecretString::from("v2".to_owned()),
            SecretString::from("v3".to_owned()),
        ]);
        assert_eq!(vars.secret_values().len(), 3);
        let text = vars.render().unwrap();
        assert!(text.contains("mount = \"secret\""), "{}", &*text);
        let app = text.find("\"bootstrap/app\"").unwrap();
        let other = text.find("\"bootstrap/other\"").unwrap();
        assert!(app < other);
        assert!(text[app..other].contains("one") && text[app..other].contains("two"));
    }

    #[test]
    fn verification_names_what_is_missing_or_different_without_values() {
        let s = step();
        let found = vec![
            (Compare::Same, None),
            (
                Compare::Differs,
                Some(SecretString::from("secret-value".to_owned())),
            ),
            (Compare::AbsentNotCaptured, None),
        ];
        let Verified::DoesNotHold { reason } = describe("secret", &s.secrets, &found) else {
            panic!("must not hold");
        };
        assert!(reason.contains("secret/data/bootstrap/app key two holds another value than $B"));
        assert!(reason.contains("secret/data/bootstrap/other key token is missing"));
        assert!(!reason.contains("secret-value"));
        let ok = vec![
            (Compare::Same, None),
            (Compare::PresentNotCaptured, None),
            (Compare::Same, None),
        ];
        assert_eq!(describe("secret", &s.secrets, &ok), Verified::Holds);
    }
}
