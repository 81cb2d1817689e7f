//! Reaching Vault's API from a step: through a port-forward to the Vault Service (the pod is
//! re-resolved for each connection, so a restarted pod is picked up) or at a configured address,
//! with vaultrs. Also reading the keys Secret (`unseal-key-<n>`, `root-token`, see
//! `phases/README.md`), whose values never leave [`SecretString`]s.

use std::sync::Arc;
use std::time::Duration;

use ::kube::Api;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use secrecy::{ExposeSecret, SecretString};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::support::ClusterContext;
use super::support::tunnels::{ServicePort, Tunnel};
use super::vault::VaultEndpoint;
use crate::engine::{StepContext, StepError};
use crate::playbook::VaultAccess;

/// Vault's API port in the chart's Service.
const VAULT_PORT: u16 = 8200;
/// Time limit of one Vault request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An open connection to Vault; the port-forward (if any) lives as long as this.
pub(crate) struct VaultSession {
    /// The vaultrs client.
    pub client: VaultClient,
    /// The address the client uses (`http://127.0.0.1:<port>` for a port-forward).
    pub addr: String,
    tunnel: Option<Arc<Tunnel>>,
}

impl std::fmt::Debug for VaultSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSession")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl VaultSession {
    /// The URL of `path` under `/v1/` on the address the client uses, for the calls kubestrap
    /// makes itself (the ones vaultrs's types do not fit).
    pub(crate) fn api_url(&self, path: &str) -> String {
        format!(
            "{}/v1/{path}",
            self.client.settings.address.as_str().trim_end_matches('/')
        )
    }

    /// The last failure of the port-forward under this session, if it goes through one: why a
    /// request that did not reach Vault failed (the pod went away, the API refused the tunnel).
    pub(crate) fn tunnel_error(&self) -> Option<String> {
        self.tunnel.as_ref().and_then(|t| t.last_error())
    }
}

/// Opens a session to Vault, authenticated with `token` when given. Through a port-forward,
/// every session of the run shares one tunnel and its connection pool.
///
/// # Errors
/// A transient [`StepError`] when the Service has no running pod yet or the forward fails.
pub(crate) async fn connect(
    ctx: &StepContext,
    endpoint: &VaultEndpoint,
    token: Option<&SecretString>,
) -> Result<VaultSession, StepError> {
    crate::kube::install_crypto_provider();
    let (addr, tunnel) = match endpoint.access {
        VaultAccess::PortForward => {
            let to = ServicePort {
                namespace: &endpoint.namespace,
                service: &endpoint.service,
                port: VAULT_PORT,
                request_timeout: REQUEST_TIMEOUT,
            };
            let tunnel = ctx.tunnel("Vault", &to).await?;
            (tunnel.http_url(), Some(tunnel))
        }
        VaultAccess::Address => (
            endpoint.address.clone().ok_or_else(|| {
                StepError::permanent("[vault] access = \"address\" needs [vault] address")
            })?,
            None,
        ),
    };
    let mut settings = VaultClientSettingsBuilder::default();
    settings
        .address(&addr)
        .timeout(Some(REQUEST_TIMEOUT))
        .token(
            token
                .map(|t| t.expose_secret().to_owned())
                .unwrap_or_default(),
        );
    let settings = settings
        .build()
        .map_err(|e| StepError::permanent(format!("configure the Vault client: {e}")))?;
    let mut client = VaultClient::new(settings)
        .map_err(|e| StepError::permanent(format!("create the Vault client: {e}")))?;
    if let Some(tunnel) = &tunnel {
        client.http = rustify::clients::reqwest::Client::new(&addr, tunnel.http().clone());
    }
    Ok(VaultSession {
        client,
        addr,
        tunnel,
    })
}

/// Whether a Vault error is a plain 404 (nothing at that path).
pub(crate) fn is_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::APIError { code: 404, .. })
}

/// Vault's state as the health endpoint reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VaultState {
    /// `sys/init` was never called.
    Uninitialized,
    /// Initialised, sealed.
    Sealed,
    /// Initialised and unsealed.
    Unsealed,
}

/// Asks `sys/health` ([`super::vault_status`]: works against Vault and OpenBao); a standby
/// node (also a raft node in the moments after unsealing) counts as unsealed.
///
/// # Errors
/// A transient [`StepError`] when Vault does not answer or answers 5xx.
pub(crate) async fn state(session: &VaultSession) -> Result<VaultState, StepError> {
    Ok(VaultState::of(&super::vault_status::health(session).await?))
}

impl VaultState {
    /// The state a `sys/health` answer describes.
    pub(crate) fn of(health: &super::vault_status::Health) -> Self {
        use super::vault_status::Node;
        match health.node() {
            Node::Uninitialized => Self::Uninitialized,
            Node::Sealed => Self::Sealed,
            Node::Standby | Node::Active => Self::Unsealed,
        }
    }
}

/// Whether Vault (reached through `endpoint`) is unsealed: the `verify` of both `vault.unseal`
/// and `verify.vault`.
///
/// # Errors
/// A transient [`StepError`] when Vault cannot be reached or does not answer.
pub(crate) async fn verify_unsealed(
    ctx: &StepContext,
    endpoint: &VaultEndpoint,
) -> Result<crate::engine::Verified, StepError> {
    use crate::engine::Verified;
    let session = connect(ctx, endpoint, None).await?;
    let health = super::vault_status::health(&session).await?;
    identify_vault(ctx, &health)?;
    Ok(match VaultState::of(&health) {
        VaultState::Unsealed => Verified::Holds,
        other => Verified::DoesNotHold {
            reason: format!("Vault is {other:?}"),
        },
    })
}

/// Tells the run which Vault this is (its `cluster_id`, sent while unsealed), so a checkpoint
/// of another Vault is refused.
///
/// # Errors
/// The run's refusal when the checkpoint records another Vault.
pub(crate) fn identify_vault(
    ctx: &StepContext,
    health: &super::vault_status::Health,
) -> Result<(), StepError> {
    match health.cluster_id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => ctx.identify(crate::engine::Identity::Vault, id),
        None => Ok(()),
    }
}

/// The contents of the keys Secret.
pub(crate) struct VaultKeys {
    /// Unseal shares in order.
    pub unseal: Vec<SecretString>,
    /// The root token.
    pub root: SecretString,
}

impl std::fmt::Debug for VaultKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKeys")
            .field("unseal", &self.unseal.len())
            .finish_non_exhaustive()
    }
}

/// Key of share `n` in the keys Secret.
pub(crate) fn share_key(n: usize) -> String {
    format!("unseal-key-{n}")
}

/// Key of recovery share `n` in the keys Secret of a Vault under the static seal, which hands
/// out recovery keys (they authorise `generate-root` and the like, and cannot unseal).
pub(crate) fn recovery_key(n: usize) -> String {
    format!("recovery-key-{n}")
}

/// Key of the root token in the keys Secret.
pub(crate) const ROOT_TOKEN_KEY: &str = "root-token";

/// Teach the run's redactor Vault's root token and unseal keys, so no log line, error or
/// record can show them (issue 5: they are secrets kubestrap creates, not captures).
pub(crate) fn mask_vault_secrets(root: &SecretString, unseal: &[SecretString]) {
    crate::secrets::redact::mask_also("VAULT_ROOT_TOKEN", root);
    for key in unseal {
        crate::secrets::redact::mask_also("VAULT_UNSEAL_KEY", key);
    }
}

/// Reads the keys Secret; `None` when it does not exist.
///
/// # Errors
/// A classified [`StepError`] when it cannot be read, or a permanent one when it lacks the
/// root token or shares.
pub(crate) async fn read_keys(
    ctx: &StepContext,
    namespace: &str,
    name: &str,
) -> Result<Option<VaultKeys>, StepError> {
    let Some(data) = keys_secret_data(ctx, namespace, name).await? else {
        return Ok(None);
    };
    let text = |k: &str| {
        data.get(k)
            .map(|b| SecretString::from(String::from_utf8_lossy(&b.0).into_owned()))
    };
    let root = text(ROOT_TOKEN_KEY).ok_or_else(|| {
        StepError::permanent(format!(
            "Secret {namespace}/{name} has no {ROOT_TOKEN_KEY} entry: it was not written by kubestrap's vault.init; see the recovery section of the README"
        ))
    })?;
    let unseal: Vec<SecretString> = (0..).map_while(|n| text(&share_key(n))).collect();
    let recovery: Vec<SecretString> = (0..).map_while(|n| text(&recovery_key(n))).collect();
    mask_vault_secrets(&root, &unseal);
    for key in &recovery {
        crate::secrets::redact::mask_also("VAULT_RECOVERY_KEY", key);
    }
    // A static-seal Vault's Secret holds recovery keys instead of unseal keys.
    if unseal.is_empty() && recovery.is_empty() {
        return Err(StepError::permanent(format!(
            "Secret {namespace}/{name} holds no unseal-key-<n> entries: see the recovery section of the README"
        )));
    }
    Ok(Some(VaultKeys { unseal, root }))
}

/// The keys Secret's data (empty when it has none), or `None` when the Secret does not exist.
async fn keys_secret_data(
    ctx: &StepContext,
    namespace: &str,
    name: &str,
) -> Result<Option<std::collections::BTreeMap<String, ByteString>>, StepError> {
    let api: Api<Secret> = Api::namespaced(ctx.kube().await?, namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| StepError::classify(format!("read Secret {namespace}/{name}"), e))?;
    Ok(secret.map(|s| s.data.unwrap_or_default()))
}

/// Reads only the unseal shares of the keys Secret (`kubestrap unseal` needs no root token,
/// and an operator may have removed it); `None` when the Secret does not exist. The shares are
/// taught to the redactor before this returns.
///
/// # Errors
/// A classified [`StepError`] when it cannot be read, or a permanent one when it holds no
/// `unseal-key-<n>` entries.
pub(crate) async fn read_shares(
    ctx: &StepContext,
    namespace: &str,
    name: &str,
) -> Result<Option<Vec<SecretString>>, StepError> {
    let Some(data) = keys_secret_data(ctx, namespace, name).await? else {
        return Ok(None);
    };
    let unseal: Vec<SecretString> = (0..)
        .map_while(|n| data.get(&share_key(n)))
        .map(|b| SecretString::from(String::from_utf8_lossy(&b.0).trim().to_owned()))
        .collect();
    for key in &unseal {
        crate::secrets::redact::mask_also("VAULT_UNSEAL_KEY", key);
    }
    if unseal.is_empty() {
        return Err(StepError::permanent(format!(
            "Secret {namespace}/{name} holds no unseal-key-<n> entries: see the README's \"Recovering the Vault keys Secret\""
        )));
    }
    Ok(Some(unseal))
}

/// Reads the root token from the keys Secret, which must exist by now.
///
/// # Errors
/// A permanent [`StepError`] when the Secret is missing.
pub(crate) async fn root_token(
    ctx: &StepContext,
    endpoint: &VaultEndpoint,
    keys_secret: &str,
) -> Result<SecretString, StepError> {
    read_keys(ctx, &endpoint.namespace, keys_secret)
        .await?
        .map(|k| k.root)
        .ok_or_else(|| {
            StepError::permanent(format!(
                "Secret {}/{keys_secret} with Vault's root token is missing: run vault.init first (`kubestrap apply --resume`)",
                endpoint.namespace
            ))
        })
}
