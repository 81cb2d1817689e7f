//! Small helpers the add-on controllers share: typed lookups in the store, status
//! conditions that keep their transition time, server-side apply of YAML documents with a
//! controller's field manager, Events, durations and retry backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::WriteOpts;
use crate::patch::PatchType;
use crate::rbac::{self, UserInfo};
use crate::resources::ResourceType;
use crate::server::Shared;
use crate::store::ObjectKey;

/// RFC 3339 UTC, second precision, as the API server writes timestamps.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Seconds since the epoch of an RFC 3339 timestamp.
pub fn parse_ts(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// The served type behind a storage key such as `source.toolkit.fluxcd.io/gitrepositories`,
/// or `None` while its CRD is not installed.
pub fn rt_of(shared: &Shared, storage_key: &str) -> Option<Arc<ResourceType>> {
    shared.cluster.registry.by_storage_key(storage_key)
}

/// One object by storage key.
pub fn get(shared: &Shared, resource: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
    shared
        .cluster
        .store
        .get(&ObjectKey::new(resource, ns, name))
}

/// Every object of a storage key.
pub fn list(shared: &Shared, resource: &str, ns: Option<&str>) -> Vec<Arc<Value>> {
    shared.cluster.store.list(resource, ns).0
}

/// `metadata.<field>` as a string (empty when absent).
pub fn meta<'a>(o: &'a Value, field: &str) -> &'a str {
    o["metadata"][field].as_str().unwrap_or("")
}

/// Key of an object as the controller framework queues it.
pub fn key_of(resource: &str, o: &Value) -> ObjectKey {
    ObjectKey::new(resource, meta(o, "namespace"), meta(o, "name"))
}

/// Whether `conditions[type=Ready]` is `True`.
pub fn is_ready(o: &Value) -> bool {
    condition(o, "Ready").is_some_and(|c| c["status"] == "True")
}

/// A condition of `status.conditions` by type.
pub fn condition<'a>(o: &'a Value, kind: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// A condition to put into `status.conditions`.
#[derive(Debug, Clone)]
pub struct Cond<'a> {
    /// Type (`Ready`).
    pub kind: &'a str,
    /// `True`, `False` or `Unknown`.
    pub status: &'a str,
    /// CamelCase reason.
    pub reason: &'a str,
    /// Human message.
    pub message: &'a str,
}

/// Sets `status.conditions` to exactly `conds` (controllers own their conditions), keeping each
/// condition's `lastTransitionTime` while its status does not change, and stamping
/// `observedGeneration` when `generation` is given (Flux's `metav1.Condition`).
pub fn set_conditions(status: &mut Value, conds: &[Cond<'_>], generation: Option<i64>) {
    let old: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let out: Vec<Value> = conds
        .iter()
        .map(|c| {
            let prev = old.iter().find(|o| o["type"] == c.kind);
            let since = match prev {
                Some(p) if p["status"] == c.status && p["lastTransitionTime"].is_string() => {
                    p["lastTransitionTime"].clone()
                }
                _ => json!(now()),
            };
            let mut v = json!({
                "type": c.kind, "status": c.status, "reason": c.reason,
                "message": c.message, "lastTransitionTime": since,
            });
            if let Some(g) = generation {
                v["observedGeneration"] = json!(g);
            }
            v
        })
        .collect();
    if !status.is_object() {
        *status = json!({});
    }
    status["conditions"] = Value::Array(out);
}

/// Read-modify-write of an object's status by a controller; a closure that changes
/// nothing writes nothing (so a reconcile that finds the same state does not loop).
pub fn write_status(
    shared: &Shared,
    rt: &ResourceType,
    o: &Value,
    actor: &str,
    f: impl FnOnce(&mut Value),
) {
    let ns = meta(o, "namespace").to_string();
    let name = meta(o, "name").to_string();
    if let Err(e) = shared.cluster.modify(rt, &ns, &name, true, actor, |obj| {
        let mut status = obj["status"].clone();
        if !status.is_object() {
            status = json!({});
        }
        f(&mut status);
        obj["status"] = status;
    }) {
        tracing::debug!(error = %e, %ns, %name, actor, "status write failed");
    }
}

/// Why a set of manifests could not be applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApplyError {
    /// A document is not valid YAML or not an object.
    #[error("failed to decode {source_name}: {detail}")]
    Decode {
        /// File or chart the document came from.
        source_name: String,
        /// Parser message.
        detail: String,
    },
    /// No served type for the document's apiVersion/kind.
    #[error(
        "{kind}/{namespace}{name} dry-run failed: no matches for kind \"{kind}\" in version \"{api_version}\""
    )]
    UnknownKind {
        /// apiVersion.
        api_version: String,
        /// Kind.
        kind: String,
        /// `ns/` or empty.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The applier's identity may not write the object (Flux's dry-run message).
    #[error("{kind}/{namespace}{name} dry-run failed (Forbidden): {message}")]
    Forbidden {
        /// Kind.
        kind: String,
        /// `ns/` or empty.
        namespace: String,
        /// Name.
        name: String,
        /// The API's Status message.
        message: String,
    },
    /// The API refused the object.
    #[error("{kind}/{namespace}{name} apply failed: {message}")]
    Rejected {
        /// Kind.
        kind: String,
        /// `ns/` or empty.
        namespace: String,
        /// Name.
        name: String,
        /// The API's Status message.
        message: String,
    },
}

/// Parses a multi-document YAML text into objects (empty documents skipped).
///
/// # Errors
/// [`ApplyError::Decode`] for malformed YAML.
pub fn parse_docs(source_name: &str, text: &str) -> Result<Vec<Value>, ApplyError> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        use serde::Deserialize;
        let v = Value::deserialize(doc).map_err(|e| ApplyError::Decode {
            source_name: source_name.into(),
            detail: e.to_string(),
        })?;
        match v {
            Value::Null => {}
            Value::Object(_) => out.push(v),
            _ => {
                return Err(ApplyError::Decode {
                    source_name: source_name.into(),
                    detail: "a document is not a mapping".into(),
                });
            }
        }
    }
    Ok(out)
}

/// One object an apply wrote, as Flux's inventory names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Applied {
    /// Storage key.
    pub resource: String,
    /// Namespace (empty for cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Version.
    pub version: String,
}

impl Applied {
    /// Flux inventory id: `<ns>_<name>_<group>_<kind>`.
    pub fn id(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.namespace, self.name, self.group, self.kind
        )
    }
}

fn stage(o: &Value) -> u8 {
    match o["kind"].as_str().unwrap_or("") {
        "CustomResourceDefinition" | "Namespace" => 0,
        "ServiceAccount" | "ClusterRole" | "Role" | "ClusterRoleBinding" | "RoleBinding" => 1,
        _ => 2,
    }
}

/// The type of a document, or the "no matches for kind" error.
fn type_of(shared: &Shared, o: &Value, default_ns: &str) -> Result<Arc<ResourceType>, ApplyError> {
    let av = o["apiVersion"].as_str().unwrap_or("");
    let kind = o["kind"].as_str().unwrap_or("");
    shared
        .cluster
        .registry
        .by_kind(av, kind)
        .ok_or_else(|| ApplyError::UnknownKind {
            api_version: av.into(),
            kind: kind.into(),
            namespace: ns_prefix(o, default_ns),
            name: meta(o, "name").into(),
        })
}

fn ns_prefix(o: &Value, default_ns: &str) -> String {
    let ns = o["metadata"]["namespace"].as_str().unwrap_or(default_ns);
    if ns.is_empty() {
        String::new()
    } else {
        format!("{ns}/")
    }
}

/// Server-side-applies `docs` with `manager` (forcing ownership, as controllers do), in
/// stages (CRDs and Namespaces first, so later documents can use them). Every type is
/// checked before a stage writes anything, so an unknown kind applies nothing of its stage.
/// Installers that run with cluster-admin rights (`--preinstall`) use this.
///
/// # Errors
/// Unknown kinds and API rejections.
pub fn apply_all(
    shared: &Shared,
    docs: &[Value],
    manager: &str,
    default_ns: &str,
) -> Result<Vec<Applied>, ApplyError> {
    apply_all_as(shared, Some(&UserInfo::admin()), docs, manager, default_ns)
}

/// [`apply_all`] as `user` (a controller's service account): each object needs `patch`, and
/// `create` when it does not exist yet, as a server-side apply through the API would.
///
/// # Errors
/// Unknown kinds, denied writes ([`ApplyError::Forbidden`]) and API rejections.
pub fn apply_all_as(
    shared: &Shared,
    user: Option<&UserInfo>,
    docs: &[Value],
    manager: &str,
    default_ns: &str,
) -> Result<Vec<Applied>, ApplyError> {
    let mut out = Vec::new();
    let mut opts = WriteOpts::controller(manager);
    opts.force = true;
    for st in 0..3u8 {
        let batch: Vec<&Value> = docs.iter().filter(|d| stage(d) == st).collect();
        let mut typed = Vec::new();
        for d in &batch {
            typed.push((type_of(shared, d, default_ns)?, *d));
        }
        for (rt, d) in typed {
            let mut body = d.clone();
            let ns = if rt.namespaced {
                let ns = d["metadata"]["namespace"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .unwrap_or(default_ns)
                    .to_string();
                body["metadata"]["namespace"] = json!(ns);
                ns
            } else {
                String::new()
            };
            let name = meta(d, "name").to_string();
            let prefix = if ns.is_empty() {
                ns.clone()
            } else {
                format!("{ns}/")
            };
            let exists = shared.cluster.get(&rt, &ns, &name).is_ok();
            let verbs: &[&str] = if exists {
                &["patch"]
            } else {
                &["patch", "create"]
            };
            for verb in verbs {
                allowed(shared, user, verb, &rt.group, &rt.plural, "", &ns, &name).map_err(
                    |e| ApplyError::Forbidden {
                        kind: rt.kind.clone(),
                        namespace: prefix.clone(),
                        name: name.clone(),
                        message: e.message.clone(),
                    },
                )?;
            }
            if let Some(user) = user {
                rbac::escalation::check(&shared.cluster.store, user, &rt, &body).map_err(|e| {
                    ApplyError::Forbidden {
                        kind: rt.kind.clone(),
                        namespace: prefix.clone(),
                        name: name.clone(),
                        message: e.message.clone(),
                    }
                })?;
            }
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            shared
                .cluster
                .patch(&rt, &ns, &name, PatchType::Apply, &bytes, false, &opts)
                .map_err(|e| ApplyError::Rejected {
                    kind: rt.kind.clone(),
                    namespace: prefix.clone(),
                    name: name.clone(),
                    message: e.message.clone(),
                })?;
            out.push(Applied {
                resource: rt.storage_key(),
                namespace: ns,
                name,
                group: rt.group.clone(),
                kind: rt.kind.clone(),
                version: rt.version.clone(),
            });
        }
    }
    Ok(out)
}

/// Records a Kubernetes Event about `o`, skipping an exact repeat of the last Event for the
/// same object (controllers retry; the log should show causes, not a flood).
#[derive(Debug, Default)]
pub struct Recorder {
    last: Mutex<HashMap<String, String>>,
}

impl Recorder {
    /// Emits a `Normal` or `Warning` Event from `component`.
    pub fn emit(
        &self,
        shared: &Shared,
        component: &str,
        o: &Value,
        warning: bool,
        reason: &str,
        message: &str,
    ) {
        let ns = meta(o, "namespace");
        let name = meta(o, "name");
        let uid = meta(o, "uid");
        let fingerprint = format!("{reason}\u{0}{message}");
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if last.get(uid).is_some_and(|f| *f == fingerprint) {
                return;
            }
            last.insert(uid.to_string(), fingerprint);
        }
        let Some(rt) = shared.cluster.registry.lookup("", "v1", "events") else {
            return;
        };
        let event_ns = if ns.is_empty() { "default" } else { ns };
        let ts = now();
        let ev = json!({
            "metadata": {"name": format!("{name}.{:x}", jiff::Timestamp::now().as_nanosecond()), "namespace": event_ns},
            "involvedObject": {
                "apiVersion": o["apiVersion"], "kind": o["kind"], "name": name,
                "namespace": ns, "uid": uid, "resourceVersion": meta(o, "resourceVersion"),
            },
            "reason": reason, "message": message,
            "type": if warning { "Warning" } else { "Normal" },
            "source": {"component": component},
            "reportingComponent": component,
            "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
        });
        if let Err(e) = shared
            .cluster
            .create(&rt, event_ns, ev, &WriteOpts::controller(component))
        {
            tracing::debug!(error = %e, "cannot record an event");
        }
    }
}

/// Parses Go-style durations (`1h`, `1h0m0s`, `10m`, `30s`, `500ms`, `0`).
pub fn go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        let n: f64 = num.parse().ok()?;
        total += n * unit;
        num.clear();
        any = true;
    }
    (any && num.is_empty()).then(|| Duration::from_secs_f64(total))
}

/// Per-object retry backoff for failed reconciles: 500ms doubling to a cap, reset on success.
#[derive(Debug, Default)]
pub struct Backoff {
    attempts: Mutex<HashMap<ObjectKey, u32>>,
}

impl Backoff {
    /// The delay before the next attempt after a failure of `key`.
    pub fn failed(&self, key: &ObjectKey, cap: Duration) -> Duration {
        let mut m = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key.clone()).or_insert(0);
        *n = (*n + 1).min(16);
        Duration::from_millis(500u64.saturating_mul(1 << (*n - 1).min(10))).min(cap)
    }

    /// Forgets the failures of `key`.
    pub fn succeeded(&self, key: &ObjectKey) {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// Remaining readiness delay of `component` (fault `delay.<component>`, scaled by
/// `delay_scale`) for `obj`, counted from the instant it was created; `None` once due. Capped
/// at one second so that a fault spec replaced at run time takes effect promptly.
pub fn delay_remaining(shared: &Shared, component: &str, obj: &Value) -> Option<Duration> {
    let delay = shared.faults.delay(component);
    if delay.is_zero() {
        return None;
    }
    let created = shared.cluster.store.created_ms(obj).unwrap_or(0);
    let due = created + delay.as_millis() as i64;
    let now = jiff::Timestamp::now().as_millisecond();
    (now < due).then(|| Duration::from_millis((due - now).clamp(1, 1000) as u64))
}

/// The service account a pod spec's processes authenticate as with their mounted token
/// (`serviceAccountName`, default `default`), or `None` when no token is mounted
/// (`automountServiceAccountToken: false` on the pod, or on the account when the pod is silent).
pub fn token_identity(shared: &Shared, namespace: &str, pod_spec: &Value) -> Option<UserInfo> {
    let name = pod_spec["serviceAccountName"]
        .as_str()
        .or_else(|| pod_spec["serviceAccount"].as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let sa = get(shared, "/serviceaccounts", namespace, name);
    let automount = pod_spec["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| {
            sa.as_ref()
                .and_then(|a| a["automountServiceAccountToken"].as_bool())
        })
        .unwrap_or(true);
    automount.then(|| {
        UserInfo::service_account(namespace, name, sa.as_ref().map_or("", |a| meta(a, "uid")))
    })
}

/// [`token_identity`] of a pod.
pub fn pod_token_identity(shared: &Shared, pod: &Value) -> Option<UserInfo> {
    token_identity(shared, meta(pod, "namespace"), &pod["spec"])
}

/// [`token_identity`] of a workload's pods (its pod template).
pub fn workload_identity(shared: &Shared, workload: &Value) -> Option<UserInfo> {
    token_identity(
        shared,
        meta(workload, "namespace"),
        &workload["spec"]["template"]["spec"],
    )
}

/// Authorizes a request of a simulated workload acting as `user` (`None`: no token, so every
/// request is unauthenticated and refused, as a real API server would with a 401).
///
/// # Errors
/// 403 Forbidden (or 401) as the API server would answer.
#[expect(
    clippy::too_many_arguments,
    reason = "the resource attributes of one request"
)]
pub fn allowed(
    shared: &Shared,
    user: Option<&UserInfo>,
    verb: &str,
    group: &str,
    resource: &str,
    subresource: &str,
    namespace: &str,
    name: &str,
) -> Result<(), crate::status::ApiError> {
    let Some(user) = user else {
        return Err(crate::status::ApiError::unauthorized());
    };
    // Core and named groups alike: RBAC rules match on group and resource, not version.
    let attributes = rbac::Attributes::resource(
        user,
        verb,
        group,
        "v1",
        resource,
        subresource,
        namespace,
        name,
    );
    rbac::check(&shared.cluster.store, &attributes)
}

/// Whether a Deployment named `name` in `ns` reports all its replicas available.
pub fn deployment_available(shared: &Shared, ns: &str, name: &str) -> bool {
    get(shared, "apps/deployments", ns, name).is_some_and(|d| workload_ready(&d))
}

/// Deployments: available replicas reach the wanted count; StatefulSets: ready replicas do.
pub fn workload_ready(o: &Value) -> bool {
    let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
    let field = if o["kind"] == "StatefulSet" {
        "readyReplicas"
    } else {
        "availableReplicas"
    };
    o["status"][field].as_i64().unwrap_or(0) >= want
        && o["status"]["observedGeneration"] == o["metadata"]["generation"]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("1h0m0s"), Some(Duration::from_secs(3600)));
        assert_eq!(go_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(go_duration("0"), Some(Duration::ZERO));
        assert_eq!(go_duration("1x"), None);
        assert_eq!(go_duration("15"), None);
    }

    #[test]
    fn conditions_keep_transition_time_while_status_holds() {
        let mut s = json!({"conditions":[{"type":"Ready","status":"True","reason":"A","message":"","lastTransitionTime":"2020-01-01T00:00:00Z"}]});
        set_conditions(
            &mut s,
            &[Cond {
                kind: "Ready",
                status: "True",
                reason: "B",
                message: "m",
            }],
            Some(2),
        );
        assert_eq!(
            s["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        assert_eq!(s["conditions"][0]["observedGeneration"], 2);
        set_conditions(
            &mut s,
            &[Cond {
                kind: "Ready",
                status: "False",
                reason: "B",
                message: "m",
            }],
            None,
        );
        assert_ne!(
            s["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let b = Backoff::default();
        let k = ObjectKey::new("x", "ns", "n");
        assert_eq!(
            b.failed(&k, Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(b.failed(&k, Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(b.failed(&k, Duration::from_secs(2)), Duration::from_secs(2));
        assert_eq!(b.failed(&k, Duration::from_secs(2)), Duration::from_secs(2));
        b.succeeded(&k);
        assert_eq!(
            b.failed(&k, Duration::from_secs(2)),
            Duration::from_millis(500)
        );
    }
}
