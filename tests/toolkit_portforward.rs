//! `kubestrap::kube::portforward` end to end over real sockets: kube-rs opens the WebSocket
//! upgrade against an in-test HTTP API server that speaks the kubelet's port-forward protocol
//! (`v4.channel.k8s.io`: init frames, data on channel 0, errors on channel 1), and the "pod"
//! behind it echoes what it receives.
//!
//! Proves: bytes flow both ways through the local listener, the Service is resolved to a Running
//! pod through its selector, each new connection re-resolves the pod (a restarted Vault pod with
//! a new name is picked up), and an error reported by the pod is surfaced.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kubestrap::kube::portforward;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

const LIMIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Api {
    /// The pod currently behind the Service.
    pod: Mutex<String>,
    /// Every pod a port-forward was opened to, in order.
    forwards: Mutex<Vec<String>>,
}

fn json_response(v: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

async fn handle(
    api: Arc<Api>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/api/v1/namespaces/vault/services/vault" {
        return Ok(json_response(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "vault", "namespace": "vault"},
            "spec": {"selector": {"app.kubernetes.io/name": "vault"},
                     "ports": [{"name": "http", "port": 8200, "targetPort": 8200}]}
        })));
    }
    if path == "/api/v1/namespaces/vault/pods" {
        let pod = api.pod.lock().unwrap().clone();
        return Ok(json_response(json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
            "items": [{"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": pod, "namespace": "vault", "labels": {"app.kubernetes.io/name": "vault"}},
                       "status": {"phase": "Running"}}]
        })));
    }
    let Some(pod) = path
        .strip_prefix("/api/v1/namespaces/vault/pods/")
        .and_then(|p| p.strip_suffix("/portforward"))
        .map(str::to_owned)
    else {
        return Ok(Response::builder()
            .status(404)
            .body(Full::new(Bytes::from(
                r#"{"kind":"Status","code":404,"reason":"NotFound"}"#,
            )))
            .unwrap());
    };
    assert!(req.uri().query().unwrap_or("").contains("ports=8200"));
    let protocols = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(protocols.contains("v4.channel.k8s.io"), "{protocols}");
    let key = req
        .headers()
        .get("sec-websocket-key")
        .unwrap()
        .as_bytes()
        .to_vec();
    api.forwards.lock().unwrap().push(pod.clone());
    tokio::spawn(async move {
        let upgraded = hyper::upgrade::on(req).await.unwrap();
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        pod_session(ws, &pod).await;
    });
    Ok(Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", derive_accept_key(&key))
        .header("sec-websocket-protocol", "v4.channel.k8s.io")
        .body(Full::new(Bytes::new()))
        .unwrap())
}

/// The kubelet side of one port-forward: init frames, then echo data (or fail, for "broken").
async fn pod_session<S>(mut ws: WebSocketStream<S>, pod: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let [lo, hi] = 8200u16.to_le_bytes();
    ws.send(Message::Binary(Bytes::from(vec![0, lo, hi])))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from(vec![1, lo, hi])))
        .await
        .unwrap();
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            // Like the kubelet when nothing listens on the port: an error on channel 1, and
            // the WebSocket stays open.
            Message::Binary(data) if pod == "broken" && data.len() > 1 && data[0] == 0 => {
                let mut frame = vec![1];
                frame.extend_from_slice(b"connection refused by the pod");
                ws.send(Message::Binary(Bytes::from(frame))).await.ok();
            }
            Message::Binary(data) if data.len() > 1 && data[0] == 0 => {
                let mut reply = vec![0];
                reply.extend_from_slice(format!("{pod}:").as_bytes());
                reply.extend_from_slice(&data[1..]);
                if ws.send(Message::Binary(Bytes::from(reply))).await.is_err() {
                    break;
                }
            }
            // Keep reading: tungstenite answers the close handshake, then the stream ends.
            Message::Close(_) => {}
            _ => {}
        }
    }
}

async fn start_api(pod: &str) -> (kube::Client, Arc<Api>) {
    let api = Arc::new(Api::default());
    *api.pod.lock().unwrap() = pod.to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::clone(&api);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(Arc::clone(&state), req));
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await
                    .ok();
            });
        }
    });
    kubestrap::kube::install_crypto_provider();
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (kube::Client::try_from(config).unwrap(), api)
}

/// Sends `payload` and reads until `expect_len` bytes arrived or the connection closed. The
/// client does not half-close first, like an HTTP client waiting for its response.
async fn round_trip(addr: std::net::SocketAddr, payload: &str, expect_len: usize) -> String {
    let mut conn = tokio::time::timeout(LIMIT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connected in time")
        .unwrap();
    conn.write_all(payload.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.len() < expect_len {
        let n = tokio::time::timeout(LIMIT, conn.read(&mut buf))
            .await
            .expect("answered in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

async fn echo(addr: std::net::SocketAddr, pod: &str, payload: &str) -> String {
    round_trip(addr, payload, pod.len() + 1 + payload.len()).await
}

#[tokio::test]
async fn bytes_flow_through_the_service_and_new_connections_follow_a_restarted_pod() {
    let (client, api) = start_api("vault-0").await;
    let pf = tokio::time::timeout(
        LIMIT,
        portforward::to_service(&client, "vault", "vault", 8200),
    )
    .await
    .expect("resolved in time")
    .unwrap();
    assert_eq!(
        echo(pf.local_addr(), "vault-0", "ping").await,
        "vault-0:ping"
    );

    // Two connections at once get two tunnels.
    let (a, b) = tokio::join!(
        echo(pf.local_addr(), "vault-0", "a"),
        echo(pf.local_addr(), "vault-0", "b")
    );
    assert_eq!((a.as_str(), b.as_str()), ("vault-0:a", "vault-0:b"));

    // Vault's pod is replaced: the next connection is forwarded to the new pod.
    *api.pod.lock().unwrap() = "vault-1".to_owned();
    assert_eq!(
        echo(pf.local_addr(), "vault-1", "after restart").await,
        "vault-1:after restart"
    );
    assert_eq!(
        *api.forwards.lock().unwrap(),
        ["vault-0", "vault-0", "vault-0", "vault-1"]
    );
    assert!(pf.last_error().is_none(), "{:?}", pf.last_error());
}

#[tokio::test]
async fn an_error_reported_by_the_pod_is_surfaced() {
    let (client, _api) = start_api("broken").await;
    let pf = portforward::to_pod(&client, "vault", "broken", 8200)
        .await
        .unwrap();
    // The pod fails the connection: the local client sees it closed, not a hang.
    assert_eq!(round_trip(pf.local_addr(), "hello", 1).await, "");
    // The failure is recorded right after the tunnel task ends; wait for it (bounded).
    let mut error = None;
    for _ in 0..200 {
        error = pf.last_error();
        if error.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let error = error.expect("the pod's error is recorded");
    assert_eq!(
        error,
        "pod vault/broken:8200 reported: connection refused by the pod"
    );
}
