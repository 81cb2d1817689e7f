//! [`TemplateStep`]: a step that applies one rendered template. Its `plan`, `apply` and
//! `verify` are the same for every such step, so they are written once, here.

use serde::Serialize;

use crate::engine::{Action, Step, StepContext, StepError, StepOutcome, Verified};

use super::manifests::{apply_yaml, manifest_matches, plan_yaml};

/// A step that server-side-applies one rendered template, then optionally waits.
///
/// `plan` shows the dry-run's actions followed by [`TemplateStep::waits`] (or
/// [`TemplateStep::actions`] while the cluster cannot be asked); `apply` applies and runs
/// [`TemplateStep::after_apply`]; `verify` holds while a dry-run of the manifest changes
/// nothing and [`TemplateStep::still_holds`] holds (what `after_apply` waited for).
#[async_trait::async_trait]
pub trait TemplateStep: Serialize + Send + Sync + std::fmt::Debug {
    /// The step kind, e.g. `vault.install`.
    fn kind(&self) -> &'static str;

    /// The rendered template.
    ///
    /// # Errors
    /// A permanent [`StepError`] when the template does not render.
    fn manifest(&self) -> Result<String, StepError>;

    /// The static plan, shown when the cluster cannot be asked yet.
    fn actions(&self) -> Vec<Action>;

    /// What `apply` waits for after applying, as plan actions (none by default).
    fn waits(&self) -> Vec<Action> {
        Vec::new()
    }

    /// Runs after every apply, e.g. to wait for what was applied to become ready.
    ///
    /// # Errors
    /// A classified [`StepError`].
    async fn after_apply(&self, _ctx: &StepContext) -> Result<(), StepError> {
        Ok(())
    }

    /// What `after_apply` waited for, checked once by `verify` after the manifest matched:
    /// objects that are as applied but no longer work (a Deployment that lost its pods) are
    /// applied and waited for again. Holds by default.
    ///
    /// # Errors
    /// A classified [`StepError`] when the cluster cannot be asked.
    async fn still_holds(&self, _ctx: &StepContext) -> Result<Verified, StepError> {
        Ok(Verified::Holds)
    }
}

#[async_trait::async_trait]
impl<T: TemplateStep> Step for T {
    fn kind(&self) -> &'static str {
        TemplateStep::kind(self)
    }

    fn payload(&self) -> serde_json::Value {
        crate::steps::payload_of(self)
    }

    async fn plan(&self, ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        match plan_yaml(ctx, &self.manifest()?).await {
            Ok(mut actions) => {
                actions.extend(self.waits());
                Ok(actions)
            }
            Err(_) => Ok(self.actions()),
        }
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let changed = apply_yaml(ctx, &self.manifest()?).await?;
        self.after_apply(ctx).await?;
        Ok(StepOutcome::new(changed))
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        match manifest_matches(ctx, &self.manifest()?).await? {
            Verified::Holds => self.still_holds(ctx).await,
            drift => Ok(drift),
        }
    }
}
