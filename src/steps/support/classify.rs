//! The one retry rule per client error kind the steps meet ([`Classify`]): Kubernetes API
//! errors, server-side apply, cluster access, the lease and Vault. HTTP statuses all go through
//! the engine's [`is_transient_status`], so a 409 means the same everywhere: a concurrent writer
//! changed the object, try again (server-side apply with `force` has no field conflicts).

use vaultrs::error::ClientError;

use crate::engine::{Classify, is_transient_status};
use crate::kube::{ApplyError, KubeAccessError, LeaseError, PortForwardError};

impl Classify for ::kube::Error {
    fn is_transient(&self) -> bool {
        match self {
            Self::Api(status) => is_transient_status(status.code),
            Self::HyperError(_)
            | Self::Service(_)
            | Self::ReadEvents(_)
            | Self::UpgradeConnection(_) => true,
            _ => false,
        }
    }

    fn describe(&self, action: &str) -> String {
        match self {
            Self::Api(status) => format!(
                "{action}: the API answered {} {}: {}",
                status.code, status.reason, status.message
            ),
            _ => action.to_owned(),
        }
    }
}

/// A kind that is not served yet (its CRD comes from a chart that is still installing) and API
/// hiccups are worth retrying; invalid manifests are not.
impl Classify for ApplyError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Api(rejection) => is_transient_status(rejection.code),
            Self::Transport { .. } | Self::UnknownKind { .. } | Self::CrdNotEstablished(_) => true,
            Self::Parse { .. } | Self::Incomplete { .. } | Self::TrackingLabel { .. } => false,
        }
    }

    /// The error's own text already names the object and what the API said.
    fn describe(&self, _action: &str) -> String {
        self.to_string()
    }
}

/// An unusable kubeconfig needs the user; a client that could not be built is a bug or a
/// broken environment, also permanent.
impl Classify for KubeAccessError {
    fn is_transient(&self) -> bool {
        false
    }
}

/// Another live holder is a refusal; failing to write the lease may pass.
impl Classify for LeaseError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Api { .. })
    }

    fn describe(&self, action: &str) -> String {
        match self {
            Self::Held { .. } => self.to_string(),
            Self::Api { .. } => action.to_owned(),
        }
    }
}

/// No running pod behind the Service yet, or a tunnel that broke: both pass.
impl Classify for PortForwardError {
    fn is_transient(&self) -> bool {
        true
    }

    fn describe(&self, action: &str) -> String {
        format!("{action}: {self}")
    }
}

/// Vault's own error messages are kept, since vaultrs' display text omits them. They never
/// contain the values sent, so they are safe to show.
impl Classify for ClientError {
    fn is_transient(&self) -> bool {
        match self {
            Self::APIError { code, .. } => is_transient_status(*code),
            Self::RestClientError { .. } => true,
            _ => false,
        }
    }

    fn describe(&self, action: &str) -> String {
        match self {
            Self::APIError { code, errors } => {
                format!("{action}: vault answered {code}: {}", errors.join("; "))
            }
            _ => action.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::StepError;

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
            assert!(StepError::classify("x", api(code)).is_transient(), "{code}");
        }
        for code in [400, 403, 404, 422] {
            assert!(
                !StepError::classify("x", api(code)).is_transient(),
                "{code}"
            );
        }
        let e = StepError::classify("apply Namespace vault", api(422));
        assert_eq!(
            e.to_string(),
            "apply Namespace vault: the API answered 422 Reason: details"
        );
        assert!(
            StepError::classify("x", ::kube::Error::Service("connection refused".into()))
                .is_transient()
        );
        assert!(!StepError::classify("x", ::kube::Error::TlsRequired).is_transient());
    }

    #[test]
    fn a_conflict_means_the_same_for_apply_and_for_other_writes() {
        let rejection = crate::kube::ApiRejection {
            object: crate::kube::ObjectKey::new("v1", "ConfigMap", Some("ns"), "x"),
            operation: "apply",
            code: 409,
            reason: "Conflict".into(),
            message: "the object has been modified".into(),
            hint: String::new(),
        };
        let apply = StepError::classify("x", crate::kube::ApplyError::Api(Box::new(rejection)));
        let write = StepError::classify("x", api(409));
        assert_eq!(apply.is_transient(), write.is_transient());
        assert!(apply.is_transient());
    }

    #[test]
    fn vault_errors_keep_vaults_message() {
        let sealed = vaultrs::error::ClientError::APIError {
            code: 503,
            errors: vec!["Vault is sealed".into()],
        };
        let e = StepError::classify("read secret/data/x", sealed);
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "read secret/data/x: vault answered 503: Vault is sealed"
        );
        let denied = vaultrs::error::ClientError::APIError {
            code: 403,
            errors: vec!["permission denied".into()],
        };
        assert!(!StepError::classify("x", denied).is_transient());
        assert!(
            !StepError::classify("x", vaultrs::error::ClientError::ResponseDataEmptyError)
                .is_transient()
        );
    }
}
