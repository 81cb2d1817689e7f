//! The in-cluster run lock (design §4): a `coordination.k8s.io/v1` Lease, so two machines cannot
//! bootstrap the same cluster at once (the local lock file only covers one machine).
//!
//! The holder identity names the machine and the state directory, so the same machine and
//! state directory re-acquire at once (the local lock already serialises them), while another
//! machine is refused until the holder stops renewing and the lease expires. A held lock is
//! renewed in the background at a third of its duration; dropping the guard stops renewing.
//! Every write carries the `resourceVersion` it was decided on, so two racing takers cannot
//! both win (the loser gets 409 Conflict and reports the lock as held).

use std::time::Duration;

use ::kube::api::{Api, PostParams};
use ::kube::Client;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another live holder renews it.
    #[error(
        "another kubestrap run ({holder}) holds Lease {namespace}/{name} (renewed {age}s ago, expires after {duration}s without renewal); wait for it to finish, or, if that run is gone, wait for the lease to expire and try again"
    )]
    Held {
        /// Namespace of the Lease.
        namespace: String,
        /// Lease name.
        name: String,
        /// The holder identity.
        holder: String,
        /// Seconds since the last renewal.
        age: i64,
        /// Lease duration in seconds.
        duration: i32,
    },
    /// The API refused or failed.
    #[error("could not take Lease {namespace}/{name}: {source}")]
    Api {
        /// Namespace of the Lease.
        namespace: String,
        /// Lease name.
        name: String,
        /// The client error.
        #[source]
        source: Box<::kube::Error>,
    },
}

/// A held lease; renewal stops when dropped.
#[derive(Debug)]
pub struct ClusterLock {
    _renew: DropGuard,
}

/// Takes (or re-takes) the Lease `namespace/name` for `holder`.
///
/// # Errors
/// [`LeaseError::Held`] while another holder's lease is live; [`LeaseError::Api`] otherwise.
pub async fn acquire(
    client: &Client,
    namespace: &str,
    name: &str,
    holder: &str,
    duration: Duration,
) -> Result<ClusterLock, LeaseError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let secs = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX).max(1);
    let api_err = |source: ::kube::Error| LeaseError::Api {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source: Box::new(source),
    };
    let held = |holder: String, age: i64| LeaseError::Held {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        holder,
        age,
        duration: secs,
    };
    let now = Timestamp::now();
    match api.get_opt(name).await.map_err(api_err)? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec(holder, secs, now, None)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => {}
                Err(::kube::Error::Api(s)) if s.code == 409 => {
                    return Err(held("another run that created it first".into(), 0));
                }
                Err(e) => return Err(api_err(e)),
            }
        }
        Some(mut lease) => {
            let current = lease.spec.clone().unwrap_or_default();
            let current_holder = current.holder_identity.clone().unwrap_or_default();
            let renewed = current
                .renew_time
                .as_ref()
                .map(|t| t.0)
                .or(current.acquire_time.as_ref().map(|t| t.0));
            let age = renewed.map_or(i64::MAX, |t| now.duration_since(t).as_secs());
            let live_secs = i64::from(current.lease_duration_seconds.unwrap_or(secs));
            let ours = current_holder == holder;
            if !ours && !current_holder.is_empty() && age < live_secs {
                return Err(held(current_holder, age));
            }
            if ours && age < live_secs / 3 {
                // Ours and freshly renewed (a run right after ours on this machine): nothing
                // to write; the renewal task keeps it alive from here.
                return Ok(start_renewal(api, name, holder, duration));
            }
            let acquired = if ours { current.acquire_time.map(|t| t.0) } else { None };
            lease.spec = Some(spec(holder, secs, now, acquired));
            match api.replace(name, &PostParams::default(), &lease).await {
                Ok(_) => {}
                Err(::kube::Error::Api(s)) if s.code == 409 => {
                    return Err(held("another run that took it at the same moment".into(), 0));
                }
                Err(e) => return Err(api_err(e)),
            }
        }
    }
    Ok(start_renewal(api, name, holder, duration))
}

fn start_renewal(api: Api<Lease>, name: &str, holder: &str, duration: Duration) -> ClusterLock {
    let token = CancellationToken::new();
    tokio::spawn(renew(
        api,
        name.to_owned(),
        holder.to_owned(),
        duration,
        token.clone(),
    ));
    ClusterLock {
        _renew: token.drop_guard(),
    }
}

fn spec(holder: &str, secs: i32, now: Timestamp, acquired: Option<Timestamp>) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(holder.to_owned()),
        lease_duration_seconds: Some(secs),
        acquire_time: Some(MicroTime(acquired.unwrap_or(now))),
        renew_time: Some(MicroTime(now)),
        ..LeaseSpec::default()
    }
}

/// Renews the lease every third of its duration until cancelled. A failed renewal is retried at
/// the next tick; if it keeps failing the lease expires, which is the safe outcome.
async fn renew(
    api: Api<Lease>,
    name: String,
    holder: String,
    duration: Duration,
    token: CancellationToken,
) {
    let every = (duration / 3).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let Ok(Some(mut lease)) = api.get_opt(&name).await else {
            continue;
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(holder.as_str()) {
            tracing::warn!(lease = %name, "the cluster lock was taken over by another run");
            return;
        }
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        if let Err(e) = api.replace(&name, &PostParams::default(), &lease).await {
            tracing::debug!(lease = %name, error = %e, "renewing the cluster lock failed");
        }
    }
}
