//! Helpers every step kind shares: classifying client errors for the retry policy, applying and
//! planning manifests as step actions, and watch-based waits that report progress and stop when
//! the run is interrupted.

use std::future::Future;
use std::time::Duration;

use ::kube::core::{ApiResource, GroupVersionKind};

use crate::engine::{Action, StepContext, StepError};
use crate::kube::wait::WaitProgress;
use crate::kube::{
    Applier, ApplyAction, ApplyError, ApplyOptions, PlanAction, PlanOutcome, WaitError,
    WaitOptions, parse_manifests,
};
use crate::playbook::HumanDuration;

/// How often a running wait reports what it last observed.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Classifies a Kubernetes client error with the engine's shared rules
/// ([`StepError::from_kube`]): throttling, conflicts, server errors and transport failures may
/// pass; anything else (forbidden, invalid) needs a change by someone.
pub(crate) fn kube_error(what: &str, e: ::kube::Error) -> StepError {
    StepError::from_kube(what, e)
}

/// Classifies an [`ApplyError`]: a kind that is not served yet (its CRD comes from a chart that
/// is still installing) and API hiccups are worth retrying; invalid manifests are not.
pub(crate) fn apply_error(e: ApplyError) -> StepError {
    let transient = match &e {
        ApplyError::Api(r) => r.code == 429 || r.code >= 500,
        ApplyError::Transport { .. }
        | ApplyError::UnknownKind { .. }
        | ApplyError::CrdNotEstablished(_) => true,
        ApplyError::Parse { .. }
        | ApplyError::Incomplete { .. }
        | ApplyError::TrackingLabel { .. } => false,
    };
    if transient {
        StepError::transient(e.to_string())
    } else {
        StepError::permanent(e.to_string())
    }
}

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

/// Server-side-applies a rendered manifest stream; `true` when anything was created or changed.
///
/// # Errors
/// A classified [`StepError`] naming the failing object.
pub(crate) async fn apply_yaml(ctx: &StepContext, yaml: &str) -> Result<bool, StepError> {
    let client = ctx.kube().await?;
    let applier = Applier::new(client, ApplyOptions::default());
    let outcomes = cancellable(ctx, async {
        applier.apply_yaml(yaml).await.map_err(apply_error)
    })
    .await?;
    let mut changed = false;
    for o in &outcomes {
        match o.action {
            ApplyAction::Unchanged => {}
            ApplyAction::Created => {
                changed = true;
                ctx.progress(format!("created {}", o.object));
            }
            ApplyAction::Configured => {
                changed = true;
                ctx.progress(format!("configured {}", o.object));
            }
        }
    }
    Ok(changed)
}

/// What applying `yaml` would do, from server-side dry-runs against the live cluster.
///
/// # Errors
/// A transient [`StepError`] when the cluster cannot be asked (it does not exist yet or does not
/// answer): callers then show their static "would create" actions, which carry more detail. A
/// permanent one when the manifest is invalid or the API rejects a dry-run.
pub(crate) async fn plan_yaml(ctx: &StepContext, yaml: &str) -> Result<Vec<Action>, StepError> {
    let objects = parse_manifests(yaml).map_err(apply_error)?;
    let client = ctx
        .kube()
        .await
        .map_err(|_| StepError::transient("the cluster does not exist yet"))?;
    let outcomes = Applier::new(client, ApplyOptions::default())
        .plan(objects)
        .await
        .map_err(|e| StepError::permanent(e.to_string()))?;
    if outcomes.iter().any(|o| {
        matches!(&o.action, PlanAction::WouldCreate { reason } if reason.contains("not reachable"))
    }) {
        return Err(StepError::transient("the API is not reachable"));
    }
    Ok(outcomes.into_iter().map(plan_action).collect())
}

/// One planned object as a plan action.
pub(crate) fn plan_action(o: PlanOutcome) -> Action {
    let target = o.object.to_string();
    match o.action {
        PlanAction::Create => Action::create(target),
        PlanAction::WouldCreate { reason } => {
            Action::create(target).with_detail(format!("not checked: {reason}"))
        }
        PlanAction::Update { paths } => {
            Action::update(target).with_detail(format!("changes {}", paths.join(", ")))
        }
        PlanAction::Unchanged => Action::unchanged(target),
    }
}

/// The served resource for a custom kind (plural by the usual English rule, which holds for
/// every Flux and ESO kind kubestrap touches).
pub(crate) fn resource(group: &str, version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

/// Flux's GitRepository.
pub(crate) fn git_repository() -> ApiResource {
    resource("source.toolkit.fluxcd.io", "v1", "GitRepository")
}

/// Flux's Kustomization.
pub(crate) fn kustomization() -> ApiResource {
    resource("kustomize.toolkit.fluxcd.io", "v1", "Kustomization")
}

/// Flux's HelmRelease.
pub(crate) fn helm_release() -> ApiResource {
    resource("helm.toolkit.fluxcd.io", "v2", "HelmRelease")
}

/// ESO's ExternalSecret.
pub(crate) fn external_secret() -> ApiResource {
    resource("external-secrets.io", "v1", "ExternalSecret")
}

/// ESO's ClusterSecretStore.
pub(crate) fn cluster_secret_store() -> ApiResource {
    resource("external-secrets.io", "v1", "ClusterSecretStore")
}

/// `Ready=True` on a condition list, with a description of what was seen otherwise.
pub(crate) fn ready_state(obj: &serde_json::Value) -> (bool, String) {
    let check = crate::kube::wait::evaluate_condition(
        Some(obj),
        &crate::kube::ConditionSpec::is_true("Ready"),
    );
    (check.done, check.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_and_server_errors_are_transient_forbidden_is_not() {
        let status = |code: u16| {
            ::kube::Error::Api(Box::new(::kube::core::Status {
                code,
                message: "m".into(),
                reason: "R".into(),
                ..Default::default()
            }))
        };
        assert!(kube_error("x", status(409)).is_transient());
        assert!(kube_error("x", status(503)).is_transient());
        assert!(!kube_error("x", status(403)).is_transient());
        assert!(!kube_error("x", status(422)).is_transient());
    }

    #[test]
    fn flux_and_eso_kinds_pluralise_as_served() {
        assert_eq!(git_repository().plural, "gitrepositories");
        assert_eq!(kustomization().plural, "kustomizations");
        assert_eq!(helm_release().plural, "helmreleases");
        assert_eq!(external_secret().plural, "externalsecrets");
        assert_eq!(cluster_secret_store().plural, "clustersecretstores");
    }
}
