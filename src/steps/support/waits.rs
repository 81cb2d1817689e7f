//! Waits as steps use them: the playbook's timeout, progress forwarded to the step's events,
//! interruption by the run, and the waits several steps share (a HelmRelease Ready, Deployments
//! Available).

use std::future::Future;
use std::time::Duration;

use ::kube::Api;
use k8s_openapi::api::apps::v1::Deployment;

use crate::engine::{StepContext, StepError, Verified};
use crate::kube::wait::WaitProgress;
use crate::kube::{WaitError, WaitOptions};
use crate::playbook::HumanDuration;

use super::cluster::ClusterContext;
use super::kinds::helm_release;

/// How often a running wait reports what it last observed.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// A wait that ran out of time: permanent (the timeout is the playbook's bound), and the
/// message already names the object, the condition and the last observed status.
pub(crate) fn wait_error(e: WaitError) -> StepError {
    StepError::permanent(format!(
        "{e}; raise the matching [timeouts] value if the cluster is just slow"
    ))
}

/// Wait options for a playbook timeout.
pub(crate) fn wait_options(timeout: HumanDuration) -> WaitOptions {
    WaitOptions {
        timeout: timeout.get(),
        progress_every: PROGRESS_EVERY,
    }
}

/// Runs `fut` unless the run is interrupted first.
pub(crate) async fn cancellable<T>(
    ctx: &StepContext,
    fut: impl Future<Output = Result<T, StepError>>,
) -> Result<T, StepError> {
    tokio::select! {
        r = fut => r,
        () = ctx.cancellation().cancelled() => Err(StepError::Cancelled),
    }
}

/// A progress callback for the toolkit's waits that forwards to the step's progress events.
pub(crate) fn reporter(ctx: &StepContext) -> impl FnMut(&WaitProgress<'_>) + Send + '_ {
    move |p: &WaitProgress<'_>| ctx.progress(p.to_string())
}

/// Waits for a HelmRelease to be Ready; a failure names the release's last reason.
pub(crate) async fn wait_release(
    ctx: &StepContext,
    client: &::kube::Client,
    namespace: &str,
    name: &str,
    timeout: HumanDuration,
) -> Result<(), StepError> {
    let options = wait_options(timeout);
    let mut report = reporter(ctx);
    cancellable(ctx, async {
        crate::kube::wait::condition(
            client,
            &helm_release(),
            Some(namespace),
            name,
            &crate::kube::ConditionSpec::is_true("Ready"),
            &options,
            &mut report,
        )
        .await
        .map(|_| ())
        .map_err(wait_error)
    })
    .await
}

/// Whether every named Deployment reports `Available=True`.
pub(crate) async fn deployments_available(
    ctx: &StepContext,
    namespace: &str,
    names: &[&str],
) -> Result<Verified, StepError> {
    let api: Api<Deployment> = Api::namespaced(ctx.kube().await?, namespace);
    for name in names {
        let d = api
            .get_opt(name)
            .await
            .map_err(|e| StepError::classify(format!("read Deployment {namespace}/{name}"), e))?;
        let Some(d) = d else {
            return Ok(Verified::DoesNotHold {
                reason: format!("Deployment {namespace}/{name} does not exist"),
            });
        };
        let v = serde_json::to_value(&d).unwrap_or_default();
        let check = crate::kube::wait::evaluate_condition(
            Some(&v),
            &crate::kube::ConditionSpec::is_true("Available"),
        );
        if !check.done {
            return Ok(Verified::DoesNotHold {
                reason: format!("Deployment {namespace}/{name}: {}", check.status),
            });
        }
    }
    Ok(Verified::Holds)
}

/// `Ready=True` on a condition list, with a description of what was seen otherwise.
pub(crate) fn ready_state(obj: &serde_json::Value) -> (bool, String) {
    let check = crate::kube::wait::evaluate_condition(
        Some(obj),
        &crate::kube::ConditionSpec::is_true("Ready"),
    );
    (check.done, check.status)
}
