//! Bounded waits: every await on the outside world ends, so a hang fails the test instead of
//! blocking the suite.

use std::future::Future;
use std::time::Duration;

/// The default bound for one await in a test.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(30);

/// Await `f` for at most [`DEFAULT_LIMIT`]; panics naming `what` on timeout.
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    within_for(DEFAULT_LIMIT, what, f).await
}

/// Await `f` for at most `limit`; panics naming `what` on timeout.
pub async fn within_for<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Poll `api.get(name)` until `pred` holds and return the object; on timeout panic naming
/// `what` and the last state seen.
///
/// # Panics
/// When `pred` does not hold within [`DEFAULT_LIMIT`].
pub async fn wait_for<K, F>(api: &kube::Api<K>, name: &str, what: &str, pred: F) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    F: Fn(&K) -> bool,
{
    let mut last = None;
    let found = tokio::time::timeout(DEFAULT_LIMIT, async {
        loop {
            if let Ok(o) = api.get(name).await {
                if pred(&o) {
                    return o;
                }
                last = Some(o);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {what}; last seen: {last:#?}"))
}
