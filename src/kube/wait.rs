//! Watch-based waits with progress and timeouts that explain themselves.
//!
//! Every wait here opens a kube-runtime `watcher` on one object (field selector on its name) and
//! re-evaluates a predicate on each event: no polling loops, and the reaction to a change is one
//! watch event away. The watcher re-lists and re-watches with backoff on errors (410 Gone, a
//! dropped connection, a transient 5xx), so a wait survives an API hiccup.
//!
//! Each wait takes a timeout and a progress callback, called every
//! [`WaitOptions::progress_every`] with the elapsed time and the last observed status, so a
//! terminal printer can show `waiting for GitRepository flux-system/flux-system Ready (12s):
//! Ready=Unknown reason=Progressing`. A timeout error names the object, the condition and the
//! last observed status; never a bare "deadline exceeded".

use std::fmt;
use std::time::Duration;

use ::kube::api::{Api, DynamicObject};
use ::kube::core::ApiResource;
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event};
use ::kube::{Client, Resource, ResourceExt};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::{Instant, interval_at, sleep_until};

/// Why a wait ended without its condition.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The condition did not hold within the timeout.
    #[error(
        "timed out after {}s waiting for {object} {condition}; last observed: {last}",
        waited.as_secs()
    )]
    Timeout {
        /// The object, e.g. `GitRepository flux-system/flux-system`.
        object: String,
        /// The condition, e.g. `Ready=True`.
        condition: String,
        /// How long it waited.
        waited: Duration,
        /// The last observed status, reason and message (or the last watch error).
        last: String,
    },
    /// The object reached a state no controller recovers from on its own (a Stalled
    /// HelmRelease, a failed build or Job): waiting longer cannot help.
    #[error(
        "{object} failed after {}s while waiting for {condition}: {last}",
        waited.as_secs()
    )]
    Terminal {
        /// The object.
        object: String,
        /// The condition.
        condition: String,
        /// How long it waited.
        waited: Duration,
        /// The terminal state observed.
        last: String,
    },
    /// The watch stream ended, which kube-runtime's watcher never does on its own.
    #[error("the watch on {object} ended while waiting for {condition}; last observed: {last}")]
    StreamEnded {
        /// The object.
        object: String,
        /// The condition.
        condition: String,
        /// The last observed status.
        last: String,
    },
}

/// How long to wait and how often to report progress.
#[derive(Debug, Clone, Copy)]
pub struct WaitOptions {
    /// Give up after this long (from the playbook).
    pub timeout: Duration,
    /// Call the progress callback this often.
    pub progress_every: Duration,
}

impl WaitOptions {
    /// A wait of `timeout` reporting progress every second.
    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            progress_every: Duration::from_secs(1),
        }
    }
}

/// One progress report from a running wait.
#[derive(Debug, Clone, Copy)]
pub struct WaitProgress<'a> {
    /// The object, e.g. `Deployment vault/vault`.
    pub object: &'a str,
    /// The condition, e.g. `Available=True`.
    pub condition: &'a str,
    /// Time since the wait started.
    pub elapsed: Duration,
    /// The last observed status.
    pub last: &'a str,
}

impl fmt::Display for WaitProgress<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "waiting for {} {} ({}s): {}",
            self.object,
            self.condition,
            self.elapsed.as_secs(),
            self.last
        )
    }
}

/// The progress callback type: called periodically from the waiting task.
pub type Progress<'a> = &'a mut (dyn FnMut(&WaitProgress<'_>) + Send);

/// The verdict of a predicate on the current object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The condition holds.
    pub done: bool,
    /// What was observed, for progress and timeout messages.
    pub status: String,
    /// The observed state is final: the condition will not hold without a change.
    pub terminal: bool,
}

impl Check {
    /// The condition holds.
    #[must_use]
    pub fn done(status: impl Into<String>) -> Self {
        Self {
            done: true,
            status: status.into(),
            terminal: false,
        }
    }

    /// The condition cannot hold any more without a change (fail the wait now).
    #[must_use]
    pub fn terminal(status: impl Into<String>) -> Self {
        Self {
            done: false,
            status: status.into(),
            terminal: true,
        }
    }

    /// The condition does not hold yet.
    #[must_use]
    pub fn pending(status: impl Into<String>) -> Self {
        Self {
            done: false,
            status: status.into(),
            terminal: false,
        }
    }
}

/// Waits until `predicate` holds for the object `name` (called with `None` while it does not
/// exist), and returns the object as last seen.
///
/// `object` and `condition` only describe the wait for progress and errors.
///
/// # Errors
/// [`WaitError::Timeout`] with the last observed status.
pub async fn until<K, P>(
    api: Api<K>,
    name: &str,
    object: &str,
    condition: &str,
    options: &WaitOptions,
    progress: Progress<'_>,
    mut predicate: P,
) -> Result<Option<K>, WaitError>
where
    K: Resource + Clone + DeserializeOwned + fmt::Debug + Send + 'static,
    P: FnMut(Option<&K>) -> Check + Send,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher::watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    let start = Instant::now();
    let deadline = start + options.timeout;
    let every = options.progress_every.max(Duration::from_millis(10));
    let mut ticker = interval_at(start + every, every);
    let mut current: Option<K> = None;
    let mut relisted: Option<K> = None;
    let mut initialised = false;
    let mut last = "no answer from the API yet".to_owned();
    let mut last_error: Option<String> = None;
    let describe_last = |last: &str, err: &Option<String>| match err {
        Some(e) => format!("{last}; last watch error: {e}"),
        None => last.to_owned(),
    };
    loop {
        tokio::select! {
            () = sleep_until(deadline) => {
                return Err(WaitError::Timeout {
                    object: object.to_owned(),
                    condition: condition.to_owned(),
                    waited: start.elapsed(),
                    last: describe_last(&last, &last_error),
                });
            }
            _ = ticker.tick() => {
                let shown = describe_last(&last, &last_error);
                progress(&WaitProgress { object, condition, elapsed: start.elapsed(), last: &shown });
            }
            event = stream.next() => {
                let event = match event {
                    None => return Err(WaitError::StreamEnded {
                        object: object.to_owned(),
                        condition: condition.to_owned(),
                        last: describe_last(&last, &last_error),
                    }),
                    Some(Err(e)) => {
                        last_error = Some(e.to_string());
                        continue;
                    }
                    Some(Ok(event)) => event,
                };
                last_error = None;
                let named = |o: &K| o.name_any() == name;
                match event {
                    Event::Init => relisted = None,
                    Event::InitApply(o) if named(&o) => relisted = Some(o),
                    Event::InitDone => {
                        current = relisted.take();
                        initialised = true;
                    }
                    Event::Apply(o) if named(&o) => current = Some(o),
                    Event::Delete(o) if named(&o) => current = None,
                    _ => continue,
                }
                if initialised {
                    let check = predicate(current.as_ref());
                    last = check.status;
                    if check.done {
                        return Ok(current);
                    }
                    if check.terminal {
                        return Err(WaitError::Terminal {
                            object: object.to_owned(),
                            condition: condition.to_owned(),
                            waited: start.elapsed(),
                            last,
                        });
                    }
                }
            }
        }
    }
}

/// A condition to wait for in `status.conditions[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionSpec {
    /// Condition type, e.g. `Ready`.
    pub type_: String,
    /// Wanted status: `True`, `False` or `Unknown`.
    pub status: String,
    /// Wanted reason, when the status alone is ambiguous (e.g. ESO's `SecretSynced`).
    pub reason: Option<String>,
}

impl ConditionSpec {
    /// `type=True`.
    #[must_use]
    pub fn is_true(type_: &str) -> Self {
        Self {
            type_: type_.to_owned(),
            status: "True".to_owned(),
            reason: None,
        }
    }

    /// Also require this reason.
    #[must_use]
    pub fn with_reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }
}

impl fmt::Display for ConditionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.type_, self.status)?;
        if let Some(r) = &self.reason {
            write!(f, " (reason {r})")?;
        }
        Ok(())
    }
}

/// Evaluates `spec` on an object's JSON. A condition that reports an `observedGeneration` older
/// than `metadata.generation` is stale (the controller has not seen the latest spec yet) and does
/// not count, as kstatus and `flux` treat it.
///
/// Controllers whose conditions carry no `observedGeneration` are judged by what their status
/// says instead (see [`observed_generation`]): kstatus's `status.observedGeneration`, and
/// External Secrets' `status.syncedResourceVersion` (`<generation>-<metadata hash>`, the
/// generation ESO last synced). So a wait right after an ExternalSecret's spec changed does not
/// pass on the previous sync's `Ready=True SecretSynced`.
#[must_use]
pub fn evaluate_condition(obj: Option<&Value>, spec: &ConditionSpec) -> Check {
    let Some(obj) = obj else {
        return Check::pending("not found");
    };
    let conditions = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(cond) = conditions
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(spec.type_.as_str()))
    else {
        return Check::pending(format!("no {} condition yet", spec.type_));
    };
    let text = |k: &str| cond.get(k).and_then(Value::as_str).unwrap_or("");
    let mut status = format!("{}={}", spec.type_, text("status"));
    if !text("reason").is_empty() {
        status.push_str(&format!(" reason={}", text("reason")));
    }
    if !text("message").is_empty() {
        status.push_str(&format!(" message={:?}", text("message")));
    }
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    if let (Some(g), Some((o, source))) = (generation, observed_generation(obj, cond))
        && o < g
    {
        return Check::pending(format!("{status} (stale: {source} {o} < generation {g})"));
    }
    let matches =
        text("status") == spec.status && spec.reason.as_deref().is_none_or(|r| text("reason") == r);
    Check {
        done: matches,
        status,
        terminal: false,
    }
}

/// The generation a condition speaks for, and where that was read: the condition's own
/// `observedGeneration`, else `status.observedGeneration`, else the generation part of ESO's
/// `status.syncedResourceVersion`. `None` when the object says nothing about it.
fn observed_generation(obj: &Value, cond: &Value) -> Option<(i64, &'static str)> {
    if let Some(o) = cond.get("observedGeneration").and_then(Value::as_i64) {
        return Some((o, "observedGeneration"));
    }
    if let Some(o) = obj
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64)
    {
        return Some((o, "status.observedGeneration"));
    }
    obj.pointer("/status/syncedResourceVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.split_once('-'))
        .and_then(|(g, _)| g.parse().ok())
        .map(|g| (g, "syncedResourceVersion generation"))
}

/// Waits for a condition on any object (Flux, ESO and other custom resources), and fails at
/// once when `terminal` says the object reached a state that cannot lead to the condition any
/// more (it returns that state; `|_| None` when no state is final).
///
/// # Errors
/// [`WaitError::Terminal`] with the state `terminal` returned, [`WaitError::Timeout`] otherwise.
#[allow(clippy::too_many_arguments)]
pub async fn condition_or_terminal(
    client: &Client,
    resource: &ApiResource,
    namespace: Option<&str>,
    name: &str,
    spec: &ConditionSpec,
    options: &WaitOptions,
    progress: Progress<'_>,
    terminal: impl Fn(&Value) -> Option<String> + Send + Sync,
) -> Result<DynamicObject, WaitError> {
    let api = dynamic_api(client, resource, namespace);
    let object = describe(&resource.kind, namespace, name);
    let found = until(
        api,
        name,
        &object,
        &spec.to_string(),
        options,
        progress,
        |o: Option<&DynamicObject>| {
            let v = o.and_then(|o| serde_json::to_value(o).ok());
            let check = evaluate_condition(v.as_ref(), spec);
            match v.as_ref().filter(|_| !check.done).and_then(&terminal) {
                Some(state) => Check::terminal(state),
                None => check,
            }
        },
    )
    .await?;
    found.ok_or_else(|| unreachable_missing(&object, &spec.to_string()))
}

/// Waits until a Deployment is Available with its latest spec observed.
///
/// # Errors
/// [`WaitError::Timeout`] with the Deployment's last Available condition.
pub async fn deployment_available(
    client: &Client,
    namespace: &str,
    name: &str,
    options: &WaitOptions,
    progress: Progress<'_>,
) -> Result<(), WaitError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let object = describe("Deployment", Some(namespace), name);
    let spec = ConditionSpec::is_true("Available");
    until(
        api,
        name,
        &object,
        "Available=True",
        options,
        progress,
        |d| deployment_check(d, &spec),
    )
    .await
    .map(|_| ())
}

fn deployment_check(d: Option<&Deployment>, spec: &ConditionSpec) -> Check {
    // The rollout check below words a lagging observedGeneration for Deployments.
    let v = d.and_then(|d| serde_json::to_value(d).ok()).map(|mut v| {
        if let Some(st) = v
            .get_mut("status")
            .and_then(serde_json::Value::as_object_mut)
        {
            st.remove("observedGeneration");
        }
        v
    });
    let check = evaluate_condition(v.as_ref(), spec);
    let Some(d) = d else { return check };
    let generation = d.metadata.generation.unwrap_or(0);
    let observed = d
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0);
    if check.done && observed < generation {
        return Check::pending(format!(
            "{} (rollout not observed: observedGeneration {observed} < generation {generation})",
            check.status
        ));
    }
    check
}

/// What a pod wait requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// `status.phase` is `Running`.
    Running,
    /// Running and condition `Ready=True`.
    Ready,
}

/// Waits until a pod is Running (or Running and Ready).
///
/// # Errors
/// [`WaitError::Timeout`] with the pod's last phase and Ready condition.
pub async fn pod(
    client: &Client,
    namespace: &str,
    name: &str,
    state: PodState,
    options: &WaitOptions,
    progress: Progress<'_>,
) -> Result<Pod, WaitError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let object = describe("Pod", Some(namespace), name);
    let condition = match state {
        PodState::Running => "phase=Running",
        PodState::Ready => "phase=Running, Ready=True",
    };
    let found = until(api, name, &object, condition, options, progress, |p| {
        pod_check(p, state)
    })
    .await?;
    found.ok_or_else(|| unreachable_missing(&object, condition))
}

fn pod_check(p: Option<&Pod>, state: PodState) -> Check {
    let Some(p) = p else {
        return Check::pending("not found");
    };
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Unknown".to_owned());
    let running = phase == "Running";
    let v = serde_json::to_value(p).ok();
    let ready = evaluate_condition(v.as_ref(), &ConditionSpec::is_true("Ready"));
    let status = format!("phase={phase}, {}", ready.status);
    match state {
        PodState::Running => Check {
            done: running,
            status,
            terminal: false,
        },
        PodState::Ready => Check {
            done: running && ready.done,
            status,
            terminal: false,
        },
    }
}

/// Waits until a CustomResourceDefinition is Established (its kind is then served).
///
/// # Errors
/// [`WaitError::Timeout`] with the CRD's last Established condition.
pub async fn crd_established(
    client: &Client,
    name: &str,
    options: &WaitOptions,
    progress: Progress<'_>,
) -> Result<CustomResourceDefinition, WaitError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let object = describe("CustomResourceDefinition", None, name);
    let spec = ConditionSpec::is_true("Established");
    let found = until(
        api,
        name,
        &object,
        "Established=True",
        options,
        progress,
        |c| {
            let v = c.and_then(|c| serde_json::to_value(c).ok());
            evaluate_condition(v.as_ref(), &spec)
        },
    )
    .await?;
    found.ok_or_else(|| unreachable_missing(&object, "Established=True"))
}

/// Waits until an object no longer exists (finalizers done).
///
/// # Errors
/// [`WaitError::Timeout`], reporting the finalizers still present.
pub async fn deleted<K>(
    api: Api<K>,
    name: &str,
    object: &str,
    options: &WaitOptions,
    progress: Progress<'_>,
) -> Result<(), WaitError>
where
    K: Resource + Clone + DeserializeOwned + fmt::Debug + Send + 'static,
{
    until(
        api,
        name,
        object,
        "deleted",
        options,
        progress,
        |o: Option<&K>| match o {
            None => Check::done("deleted"),
            Some(o) if o.meta().deletion_timestamp.is_some() => Check::pending(format!(
                "being deleted, finalizers: {}",
                o.finalizers().join(", ")
            )),
            Some(_) => Check::pending("still exists"),
        },
    )
    .await
    .map(|_| ())
}

fn dynamic_api(
    client: &Client,
    resource: &ApiResource,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// `Kind namespace/name`, the naming used in every message.
#[must_use]
pub fn describe(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// A predicate that only holds for an existing object returned `None`: impossible, but an
/// error is kinder than a panic.
fn unreachable_missing(object: &str, condition: &str) -> WaitError {
    WaitError::StreamEnded {
        object: object.to_owned(),
        condition: condition.to_owned(),
        last: "not found".to_owned(),
    }
}

#[cfg(test)]
mod tests;
