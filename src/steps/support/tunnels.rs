//! Port-forwards that serve a whole run. Opening a forward costs two API reads (the Service and
//! its pods) and a listener; a poll every 200 ms that opened its own forward spent more time
//! reaching Vault than asking it. So the first step that needs a Service's port opens one
//! [`Tunnel`], and every later step reuses it together with its HTTP connection pool.
//!
//! The forward resolves the Service's pod again for each new connection, so a restarted pod is
//! picked up without a new tunnel; a pooled connection to the old pod is closed by the API
//! server when that pod goes, and the pool does not reuse closed connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::kube::PortForward;
use crate::kube::portforward::{self, PortForwardError};

/// One Service port forwarded to 127.0.0.1, with a connection pool for HTTP through it.
#[derive(Debug)]
pub struct Tunnel {
    forward: PortForward,
    http: reqwest::Client,
}

impl Tunnel {
    /// `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn http_url(&self) -> String {
        self.forward.http_url()
    }

    /// The HTTP client whose pool keeps connections through this tunnel alive across steps.
    #[must_use]
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The last tunnel failure, for messages when a request through the tunnel failed.
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.forward.last_error()
    }
}

/// A Service's port, and how long one request through a tunnel to it may take.
#[derive(Debug, Clone, Copy)]
pub struct ServicePort<'a> {
    /// The Service's namespace.
    pub namespace: &'a str,
    /// The Service.
    pub service: &'a str,
    /// Its port (`spec.ports[].port`).
    pub port: u16,
    /// Time limit of one HTTP request through the tunnel.
    pub request_timeout: Duration,
}

/// The run's open tunnels, by namespace, Service and port.
#[derive(Debug, Default)]
pub(crate) struct Tunnels {
    open: Mutex<HashMap<(String, String, u16), Arc<Tunnel>>>,
}

impl Tunnels {
    /// The tunnel to `to`, opened on first use (when the Service must have a running pod).
    pub(crate) async fn get(
        &self,
        client: &::kube::Client,
        to: &ServicePort<'_>,
    ) -> Result<Arc<Tunnel>, TunnelError> {
        let key = (to.namespace.to_owned(), to.service.to_owned(), to.port);
        let mut open = self.open.lock().await;
        if let Some(tunnel) = open.get(&key) {
            return Ok(Arc::clone(tunnel));
        }
        let forward = portforward::to_service(client, to.namespace, to.service, to.port).await?;
        crate::kube::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(to.request_timeout)
            .build()
            .map_err(TunnelError::Http)?;
        let tunnel = Arc::new(Tunnel { forward, http });
        open.insert(key, Arc::clone(&tunnel));
        Ok(tunnel)
    }

    /// Closes every tunnel (the run ends).
    pub(crate) async fn close(&self) {
        self.open.lock().await.clear();
    }
}

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The forward could not start (no such Service, no running pod, ...).
    #[error(transparent)]
    Forward(#[from] PortForwardError),
    /// The HTTP client could not be built.
    #[error("build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}
