//! The in-cluster half of "one run per cluster": a `coordination.k8s.io` Lease, taken the first
//! time a step of an `apply` reaches the API (that is "once the API is up": before k3s exists
//! there is nothing to hold it in), renewed while the run lasts and released at its end. Two
//! laptops with their own local locks still cannot bootstrap one cluster at once.
//!
//! This module knows leases, not runs: whoever takes one says what happens when it is lost
//! ([`OnLost`]); the steps' cluster resource stops the run.

use std::time::Duration;

use ::kube::api::{Api, PostParams};
use ::kube::core::ObjectMeta;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

/// Called once, with a sentence saying why, when a held lease is lost (another holder took it
/// after renewals failed): the holder must stop working on the cluster.
pub type OnLost = Arc<dyn Fn(String) + Send + Sync>;

/// Namespace the lease lives in (exists in every cluster).
pub const LEASE_NAMESPACE: &str = "kube-system";

/// How long a lease stays valid without renewal; renewed every third of it.
pub const LEASE_DURATION: Duration = Duration::from_secs(60);

/// Why the lease could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another live run holds it.
    #[error(
        "another kubestrap run ({holder}) holds lease {namespace}/{name}, renewed {age_secs}s ago; wait for it to finish or for the lease to expire ({duration_secs}s without renewal), then run again"
    )]
    Held {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// The other holder.
        holder: String,
        /// Seconds since its last renewal.
        age_secs: i64,
        /// Its validity.
        duration_secs: i32,
    },
    /// The API call failed.
    #[error("failed to {action} lease {namespace}/{name}: {source}")]
    Api {
        /// What was attempted.
        action: &'static str,
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// The API error.
        #[source]
        source: ::kube::Error,
    },
}

/// Which lease, held by whom, for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Namespace.
    pub namespace: String,
    /// Lease name (`kubestrap-<cluster>`).
    pub name: String,
    /// This run's identity (`<host>:<cluster state dir>/<pid>/<run id>`).
    pub holder: String,
    /// Validity without renewal.
    pub duration: Duration,
}

impl LeaseConfig {
    /// The lease for `cluster`, held by this process.
    #[must_use]
    pub fn for_cluster(cluster: &str, cluster_dir: &std::path::Path) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown-host".to_owned());
        let dir = std::path::absolute(cluster_dir).unwrap_or_else(|_| cluster_dir.to_owned());
        Self {
            namespace: LEASE_NAMESPACE.to_owned(),
            name: format!("kubestrap-{cluster}"),
            holder: format!(
                "{host}:{}/{}/{}",
                dir.display(),
                std::process::id(),
                uuid::Uuid::new_v4()
            ),
            duration: LEASE_DURATION,
        }
    }
}

/// The machine and state directory part of a holder identity (`<host>:<dir>`), without the
/// process and run id.
fn place(holder: &str) -> &str {
    let mut parts = holder.rsplitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some(place)) => place,
        _ => holder,
    }
}

/// A held lease, renewed in the background until [`ClusterLease::release`].
#[derive(Debug)]
pub struct ClusterLease {
    api: Api<Lease>,
    config: LeaseConfig,
    renewer: tokio::task::JoinHandle<()>,
}

impl ClusterLease {
    /// Take the lease (create it, renew our own, or take over an expired one) and keep it
    /// renewed. If it is lost later (another holder took it after we failed to renew),
    /// `on_lost` is called with the reason.
    ///
    /// # Errors
    /// [`LeaseError::Held`] while another holder's lease is valid; [`LeaseError::Api`] when the
    /// API refuses.
    pub async fn acquire(
        client: ::kube::Client,
        config: LeaseConfig,
        on_lost: OnLost,
    ) -> Result<Self, LeaseError> {
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        take(&api, &config).await?;
        let renewer = tokio::spawn(renew_loop(api.clone(), config.clone(), on_lost));
        Ok(Self {
            api,
            config,
            renewer,
        })
    }

    /// Stop renewing and hand the lease back (holder cleared), so the next run need not wait
    /// for it to expire.
    ///
    /// # Errors
    /// [`LeaseError::Api`] when it cannot be handed back (it then expires by itself).
    pub async fn release(self) -> Result<(), LeaseError> {
        self.renewer.abort();
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| api_error("read", &self.config, e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.holder.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
            .map_err(|e| api_error("release", &self.config, e))?;
        Ok(())
    }
}

fn api_error(action: &'static str, config: &LeaseConfig, source: ::kube::Error) -> LeaseError {
    LeaseError::Api {
        action,
        namespace: config.namespace.clone(),
        name: config.name.clone(),
        source,
    }
}

fn is_conflict(e: &::kube::Error) -> bool {
    matches!(e, ::kube::Error::Api(s) if s.code == 409)
}

fn duration_secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX).max(1)
}

/// One attempt loop: create, renew our own, or take over an expired lease. Conflicts mean
/// someone else wrote in between: look again.
async fn take(api: &Api<Lease>, config: &LeaseConfig) -> Result<(), LeaseError> {
    for _ in 0..5 {
        let now = Timestamp::now();
        let Some(mut lease) = api
            .get_opt(&config.name)
            .await
            .map_err(|e| api_error("read", config, e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.holder.clone()),
                    lease_duration_seconds: Some(duration_secs(config.duration)),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(api_error("create", config, e)),
            }
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let ours = spec.holder_identity.as_deref() == Some(config.holder.as_str());
        if let Some(holder) = spec
            .holder_identity
            .clone()
            .filter(|h| !ours && !h.is_empty())
            // A holder from this machine and state directory is a dead run (SIGKILL, power
            // loss): the local lock file, which the caller holds, admits one live run there.
            .filter(|h| place(h) != place(&config.holder))
        {
            let duration = spec.lease_duration_seconds.unwrap_or(0);
            let renewed = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .map(|t| t.0);
            let age = renewed.map_or(i64::MAX, |t| now.as_second() - t.as_second());
            if age <= i64::from(duration) {
                return Err(LeaseError::Held {
                    namespace: config.namespace.clone(),
                    name: config.name.clone(),
                    holder,
                    age_secs: age,
                    duration_secs: duration,
                });
            }
        }
        if !ours {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(config.holder.clone());
        spec.lease_duration_seconds = Some(duration_secs(config.duration));
        spec.renew_time = Some(MicroTime(now));
        match api
            .replace(&config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(api_error("update", config, e)),
        }
    }
    Err(api_error(
        "take",
        config,
        ::kube::Error::Service("the lease kept changing under us (5 conflicts in a row)".into()),
    ))
}

async fn renew_loop(api: Api<Lease>, config: LeaseConfig, on_lost: OnLost) {
    let every = config.duration / 3;
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let result = renew_once(&api, &config).await;
        match result {
            Ok(()) => last_renewed = tokio::time::Instant::now(),
            Err(LeaseError::Held { holder, .. }) => {
                lost(&on_lost, &config, &format!("it is now held by {holder}"));
                return;
            }
            Err(e) if last_renewed.elapsed() >= config.duration => {
                lost(
                    &on_lost,
                    &config,
                    &format!("it could not be renewed before it expired ({e})"),
                );
                return;
            }
            Err(e) => tracing::warn!("renewing the cluster lease failed, retrying: {e}"),
        }
    }
}

async fn renew_once(api: &Api<Lease>, config: &LeaseConfig) -> Result<(), LeaseError> {
    let Some(mut lease) = api
        .get_opt(&config.name)
        .await
        .map_err(|e| api_error("read", config, e))?
    else {
        return take(api, config).await;
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    match spec.holder_identity.as_deref() {
        Some(h) if h == config.holder => {}
        Some(h) if !h.is_empty() => {
            return Err(LeaseError::Held {
                namespace: config.namespace.clone(),
                name: config.name.clone(),
                holder: h.to_owned(),
                age_secs: 0,
                duration_secs: spec.lease_duration_seconds.unwrap_or(0),
            });
        }
        _ => return take(api, config).await,
    }
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    api.replace(&config.name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
        .map_err(|e| api_error("renew", config, e))
}

fn lost(on_lost: &OnLost, config: &LeaseConfig, why: &str) {
    on_lost(format!(
        "lost the cluster lease {}/{}: {why}; stopping: nothing new is started",
        config.namespace, config.name
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_from_the_same_state_dir_is_the_same_place() {
        let a = LeaseConfig::for_cluster("c", std::path::Path::new("/tmp/state/c"));
        let b = LeaseConfig::for_cluster("c", std::path::Path::new("/tmp/state/c"));
        let other = LeaseConfig::for_cluster("c", std::path::Path::new("/tmp/other/c"));
        assert_ne!(a.holder, b.holder, "each run has its own identity");
        assert_eq!(place(&a.holder), place(&b.holder));
        assert_ne!(place(&a.holder), place(&other.holder));
        assert_eq!(place("laptop-2"), "laptop-2");
    }
}
