//! Saying where: the API server, context and kubeconfig a client talks to, and what a failure
//! to reach it comes down to.
//!
//! kube-rs reports an unreachable server as `ServiceError: client error (Connect)`, its source
//! chain repeating that before the one useful line (`tcp connect error: Connection refused`),
//! and never names the server. A user with several kubeconfigs needs the URL and the context to
//! see which cluster was meant, and the cause once.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The cluster a client was built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The API server URL.
    pub server: String,
    /// The kubeconfig context it came from.
    pub context: String,
    /// The kubeconfig file, when one was named (else KUBECONFIG or `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the Kubernetes API at {} (context {:?} of {})",
            self.server,
            self.context,
            self.kubeconfig.as_ref().map_or_else(
                || "KUBECONFIG or ~/.kube/config".to_owned(),
                |p| p.display().to_string()
            )
        )
    }
}

/// When `err` means the server was not reached at all (connect, DNS, TLS, timeout), the cause
/// in one line, without kube's and hyper's wrappers; `None` for an answer from the API.
#[must_use]
pub fn unreachable_cause(err: &::kube::Error) -> Option<String> {
    match err {
        ::kube::Error::Service(_) | ::kube::Error::HyperError(_) => Some(root_cause(err)),
        _ => None,
    }
}

/// The last two links of an error's source chain (`tcp connect error: Connection refused`),
/// or the error itself when it has no source.
#[must_use]
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        chain.push(e.to_string());
        source = e.source();
    }
    let tail = chain.len().saturating_sub(2);
    let mut kept: Vec<String> = chain.split_off(tail);
    // `a: b` followed by `b`: keep one.
    if kept.len() == 2 && kept[0].ends_with(&kept[1]) {
        kept.truncate(1);
    }
    kept.join(": ")
}

/// Asks the API server for `/version` within `limit`: the cheapest request that proves it
/// answers (no object, no permission beyond discovery).
///
/// # Errors
/// The cause in one line (see [`unreachable_cause`]), or the API's answer.
pub async fn probe(client: &::kube::Client, limit: Duration) -> Result<(), String> {
    match tokio::time::timeout(limit, client.apiserver_version()).await {
        Err(_) => Err(format!("no answer within {}s", limit.as_secs())),
        Ok(Err(e)) => Err(unreachable_cause(&e).unwrap_or_else(|| e.to_string())),
        Ok(Ok(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_names_the_cause_once() {
        // A port nobody listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = ::kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
        let client = ::kube::Client::try_from(config).unwrap();
        let err = probe(&client, Duration::from_secs(10)).await.unwrap_err();
        assert!(err.contains("Connection refused"), "{err}");
        assert!(!err.contains("ServiceError"), "{err}");
        assert_eq!(err.matches("client error").count(), 0, "{err}");
    }

    #[test]
    fn the_endpoint_names_server_context_and_file() {
        let e = Endpoint {
            server: "https://10.0.0.1:6443/".into(),
            context: "prod".into(),
            kubeconfig: Some("/home/u/.kube/prod".into()),
        };
        assert_eq!(
            e.to_string(),
            "the Kubernetes API at https://10.0.0.1:6443/ (context \"prod\" of /home/u/.kube/prod)"
        );
    }
}
