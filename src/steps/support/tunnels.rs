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

use tokio::sync::{Mutex, OnceCell};

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
///
/// Each key has its own once-cell: the map's lock is held only to find or add the cell, so two
/// steps opening tunnels to different Services open them at the same time, while two steps
/// asking for the same one share a single forward (the second waits for the first's opening).
/// An opening that fails leaves the cell empty, and the next request tries again.
#[derive(Debug, Default)]
pub(crate) struct Tunnels {
    open: Mutex<HashMap<TunnelKey, Arc<OnceCell<Arc<Tunnel>>>>>,
}

/// Namespace, Service and port of a tunnel.
type TunnelKey = (String, String, u16);

impl Tunnels {
    /// The tunnel to `to`, opened on first use (when the Service must have a running pod).
    pub(crate) async fn get(
        &self,
        client: &::kube::Client,
        to: &ServicePort<'_>,
    ) -> Result<Arc<Tunnel>, TunnelError> {
        let key = (to.namespace.to_owned(), to.service.to_owned(), to.port);
        let cell = Arc::clone(self.open.lock().await.entry(key).or_default());
        cell.get_or_try_init(|| open(client, to))
            .await
            .map(Arc::clone)
    }

    /// Closes every tunnel (the run ends).
    pub(crate) async fn close(&self) {
        self.open.lock().await.clear();
    }
}

/// Opens a forward to `to` and the HTTP pool that goes through it.
async fn open(client: &::kube::Client, to: &ServicePort<'_>) -> Result<Arc<Tunnel>, TunnelError> {
    let forward = portforward::to_service(client, to.namespace, to.service, to.port).await?;
    crate::kube::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(to.request_timeout)
        .build()
        .map_err(TunnelError::Http)?;
    Ok(Arc::new(Tunnel { forward, http }))
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

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex as StdMutex};
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::kube::mock::{self, Reply};

    /// Whether each Service has been asked for, so one Service's answer can wait for the other.
    #[derive(Default)]
    struct Seen {
        services: StdMutex<Vec<String>>,
        changed: Condvar,
    }

    impl Seen {
        fn saw(&self, service: &str) {
            self.services.lock().unwrap().push(service.to_owned());
            self.changed.notify_all();
        }

        /// Until `service` was asked for, at most `limit`.
        fn wait_for(&self, service: &str, limit: Duration) -> bool {
            let seen = self.services.lock().unwrap();
            let (seen, _) = self
                .changed
                .wait_timeout_while(seen, limit, |s| !s.iter().any(|x| x == service))
                .unwrap();
            seen.iter().any(|x| x == service)
        }

        fn count(&self, service: &str) -> usize {
            let seen = self.services.lock().unwrap();
            seen.iter().filter(|x| *x == service).count()
        }
    }

    /// A cluster with Services `a` and `b` in namespace `ns`, each backed by a running pod.
    /// Service `a`'s lookup answers only once `b`'s lookup has arrived (or fails after 10 s).
    fn cluster(seen: Arc<Seen>) -> ::kube::Client {
        mock::client(move |_method, path, _query, _body| {
            if let Some(name) = path.strip_prefix("/api/v1/namespaces/ns/services/") {
                seen.saw(name);
                if name == "a" && !seen.wait_for("b", Duration::from_secs(10)) {
                    return mock::status(504, "Timeout", "b was never looked up");
                }
                return Reply::Json(
                    200,
                    json!({"apiVersion":"v1","kind":"Service","metadata":{"name":name,"namespace":"ns"},
                           "spec":{"selector":{"app":name},"ports":[{"port":8200}]}}),
                );
            }
            if path == "/api/v1/namespaces/ns/pods" {
                return Reply::Json(
                    200,
                    json!({"apiVersion":"v1","kind":"PodList","metadata":{},"items":[
                        {"metadata":{"name":"p","namespace":"ns"},
                         "status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}]}),
                );
            }
            mock::status(404, "NotFound", path)
        })
        .0
    }

    fn port(service: &str) -> ServicePort<'_> {
        ServicePort {
            namespace: "ns",
            service,
            port: 8200,
            request_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opening_one_tunnel_does_not_hold_up_the_opening_of_another() {
        let seen = Arc::new(Seen::default());
        let client = cluster(Arc::clone(&seen));
        let tunnels = Tunnels::default();
        let (to_a, to_b) = (port("a"), port("b"));
        let (a, b) = tokio::join!(tunnels.get(&client, &to_a), tunnels.get(&client, &to_b));
        a.expect("tunnel to a: its opening waited for b's, which waited for the map's lock");
        b.expect("tunnel to b");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_same_service_shares_one_tunnel() {
        let seen = Arc::new(Seen::default());
        seen.saw("b");
        let client = cluster(Arc::clone(&seen));
        let tunnels = Tunnels::default();
        let to_a = port("a");
        let (first, second) =
            tokio::join!(tunnels.get(&client, &to_a), tunnels.get(&client, &to_a));
        let (first, second) = (first.unwrap(), second.unwrap());
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.http_url(), second.http_url());
        assert_eq!(seen.count("a"), 1, "one lookup, one forward");
    }
}
