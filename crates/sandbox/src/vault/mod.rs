//! The sandbox Vault: an in-process server speaking Vault's HTTP API over any byte stream,
//! with a real Shamir seal, an encrypted storage file, KV v2, ACL policies, tokens and the
//! Kubernetes auth method (design §6).
//!
//! kubestrap and its tests talk to it with vaultrs exactly as to a real Vault; the sandbox
//! cluster serves it behind the `vault` Service through port-forward ([`VaultServer::serve_io`])
//! and wires kubernetes-auth logins to its own TokenReview ([`TokenReviewer`]).
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use kubestrap_sandbox::vault::{
//! #     ReviewError, ReviewRequest, ReviewedAccount, TokenReviewer, VaultServer,
//! # };
//! struct Review; // the sandbox answers from its TokenReview store
//! #[async_trait::async_trait]
//! impl TokenReviewer for Review {
//!     async fn review(&self, _request: &ReviewRequest<'_>)
//!         -> Result<ReviewedAccount, ReviewError> {
//!         Err(ReviewError::Rejected("unknown token".into()))
//!     }
//! }
//! # async fn run(tunnel: tokio::io::DuplexStream) -> Result<(), Box<dyn std::error::Error>> {
//! let vault = VaultServer::open("sandbox/vault/storage.json".into(), Arc::new(Review))?;
//! let mut ready = vault.subscribe(); // pod vault-0 is Ready while !sealed
//! tokio::spawn({ let vault = vault.clone(); async move { vault.serve_io(tunnel).await } });
//! vault.restart(); // `kubectl delete pod vault-0`: sealed again, data kept
//! ready.wait_for(|s| s.sealed).await?;
//! # Ok(()) }
//! ```
//!
//! # Caveats
//! Every accepted write re-encrypts the whole state and fsyncs the storage file while holding
//! the state lock (no await happens under it); fine for a sandbox's volume, not for load.
//! Not implemented (answered with 501, never faked): KV v2 `PATCH` and `subkeys`, PGP-encrypted
//! init output, JWT signature checks with `pem_keys`, namespace selectors, batch tokens,
//! mount tuning, response wrapping.

mod auth_kubernetes;
mod auth_token;
mod duration;
mod envelope;
mod error;
mod health;
mod http;
mod kv1;
mod kv2;
mod lifecycle;
mod mounts;
mod policies;
mod policy;
mod request;
mod router;
mod seal;
mod state;
mod storage;
mod tokens;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

pub use error::VaultError;

/// Whether Vault is initialised and sealed; the pod's readiness follows `!sealed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaultStatus {
    /// `sys/init` has run.
    pub initialized: bool,
    /// The root key is not in memory: only the seal endpoints answer.
    pub sealed: bool,
}

/// The service account a TokenReview authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewedAccount {
    /// Namespace of the service account.
    pub namespace: String,
    /// Name of the service account.
    pub name: String,
    /// UID of the service account.
    pub uid: String,
}

/// Why a TokenReview did not authenticate a token. Both end a login with 403
/// `permission denied`, as Vault answers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReviewError {
    /// The cluster says the token is not authenticated (expired, wrong audience, deleted SA).
    #[error("token review rejected the token: {0}")]
    Rejected(String),
    /// The cluster could not be asked.
    #[error("token review unavailable: {0}; check kubernetes_host in the auth config")]
    Unavailable(String),
}

/// Which credential Vault's kubernetes auth sends its TokenReview with
/// (`vault-plugin-auth-kubernetes`): the configured `token_reviewer_jwt`; else, unless
/// `disable_local_ca_jwt`, the token of the pod Vault runs in; else the login JWT itself. The
/// cluster authorizes that identity for `create tokenreviews` (`system:auth-delegator`).
#[derive(Clone, PartialEq, Eq)]
pub enum ReviewerJwt {
    /// `token_reviewer_jwt` from the auth config (never printed).
    Configured(String),
    /// Vault's own pod service-account token (the chart's `authDelegator` binding).
    Local,
    /// The JWT under review, used as its own bearer.
    Client,
}

/// Never prints a configured token.
impl std::fmt::Debug for ReviewerJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Configured(_) => "Configured(..)",
            Self::Local => "Local",
            Self::Client => "Client",
        })
    }
}

/// One login's TokenReview: the service-account JWT to review against the cluster at
/// `kubernetes_host` (the auth config's host), checking `audiences` when non-empty.
#[derive(Clone, Copy)]
pub struct ReviewRequest<'a> {
    /// The auth config's `kubernetes_host`.
    pub kubernetes_host: &'a str,
    /// The JWT the login presented: a credential, so `Debug` leaves it out.
    pub jwt: &'a str,
    /// The role's audiences.
    pub audiences: &'a [String],
}

impl std::fmt::Debug for ReviewRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewRequest")
            .field("kubernetes_host", &self.kubernetes_host)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

/// How Vault's kubernetes auth validates a service-account JWT: the sandbox wires this to its
/// TokenReview, so Vault never trusts a JWT merely because its claims parse.
#[async_trait]
pub trait TokenReviewer: Send + Sync {
    /// Reviews the request's JWT.
    async fn review(&self, request: &ReviewRequest<'_>) -> Result<ReviewedAccount, ReviewError>;

    /// [`Self::review`] sent with `reviewer`'s credential; reviewers that model no
    /// authorization of the review itself ignore it.
    async fn review_as(
        &self,
        request: &ReviewRequest<'_>,
        reviewer: &ReviewerJwt,
    ) -> Result<ReviewedAccount, ReviewError> {
        let _ = reviewer;
        self.review(request).await
    }
}

/// In-process Vault server state, persisted in one file (the "storage backend").
pub struct VaultServer {
    core: Mutex<lifecycle::Core>,
    reviewer: Arc<dyn TokenReviewer>,
    status: watch::Sender<VaultStatus>,
}

/// Shows the seal status only: the state holds keys and tokens.
impl std::fmt::Debug for VaultServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultServer")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl VaultServer {
    /// Opens (or starts) the storage at `storage`. Vault starts sealed, as a fresh pod does.
    ///
    /// # Errors
    /// [`VaultError`] when the storage file cannot be read or is not a vault storage file.
    pub fn open(
        storage: PathBuf,
        reviewer: Arc<dyn TokenReviewer>,
    ) -> Result<Arc<Self>, VaultError> {
        let core = lifecycle::Core::open(storage)?;
        let (status, _) = watch::channel(core.status());
        Ok(Arc::new(Self {
            core: Mutex::new(core),
            reviewer,
            status,
        }))
    }

    /// Serves Vault's HTTP/1.1 API on any byte stream (a port-forward tunnel or a TCP
    /// connection) until the peer closes it.
    pub async fn serve_io<IO>(self: &Arc<Self>, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        http::serve_io(Arc::clone(self), io).await;
    }

    /// Serves on a listener, one task per connection, until the returned handle is aborted
    /// (aborting also ends the open connections; merely dropping the handle detaches it).
    pub fn serve_tcp(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
    ) -> tokio::task::JoinHandle<()> {
        http::serve_tcp(Arc::clone(self), listener)
    }

    /// A pod restart: forget the in-memory root key (sealed again), keep storage. Under the
    /// static seal the new process unseals itself with its stored key at once.
    pub fn restart(&self) {
        {
            let mut core = self.lock();
            core.seal();
            core.unseal_with_stored_key();
        }
        self.publish();
    }

    /// The server (re)starts with this seal configuration: OpenBao's static seal with its
    /// key (32 bytes from the file the `seal "static"` stanza names), or `None` for Shamir.
    /// Like a starting process, it forgets its root key and, under the static seal, unseals
    /// itself with its stored key.
    pub fn start_with_seal(&self, static_key: Option<zeroize::Zeroizing<[u8; 32]>>) {
        {
            let mut core = self.lock();
            core.seal();
            core.set_static_key(static_key);
            core.unseal_with_stored_key();
        }
        self.publish();
    }

    /// Whether the server runs with OpenBao's static seal.
    pub fn has_static_seal(&self) -> bool {
        self.lock().has_static_key()
    }

    /// Initialised and sealed flags now.
    pub fn status(&self) -> VaultStatus {
        self.lock().status()
    }

    /// Follows the status; the sandbox sets the pod's Ready condition from `!sealed`.
    pub fn subscribe(&self) -> watch::Receiver<VaultStatus> {
        self.status.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, lifecycle::Core> {
        // A panic while holding the lock leaves the state as consistent as the last write;
        // keep serving rather than poisoning every later request.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reviewer(&self) -> &dyn TokenReviewer {
        self.reviewer.as_ref()
    }

    /// Sends the current status to subscribers if it changed.
    fn publish(&self) {
        let now = self.status();
        self.status.send_if_modified(|seen| {
            let changed = *seen != now;
            *seen = now;
            changed
        });
    }
}
