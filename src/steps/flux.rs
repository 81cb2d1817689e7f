//! Flux: install the controllers, wait for them, and point them at the Git repository with the
//! bootstrap credentials.

use ::kube::api::Api;
use ::kube::core::DynamicObject;
use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::obj;
use super::support::checks::{crd_being_deleted, crds_established, exists_with};
use super::support::{
    ClusterContext, StepWaits, apply_yaml, cancellable, deployments_available, git_repository,
    plan_yaml, step_identity,
};
use crate::engine::{Action, Step, StepContext, StepError, StepOutcome, Verified};
use crate::kube::ConditionSpec;
use crate::playbook::{HumanDuration, LoadedPlaybook};
use crate::templates::{FluxSync, Manifest};

/// Prefix of an install manifest served by the sandbox's API server (`sandbox:/sandbox/flux/install.yaml`):
/// fetched from the cluster's API URL, TLS-verified with the cluster CA from the kubeconfig.
pub const SANDBOX_SOURCE: &str = "sandbox:";

/// Flux's controllers, as its `install.yaml` creates them.
pub(crate) const CONTROLLERS: [&str; 4] = [
    "source-controller",
    "kustomize-controller",
    "helm-controller",
    "notification-controller",
];

/// Flux's CRDs that later steps use.
const CRDS: [&str; 4] = [
    "gitrepositories.source.toolkit.fluxcd.io",
    "helmrepositories.source.toolkit.fluxcd.io",
    "kustomizations.kustomize.toolkit.fluxcd.io",
    "helmreleases.helm.toolkit.fluxcd.io",
];

/// `flux.install`: fetch the pinned install manifest and server-side apply it.
#[derive(Debug, Clone, Serialize)]
pub struct FluxInstall {
    /// Flux version.
    pub version: String,
    /// Manifest URL or local path.
    pub install_manifest: String,
    /// Expected sha256 of the manifest.
    pub install_sha256: Option<String>,
    /// Flux's namespace.
    pub namespace: String,
}

impl FluxInstall {
    /// From `[flux]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let f = &pb.playbook.flux;
        Self {
            version: f.version.clone(),
            install_manifest: f.install_manifest(),
            install_sha256: f.install_sha256.clone(),
            namespace: f.namespace.clone(),
        }
    }
}

#[async_trait::async_trait]
impl Step for FluxInstall {
    step_identity!("flux.install");

    async fn plan(&self, ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        if ctx.kube().await.is_ok()
            && let Ok(yaml) = self.fetch(ctx).await
            && let Ok(mut actions) = plan_yaml(ctx, &yaml).await
        {
            actions.insert(
                0,
                Action::run(format!("fetch {}", self.install_manifest))
                    .with_detail("sha256 checked when pinned"),
            );
            return Ok(actions);
        }
        let check = match &self.install_sha256 {
            Some(sum) => format!("sha256 must be {sum}"),
            None => "no sha256 pinned: set [flux] install_sha256 to pin it".to_owned(),
        };
        let mut actions = vec![
            Action::run(
                if let Some(path) = self.install_manifest.strip_prefix(SANDBOX_SOURCE) {
                    format!("GET {path} from the sandbox's API server (verified with its CA)")
                } else if self.install_manifest.contains("://") {
                    format!("GET {}", self.install_manifest)
                } else {
                    format!("read {}", self.install_manifest)
                },
            )
            .with_detail(check),
            Action::create(format!("Namespace {}", self.namespace)),
        ];
        actions.extend(
            CRDS.iter()
                .map(|c| Action::create(format!("CustomResourceDefinition {c}"))),
        );
        actions.extend(
            CONTROLLERS
                .iter()
                .map(|c| Action::create(obj("Deployment", &self.namespace, c))),
        );
        actions.push(Action::run(format!(
            "server-side apply the rest of install.yaml {}",
            self.version
        )));
        Ok(actions)
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let yaml = self.fetch(ctx).await?;
        let changed = apply_yaml(ctx, &yaml).await?;
        StepOutcome::with_outputs(
            changed,
            &serde_json::json!({ "manifest_sha256": hex::encode(Sha256::digest(yaml.as_bytes())) }),
        )
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        let yaml = self.fetch(ctx).await?;
        let drift: Vec<String> = plan_yaml(ctx, &yaml)
            .await?
            .into_iter()
            .filter(|a| a.op != crate::engine::Op::Unchanged)
            .map(|a| a.target)
            .collect();
        Ok(if drift.is_empty() {
            Verified::Holds
        } else {
            Verified::DoesNotHold {
                reason: format!("not as install.yaml says: {}", drift.join(", ")),
            }
        })
    }
}

impl FluxInstall {
    /// Fetches the install manifest (URL, sandbox-served or file) and checks its sha256.
    async fn fetch(&self, ctx: &StepContext) -> Result<String, StepError> {
        let src = &self.install_manifest;
        ctx.progress(format!("fetching {src}"));
        let text = if let Some(path) = src.strip_prefix(SANDBOX_SOURCE) {
            let client = ctx.kube().await?;
            let req = hyper::Request::get(path).body(Vec::new()).map_err(|e| {
                StepError::permanent(format!("bad install manifest path {path:?}: {e}"))
            })?;
            cancellable(ctx, async {
                client
                    .request_text(req)
                    .await
                    .map_err(|e| StepError::classify(format!("GET {path} from the sandbox"), e))
            })
            .await?
        } else if src.starts_with("https://") || src.starts_with("http://") {
            crate::kube::install_crypto_provider();
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .map_err(|e| StepError::permanent(format!("build an HTTP client: {e}")))?;
            let resp = client
                .get(src)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| StepError::transient(format!("GET {src}: {e}")))?;
            resp.text()
                .await
                .map_err(|e| StepError::transient(format!("GET {src}: {e}")))?
        } else {
            std::fs::read_to_string(src).map_err(|e| {
                StepError::permanent(format!(
                    "read the Flux install manifest {src}: {e}: check [flux] install_manifest"
                ))
            })?
        };
        let digest = hex::encode(Sha256::digest(text.as_bytes()));
        if let Some(want) = &self.install_sha256
            && !want.eq_ignore_ascii_case(&digest)
        {
            return Err(StepError::permanent(format!(
                "the Flux install manifest from {src} has sha256 {digest}, but [flux] install_sha256 pins {want}: nothing was applied; check the source or update the pin"
            )));
        }
        Ok(text)
    }
}

/// `flux.ready`: CRDs Established, controllers Available.
#[derive(Debug, Clone, Serialize)]
pub struct FluxReady {
    /// Flux's namespace.
    pub namespace: String,
    /// Wait limit.
    pub timeout: HumanDuration,
}

impl FluxReady {
    /// From `[flux]` and `[timeouts]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        Self {
            namespace: pb.playbook.flux.namespace.clone(),
            timeout: pb.playbook.timeouts.flux_ready,
        }
    }
}

#[async_trait::async_trait]
impl Step for FluxReady {
    step_identity!("flux.ready");

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        let mut actions: Vec<Action> = CRDS
            .iter()
            .map(|c| Action::run(format!("wait for CustomResourceDefinition {c} Established")))
            .collect();
        actions.extend(CONTROLLERS.iter().map(|c| {
            Action::run(format!(
                "wait for {} Available (timeout {})",
                obj("Deployment", &self.namespace, c),
                self.timeout
            ))
        }));
        Ok(actions)
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let waits = StepWaits::new(ctx, ctx.kube().await?, self.timeout);
        // Side by side: the step goes on one watch event after the last of them holds.
        let (crds, ()) = tokio::try_join!(
            waits.crds_established(&CRDS),
            waits.deployments_available(&self.namespace, &CONTROLLERS),
        )?;
        // A CRD being deleted still says Established until its finalizers let it go; waiting
        // cannot help, and the Flux objects of the later steps would go with it. The waits'
        // last view tells (no second read after the last event).
        if let Some(crd) = crds
            .iter()
            .find(|c| c.metadata.deletion_timestamp.is_some())
        {
            let what = format!(
                "CustomResourceDefinition {}",
                crd.metadata.name.as_deref().unwrap_or_default()
            );
            return Err(StepError::permanent(format!(
                "{}; find what holds its deletion (`kubectl get crd NAME -o jsonpath='{{.metadata.finalizers}}'`), let the deletion finish, then `kubestrap apply --resume` installs it again (flux.install)",
                crd_being_deleted(&what)
            )));
        }
        Ok(StepOutcome::ready())
    }

    /// What `apply` waited for: the CRDs as well as the controllers (a CRD deleted or being
    /// deleted by hand leaves the controllers running but every Flux object unserved).
    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        match crds_established(ctx.kube().await?, &CRDS).await? {
            Verified::Holds => deployments_available(ctx, &self.namespace, &CONTROLLERS).await,
            not => Ok(not),
        }
    }
}

/// `flux.source`: the bootstrap Git Secret, the GitRepository and the root Kustomization, as
/// `flux bootstrap` names them.
#[derive(Debug, Clone, Serialize)]
pub struct FluxSource {
    /// Flux's namespace.
    pub namespace: String,
    /// Name of the GitRepository and the root Kustomization: Flux's namespace, as `flux
    /// bootstrap` names them (never `[flux] bootstrap_secret`, which names only the Secret).
    pub name: String,
    /// Name of the bootstrap Git Secret (`[flux] bootstrap_secret`).
    pub secret: String,
    /// Repository URL.
    pub git_url: String,
    /// Branch.
    pub branch: String,
    /// Path in the repository.
    pub path: String,
    /// Env var holding the token (its value is never part of the payload).
    pub token_env: String,
    /// Basic-auth user name.
    pub git_username: String,
    /// Sync interval.
    pub interval: HumanDuration,
    /// Wait limit.
    pub timeout: HumanDuration,
}

impl FluxSource {
    /// From `[flux]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let f = &pb.playbook.flux;
        Self {
            namespace: f.namespace.clone(),
            name: f.namespace.clone(),
            secret: f.bootstrap_secret.clone(),
            git_url: f.git_url.clone(),
            branch: f.branch.clone(),
            path: f.path.clone(),
            token_env: f.token_env.clone(),
            git_username: f.git_username.clone(),
            interval: f.interval,
            timeout: pb.playbook.timeouts.flux_ready,
        }
    }

    /// The sync objects with `secret_name` as the Git credentials.
    pub(crate) fn sync(&self, secret_name: &str) -> Result<String, StepError> {
        FluxSync {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            interval: self.interval.get(),
            url: self.git_url.clone(),
            branch: self.branch.clone(),
            path: format!("./{}", self.path.trim_start_matches("./")),
            secret_name: secret_name.to_owned(),
        }
        .render()
        .map_err(|e| StepError::permanent(e.to_string()))
    }
}

/// What `flux.source` hands on.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SourceOutputs {
    /// The revision the GitRepository is Ready at.
    pub revision: String,
}

#[async_trait::async_trait]
impl Step for FluxSource {
    step_identity!("flux.source");

    fn secrets(&self) -> Vec<String> {
        vec![self.token_env.clone()]
    }

    async fn plan(&self, ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        let secret = obj("Secret", &self.namespace, &self.secret);
        let live = match ctx.kube().await {
            Ok(client) => Api::<Secret>::namespaced(client, &self.namespace)
                .get_opt(&self.secret)
                .await
                .ok()
                .flatten(),
            Err(_) => None,
        };
        let mut actions = vec![match live {
            Some(s)
                if s.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "ExternalSecret") =>
            {
                Action::unchanged(secret).with_detail("managed by External Secrets (phase 3)")
            }
            Some(_) => Action::unchanged(secret).with_detail("exists; never overwritten"),
            None => Action::create(secret).with_detail(format!(
                "username {:?}, password from ${}; created only if absent",
                self.git_username, self.token_env
            )),
        }];
        match plan_yaml(ctx, &self.sync(&self.secret)?).await {
            Ok(objects) => actions.extend(objects),
            Err(_) => actions.extend([
                Action::create(obj("GitRepository", &self.namespace, &self.name)).with_detail(
                    format!(
                        "{} branch {} every {}",
                        self.git_url, self.branch, self.interval
                    ),
                ),
                Action::create(obj("Kustomization", &self.namespace, &self.name))
                    .with_detail(format!("path {}, prune", self.path)),
            ]),
        }
        actions.push(Action::run(format!(
            "wait for {} Ready (timeout {})",
            obj("GitRepository", &self.namespace, &self.name),
            self.timeout
        )));
        Ok(actions)
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let client = ctx.kube().await?;
        let mut changed = false;
        // Once phase 3 handed it over, the Secret is ESO's: it exists, so it is left alone.
        {
            let api: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
            let exists = api
                .get_opt(&self.secret)
                .await
                .map_err(|e| StepError::classify("read the bootstrap Git Secret", e))?
                .is_some();
            if !exists {
                // Namespace flux-system comes from install.yaml (flux.install ran before).
                let token = ctx.secret(&self.token_env).map_err(|_| {
                    StepError::permanent(format!(
                        "the bootstrap Git Secret {}/{} does not exist and ${} is not set: export it and run `kubestrap apply --resume`",
                        self.namespace, self.secret, self.token_env
                    ))
                })?;
                let secret = crate::kube::git_basic_auth_secret(
                    &self.namespace,
                    &self.secret,
                    &self.git_username,
                    token,
                );
                changed |= crate::kube::create_secret_if_absent(&client, &secret)
                    .await
                    .map_err(|e| StepError::classify("apply", e))?;
                drop(secret);
            }
        }
        changed |= apply_yaml(ctx, &self.sync(&self.secret)?).await?;
        let revision = self.wait_ready(ctx, &client).await?;
        StepOutcome::with_outputs(changed, &SourceOutputs { revision })
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.kube().await?, &self.namespace, &git_repository());
        let what = obj("GitRepository", &self.namespace, &self.name);
        exists_with(&api, &self.name, &what, &ConditionSpec::is_true("Ready")).await
    }
}

impl FluxSource {
    /// Waits for the GitRepository to be Ready with an artifact revision; returns it.
    pub(crate) async fn wait_ready(
        &self,
        ctx: &StepContext,
        client: &::kube::Client,
    ) -> Result<String, StepError> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &self.namespace, &git_repository());
        let object = format!("GitRepository {}/{}", self.namespace, self.name);
        let found = StepWaits::new(ctx, client.clone(), self.timeout)
            .until(
                api,
                &self.name,
                &object,
                "Ready=True with an artifact revision",
                |o: Option<&DynamicObject>| {
                    let v = o.and_then(|o| serde_json::to_value(o).ok());
                    let mut check = crate::kube::wait::evaluate_condition(
                        v.as_ref(),
                        &crate::kube::ConditionSpec::is_true("Ready"),
                    );
                    let revision = v
                        .as_ref()
                        .and_then(|v| v.pointer("/status/artifact/revision"))
                        .and_then(serde_json::Value::as_str);
                    if check.done && revision.is_none() {
                        check = crate::kube::Check::pending(format!(
                            "{} (no artifact yet)",
                            check.status
                        ));
                    }
                    check
                },
            )
            .await?;
        Ok(found
            .and_then(|o| {
                o.data
                    .pointer("/status/artifact/revision")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default())
    }
}
