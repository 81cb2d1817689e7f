//! `vault.seal-key` (`[vault] seal = "static"`): the key OpenBao's static seal unseals with,
//! generated once by kubestrap and kept in a Secret in Vault's namespace, which the server pod
//! mounts read-only ([`StaticSeal`] names the Secret, its entry and the mounted file).
//!
//! The Secret is created before the Helm release, so the pod can mount it when it first
//! starts; it is never overwritten or recreated: the key in it is the one the server's data is
//! encrypted with, so a re-run reuses it. The key never leaves a [`SecretString`]: it is taught
//! to the redactor, and plans and errors name the Secret, never its value.

use ::kube::Api;
use ::kube::api::PostParams;
use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use secrecy::SecretString;
use serde::Serialize;

use super::obj;
use super::support::{ClusterContext, checks, step_identity};
use crate::engine::{Action, Step, StepContext, StepError, StepOutcome, Verified};
use crate::playbook::LoadedPlaybook;

/// Length of the static seal's AES-256 key (OpenBao refuses any other length).
pub const KEY_LEN: usize = 32;

/// Where the static seal's key lives: its Secret and how the server pod sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticSeal {
    /// The Secret in Vault's namespace: `<release>-static-seal`.
    pub secret: String,
}

impl StaticSeal {
    /// The Secret's entry holding the key: 32 random bytes in standard base64 without a
    /// newline, one of the encodings OpenBao reads from the key file (raw, hex, base64;
    /// measured with 2.7.2: a trailing newline is refused).
    pub const ENTRY: &'static str = "key";
    /// The key id the seal stanza names (`current_key_id`), recorded with the data it wraps.
    pub const KEY_ID: &'static str = "kubestrap-1";

    /// For `[vault] release`.
    #[must_use]
    pub fn new(release: &str) -> Self {
        Self {
            secret: format!("{release}-static-seal"),
        }
    }

    /// Where the pod mounts the Secret (openbao-helm's convention for user files:
    /// `/openbao/userconfig/<secret>`).
    #[must_use]
    pub fn mount_dir(&self) -> String {
        format!("/openbao/userconfig/{}", self.secret)
    }

    /// The key file the seal stanza reads.
    #[must_use]
    pub fn key_path(&self) -> String {
        format!("{}/{}", self.mount_dir(), Self::ENTRY)
    }

    /// The pod volume's name.
    #[must_use]
    pub fn volume(&self) -> &'static str {
        "static-seal-key"
    }

    /// The server configuration's seal stanza (OpenBao 2.4+ `seal "static"`).
    #[must_use]
    pub fn stanza(&self) -> String {
        format!(
            "seal \"static\" {{\n  current_key_id = \"{}\"\n  current_key = \"file://{}\"\n}}\n",
            Self::KEY_ID,
            self.key_path()
        )
    }
}

/// Whether `bytes` is a key file OpenBao's static seal reads (measured with 2.7.2): exactly
/// [`KEY_LEN`] raw bytes, or their hex or standard base64 form with nothing around it.
fn is_key(bytes: &[u8]) -> bool {
    if bytes.len() == KEY_LEN {
        return true;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let decoded = hex::decode(text)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .map(zeroize::Zeroizing::new);
    decoded.is_some_and(|d| d.len() == KEY_LEN)
}

/// Generates a fresh key: [`KEY_LEN`] random bytes, base64 (see [`StaticSeal::ENTRY`]).
fn generate_key() -> SecretString {
    let bytes = zeroize::Zeroizing::new(rand::random::<[u8; KEY_LEN]>());
    SecretString::from(base64::engine::general_purpose::STANDARD.encode(bytes.as_slice()))
}

/// `vault.seal-key`: create the static seal's key Secret once.
#[derive(Debug, Clone, Serialize)]
pub struct VaultSealKey {
    /// Vault's namespace (created here when absent, as the Secret must live in it).
    pub namespace: String,
    /// The key's Secret.
    pub seal: StaticSeal,
}

impl VaultSealKey {
    /// From `[vault]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let v = &pb.playbook.vault;
        Self {
            namespace: v.namespace.clone(),
            seal: StaticSeal::new(&v.release),
        }
    }

    fn what(&self) -> String {
        obj("Secret", &self.namespace, &self.seal.secret)
    }

    /// The Secret, or `None` when it does not exist.
    async fn read(&self, ctx: &StepContext) -> Result<Option<Secret>, StepError> {
        let api: Api<Secret> = Api::namespaced(ctx.kube().await?, &self.namespace);
        checks::read(&api, &self.seal.secret, &self.what()).await
    }

    /// Whether `secret` holds a usable key; teaches the key to the redactor.
    fn check(&self, secret: &Secret) -> Verified {
        let bytes = secret.data.as_ref().and_then(|d| d.get(StaticSeal::ENTRY));
        if let Some(b) = bytes
            && !is_key(&b.0)
        {
            return Verified::DoesNotHold {
                reason: format!(
                    "{} entry `{}` is not a {KEY_LEN}-byte key (raw, hex or base64 without a newline, as OpenBao reads it): restore the key the data was encrypted with",
                    self.what(),
                    StaticSeal::ENTRY
                ),
            };
        }
        let key = bytes.map(|b| SecretString::from(String::from_utf8_lossy(&b.0).into_owned()));
        let Some(key) = key else {
            return Verified::DoesNotHold {
                reason: format!(
                    "{} has no `{}` entry: restore it from your copy of the seal key (the server cannot unseal without it)",
                    self.what(),
                    StaticSeal::ENTRY
                ),
            };
        };
        crate::secrets::redact::mask_also("VAULT_STATIC_SEAL_KEY", &key);
        Verified::Holds
    }
}

#[async_trait::async_trait]
impl Step for VaultSealKey {
    step_identity!("vault.seal-key");

    async fn plan(&self, ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        let existing = match ctx.kube().await {
            Ok(_) => self.read(ctx).await.ok().flatten(),
            Err(_) => None,
        };
        Ok(match existing {
            Some(_) => vec![Action::unchanged(self.what()).with_detail("kept: the key the data is encrypted with")],
            None => vec![
                Action::create(format!("Namespace {}", self.namespace))
                    .with_detail("when absent"),
                Action::create(self.what()).with_detail(format!(
                    "{KEY_LEN} random bytes generated by kubestrap (entry `{}`), mounted by the server at {}; never overwritten",
                    StaticSeal::ENTRY,
                    self.seal.key_path()
                )),
            ],
        })
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        if let Some(secret) = self.read(ctx).await? {
            return match self.check(&secret) {
                Verified::Holds => Ok(StepOutcome::new(false)),
                Verified::DoesNotHold { reason } => Err(StepError::permanent(reason)),
            };
        }
        let client = ctx.kube().await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        match namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(::kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                return Err(StepError::classify(
                    format!("create Namespace {}", self.namespace),
                    e,
                ));
            }
        }
        let key = generate_key();
        crate::secrets::redact::mask_also("VAULT_STATIC_SEAL_KEY", &key);
        let secret = crate::kube::opaque_secret(
            &self.namespace,
            &self.seal.secret,
            &[(StaticSeal::ENTRY, &key)],
        );
        let created = crate::kube::create_secret_if_absent(&client, &secret)
            .await
            .map_err(|e| StepError::transient(format!("create {}: {e}", self.what())))?;
        drop(secret);
        if created {
            ctx.progress(format!(
                "generated the static seal key into {}",
                self.what()
            ));
        }
        Ok(StepOutcome::new(created))
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        Ok(match self.read(ctx).await? {
            Some(secret) => self.check(&secret),
            None => checks::missing(&self.what()),
        })
    }
}

/// What `sys/init` answers under an auto-unseal seal such as the static one (measured with
/// OpenBao 2.7.2: 200 with `keys: []`, the recovery keys in hex and base64, the root token).
#[derive(serde::Deserialize)]
struct RecoveryInitBody {
    #[serde(default)]
    recovery_keys: Vec<SecretString>,
    root_token: SecretString,
}

/// The recovery keys (hex, as `recovery_keys`) and root token of a Vault initialised under the
/// static seal.
pub(crate) struct RecoveryInit {
    /// Recovery key shares (for `generate-root` and the like; they cannot unseal).
    pub recovery: Vec<SecretString>,
    /// The root token.
    pub root: SecretString,
}

/// `POST sys/init` with `recovery_shares`/`recovery_threshold` (and no `secret_shares`, which
/// OpenBao refuses under the static seal: 400 "parameters secret_shares,secret_threshold not
/// applicable to seal type static"). The server comes out of it unsealed.
///
/// # Errors
/// Transient when Vault does not answer or answers 5xx; permanent for its 4xx answers.
pub(crate) async fn init_with_recovery(
    session: &super::vault_api::VaultSession,
    shares: u8,
    threshold: u8,
) -> Result<RecoveryInit, StepError> {
    const ACTION: &str = "initialise Vault (POST /v1/sys/init with recovery shares)";
    let body = serde_json::json!({
        "recovery_shares": shares,
        "recovery_threshold": threshold,
    });
    let (code, bytes) = super::vault_status::call(
        session,
        reqwest::Method::POST,
        "sys/init",
        Some(&body),
        ACTION,
    )
    .await?;
    let bytes = zeroize::Zeroizing::new(bytes);
    if code != 200 {
        // An error answer carries Vault's `errors`, never keys.
        let error = super::vault_status::server_error(code, &bytes, "a sys/init answer");
        return Err(StepError::classify(ACTION, error));
    }
    let parsed: RecoveryInitBody = serde_json::from_slice(&bytes).map_err(|_| {
        StepError::permanent(format!(
            "{ACTION}: Vault answered 200 with a body that is not an init answer"
        ))
    })?;
    Ok(RecoveryInit {
        recovery: parsed.recovery_keys,
        root: parsed.root_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stanza_points_at_the_mounted_key_file() {
        let seal = StaticSeal::new("openbao");
        assert_eq!(seal.secret, "openbao-static-seal");
        assert_eq!(
            seal.key_path(),
            "/openbao/userconfig/openbao-static-seal/key"
        );
        assert_eq!(
            seal.stanza(),
            "seal \"static\" {\n  current_key_id = \"kubestrap-1\"\n  current_key = \"file:///openbao/userconfig/openbao-static-seal/key\"\n}\n"
        );
    }

    /// What OpenBao 2.7.2 accepted and refused as its key file.
    #[test]
    fn key_files_are_checked_as_openbao_reads_them() {
        assert!(is_key(&[1u8; KEY_LEN]));
        assert!(is_key(hex::encode([1u8; KEY_LEN]).as_bytes()));
        assert!(!is_key(
            format!("{}\n", hex::encode([1u8; KEY_LEN])).as_bytes()
        ));
        assert!(is_key(
            base64::engine::general_purpose::STANDARD
                .encode([1u8; KEY_LEN])
                .as_bytes()
        ));
        assert!(!is_key(&[1u8; 16]));
        assert!(!is_key(b"not-a-key"));
    }

    #[test]
    fn keys_are_32_random_bytes_in_base64() {
        use secrecy::ExposeSecret;
        let a = generate_key();
        let b = generate_key();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(a.expose_secret())
            .expect("base64");
        assert_eq!(bytes.len(), KEY_LEN);
        assert!(is_key(a.expose_secret().as_bytes()));
        assert!(!a.expose_secret().ends_with('\n'));
        assert_ne!(a.expose_secret(), b.expose_secret());
    }
}
