//! The run's way to the cluster, a resource the CLI (or a test) puts into the run: the
//! kubeconfig-selected client, built on first use, and in `apply` the in-cluster lease, taken
//! the first time a step reaches the API and handed back when the run ends.
//!
//! Built lazily, so `plan` on a cluster that does not exist yet (k3s not installed) and steps
//! that never talk to the API do not fail early.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::tunnels::{ServicePort, Tunnel, Tunnels};
use crate::engine::{Finish, RunMode, StepContext, StepError};
use crate::kube::reach::{probe, unreachable_cause};
use crate::kube::{ClusterLease, KubeAccess, LeaseConfig, LeaseError};
use crate::playbook::LoadedPlaybook;

/// The cluster resource of a run.
#[derive(Debug)]
pub struct Cluster {
    access: KubeAccess,
    lease: Option<LeaseConfig>,
    held: Mutex<Option<ClusterLease>>,
    tunnels: Tunnels,
}

impl Cluster {
    /// Reach the cluster through `access`; in `apply`, hold `lease` (none: never take one).
    #[must_use]
    pub fn new(access: KubeAccess, lease: Option<LeaseConfig>) -> Self {
        Self {
            access,
            lease,
            held: Mutex::new(None),
            tunnels: Tunnels::default(),
        }
    }

    /// The playbook's cluster through `access`, with its lease `kube-system/kubestrap-<name>`.
    #[must_use]
    pub fn for_playbook(pb: &LoadedPlaybook, access: KubeAccess) -> Self {
        let lease = LeaseConfig::for_cluster(&pb.playbook.cluster.name, &pb.cluster_dir());
        Self::new(access, Some(lease))
    }

    /// The playbook's cluster as the playbook alone names it (its `[cluster] kubeconfig` and
    /// `context`, or the sandbox's kubeconfig), without command-line overrides.
    #[must_use]
    pub fn of_playbook(pb: &LoadedPlaybook) -> Self {
        let access = KubeAccess::new(pb.kubeconfig(), pb.playbook.cluster.context.clone());
        Self::for_playbook(pb, access)
    }

    /// The kubeconfig path in use, when one was named (playbook, sandbox or `--kubeconfig`).
    #[must_use]
    pub fn kubeconfig(&self) -> Option<&Path> {
        self.access.kubeconfig()
    }

    /// Whether this run holds the lease now.
    pub async fn holds_lease(&self) -> bool {
        self.held.lock().await.is_some()
    }

    /// The client; in `apply`, the first call also takes the lease, so two runs never work on
    /// one cluster. Losing the lease later stops the run.
    async fn client(&self, ctx: &StepContext) -> Result<::kube::Client, StepError> {
        let client = self
            .access
            .client()
            .await
            .map_err(|e| StepError::classify("connect to the Kubernetes API", e))?;
        if ctx.mode() == RunMode::Apply
            && let Some(config) = &self.lease
        {
            let mut held = self.held.lock().await;
            if held.is_none() {
                let run = ctx.run_control();
                let lease = ClusterLease::acquire(
                    client.clone(),
                    config.clone(),
                    Arc::new(move |why| run.stop(why)),
                )
                .await
                .map_err(|e| self.lease_error(e))?;
                *held = Some(lease);
            }
        }
        Ok(client)
    }
}

impl Cluster {
    /// A lease request that never reached the server says which server, context and
    /// kubeconfig it tried and why, once; other lease errors keep their own classification.
    fn lease_error(&self, e: LeaseError) -> StepError {
        if let LeaseError::Api {
            action,
            namespace,
            name,
            source,
        } = &e
            && let Some(cause) = unreachable_cause(source)
        {
            return StepError::transient(format!(
                "cannot reach {}: {action} lease {namespace}/{name} (the run's first request): {cause}; check that the cluster is up and that this is the kubeconfig and context you meant",
                self.access.describe()
            ));
        }
        StepError::classify("take the cluster lease", e)
    }

    /// The cluster's identity: the UID of its `kube-system` namespace, which exists from the
    /// first start and lives as long as the cluster. `None` when the cluster cannot be asked
    /// within `limit` (not created yet, or not answering): one read, no write.
    pub async fn identity(&self, limit: Duration) -> Option<String> {
        let read = async {
            let client = self.access.client().await.ok()?;
            let api: ::kube::Api<k8s_openapi::api::core::v1::Namespace> = ::kube::Api::all(client);
            api.get("kube-system").await.ok()?.metadata.uid
        };
        tokio::time::timeout(limit, read).await.ok().flatten()
    }

    /// Whether the API server answers now, within `limit` (plan asks once, before it plans):
    /// `Err` says where it looked and why nothing answered.
    ///
    /// # Errors
    /// One line naming the server (or kubeconfig) and the cause.
    pub async fn probe(&self, limit: Duration) -> Result<(), String> {
        let client = self.access.client().await.map_err(|e| e.to_string())?;
        probe(&client, limit)
            .await
            .map_err(|cause| format!("{} does not answer: {cause}", self.access.describe()))
    }
}

#[async_trait::async_trait]
impl Finish for Cluster {
    async fn finish(&self) -> Result<(), String> {
        self.tunnels.close().await;
        let lease = self.held.lock().await.take();
        match lease {
            Some(l) => l
                .release()
                .await
                .map_err(|e| format!("{e}; it expires by itself")),
            None => Ok(()),
        }
    }
}

/// Cluster access from a step's context.
#[async_trait::async_trait]
pub trait ClusterContext {
    /// The cluster's API client (see [`Cluster`]).
    ///
    /// # Errors
    /// Permanent [`StepError`] when the run has no cluster, the kubeconfig is unusable or
    /// another run holds the lease; transient when the lease could not be written.
    async fn kube(&self) -> Result<::kube::Client, StepError>;

    /// The kubeconfig path the run uses, when one was named.
    fn kubeconfig_path(&self) -> Option<&Path>;

    /// The run's tunnel to `namespace/service:port` (see [`super::tunnels`]), opened on first
    /// use; `what` names the service in errors ("reach Vault: ...").
    ///
    /// # Errors
    /// Transient [`StepError`] when the Service has no running pod yet or the forward fails.
    async fn tunnel(&self, what: &str, to: &ServicePort<'_>) -> Result<Arc<Tunnel>, StepError>;
}

#[async_trait::async_trait]
impl ClusterContext for StepContext {
    async fn kube(&self) -> Result<::kube::Client, StepError> {
        let cluster = self.resource::<Cluster>().ok_or_else(|| {
            StepError::permanent("this run has no cluster connection (a bug in how it was set up)")
        })?;
        cluster.client(self).await
    }

    fn kubeconfig_path(&self) -> Option<&Path> {
        self.resource::<Cluster>().and_then(Cluster::kubeconfig)
    }

    async fn tunnel(&self, what: &str, to: &ServicePort<'_>) -> Result<Arc<Tunnel>, StepError> {
        let client = self.kube().await?;
        let cluster = self.resource::<Cluster>().ok_or_else(|| {
            StepError::permanent("this run has no cluster connection (a bug in how it was set up)")
        })?;
        cluster
            .tunnels
            .get(&client, to)
            .await
            .map_err(|e| StepError::transient(format!("reach {what}: {e}")))
    }
}
