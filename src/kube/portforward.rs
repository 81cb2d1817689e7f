//! Port-forwarding from a local TCP port to a pod, like `kubectl port-forward`.
//!
//! Vault is reached this way during the bootstrap (vaultrs and Terraform talk to
//! `http://127.0.0.1:<port>`). The listener binds 127.0.0.1:0, and each accepted connection opens
//! its own kube-rs port-forward (a WebSocket to `pods/<pod>/portforward`). For a Service the pod
//! is resolved client side, as kubectl does, from the Service's selector to a Running pod, and
//! re-resolved for every new connection, so a restarted Vault pod is picked up by the next
//! request. A broken tunnel is recorded ([`PortForward::last_error`]) and logged; the listener
//! keeps serving. Dropping the handle stops the listener and every open tunnel.
//!
//! # Caveats
//! kube-rs ends the pod-to-client direction as soon as the local client half-closes its
//! connection (shutdown of writing), so a client must read its response before closing. HTTP
//! clients (vaultrs, reqwest, Terraform's Vault provider, curl) do.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ::kube::api::{Api, ListParams};
use ::kube::{Client, ResourceExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Why a port-forward could not be set up, or a tunnel failed.
#[derive(Debug, thiserror::Error)]
pub enum PortForwardError {
    /// The local listener could not be bound.
    #[error("could not listen on 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
    /// The Service does not exist or the API refused to return it.
    #[error("could not read Service {namespace}/{name}: {source}")]
    Service {
        /// Namespace.
        namespace: String,
        /// Service name.
        name: String,
        /// The API error.
        #[source]
        source: Box<::kube::Error>,
    },
    /// The Service has no selector, so kubectl-style forwarding cannot pick a pod.
    #[error("Service {namespace}/{name} has no selector: forward to a pod instead")]
    NoSelector {
        /// Namespace.
        namespace: String,
        /// Service name.
        name: String,
    },
    /// The Service does not expose the requested port.
    #[error("Service {namespace}/{name} has no port {port}: check the port in the playbook")]
    NoSuchPort {
        /// Namespace.
        namespace: String,
        /// Service name.
        name: String,
        /// Requested port.
        port: u16,
    },
    /// No Running pod matches the Service's selector.
    #[error(
        "no Running pod behind Service {namespace}/{name} (selector {selector}): is the workload up?"
    )]
    NoRunningPod {
        /// Namespace.
        namespace: String,
        /// Service name.
        name: String,
        /// The label selector used.
        selector: String,
    },
    /// Listing pods failed.
    #[error("could not list pods in {namespace}: {source}")]
    ListPods {
        /// Namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: Box<::kube::Error>,
    },
    /// A named targetPort is not declared by the chosen pod's containers.
    #[error("pod {namespace}/{pod} declares no container port named {port_name:?}")]
    NamedPortMissing {
        /// Namespace.
        namespace: String,
        /// Pod name.
        pod: String,
        /// The Service's named targetPort.
        port_name: String,
    },
    /// Opening the tunnel to the pod failed.
    #[error("could not open a port-forward to pod {namespace}/{pod}:{port}: {source}")]
    Tunnel {
        /// Namespace.
        namespace: String,
        /// Pod name.
        pod: String,
        /// Pod port.
        port: u16,
        /// The client error.
        #[source]
        source: Box<::kube::Error>,
    },
}

/// How long a finished tunnel may take to close its WebSocket before it is abandoned.
const JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where new connections go.
#[derive(Debug, Clone)]
enum Target {
    Pod { name: String, port: u16 },
    Service { name: String, port: u16 },
}

/// A running port-forward. Stops (listener and open tunnels) when dropped.
#[derive(Debug)]
pub struct PortForward {
    local_addr: SocketAddr,
    last_error: Arc<Mutex<Option<String>>>,
    _stop: DropGuard,
}

impl PortForward {
    /// The local address to connect to, e.g. `127.0.0.1:39117`.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://127.0.0.1:<port>`, ready for vaultrs or `VAULT_ADDR`.
    #[must_use]
    pub fn http_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The last tunnel failure, if any (a pod went away, the API refused the upgrade, the pod
    /// reported an error on the port's error channel). `None` while every tunnel worked.
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }

    /// Stops the listener and every open tunnel (same as dropping).
    pub fn stop(self) {}
}

/// Forwards a local port to `pod:port` in `namespace`.
///
/// # Errors
/// [`PortForwardError::Bind`] when no local port can be bound.
pub async fn to_pod(
    client: &Client,
    namespace: &str,
    pod: &str,
    port: u16,
) -> Result<PortForward, PortForwardError> {
    start(
        client.clone(),
        namespace.to_owned(),
        Target::Pod {
            name: pod.to_owned(),
            port,
        },
    )
    .await
}

/// Forwards a local port to the Service's `port`, through a Running pod behind it.
///
/// The Service and a pod are resolved once up front, so a missing Service or an empty backend
/// is reported now rather than at the first connection.
///
/// # Errors
/// Any resolution error ([`PortForwardError::Service`], [`PortForwardError::NoRunningPod`], ...)
/// or [`PortForwardError::Bind`].
pub async fn to_service(
    client: &Client,
    namespace: &str,
    service: &str,
    port: u16,
) -> Result<PortForward, PortForwardError> {
    resolve_service(client, namespace, service, port).await?;
    start(
        client.clone(),
        namespace.to_owned(),
        Target::Service {
            name: service.to_owned(),
            port,
        },
    )
    .await
}

async fn start(
    client: Client,
    namespace: String,
    target: Target,
) -> Result<PortForward, PortForwardError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(PortForwardError::Bind)?;
    let local_addr = listener.local_addr().map_err(PortForwardError::Bind)?;
    let stop = CancellationToken::new();
    let last_error = Arc::new(Mutex::new(None));
    tokio::spawn(accept_loop(
        listener,
        client,
        namespace,
        target,
        stop.clone(),
        Arc::clone(&last_error),
    ));
    Ok(PortForward {
        local_addr,
        last_error,
        _stop: stop.drop_guard(),
    })
}

async fn accept_loop(
    listener: TcpListener,
    client: Client,
    namespace: String,
    target: Target,
    stop: CancellationToken,
    last_error: Arc<Mutex<Option<String>>>,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let socket = match accepted {
            Ok((socket, _)) => socket,
            Err(e) => {
                record(&last_error, format!("accept failed: {e}"));
                continue;
            }
        };
        let client = client.clone();
        let namespace = namespace.clone();
        let target = target.clone();
        let stop = stop.child_token();
        let last_error = Arc::clone(&last_error);
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                result = forward_one(socket, &client, &namespace, &target) => {
                    if let Err(message) = result {
                        record(&last_error, message);
                    }
                }
            }
        });
    }
}

fn record(slot: &Mutex<Option<String>>, message: String) {
    tracing::warn!(error = %message, "port-forward tunnel failed");
    if let Ok(mut g) = slot.lock() {
        *g = Some(message);
    }
}

/// Carries one local connection through a fresh tunnel; returns a failure description.
async fn forward_one(
    mut socket: TcpStream,
    client: &Client,
    namespace: &str,
    target: &Target,
) -> Result<(), String> {
    let (pod, port) = match target {
        Target::Pod { name, port } => (name.clone(), *port),
        Target::Service { name, port } => resolve_service(client, namespace, name, *port)
            .await
            .map_err(|e| e.to_string())?,
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut forwarder = pods.portforward(&pod, &[port]).await.map_err(|e| {
        PortForwardError::Tunnel {
            namespace: namespace.to_owned(),
            pod: pod.clone(),
            port,
            source: Box::new(e),
        }
        .to_string()
    })?;
    let Some(mut upstream) = forwarder.take_stream(port) else {
        return Err(format!(
            "port-forward to pod {namespace}/{pod}:{port} gave no stream"
        ));
    };
    // The pod reports a failure (e.g. nothing listens on the port) on the port's error channel
    // and kube-rs keeps the data stream open; stop at once so the local client sees a closed
    // connection instead of waiting forever.
    let pod_error = async {
        match forwarder.take_error(port) {
            Some(f) => match f.await {
                Some(message) => message,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    let copied = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut socket, &mut upstream) => copied,
        message = pod_error => {
            forwarder.abort();
            return Err(format!("pod {namespace}/{pod}:{port} reported: {message}"));
        }
    };
    drop(upstream);
    drop(socket);
    // kube-rs closes the WebSocket once our side is done; a server that never answers the close
    // must not keep this task alive.
    let joined = match tokio::time::timeout(JOIN_TIMEOUT, forwarder.join()).await {
        Ok(joined) => joined.map_err(|e| e.to_string()),
        Err(_) => Ok(()),
    };
    match (copied, joined) {
        // A reset by the local client is its own business, not a broken tunnel.
        (Err(e), _) if e.kind() != std::io::ErrorKind::ConnectionReset => Err(format!(
            "port-forward to pod {namespace}/{pod}:{port} broke: {e}"
        )),
        (_, Err(e)) => Err(format!(
            "port-forward to pod {namespace}/{pod}:{port} broke: {e}"
        )),
        _ => Ok(()),
    }
}

/// Resolves a Service port to `(pod, pod port)` the way kubectl does: the Service's selector
/// picks a Running pod (not being deleted, Ready ones first), and the Service port's
/// `targetPort` (number, container port name, or the port itself) gives the pod port.
///
/// # Errors
/// See [`PortForwardError`].
pub async fn resolve_service(
    client: &Client,
    namespace: &str,
    service: &str,
    port: u16,
) -> Result<(String, u16), PortForwardError> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let svc = services
        .get(service)
        .await
        .map_err(|e| PortForwardError::Service {
            namespace: namespace.to_owned(),
            name: service.to_owned(),
            source: Box::new(e),
        })?;
    let spec = svc.spec.unwrap_or_default();
    let selector =
        spec.selector
            .filter(|s| !s.is_empty())
            .ok_or_else(|| PortForwardError::NoSelector {
                namespace: namespace.to_owned(),
                name: service.to_owned(),
            })?;
    let service_port = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .find(|p| i32::from(port) == p.port)
        .ok_or_else(|| PortForwardError::NoSuchPort {
            namespace: namespace.to_owned(),
            name: service.to_owned(),
            port,
        })?;
    let selector = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| PortForwardError::ListPods {
            namespace: namespace.to_owned(),
            source: Box::new(e),
        })?;
    let pod = pick_pod(&list.items).ok_or_else(|| PortForwardError::NoRunningPod {
        namespace: namespace.to_owned(),
        name: service.to_owned(),
        selector,
    })?;
    let pod_port = target_port(service_port.target_port.as_ref(), port, pod).ok_or_else(|| {
        PortForwardError::NamedPortMissing {
            namespace: namespace.to_owned(),
            pod: pod.name_any(),
            port_name: match &service_port.target_port {
                Some(IntOrString::String(s)) => s.clone(),
                _ => String::new(),
            },
        }
    })?;
    Ok((pod.name_any(), pod_port))
}

/// Chooses a Running pod that is not being deleted, preferring Ready pods, then by name for a
/// stable choice.
#[must_use]
pub fn pick_pod(pods: &[Pod]) -> Option<&Pod> {
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let mut candidates: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect();
    candidates.sort_by_key(|p| (!ready(p), p.name_any()));
    candidates.into_iter().next()
}

/// The pod port for a Service port: numeric targetPort, a named container port, or (no
/// targetPort) the Service port itself. `None` when a named port is not declared.
#[must_use]
pub fn target_port(target: Option<&IntOrString>, service_port: u16, pod: &Pod) -> Option<u16> {
    match target {
        None => Some(service_port),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<u16>() {
                return Some(n);
            }
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
        }
    }
}

#[cfg(test)]
mod tests;
