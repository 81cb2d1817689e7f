//! Pods held back by a `stuck.<workload>` fault, as a real cluster shows them: the status the
//! kubelet (image pull back-off, crash loop) or the scheduler (no node fits) writes, and the
//! Events they record, worded as `kubelet` (`pkg/kubelet/images`, `kuberuntime`) and
//! `kube-scheduler` word them, so a diagnosis that works here works on a real cluster.

use std::time::Duration;

use serde_json::{Value, json};

use super::node::NODE_NAME;
use super::workloads::condition;
use crate::cluster::{Cluster, WriteOpts};
use crate::faults::Stuck;

/// The scheduler's verdict for a pod no node fits (a one-node cluster short of memory).
pub(crate) const UNSCHEDULABLE_MESSAGE: &str = "0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";

/// The kubelet's crash-loop back-off: 10 s doubling to 5 min.
fn backoff(restarts: u32) -> Duration {
    Duration::from_secs((10u64 << restarts.min(5)).min(300))
}

/// Restarts made `elapsed` after the pod started (each crash is followed by a back-off), and
/// the time until the next one.
fn restarts_after(elapsed: Duration) -> (u32, Duration) {
    let mut t = Duration::ZERO;
    let mut n = 0;
    loop {
        let next = t + backoff(n);
        if next > elapsed {
            return (n, next - elapsed);
        }
        t = next;
        n += 1;
    }
}

/// `docker.io/library/vault:1.19` for `vault:1.19`: the reference containerd resolves.
fn full_reference(image: &str) -> String {
    let first = image.split('/').next().unwrap_or("");
    let has_registry =
        image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    match (has_registry, image.contains('/')) {
        (true, _) => image.to_string(),
        (false, true) => format!("docker.io/{image}"),
        (false, false) => format!("docker.io/library/{image}"),
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Records an Event about `pod` from `component` that happened `count` times; a repeat of the
/// same reason and message is counted on the existing Event, as the kubelet's event
/// aggregation does.
fn event(
    c: &Cluster,
    pod: &Value,
    component: &str,
    count: u32,
    (warning, reason, message): (bool, &str, &str),
) {
    if count == 0 {
        return;
    }
    let Some(rt) = c.registry.lookup("", "v1", "events") else {
        return;
    };
    let m = &pod["metadata"];
    let ns = m["namespace"].as_str().unwrap_or("default");
    let pod_name = m["name"].as_str().unwrap_or("");
    let uid = m["uid"].as_str().unwrap_or("");
    let id = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(format!("{uid}\0{reason}\0{message}").as_bytes());
        hex::encode(&d[..8])
    };
    let name = format!("{pod_name}.{id}");
    let ts = now();
    if let Ok(old) = c.get(&rt, ns, &name) {
        if old["count"].as_u64() != Some(u64::from(count)) {
            let _ = c.modify(&rt, ns, &name, false, component, |e| {
                e["count"] = json!(count);
                e["lastTimestamp"] = json!(ts);
            });
        }
        return;
    }
    let mut source = json!({"component": component});
    if component == "kubelet" {
        source["host"] = json!(NODE_NAME);
    }
    let ev = json!({
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {
            "apiVersion": "v1", "kind": "Pod", "name": pod_name, "namespace": ns, "uid": uid,
            "resourceVersion": m["resourceVersion"],
        },
        "reason": reason, "message": message,
        "type": if warning { "Warning" } else { "Normal" },
        "source": source,
        "reportingComponent": component,
        "reportingInstance": if component == "kubelet" { NODE_NAME } else { "" },
        "firstTimestamp": ts, "lastTimestamp": ts, "count": count,
    });
    if let Err(e) = c.create(&rt, ns, ev, &WriteOpts::controller(component)) {
        tracing::debug!(error = %e, "cannot record an event");
    }
}

/// The first Secret volume of `pod` the kubelet cannot set up: `(volume, secret)` of a
/// non-optional `secret` volume whose Secret does not exist.
pub(crate) fn missing_secret_volume(c: &Cluster, pod: &Value) -> Option<(String, String)> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    pod["spec"]["volumes"].as_array()?.iter().find_map(|v| {
        let secret = v["secret"]["secretName"].as_str()?;
        if v["secret"]["optional"] == true {
            return None;
        }
        let exists = c
            .store
            .get(&crate::store::ObjectKey::new("/secrets", ns, secret))
            .is_some();
        (!exists).then(|| {
            (
                v["name"].as_str().unwrap_or("").to_string(),
                secret.to_string(),
            )
        })
    })
}

/// How often the kubelet retries a failed volume mount here (it backs off up to about two
/// minutes; the sandbox retries quickly so a Secret created late starts the pod at once).
const MOUNT_RETRY: Duration = Duration::from_millis(500);

/// The pod's containers and the kubelet's message for all of them not ready (`Ready` and
/// `ContainersReady` say it while the pod is held back).
fn containers_unready(pod: &Value) -> (Vec<Value>, String) {
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|ct| ct["name"].as_str())
        .collect();
    let unready = format!("containers with unready status: [{}]", names.join(" "));
    (containers, unready)
}

/// Holds `pod` in `ContainerCreating` because its Secret volume `volume` names the missing
/// Secret `secret`, with the kubelet's `FailedMount` Event (`pkg/volume/secret`:
/// `MountVolume.SetUp failed for volume "…" : secret "…" not found`); returns when to retry.
pub(crate) fn hold_failed_mount(c: &Cluster, pod: &Value, volume: &str, secret: &str) -> Duration {
    let Some(rt) = c.registry.lookup("", "v1", "pods") else {
        return MOUNT_RETRY;
    };
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let (containers, unready) = containers_unready(pod);
    let started = pod["status"]["startTime"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(now);
    let _ = c.modify(&rt, ns, name, true, "kubelet", |p| {
        let old = p.clone();
        let statuses: Vec<Value> = containers
            .iter()
            .map(|ct| {
                json!({
                    "name": ct["name"], "image": ct["image"], "imageID": "",
                    "ready": false, "started": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                })
            })
            .collect();
        p["status"] = json!({
            "phase": "Pending",
            "conditions": [
                condition("PodReadyToStartContainers", false, "", "", &old),
                condition("Initialized", true, "", "", &old),
                condition("Ready", false, "ContainersNotReady", &unready, &old),
                condition("ContainersReady", false, "ContainersNotReady", &unready, &old),
                condition("PodScheduled", true, "", "", &old),
            ],
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": started,
            "containerStatuses": statuses,
            "qosClass": "BestEffort",
        });
    });
    let message =
        format!("MountVolume.SetUp failed for volume \"{volume}\" : secret \"{secret}\" not found");
    event(c, pod, "kubelet", 1, (true, "FailedMount", &message));
    MOUNT_RETRY
}

/// Writes the held-back status of `pod` and its Events; returns when to look again (the
/// kubelet and the scheduler keep retrying, and counting).
pub(crate) fn hold(
    c: &Cluster,
    pod: &Value,
    stuck: Stuck,
    ip: &str,
    pod_ref: &str,
) -> Option<Duration> {
    let rt = c.registry.lookup("", "v1", "pods")?;
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let (containers, unready) = containers_unready(pod);
    let created = c.store.created_ms(pod).unwrap_or(0);
    let elapsed = Duration::from_millis(
        u64::try_from(jiff::Timestamp::now().as_millisecond() - created).unwrap_or(0),
    );
    let started = pod["status"]["startTime"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(now);
    let (restarts, next) = restarts_after(elapsed);
    let _ = c.modify(&rt, ns, name, true, "kubelet", |p| {
        let old = p.clone();
        p["status"] = match stuck {
            Stuck::Unschedulable => json!({
                "phase": "Pending",
                "conditions": [condition("PodScheduled", false, "Unschedulable", UNSCHEDULABLE_MESSAGE, &old)],
                "qosClass": "BestEffort",
            }),
            Stuck::ImagePullBackOff | Stuck::CrashLoopBackOff => {
                let crash = stuck == Stuck::CrashLoopBackOff;
                let statuses: Vec<Value> = containers
                    .iter()
                    .map(|ct| {
                        let cname = ct["name"].as_str().unwrap_or("");
                        let image = ct["image"].as_str().unwrap_or("");
                        if crash {
                            json!({
                                "name": cname, "image": image,
                                "imageID": format!("{}@sha256:{}", full_reference(image), "0".repeat(64)),
                                "containerID": format!("containerd://{}", "0".repeat(64)),
                                "ready": false, "started": false, "restartCount": restarts,
                                "state": {"waiting": {
                                    "reason": "CrashLoopBackOff",
                                    "message": format!("back-off {}s restarting failed container={cname} pod={pod_ref}", backoff(restarts.saturating_sub(1)).as_secs()),
                                }},
                                "lastState": {"terminated": {
                                    "exitCode": 1, "reason": "Error", "startedAt": started, "finishedAt": started,
                                }},
                            })
                        } else {
                            json!({
                                "name": cname, "image": image, "imageID": "",
                                "ready": false, "started": false, "restartCount": 0,
                                "state": {"waiting": {
                                    "reason": "ImagePullBackOff",
                                    "message": format!("Back-off pulling image \"{image}\""),
                                }},
                            })
                        }
                    })
                    .collect();
                json!({
                    "phase": if crash { "Running" } else { "Pending" },
                    "conditions": [
                        condition("PodReadyToStartContainers", true, "", "", &old),
                        condition("Initialized", true, "", "", &old),
                        condition("Ready", false, "ContainersNotReady", &unready, &old),
                        condition("ContainersReady", false, "ContainersNotReady", &unready, &old),
                        condition("PodScheduled", true, "", "", &old),
                    ],
                    "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                    "podIP": ip, "podIPs": [{"ip": ip}],
                    "startTime": started,
                    "containerStatuses": statuses,
                    "qosClass": "BestEffort",
                })
            }
        };
    });
    // Each attempt (a pull, a start, a scheduling cycle) follows the back-off schedule.
    let attempts = restarts + 1;
    match stuck {
        Stuck::Unschedulable => {
            let failed = (true, "FailedScheduling", UNSCHEDULABLE_MESSAGE);
            event(c, pod, "default-scheduler", attempts, failed);
        }
        Stuck::ImagePullBackOff => {
            for ct in &containers {
                let image = ct["image"].as_str().unwrap_or("");
                let full = full_reference(image);
                let pulling = format!("Pulling image \"{image}\"");
                let failed = format!(
                    "Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{full}\": failed to resolve reference \"{full}\": {full}: not found"
                );
                let backoff = format!("Back-off pulling image \"{image}\"");
                event(c, pod, "kubelet", attempts, (false, "Pulling", &pulling));
                event(c, pod, "kubelet", attempts, (true, "Failed", &failed));
                event(
                    c,
                    pod,
                    "kubelet",
                    attempts,
                    (true, "Failed", "Error: ErrImagePull"),
                );
                event(c, pod, "kubelet", attempts, (false, "BackOff", &backoff));
                let err = (true, "Failed", "Error: ImagePullBackOff");
                event(c, pod, "kubelet", attempts, err);
            }
        }
        Stuck::CrashLoopBackOff => {
            for ct in &containers {
                let image = ct["image"].as_str().unwrap_or("");
                let cname = ct["name"].as_str().unwrap_or("");
                let pulled = format!("Container image \"{image}\" already present on machine");
                let created = format!("Created container: {cname}");
                let started = format!("Started container {cname}");
                let backoff =
                    format!("Back-off restarting failed container {cname} in pod {pod_ref}");
                event(c, pod, "kubelet", attempts, (false, "Pulled", &pulled));
                event(c, pod, "kubelet", attempts, (false, "Created", &created));
                event(c, pod, "kubelet", attempts, (false, "Started", &started));
                event(c, pod, "kubelet", restarts, (true, "BackOff", &backoff));
            }
        }
    }
    Some(next.max(Duration::from_millis(100)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_loop_backoff_doubles_from_ten_seconds_to_five_minutes() {
        assert_eq!(restarts_after(Duration::from_secs(5)).0, 0);
        assert_eq!(restarts_after(Duration::from_secs(11)).0, 1);
        assert_eq!(restarts_after(Duration::from_secs(31)).0, 2);
        assert_eq!(backoff(9), Duration::from_secs(300));
    }

    #[test]
    fn image_references_resolve_as_containerd_does() {
        assert_eq!(full_reference("vault:1"), "docker.io/library/vault:1");
        assert_eq!(
            full_reference("hashicorp/vault:1.19.0"),
            "docker.io/hashicorp/vault:1.19.0"
        );
        assert_eq!(full_reference("ghcr.io/x/y:1"), "ghcr.io/x/y:1");
    }
}
