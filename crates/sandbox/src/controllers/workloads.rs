//! Workloads: Deployments (through ReplicaSets), StatefulSets and Jobs get pods from their
//! templates; pods are
//! scheduled on the node and become Running, then Ready after their component's delay
//! (and only while their backend's readiness probe passes); workload status reports
//! replicas, ready/available counts and the Available/Progressing conditions. Job pods
//! run to completion (Succeeded) and the Job becomes Complete.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::node::NODE_NAME;
use super::stuck;
use super::{Action, Controller};
use crate::cluster::{Cluster, WriteOpts};
use crate::faults::Stuck;
use crate::resources::ResourceType;
use crate::server::Shared;
use crate::store::{EventType, ObjectKey, StoreEvent};

const NAME: &str = "workload-controller";
const DEPLOY: &str = "apps/deployments";
const STS: &str = "apps/statefulsets";
const PODS: &str = "/pods";
const JOBS: &str = "batch/jobs";
const REPLICASETS: &str = "apps/replicasets";

/// Reconciles Deployments, StatefulSets and their pods.
#[derive(Debug, Default)]
pub struct WorkloadController;

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn template_hash(template: &Value) -> String {
    use sha2::Digest;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let d = sha2::Sha256::digest(template.to_string().as_bytes());
    d.iter()
        .take(10)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn pod_ip(name: &str) -> String {
    let h = name
        .bytes()
        .fold(17u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("10.42.0.{}", h % 250 + 2)
}

fn controller_owner(o: &Value) -> Option<(String, String)> {
    o["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| {
            Some((
                r["kind"].as_str()?.to_string(),
                r["name"].as_str()?.to_string(),
            ))
        })
}

/// The component a pod belongs to, as fault settings name it: its workload (a ReplicaSet
/// `<deployment>-<hash>` counts as its Deployment), or the pod itself.
pub(crate) fn component_of(pod: &Value) -> String {
    match controller_owner(pod) {
        Some((kind, n)) if kind == "ReplicaSet" => {
            n.rsplit_once('-').map_or(n.clone(), |(d, _)| d.to_string())
        }
        Some((_, n)) => n,
        None => pod["metadata"]["name"].as_str().unwrap_or("").to_string(),
    }
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True")
}

fn owned_pods(c: &Cluster, ns: &str, uid: &str) -> Vec<Value> {
    c.store
        .list(PODS, Some(ns))
        .0
        .into_iter()
        .filter(|p| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| r["uid"] == uid))
        })
        .map(|p| (*p).clone())
        .collect()
}

/// A pod from `owner`'s template, bound to the node at once (the sandbox schedules as it
/// creates) unless `shared`'s faults make it unschedulable.
fn pod_from(shared: &Shared, owner: &Value, kind: &str, name: &str, extra_labels: Value) -> Value {
    let t = &owner["spec"]["template"];
    let mut labels = t["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    if let (Some(l), Some(e)) = (labels.as_object_mut(), extra_labels.as_object()) {
        for (k, v) in e {
            l.insert(k.clone(), v.clone());
        }
    }
    let mut spec = t["spec"].clone();
    let workload = match kind {
        "ReplicaSet" => owner["metadata"]["ownerReferences"][0]["name"]
            .as_str()
            .unwrap_or(""),
        _ => owner["metadata"]["name"].as_str().unwrap_or(""),
    };
    if shared.faults.stuck(workload) != Some(Stuck::Unschedulable) {
        spec["nodeName"] = json!(NODE_NAME);
    }
    let mut pod = json!({
        "metadata": {
            "name": name,
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": kind, "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": spec,
    });
    if t["metadata"]["annotations"].is_object() {
        pod["metadata"]["annotations"] = t["metadata"]["annotations"].clone();
    }
    pod
}

/// A container as the kubelet sees it.
enum ContainerState {
    /// Runs as the pod says (no simulated process decides otherwise).
    Plain,
    /// The kubelet refuses to start it (runAsNonRoot).
    ConfigError(String),
    /// A simulated process runs in it: its runtime record.
    Runtime(crate::runtime::ContainerView),
}

impl ContainerState {
    fn running(&self) -> bool {
        match self {
            Self::Plain => true,
            Self::ConfigError(_) => false,
            Self::Runtime(v) => v.running_since.is_some(),
        }
    }
}

/// Whether `pod` is the server pod of a vault or openbao chart's StatefulSet, whose process
/// the sandbox's Vault add-on provides once it serves the pod (`addons::VaultPods`).
fn awaits_vault_backend(pod: &Value) -> bool {
    let name = &pod["metadata"]["labels"]["app.kubernetes.io/name"];
    (name == "vault" || name == "openbao")
        && controller_owner(pod).is_some_and(|(kind, _)| kind == "StatefulSet")
}

/// A condition of `kind` for an object whose previous state is `old`: `lastTransitionTime`
/// moves only when the status changes, as the real controllers keep it.
pub(crate) fn condition(kind: &str, ok: bool, reason: &str, message: &str, old: &Value) -> Value {
    let status = if ok { "True" } else { "False" };
    let prev = old["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind));
    let since = match prev {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => json!(now()),
    };
    let mut c = json!({"type": kind, "status": status, "lastTransitionTime": since});
    if !reason.is_empty() {
        c["reason"] = json!(reason);
    }
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    if kind == "Available" || kind == "Progressing" {
        c["lastUpdateTime"] = since.clone();
    }
    c
}

impl WorkloadController {
    fn rts(c: &Cluster) -> Option<(Arc<ResourceType>, Arc<ResourceType>, Arc<ResourceType>)> {
        Some((
            c.registry.lookup("apps", "v1", "deployments")?,
            c.registry.lookup("apps", "v1", "statefulsets")?,
            c.registry.lookup("", "v1", "pods")?,
        ))
    }

    /// A Deployment owns one ReplicaSet per pod template (`<name>-<hash>`); the current one
    /// is scaled to `spec.replicas`, older ones to zero. Status sums the ReplicaSets.
    fn deployment(&self, c: &Cluster, key: &ObjectKey) -> Action {
        let (Some((d_rt, _, _)), Some(rs_rt)) =
            (Self::rts(c), c.registry.lookup("apps", "v1", "replicasets"))
        else {
            return Action::Done;
        };
        let Ok(d) = c.get(&d_rt, &key.namespace, &key.name) else {
            return Action::Done;
        };
        if d["metadata"]["deletionTimestamp"].is_string() {
            return Action::Done;
        }
        let opts = WriteOpts::controller(NAME);
        let want = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
        let hash = template_hash(&d["spec"]["template"]);
        let rs_name = format!("{}-{hash}", key.name);
        let uid = d["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let owned: Vec<Value> = c
            .store
            .list(REPLICASETS, Some(&key.namespace))
            .0
            .iter()
            .filter(|r| {
                r["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|x| x["uid"] == uid.as_str()))
            })
            .map(|r| (**r).clone())
            .collect();
        let revision = owned
            .iter()
            .filter_map(|r| {
                r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                    .as_str()?
                    .parse::<i64>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        for r in &owned {
            let name = r["metadata"]["name"].as_str().unwrap_or("");
            if name != rs_name && r["spec"]["replicas"].as_i64() != Some(0) {
                let _ = c.modify(&rs_rt, &key.namespace, name, false, NAME, |o| {
                    o["spec"]["replicas"] = json!(0)
                });
            }
        }
        match owned
            .iter()
            .find(|r| r["metadata"]["name"] == rs_name.as_str())
        {
            Some(r) if r["spec"]["replicas"].as_i64() != Some(want) => {
                let _ = c.modify(&rs_rt, &key.namespace, &rs_name, false, NAME, |o| {
                    o["spec"]["replicas"] = json!(want)
                });
            }
            Some(_) => {}
            None => {
                let mut template = d["spec"]["template"].clone();
                template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut selector = d["spec"]["selector"].clone();
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let rs = json!({
                    "metadata": {
                        "name": rs_name,
                        "labels": template["metadata"]["labels"],
                        "annotations": {"deployment.kubernetes.io/revision": (revision + 1).to_string(),
                            "deployment.kubernetes.io/desired-replicas": want.to_string()},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": key.name,
                            "uid": uid, "controller": true, "blockOwnerDeletion": true}],
                    },
                    "spec": {"replicas": want, "selector": selector, "template": template},
                });
                if let Err(e) = c.create(&rs_rt, &key.namespace, rs, &opts) {
                    tracing::warn!(error = %e, deployment = %key.name, "cannot create a replicaset");
                    return Action::RequeueAfter(Duration::from_secs(1));
                }
            }
        }
        let count = |r: &Value, f: &str| r["status"][f].as_i64().unwrap_or(0);
        let total: i64 = owned.iter().map(|r| count(r, "replicas")).sum();
        let current = owned
            .iter()
            .find(|r| r["metadata"]["name"] == rs_name.as_str());
        let updated = current.map_or(0, |r| count(r, "replicas"));
        let ready: i64 = owned.iter().map(|r| count(r, "readyReplicas")).sum();
        let available = ready >= want && updated == want && total == want;
        let generation = d["metadata"]["generation"].clone();
        let _ = c.modify(&d_rt, &key.namespace, &key.name, true, NAME, |o| {
            let old = o.clone();
            let mut status = json!({
                "observedGeneration": generation,
                "replicas": total,
                "updatedReplicas": updated,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "conditions": [
                    condition("Available", ready >= want,
                        if ready >= want { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                        if ready >= want { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." }, &old),
                    condition("Progressing", true,
                        if available { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                        &format!("ReplicaSet \"{rs_name}\" {}", if available { "has successfully progressed." } else { "is progressing." }), &old),
                ],
            });
            if total > ready {
                status["unavailableReplicas"] = json!(total - ready);
            }
            for k in ["readyReplicas", "availableReplicas", "updatedReplicas", "replicas"] {
                if status[k] == 0
                    && let Some(m) = status.as_object_mut()
                {
                    m.remove(k);
                }
            }
            o["status"] = status;
        });
        Action::Done
    }

    /// A ReplicaSet keeps `spec.replicas` pods from its template.
    fn replicaset(&self, shared: &Shared, key: &ObjectKey) -> Action {
        let c = &shared.cluster;
        let (Some((_, _, p_rt)), Some(rs_rt)) =
            (Self::rts(c), c.registry.lookup("apps", "v1", "replicasets"))
        else {
            return Action::Done;
        };
        let Ok(rs) = c.get(&rs_rt, &key.namespace, &key.name) else {
            return Action::Done;
        };
        if rs["metadata"]["deletionTimestamp"].is_string() {
            return Action::Done;
        }
        let opts = WriteOpts::controller(NAME);
        let want = rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        let uid = rs["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let mut current: Vec<Value> = owned_pods(c, &key.namespace, &uid)
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        while current.len() < want {
            let name = format!("{}-{}", key.name, random_suffix());
            let pod = pod_from(shared, &rs, "ReplicaSet", &name, json!({}));
            match c.create(&p_rt, &key.namespace, pod, &opts) {
                Ok(r) => current.push(r.object),
                Err(e) => {
                    tracing::warn!(error = %e, replicaset = %key.name, "cannot create a pod");
                    return Action::RequeueAfter(Duration::from_secs(1));
                }
            }
        }
        while current.len() > want {
            if let Some(p) = current.pop() {
                let _ = c.delete(
                    &p_rt,
                    &key.namespace,
                    p["metadata"]["name"].as_str().unwrap_or(""),
                    &Value::Null,
                    &opts,
                );
            }
        }
        let ready = current.iter().filter(|p| is_ready(p)).count();
        let generation = rs["metadata"]["generation"].clone();
        let _ = c.modify(&rs_rt, &key.namespace, &key.name, true, NAME, |o| {
            let mut status = json!({
                "observedGeneration": generation,
                "replicas": current.len(),
                "fullyLabeledReplicas": current.len(),
                "readyReplicas": ready,
                "availableReplicas": ready,
            });
            for k in ["readyReplicas", "availableReplicas", "fullyLabeledReplicas"] {
                if status[k] == 0
                    && let Some(m) = status.as_object_mut()
                {
                    m.remove(k);
                }
            }
            o["status"] = status;
        });
        Action::Done
    }

    fn statefulset(&self, shared: &Shared, key: &ObjectKey) -> Action {
        let c = &shared.cluster;
        let Some((_, s_rt, p_rt)) = Self::rts(c) else {
            return Action::Done;
        };
        let Ok(s) = c.get(&s_rt, &key.namespace, &key.name) else {
            return Action::Done;
        };
        if s["metadata"]["deletionTimestamp"].is_string() {
            return Action::Done;
        }
        let opts = WriteOpts::controller(NAME);
        let want = s["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        let revision = format!("{}-{}", key.name, template_hash(&s["spec"]["template"]));
        let uid = s["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let mut ready = 0;
        let mut current = 0;
        for p in owned_pods(c, &key.namespace, &uid) {
            let name = p["metadata"]["name"].as_str().unwrap_or("");
            let ordinal = name
                .rsplit('-')
                .next()
                .and_then(|o| o.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            let terminating = p["metadata"]["deletionTimestamp"].is_string();
            if ordinal >= want
                || (p["metadata"]["labels"]["controller-revision-hash"] != revision.as_str()
                    && !terminating)
            {
                let _ = c.delete(&p_rt, &key.namespace, name, &Value::Null, &opts);
                continue;
            }
            if !terminating {
                current += 1;
                if is_ready(&p) {
                    ready += 1;
                }
            }
        }
        for i in 0..want {
            let name = format!("{}-{i}", key.name);
            if c.store
                .get(&ObjectKey::new(PODS, key.namespace.as_str(), name.as_str()))
                .is_some()
            {
                continue;
            }
            let mut pod = pod_from(
                shared,
                &s,
                "StatefulSet",
                &name,
                json!({
                    "controller-revision-hash": revision,
                    "statefulset.kubernetes.io/pod-name": name,
                    "apps.kubernetes.io/pod-index": i.to_string(),
                }),
            );
            if let Some(svc) = s["spec"]["serviceName"].as_str() {
                pod["spec"]["hostname"] = json!(name);
                pod["spec"]["subdomain"] = json!(svc);
            }
            if c.create(&p_rt, &key.namespace, pod, &opts).is_ok() {
                current += 1;
            }
        }
        let generation = s["metadata"]["generation"].clone();
        let _ = c.modify(&s_rt, &key.namespace, &key.name, true, NAME, |o| {
            let mut status = json!({
                "observedGeneration": generation,
                "replicas": current,
                "currentReplicas": current,
                "updatedReplicas": current,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "currentRevision": revision,
                "updateRevision": revision,
                "collisionCount": 0,
            });
            if ready == 0
                && let Some(m) = status.as_object_mut()
            {
                m.remove("readyReplicas");
            }
            o["status"] = status;
        });
        Action::Done
    }

    fn job(&self, shared: &Shared, key: &ObjectKey) -> Action {
        let c = &shared.cluster;
        let (Some(j_rt), Some(p_rt)) = (
            c.registry.lookup("batch", "v1", "jobs"),
            c.registry.lookup("", "v1", "pods"),
        ) else {
            return Action::Done;
        };
        let Ok(job) = c.get(&j_rt, &key.namespace, &key.name) else {
            return Action::Done;
        };
        if job["metadata"]["deletionTimestamp"].is_string() || job["spec"]["suspend"] == true {
            return Action::Done;
        }
        let completions = job["spec"]["completions"].as_i64().unwrap_or(1).max(1) as usize;
        let uid = job["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let pods = owned_pods(c, &key.namespace, &uid);
        let succeeded = pods
            .iter()
            .filter(|p| p["status"]["phase"] == "Succeeded")
            .count();
        let active = pods
            .iter()
            .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
            .count();
        if succeeded + active < completions {
            for _ in 0..(completions - succeeded - active) {
                let name = format!("{}-{}", key.name, random_suffix());
                let mut pod = pod_from(
                    shared,
                    &job,
                    "Job",
                    &name,
                    json!({
                        "batch.kubernetes.io/job-name": key.name, "job-name": key.name,
                        "batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
                    }),
                );
                pod["metadata"]["ownerReferences"][0]["apiVersion"] = json!("batch/v1");
                let _ = c.create(&p_rt, &key.namespace, pod, &WriteOpts::controller(NAME));
            }
        }
        let done = succeeded >= completions;
        let _ = c.modify(&j_rt, &key.namespace, &key.name, true, NAME, |o| {
            let old = o.clone();
            let start = old["status"]["startTime"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(now);
            let mut status =
                json!({"startTime": start, "succeeded": succeeded, "ready": 0, "terminating": 0});
            if active > 0 && !done {
                status["active"] = json!(active);
            }
            if done {
                let completed = old["status"]["completionTime"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(now);
                status["completionTime"] = json!(completed);
                status["conditions"] = json!([
                    condition(
                        "SuccessCriteriaMet",
                        true,
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                        &old
                    ),
                    condition(
                        "Complete",
                        true,
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                        &old
                    ),
                ]);
            }
            o["status"] = status;
        });
        Action::Done
    }

    fn pod(&self, shared: &Shared, key: &ObjectKey) -> Action {
        let c = &shared.cluster;
        let Some((_, _, p_rt)) = Self::rts(c) else {
            return Action::Done;
        };
        let Ok(pod) = c.get(&p_rt, &key.namespace, &key.name) else {
            return Action::Done;
        };
        if pod["metadata"]["deletionTimestamp"].is_string() {
            return Action::Done;
        }
        let component = component_of(&pod);
        let stuck = shared.faults.stuck(&component);
        if stuck == Some(Stuck::Unschedulable) && pod["spec"]["nodeName"].is_null() {
            let pod_ref = crate::kubelet::format_pod(&pod);
            return stuck::hold(c, &pod, Stuck::Unschedulable, "", &pod_ref)
                .map_or(Action::Done, Action::RequeueAfter);
        }
        if pod["spec"]["nodeName"].is_null() {
            let _ = c.modify(&p_rt, &key.namespace, &key.name, false, NAME, |p| {
                p["spec"]["nodeName"] = json!(NODE_NAME)
            });
            return Action::Done;
        }
        let node_ready = c
            .store
            .get(&ObjectKey::new("/nodes", "", NODE_NAME))
            .and_then(|n| n["status"]["conditions"].as_array().cloned())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
        if !node_ready {
            return Action::RequeueAfter(Duration::from_millis(200));
        }
        if let Some(stuck) = stuck.filter(|s| *s != Stuck::Unschedulable) {
            let pod_ref = crate::kubelet::format_pod(&pod);
            return stuck::hold(c, &pod, stuck, &pod_ip(&key.name), &pod_ref)
                .map_or(Action::Done, Action::RequeueAfter);
        }
        let delay = shared
            .faults
            .delay(&component)
            .max(shared.faults.delay("pods"));
        // Counted from the instant the pod was created (creationTimestamp has second precision).
        let created = c.store.created_ms(&pod).unwrap_or(0);
        let elapsed = jiff::Timestamp::now().as_millisecond() - created;
        let due = delay.as_millis() as i64;
        if !delay.is_zero() && elapsed < due {
            return Action::RequeueAfter(Duration::from_millis((due - elapsed).max(1) as u64));
        }
        if matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        ) {
            return Action::Done;
        }
        // The kubelet mounts every volume before it starts any container: a Secret volume
        // whose Secret does not exist keeps the pod in ContainerCreating (FailedMount).
        if let Some((volume, secret)) = stuck::missing_secret_volume(c, &pod) {
            return Action::RequeueAfter(stuck::hold_failed_mount(c, &pod, &volume, &secret));
        }
        // Job pods run to completion; every other pod keeps running.
        let completes = controller_owner(&pod).is_some_and(|(kind, _)| kind == "Job");
        let backend = shared.backends.find(&key.namespace, &key.name);
        if let Some(b) = &backend {
            b.pod_running(shared, &pod);
        } else if awaits_vault_backend(&pod) {
            // The Vault pod's process is the add-on's server, which starts with the pod's
            // mounted configuration (its seal): not Running before the add-on serves it.
            return Action::RequeueAfter(Duration::from_millis(20));
        }
        let probe = backend
            .as_ref()
            .and_then(|b| b.ready(&key.namespace, &key.name));
        let started = pod["status"]["startTime"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(now);
        let containers = pod["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let pod_uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
        // What the kubelet and the runtime say about each container: a runAsNonRoot refusal
        // (CreateContainerConfigError) or a simulated process that exited (CrashLoopBackOff).
        let states: Vec<ContainerState> = containers
            .iter()
            .map(|ct| {
                let name = ct["name"].as_str().unwrap_or("");
                match crate::kubelet::process(&pod, ct) {
                    Err(msg) => ContainerState::ConfigError(msg),
                    Ok(_) => match shared.runtime.view(&pod_uid, name) {
                        Some(v) => ContainerState::Runtime(v),
                        None => ContainerState::Plain,
                    },
                }
            })
            .collect();
        let config_error = states
            .iter()
            .any(|s| matches!(s, ContainerState::ConfigError(_)));
        let backoff = states
            .iter()
            .filter_map(|s| match s {
                ContainerState::Runtime(v) => v.backoff,
                _ => None,
            })
            .min();
        let unready: Vec<String> = containers
            .iter()
            .zip(&states)
            .filter(|(_, st)| !st.running())
            .map(|(ct, _)| ct["name"].as_str().unwrap_or("").to_string())
            .collect();
        let ready = probe.unwrap_or(true) && !completes && unready.is_empty();
        let pod_ref = crate::kubelet::format_pod(&pod);
        let _ = c.modify(&p_rt, &key.namespace, &key.name, true, NAME, |p| {
            let old = p.clone();
            let statuses: Vec<Value> = containers
                .iter()
                .zip(&states)
                .map(|(ct, st)| {
                    let name = ct["name"].as_str().unwrap_or("");
                    let prev = old["status"]["containerStatuses"].as_array().and_then(|a| a.iter().find(|s| s["name"] == name)).cloned();
                    let container_id = format!("containerd://{}", template_hash(&json!([key.namespace, key.name, name])));
                    let mut status = json!({
                        "name": name, "image": ct["image"], "imageID": format!("sandbox://{}", ct["image"].as_str().unwrap_or("")),
                        "containerID": container_id,
                        "ready": ready, "started": !completes,
                        "restartCount": prev.as_ref().map_or(json!(0), |s| s["restartCount"].clone()),
                        "state": if completes {
                            json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": now()}})
                        } else {
                            json!({"running": {"startedAt": started}})
                        },
                    });
                    match st {
                        ContainerState::Plain => {}
                        ContainerState::ConfigError(msg) => {
                            status["ready"] = json!(false);
                            status["started"] = json!(false);
                            status["imageID"] = json!("");
                            if let Some(m) = status.as_object_mut() {
                                m.remove("containerID");
                            }
                            status["state"] = json!({"waiting": {"reason": "CreateContainerConfigError", "message": msg}});
                        }
                        ContainerState::Runtime(v) => {
                            status["restartCount"] = json!(v.restarts);
                            status["ready"] = json!(ready && v.running_since.is_some());
                            status["started"] = json!(v.running_since.is_some());
                            status["state"] = match &v.running_since {
                                Some(since) => json!({"running": {"startedAt": since}}),
                                None => json!({"waiting": {
                                    "reason": "CrashLoopBackOff",
                                    "message": format!("back-off {}s restarting failed container={name} pod={pod_ref}", v.backoff_total.as_secs()),
                                }}),
                            };
                            if let Some(t) = &v.last_terminated {
                                status["lastState"] = json!({"terminated": {
                                    "exitCode": t.exit_code, "reason": t.reason,
                                    "startedAt": t.started_at, "finishedAt": t.finished_at,
                                    "containerID": status["containerID"].clone(),
                                }});
                            }
                        }
                    }
                    status
                })
                .collect();
            let reason = if ready { "" } else if completes { "PodCompleted" } else { "ContainersNotReady" };
            let message = if ready || completes {
                String::new()
            } else if unready.is_empty() {
                // Only the readiness probe fails.
                let all: Vec<&str> = containers.iter().filter_map(|ct| ct["name"].as_str()).collect();
                format!("containers with unready status: [{}]", all.join(" "))
            } else {
                format!("containers with unready status: [{}]", unready.join(" "))
            };
            let phase = if completes { "Succeeded" } else if config_error { "Pending" } else { "Running" };
            p["status"] = json!({
                "phase": phase,
                "conditions": [
                    condition("PodReadyToStartContainers", true, "", "", &old),
                    condition("Initialized", true, "", "", &old),
                    condition("Ready", ready, reason, &message, &old),
                    condition("ContainersReady", ready, reason, &message, &old),
                    condition("PodScheduled", true, "", "", &old),
                ],
                "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": pod_ip(&key.name), "podIPs": [{"ip": pod_ip(&key.name)}],
                "startTime": started,
                "containerStatuses": statuses,
                "qosClass": "BestEffort",
            });
        });
        if let Some(wait) = backoff {
            // The kubelet restarts the container when its back-off ends.
            return Action::RequeueAfter(wait.max(Duration::from_millis(10)));
        }
        if probe.is_some() {
            // The probe can change without a store event: poll it like a kubelet.
            return Action::RequeueAfter(Duration::from_secs(1));
        }
        Action::Done
    }
}

#[async_trait]
impl Controller for WorkloadController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<String> {
        vec![
            DEPLOY.into(),
            REPLICASETS.into(),
            STS.into(),
            JOBS.into(),
            PODS.into(),
        ]
    }

    fn map(&self, shared: &Shared, e: &StoreEvent) -> Vec<ObjectKey> {
        let mut out = Vec::new();
        if e.kind != EventType::Deleted {
            out.push(e.key.clone());
        } else if e.key.resource == PODS
            && let Some(uid) = e.object["metadata"]["uid"].as_str()
        {
            // The pod's containers are gone with it.
            shared.runtime.forget(uid);
        }
        // Pods and ReplicaSets wake their owner (ReplicaSet, StatefulSet, Job; Deployment).
        if let Some((kind, name)) = controller_owner(&e.object) {
            let res = match kind.as_str() {
                "Deployment" => DEPLOY,
                "ReplicaSet" => REPLICASETS,
                "StatefulSet" => STS,
                "Job" => JOBS,
                _ => return out,
            };
            out.push(ObjectKey::new(res, e.key.namespace.as_str(), name));
        }
        out
    }

    async fn reconcile(&self, shared: &Arc<Shared>, key: &ObjectKey) -> Action {
        match key.resource.as_str() {
            DEPLOY => self.deployment(&shared.cluster, key),
            STS => self.statefulset(shared, key),
            JOBS => self.job(shared, key),
            REPLICASETS => self.replicaset(shared, key),
            PODS => self.pod(shared, key),
            _ => Action::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hash_is_stable_and_dns_safe() {
        let t = json!({"spec":{"containers":[{"name":"a","image":"x"}]}});
        let h = template_hash(&t);
        assert_eq!(h, template_hash(&t));
        assert_eq!(h.len(), 10);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
    }
}
