//! The kubelet side of `portforward.k8s.io` over SPDY/3.1, which `kubectl port-forward`
//! speaks: tunnelled in a WebSocket (`SPDY/3.1+portforward.k8s.io`, kubectl ≥ 1.31) or, as
//! its fallback, over a plain HTTP upgrade to `SPDY/3.1`.
//!
//! kubectl opens, per forwarded connection, an `error` stream and a `data` stream sharing
//! a `requestID` and naming the `port`. Bytes on the data stream go to the pod backend and
//! back; the error stream carries a message if the port cannot be reached. Both streams are
//! finished (FIN) when the pod side closes, which is what kubectl waits for.

pub mod frame;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use frame::{FLAG_FIN, Frame, HeaderDeflater, HeaderInflater, kind};

use super::portforward::PodBackend;

/// An outgoing frame request, encoded by the writer task (which owns header compression).
enum Out {
    Reply(u32),
    Data(u32, Vec<u8>, bool),
    Ping(Vec<u8>),
    Reset(u32, u32),
}

#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: Option<u16>,
    started: bool,
}

/// Runs a port-forward session over `io` until either side ends it.
pub async fn serve<S>(io: S, backend: Option<Arc<dyn PodBackend>>, namespace: String, pod: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(256);
    let writer = tokio::spawn(async move {
        let mut deflater = HeaderDeflater::default();
        while let Some(o) = out_rx.recv().await {
            let bytes = match o {
                Out::Reply(id) => {
                    let mut p = (id & 0x7fff_ffff).to_be_bytes().to_vec();
                    p.extend(deflater.block(&[]));
                    frame::control(kind::SYN_REPLY, 0, &p)
                }
                Out::Data(id, d, fin) => frame::data(id, if fin { FLAG_FIN } else { 0 }, &d),
                Out::Ping(p) => frame::control(kind::PING, 0, &p),
                Out::Reset(id, status) => {
                    let mut p = id.to_be_bytes().to_vec();
                    p.extend_from_slice(&status.to_be_bytes());
                    frame::control(kind::RST_STREAM, 0, &p)
                }
            };
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });

    let mut inflater = HeaderInflater::default();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 32 * 1024];
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut to_backend: HashMap<u32, mpsc::Sender<Option<Vec<u8>>>> = HashMap::new();
    'session: loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let f = match frame::parse(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "ending port-forward session");
                    break 'session;
                }
            };
            match f {
                Frame::Control {
                    kind: kind::SYN_STREAM,
                    payload,
                    ..
                } => {
                    if payload.len() < 10 {
                        break 'session;
                    }
                    let id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                        & 0x7fff_ffff;
                    let headers = match inflater.headers(&payload[10..]) {
                        Ok(h) => h,
                        Err(e) => {
                            tracing::debug!(error = %e, "bad SPDY headers");
                            break 'session;
                        }
                    };
                    let get =
                        |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                    let request = get("requestid").unwrap_or_else(|| id.to_string());
                    let entry = pairs.entry(request.clone()).or_default();
                    if let Some(p) = get("port").and_then(|p| p.parse().ok()) {
                        entry.port = Some(p);
                    }
                    match get("streamtype").as_deref() {
                        Some("error") => entry.error = Some(id),
                        Some("data") => entry.data = Some(id),
                        _ => {
                            let _ = out_tx.send(Out::Reset(id, 1)).await;
                            continue;
                        }
                    }
                    if out_tx.send(Out::Reply(id)).await.is_err() {
                        break 'session;
                    }
                    if let (Some(err_id), Some(data_id), false) =
                        (entry.error, entry.data, entry.started)
                    {
                        entry.started = true;
                        let (tx, rx) = mpsc::channel(64);
                        to_backend.insert(data_id, tx);
                        tokio::spawn(forward(
                            backend.clone(),
                            namespace.clone(),
                            pod.clone(),
                            entry.port,
                            err_id,
                            data_id,
                            rx,
                            out_tx.clone(),
                        ));
                    }
                }
                Frame::Control {
                    kind: kind::PING,
                    payload,
                    ..
                } => {
                    let _ = out_tx.send(Out::Ping(payload)).await;
                }
                Frame::Control {
                    kind: kind::RST_STREAM,
                    payload,
                    ..
                } => {
                    if payload.len() >= 4 {
                        let id =
                            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                                & 0x7fff_ffff;
                        if let Some(tx) = to_backend.remove(&id) {
                            let _ = tx.send(None).await;
                        }
                    }
                }
                Frame::Control {
                    kind: kind::GOAWAY, ..
                } => break 'session,
                // No flow control is enforced (spdystream does not either).
                Frame::Control {
                    kind: kind::SETTINGS | kind::WINDOW_UPDATE,
                    ..
                } => {}
                Frame::Control { .. } => {}
                Frame::Data {
                    stream,
                    flags,
                    data,
                } => {
                    if let Some(tx) = to_backend.get(&stream) {
                        if !data.is_empty() && tx.send(Some(data)).await.is_err() {
                            to_backend.remove(&stream);
                        }
                        if flags & FLAG_FIN != 0
                            && let Some(tx) = to_backend.remove(&stream)
                        {
                            let _ = tx.send(None).await;
                        }
                    }
                }
            }
        }
    }
    for (_, tx) in to_backend.drain() {
        let _ = tx.send(None).await;
    }
    drop(out_tx);
    let _ = writer.await;
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the session's pieces"
)]
async fn forward(
    backend: Option<Arc<dyn PodBackend>>,
    namespace: String,
    pod: String,
    port: Option<u16>,
    err_id: u32,
    data_id: u32,
    mut from_client: mpsc::Receiver<Option<Vec<u8>>>,
    out: mpsc::Sender<Out>,
) {
    let conn = match (&backend, port) {
        (Some(b), Some(p)) => b.connect(&namespace, &pod, p).await,
        _ => None,
    };
    let Some(stream) = conn else {
        let msg = format!(
            "error forwarding port {} to pod {pod}: failed to connect to localhost:{}: connection refused",
            port.unwrap_or(0),
            port.unwrap_or(0)
        );
        let _ = out.send(Out::Data(err_id, msg.into_bytes(), true)).await;
        let _ = out.send(Out::Data(data_id, Vec::new(), true)).await;
        return;
    };
    let (mut prd, mut pwr) = tokio::io::split(stream);
    let up = tokio::spawn(async move {
        while let Some(Some(bytes)) = from_client.recv().await {
            if pwr.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = pwr.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match prd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out
                    .send(Out::Data(data_id, buf[..n].to_vec(), false))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    let _ = out.send(Out::Data(data_id, Vec::new(), true)).await;
    let _ = out.send(Out::Data(err_id, Vec::new(), true)).await;
    up.abort();
}
