//! The root-cause walk: from the object a step waited for down to the deepest thing that is not
//! healthy, reading the cluster as `kubectl describe` would, one level at a time:
//!
//! - HelmRelease → the StatefulSets, Deployments and Jobs of its Helm release;
//! - Kustomization → its `dependsOn`, then the objects of its inventory;
//! - Deployment → its newest ReplicaSet → Pods; StatefulSet and Job → Pods;
//! - Pod → scheduling, container statuses (waiting/terminated reasons, restarts, readiness)
//!   and its recent Events;
//! - ExternalSecret → its store; ClusterSecretStore → the Vault server behind it (its Service's
//!   pods) and the Vault login.
//!
//! The walk is best-effort and bounded: it never fails a step by itself (an unreadable object
//! ends the chain) and it reads only the objects on the path. It also classifies what it finds:
//! a Stalled HelmRelease, a Kustomization whose build failed, a failed Job are terminal (no
//! controller will retry them), so a wait can stop at once instead of running out its timeout.

use std::time::Duration;

use ::kube::Client;
use ::kube::api::{Api, DynamicObject, ListParams};
use ::kube::core::ApiResource;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use serde_json::Value;

use super::kinds::{cluster_secret_store, external_secret, helm_release, kustomization, resource};
use crate::engine::{Diagnosis, Level};

/// The walk gives up after this long (a diagnosis must not hold a failing step).
const WALK_LIMIT: Duration = Duration::from_secs(10);
/// Never deeper than this (a cycle of Kustomizations cannot loop).
const MAX_DEPTH: usize = 8;
/// Events shown per pod.
const EVENTS: usize = 3;

/// What the walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    /// The chain, leaf first.
    pub diagnosis: Diagnosis,
    /// Why the state cannot recover without a change (a terminal level), if so.
    pub terminal: Option<String>,
}

/// An object to look at: `Kind`, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    kind: String,
    namespace: Option<String>,
    name: String,
}

impl Target {
    /// `Kind namespace/name` or `Kind name`, as every wait message names its object.
    pub(crate) fn parse(described: &str) -> Option<Self> {
        let (kind, rest) = described.split_once(' ')?;
        let rest = rest.split_whitespace().next()?;
        let (namespace, name) = match rest.split_once('/') {
            Some((ns, n)) => (Some(ns.to_owned()), n.to_owned()),
            None => (None, rest.to_owned()),
        };
        resource_of(kind)?;
        Some(Self {
            kind: kind.to_owned(),
            namespace,
            name,
        })
    }

    fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

fn resource_of(kind: &str) -> Option<ApiResource> {
    Some(match kind {
        "HelmRelease" => helm_release(),
        "Kustomization" => kustomization(),
        "ClusterSecretStore" => cluster_secret_store(),
        "ExternalSecret" => external_secret(),
        "SecretStore" => resource("external-secrets.io", "v1", "SecretStore"),
        "Deployment" => ApiResource::erase::<Deployment>(&()),
        "StatefulSet" => ApiResource::erase::<StatefulSet>(&()),
        "ReplicaSet" => ApiResource::erase::<ReplicaSet>(&()),
        "Job" => ApiResource::erase::<Job>(&()),
        "Pod" => ApiResource::erase::<Pod>(&()),
        _ => return None,
    })
}

/// Walks from `described` (`Kind namespace/name`) down to the deepest unhealthy object.
/// `None` when the kind is not one the walk knows, or nothing could be read.
pub(crate) async fn walk(client: &Client, described: &str) -> Option<Finding> {
    let target = Target::parse(described)?;
    tokio::time::timeout(WALK_LIMIT, Walker { client }.walk(target))
        .await
        .ok()
        .flatten()
}

/// One level as the walker sees it.
struct Step {
    level: Level,
    hint: Option<String>,
    terminal: Option<String>,
    next: Option<Target>,
}

impl Step {
    fn leaf(level: Level) -> Self {
        Self {
            level,
            hint: None,
            terminal: None,
            next: None,
        }
    }
}

struct Walker<'a> {
    client: &'a Client,
}

fn text<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn condition<'v>(v: &'v Value, kind: &str) -> Option<&'v Value> {
    v.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn condition_is(v: &Value, kind: &str, status: &str) -> bool {
    condition(v, kind).is_some_and(|c| c["status"] == status)
}

/// `Ready=False reason=X message="..."`.
fn summary(v: &Value, kind: &str) -> String {
    match condition(v, kind) {
        None => format!("no {kind} condition yet"),
        Some(c) => {
            let mut s = format!("{kind}={}", text(c, "/status"));
            if !text(c, "/reason").is_empty() {
                s.push_str(&format!(" reason={}", text(c, "/reason")));
            }
            if !text(c, "/message").is_empty() {
                s.push_str(&format!(" message={:?}", text(c, "/message")));
            }
            s
        }
    }
}

/// Whether an object of `kind` is healthy, as its own controller reports it.
fn healthy(kind: &str, v: &Value) -> bool {
    match kind {
        "Pod" => {
            let phase = text(v, "/status/phase");
            phase == "Succeeded" || (phase == "Running" && condition_is(v, "Ready", "True"))
        }
        "Deployment" | "StatefulSet" | "ReplicaSet" => {
            let want = v
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            int(v, "/status/readyReplicas") >= want
        }
        "Job" => condition_is(v, "Complete", "True"),
        _ => condition_is(v, "Ready", "True"),
    }
}

/// The cause a Flux or batch object reports that no controller retries on its own.
pub(crate) fn terminal_state(kind: &str, v: &Value) -> Option<String> {
    let stalled = condition(v, "Stalled").filter(|c| c["status"] == "True");
    match kind {
        "HelmRelease" => {
            if let Some(c) = stalled {
                return Some(format!(
                    "Stalled reason={} message={:?}; {}",
                    text(c, "/reason"),
                    text(c, "/message"),
                    summary(v, "Ready")
                ));
            }
            // Ready=False after the install (or upgrade) retries are exhausted.
            let ready = condition(v, "Ready")?;
            let reason = text(ready, "/reason");
            let (failures, retries) = match reason {
                "InstallFailed" => (
                    int(v, "/status/installFailures"),
                    v.pointer("/spec/install/remediation/retries")
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                ),
                "UpgradeFailed" => (
                    int(v, "/status/upgradeFailures"),
                    v.pointer("/spec/upgrade/remediation/retries")
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                ),
                _ => return None,
            };
            (ready["status"] == "False" && retries >= 0 && failures > retries).then(|| {
                format!(
                    "{} after {failures} attempt(s), no retries left",
                    summary(v, "Ready")
                )
            })
        }
        "Kustomization" => {
            if let Some(c) = stalled {
                return Some(format!(
                    "Stalled reason={} message={:?}",
                    text(c, "/reason"),
                    text(c, "/message")
                ));
            }
            let ready = condition(v, "Ready")?;
            (ready["status"] == "False" && text(ready, "/reason") == "BuildFailed")
                .then(|| summary(v, "Ready"))
        }
        "Job" => condition(v, "Failed")
            .filter(|c| c["status"] == "True")
            .map(|c| {
                format!(
                    "Failed reason={} message={:?}",
                    text(c, "/reason"),
                    text(c, "/message")
                )
            }),
        _ => None,
    }
}

fn label_selector(v: &Value, pointer: &str) -> Option<String> {
    let labels = v.pointer(pointer)?.as_object()?;
    let parts: Vec<String> = labels
        .iter()
        .filter_map(|(k, val)| Some(format!("{k}={}", val.as_str()?)))
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

fn owned_by(v: &Value, uid: &str) -> bool {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|rs| rs.iter().any(|r| r["uid"] == uid))
}

/// What a pod's status says is wrong, and the hint for it.
fn pod_state(ns: &str, name: &str, v: &Value) -> (String, Option<String>) {
    if let Some(c) = condition(v, "PodScheduled").filter(|c| c["status"] == "False") {
        let reason = text(c, "/reason");
        let hint = (reason == "Unschedulable").then(|| {
            "no node can run the pod: free or add node capacity, or relax the pod's resource requests, nodeSelector, affinity or tolerations".to_owned()
        });
        return (format!("Pending: {reason} ({})", text(c, "/message")), hint);
    }
    let statuses: Vec<&Value> = ["/status/initContainerStatuses", "/status/containerStatuses"]
        .iter()
        .filter_map(|p| v.pointer(p).and_then(Value::as_array))
        .flatten()
        .collect();
    let several = statuses.len() > 1;
    for s in &statuses {
        let cname = text(s, "/name");
        let restarts = int(s, "/restartCount");
        let suffix = {
            let mut x = String::new();
            if several {
                x.push_str(&format!(" in container {cname}"));
            }
            if restarts > 0 {
                x.push_str(&format!(", restarts: {restarts}"));
            }
            if let Some(t) = s.pointer("/lastState/terminated") {
                x.push_str(&format!(
                    ", last exit: {} (exit code {})",
                    text(t, "/reason"),
                    int(t, "/exitCode")
                ));
            }
            x
        };
        if let Some(w) = s.pointer("/state/waiting") {
            let reason = text(w, "/reason");
            let message = text(w, "/message");
            let detail = if message.is_empty() {
                String::new()
            } else {
                format!(" ({message})")
            };
            return (
                format!("Waiting: {reason}{detail}{suffix}"),
                container_hint(reason, ns, name, cname),
            );
        }
        if let Some(t) = s.pointer("/state/terminated")
            && int(t, "/exitCode") != 0
        {
            let reason = text(t, "/reason");
            return (
                format!(
                    "Terminated: {reason} (exit code {}){suffix}",
                    int(t, "/exitCode")
                ),
                container_hint(reason, ns, name, cname),
            );
        }
    }
    let phase = text(v, "/status/phase");
    if phase == "Failed" {
        return (
            format!(
                "Failed: {} {}",
                text(v, "/status/reason"),
                text(v, "/status/message")
            ),
            None,
        );
    }
    let unready = statuses
        .iter()
        .filter(|s| s["ready"] == false)
        .map(|s| text(s, "/name"))
        .collect::<Vec<_>>();
    if !unready.is_empty() && phase == "Running" {
        let cname = unready[0];
        return (
            format!("Running, not ready: {}", summary(v, "Ready")),
            Some(format!(
                "the container runs but its readiness probe fails: read its log with `kubectl -n {ns} logs {name} -c {cname}`"
            )),
        );
    }
    (format!("{phase}: {}", summary(v, "Ready")), None)
}

fn container_hint(reason: &str, ns: &str, pod: &str, container: &str) -> Option<String> {
    Some(match reason {
        "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" => "the image cannot be pulled: check its name and tag (the chart's image values), that the registry is reachable from the node, and imagePullSecrets for a private registry".to_owned(),
        "CrashLoopBackOff" | "Error" => format!(
            "the container keeps exiting: read its last log with `kubectl -n {ns} logs {pod} -c {container} --previous`"
        ),
        "OOMKilled" => "the container ran out of memory: raise its memory limit".to_owned(),
        "CreateContainerConfigError" | "CreateContainerError" => "the kubelet cannot create the container: a Secret or ConfigMap it references, or its securityContext, is wrong (see the message)".to_owned(),
        _ => return None,
    })
}

/// `Warning Failed: message (x3)`, newest last.
fn event_lines(mut events: Vec<Event>) -> Vec<String> {
    let when = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    };
    events.sort_by_key(|e| when(e));
    let warnings: Vec<&Event> = events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .collect();
    let chosen: Vec<&Event> = if warnings.is_empty() {
        events.iter().collect()
    } else {
        warnings
    };
    chosen
        .iter()
        .rev()
        .take(EVENTS)
        .rev()
        .map(|e| {
            let count = e.count.unwrap_or(1);
            let times = if count > 1 {
                format!(" (x{count})")
            } else {
                String::new()
            };
            format!(
                "{} {}: {}{times}",
                e.type_.as_deref().unwrap_or("Normal"),
                e.reason.as_deref().unwrap_or(""),
                e.message.as_deref().unwrap_or("").trim()
            )
        })
        .collect()
}

impl Walker<'_> {
    async fn get(&self, t: &Target) -> Option<Value> {
        let ar = resource_of(&t.kind)?;
        let api: Api<DynamicObject> = match &t.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        let o = api.get_opt(&t.name).await.ok()??;
        serde_json::to_value(o).ok()
    }

    async fn list(&self, kind: &str, ns: &str, labels: Option<&str>) -> Vec<Value> {
        let Some(ar) = resource_of(kind) else {
            return Vec::new();
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
        let mut lp = ListParams::default();
        if let Some(l) = labels {
            lp = lp.labels(l);
        }
        api.list(&lp)
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .filter_map(|o| serde_json::to_value(o).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn walk(&self, root: Target) -> Option<Finding> {
        let mut levels = Vec::new();
        let mut hint = None;
        let mut terminal = None;
        let mut next = Some(root);
        let mut depth = 0;
        while let Some(t) = next.take() {
            depth += 1;
            let Some(v) = self.get(&t).await else {
                if levels.is_empty() {
                    return None;
                }
                levels.push(Level::new(t.describe(), "not found"));
                break;
            };
            let step = self.inspect(&t, &v).await;
            levels.push(step.level);
            if step.terminal.is_some() {
                terminal = step.terminal;
            }
            if step.hint.is_some() {
                hint = step.hint;
            }
            if depth < MAX_DEPTH {
                next = step.next;
            }
        }
        levels.reverse();
        Some(Finding {
            diagnosis: Diagnosis { levels, hint },
            terminal,
        })
    }

    /// The first object among `candidates` (kind, value) that is not healthy.
    fn first_unhealthy(candidates: &[(&str, Value)]) -> Option<Target> {
        candidates
            .iter()
            .find(|(kind, v)| !healthy(kind, v))
            .map(|(kind, v)| Target {
                kind: (*kind).to_owned(),
                namespace: Some(text(v, "/metadata/namespace").to_owned()),
                name: text(v, "/metadata/name").to_owned(),
            })
    }

    async fn inspect(&self, t: &Target, v: &Value) -> Step {
        let ns = t.namespace.clone().unwrap_or_default();
        let object = t.describe();
        match t.kind.as_str() {
            "HelmRelease" => self.helm_release(object, &ns, v).await,
            "Kustomization" => self.kustomization(object, &ns, v).await,
            "Deployment" => {
                let uid = text(v, "/metadata/uid");
                let mut sets: Vec<Value> = self
                    .list("ReplicaSet", &ns, None)
                    .await
                    .into_iter()
                    .filter(|r| owned_by(r, uid))
                    .collect();
                sets.sort_by_key(|r| {
                    text(
                        r,
                        "/metadata/annotations/deployment.kubernetes.io~1revision",
                    )
                    .parse::<i64>()
                    .unwrap_or(0)
                });
                let next = sets
                    .last()
                    .and_then(|r| Self::first_unhealthy(&[("ReplicaSet", r.clone())]));
                Step {
                    next,
                    ..Step::leaf(Level::new(object, workload_state(v)))
                }
            }
            "StatefulSet" => {
                let pods = match label_selector(v, "/spec/selector/matchLabels") {
                    Some(sel) => self.list("Pod", &ns, Some(&sel)).await,
                    None => Vec::new(),
                };
                self.with_pods(object, workload_state(v), pods)
            }
            "ReplicaSet" => {
                let uid = text(v, "/metadata/uid");
                let pods = self.owned_pods(&ns, uid).await;
                self.with_pods(object, workload_state(v), pods)
            }
            "Job" => {
                let uid = text(v, "/metadata/uid");
                let pods = self.owned_pods(&ns, uid).await;
                let terminal = terminal_state("Job", v);
                let state = terminal.clone().unwrap_or_else(|| {
                    format!(
                        "not complete: {} active, {} failed",
                        int(v, "/status/active"),
                        int(v, "/status/failed")
                    )
                });
                Step {
                    terminal,
                    ..self.with_pods(object, state, pods)
                }
            }
            "Pod" => self.pod(object, &ns, &t.name, v).await,
            "ClusterSecretStore" | "SecretStore" => self.store(object, v).await,
            "ExternalSecret" => {
                let kind = match text(v, "/spec/secretStoreRef/kind") {
                    "" => "SecretStore",
                    k => k,
                };
                let store = text(v, "/spec/secretStoreRef/name");
                let next = Some(Target {
                    kind: kind.to_owned(),
                    namespace: (kind == "SecretStore").then(|| ns.clone()),
                    name: store.to_owned(),
                });
                let mut step = Step::leaf(Level::new(object, summary(v, "Ready")));
                let store_ready = match &next {
                    Some(s) => self.get(s).await.is_some_and(|o| healthy(&s.kind, &o)),
                    None => true,
                };
                if !store_ready {
                    step.next = next;
                }
                step
            }
            _ => Step::leaf(Level::new(object, summary(v, "Ready"))),
        }
    }

    async fn owned_pods(&self, ns: &str, uid: &str) -> Vec<Value> {
        self.list("Pod", ns, None)
            .await
            .into_iter()
            .filter(|p| owned_by(p, uid))
            .collect()
    }

    fn with_pods(&self, object: String, state: String, mut pods: Vec<Value>) -> Step {
        pods.sort_by(|a, b| text(a, "/metadata/name").cmp(text(b, "/metadata/name")));
        let candidates: Vec<(&str, Value)> = pods.into_iter().map(|p| ("Pod", p)).collect();
        Step {
            next: Self::first_unhealthy(&candidates),
            ..Step::leaf(Level::new(object, state))
        }
    }

    async fn pod(&self, object: String, ns: &str, name: &str, v: &Value) -> Step {
        let (state, hint) = pod_state(ns, name, v);
        let uid = text(v, "/metadata/uid");
        let events: Api<Event> = Api::namespaced(self.client.clone(), ns);
        let lp = ListParams::default().fields(&format!(
            "involvedObject.kind=Pod,involvedObject.name={name}"
        ));
        let list = events
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| uid.is_empty() || e.involved_object.uid.as_deref().is_none_or(|u| u == uid))
            .collect();
        let mut level = Level::new(object, state);
        level.events = event_lines(list);
        Step {
            hint,
            ..Step::leaf(level)
        }
    }

    async fn helm_release(&self, object: String, ns: &str, v: &Value) -> Step {
        let terminal = terminal_state("HelmRelease", v);
        let state = terminal.clone().unwrap_or_else(|| summary(v, "Ready"));
        let target_ns = match text(v, "/spec/targetNamespace") {
            "" => ns.to_owned(),
            t => t.to_owned(),
        };
        let name = text(v, "/metadata/name");
        let release = match (
            text(v, "/spec/releaseName"),
            text(v, "/spec/targetNamespace"),
        ) {
            ("", "") => name.to_owned(),
            ("", t) => format!("{t}-{name}"),
            (r, _) => r.to_owned(),
        };
        let mut candidates = Vec::new();
        for kind in ["StatefulSet", "Deployment", "Job"] {
            for w in self.list(kind, &target_ns, None).await {
                if text(&w, "/metadata/annotations/meta.helm.sh~1release-name") == release {
                    candidates.push((kind, w));
                }
            }
        }
        let next = Self::first_unhealthy(&candidates);
        let hint = match (
            next.is_some(),
            text(condition(v, "Ready").unwrap_or(&Value::Null), "/reason"),
        ) {
            (true, _) => None,
            (false, "InstallFailed" | "UpgradeFailed") => Some(format!(
                "helm-controller stopped retrying: fix the cause (chart values or source), then run `flux reconcile helmrelease {name} -n {ns} --reset` or change the HelmRelease"
            )),
            (false, "ArtifactFailed") => Some(
                "the chart cannot be fetched: check the HelmRepository's URL and Ready condition"
                    .to_owned(),
            ),
            _ => None,
        };
        Step {
            level: Level::new(object, state),
            hint,
            terminal,
            next,
        }
    }

    async fn kustomization(&self, object: String, ns: &str, v: &Value) -> Step {
        let terminal = terminal_state("Kustomization", v);
        let state = terminal.clone().unwrap_or_else(|| summary(v, "Ready"));
        let mut step = Step {
            terminal,
            ..Step::leaf(Level::new(object, state))
        };
        let reason = text(condition(v, "Ready").unwrap_or(&Value::Null), "/reason");
        if reason == "BuildFailed" {
            step.hint = Some("kustomize build failed: fix the manifests at the Kustomization's spec.path in the Git repository (the message names the file)".to_owned());
            return step;
        }
        // dependsOn first: a dependency that is not ready holds everything back.
        for d in v
            .pointer("/spec/dependsOn")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let dep = Target {
                kind: "Kustomization".into(),
                namespace: Some(match text(&d, "/namespace") {
                    "" => ns.to_owned(),
                    n => n.to_owned(),
                }),
                name: text(&d, "/name").to_owned(),
            };
            match self.get(&dep).await {
                Some(o) if healthy("Kustomization", &o) => {}
                _ => {
                    step.next = Some(dep);
                    return step;
                }
            }
        }
        // Then the objects it applied (status.inventory ids are `ns_name_group_Kind`).
        for e in v
            .pointer("/status/inventory/entries")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let id = text(&e, "/id");
            let parts: Vec<&str> = id.split('_').collect();
            let [ens, name, _group, kind] = parts[..] else {
                continue;
            };
            if !matches!(
                kind,
                "HelmRelease" | "Kustomization" | "Deployment" | "StatefulSet" | "Job"
            ) {
                continue;
            }
            let t = Target {
                kind: kind.to_owned(),
                namespace: (!ens.is_empty()).then(|| ens.to_owned()),
                name: name.to_owned(),
            };
            if let Some(o) = self.get(&t).await
                && !healthy(kind, &o)
            {
                step.next = Some(t);
                return step;
            }
        }
        step
    }

    async fn store(&self, object: String, v: &Value) -> Step {
        let mut step = Step::leaf(Level::new(object, summary(v, "Ready")));
        if healthy("ClusterSecretStore", v) {
            return step;
        }
        let vault = v.pointer("/spec/provider/vault");
        let server = vault.map_or("", |x| text(x, "/server"));
        let role = vault.map_or("", |x| text(x, "/auth/kubernetes/role"));
        let sa = vault.map_or(String::new(), |x| {
            format!(
                "{}/{}",
                text(x, "/auth/kubernetes/serviceAccountRef/namespace"),
                text(x, "/auth/kubernetes/serviceAccountRef/name")
            )
        });
        step.hint = Some(format!(
            "ESO cannot log in to Vault at {server}: check that Vault is unsealed (`kubestrap unseal -p PLAYBOOK`), that its Kubernetes auth role {role:?} exists and binds ServiceAccount {sa}"
        ));
        // The Vault server behind the store: `http://<service>.<namespace>.svc:8200`.
        let host = server
            .split("://")
            .nth(1)
            .unwrap_or("")
            .split([':', '/'])
            .next()
            .unwrap_or("");
        let mut parts = host.split('.');
        if let (Some(svc), Some(svc_ns)) = (parts.next(), parts.next())
            && let Ok(Some(s)) = Api::<Service>::namespaced(self.client.clone(), svc_ns)
                .get_opt(svc)
                .await
        {
            let selector = s
                .spec
                .and_then(|sp| sp.selector)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty());
            if let Some(sel) = selector {
                let pods = self.list("Pod", svc_ns, Some(&sel)).await;
                let candidates: Vec<(&str, Value)> = pods.into_iter().map(|p| ("Pod", p)).collect();
                step.next = Self::first_unhealthy(&candidates);
                if step.next.is_some() {
                    step.hint = None;
                }
            }
        }
        step
    }
}

/// `0/1 ready` (and Available=False for a Deployment).
fn workload_state(v: &Value) -> String {
    let want = v
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let mut s = format!("{}/{want} ready", int(v, "/status/readyReplicas"));
    if condition_is(v, "Available", "False") {
        s.push_str(&format!(", {}", summary(v, "Available")));
    }
    s
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn targets_parse_from_wait_descriptions() {
        let t = Target::parse("HelmRelease vault/vault").expect("known kind");
        assert_eq!(t.namespace.as_deref(), Some("vault"));
        assert_eq!(t.name, "vault");
        assert_eq!(
            Target::parse("ClusterSecretStore vault-backend")
                .expect("cluster-scoped")
                .namespace,
            None
        );
        assert_eq!(Target::parse("Node sandbox"), None);
    }

    #[test]
    fn a_stalled_release_is_terminal_and_a_progressing_one_is_not() {
        let stalled = json!({"status": {"conditions": [
            {"type": "Stalled", "status": "True", "reason": "RetriesExceeded", "message": "Failed to install after 1 attempt(s)"},
            {"type": "Ready", "status": "False", "reason": "InstallFailed", "message": "boom"},
        ]}});
        let found = terminal_state("HelmRelease", &stalled).expect("terminal");
        assert!(
            found.contains("RetriesExceeded") && found.contains("boom"),
            "{found}"
        );
        let progressing = json!({"status": {"conditions": [
            {"type": "Ready", "status": "Unknown", "reason": "Progressing", "message": "Running 'install'"},
        ]}});
        assert_eq!(terminal_state("HelmRelease", &progressing), None);
        // Install failed once with retries left: helm-controller will try again.
        let retrying = json!({"spec": {"install": {"remediation": {"retries": 3}}},
            "status": {"installFailures": 1, "conditions": [
            {"type": "Ready", "status": "False", "reason": "InstallFailed", "message": "boom"},
        ]}});
        assert_eq!(terminal_state("HelmRelease", &retrying), None);
        let exhausted = json!({"status": {"installFailures": 1, "conditions": [
            {"type": "Ready", "status": "False", "reason": "InstallFailed", "message": "boom"},
        ]}});
        assert!(terminal_state("HelmRelease", &exhausted).is_some());
    }

    #[test]
    fn build_failures_and_failed_jobs_are_terminal_dependencies_are_not() {
        let build = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "BuildFailed", "message": "kustomize build failed"}]}});
        assert!(terminal_state("Kustomization", &build).is_some());
        let dep = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "DependencyNotReady", "message": "dependency 'flux-system/infra' is not ready"}]}});
        assert_eq!(terminal_state("Kustomization", &dep), None);
        let job = json!({"status": {"conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}});
        assert!(terminal_state("Job", &job).is_some());
    }

    #[test]
    fn pod_states_name_the_reason_and_hint_at_the_fix() {
        let pull = json!({"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "vault", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"hashicorp/vault:1.19.0\""}}}]}});
        let (state, hint) = pod_state("vault", "vault-0", &pull);
        assert_eq!(
            state,
            "Waiting: ImagePullBackOff (Back-off pulling image \"hashicorp/vault:1.19.0\")"
        );
        assert!(hint.expect("hint").contains("image"));
        let pending = json!({"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient memory."}]}});
        let (state, hint) = pod_state("vault", "vault-0", &pending);
        assert!(
            state.starts_with("Pending: Unschedulable (0/1 nodes"),
            "{state}"
        );
        assert!(hint.is_some());
    }
}
