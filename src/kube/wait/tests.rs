use std::sync::{Arc, Mutex};

use ::kube::core::GroupVersionKind;
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

use super::*;
use crate::kube::mock::{self, Reply};

fn git_repository(status: &str, reason: &str, generation: i64, observed: i64) -> Value {
    json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "flux-system", "namespace": "flux-system", "resourceVersion": "7", "generation": generation},
        "status": {"conditions": [{"type": "Ready", "status": status, "reason": reason,
                                   "message": "reconciliation in progress", "observedGeneration": observed}]}
    })
}

fn git_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "GitRepository"),
        "gitrepositories",
    )
}

/// A mock whose list returns `initial` and whose watch streams `events`, then stays open.
fn watched(initial: Option<Value>, events: Vec<Value>) -> Client {
    let events = Mutex::new(Some(events));
    let (client, _log) = mock::client(move |_method, _path, query, _body| {
        if query.contains("watch=true") {
            // Later re-watches (none expected) see no further events.
            Reply::Watch(events.lock().unwrap().take().unwrap_or_default())
        } else {
            let items: Vec<Value> = initial.iter().cloned().collect();
            Reply::Json(
                200,
                json!({"kind":"List","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":items}),
            )
        }
    });
    client
}

#[test]
fn condition_matching_with_reason_and_staleness() {
    let spec = ConditionSpec::is_true("Ready");
    assert_eq!(evaluate_condition(None, &spec), Check::pending("not found"));
    let no_status = json!({"metadata": {"name": "x"}});
    assert_eq!(
        evaluate_condition(Some(&no_status), &spec),
        Check::pending("no Ready condition yet")
    );
    let ready = git_repository("True", "Succeeded", 2, 2);
    assert!(evaluate_condition(Some(&ready), &spec).done);
    let stale = git_repository("True", "Succeeded", 3, 2);
    let check = evaluate_condition(Some(&stale), &spec);
    assert!(!check.done);
    assert!(
        check
            .status
            .ends_with("(stale: observedGeneration 2 < generation 3)"),
        "{check:?}"
    );
    let synced = ConditionSpec::is_true("Ready").with_reason("SecretSynced");
    assert!(!evaluate_condition(Some(&ready), &synced).done);
    assert_eq!(synced.to_string(), "Ready=True (reason SecretSynced)");
}

/// Waits for GitRepository `flux-system/flux-system` Ready=True.
async fn git_repository_ready(
    client: &Client,
    options: &WaitOptions,
    progress: Progress<'_>,
) -> Result<DynamicObject, WaitError> {
    let name = "flux-system";
    let ready = ConditionSpec::is_true("Ready");
    condition_or_terminal(
        client,
        &git_resource(),
        Some(name),
        name,
        &ready,
        options,
        progress,
        |_| None,
    )
    .await
}

#[tokio::test]
async fn condition_wait_returns_when_a_watch_event_satisfies_it() {
    let client = watched(
        Some(git_repository("Unknown", "Progressing", 1, 1)),
        vec![json!({"type": "MODIFIED", "object": git_repository("True", "Succeeded", 1, 1)})],
    );
    let options = WaitOptions::new(Duration::from_secs(10));
    let obj = git_repository_ready(&client, &options, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(obj.data["status"]["conditions"][0]["reason"], "Succeeded");
}

#[tokio::test(start_paused = true)]
async fn timeout_names_object_condition_and_last_status_and_reports_progress() {
    let client = watched(
        Some(git_repository("False", "AuthenticationFailed", 1, 1)),
        vec![],
    );
    let options = WaitOptions {
        timeout: Duration::from_secs(30),
        progress_every: Duration::from_secs(12),
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let err = git_repository_ready(&client, &options, &mut |p| {
        s.lock().unwrap().push(p.to_string())
    })
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "timed out after 30s waiting for GitRepository flux-system/flux-system Ready=True; last observed: \
         Ready=False reason=AuthenticationFailed message=\"reconciliation in progress\""
    );
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.first().map(String::as_str),
        Some(
            "waiting for GitRepository flux-system/flux-system Ready=True (12s): Ready=False \
             reason=AuthenticationFailed message=\"reconciliation in progress\""
        )
    );
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn deleted_is_done_when_the_object_is_gone_and_waits_on_finalizers() {
    let gone = watched(None, vec![]);
    secret_deleted(gone, "flux-system", "flux-system", 10)
        .await
        .unwrap();

    let client = watched(
        Some(terminating_secret()),
        vec![json!({"type":"DELETED","object":{
            "apiVersion":"v1","kind":"Secret","metadata":{"name":"s","namespace":"n","resourceVersion":"8"}}})],
    );
    secret_deleted(client, "n", "s", 10).await.unwrap();
}

/// Secret `n/s`, being deleted but held by a finalizer.
fn terminating_secret() -> Value {
    json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"s","namespace":"n",
        "deletionTimestamp":"2026-01-01T00:00:00Z","finalizers":["example.com/hold"]}})
}

/// Waits (at most `limit_s` seconds) for Secret `ns/name` to be deleted.
async fn secret_deleted(
    client: Client,
    ns: &str,
    name: &str,
    limit_s: u64,
) -> Result<(), WaitError> {
    let api: Api<Secret> = Api::namespaced(client, ns);
    let what = format!("Secret {ns}/{name}");
    deleted(
        api,
        name,
        &what,
        &WaitOptions::new(Duration::from_secs(limit_s)),
        &mut |_| {},
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn deleted_timeout_lists_remaining_finalizers() {
    let client = watched(Some(terminating_secret()), vec![]);
    let err = secret_deleted(client, "n", "s", 5).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "timed out after 5s waiting for Secret n/s deleted; last observed: being deleted, finalizers: example.com/hold"
    );
}

#[test]
fn deployment_needs_available_and_an_observed_rollout() {
    let spec = ConditionSpec::is_true("Available");
    let d = |generation: i64, observed: i64, status: &str| -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "vault", "generation": generation},
            "status": {"observedGeneration": observed,
                       "conditions": [{"type": "Available", "status": status, "reason": "MinimumReplicasAvailable"}]}
        }))
        .unwrap()
    };
    assert!(deployment_check(Some(&d(2, 2, "True")), &spec).done);
    let stale = deployment_check(Some(&d(3, 2, "True")), &spec);
    assert!(!stale.done);
    assert!(stale.status.contains("rollout not observed"), "{stale:?}");
    assert!(!deployment_check(Some(&d(1, 1, "False")), &spec).done);
    assert!(!deployment_check(None, &spec).done);
}

#[test]
fn pod_running_and_ready() {
    let p = |phase: &str, ready: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "vault-0"},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}
        }))
        .unwrap()
    };
    assert!(pod_check(Some(&p("Running", "False")), PodState::Running).done);
    let not_ready = pod_check(Some(&p("Running", "False")), PodState::Ready);
    assert!(!not_ready.done);
    assert_eq!(not_ready.status, "phase=Running, Ready=False");
    assert!(pod_check(Some(&p("Running", "True")), PodState::Ready).done);
    assert!(!pod_check(Some(&p("Pending", "False")), PodState::Running).done);
}

/// Regression (issue 9): ESO's conditions carry no observedGeneration, so a wait right after an
/// ExternalSecret's spec changed passed on the previous sync's Ready=True SecretSynced.
#[test]
fn external_secret_synced_before_a_spec_change_is_stale() {
    let spec = ConditionSpec::is_true("Ready").with_reason("SecretSynced");
    let es = |generation: i64, synced: &str| {
        serde_json::json!({
            "metadata": {"name": "git", "generation": generation},
            "status": {
                "refreshTime": "2026-01-01T00:00:00Z",
                "syncedResourceVersion": synced,
                "conditions": [{"type": "Ready", "status": "True", "reason": "SecretSynced",
                                "message": "secret synced"}],
            },
        })
    };
    let stale = evaluate_condition(Some(&es(2, "1-9f86d081884c7d659a2feaa0c55ad015")), &spec);
    assert!(!stale.done, "{stale:?}");
    assert!(
        stale
            .status
            .contains("stale: syncedResourceVersion generation 1 < generation 2")
    );
    assert!(evaluate_condition(Some(&es(2, "2-9f86d081884c7d659a2feaa0c55ad015")), &spec).done);
    // kstatus: a status-level observedGeneration counts the same way.
    let mut obj = es(3, "");
    obj["status"]["observedGeneration"] = serde_json::json!(2);
    assert!(!evaluate_condition(Some(&obj), &spec).done);
    obj["status"]["observedGeneration"] = serde_json::json!(3);
    assert!(evaluate_condition(Some(&obj), &spec).done);
}
