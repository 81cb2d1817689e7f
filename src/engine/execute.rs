//! The two executors: apply (verify-or-apply with retries) and plan (describe only).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use super::context::{RunEnv, StepContext};
use super::events::{RunEvent, StepEnd, StepReport};
use super::graph::Node;
use super::step::{StepError, StepId, StepOutcome, Verified};
use super::walk::Executor;

/// What an earlier run recorded for a step that is done with the same inputs.
#[derive(Debug, Clone)]
pub(crate) struct PriorDone {
    pub outputs: serde_json::Value,
}

/// `apply`: verify steps that an earlier run finished, apply the rest with the retry policy.
pub(crate) struct ApplyExecutor {
    pub env: RunEnv,
    pub prior: HashMap<StepId, PriorDone>,
}

/// `plan`: ask each step what it would do.
pub(crate) struct PlanExecutor;

/// Run `fut` unless `ctx` is cancelled first.
async fn or_cancelled<T>(
    ctx: &StepContext,
    fut: impl Future<Output = Result<T, StepError>>,
) -> Result<T, StepError> {
    tokio::select! {
        biased;
        () = ctx.cancellation().cancelled() => Err(StepError::Cancelled),
        r = fut => r,
    }
}

fn report(node: &Node, end: StepEnd, started: Instant, attempts: u32) -> StepReport {
    StepReport {
        step: node.id.clone(),
        kind: node.step.kind(),
        phase: node.phase,
        end,
        changed: false,
        ready: false,
        waited: Duration::ZERO,
        attempts,
        duration: started.elapsed(),
        outputs: serde_json::Value::Null,
        error: None,
        actions: Vec::new(),
    }
}

impl ApplyExecutor {
    fn redact(&self, err: &StepError) -> String {
        self.env.redactor.redact(&err.chain()).into_owned()
    }

    /// Outputs go into the checkpoint, so they pass the redactor too. A step that returns a
    /// secret in its outputs has a bug; say so instead of recording the value.
    fn scrub(&self, node: &Node, outputs: serde_json::Value) -> serde_json::Value {
        let text = outputs.to_string();
        match self.env.redactor.redact(&text) {
            std::borrow::Cow::Borrowed(_) => outputs,
            std::borrow::Cow::Owned(clean) => {
                self.env.emit(&RunEvent::Warning {
                    message: format!(
                        "step {} returned a secret value in its outputs; it was redacted before recording (a bug in the step)",
                        node.id
                    ),
                });
                serde_json::from_str(&clean).unwrap_or(serde_json::Value::Null)
            }
        }
    }

    /// `Some(report)` when the prior result still holds.
    async fn verify_prior(
        &self,
        node: &Node,
        ctx: &StepContext,
        started: Instant,
    ) -> Option<StepReport> {
        let prior = self.prior.get(&node.id)?;
        self.env.emit(&RunEvent::StepVerifying {
            step: node.id.clone(),
        });
        let reason = match or_cancelled(ctx, node.step.verify(ctx)).await {
            Ok(Verified::Holds) => {
                let mut r = report(node, StepEnd::Skipped, started, 0);
                r.outputs = prior.outputs.clone();
                return Some(r);
            }
            Ok(Verified::DoesNotHold { reason }) => self.env.redactor.redact(&reason).into_owned(),
            Err(StepError::Cancelled) => {
                let mut r = report(node, StepEnd::Interrupted, started, 0);
                r.error = Some(StepError::Cancelled.to_string());
                return Some(r);
            }
            // The step reached another cluster or Vault than the checkpoint's: applying it
            // there is exactly what the refusal exists to prevent.
            Err(e) if self.env.identities.conflict().is_some() => {
                let mut r = report(node, StepEnd::Failed, started, 0);
                r.error = Some(self.redact(&e));
                return Some(r);
            }
            Err(e) => format!("verification failed: {}", self.redact(&e)),
        };
        self.env.emit(&RunEvent::StepVerifyFailed {
            step: node.id.clone(),
            reason,
        });
        None
    }
}

#[async_trait::async_trait]
impl Executor for ApplyExecutor {
    async fn execute(&self, node: Node, ctx: StepContext) -> StepReport {
        let started = Instant::now();
        if let Some(done) = self.verify_prior(&node, &ctx, started).await {
            return done;
        }
        let policy = node.step.retry_policy();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.env.emit(&RunEvent::StepStarted {
                step: node.id.clone(),
                phase: node.phase,
                attempt,
            });
            let result: Result<StepOutcome, StepError> =
                or_cancelled(&ctx, node.step.apply(&ctx)).await;
            let err = match result {
                Ok(outcome) => {
                    // Crash point for resume tests (cargo feature `failpoints`): the step's
                    // work is done but not yet recorded, e.g.
                    // FAILPOINTS="after-apply:vault.init=sleep(60000)" then SIGKILL.
                    fail::fail_point!(&format!("after-apply:{}", node.id));
                    let mut r = report(&node, StepEnd::Done, started, attempt);
                    r.changed = outcome.changed;
                    r.ready = outcome.ready && !outcome.changed;
                    r.waited = ctx.waited();
                    r.outputs = self.scrub(&node, outcome.outputs);
                    return r;
                }
                Err(e) => e,
            };
            let message = self.redact(&err);
            if matches!(err, StepError::Cancelled) {
                let mut r = report(&node, StepEnd::Interrupted, started, attempt);
                r.error = Some(message);
                return r;
            }
            let next = if err.is_transient() {
                policy.delay(attempt + 1, started.elapsed(), &mut rand::rng())
            } else {
                None
            };
            let Some(delay) = next else {
                let mut r = report(&node, StepEnd::Failed, started, attempt);
                r.waited = ctx.waited();
                r.error = Some(if err.is_transient() && attempt > 1 {
                    format!("{message} (gave up after {attempt} attempts)")
                } else {
                    message
                });
                return r;
            };
            self.env.emit(&RunEvent::StepRetrying {
                step: node.id.clone(),
                attempt,
                error: message,
                delay,
            });
            let slept = or_cancelled(&ctx, async {
                tokio::time::sleep(delay).await;
                Ok(())
            })
            .await;
            if slept.is_err() {
                let mut r = report(&node, StepEnd::Interrupted, started, attempt);
                r.error = Some(StepError::Cancelled.to_string());
                return r;
            }
        }
    }
}

#[async_trait::async_trait]
impl Executor for PlanExecutor {
    async fn execute(&self, node: Node, ctx: StepContext) -> StepReport {
        let started = Instant::now();
        match or_cancelled(&ctx, node.step.plan(&ctx)).await {
            Ok(actions) => {
                let mut r = report(&node, StepEnd::Done, started, 1);
                r.actions = actions;
                r
            }
            Err(StepError::Cancelled) => report(&node, StepEnd::Interrupted, started, 1),
            Err(e) => {
                let mut r = report(&node, StepEnd::Failed, started, 1);
                r.error = Some(ctx.redactor().redact(&e.chain()).into_owned());
                r
            }
        }
    }
}

/// Duration helper for reports.
#[must_use]
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
