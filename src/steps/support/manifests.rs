//! Manifests as step actions: server-side apply of a rendered template (changed or not), the
//! same template planned through server-side dry-runs, a check that what was applied still
//! holds (what [`super::TemplateStep`] is made of).

use crate::engine::{Action, StepContext, StepError, Verified};
use crate::kube::{Applier, ApplyAction, ApplyOptions, PlanAction, PlanOutcome, parse_manifests};

use super::cluster::ClusterContext;
use super::waits::cancellable;

/// Server-side-applies a rendered manifest stream; `true` when anything was created or changed.
///
/// # Errors
/// A classified [`StepError`] naming the failing object.
pub(crate) async fn apply_yaml(ctx: &StepContext, yaml: &str) -> Result<bool, StepError> {
    let client = ctx.kube().await?;
    let applier = Applier::new(client, ApplyOptions::default());
    let outcomes = cancellable(ctx, async {
        applier
            .apply_yaml(yaml)
            .await
            .map_err(|e| StepError::classify("apply", e))
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
    let objects = parse_manifests(yaml).map_err(|e| StepError::classify("apply", e))?;
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

/// Whether every object of a manifest exists as it would be applied (server-side dry-run).
pub(crate) async fn manifest_matches(ctx: &StepContext, yaml: &str) -> Result<Verified, StepError> {
    let drift: Vec<String> = plan_yaml(ctx, yaml)
        .await?
        .into_iter()
        .filter(|a| a.op != crate::engine::Op::Unchanged)
        .map(|a| format!("{} ({:?})", a.target, a.op))
        .collect();
    Ok(if drift.is_empty() {
        Verified::Holds
    } else {
        Verified::DoesNotHold {
            reason: format!("not as applied: {}", drift.join(", ")),
        }
    })
}
