//! HTTP facts every client kubestrap uses shares (the Kubernetes API, Vault): which answers are
//! worth asking again. One rule, so a status means the same whichever client saw it.

/// Whether an HTTP status is worth retrying unchanged: a timeout (408), a write conflict with
/// a concurrent writer (409), too early (425), throttling (429) or a server error (5xx, which
/// includes a sealed Vault's 503).
#[must_use]
pub const fn is_transient_status(code: u16) -> bool {
    matches!(code, 408 | 409 | 425 | 429 | 500..=599)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_are_classified_once() {
        for code in [408, 409, 425, 429, 500, 503] {
            assert!(is_transient_status(code), "{code}");
        }
        for code in [400, 401, 403, 404, 422] {
            assert!(!is_transient_status(code), "{code}");
        }
    }
}
