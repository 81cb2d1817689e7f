//! The in-cluster lease (the kube toolkit's `ClusterLease` and the steps' `Cluster` resource
//! that takes it in `apply`) against a minimal in-test Kubernetes API (just Leases, with
//! resourceVersion conflicts), through a real kube-rs client over HTTP.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kubestrap::kube::{ClusterLease, LeaseConfig, LeaseError, OnLost};
use kubestrap::steps::{Cluster, ClusterContext};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Store {
    leases: HashMap<String, Value>,
    version: u64,
}

type Shared = Arc<Mutex<Store>>;

fn status(code: u16, reason: &str, message: String) -> Response<Full<Bytes>> {
    let body = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
        "message": message, "reason": reason, "code": code});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn ok(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn handle(
    store: Shared,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let prefix = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Some(rest) = path.strip_prefix(prefix) else {
        return Ok(status(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
        ));
    };
    let name = rest.trim_start_matches('/').to_owned();
    let mut s = store.lock().unwrap();
    let not_found = |n: &str| {
        status(
            404,
            "NotFound",
            format!("leases.coordination.k8s.io \"{n}\" not found"),
        )
    };
    Ok(match method {
        Method::GET => match s.leases.get(&name) {
            Some(l) => ok(StatusCode::OK, l),
            None => not_found(&name),
        },
        Method::POST => {
            let mut obj: Value = serde_json::from_slice(&body).unwrap();
            let n = obj["metadata"]["name"].as_str().unwrap().to_owned();
            if s.leases.contains_key(&n) {
                status(
                    409,
                    "AlreadyExists",
                    format!("leases.coordination.k8s.io \"{n}\" already exists"),
                )
            } else {
                s.version += 1;
                obj["metadata"]["resourceVersion"] = s.version.to_string().into();
                s.leases.insert(n, obj.clone());
                ok(StatusCode::CREATED, &obj)
            }
        }
        Method::PUT => {
            let mut obj: Value = serde_json::from_slice(&body).unwrap();
            match s.leases.get(&name) {
                None => not_found(&name),
                Some(cur)
                    if cur["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"] =>
                {
                    status(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified"
                        ),
                    )
                }
                Some(_) => {
                    s.version += 1;
                    obj["metadata"]["resourceVersion"] = s.version.to_string().into();
                    s.leases.insert(name, obj.clone());
                    ok(StatusCode::OK, &obj)
                }
            }
        }
        _ => status(405, "MethodNotAllowed", "method not allowed".into()),
    })
}

async fn server() -> (Shared, kube::Client) {
    let store: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Arc::clone(&store);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let store = Arc::clone(&shared);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&store), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (store, kube::Client::try_from(config).unwrap())
}

fn config(holder: &str, secs: u64) -> LeaseConfig {
    LeaseConfig {
        namespace: "kube-system".into(),
        name: "kubestrap-test".into(),
        holder: holder.into(),
        duration: Duration::from_secs(secs),
    }
}

/// A loss handler for tests where the lease is never lost.
fn ignore_loss() -> OnLost {
    Arc::new(|message| panic!("lease lost unexpectedly: {message}"))
}

fn spec(store: &Shared) -> Value {
    store.lock().unwrap().leases["kubestrap-test"]["spec"].clone()
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("timed out")
}

#[tokio::test]
async fn a_second_holder_is_refused_until_the_first_releases() {
    let (store, client) = server().await;
    let a = within(ClusterLease::acquire(
        client.clone(),
        config("a", 60),
        ignore_loss(),
    ))
    .await
    .unwrap();
    assert_eq!(spec(&store)["holderIdentity"], "a");
    let err = within(ClusterLease::acquire(
        client.clone(),
        config("b", 60),
        ignore_loss(),
    ))
    .await
    .unwrap_err();
    match &err {
        LeaseError::Held { holder, .. } => assert_eq!(holder, "a"),
        other => panic!("expected Held, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("holds lease kube-system/kubestrap-test"),
        "{err}"
    );
    within(a.release()).await.unwrap();
    assert!(
        spec(&store)
            .get("holderIdentity")
            .is_none_or(Value::is_null)
    );
    let b = within(ClusterLease::acquire(
        client,
        config("b", 60),
        ignore_loss(),
    ))
    .await
    .unwrap();
    assert_eq!(spec(&store)["holderIdentity"], "b");
    assert_eq!(spec(&store)["leaseTransitions"], 1);
    within(b.release()).await.unwrap();
}

#[tokio::test]
async fn an_expired_lease_of_a_dead_run_is_taken_over() {
    let (store, client) = server().await;
    let stale = json!({"apiVersion":"coordination.k8s.io/v1","kind":"Lease",
        "metadata":{"name":"kubestrap-test","namespace":"kube-system","resourceVersion":"1"},
        "spec":{"holderIdentity":"dead","leaseDurationSeconds":60,
                "renewTime":"2020-01-01T00:00:00.000000Z","leaseTransitions":3}});
    store
        .lock()
        .unwrap()
        .leases
        .insert("kubestrap-test".into(), stale);
    store.lock().unwrap().version = 1;
    let lease = within(ClusterLease::acquire(
        client,
        config("new", 60),
        ignore_loss(),
    ))
    .await
    .unwrap();
    assert_eq!(spec(&store)["holderIdentity"], "new");
    assert_eq!(spec(&store)["leaseTransitions"], 4);
    within(lease.release()).await.unwrap();
}

#[tokio::test]
async fn losing_the_lease_to_another_holder_stops_the_run() {
    let (store, client) = server().await;
    let lost = CancellationToken::new();
    let why = Arc::new(Mutex::new(Vec::<String>::new()));
    let on_lost: OnLost = {
        let (lost, why) = (lost.clone(), Arc::clone(&why));
        Arc::new(move |message| {
            why.lock().unwrap().push(message);
            lost.cancel();
        })
    };
    // 3s validity: renewed every second.
    let _lease = within(ClusterLease::acquire(client, config("me", 3), on_lost))
        .await
        .unwrap();
    {
        let mut s = store.lock().unwrap();
        let l = s.leases.get_mut("kubestrap-test").unwrap();
        l["spec"]["holderIdentity"] = "intruder".into();
    }
    within(lost.cancelled()).await;
    let why = why.lock().unwrap();
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(why[0].contains("now held by intruder"), "{why:?}");
}

/// A step that only reaches the API, as every real step does.
#[derive(Debug, serde::Serialize)]
struct UsesApi;

#[async_trait::async_trait]
impl kubestrap::engine::Step for UsesApi {
    fn kind(&self) -> &'static str {
        "uses-api"
    }
    fn payload(&self) -> Value {
        Value::Null
    }
    async fn plan(
        &self,
        ctx: &kubestrap::engine::StepContext,
    ) -> Result<Vec<kubestrap::engine::Action>, kubestrap::engine::StepError> {
        ctx.kube().await?;
        Ok(Vec::new())
    }
    async fn apply(
        &self,
        ctx: &kubestrap::engine::StepContext,
    ) -> Result<kubestrap::engine::StepOutcome, kubestrap::engine::StepError> {
        ctx.kube().await?;
        Ok(kubestrap::engine::StepOutcome::new(false))
    }
    async fn verify(
        &self,
        _ctx: &kubestrap::engine::StepContext,
    ) -> Result<kubestrap::engine::Verified, kubestrap::engine::StepError> {
        Ok(kubestrap::engine::Verified::Holds)
    }
}

/// The playbook's cluster (with its lease) through `client`.
fn cluster(pb: &kubestrap::playbook::LoadedPlaybook, client: &kube::Client) -> Arc<Cluster> {
    Arc::new(Cluster::for_playbook(
        pb,
        kubestrap::kube::KubeAccess::with_client(client.clone()),
    ))
}

#[tokio::test]
async fn apply_takes_the_lease_on_first_api_use_refuses_a_held_one_and_releases_it() {
    use kubestrap::engine::{self, ApplyRequest, CheckpointMode, Phase, RunEnv, RunStatus};
    let (store, client) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubestrap.toml");
    std::fs::write(
        &path,
        "[cluster]\nname = \"test\"\nprovider = \"existing\"\n[flux]\ngit_url = \"https://e.com/o/r\"\npath = \"c\"\ntoken_env = \"T\"\n[[secrets]]\nenv = \"T\"\nvault_path = \"a\"\nvault_key = \"k\"\nrequired = false\n",
    )
    .unwrap();
    let pb = kubestrap::playbook::Playbook::load(&path).unwrap();
    let mut e = engine::Engine::new();
    e.add("uses-api", Phase::Infrastructure, &[], Arc::new(UsesApi));
    let dag = e.seal().unwrap();
    let req = ApplyRequest {
        checkpoint: CheckpointMode::Fresh,
        only: Vec::new(),
        concurrency: 1,
    };

    // plan never writes the lease.
    let env = RunEnv::new(pb.clone()).with_finished_resource(cluster(&pb, &client));
    within(engine::plan(&dag, &env, 1)).await;
    assert!(store.lock().unwrap().leases.is_empty());

    // Another run holds it: the step fails with a clear message, nothing else happens.
    let other = within(ClusterLease::acquire(
        client.clone(),
        config("other-laptop", 60),
        ignore_loss(),
    ))
    .await
    .unwrap();
    let env = RunEnv::new(pb.clone()).with_finished_resource(cluster(&pb, &client));
    let report = within(engine::apply(&dag, &env, &req)).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    let error = report.step("uses-api").unwrap().error.clone().unwrap();
    assert!(
        error.contains(
            "another kubestrap run (other-laptop) holds lease kube-system/kubestrap-test"
        ),
        "{error}"
    );
    within(other.release()).await.unwrap();

    // Free: taken during the run, handed back at its end.
    let env = RunEnv::new(pb.clone()).with_finished_resource(cluster(&pb, &client));
    let report = within(engine::apply(&dag, &env, &req)).await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    let s = spec(&store);
    assert!(
        s.get("holderIdentity").is_none_or(Value::is_null),
        "not released: {s}"
    );
    assert_eq!(
        s["leaseTransitions"], 1,
        "one handover: other-laptop -> this run"
    );
}
