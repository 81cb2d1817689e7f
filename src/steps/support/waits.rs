//! Waits as steps use them: the playbook's timeout, progress forwarded to the step's events,
//! interruption by the run, and the waits several steps share (a HelmRelease Ready, Deployments
//! Available).

use std::future::Future;
use std::time::Duration;

use ::kube::Api;
use ::kube::core::{ApiResource, DynamicObject};
use futures::future::try_join_all;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;

use crate::engine::{StepContext, StepError, Verified};
use crate::kube::wait::{self, WaitProgress};
use crate::kube::{Check, ConditionSpec, PodState, WaitError, WaitOptions};
use crate::playbook::HumanDuration;

use super::cluster::ClusterContext;
use super::diagnose::{self, Finding};
use super::kinds::helm_release;

/// How often a running wait reports what it last observed.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// A wait that ran out of time: permanent (the timeout is the playbook's bound), and the
/// message already names the object, the condition and the last observed status. (Waits
/// through [`StepWaits`] add the root-cause chain.)
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
/// The message leaves out the wait's elapsed time (the event carries the step's), so it only
/// changes when what is observed changes, and printers can show a wait once per change.
pub(crate) fn reporter(ctx: &StepContext) -> impl FnMut(&WaitProgress<'_>) + Send + '_ {
    move |p: &WaitProgress<'_>| {
        ctx.progress(format!(
            "waiting for {} {}: {}",
            p.object, p.condition, p.last
        ));
    }
}

/// One step's waits: every toolkit wait with the step's timeout, its progress reported as the
/// step's, ended by an interruption of the run, and a timeout turned into a permanent
/// [`StepError`] that names the object, the condition and what was last observed.
pub(crate) struct StepWaits<'a> {
    ctx: &'a StepContext,
    client: ::kube::Client,
    options: WaitOptions,
    /// Where a failed wait's root-cause walk starts when not at the wait's own object; such
    /// waits leave the periodic walk to whoever set it (see [`Self::below_release`]).
    shared_root: Option<String>,
}

impl<'a> StepWaits<'a> {
    /// Waits of `ctx` through `client`, each bounded by `timeout`.
    pub(crate) fn new(
        ctx: &'a StepContext,
        client: ::kube::Client,
        timeout: HumanDuration,
    ) -> Self {
        Self {
            ctx,
            client,
            options: wait_options(timeout),
            shared_root: None,
        }
    }

    /// The same waits sharing the root-cause walk of `release`'s HelmRelease, for
    /// [`Self::below_release`]: no periodic walk of their own, and a failed one explains itself
    /// with the chain from the release down.
    pub(crate) fn sharing_a_walk(&self, namespace: &str, release: &str) -> Self {
        Self {
            ctx: self.ctx,
            client: self.client.clone(),
            options: self.options,
            shared_root: Some(wait::describe("HelmRelease", Some(namespace), release)),
        }
    }

    /// Until the HelmRelease is Ready and, side by side, `rest` (waits of
    /// [`Self::sharing_a_walk`] for the same release) holds, with one root-cause walk below the
    /// HelmRelease for all of them.
    ///
    /// Why side by side: when the release turns Ready last (Helm's own wait holds it back until
    /// its workloads are ready), the other waits' watches are already open and the step goes on
    /// after that one event, instead of opening them one after another then. Why one walk from
    /// the release: whichever object is stuck, the chain names it from the release down
    /// (`Pod`, `StatefulSet`, `HelmRelease`), as a release-first wait did.
    pub(crate) async fn below_release<T>(
        &self,
        namespace: &str,
        release: &str,
        rest: impl Future<Output = Result<T, StepError>>,
    ) -> Result<T, StepError> {
        let object = wait::describe("HelmRelease", Some(namespace), release);
        let shared = self.sharing_a_walk(namespace, release);
        let started = tokio::time::Instant::now();
        // Boxed: the joined waits make a large future, and a debug build's worker stack holds
        // it whole otherwise (a stack overflow in eso.ready).
        let both = Box::pin(async {
            tokio::try_join!(shared.release_ready(namespace, release), rest).map(|((), t)| t)
        });
        tokio::select! {
            r = both => r,
            f = watch_terminal(self.ctx, &self.client, &object) => {
                Err(terminal_below(&object, started.elapsed(), &f))
            }
        }
    }

    /// Runs `wait` on `object` (`Kind namespace/name`) beside a periodic root-cause walk: a
    /// terminal state anywhere below the object ends the wait at once, and a failed wait
    /// carries the walk's chain.
    async fn guard<T>(
        &self,
        object: &str,
        wait: impl Future<Output = Result<T, WaitError>>,
    ) -> Result<T, StepError> {
        let started = tokio::time::Instant::now();
        let waiting = self.ctx.waiting();
        let root = self.shared_root.as_deref();
        let outcome = cancellable(self.ctx, async {
            Ok(tokio::select! {
                r = wait => Ok(r),
                f = watch_terminal(self.ctx, &self.client, object), if root.is_none() => Err(f),
            })
        })
        .await;
        drop(waiting);
        match outcome? {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let finding = diagnose::walk(&self.client, root.unwrap_or(object)).await;
                Err(failed_wait(&e, finding.as_ref()))
            }
            Err(f) => Err(terminal_below(object, started.elapsed(), &f)),
        }
    }

    /// Until the object's condition matches `spec`; returns the object.
    pub(crate) async fn condition(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        spec: &ConditionSpec,
    ) -> Result<DynamicObject, StepError> {
        let mut report = reporter(self.ctx);
        let object = wait::describe(&resource.kind, namespace, name);
        let kind = resource.kind.clone();
        self.guard(
            &object,
            wait::condition_or_terminal(
                &self.client,
                resource,
                namespace,
                name,
                spec,
                &self.options,
                &mut report,
                move |v| diagnose::terminal_state(&kind, v),
            ),
        )
        .await
    }

    /// Until the object reports `Ready=True`; returns the object.
    pub(crate) async fn ready(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<DynamicObject, StepError> {
        self.condition(resource, namespace, name, &ConditionSpec::is_true("Ready"))
            .await
    }

    /// Until the HelmRelease is Ready.
    pub(crate) async fn release_ready(&self, namespace: &str, name: &str) -> Result<(), StepError> {
        self.ready(&helm_release(), Some(namespace), name)
            .await
            .map(|_| ())
    }

    /// Until the Deployment is Available.
    pub(crate) async fn deployment_available(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(), StepError> {
        let mut report = reporter(self.ctx);
        let object = wait::describe("Deployment", Some(namespace), name);
        self.guard(
            &object,
            wait::deployment_available(&self.client, namespace, name, &self.options, &mut report),
        )
        .await
    }

    /// Until every named Deployment is Available. The waits run side by side: once the last
    /// one turns Available the step goes on after that one watch event, instead of opening one
    /// watch after another for those that already were (a round trip each). The first failure
    /// ends them all.
    pub(crate) async fn deployments_available(
        &self,
        namespace: &str,
        names: &[&str],
    ) -> Result<(), StepError> {
        try_join_all(
            names
                .iter()
                .map(|name| self.deployment_available(namespace, name)),
        )
        .await
        .map(drop)
    }

    /// Until every named CustomResourceDefinition is Established, side by side (as
    /// [`Self::deployments_available`]); returns them as last seen.
    pub(crate) async fn crds_established(
        &self,
        names: &[&str],
    ) -> Result<Vec<CustomResourceDefinition>, StepError> {
        try_join_all(names.iter().map(|name| self.crd_established(name))).await
    }

    /// Until the CustomResourceDefinition is Established; returns it as last seen.
    pub(crate) async fn crd_established(
        &self,
        name: &str,
    ) -> Result<CustomResourceDefinition, StepError> {
        let mut report = reporter(self.ctx);
        let object = wait::describe("CustomResourceDefinition", None, name);
        self.guard(
            &object,
            wait::crd_established(&self.client, name, &self.options, &mut report),
        )
        .await
    }

    /// Until the pod is in `state`; returns it.
    pub(crate) async fn pod(
        &self,
        namespace: &str,
        name: &str,
        state: PodState,
    ) -> Result<Pod, StepError> {
        let mut report = reporter(self.ctx);
        let object = wait::describe("Pod", Some(namespace), name);
        self.guard(
            &object,
            wait::pod(
                &self.client,
                namespace,
                name,
                state,
                &self.options,
                &mut report,
            ),
        )
        .await
    }

    /// Until `predicate` holds on the object (`None`: it does not exist), described as
    /// `object` and `condition` in progress and errors.
    pub(crate) async fn until<K, P>(
        &self,
        api: Api<K>,
        name: &str,
        object: &str,
        condition: &str,
        predicate: P,
    ) -> Result<Option<K>, StepError>
    where
        K: ::kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
        P: FnMut(Option<&K>) -> Check + Send,
    {
        let mut report = reporter(self.ctx);
        self.guard(
            object,
            wait::until(
                api,
                name,
                object,
                condition,
                &self.options,
                &mut report,
                predicate,
            ),
        )
        .await
    }
}

/// How often a running wait walks below its object for a terminal state.
const WALK_EVERY: Duration = Duration::from_secs(3);

/// Walks below `object` every [`WALK_EVERY`] until it finds a terminal state (returned); reports
/// a newly found root cause as progress, so a slow wait says what it is waiting on.
async fn watch_terminal(ctx: &StepContext, client: &::kube::Client, object: &str) -> Finding {
    let mut shown = String::new();
    loop {
        tokio::time::sleep(WALK_EVERY).await;
        let Some(found) = diagnose::walk(client, object).await else {
            continue;
        };
        if found.terminal.is_some() {
            return found;
        }
        if found.diagnosis.levels.len() > 1
            && let Some(leaf) = found.diagnosis.levels.first()
        {
            let line = format!("{}: {}", leaf.object, leaf.state);
            if line != shown {
                ctx.progress(format!("waiting for {object}; deepest unhealthy: {line}"));
                shown = line;
            }
        }
    }
}

/// A wait that ended without its condition: permanent (the timeout is the playbook's bound, a
/// terminal state does not pass), with the root-cause chain when the walk found one.
fn failed_wait(e: &WaitError, finding: Option<&Finding>) -> StepError {
    let mut message = e.to_string();
    let specific = finding.is_some_and(|f| f.diagnosis.hint.is_some());
    if matches!(e, WaitError::Timeout { .. }) && !specific {
        message.push_str("; raise the matching [timeouts] value if the cluster is just slow");
    }
    if let Some(f) = finding.filter(|f| !f.diagnosis.levels.is_empty()) {
        message.push('\n');
        message.push_str(&f.diagnosis.render());
    }
    StepError::permanent(message)
}

/// The walk found a terminal state below `object` before the wait ended.
fn terminal_below(object: &str, waited: Duration, f: &Finding) -> StepError {
    let leaf = f
        .diagnosis
        .levels
        .iter()
        .find(|l| f.terminal.as_deref() == Some(l.state.as_str()))
        .or(f.diagnosis.levels.first())
        .map_or_else(|| object.to_owned(), |l| l.object.clone());
    StepError::permanent(format!(
        "{object} cannot become ready: {leaf} failed after {}s: {}\n{}",
        waited.as_secs(),
        f.terminal.as_deref().unwrap_or(""),
        f.diagnosis.render()
    ))
}

/// Whether every named Deployment reports `Available=True`.
pub(crate) async fn deployments_available(
    ctx: &StepContext,
    namespace: &str,
    names: &[&str],
) -> Result<Verified, StepError> {
    let api: Api<Deployment> = Api::namespaced(ctx.kube().await?, namespace);
    for name in names {
        let what = format!("Deployment {namespace}/{name}");
        let available =
            super::checks::exists_with(&api, name, &what, &ConditionSpec::is_true("Available"))
                .await?;
        if available != Verified::Holds {
            return Ok(available);
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
