//! The cluster network as the Vault pod's process sees it, for the one destination it needs:
//! the Kubernetes API under the in-cluster names (`https://kubernetes.default.svc`, the name
//! kubestrap configures as `kubernetes_host`).
//!
//! The server runs on the host, where that name does not resolve. So the sandbox runs an HTTP
//! `CONNECT` proxy on loopback and starts the server with `HTTPS_PROXY` pointing at it; Go's
//! HTTP client (and so Vault's kubernetes auth) tunnels every `https://` request through it.
//! The proxy opens tunnels to the API server's names only, mapping them to the sandbox's
//! listener; TLS stays end to end, so the server checks the API certificate (whose SANs carry
//! the in-cluster names) against the CA it was configured with, exactly as in a pod. Any other
//! host fails like an unknown name in cluster DNS.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Names (with port 443) under which a pod reaches the API server: the Service's DNS names
/// and its ClusterIP in k3s's default service CIDR.
const API_NAMES: &[&str] = &[
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "kubernetes.default",
    "kubernetes",
    "10.43.0.1",
];

/// The largest request head a client may send before its tunnel is refused.
const MAX_HEAD: usize = 8 * 1024;

/// Where a `CONNECT host:port` is tunnelled to, or `None` when the name is unknown.
fn destination(authority: &str, api_port: u16) -> Option<u16> {
    let (host, port) = authority.rsplit_once(':')?;
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (port == "443" && API_NAMES.contains(&host.as_str())).then_some(api_port)
}

/// Reads the request head (up to the blank line).
async fn read_head(tcp: &mut TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    // Byte by byte: nothing after the head may be consumed (the TLS handshake follows it).
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD || tcp.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

async fn reply(tcp: &mut TcpStream, status: &str, body: &str) {
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.write_all(msg.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

async fn tunnel(mut client: TcpStream, api_port: u16) {
    let head = match tokio::time::timeout(Duration::from_secs(10), read_head(&mut client)).await {
        Ok(Some(head)) => head,
        _ => return,
    };
    let mut parts = head.split_whitespace();
    let (method, authority) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "CONNECT" {
        reply(
            &mut client,
            "405 Method Not Allowed",
            "this proxy only opens CONNECT tunnels to the Kubernetes API\n",
        )
        .await;
        return;
    }
    let Some(port) = destination(authority, api_port) else {
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        tracing::debug!(%authority, "vault server proxy: unknown destination");
        reply(
            &mut client,
            "502 Bad Gateway",
            &format!("dial tcp: lookup {host}: no such host\n"),
        )
        .await;
        return;
    };
    let mut upstream = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(s) => s,
        Err(e) => {
            reply(&mut client, "502 Bad Gateway", &format!("{e}\n")).await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Binds the proxy on a free loopback port; [`serve`] runs it.
///
/// # Errors
/// No port could be bound.
pub async fn bind() -> std::io::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", 0)).await
}

/// Serves tunnels to the API server on `api_port` until `shutdown`.
pub async fn serve(listener: TcpListener, api_port: u16, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = tunnel(tcp, api_port) => {}
                        () = shutdown.cancelled() => {}
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "vault server proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_api_names_on_443_are_tunnelled() {
        assert_eq!(destination("kubernetes.default.svc:443", 6443), Some(6443));
        assert_eq!(
            destination("kubernetes.default.svc.cluster.local.:443", 6443),
            Some(6443)
        );
        assert_eq!(destination("10.43.0.1:443", 6443), Some(6443));
        assert_eq!(destination("kubernetes.default.svc:6443", 6443), None);
        assert_eq!(destination("example.com:443", 6443), None);
        assert_eq!(destination("kubernetes.default.svc", 6443), None);
    }

    #[tokio::test]
    async fn connect_tunnels_bytes_and_refuses_other_hosts() {
        let upstream = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let api_port = upstream.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.expect("accept");
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.expect("read");
            s.write_all(&buf).await.expect("echo");
        });
        let listener = bind().await.expect("proxy");
        let proxy = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, api_port, stop.clone()));

        let mut c = TcpStream::connect(proxy).await.expect("connect");
        c.write_all(b"CONNECT kubernetes.default.svc:443 HTTP/1.1\r\nHost: kubernetes.default.svc:443\r\n\r\nhello")
            .await
            .expect("write");
        let mut got = [0u8; 64];
        let mut n = 0;
        while !got[..n].ends_with(b"hello") {
            let r = c.read(&mut got[n..]).await.expect("read");
            assert!(
                r > 0,
                "closed early: {:?}",
                String::from_utf8_lossy(&got[..n])
            );
            n += r;
        }
        assert!(got.starts_with(b"HTTP/1.1 200 Connection established\r\n\r\n"));

        let mut c = TcpStream::connect(proxy).await.expect("connect");
        c.write_all(b"CONNECT github.com:443 HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut s = String::new();
        c.read_to_string(&mut s).await.expect("read");
        assert!(s.starts_with("HTTP/1.1 502 Bad Gateway"), "{s}");
        assert!(
            s.ends_with("dial tcp: lookup github.com: no such host\n"),
            "{s}"
        );
        stop.cancel();
    }
}
