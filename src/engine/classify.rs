//! How a step's failure is classified for the retry policy, with one rule per error kind.
//!
//! Transient: the same request may succeed later (connection refused while an API server or a
//! port-forward comes up, 429, 5xx, a write conflict with a concurrent writer, Vault sealed).
//! Permanent: it fails again until someone changes something (400/401/403/404/422, bad
//! configuration, undecodable responses). The engine does not know the clients that produce
//! these errors: each toolkit implements [`Classify`] for its own error types, and steps turn
//! them into [`StepError`]s with [`StepError::classify`].

use super::step::StepError;

/// Whether an HTTP status is worth retrying: the rule every HTTP-speaking client error uses.
#[must_use]
pub const fn is_transient_status(code: u16) -> bool {
    matches!(code, 408 | 409 | 425 | 429 | 500..=599)
}

/// An error type that knows whether retrying unchanged may succeed.
pub trait Classify: std::error::Error + Send + Sync + 'static {
    /// Whether the retry policy may try again.
    fn is_transient(&self) -> bool;

    /// The step error's message for `action` (a lowercase fragment such as "apply HelmRelease
    /// vault/vault"). The error itself is kept as the source, so by default the message is the
    /// action alone; types whose display omits what the server said add it here.
    fn describe(&self, action: &str) -> String {
        action.to_owned()
    }
}

impl StepError {
    /// Classify `err`, which happened while doing `action`.
    #[must_use]
    pub fn classify(action: impl AsRef<str>, err: impl Classify) -> Self {
        let message = err.describe(action.as_ref());
        if err.is_transient() {
            Self::transient_from(message, err)
        } else {
            Self::permanent_from(message, err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("status {0}")]
    struct Http(u16);

    impl Classify for Http {
        fn is_transient(&self) -> bool {
            is_transient_status(self.0)
        }
        fn describe(&self, action: &str) -> String {
            format!("{action}: answered {}", self.0)
        }
    }

    #[test]
    fn http_statuses_are_classified_once() {
        for code in [408, 409, 425, 429, 500, 503] {
            assert!(is_transient_status(code), "{code}");
        }
        for code in [400, 401, 403, 404, 422] {
            assert!(!is_transient_status(code), "{code}");
        }
    }

    #[test]
    fn classify_keeps_the_error_as_source_and_its_description() {
        let e = StepError::classify("read x", Http(503));
        assert!(e.is_transient());
        assert_eq!(e.chain(), "read x: answered 503: status 503");
        assert!(!StepError::classify("read x", Http(403)).is_transient());
    }
}
