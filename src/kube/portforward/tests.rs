use serde_json::{Value, json};

use super::*;
use crate::kube::mock::{self, Reply};

fn pod(name: &str, phase: &str, ready: bool, deleting: bool) -> Value {
    let mut meta =
        json!({"name": name, "namespace": "vault", "labels": {"app.kubernetes.io/name": "vault"}});
    if deleting {
        meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {"containers": [{"name": "vault", "ports": [{"name": "http", "containerPort": 8200}]}]},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
    })
}

fn pods(values: &[Value]) -> Vec<Pod> {
    values
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect()
}

#[test]
fn picks_a_running_pod_preferring_ready_and_skipping_terminating() {
    let list = pods(&[
        pod("vault-0", "Running", false, false),
        pod("vault-1", "Running", true, true),
        pod("vault-2", "Pending", false, false),
        pod("vault-3", "Running", true, false),
    ]);
    assert_eq!(
        pick_pod(&list).map(ResourceExt::name_any).as_deref(),
        Some("vault-3")
    );
    let sealed_only = pods(&[pod("vault-0", "Running", false, false)]);
    // A sealed Vault is Running but not Ready: it must still be reachable to be unsealed.
    assert_eq!(
        pick_pod(&sealed_only).map(ResourceExt::name_any).as_deref(),
        Some("vault-0")
    );
    assert!(pick_pod(&pods(&[pod("vault-2", "Pending", false, false)])).is_none());
}

#[test]
fn target_port_by_number_by_name_or_default() {
    let p = &pods(&[pod("vault-0", "Running", true, false)])[0];
    assert_eq!(target_port(None, 8200, p), Some(8200));
    assert_eq!(
        target_port(Some(&IntOrString::Int(9000)), 8200, p),
        Some(9000)
    );
    assert_eq!(
        target_port(Some(&IntOrString::String("http".into())), 80, p),
        Some(8200)
    );
    assert_eq!(
        target_port(Some(&IntOrString::String("grpc".into())), 80, p),
        None
    );
}

fn vault_cluster(selector: Value, pod_list: Vec<Value>) -> Client {
    let (client, _log) = mock::client(move |_method, path, query, _body| match path {
        "/api/v1/namespaces/vault/services/vault" => Reply::Json(
            200,
            json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"vault","namespace":"vault"},
                   "spec":{"selector": selector, "ports":[{"name":"http","port":8200,"targetPort":"http"}]}}),
        ),
        "/api/v1/namespaces/vault/pods" => {
            assert!(
                query.contains("labelSelector=app.kubernetes.io%2Fname%3Dvault"),
                "{query}"
            );
            Reply::Json(
                200,
                json!({"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":pod_list}),
            )
        }
        _ => mock::status(404, "NotFound", "services \"other\" not found"),
    });
    client
}

#[tokio::test]
async fn service_resolves_through_selector_and_named_target_port() {
    let client = vault_cluster(
        json!({"app.kubernetes.io/name": "vault"}),
        vec![pod("vault-0", "Running", false, false)],
    );
    let got = resolve_service(&client, "vault", "vault", 8200)
        .await
        .unwrap();
    assert_eq!(got, ("vault-0".to_owned(), 8200));
    let err = resolve_service(&client, "vault", "vault", 8201)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Service vault/vault has no port 8201: check the port in the playbook"
    );
    let err = resolve_service(&client, "vault", "other", 8200)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("could not read Service vault/other"),
        "{err}"
    );
}

#[tokio::test]
async fn service_without_running_pods_is_reported_before_listening() {
    let client = vault_cluster(
        json!({"app.kubernetes.io/name": "vault"}),
        vec![pod("vault-0", "Pending", false, false)],
    );
    let err = to_service(&client, "vault", "vault", 8200)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no Running pod behind Service vault/vault (selector app.kubernetes.io/name=vault): is the workload up?"
    );
}

#[tokio::test]
async fn a_failed_tunnel_is_recorded_and_the_listener_keeps_serving() {
    // The mock answers the WebSocket upgrade with a 403, as an RBAC-restricted API would.
    let (client, log) =
        mock::client(|_, _, _, _| mock::status(403, "Forbidden", "pods \"vault-0\" is forbidden"));
    let pf = to_pod(&client, "vault", "vault-0", 8200).await.unwrap();
    assert!(pf.http_url().starts_with("http://127.0.0.1:"));
    assert!(pf.last_error().is_none());
    for _ in 0..2 {
        let mut conn = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::net::TcpStream::connect(pf.local_addr()),
        )
        .await
        .expect("connect in time")
        .unwrap();
        let mut buf = Vec::new();
        // The tunnel fails, so the local connection is closed without data.
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut buf),
        )
        .await
        .expect("closed in time");
        assert_eq!(n.unwrap_or(0), 0);
    }
    let err = pf.last_error().expect("the failure is recorded");
    assert!(
        err.starts_with("could not open a port-forward to pod vault/vault-0:8200"),
        "{err}"
    );
    let upgrades = log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/api/v1/namespaces/vault/pods/vault-0/portforward")
        .count();
    assert_eq!(upgrades, 2, "each connection opens its own tunnel");
    let addr = pf.local_addr();
    pf.stop();
    // After stop the listener is gone (connection refused), checked without timing assumptions
    // by retrying briefly until the accept task has observed the cancellation.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(refused, "listener still accepting after stop");
}
