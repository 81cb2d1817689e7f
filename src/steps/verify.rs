//! Phase 5: prove the platform is in the state the bootstrap promised, then clean up.

use std::collections::BTreeSet;
use std::time::Duration;

use ::kube::ResourceExt;
use ::kube::api::{Api, DeleteParams, ListParams};
use ::kube::core::DynamicObject;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::apps::AppsSecretsSynced;
use super::eso::EsoStore;
use super::obj;
use super::support::{
    ClusterContext, StepWaits, cancellable, deployments_available, diagnose, kinds::resource,
    ready_state, step_identity,
};
use super::vault::{UNSEALER_NAME, VaultEndpoint};
use super::vault_api::{VaultState, connect, state, verify_unsealed};
use crate::engine::{Action, Step, StepContext, StepError, StepOutcome, Verified};
use crate::playbook::{HumanDuration, LoadedPlaybook};

/// Implements `Step` for a check-only step: `apply` runs the check until it holds, for at most
/// the step's `converge` time (what it checks may still be converging: after a cluster restart
/// a ClusterSecretStore is `InvalidProviderConfig` until Vault is unsealed again), and fails
/// with its last reason; `verify` runs the same check once.
macro_rules! check_step {
    ($ty:ty, $kind:literal) => {
        #[async_trait::async_trait]
        impl Step for $ty {
            $crate::steps::support::step_identity!($kind);

            async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
                Ok(self.actions())
            }

            async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
                let waiting = ctx.waiting();
                let converged = converge(ctx, self.converge, || self.check(ctx)).await;
                drop(waiting);
                converged?;
                Ok(StepOutcome::ready())
            }

            async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
                self.check(ctx).await
            }
        }
    };
}

/// How often a converging check is repeated.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Runs `check` until it holds, every [`CHECK_EVERY`], for at most `within`; reports what it
/// still waits for as progress. An error of the check itself ends the wait.
async fn converge<F, Fut>(ctx: &StepContext, within: Duration, check: F) -> Result<(), StepError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Verified, StepError>>,
{
    let start = tokio::time::Instant::now();
    loop {
        let reason = match check().await? {
            Verified::Holds => return Ok(()),
            Verified::DoesNotHold { reason } => reason,
        };
        if start.elapsed() >= within {
            let mut message = reason.clone();
            if !within.is_zero() {
                message.push_str(&format!(
                    " (still, after waiting {}s for it to converge)",
                    within.as_secs()
                ));
            }
            // The reason starts with the object it is about: walk down from it.
            let object = reason.split(": ").next().unwrap_or_default();
            if let Ok(client) = ctx.kube().await
                && let Some(found) = diagnose::walk(&client, object).await
            {
                message.push('\n');
                message.push_str(&found.diagnosis.render());
            }
            return Err(StepError::permanent(message));
        }
        ctx.progress(format!(
            "waiting to converge ({}s): {reason}",
            start.elapsed().as_secs()
        ));
        cancellable(ctx, async {
            tokio::time::sleep(CHECK_EVERY).await;
            Ok(())
        })
        .await?;
    }
}

/// `verify.vault`: Vault is initialised and unsealed; optionally restart it to prove
/// auto-unseal.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyVault {
    /// Vault's namespace.
    pub namespace: String,
    /// The Vault server pod (`<fullname>-0`, see [`super::chart::VaultNames`]).
    pub pod: String,
    /// Restart the pod and wait for auto-unseal.
    pub restart: bool,
    /// Wait limit.
    pub timeout: HumanDuration,
    /// How to reach Vault.
    pub endpoint: VaultEndpoint,
    /// OpenBao's static seal: Vault unseals itself from this key Secret, so the restart
    /// proves that instead of the unsealer. `None` for Shamir (and left out of the payload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_seal: Option<super::seal_key::StaticSeal>,
    /// Under the static seal, the keys Secret `vault.init` wrote: a pod created after it,
    /// and unsealed, unsealed itself (nothing submits keys). `None` for Shamir.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_secret: Option<String>,
}

impl VerifyVault {
    /// From `[verify]` and `[vault]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let p = &pb.playbook;
        Self {
            namespace: p.vault.namespace.clone(),
            pod: super::chart::VaultNames::new(p.vault.flavor, &p.vault.release).pod(),
            restart: p.verify.restart_vault,
            timeout: p.timeouts.vault_ready,
            endpoint: VaultEndpoint::from_playbook(pb),
            static_seal: p
                .vault
                .seal
                .is_static()
                .then(|| super::seal_key::StaticSeal::new(&p.vault.release)),
            keys_secret: p
                .vault
                .seal
                .is_static()
                .then(|| p.vault.keys_secret.clone()),
        }
    }

    /// Who unseals a restarted Vault, for messages.
    fn unsealer(&self) -> String {
        match &self.static_seal {
            Some(seal) => format!(
                "itself (static seal, Secret {}/{})",
                self.namespace, seal.secret
            ),
            None => "the auto-unsealer".to_owned(),
        }
    }

    /// The object whose creation the restart proof must follow: under the static seal the
    /// keys Secret (written at init: the pod the chart first started predates it), else the
    /// unsealer Deployment.
    async fn anchor_created(&self, ctx: &StepContext) -> Result<Option<i64>, StepError> {
        let client = ctx.kube().await?;
        Ok(match &self.keys_secret {
            Some(keys) => Api::<Secret>::namespaced(client, &self.namespace)
                .get_metadata_opt(keys)
                .await
                .map_err(|e| StepError::classify("read the keys Secret", e))?
                .and_then(|u| u.creation_timestamp())
                .map(|t| t.0.as_second()),
            None => Api::<Deployment>::namespaced(client, &self.namespace)
                .get_opt(UNSEALER_NAME)
                .await
                .map_err(|e| StepError::classify("read the unsealer Deployment", e))?
                .and_then(|u| u.creation_timestamp())
                .map(|t| t.0.as_second()),
        })
    }

    fn actions(&self) -> Vec<Action> {
        let mut actions = vec![Action::run(
            "GET /v1/sys/health (200: initialised, unsealed, active)",
        )];
        if self.restart {
            let pod = obj("Pod", &self.namespace, &self.pod);
            actions.push(
                Action::delete(pod)
                    .with_detail("restart to prove auto-unseal ([verify] restart_vault = true)"),
            );
            actions.push(Action::run(format!(
                "wait for Vault unsealed again by {} (timeout {})",
                self.unsealer(),
                self.timeout
            )));
        }
        actions
    }
}

impl VerifyVault {
    fn pod_name(&self) -> String {
        self.pod.clone()
    }

    /// Whether auto-unseal is already proven: the running Vault pod was created after the
    /// unsealer and is unsealed, so the unsealer (not kubestrap) unsealed it. Then a second
    /// run does not restart Vault again (no write on a finished cluster).
    /// Under the static seal the anchor is the keys Secret: a pod created after init, and
    /// unsealed, unsealed itself (kubestrap submits nothing).
    async fn auto_unseal_proven(&self, ctx: &StepContext) -> Result<bool, StepError> {
        let client = ctx.kube().await?;
        let pod = Api::<Pod>::namespaced(client, &self.namespace)
            .get_opt(&self.pod_name())
            .await
            .map_err(|e| StepError::classify("read the Vault pod", e))?;
        let anchor = self.anchor_created(ctx).await?;
        Ok(match (pod.and_then(|p| p.creation_timestamp()), anchor) {
            (Some(pt), Some(at)) => pt.0.as_second() > at,
            _ => false,
        })
    }

    /// Polls Vault's health until it is unsealed (Vault has no watch API), within the timeout.
    async fn wait_unsealed(&self, ctx: &StepContext) -> Result<(), StepError> {
        let deadline = tokio::time::Instant::now() + self.timeout.get();
        loop {
            let last;
            match connect(ctx, &self.endpoint, None).await {
                Ok(session) => match state(&session).await {
                    Ok(VaultState::Unsealed) => return Ok(()),
                    Ok(other) => last = format!("{other:?}"),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StepError::permanent(format!(
                    "timed out after {}s waiting for Vault (Pod {}/{}) to be unsealed by {}; last observed: {last}; {}",
                    self.timeout.get().as_secs(),
                    self.namespace,
                    self.pod_name(),
                    self.unsealer(),
                    match &self.static_seal {
                        Some(seal) => super::vault::static_seal_sealed(
                            &self.namespace,
                            &self.pod_name(),
                            seal
                        ),
                        None => format!("check Deployment {}/{UNSEALER_NAME}", self.namespace),
                    }
                )));
            }
            ctx.progress(format!("waiting for Vault unsealed: {last}"));
            let _waiting = ctx.waiting();
            cancellable(ctx, async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(())
            })
            .await?;
        }
    }
}

#[async_trait::async_trait]
impl Step for VerifyVault {
    step_identity!("verify.vault");

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        Ok(self.actions())
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let session = connect(ctx, &self.endpoint, None).await?;
        let now = state(&session).await?;
        drop(session);
        if now != VaultState::Unsealed {
            return Err(StepError::permanent(match &self.static_seal {
                Some(seal) => format!(
                    "Vault is {now:?}: {}",
                    super::vault::static_seal_sealed(&self.namespace, &self.pod_name(), seal)
                ),
                None => format!(
                    "Vault is {now:?}: run `kubestrap unseal -p {}` or check the auto-unsealer",
                    ctx.playbook().path.display()
                ),
            }));
        }
        if !self.restart || self.auto_unseal_proven(ctx).await? {
            return Ok(StepOutcome::ready());
        }
        let pods: Api<Pod> = Api::namespaced(ctx.kube().await?, &self.namespace);
        let old_uid = pods
            .get_opt(&self.pod_name())
            .await
            .map_err(|e| StepError::classify("read the Vault pod", e))?
            .and_then(|p| p.uid());
        // Timestamps have second precision: restart in a later second than the unsealer was
        // created, so the proof check above recognises the new pod on the next run.
        let unsealer_second = self.anchor_created(ctx).await?;
        while unsealer_second.is_some_and(|s| jiff::Timestamp::now().as_second() <= s) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ctx.progress(format!(
            "restarting Pod {}/{} to prove auto-unseal",
            self.namespace,
            self.pod_name()
        ));
        match pods
            .delete(&self.pod_name(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(::kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(StepError::classify("delete the Vault pod", e)),
        }
        let object = format!("Pod {}/{}", self.namespace, self.pod_name());
        StepWaits::new(ctx, ctx.kube().await?, self.timeout)
            .until(
                pods.clone(),
                &self.pod_name(),
                &object,
                "recreated and Running",
                |p: Option<&Pod>| match p {
                    Some(p)
                        if p.uid() != old_uid
                            && p.status.as_ref().and_then(|s| s.phase.as_deref())
                                == Some("Running") =>
                    {
                        crate::kube::Check::done("recreated, Running")
                    }
                    Some(p) if p.uid() == old_uid => {
                        crate::kube::Check::pending("the old pod still exists")
                    }
                    Some(p) => crate::kube::Check::pending(format!(
                        "recreated, phase {}",
                        p.status
                            .as_ref()
                            .and_then(|s| s.phase.clone())
                            .unwrap_or_default()
                    )),
                    None => crate::kube::Check::pending("deleted, not recreated yet"),
                },
            )
            .await?;
        self.wait_unsealed(ctx).await?;
        Ok(StepOutcome::new(true))
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        verify_unsealed(ctx, &self.endpoint).await
    }
}

/// `verify.flux`: every Flux source and Kustomization/HelmRelease is Ready.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyFlux {
    /// Flux's namespace.
    pub namespace: String,
    /// How long Flux's objects may take to become Ready again (`[timeouts] reconcile`); not
    /// part of the payload.
    #[serde(skip)]
    pub converge: Duration,
}

impl VerifyFlux {
    /// From `[flux]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        Self {
            namespace: pb.playbook.flux.namespace.clone(),
            converge: pb.playbook.timeouts.reconcile.get(),
        }
    }

    fn actions(&self) -> Vec<Action> {
        vec![Action::run(
            "check every GitRepository, HelmRepository, Kustomization and HelmRelease is Ready",
        )]
    }
}

impl VerifyFlux {
    async fn check(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        let client = ctx.kube().await?;
        let kinds = [
            resource("source.toolkit.fluxcd.io", "v1", "GitRepository"),
            resource("source.toolkit.fluxcd.io", "v1", "HelmRepository"),
            resource("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
            resource("helm.toolkit.fluxcd.io", "v2", "HelmRelease"),
        ];
        let mut bad = Vec::new();
        for kind in &kinds {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), kind);
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| StepError::classify(format!("list {}", kind.plural), e))?;
            for o in list.items {
                let value = serde_json::to_value(&o).unwrap_or_default();
                if let Some(state) = diagnose::terminal_state(&kind.kind, &value) {
                    // No controller retries this: waiting cannot make Flux healthy.
                    return Err(StepError::permanent(format!(
                        "Flux cannot become healthy: {} {}/{} failed: {state}",
                        kind.kind,
                        o.namespace().unwrap_or_default(),
                        o.name_any()
                    )));
                }
                let (ready, status) = ready_state(&value);
                if !ready {
                    bad.push(format!(
                        "{} {}/{}: {status}",
                        kind.kind,
                        o.namespace().unwrap_or_default(),
                        o.name_any()
                    ));
                }
            }
        }
        if let Verified::DoesNotHold { reason } =
            deployments_available(ctx, &self.namespace, &super::flux::CONTROLLERS).await?
        {
            bad.push(reason);
        }
        Ok(if bad.is_empty() {
            Verified::Holds
        } else {
            Verified::DoesNotHold {
                reason: format!("Flux is not healthy: {}", bad.join("; ")),
            }
        })
    }
}
check_step!(VerifyFlux, "verify.flux");

/// `verify.eso`: the store is Ready and every ExternalSecret is synced.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyEso {
    /// Store name.
    pub store: String,
    /// The store as eso.store made it.
    pub store_step: EsoStore,
    /// Every ExternalSecret, as apps.secrets-synced checks them.
    pub synced: AppsSecretsSynced,
    /// ESO's namespace and Deployment.
    pub namespace: String,
    /// ESO's controller Deployment (the chart's fullname, see [`super::chart::EsoNames`]).
    pub deployment: String,
    /// How long the store and the secrets may take to become ready again (`[timeouts]
    /// eso_ready`, e.g. while Vault is being unsealed after a restart); not part of the payload.
    #[serde(skip)]
    pub converge: Duration,
}

impl VerifyEso {
    /// From `[external_secrets]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let mut synced = AppsSecretsSynced::from_playbook(pb);
        synced.namespaces.clear();
        Self {
            store: pb.playbook.external_secrets.store.clone(),
            store_step: EsoStore::from_playbook(pb),
            synced,
            namespace: pb.playbook.external_secrets.namespace.clone(),
            deployment: super::chart::EsoNames::new(&pb.playbook.external_secrets.release)
                .controller()
                .to_owned(),
            converge: pb.playbook.timeouts.eso_ready.get(),
        }
    }

    async fn check(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        let deployment =
            deployments_available(ctx, &self.namespace, &[self.deployment.as_str()]).await?;
        if let Verified::DoesNotHold { .. } = deployment {
            return Ok(deployment);
        }
        let store = self.store_step.ready_now(ctx).await?;
        if let Verified::DoesNotHold { .. } = store {
            return Ok(store);
        }
        self.synced.verify(ctx).await
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            Action::run(format!("check ClusterSecretStore {} Ready", self.store)),
            Action::run("check every ExternalSecret SecretSynced"),
        ]
    }
}
check_step!(VerifyEso, "verify.eso");

/// `verify.no-bootstrap-secrets`: the bootstrap Git Secret is gone and no Secret outside
/// ESO's ownership holds a bootstrap secret value.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyNoBootstrapSecrets {
    /// Flux's namespace.
    pub namespace: String,
    /// The bootstrap Secret.
    pub bootstrap_secret: String,
    /// Whether the check runs.
    pub enabled: bool,
    /// Env names of the values to look for (compared in memory, never printed).
    pub secrets: Vec<String>,
    /// Where each value lives in Vault (used when the value was not captured this run).
    pub routes: Vec<super::terraform::SecretRoute>,
    /// KV mount.
    pub kv_mount: String,
    /// How to reach Vault.
    pub endpoint: VaultEndpoint,
    /// The keys Secret (Vault's own, skipped by the scan).
    pub keys_secret: String,
    /// Zero: a bootstrap value found in a Secret does not go away by waiting.
    #[serde(skip)]
    pub converge: Duration,
}

impl VerifyNoBootstrapSecrets {
    /// From `[verify]`, `[flux]`, `[[secrets]]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let p = &pb.playbook;
        Self {
            namespace: p.flux.namespace.clone(),
            bootstrap_secret: p.flux.bootstrap_secret.clone(),
            enabled: p.verify.no_bootstrap_secrets,
            secrets: p.secrets.iter().map(|s| s.env.clone()).collect(),
            routes: super::terraform::routes(pb),
            kv_mount: p.vault.kv_mount.clone(),
            endpoint: VaultEndpoint::from_playbook(pb),
            keys_secret: p.vault.keys_secret.clone(),
            converge: Duration::ZERO,
        }
    }

    /// SHA-256 digests of every bootstrap value: the captured ones, and for those not captured
    /// this run, the ones in Vault. Only digests leave this function.
    async fn digests(&self, ctx: &StepContext) -> Result<BTreeSet<[u8; 32]>, StepError> {
        let mut out = BTreeSet::new();
        let mut missing = Vec::new();
        for r in &self.routes {
            match ctx.secret(&r.env) {
                Ok(v) => {
                    out.insert(Sha256::digest(v.expose_secret().as_bytes()).into());
                }
                Err(_) => missing.push(r),
            }
        }
        if !missing.is_empty() {
            let token =
                super::vault_api::root_token(ctx, &self.endpoint, &self.keys_secret).await?;
            let session = connect(ctx, &self.endpoint, Some(&token)).await?;
            for r in missing {
                let data =
                    super::terraform::read_kv(&session, &self.kv_mount, &r.vault_path).await?;
                if let Some(v) = data.and_then(|d| d.get(&r.vault_key).cloned()) {
                    out.insert(Sha256::digest(v.expose_secret().as_bytes()).into());
                }
            }
        }
        Ok(out)
    }

    async fn check(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        if !self.enabled {
            return Ok(Verified::Holds);
        }
        let client = ctx.kube().await?;
        let api: Api<Secret> = Api::all(client);
        let all = api
            .list(&ListParams::default())
            .await
            .map_err(|e| StepError::classify("list Secrets", e))?;
        // Phase 3 hands the bootstrap Secret over to ESO in place (`steps::gitauth`): it may
        // exist, but only as an ESO-owned Secret.
        if all.items.iter().any(|s| {
            s.namespace().as_deref() == Some(self.namespace.as_str())
                && s.name_any() == self.bootstrap_secret
                && !s
                    .owner_references()
                    .iter()
                    .any(|o| o.kind == "ExternalSecret")
        }) {
            return Ok(Verified::DoesNotHold {
                reason: format!(
                    "the bootstrap Git Secret {}/{} is still kubestrap's copy, not handed over to External Secrets",
                    self.namespace, self.bootstrap_secret
                ),
            });
        }
        let digests = self.digests(ctx).await?;
        let mut found = Vec::new();
        for s in &all.items {
            let owned_by_eso = s
                .owner_references()
                .iter()
                .any(|o| o.kind == "ExternalSecret");
            let vault_keys = s.namespace().as_deref() == Some(self.endpoint.namespace.as_str())
                && s.name_any() == self.keys_secret;
            if owned_by_eso || vault_keys {
                continue;
            }
            for (key, value) in s.data.iter().flatten() {
                let d: [u8; 32] = Sha256::digest(&value.0).into();
                if digests.contains(&d) {
                    found.push(format!(
                        "Secret {}/{} key {key}",
                        s.namespace().unwrap_or_default(),
                        s.name_any()
                    ));
                }
            }
        }
        Ok(if found.is_empty() {
            Verified::Holds
        } else {
            Verified::DoesNotHold {
                reason: format!(
                    "a bootstrap secret value is still in the cluster outside ESO-owned Secrets: {}; delete it (Vault holds the value)",
                    found.join(", ")
                ),
            }
        })
    }

    fn actions(&self) -> Vec<Action> {
        if !self.enabled {
            return vec![Action::unchanged(
                "no check: [verify] no_bootstrap_secrets = false",
            )];
        }
        vec![
            Action::run(format!(
                "check {} is owned by an ExternalSecret (handed over)",
                obj("Secret", &self.namespace, &self.bootstrap_secret)
            )),
            Action::run(format!(
                "scan Secrets not owned by an ExternalSecret for the values of {}",
                self.secrets.join(", ")
            )),
        ]
    }
}
check_step!(VerifyNoBootstrapSecrets, "verify.no-bootstrap-secrets");

/// `cleanup`: write the run report (no secret in it) and say where to look; the captured
/// secrets are zeroised when the run ends and drops them.
#[derive(Debug, Clone, Serialize)]
pub struct Cleanup {
    /// Where the report goes.
    pub report: String,
    /// The kubeconfig the cluster is reached with, for the report.
    pub kubeconfig: Option<String>,
    /// The sandbox directory, for the "how to stop it" line.
    pub sandbox_dir: Option<String>,
}

/// The final report: where to look (never a secret value).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    /// Kubeconfig path.
    pub kubeconfig: Option<String>,
    /// Commands to look at the result.
    pub look: Vec<String>,
    /// How to stop the sandbox, for provider sandbox.
    pub stop: Option<String>,
}

impl Cleanup {
    /// From the state directory.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        Self {
            report: pb.cluster_dir().join("report.json").display().to_string(),
            kubeconfig: pb.kubeconfig().map(|p| p.display().to_string()),
            sandbox_dir: pb.sandbox_dir().map(|p| p.display().to_string()),
        }
    }

    fn build(&self) -> Report {
        let kc = self
            .kubeconfig
            .as_deref()
            .map(|k| format!("--kubeconfig {k} "))
            .unwrap_or_default();
        Report {
            kubeconfig: self.kubeconfig.clone(),
            look: vec![
                format!("kubectl {kc}get nodes"),
                format!("kubectl {kc}-n flux-system get gitrepositories,kustomizations"),
                format!("kubectl {kc}get helmreleases,externalsecrets -A"),
                format!("kubectl {kc}get clustersecretstores"),
            ],
            stop: self
                .sandbox_dir
                .as_ref()
                .map(|d| format!("kubestrap sandbox down --dir {d}")),
        }
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            Action::run(
                "print where to look (kubeconfig, kubectl commands, how to stop the sandbox)",
            )
            .with_detail("the captured secrets are zeroised when the run ends"),
            Action::create(format!("report {}", self.report)),
        ]
    }
}

#[async_trait::async_trait]
impl Step for Cleanup {
    step_identity!("cleanup");

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        let mut actions = self.actions();
        let text = serde_json::to_string_pretty(&self.build()).unwrap_or_default();
        if std::fs::read_to_string(&self.report).is_ok_and(|t| t == text) {
            actions[1] = Action::unchanged(format!("report {}", self.report));
        }
        Ok(actions)
    }

    /// Writes the report (no secret in it) and says where to look. The captured secret values
    /// are zeroised when the run ends and drops them (they are `SecretString`s in a store shared
    /// by every step, and the zeroizing allocator wipes every copy freed before).
    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let report = self.build();
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| StepError::permanent(e.to_string()))?;
        let same = std::fs::read_to_string(&self.report).is_ok_and(|t| t == text);
        if !same {
            // Owner-only: it names the cluster's paths and endpoints, like the rest of the state.
            crate::secrets::write_private(std::path::Path::new(&self.report), text.as_bytes())
                .map_err(|e| StepError::permanent(format!("write {}: {e}", self.report)))?;
        }
        // Where to look is the CLI's result block (stdout, after the summary): progress lines
        // would only flash by on a terminal's status line.
        ctx.progress(format!("wrote {}", self.report));
        StepOutcome::with_outputs(false, &report)
    }

    async fn verify(&self, _ctx: &StepContext) -> Result<Verified, StepError> {
        Ok(if std::path::Path::new(&self.report).exists() {
            Verified::Holds
        } else {
            Verified::DoesNotHold {
                reason: format!("{} is missing", self.report),
            }
        })
    }
}
