//! Errors of the sandbox Vault: [`VaultError`] for the embedding process (opening and persisting
//! storage) and [`ApiError`] for what an HTTP client sees (Vault's `{"errors":[...]}` bodies).

use std::path::PathBuf;

use hyper::StatusCode;

/// A failure of the Vault server itself (storage), as seen by the process embedding it.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The storage file could not be read or written.
    #[error(
        "cannot access vault storage {path}: {source}; check the sandbox directory permissions"
    )]
    Io {
        /// The storage file (or its temp sibling).
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The storage file exists but is not a sandbox Vault storage file.
    #[error("vault storage {path} is corrupt: {reason}; remove it to start an uninitialised vault")]
    Corrupt {
        /// The storage file.
        path: PathBuf,
        /// What was wrong (never contains secret material).
        reason: String,
    },
    /// Encrypting the barrier failed (the system random source or AEAD failed).
    #[error(
        "cannot encrypt the vault storage barrier; the system random source may be unavailable"
    )]
    Crypto,
}

/// An error answered to an HTTP client, mapped onto Vault's status codes and messages
/// (`sdk/logical/response_util.go`). Messages never contain secret values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Vault is sealed or not initialised: 503 `Vault is sealed`.
    #[error("Vault is sealed")]
    Sealed,
    /// Missing, unknown or expired token, or the ACL denies the operation: 403.
    #[error("permission denied")]
    PermissionDenied,
    /// A 403 with a specific message (kubernetes auth's bound checks).
    #[error("{0}")]
    Forbidden(String),
    /// Read or list that found nothing: 404 with an empty `errors` array.
    #[error("not found")]
    NotFound,
    /// No backend handles this path: 404 with Vault's routing message.
    #[error("no handler for route {0:?}. route entry not found.")]
    NoHandler(String),
    /// The backend does not support this operation on this path: 405.
    #[error("unsupported operation")]
    UnsupportedOperation,
    /// Invalid input (`logical.ErrorResponse`): 400 with the message.
    #[error("{0}")]
    BadRequest(String),
    /// A feature this sandbox does not implement: 501, so a client never mistakes it for success.
    #[error("{0} is not implemented by the sandbox vault")]
    NotImplemented(String),
    /// An internal failure (storage): 500.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status code Vault uses for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Sealed => StatusCode::SERVICE_UNAVAILABLE,
            Self::PermissionDenied | Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound | Self::NoHandler(_) => StatusCode::NOT_FOUND,
            Self::UnsupportedOperation => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The entries of the `errors` array: empty for a plain 404, as Vault sends it.
    pub fn messages(&self) -> Vec<String> {
        match self {
            Self::NotFound => Vec::new(),
            other => vec![other.to_string()],
        }
    }

    /// Shorthand for a 400.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }
}

impl From<VaultError> for ApiError {
    fn from(err: VaultError) -> Self {
        Self::Internal(err.to_string())
    }
}
