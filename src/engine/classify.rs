//! One place that decides which client errors are worth retrying, so every step classifies
//! Kubernetes and Vault failures the same way.
//!
//! Transient: the request may succeed later unchanged (connection refused while a port-forward
//! or an API server comes up, 429, 5xx, 409 conflicts from concurrent writers, Vault sealed).
//! Permanent: it will fail again until someone changes something (400/401/403/404/422, bad
//! configuration, undecodable responses).

use super::step::StepError;

/// Whether an HTTP status is worth retrying.
#[must_use]
pub const fn is_transient_status(code: u16) -> bool {
    matches!(code, 408 | 409 | 425 | 429 | 500..=599)
}

impl StepError {
    /// Classify a Kubernetes client error. `action` says what was attempted, as a lowercase
    /// fragment ("apply HelmRelease vault/vault").
    #[must_use]
    pub fn from_kube(action: impl Into<String>, err: ::kube::Error) -> Self {
        let action = action.into();
        let transient = match &err {
            ::kube::Error::Api(status) => is_transient_status(status.code),
            ::kube::Error::HyperError(_)
            | ::kube::Error::Service(_)
            | ::kube::Error::ReadEvents(_)
            | ::kube::Error::UpgradeConnection(_) => true,
            _ => false,
        };
        let message = match &err {
            ::kube::Error::Api(status) => format!(
                "{action}: the API answered {} {}: {}",
                status.code, status.reason, status.message
            ),
            _ => action,
        };
        if transient {
            Self::transient_from(message, err)
        } else {
            Self::permanent_from(message, err)
        }
    }

    /// Classify a Vault client (vaultrs) error. Vault's own error messages are kept, since
    /// vaultrs' display text omits them.
    #[must_use]
    pub fn from_vault(action: impl Into<String>, err: vaultrs::error::ClientError) -> Self {
        let action = action.into();
        match &err {
            vaultrs::error::ClientError::APIError { code, errors } => {
                let message = format!("{action}: vault answered {code}: {}", errors.join("; "));
                if is_transient_status(*code) {
                    Self::transient_from(message, err)
                } else {
                    Self::permanent_from(message, err)
                }
            }
            vaultrs::error::ClientError::RestClientError { .. } => {
                Self::transient_from(action, err)
            }
            _ => Self::permanent_from(action, err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> ::kube::Error {
        ::kube::Error::Api(Box::new(::kube::core::Status {
            code,
            reason: "Reason".into(),
            message: "details".into(),
            ..Default::default()
        }))
    }

    #[test]
    fn kubernetes_errors_are_classified_by_status() {
        for code in [409, 429, 500, 503] {
            assert!(
                StepError::from_kube("x", api(code)).is_transient(),
                "{code}"
            );
        }
        for code in [400, 403, 404, 422] {
            assert!(
                !StepError::from_kube("x", api(code)).is_transient(),
                "{code}"
            );
        }
        let e = StepError::from_kube("apply Namespace vault", api(422));
        assert_eq!(
            e.to_string(),
            "apply Namespace vault: the API answered 422 Reason: details"
        );
        assert!(
            StepError::from_kube("x", ::kube::Error::Service("connection refused".into()))
                .is_transient()
        );
        assert!(!StepError::from_kube("x", ::kube::Error::TlsRequired).is_transient());
    }

    #[test]
    fn vault_errors_keep_vaults_message() {
        let sealed = vaultrs::error::ClientError::APIError {
            code: 503,
            errors: vec!["Vault is sealed".into()],
        };
        let e = StepError::from_vault("read secret/data/x", sealed);
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "read secret/data/x: vault answered 503: Vault is sealed"
        );
        let denied = vaultrs::error::ClientError::APIError {
            code: 403,
            errors: vec!["permission denied".into()],
        };
        assert!(!StepError::from_vault("x", denied).is_transient());
        assert!(
            !StepError::from_vault("x", vaultrs::error::ClientError::ResponseDataEmptyError)
                .is_transient()
        );
    }
}
