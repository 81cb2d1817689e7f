//! Pod port-forward over WebSocket (`v4.channel.k8s.io`), as kube-rs `Api::<Pod>::portforward`
//! speaks it, and the pluggable pod backends that decide what a pod serves and whether it
//! is ready (the lead plugs the sandbox Vault onto `vault/vault-0:8200`).

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::http::{self, Body, Query};
use super::server::Shared;
use super::spdy;
use super::status::ApiError;
use super::store::ObjectKey;

/// A bidirectional byte stream to a pod's port.
pub trait PodIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PodIo for T {}

/// A boxed pod stream.
pub type PodStream = Box<dyn PodIo>;

/// What runs "inside" a pod: the target of port-forwards, the readiness probe, and the
/// reaction to the pod being deleted (a restart).
#[async_trait]
pub trait PodBackend: Send + Sync + 'static {
    /// Opens a connection to `port`; `None` when nothing listens there.
    async fn connect(&self, namespace: &str, pod: &str, port: u16) -> Option<PodStream>;

    /// The readiness probe: `Some(false)` keeps a running pod NotReady; `None` = no opinion.
    fn ready(&self, _namespace: &str, _pod: &str) -> Option<bool> {
        None
    }

    /// Called when the pod object is deleted (its process "dies"; e.g. Vault reseals).
    ///
    /// # Caveats
    /// Runs inside the store's critical section, so a replacement pod cannot be probed
    /// first: it must be quick and must not call back into the sandbox's store or API
    /// (that would deadlock). Flip a flag or send on a channel.
    fn pod_deleted(&self, _namespace: &str, _pod: &str) {}

    /// Called by the kubelet each time it looks at the running pod `pod` (its volumes are
    /// mounted): the backend may set up its process for this pod (e.g. read its mounted
    /// configuration once per pod uid). Synchronous and quick, like [`Self::pod_deleted`].
    fn pod_running(&self, _shared: &crate::server::Shared, _pod: &serde_json::Value) {}
}

/// Namespace, pod-name prefix, backend.
type BackendEntry = (String, String, Arc<dyn PodBackend>);

/// Registered backends, matched by namespace and pod-name prefix. Cheap to clone.
#[derive(Clone, Default)]
pub struct Backends {
    inner: Arc<RwLock<Vec<BackendEntry>>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        f.debug_list()
            .entries(g.iter().map(|(n, p, _)| format!("{n}/{p}*")))
            .finish()
    }
}

impl Backends {
    /// Serves pods in `namespace` whose name starts with `pod_prefix` (e.g. `vault`, `vault-0`).
    pub fn register(&self, namespace: &str, pod_prefix: &str, backend: Arc<dyn PodBackend>) {
        self.inner.write().unwrap_or_else(|p| p.into_inner()).push((
            namespace.into(),
            pod_prefix.into(),
            backend,
        ));
    }

    /// The backend of a pod, if any.
    pub fn find(&self, namespace: &str, pod: &str) -> Option<Arc<dyn PodBackend>> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(n, p, _)| n == namespace && pod.starts_with(p.as_str()))
            .max_by_key(|(_, p, _)| p.len())
            .map(|(_, _, b)| b.clone())
    }
}

const PROTOCOL: &str = "v4.channel.k8s.io";
/// kubectl ≥ 1.31 tunnels SPDY through a WebSocket with this subprotocol.
const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// How the client speaks port-forward.
enum Mode {
    /// WebSocket channels (kube-rs), with the client's key.
    Channels(String),
    /// SPDY inside WebSocket binary messages (kubectl), with the client's key.
    Tunnel(String),
    /// SPDY directly on the upgraded connection (kubectl's fallback).
    Spdy,
}

/// Carries a byte stream inside WebSocket binary messages, both ways.
async fn tunnel<S>(ws: WebSocketStream<S>, io: tokio::io::DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let (mut rd, mut wr) = tokio::io::split(io);
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    let up = async {
        while let Some(Ok(m)) = source.next().await {
            match m {
                Message::Binary(b) if wr.write_all(&b).await.is_err() => {
                    break;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::join!(down, up);
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Handles `pods/<name>/portforward`: validates, answers 101 and runs the session.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    ns: &str,
    pod: &str,
    q: &Query,
) -> Response<Body> {
    let Some(obj) = shared.cluster.store.get(&ObjectKey::new("/pods", ns, pod)) else {
        return http::error(&ApiError::not_found("pods", pod));
    };
    if obj["status"]["phase"] != "Running" {
        return http::error(&ApiError::bad_request(format!(
            "unable to upgrade connection: pod {pod} is not running (phase {}); wait for it to be Running",
            obj["status"]["phase"].as_str().unwrap_or("Unknown")
        )));
    }
    let backend = shared.backends.find(ns, pod);
    let (ns, pod) = (ns.to_string(), pod.to_string());
    let shutdown = shared.shutdown.clone();
    let upgrade = header(&req, "upgrade").unwrap_or("").to_ascii_lowercase();
    let offered: Vec<String> = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_string()))
        .collect();
    let ws_key = header(&req, "sec-websocket-key").map(str::to_string);
    let mode = match (upgrade.as_str(), ws_key) {
        ("websocket", Some(key)) if offered.iter().any(|p| p == PROTOCOL) => Mode::Channels(key),
        ("websocket", Some(key)) if offered.iter().any(|p| p == SPDY_TUNNEL) => Mode::Tunnel(key),
        ("spdy/3.1", _) => Mode::Spdy,
        _ => {
            return http::error(&ApiError::bad_request(format!(
                "unable to upgrade connection: offer a WebSocket with subprotocol {PROTOCOL} or {SPDY_TUNNEL}, or an SPDY/3.1 upgrade (offered {offered:?})"
            )));
        }
    };
    let ports = if matches!(mode, Mode::Channels(_)) {
        match q
            .get("ports")
            .unwrap_or("")
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| p.trim().parse::<u16>())
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(p) if !p.is_empty() => p,
            _ => {
                return http::error(&ApiError::bad_request(
                    "query parameter \"ports\" is required and must list port numbers",
                ));
            }
        }
    } else {
        Vec::new()
    };
    let response = match &mode {
        Mode::Channels(key) | Mode::Tunnel(key) => Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
            .header(
                "sec-websocket-protocol",
                if matches!(mode, Mode::Channels(_)) {
                    PROTOCOL
                } else {
                    SPDY_TUNNEL
                },
            ),
        Mode::Spdy => Response::builder()
            .status(101)
            .header("upgrade", "SPDY/3.1")
            .header("connection", "Upgrade")
            .header("x-stream-protocol-version", "portforward.k8s.io"),
    };
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "port-forward upgrade failed");
                return;
            }
        };
        let work = async move {
            match mode {
                Mode::Channels(_) => {
                    let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
                    session(ws, backend, ns, pod, ports).await;
                }
                Mode::Tunnel(_) => {
                    let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
                    let (near, far) = tokio::io::duplex(256 * 1024);
                    tokio::join!(tunnel(ws, far), spdy::serve(near, backend, ns, pod));
                }
                Mode::Spdy => spdy::serve(upgraded, backend, ns, pod).await,
            }
        };
        tokio::select! {
            () = work => {}
            () = shutdown.cancelled() => {}
        }
    });
    response
        .body(http::full(""))
        .unwrap_or_else(|_| http::error(&ApiError::internal("cannot build the upgrade response")))
}

async fn session<S>(
    ws: WebSocketStream<S>,
    backend: Option<Arc<dyn PodBackend>>,
    ns: String,
    pod: String,
    ports: Vec<u16>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    // Init frames: [channel, port lo, port hi] on the data and error channel of each port.
    for (i, port) in ports.iter().enumerate() {
        let [lo, hi] = port.to_le_bytes();
        for ch in [2 * i as u8, 2 * i as u8 + 1] {
            if sink
                .send(Message::Binary(vec![ch, lo, hi].into()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let mut writers: Vec<Option<tokio::io::WriteHalf<PodStream>>> = Vec::new();
    let mut readers_left = 0usize;
    for (i, port) in ports.iter().enumerate() {
        let conn = match &backend {
            Some(b) => b.connect(&ns, &pod, *port).await,
            None => None,
        };
        match conn {
            Some(stream) => {
                let (mut rd, wr) = tokio::io::split(stream);
                writers.push(Some(wr));
                readers_left += 1;
                let tx = out_tx.clone();
                let ch = 2 * i as u8;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match rd.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let mut frame = Vec::with_capacity(n + 1);
                                frame.push(ch);
                                frame.extend_from_slice(&buf[..n]);
                                if tx.send(Message::Binary(frame.into())).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    // An empty marker tells the writer loop this reader is done.
                    let _ = tx.send(Message::Binary(vec![ch].into())).await;
                });
            }
            None => {
                writers.push(None);
                let mut msg = vec![2 * i as u8 + 1];
                msg.extend_from_slice(
                    format!("error forwarding port {port} to pod {pod}: failed to connect to localhost:{port}: connection refused").as_bytes(),
                );
                let _ = out_tx.send(Message::Binary(msg.into())).await;
            }
        }
    }
    if readers_left == 0 {
        // Nothing to forward: deliver the errors, then close.
        drop(out_tx);
        while let Some(m) = out_rx.recv().await {
            let _ = sink.send(m).await;
        }
        let _ = sink.send(Message::Close(None)).await;
        let _ = sink.close().await;
        return;
    }
    drop(out_tx);
    loop {
        tokio::select! {
            m = out_rx.recv() => match m {
                Some(Message::Binary(b)) if b.len() == 1 => {
                    readers_left -= 1;
                    if readers_left == 0 {
                        let _ = sink.send(Message::Close(None)).await;
                        break;
                    }
                }
                Some(m) => {
                    if sink.send(m).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            m = source.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    if b.len() <= 1 {
                        continue;
                    }
                    let ch = b[0] as usize;
                    if ch.is_multiple_of(2)
                        && let Some(Some(w)) = writers.get_mut(ch / 2)
                            && w.write_all(&b[1..]).await.is_err() {
                                writers[ch / 2] = None;
                            }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    }
    for w in writers.iter_mut().flatten() {
        let _ = w.shutdown().await;
    }
    // Completes the close handshake (tungstenite queued the reply) and sends TLS close_notify.
    let _ = sink.close().await;
}
