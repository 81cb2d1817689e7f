//! `stuck.<workload>` faults: the workload's pods stay un-ready exactly as a kubelet or the
//! scheduler leaves them (waiting reason and message, `PodScheduled=False`), with the Events
//! `kubectl describe pod` shows; the other workloads are untouched.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Client;
use kube::api::{Api, ListParams};
use kubestrap_sandbox::{FaultSpec, SandboxConfig};
use kubestrap_test_support::{apply_yaml, start_sandbox, within};
use serde_json::Value;

const WORKLOADS: &str = include_str!("fixtures/stuck-workloads.yaml");

/// Polls the pod labelled `app=<app>` until `pred` holds on its JSON; returns it.
async fn pod_where(c: &Client, app: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let pods: Api<Pod> = Api::namespaced(c.clone(), "shop");
    within(&format!("pod of {app}"), async {
        loop {
            let list = pods
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .expect("list pods");
            if let Some(p) = list
                .items
                .iter()
                .map(|p| serde_json::to_value(p).expect("json"))
                .find(|p| pred(p))
            {
                return p;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
}

/// Waits for an Event about `pod` with `reason` whose message contains `text`.
async fn event_about(c: &Client, pod: &str, reason: &str, text: &str) -> Event {
    let events: Api<Event> = Api::namespaced(c.clone(), "shop");
    within(&format!("{reason} event about {pod}"), async {
        loop {
            let list = events
                .list(&ListParams::default().fields(&format!(
                    "involvedObject.kind=Pod,involvedObject.name={pod}"
                )))
                .await
                .expect("list events");
            if let Some(e) = list.items.into_iter().find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.message.as_deref().is_some_and(|m| m.contains(text))
            }) {
                return e;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
}

fn waiting(p: &Value) -> (&str, &str) {
    let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
    (
        w["reason"].as_str().unwrap_or(""),
        w["message"].as_str().unwrap_or(""),
    )
}

fn condition<'a>(p: &'a Value, kind: &str) -> &'a Value {
    p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_workloads_stay_unready_with_the_kubelets_and_schedulers_words() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = SandboxConfig::new(tmp.path().join("sandbox"));
    cfg.faults = FaultSpec::parse(
        "stuck.web=ImagePullBackOff,stuck.db=CrashLoopBackOff,stuck.big=Unschedulable",
    )
    .expect("spec");
    let (h, c) = start_sandbox(cfg).await;
    apply_yaml(&c, WORKLOADS).await;

    // ImagePullBackOff: Pending, the kubelet's back-off message, pull events.
    let web = pod_where(&c, "web", |p| waiting(p).0 == "ImagePullBackOff").await;
    assert_eq!(web["status"]["phase"], "Pending");
    assert_eq!(
        waiting(&web).1,
        "Back-off pulling image \"nginx:1.27\"",
        "{web}"
    );
    assert_eq!(condition(&web, "Ready")["status"], "False");
    assert_eq!(condition(&web, "Ready")["reason"], "ContainersNotReady");
    let name = web["metadata"]["name"].as_str().expect("name");
    let failed = event_about(&c, name, "Failed", "Failed to pull image \"nginx:1.27\"").await;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(
        failed.source.and_then(|s| s.component).as_deref(),
        Some("kubelet")
    );
    event_about(&c, name, "BackOff", "Back-off pulling image \"nginx:1.27\"").await;

    // CrashLoopBackOff: Running, restarts counted, the last exit recorded, BackOff events.
    let db = pod_where(&c, "db", |p| {
        waiting(p).0 == "CrashLoopBackOff"
            && p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1)
    })
    .await;
    assert_eq!(db["metadata"]["name"], "db-0");
    assert_eq!(db["status"]["phase"], "Running");
    assert!(
        waiting(&db)
            .1
            .starts_with("back-off 10s restarting failed container=db pod=db-0_shop("),
        "{db}"
    );
    assert_eq!(
        db["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"],
        "Error"
    );
    event_about(
        &c,
        "db-0",
        "BackOff",
        "Back-off restarting failed container db in pod db-0_shop(",
    )
    .await;

    // Unschedulable: Pending, never bound to a node, PodScheduled=False, FailedScheduling.
    let big = pod_where(&c, "big", |p| {
        condition(p, "PodScheduled")["reason"] == "Unschedulable"
    })
    .await;
    assert_eq!(big["status"]["phase"], "Pending");
    assert!(big["spec"]["nodeName"].is_null(), "{big}");
    assert_eq!(condition(&big, "PodScheduled")["status"], "False");
    assert!(
        condition(&big, "PodScheduled")["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("0/1 nodes are available: ")),
        "{big}"
    );
    let name = big["metadata"]["name"].as_str().expect("name");
    let sched = event_about(&c, name, "FailedScheduling", "0/1 nodes are available").await;
    assert_eq!(
        sched.source.and_then(|s| s.component).as_deref(),
        Some("default-scheduler")
    );

    // A workload without a fault becomes ready as usual.
    pod_where(&c, "fine", |p| condition(p, "Ready")["status"] == "True").await;
    h.shutdown().await.expect("shutdown");
}
