//! The hyper glue: HTTP/1.1 on a byte stream, request decoding, and rendering replies and
//! errors as Vault does (JSON bodies, 204 without body, HEAD without body).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderMap};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::VaultServer;
use super::envelope::{error_body, injects_data};
use super::error::ApiError;
use super::request::ApiRequest;
use super::router;

/// Vault's default maximum request size (32 MiB).
const MAX_BODY: usize = 32 << 20;

/// Serves HTTP/1.1 on `io` until the peer closes it.
pub async fn serve_io<IO>(server: Arc<VaultServer>, io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let server = Arc::clone(&server);
        async move { Ok::<_, Infallible>(respond(&server, req).await) }
    });
    if let Err(err) = http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(error = %err, "sandbox vault connection ended with an error");
    }
}

/// Accepts connections until the task is aborted; the connections live in a `JoinSet`
/// owned by the task, so aborting it also ends them.
pub fn serve_tcp(
    server: Arc<VaultServer>,
    listener: tokio::net::TcpListener,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let server = Arc::clone(&server);
                        connections.spawn(async move { serve_io(server, stream).await });
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "sandbox vault cannot accept connections");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}

fn client_token(headers: &HeaderMap) -> Option<String> {
    if let Some(token) = headers.get("x-vault-token").and_then(|v| v.to_str().ok()) {
        return Some(token.trim().to_string());
    }
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
}

async fn respond(server: &VaultServer, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let head = parts.method == Method::HEAD;
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return render(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some(error_body(&ApiError::bad(
                    "request body too large or unreadable",
                ))),
                head,
            );
        }
    };
    let decoded = ApiRequest::decode(
        &parts.method,
        parts.uri.path(),
        parts.uri.query(),
        client_token(&parts.headers),
        &bytes,
    );
    let result = match &decoded {
        // Answering unwrapped would hand the secret to a caller that asked not to get it.
        Ok(_) if parts.headers.contains_key("x-vault-wrap-ttl") => {
            Err(ApiError::NotImplemented("response wrapping".into()))
        }
        Ok(api) => router::handle(server, api).await,
        Err(err) => Err(err.clone()),
    };
    server.publish();
    match result {
        Ok((reply, mount_type)) => {
            let inject = decoded.as_ref().is_ok_and(|r| injects_data(&r.path));
            let (status, body) = reply.render(mount_type, inject);
            render(status, body, head)
        }
        Err(err) => {
            if err.status().is_server_error() && err != ApiError::Sealed {
                tracing::warn!(error = %err, path = parts.uri.path(), "sandbox vault request failed");
            }
            render(err.status(), Some(error_body(&err)), head)
        }
    }
}

fn render(
    status: StatusCode,
    body: Option<serde_json::Value>,
    head: bool,
) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .status(status)
        .header(CACHE_CONTROL, "no-store");
    let bytes = match body {
        Some(value) => {
            response = response.header(CONTENT_TYPE, "application/json");
            let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
            bytes.push(b'\n');
            bytes
        }
        None => Vec::new(),
    };
    let bytes = if head { Vec::new() } else { bytes };
    response
        .body(Full::new(Bytes::from(bytes)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
