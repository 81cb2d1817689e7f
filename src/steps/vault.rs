//! Vault: install through Flux, initialise (keys straight into the keys Secret), unseal, the
//! auto-unsealer, and the configuration External Secrets needs (KV v2, Kubernetes auth, policy,
//! role).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ::kube::api::{Api, DeleteParams};
use backon::{ExponentialBuilder, Retryable};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::chart::VaultNames;
use super::obj;
use super::support::checks;
use super::support::{
    ClusterContext, StepWaits, TemplateStep, deployments_available, step_identity,
};
use super::unseal::Submitted;
use super::vault_api::{
    ROOT_TOKEN_KEY, VaultKeys, VaultSession, VaultState, connect, is_not_found, read_keys,
    root_token, share_key, state, verify_unsealed,
};
use crate::engine::{Action, Step, StepContext, StepError, StepOutcome, Verified};
use crate::playbook::{HumanDuration, LoadedPlaybook, VaultAccess, VaultFlavor, VaultSeal};
use crate::templates::{self, Manifest};

/// How a step reaches Vault's API, for plan text.
fn reach(access: VaultAccess, namespace: &str, service: &str, address: Option<&str>) -> Action {
    match access {
        VaultAccess::PortForward => Action::run(format!(
            "port-forward to Service {namespace}/{service}:8200"
        )),
        VaultAccess::Address => {
            let address = address.unwrap_or("?");
            let action = Action::run(format!("connect to {address}"));
            if address.starts_with("http://") {
                action.with_detail(
                    "warning: plain http ([vault] allow_http = true): the root token and the bootstrap secrets cross the network unencrypted",
                )
            } else {
                action
            }
        }
    }
}

/// Where Vault is and how to reach it; shared by the Vault API steps.
#[derive(Debug, Clone, Serialize)]
pub struct VaultEndpoint {
    /// Vault's namespace.
    pub namespace: String,
    /// The chart's Service in front of Vault (its fullname, see [`VaultNames`]).
    pub service: String,
    /// The Vault server pod (`<fullname>-0`).
    pub pod: String,
    /// Access mode.
    pub access: VaultAccess,
    /// Address for `access = "address"`.
    pub address: Option<String>,
}

impl VaultEndpoint {
    /// The chart's defaults (`vault/vault`, pod `vault-0`) through a port-forward: the unit
    /// tests' endpoint.
    #[cfg(test)]
    pub(crate) fn default_port_forward() -> Self {
        Self {
            namespace: "vault".into(),
            service: "vault".into(),
            pod: "vault-0".into(),
            access: VaultAccess::PortForward,
            address: None,
        }
    }

    pub(crate) fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let v = &pb.playbook.vault;
        let names = VaultNames::new(v.flavor, &v.release);
        Self {
            namespace: v.namespace.clone(),
            service: names.service().to_owned(),
            pod: names.pod(),
            access: v.access,
            address: v.address.clone(),
        }
    }

    fn action(&self) -> Action {
        reach(
            self.access,
            &self.namespace,
            &self.service,
            self.address.as_deref(),
        )
    }
}

/// `vault.ready`: the HelmRelease is Ready and the Vault pod runs (sealed is expected here).
#[derive(Debug, Clone, Serialize)]
pub struct VaultReady {
    /// Vault's namespace.
    pub namespace: String,
    /// Release name (the HelmRelease's).
    pub release: String,
    /// The server pod (`<fullname>-0`, see [`VaultNames`]).
    pub pod: String,
    /// Wait limit.
    pub timeout: HumanDuration,
}

impl VaultReady {
    /// From `[vault]` and `[timeouts]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let v = &pb.playbook.vault;
        Self {
            namespace: v.namespace.clone(),
            release: v.release.clone(),
            pod: VaultNames::new(v.flavor, &v.release).pod(),
            timeout: pb.playbook.timeouts.vault_ready,
        }
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            Action::run(format!(
                "wait for {} Ready (timeout {})",
                obj("HelmRelease", &self.namespace, &self.release),
                self.timeout
            )),
            Action::run(format!(
                "wait for {} Running",
                obj("Pod", &self.namespace, &self.pod)
            )),
            Action::run("GET /v1/sys/health (501 uninitialised or 503 sealed are expected)"),
        ]
    }
}

#[async_trait::async_trait]
impl Step for VaultReady {
    step_identity!("vault.ready");

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        Ok(self.actions())
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let waits = StepWaits::new(ctx, ctx.kube().await?, self.timeout);
        let shared = waits.sharing_a_walk(&self.namespace, &self.release);
        waits
            .below_release(
                &self.namespace,
                &self.release,
                shared.pod(&self.namespace, &self.pod, crate::kube::PodState::Running),
            )
            .await?;
        Ok(StepOutcome::ready())
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        let api: Api<Pod> = Api::namespaced(ctx.kube().await?, &self.namespace);
        let pod = &self.pod;
        let phase = api
            .get_opt(pod)
            .await
            .map_err(|e| StepError::classify("read the Vault pod", e))?
            .and_then(|p| p.status.and_then(|s| s.phase));
        Ok(if phase.as_deref() == Some("Running") {
            Verified::Holds
        } else {
            Verified::DoesNotHold {
                reason: format!(
                    "Pod {}/{pod} is {}",
                    self.namespace,
                    phase.as_deref().unwrap_or("missing")
                ),
            }
        })
    }
}

/// `vault.init`: `sys/init` once, the keys into the keys Secret immediately after.
#[derive(Debug, Clone, Serialize)]
pub struct VaultInit {
    /// How to reach Vault.
    pub endpoint: VaultEndpoint,
    /// Key shares.
    pub key_shares: u8,
    /// Threshold.
    pub key_threshold: u8,
    /// Secret that receives the keys and root token.
    pub keys_secret: String,
    /// The seal: under the static seal, `key_shares`/`key_threshold` are recovery shares.
    /// Left out of the payload for Shamir, so existing checkpoints keep their input hashes.
    #[serde(skip_serializing_if = "VaultSeal::is_shamir")]
    pub seal: VaultSeal,
}

impl VaultInit {
    /// From `[vault]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let v = &pb.playbook.vault;
        Self {
            endpoint: VaultEndpoint::from_playbook(pb),
            key_shares: v.key_shares,
            key_threshold: v.key_threshold,
            keys_secret: v.keys_secret.clone(),
            seal: v.seal,
        }
    }

    fn actions(&self) -> Vec<Action> {
        let secret = obj("Secret", &self.endpoint.namespace, &self.keys_secret);
        let (init, keys) = if self.seal.is_static() {
            (
                format!(
                    "POST /v1/sys/init (recovery_shares {}, recovery_threshold {}; static seal: no unseal keys)",
                    self.key_shares, self.key_threshold
                ),
                format!(
                    "{} recovery keys and the root token, written right after init",
                    self.key_shares
                ),
            )
        } else {
            (
                format!(
                    "POST /v1/sys/init (secret_shares {}, secret_threshold {})",
                    self.key_shares, self.key_threshold
                ),
                format!(
                    "{} unseal keys and the root token, written right after init",
                    self.key_shares
                ),
            )
        };
        vec![
            self.endpoint.action(),
            Action::run("GET /v1/sys/init"),
            Action::run(init)
            .with_detail(format!("only when not initialised; initialised without {secret} is an error with a documented recovery")),
            Action::create(secret).with_detail(keys),
        ]
    }
}

/// File under the cluster's state directory that receives the init response when the keys
/// Secret cannot be written (mode 0600).
pub const EMERGENCY_FILE: &str = "vault-init-keys.emergency.json";

/// How often the keys Secret write is tried before falling back to the emergency file.
const KEYS_WRITE_ATTEMPTS: usize = 5;

/// The recovery text for an initialised Vault whose keys Secret is gone.
fn recovery_text(namespace: &str, pod: &str, secret: &str, emergency: &Path) -> String {
    format!(
        "Vault is already initialised but Secret {namespace}/{secret} with its unseal keys and root token is missing, and kubestrap never re-initialises a Vault (that would destroy its data). Recovery (README, \"Recovering the Vault keys Secret\"): \
1) if you kept the keys, recreate the Secret with entries unseal-key-0..unseal-key-N and root-token: \
`kubectl -n {namespace} create secret generic {secret} --from-file=unseal-key-0=KEY0 ... --from-file=root-token=TOKEN`, then run `kubestrap apply --resume`; \
2) if kubestrap saved an emergency copy at {}, put that file back and run `kubestrap apply --resume`: it restores the Secret from it; \
3) if the keys are lost, Vault's data cannot be decrypted: delete Vault's storage (`kubectl -n {namespace} delete pvc data-{pod}` and the pod) so it starts uninitialised, then run `kubestrap apply --resume`, which initialises it again",
        emergency.display()
    )
}

#[derive(serde::Serialize, serde::Deserialize)]
struct EmergencyCopy {
    keys: Vec<String>,
    root_token: String,
}

impl VaultInit {
    fn emergency_path(&self, ctx: &StepContext) -> PathBuf {
        ctx.state_dir().join(EMERGENCY_FILE)
    }

    /// Writes the keys Secret (replacing a stale one when `replace`), retrying transient
    /// failures; after the last failure the keys go to the 0600 emergency file instead.
    async fn store_keys(
        &self,
        ctx: &StepContext,
        keys: &[SecretString],
        root: &SecretString,
        replace: bool,
    ) -> Result<(), StepError> {
        let client = ctx.kube().await?;
        let name_of = if self.seal.is_static() {
            super::vault_api::recovery_key
        } else {
            share_key
        };
        let names: Vec<String> = (0..keys.len()).map(name_of).collect();
        let mut entries: Vec<(&str, &SecretString)> =
            names.iter().map(String::as_str).zip(keys.iter()).collect();
        entries.push((ROOT_TOKEN_KEY, root));
        let secret =
            crate::kube::opaque_secret(&self.endpoint.namespace, &self.keys_secret, &entries);
        let api: Api<Secret> = Api::namespaced(client.clone(), &self.endpoint.namespace);
        let write = || async {
            if replace {
                match api
                    .delete(&self.keys_secret, &DeleteParams::default())
                    .await
                {
                    Ok(_) => {}
                    Err(::kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            crate::kube::create_secret_if_absent(&client, &secret)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_times(KEYS_WRITE_ATTEMPTS - 1);
        let Err(last) = write.retry(backoff).await else {
            return Ok(());
        };
        drop(secret);
        let path = self.emergency_path(ctx);
        let copy = EmergencyCopy {
            keys: keys.iter().map(|k| k.expose_secret().to_owned()).collect(),
            root_token: root.expose_secret().to_owned(),
        };
        let text = zeroize::Zeroizing::new(
            serde_json::to_string(&copy).map_err(|e| StepError::permanent(e.to_string()))?,
        );
        drop(copy);
        write_private(&path, &text)?;
        Err(StepError::permanent(format!(
            "Vault was initialised but Secret {}/{} could not be written after {KEYS_WRITE_ATTEMPTS} attempts ({last}); the unseal keys and root token were saved to {} (mode 0600, the only copy: keep it safe). Fix the cluster and run `kubestrap apply --resume`: it writes the Secret from that file and then deletes the file",
            self.endpoint.namespace,
            self.keys_secret,
            path.display()
        )))
    }

    /// Restores the keys Secret from an emergency copy left by an earlier run.
    async fn restore_from_emergency(&self, ctx: &StepContext) -> Result<bool, StepError> {
        let path = self.emergency_path(ctx);
        let Ok(text) = std::fs::read_to_string(&path).map(zeroize::Zeroizing::new) else {
            return Ok(false);
        };
        let copy: EmergencyCopy = serde_json::from_str(&text).map_err(|e| {
            StepError::permanent(format!(
                "{} is not a kubestrap emergency copy: {e}",
                path.display()
            ))
        })?;
        let keys: Vec<SecretString> = copy.keys.into_iter().map(SecretString::from).collect();
        let root = SecretString::from(copy.root_token);
        self.store_keys(ctx, &keys, &root, false).await?;
        std::fs::remove_file(&path)
            .map_err(|e| StepError::permanent(format!("remove {}: {e}", path.display())))?;
        ctx.progress(format!(
            "restored Secret {}/{} from {}",
            self.endpoint.namespace,
            self.keys_secret,
            path.display()
        ));
        Ok(true)
    }
}

#[async_trait::async_trait]
impl Step for VaultInit {
    step_identity!("vault.init");

    async fn plan(&self, ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        if let Ok(Verified::Holds) = self.verify(ctx).await {
            return Ok(vec![
                self.endpoint.action(),
                Action::unchanged("Vault initialised"),
                Action::unchanged(obj("Secret", &self.endpoint.namespace, &self.keys_secret)),
            ]);
        }
        Ok(self.actions())
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let session = connect(ctx, &self.endpoint, None).await?;
        let vault = state(&session).await?;
        let existing = read_keys(ctx, &self.endpoint.namespace, &self.keys_secret).await;
        match vault {
            VaultState::Uninitialized => {
                let stale = !matches!(existing, Ok(None));
                if stale {
                    ctx.progress(format!(
                        "Vault is uninitialised: Secret {}/{} belongs to an earlier Vault and will be replaced",
                        self.endpoint.namespace, self.keys_secret
                    ));
                }
                let (keys, root) = if self.seal.is_static() {
                    let init = super::seal_key::init_with_recovery(
                        &session,
                        self.key_shares,
                        self.key_threshold,
                    )
                    .await?;
                    (init.recovery, init.root)
                } else {
                    let resp = vaultrs::sys::start_initialization(
                        &session.client,
                        u64::from(self.key_shares),
                        u64::from(self.key_threshold),
                        None,
                    )
                    .await
                    .map_err(|e| StepError::classify("initialise Vault (POST /v1/sys/init)", e))?;
                    let keys: Vec<SecretString> =
                        resp.keys.into_iter().map(SecretString::from).collect();
                    drop(resp.keys_base64);
                    (keys, SecretString::from(resp.root_token))
                };
                // Secrets born in this run: the redactor must know them before anything can
                // print them (issue 5).
                super::vault_api::mask_vault_secrets(&root, &keys);
                ctx.progress("Vault initialised; writing the keys Secret");
                self.store_keys(ctx, &keys, &root, stale).await?;
                Ok(StepOutcome::new(true))
            }
            VaultState::Sealed | VaultState::Unsealed => match existing? {
                Some(_) => Ok(StepOutcome::new(false)),
                None => {
                    if self.restore_from_emergency(ctx).await? {
                        return Ok(StepOutcome::new(true));
                    }
                    Err(StepError::permanent(recovery_text(
                        &self.endpoint.namespace,
                        &self.endpoint.pod,
                        &self.keys_secret,
                        &self.emergency_path(ctx),
                    )))
                }
            },
        }
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        let session = connect(ctx, &self.endpoint, None).await?;
        if state(&session).await? == VaultState::Uninitialized {
            return Ok(Verified::DoesNotHold {
                reason: "Vault is not initialised".into(),
            });
        }
        Ok(
            match read_keys(ctx, &self.endpoint.namespace, &self.keys_secret).await? {
                Some(_) => Verified::Holds,
                None => Verified::DoesNotHold {
                    reason: format!(
                        "Secret {}/{} is missing",
                        self.endpoint.namespace, self.keys_secret
                    ),
                },
            },
        )
    }
}

/// Writes a file with mode 0600 in a 0700 directory (exclusive temp file, fsync, rename):
/// [`crate::secrets::write_private`], which never reuses an existing temp file's mode.
fn write_private(path: &Path, text: &str) -> Result<(), StepError> {
    crate::secrets::write_private(path, text.as_bytes())
        .map_err(|e| StepError::permanent(format!("write {}: {e}", path.display())))
}

/// `vault.unseal`: submit `threshold` keys from the keys Secret.
#[derive(Debug, Clone, Serialize)]
pub struct VaultUnseal {
    /// How to reach Vault.
    pub endpoint: VaultEndpoint,
    /// Secret holding the keys.
    pub keys_secret: String,
    /// Keys needed.
    pub key_threshold: u8,
    /// OpenBao's static seal: the server unseals itself from this key Secret, so the step
    /// only waits for it. `None` for Shamir (and left out of the payload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_seal: Option<super::seal_key::StaticSeal>,
}

impl VaultUnseal {
    /// From `[vault]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let v = &pb.playbook.vault;
        Self {
            endpoint: VaultEndpoint::from_playbook(pb),
            keys_secret: v.keys_secret.clone(),
            key_threshold: v.key_threshold,
            static_seal: v
                .seal
                .is_static()
                .then(|| super::seal_key::StaticSeal::new(&v.release)),
        }
    }

    fn actions(&self) -> Vec<Action> {
        if let Some(seal) = &self.static_seal {
            return vec![
                self.endpoint.action(),
                Action::run("GET /v1/sys/seal-status until unsealed").with_detail(format!(
                    "static seal: the server unseals itself from {}; no keys are submitted",
                    obj("Secret", &self.endpoint.namespace, &seal.secret)
                )),
            ];
        }
        vec![
            self.endpoint.action(),
            Action::run("GET /v1/sys/seal-status"),
            Action::run(format!(
                "read {}",
                obj("Secret", &self.endpoint.namespace, &self.keys_secret)
            )),
            Action::run(format!(
                "PUT /v1/sys/unseal x{} (only while sealed)",
                self.key_threshold
            )),
        ]
    }
}

/// What a fresh KV v2 mount answers (400) while it sets itself up, for a moment after
/// `sys/mounts` created it (measured on OpenBao 2.7.2: about one in three writes right after
/// the mount).
const KV_UPGRADING: &str = "Upgrading from non-versioned to versioned data";

/// Waits (at most [`ACTIVE_WAIT`]) until the fresh KV v2 mount `mount` answers `GET
/// <mount>/config`, so the writers after vault.configure (Terraform) never meet its set-up
/// window.
///
/// # Errors
/// Transient when the mount is still setting up after the wait; Vault's other errors as
/// classified.
async fn wait_kv_ready(session: &VaultSession, mount: &str) -> Result<(), StepError> {
    let deadline = tokio::time::Instant::now() + ACTIVE_WAIT;
    loop {
        match vaultrs::kv2::config::read(&session.client, mount).await {
            Ok(_) => return Ok(()),
            Err(vaultrs::error::ClientError::APIError { code: 400, errors })
                if errors.iter().any(|e| e.starts_with(KV_UPGRADING)) =>
            {
                if tokio::time::Instant::now() >= deadline {
                    return Err(StepError::transient(format!(
                        "the KV v2 mount {mount}/ was still setting up after {}s",
                        ACTIVE_WAIT.as_secs()
                    )));
                }
            }
            Err(e) => return Err(StepError::classify(format!("read {mount}/config"), e)),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// An uninitialised Vault has no seal to open: `vault.init` comes first.
fn nothing_to_unseal() -> StepError {
    StepError::permanent(
        "Vault is not initialised, so there is nothing to unseal: run vault.init (`kubestrap apply --resume`)",
    )
}

/// How long an unsealed Vault may take to become the active node (a raft node: about 0.2 s).
const ACTIVE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Submits shares from the keys Secret until Vault reports unsealed; `false` when it already
/// was. Either way it returns once Vault is the active node, so the next step's writes do not
/// meet a raft node still taking leadership (500 "local node not active").
pub(crate) async fn unseal_with(
    session: &VaultSession,
    keys: &VaultKeys,
    namespace: &str,
    secret: &str,
) -> Result<bool, StepError> {
    let status = super::vault_status::seal_status(session).await?;
    if !status.initialized {
        return Err(nothing_to_unseal());
    }
    if !status.sealed {
        super::vault_status::wait_active(session, ACTIVE_WAIT).await?;
        return Ok(false);
    }
    match super::unseal::submit_shares(session, &keys.unseal).await {
        Ok(Submitted::Unsealed { .. }) => {
            super::vault_status::wait_active(session, ACTIVE_WAIT).await?;
            Ok(true)
        }
        Ok(Submitted::StillSealed {
            progress,
            threshold,
        }) => Err(StepError::permanent(format!(
            "Vault is still sealed after every unseal key in Secret {namespace}/{secret} (progress {progress}/{threshold}): the keys are wrong or too few for the threshold"
        ))),
        Err(err) if err.is_transient() => Err(err),
        Err(err) => Err(StepError::permanent(format!(
            "Vault rejected the unseal keys from Secret {namespace}/{secret} ({err}): they belong to another Vault; see the README's recovery section"
        ))),
    }
}

#[async_trait::async_trait]
impl Step for VaultUnseal {
    step_identity!("vault.unseal");

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        Ok(self.actions())
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let ns = &self.endpoint.namespace;
        if let Some(seal) = &self.static_seal {
            let session = connect(ctx, &self.endpoint, None).await?;
            wait_self_unsealed(&session, ns, &self.endpoint.pod, seal).await?;
            super::vault_api::identify_vault(ctx, &super::vault_status::health(&session).await?)?;
            return Ok(StepOutcome::new(false));
        }
        let keys = read_keys(ctx, ns, &self.keys_secret).await?.ok_or_else(|| {
            StepError::permanent(format!(
                "Secret {ns}/{} with the unseal keys is missing: run vault.init (`kubestrap apply --resume`)",
                self.keys_secret
            ))
        })?;
        let session = connect(ctx, &self.endpoint, None).await?;
        let changed = unseal_with(&session, &keys, ns, &self.keys_secret).await?;
        super::vault_api::identify_vault(ctx, &super::vault_status::health(&session).await?)?;
        Ok(StepOutcome::new(changed))
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        verify_unsealed(ctx, &self.endpoint).await
    }
}

/// How long a static-seal Vault may take to unseal itself once it answers (OpenBao 2.7.2
/// unseals within milliseconds of starting; raft then takes leadership in about 0.2 s).
const SELF_UNSEAL_WAIT: Duration = Duration::from_secs(30);

/// Waits until a Vault under the static seal reports unsealed and active: it unseals itself
/// from the mounted key at every start, so nothing is submitted.
///
/// # Errors
/// Permanent when it is not initialised, or still sealed after [`SELF_UNSEAL_WAIT`] (its key
/// Secret is missing, not mounted, or not the key its data is encrypted with).
pub(crate) async fn wait_self_unsealed(
    session: &VaultSession,
    namespace: &str,
    pod: &str,
    seal: &super::seal_key::StaticSeal,
) -> Result<(), StepError> {
    let deadline = tokio::time::Instant::now() + SELF_UNSEAL_WAIT;
    loop {
        let status = super::vault_status::seal_status(session).await?;
        if !status.initialized {
            return Err(nothing_to_unseal());
        }
        if !status.sealed {
            super::vault_status::wait_active(session, ACTIVE_WAIT).await?;
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StepError::permanent(static_seal_sealed(
                namespace, pod, seal,
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What to do about a static-seal Vault that stays sealed.
pub(crate) fn static_seal_sealed(
    namespace: &str,
    pod: &str,
    seal: &super::seal_key::StaticSeal,
) -> String {
    format!(
        "Vault uses the static seal and unseals itself at start from Secret {namespace}/{} (entry `{}`, mounted at {}), yet it is sealed: check that the Secret exists with the key the data was encrypted with and that Pod {namespace}/{pod} mounts it (`kubectl -n {namespace} describe pod {pod}`), then restart the pod",
        seal.secret,
        super::seal_key::StaticSeal::ENTRY,
        seal.key_path()
    )
}

/// `vault.auto-unseal`: a small workload that unseals Vault from the keys Secret after restarts.
#[derive(Debug, Clone, Serialize)]
pub struct VaultAutoUnseal {
    /// Which server: its image and CLI run the loop (`[vault] flavor`).
    #[serde(skip_serializing_if = "VaultFlavor::is_vault")]
    pub flavor: VaultFlavor,
    /// Vault's namespace.
    pub namespace: String,
    /// Secret holding the keys (the only thing the workload may read).
    pub keys_secret: String,
    /// Vault's in-cluster address the unsealer talks to (the chart's Service, see
    /// [`VaultNames::address`]).
    pub vault_addr: String,
    /// Shares to mount (the threshold).
    pub key_threshold: u8,
    /// Wait limit.
    pub timeout: HumanDuration,
}

/// Name of the unsealer's objects (the template's).
pub const UNSEALER_NAME: &str = "vault-unsealer";

impl VaultAutoUnseal {
    /// From `[vault]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let v = &pb.playbook.vault;
        Self {
            flavor: v.flavor,
            namespace: v.namespace.clone(),
            keys_secret: v.keys_secret.clone(),
            vault_addr: VaultNames::new(v.flavor, &v.release).address(&v.namespace),
            key_threshold: v.key_threshold,
            timeout: pb.playbook.timeouts.vault_ready,
        }
    }
}
#[async_trait::async_trait]
impl TemplateStep for VaultAutoUnseal {
    fn kind(&self) -> &'static str {
        "vault.auto-unseal"
    }

    fn manifest(&self) -> Result<String, StepError> {
        templates::VaultAutoUnseal {
            flavor: self.flavor,
            namespace: self.namespace.clone(),
            keys_secret: self.keys_secret.clone(),
            vault_image: self.flavor.image().to_owned(),
            vault_addr: self.vault_addr.clone(),
            poll_interval: templates::VaultAutoUnseal::DEFAULT_POLL_INTERVAL,
            unseal_keys: u32::from(self.key_threshold),
        }
        .render()
        .map_err(|e| StepError::permanent(e.to_string()))
    }

    fn actions(&self) -> Vec<Action> {
        let name = UNSEALER_NAME;
        vec![
            Action::create(obj("ServiceAccount", &self.namespace, name)),
            Action::create(obj("Role", &self.namespace, name))
                .with_detail(format!("get secrets/{} only", self.keys_secret)),
            Action::create(obj("RoleBinding", &self.namespace, name)),
            Action::create(obj("Deployment", &self.namespace, name)).with_detail(format!(
                "`{}` CLI of {}, {}={}",
                self.flavor.cli(),
                self.flavor.image(),
                self.flavor.addr_env(),
                self.vault_addr
            )),
            Action::run(format!(
                "wait for {} Available",
                obj("Deployment", &self.namespace, name)
            )),
        ]
    }

    /// Waits for the unsealer Deployment to be Available and, side by side, checks that it has
    /// every share to mount: waiting cannot bring back a share missing from the keys Secret
    /// (so that fails at once), and the step goes on right after the Deployment's last event.
    async fn after_apply(&self, ctx: &StepContext) -> Result<(), StepError> {
        let waits = StepWaits::new(ctx, ctx.kube().await?, self.timeout);
        let shares = async {
            match self.shares_present(ctx).await? {
                Verified::Holds => Ok(()),
                Verified::DoesNotHold { reason } => Err(StepError::permanent(format!(
                    "{reason}: put the missing entries back into the Secret from your copy of the unseal keys, then run `kubestrap apply --resume` (see the recovery section of the README)"
                ))),
            }
        };
        tokio::try_join!(
            waits.deployment_available(&self.namespace, UNSEALER_NAME),
            shares
        )
        .map(drop)
    }

    /// The unsealer works, not only exists as applied: its Deployment is Available and the
    /// keys Secret holds every share it mounts (a Secret volume with `optional: true` mounts
    /// whatever is there, so a missing share would leave Vault sealed without an error).
    async fn still_holds(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        let available = deployments_available(ctx, &self.namespace, &[UNSEALER_NAME]).await?;
        if available != Verified::Holds {
            return Ok(available);
        }
        self.shares_present(ctx).await
    }
}

impl VaultAutoUnseal {
    /// Whether the keys Secret holds every share the unsealer mounts.
    async fn shares_present(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        let what = format!("Secret {}/{}", self.namespace, self.keys_secret);
        let secrets: Api<Secret> = Api::namespaced(ctx.kube().await?, &self.namespace);
        let Some(secret) = checks::read(&secrets, &self.keys_secret, &what).await? else {
            return Ok(checks::missing(&what));
        };
        let data = secret.data.unwrap_or_default();
        let absent: Vec<String> = (0..self.key_threshold)
            .map(|n| super::vault_api::share_key(usize::from(n)))
            .filter(|k| !data.contains_key(k))
            .collect();
        Ok(if absent.is_empty() {
            Verified::Holds
        } else {
            Verified::DoesNotHold {
                reason: format!(
                    "{what} lacks {}, which Deployment {}/{UNSEALER_NAME} mounts to unseal Vault",
                    absent.join(", "),
                    self.namespace
                ),
            }
        })
    }
}

/// `vault.configure`: KV v2, Kubernetes auth, the ESO policy and role.
#[derive(Debug, Clone, Serialize)]
pub struct VaultConfigure {
    /// How to reach Vault.
    pub endpoint: VaultEndpoint,
    /// KV v2 mount.
    pub kv_mount: String,
    /// Kubernetes auth mount.
    pub auth_mount: String,
    /// ESO's policy.
    pub eso_policy: String,
    /// ESO's role.
    pub eso_role: String,
    /// ESO's namespace.
    pub eso_namespace: String,
    /// ESO's service account.
    pub eso_service_account: String,
    /// KV paths the ESO policy may read: the declared secrets' paths and nothing else.
    pub read_paths: Vec<String>,
    /// Secret holding the root token.
    pub keys_secret: String,
}

/// The in-cluster API address Vault's kubernetes auth method reviews tokens at.
pub const KUBERNETES_HOST: &str = "https://kubernetes.default.svc";

impl VaultConfigure {
    /// From `[vault]` and `[external_secrets]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let v = &pb.playbook.vault;
        let e = &pb.playbook.external_secrets;
        Self {
            endpoint: VaultEndpoint::from_playbook(pb),
            kv_mount: v.kv_mount.clone(),
            auth_mount: v.auth_mount.clone(),
            eso_policy: v.eso_policy.clone(),
            eso_role: v.eso_role.clone(),
            eso_namespace: e.namespace.clone(),
            eso_service_account: e.service_account.clone(),
            read_paths: {
                let mut paths: Vec<String> = pb
                    .playbook
                    .secrets
                    .iter()
                    .map(|s| s.vault_path.clone())
                    .collect();
                paths.sort();
                paths.dedup();
                paths
            },
            keys_secret: v.keys_secret.clone(),
        }
    }

    /// The ESO policy: `read` on exactly the declared secrets' KV v2 data paths.
    #[must_use]
    pub fn policy(&self) -> String {
        let mut hcl = String::from(
            "# Written by kubestrap: External Secrets may read the declared bootstrap secrets, nothing else.\n",
        );
        for p in &self.read_paths {
            hcl.push_str(&format!(
                "path \"{}/data/{p}\" {{\n  capabilities = [\"read\"]\n}}\n",
                self.kv_mount
            ));
        }
        hcl
    }

    /// Enables KV v2 at the mount unless it is there; a KV v1 mount there is an error.
    async fn ensure_kv(
        &self,
        ctx: &StepContext,
        session: &VaultSession,
        write: bool,
    ) -> Result<bool, StepError> {
        let mounts = vaultrs::sys::mount::list(&session.client)
            .await
            .map_err(|e| StepError::classify("list secrets engines", e))?;
        let key = format!("{}/", self.kv_mount);
        if let Some(m) = mounts.get(&key) {
            let version = m
                .options
                .as_ref()
                .and_then(|o| o.get("version"))
                .map(String::as_str);
            if m.mount_type == "kv" && version == Some("2") {
                return Ok(false);
            }
            return Err(StepError::permanent(format!(
                "Vault already has a {} engine (version {}) at {key}: kubestrap needs KV version 2 there; pick another [vault] kv_mount",
                m.mount_type,
                version.unwrap_or("1")
            )));
        }
        if !write {
            return Ok(true);
        }
        let mut opts = vaultrs::api::sys::requests::EnableEngineRequest::builder();
        opts.options(std::collections::HashMap::from([(
            "version".to_owned(),
            "2".to_owned(),
        )]))
        .description("kubestrap bootstrap secrets".to_owned());
        vaultrs::sys::mount::enable(&session.client, &self.kv_mount, "kv", Some(&mut opts))
            .await
            .map_err(|e| StepError::classify(format!("enable KV v2 at {key}"), e))?;
        wait_kv_ready(session, &self.kv_mount).await?;
        ctx.progress(format!("enabled KV v2 at {key}"));
        Ok(true)
    }

    async fn ensure_auth(
        &self,
        ctx: &StepContext,
        session: &VaultSession,
        write: bool,
    ) -> Result<bool, StepError> {
        let auths = vaultrs::sys::auth::list(&session.client)
            .await
            .map_err(|e| StepError::classify("list auth methods", e))?;
        let key = format!("{}/", self.auth_mount);
        if let Some(a) = auths.get(&key) {
            if a.mount_type == "kubernetes" {
                return Ok(false);
            }
            return Err(StepError::permanent(format!(
                "Vault already has a {} auth method at {key}: pick another [vault] auth_mount",
                a.mount_type
            )));
        }
        if !write {
            return Ok(true);
        }
        vaultrs::sys::auth::enable(&session.client, &self.auth_mount, "kubernetes", None)
            .await
            .map_err(|e| StepError::classify(format!("enable kubernetes auth at {key}"), e))?;
        ctx.progress(format!("enabled kubernetes auth at {key}"));
        Ok(true)
    }

    async fn ensure_auth_config(
        &self,
        ctx: &StepContext,
        session: &VaultSession,
        write: bool,
    ) -> Result<bool, StepError> {
        let ca = cluster_ca(ctx, &self.endpoint.namespace).await?;
        match vaultrs::auth::kubernetes::read_config(&session.client, &self.auth_mount).await {
            Ok(c)
                if c.kubernetes_host == KUBERNETES_HOST
                    && c.kubernetes_ca_cert.as_deref().unwrap_or("").trim()
                        == ca.as_deref().unwrap_or("").trim() =>
            {
                return Ok(false);
            }
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(StepError::classify("read the kubernetes auth config", e)),
        }
        if !write {
            return Ok(true);
        }
        let mut opts =
            vaultrs::api::auth::kubernetes::requests::ConfigureKubernetesAuthRequest::builder();
        if let Some(ca) = ca {
            opts.kubernetes_ca_cert(ca);
        }
        vaultrs::auth::kubernetes::configure(
            &session.client,
            &self.auth_mount,
            KUBERNETES_HOST,
            Some(&mut opts),
        )
        .await
        .map_err(|e| StepError::classify("configure kubernetes auth", e))?;
        ctx.progress(format!(
            "configured auth/{} for {KUBERNETES_HOST}",
            self.auth_mount
        ));
        Ok(true)
    }

    async fn ensure_policy(
        &self,
        ctx: &StepContext,
        session: &VaultSession,
        write: bool,
    ) -> Result<bool, StepError> {
        let want = self.policy();
        match vaultrs::sys::policy::read(&session.client, &self.eso_policy).await {
            Ok(p) if p.rules.trim() == want.trim() => return Ok(false),
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(StepError::classify("read the ESO policy", e)),
        }
        if !write {
            return Ok(true);
        }
        vaultrs::sys::policy::set(&session.client, &self.eso_policy, &want)
            .await
            .map_err(|e| StepError::classify(format!("write policy {}", self.eso_policy), e))?;
        ctx.progress(format!("wrote policy {}", self.eso_policy));
        Ok(true)
    }

    async fn ensure_role(
        &self,
        ctx: &StepContext,
        session: &VaultSession,
        write: bool,
    ) -> Result<bool, StepError> {
        let names = vec![self.eso_service_account.clone()];
        let namespaces = vec![self.eso_namespace.clone()];
        let policies = vec![self.eso_policy.clone()];
        match vaultrs::auth::kubernetes::role::read(
            &session.client,
            &self.auth_mount,
            &self.eso_role,
        )
        .await
        {
            Ok(r)
                if r.bound_service_account_names == names
                    && r.bound_service_account_namespaces == namespaces
                    && r.token_policies == policies =>
            {
                return Ok(false);
            }
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(StepError::classify("read the ESO role", e)),
        }
        if !write {
            return Ok(true);
        }
        let mut opts =
            vaultrs::api::auth::kubernetes::requests::CreateKubernetesRoleRequest::builder();
        opts.bound_service_account_names(names)
            .bound_service_account_namespaces(namespaces)
            .token_policies(policies)
            .token_ttl("1h".to_owned());
        vaultrs::auth::kubernetes::role::create(
            &session.client,
            &self.auth_mount,
            &self.eso_role,
            Some(&mut opts),
        )
        .await
        .map_err(|e| StepError::classify(format!("write role {}", self.eso_role), e))?;
        ctx.progress(format!("wrote role {}", self.eso_role));
        Ok(true)
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            self.endpoint.action(),
            Action::create(format!(
                "POST /v1/sys/mounts/{} (kv version 2)",
                self.kv_mount
            )),
            Action::create(format!(
                "POST /v1/sys/auth/{} (kubernetes)",
                self.auth_mount
            )),
            Action::update(format!("POST /v1/auth/{}/config", self.auth_mount))
                .with_detail("kubernetes_host https://kubernetes.default.svc"),
            Action::create(format!("PUT /v1/sys/policy/{}", self.eso_policy)).with_detail(
                if self.read_paths.is_empty() {
                    "no read access: no [[secrets]] declared".to_owned()
                } else {
                    let paths: Vec<String> = self
                        .read_paths
                        .iter()
                        .map(|p| format!("{}/data/{p}", self.kv_mount))
                        .collect();
                    format!("read only on {}", paths.join(", "))
                },
            ),
            Action::create(format!(
                "POST /v1/auth/{}/role/{}",
                self.auth_mount, self.eso_role
            ))
            .with_detail(format!(
                "bound to ServiceAccount {}/{}, policy {}",
                self.eso_namespace, self.eso_service_account, self.eso_policy
            )),
        ]
    }
}

/// The cluster CA as pods see it (ConfigMap `kube-root-ca.crt`, present in every namespace).
async fn cluster_ca(ctx: &StepContext, namespace: &str) -> Result<Option<String>, StepError> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.kube().await?, namespace);
    Ok(api
        .get_opt("kube-root-ca.crt")
        .await
        .map_err(|e| StepError::classify("read ConfigMap kube-root-ca.crt", e))?
        .and_then(|c| c.data)
        .and_then(|mut d| d.remove("ca.crt")))
}

#[async_trait::async_trait]
impl Step for VaultConfigure {
    step_identity!("vault.configure");

    /// Against a reachable, unsealed Vault: the same checks as `apply`, without the writes.
    async fn plan(&self, ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        let Ok(token) = root_token(ctx, &self.endpoint, &self.keys_secret).await else {
            return Ok(self.actions());
        };
        let Ok(session) = connect(ctx, &self.endpoint, Some(&token)).await else {
            return Ok(self.actions());
        };
        let checks = async {
            Ok::<_, StepError>([
                self.ensure_kv(ctx, &session, false).await?,
                self.ensure_auth(ctx, &session, false).await?,
                self.ensure_auth_config(ctx, &session, false).await?,
                self.ensure_policy(ctx, &session, false).await?,
                self.ensure_role(ctx, &session, false).await?,
            ])
        };
        let Ok(would) = checks.await else {
            return Ok(self.actions());
        };
        let mut actions = self.actions();
        // actions() is [reach, mount, auth, config, policy, role].
        for (action, change) in actions.iter_mut().skip(1).zip(would) {
            if !change {
                action.op = crate::engine::Op::Unchanged;
            }
        }
        Ok(actions)
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let token = root_token(ctx, &self.endpoint, &self.keys_secret).await?;
        let session = connect(ctx, &self.endpoint, Some(&token)).await?;
        let mut changed = self.ensure_kv(ctx, &session, true).await?;
        changed |= self.ensure_auth(ctx, &session, true).await?;
        changed |= self.ensure_auth_config(ctx, &session, true).await?;
        changed |= self.ensure_policy(ctx, &session, true).await?;
        changed |= self.ensure_role(ctx, &session, true).await?;
        Ok(StepOutcome::new(changed))
    }

    /// The same read-and-compare checks `apply` makes before each write (mount, auth method,
    /// its config, the policy, the role's bindings), so a resume re-applies whatever drifted.
    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        let token = root_token(ctx, &self.endpoint, &self.keys_secret).await?;
        let session = connect(ctx, &self.endpoint, Some(&token)).await?;
        let checks = async {
            Ok::<_, StepError>([
                (
                    format!("KV v2 mount {}", self.kv_mount),
                    self.ensure_kv(ctx, &session, false).await?,
                ),
                (
                    format!("kubernetes auth at {}", self.auth_mount),
                    self.ensure_auth(ctx, &session, false).await?,
                ),
                (
                    format!("the {} auth config", self.auth_mount),
                    self.ensure_auth_config(ctx, &session, false).await?,
                ),
                (
                    format!("policy {}", self.eso_policy),
                    self.ensure_policy(ctx, &session, false).await?,
                ),
                (
                    format!("role {}", self.eso_role),
                    self.ensure_role(ctx, &session, false).await?,
                ),
            ])
        };
        Ok(match checks.await {
            Ok(checks) => {
                let drifted: Vec<String> = checks
                    .into_iter()
                    .filter(|(_, differs)| *differs)
                    .map(|(what, _)| what)
                    .collect();
                if drifted.is_empty() {
                    Verified::Holds
                } else {
                    Verified::DoesNotHold {
                        reason: format!("{} differ from the playbook", drifted.join(", ")),
                    }
                }
            }
            Err(e) => Verified::DoesNotHold {
                reason: e.to_string(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configure(paths: &[&str]) -> VaultConfigure {
        VaultConfigure {
            endpoint: VaultEndpoint::default_port_forward(),
            kv_mount: "secret".into(),
            auth_mount: "kubernetes".into(),
            eso_policy: "external-secrets".into(),
            eso_role: "external-secrets".into(),
            eso_namespace: "external-secrets".into(),
            eso_service_account: "external-secrets".into(),
            read_paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            keys_secret: "vault-init-keys".into(),
        }
    }

    #[test]
    fn the_eso_policy_reads_exactly_the_declared_paths() {
        let hcl = configure(&["bootstrap/cloudflare", "bootstrap/github"]).policy();
        assert_eq!(hcl.matches("path ").count(), 2, "{hcl}");
        assert!(
            hcl.contains("path \"secret/data/bootstrap/github\" {\n  capabilities = [\"read\"]\n}")
        );
        assert!(!hcl.contains('*'), "no wildcard: {hcl}");
        assert!(!hcl.contains("update") && !hcl.contains("create"));
        assert_eq!(configure(&[]).policy().matches("path ").count(), 0);
    }

    #[test]
    fn the_recovery_text_names_every_way_out_and_never_reinitialises() {
        let text = recovery_text(
            "vault",
            "vault-0",
            "vault-init-keys",
            Path::new("/s/x.json"),
        );
        assert!(text.contains("never re-initialises"));
        assert!(text.contains("kubectl -n vault create secret generic vault-init-keys"));
        assert!(text.contains("/s/x.json"));
        assert!(text.contains("kubestrap apply --resume"));
    }

    #[test]
    fn emergency_copies_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(EMERGENCY_FILE);
        write_private(&path, "{}").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
