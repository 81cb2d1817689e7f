//! Flux: install the controllers, wait for them, and point them at the Git repository with the
//! bootstrap credentials.

use serde::Serialize;

use super::{not_implemented, obj, payload_of};
use crate::engine::{Action, Step, StepContext, StepError, StepOutcome, Verified};
use crate::playbook::{HumanDuration, LoadedPlaybook};

/// Flux's controllers, as its `install.yaml` creates them.
const CONTROLLERS: [&str; 4] = [
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
    fn kind(&self) -> &'static str {
        "flux.install"
    }

    fn payload(&self) -> serde_json::Value {
        payload_of(self)
    }

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        let check = match &self.install_sha256 {
            Some(sum) => format!("sha256 must be {sum}"),
            None => "no sha256 pinned: set [flux] install_sha256 to pin it".to_owned(),
        };
        let mut actions = vec![
            Action::run(if self.install_manifest.contains("://") {
                format!("GET {}", self.install_manifest)
            } else {
                format!("read {}", self.install_manifest)
            })
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

    async fn apply(&self, _ctx: &StepContext) -> Result<StepOutcome, StepError> {
        Err(not_implemented(self, "apply"))
    }

    async fn verify(&self, _ctx: &StepContext) -> Result<Verified, StepError> {
        Err(not_implemented(self, "verify"))
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
    fn kind(&self) -> &'static str {
        "flux.ready"
    }

    fn payload(&self) -> serde_json::Value {
        payload_of(self)
    }

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

    async fn apply(&self, _ctx: &StepContext) -> Result<StepOutcome, StepError> {
        Err(not_implemented(self, "apply"))
    }

    async fn verify(&self, _ctx: &StepContext) -> Result<Verified, StepError> {
        Err(not_implemented(self, "verify"))
    }
}

/// `flux.source`: the bootstrap Git Secret, the GitRepository and the root Kustomization, as
/// `flux bootstrap` names them.
#[derive(Debug, Clone, Serialize)]
pub struct FluxSource {
    /// Flux's namespace.
    pub namespace: String,
    /// Name of the bootstrap Secret, GitRepository and Kustomization.
    pub name: String,
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
            name: f.bootstrap_secret.clone(),
            git_url: f.git_url.clone(),
            branch: f.branch.clone(),
            path: f.path.clone(),
            token_env: f.token_env.clone(),
            git_username: f.git_username.clone(),
            interval: f.interval,
            timeout: pb.playbook.timeouts.flux_ready,
        }
    }
}

#[async_trait::async_trait]
impl Step for FluxSource {
    fn kind(&self) -> &'static str {
        "flux.source"
    }

    fn payload(&self) -> serde_json::Value {
        payload_of(self)
    }

    fn secrets(&self) -> Vec<String> {
        vec![self.token_env.clone()]
    }

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        Ok(vec![
            Action::create(obj("Secret", &self.namespace, &self.name)).with_detail(format!(
                "username {:?}, password from ${}; created only if absent, never overwritten",
                self.git_username, self.token_env
            )),
            Action::create(obj("GitRepository", &self.namespace, &self.name)).with_detail(format!(
                "{} branch {} every {}",
                self.git_url, self.branch, self.interval
            )),
            Action::create(obj("Kustomization", &self.namespace, &self.name))
                .with_detail(format!("path {}, prune", self.path)),
            Action::run(format!(
                "wait for {} Ready (timeout {})",
                obj("GitRepository", &self.namespace, &self.name),
                self.timeout
            )),
        ])
    }

    async fn apply(&self, _ctx: &StepContext) -> Result<StepOutcome, StepError> {
        Err(not_implemented(self, "apply"))
    }

    async fn verify(&self, _ctx: &StepContext) -> Result<Verified, StepError> {
        Err(not_implemented(self, "verify"))
    }
}
