//! Vault's unauthenticated status endpoints, `sys/health` and `sys/seal-status`, read with
//! kubestrap's own tolerant types so they work against HashiCorp Vault and OpenBao alike.
//!
//! vaultrs' `sys::health` cannot be used: its response type requires `performance_standby`,
//! which OpenBao never sends, so `sys::health` and `sys::status` fail exactly when an OpenBao
//! is unsealed and active. The types here require only what both servers send (`initialized`,
//! `sealed`, `standby`; for seal-status also the threshold fields) and ignore everything else
//! (`build_date` vs `commit_date`, Vault's replication and clock fields).
//!
//! A single raft node answers `sys/health` with 429 (`standby: true`) for up to about 0.2 s
//! after its last unseal key, until it has taken leadership; writes in that window fail with
//! 500 `local node not active but active cluster node not found`. So 429 is a state
//! ([`Node::Standby`], unsealed), and other 5xx answers are transient errors.

use std::time::Duration;

use serde::Deserialize;

use super::vault_api::VaultSession;
use crate::engine::{Classify, StepError};
use crate::http::is_transient_status;

/// What `sys/health` says about the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node {
    /// `sys/init` was never called.
    Uninitialized,
    /// Initialised, sealed.
    Sealed,
    /// Unsealed but not (yet) the active node: right after unsealing a raft node, or an HA
    /// standby. Reads may work; writes may not.
    Standby,
    /// Unsealed and active.
    Active,
}

/// The `sys/health` body: what every status code carries (200, 429, 472, 473, 501, 503).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Health {
    /// `sys/init` has run.
    pub initialized: bool,
    /// The root key is not in memory.
    pub sealed: bool,
    /// Not the active node (also `true` while sealed or uninitialised on OpenBao).
    pub standby: bool,
    /// The server's version (`1.19.0`, `2.7.2`).
    #[serde(default)]
    pub version: Option<String>,
    /// The id of the Vault cluster, sent while unsealed by Vault and OpenBao alike; the same
    /// across restarts, new when Vault is initialised again (what a checkpoint records).
    #[serde(default)]
    pub cluster_id: Option<String>,
}

impl Health {
    /// The node's state, from the body (the status code only mirrors it).
    pub(crate) fn node(&self) -> Node {
        match (self.initialized, self.sealed, self.standby) {
            (false, _, _) => Node::Uninitialized,
            (true, true, _) => Node::Sealed,
            (true, false, true) => Node::Standby,
            (true, false, false) => Node::Active,
        }
    }
}

/// The `sys/seal-status` body (also what `sys/unseal` answers).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct SealStatus {
    /// `shamir`, or an auto-unseal type.
    #[serde(rename = "type", default)]
    pub seal_type: String,
    /// `sys/init` has run.
    pub initialized: bool,
    /// The root key is not in memory.
    pub sealed: bool,
    /// Shares needed to unseal.
    #[serde(default)]
    pub t: u32,
    /// Shares in total.
    #[serde(default)]
    pub n: u32,
    /// Shares submitted towards the current unseal.
    #[serde(default)]
    pub progress: u32,
    /// The server's version.
    #[serde(default)]
    pub version: Option<String>,
}

/// Why a status answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StatusError {
    /// Vault answered with an error status and its `errors` list (e.g. 500 `local node not
    /// active but active cluster node not found` right after unsealing).
    #[error("vault answered {code}: {message}")]
    Server {
        /// HTTP status.
        code: u16,
        /// Vault's errors, joined.
        message: String,
    },
    /// The answer is not Vault's (a wrong address, a proxy's error page) or not readable.
    #[error("vault answered {code} with a body that is not {what}: {excerpt}")]
    Undecodable {
        /// HTTP status.
        code: u16,
        /// What was expected.
        what: &'static str,
        /// The start of the body.
        excerpt: String,
    },
}

/// Retry later (5xx, 429) or give up (an answer that is not Vault's).
impl Classify for StatusError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Server { code, .. } => is_transient_status(*code),
            Self::Undecodable { .. } => false,
        }
    }

    fn describe(&self, action: &str) -> String {
        format!("{action}: {self}")
    }
}

#[derive(Deserialize)]
struct Errors {
    errors: Vec<String>,
}

fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(120).collect()
}

/// An error answer's `errors`, or an [`StatusError::Undecodable`].
pub(crate) fn server_error(code: u16, body: &[u8], what: &'static str) -> StatusError {
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) => StatusError::Server {
            code,
            message: if e.errors.is_empty() {
                "(no errors given)".into()
            } else {
                e.errors.join("; ")
            },
        },
        Err(_) => StatusError::Undecodable {
            code,
            what,
            excerpt: excerpt(body),
        },
    }
}

/// Reads a `sys/health` answer. Every health status code carries the health body; an answer
/// with an `errors` body (500 while a raft node takes leadership) is an error.
///
/// # Errors
/// [`StatusError`] when the answer is an error or not a health body.
pub(crate) fn parse_health(code: u16, body: &[u8]) -> Result<Health, StatusError> {
    const WHAT: &str = "a sys/health body";
    match serde_json::from_slice::<Health>(body) {
        Ok(h) => Ok(h),
        Err(_) => Err(server_error(code, body, WHAT)),
    }
}

/// Reads a `sys/seal-status` (or `sys/unseal`) answer.
///
/// # Errors
/// [`StatusError`] when the answer is not 200 or not a seal-status body.
pub(crate) fn parse_seal_status(code: u16, body: &[u8]) -> Result<SealStatus, StatusError> {
    const WHAT: &str = "a sys/seal-status body";
    if code != 200 {
        return Err(server_error(code, body, WHAT));
    }
    serde_json::from_slice::<SealStatus>(body).map_err(|_| StatusError::Undecodable {
        code,
        what: WHAT,
        excerpt: excerpt(body),
    })
}

/// `GET <addr>/v1/<path>` with the session's HTTP client (its TLS settings and timeout).
async fn get(
    session: &VaultSession,
    path: &str,
    action: &str,
) -> Result<(u16, Vec<u8>), StepError> {
    call(session, reqwest::Method::GET, path, None, action).await
}

/// `METHOD <addr>/v1/<path>` (with `body` as JSON) with the session's HTTP client; the status
/// and the body. Not reaching Vault is transient and says so, with the port-forward's own
/// failure when it went through one.
///
/// # Errors
/// A transient [`StepError`] when Vault does not answer.
pub(crate) async fn call(
    session: &VaultSession,
    method: reqwest::Method,
    path: &str,
    body: Option<&serde_json::Value>,
    action: &str,
) -> Result<(u16, Vec<u8>), StepError> {
    let url = session.api_url(path);
    let unreachable = |e: reqwest::Error| {
        let tunnel = session
            .tunnel_error()
            .map(|why| format!(" (port-forward: {why})"))
            .unwrap_or_default();
        StepError::transient_from(
            format!("{action}: Vault at {} did not answer{tunnel}", session.addr),
            e,
        )
    };
    let mut request = session.client.http.http.request(method, url);
    if let Some(body) = body {
        request = request.json(body);
    }
    let resp = request.send().await.map_err(unreachable)?;
    let code = resp.status().as_u16();
    let body = resp.bytes().await.map_err(unreachable)?;
    Ok((code, body.to_vec()))
}

/// Asks `sys/health`.
///
/// # Errors
/// A transient [`StepError`] when Vault does not answer or answers 5xx; a permanent one when
/// the answer is not Vault's.
pub(crate) async fn health(session: &VaultSession) -> Result<Health, StepError> {
    const ACTION: &str = "read Vault's health (GET /v1/sys/health)";
    let (code, body) = get(session, "sys/health", ACTION).await?;
    parse_health(code, &body).map_err(|e| StepError::classify(ACTION, e))
}

/// Asks `sys/seal-status`.
///
/// # Errors
/// As [`health`].
pub(crate) async fn seal_status(session: &VaultSession) -> Result<SealStatus, StepError> {
    const ACTION: &str = "read Vault's seal status (GET /v1/sys/seal-status)";
    let (code, body) = get(session, "sys/seal-status", ACTION).await?;
    parse_seal_status(code, &body).map_err(|e| StepError::classify(ACTION, e))
}

/// After the last unseal key: waits (at most `limit`) until the node is active, so the next
/// write does not land in the leadership window. Polls every 20 ms (a status call is cheap).
///
/// # Errors
/// A transient [`StepError`] when the node is not active in time (the next attempt waits
/// again), or Vault sealed again meanwhile.
pub(crate) async fn wait_active(session: &VaultSession, limit: Duration) -> Result<(), StepError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = match health(session).await {
            Ok(h) if h.node() == Node::Active => return Ok(()),
            Ok(h) => format!("{:?}", h.node()),
            Err(e) if e.is_transient() => e.to_string(),
            Err(e) => return Err(e),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(StepError::transient(format!(
                "Vault was unsealed but did not become the active node within {}s (last: {last})",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from OpenBao 2.7.2 (`bao server`, raft, single node), in every state.
    const BAO_UNINIT: &str = r#"{"initialized":false,"sealed":true,"standby":true,"replication_performance_mode":"unknown","replication_dr_mode":"unknown","server_time_utc":1796232968,"version":"2.7.2"}"#;
    const BAO_SEALED: &str = r#"{"initialized":true,"sealed":true,"standby":true,"replication_performance_mode":"unknown","replication_dr_mode":"unknown","server_time_utc":1796232970,"version":"2.7.2"}"#;
    const BAO_STANDBY: &str = r#"{"initialized":true,"sealed":false,"standby":true,"replication_performance_mode":"unknown","replication_dr_mode":"unknown","server_time_utc":1796232970,"version":"2.7.2","cluster_name":"vault-cluster-61cb2d8f","cluster_id":"6760312c-8e9e-1cd9-3c1f-7145b57bc7aa"}"#;
    const BAO_ACTIVE: &str = r#"{"initialized":true,"sealed":false,"standby":false,"replication_performance_mode":"primary","replication_dr_mode":"disabled","server_time_utc":1796232970,"version":"2.7.2","cluster_name":"vault-cluster-61cb2d8f","cluster_id":"6760312c-8e9e-1cd9-3c1f-7145b57bc7aa"}"#;
    const BAO_NOT_ACTIVE: &str =
        r#"{"errors":["local node not active but active cluster node not found"]}"#;
    const BAO_SEAL_SEALED: &str = r#"{"type":"shamir","initialized":true,"sealed":true,"t":1,"n":1,"progress":0,"nonce":"","recovery_seal":false,"version":"2.7.2","commit_date":"2026-10-26T20:32:27Z","migration":false,"storage_type":"raft"}"#;
    const BAO_SEAL_UNSEALED: &str = r#"{"type":"shamir","initialized":true,"sealed":false,"t":1,"n":1,"progress":0,"nonce":"","recovery_seal":false,"version":"2.7.2","commit_date":"2026-10-26T20:32:27Z","migration":false,"cluster_name":"vault-cluster-61cb2d8f","cluster_id":"6760312c-8e9e-1cd9-3c1f-7145b57bc7aa","storage_type":"raft"}"#;
    const BAO_SEAL_UNINIT: &str = r#"{"type":"shamir","initialized":false,"sealed":true,"t":0,"n":0,"progress":0,"nonce":"","recovery_seal":false,"version":"2.7.2","commit_date":"2026-10-26T20:32:27Z","migration":false,"storage_type":"raft"}"#;
    // HashiCorp Vault (no Vault binary is obtainable here): the sample answers of its API
    // documentation (`api-docs/system/health`, `seal-status`), and the field set of a sealed
    // 1.19 as the sandbox's emulator models it (not a capture).
    const VAULT_ACTIVE_DOCS: &str = r#"{"initialized":true,"sealed":false,"standby":false,"performance_standby":false,"replication_performance_mode":"disabled","replication_dr_mode":"disabled","server_time_utc":1516639589,"version":"0.9.2","cluster_name":"vault-cluster-3bd69ca2","cluster_id":"00af5aa8-c87d-b5fc-e82e-97cd8dfaf731"}"#;
    const VAULT_SEALED_119: &str = r#"{"initialized":true,"sealed":true,"standby":true,"performance_standby":false,"replication_performance_mode":"disabled","replication_dr_mode":"disabled","server_time_utc":1764689000,"version":"1.19.0","enterprise":false,"echo_duration_ms":0,"clock_skew_ms":0,"replication_primary_canary_age_ms":0,"removed_from_cluster":false}"#;
    const VAULT_SEAL_STATUS_DOCS: &str = r#"{"type":"shamir","initialized":true,"sealed":true,"t":3,"n":5,"progress":2,"nonce":"","version":"1.11.0","build_date":"2022-05-03T08:34:11Z","migration":false,"recovery_seal":false,"storage_type":"file","unseal_recovery_enabled":false}"#;

    fn node(code: u16, body: &str) -> Node {
        parse_health(code, body.as_bytes()).expect("health").node()
    }

    #[test]
    fn openbao_health_reads_in_every_state() {
        assert_eq!(node(501, BAO_UNINIT), Node::Uninitialized);
        assert_eq!(node(503, BAO_SEALED), Node::Sealed);
        assert_eq!(node(429, BAO_STANDBY), Node::Standby);
        assert_eq!(node(200, BAO_ACTIVE), Node::Active);
        let h = parse_health(200, BAO_ACTIVE.as_bytes()).expect("health");
        assert_eq!(h.version.as_deref(), Some("2.7.2"));
    }

    /// vaultrs' health type required `performance_standby`: an active OpenBao failed to parse.
    #[test]
    fn openbao_active_health_without_performance_standby_is_read() {
        assert!(!BAO_ACTIVE.contains("performance_standby"));
        assert!(
            serde_json::from_str::<vaultrs::api::sys::responses::ReadHealthResponse>(BAO_ACTIVE)
                .is_err()
        );
        assert_eq!(node(200, BAO_ACTIVE), Node::Active);
    }

    #[test]
    fn vault_health_reads_too() {
        assert_eq!(node(200, VAULT_ACTIVE_DOCS), Node::Active);
        assert_eq!(node(503, VAULT_SEALED_119), Node::Sealed);
    }

    #[test]
    fn local_node_not_active_is_a_transient_error() {
        let e = parse_health(500, BAO_NOT_ACTIVE.as_bytes()).expect_err("error");
        assert_eq!(
            e,
            StatusError::Server {
                code: 500,
                message: "local node not active but active cluster node not found".into()
            }
        );
        let step = StepError::classify("read Vault's health", e);
        assert!(step.is_transient());
        assert!(step.to_string().contains("local node not active"), "{step}");
    }

    #[test]
    fn answers_that_are_not_vaults_are_permanent() {
        let e = parse_health(404, b"<html>404 page not found</html>").expect_err("html");
        assert!(
            matches!(e, StatusError::Undecodable { code: 404, .. }),
            "{e:?}"
        );
        assert!(!e.is_transient());
        let e = parse_seal_status(502, b"Bad Gateway").expect_err("proxy");
        assert!(!e.is_transient(), "an unreadable answer is permanent");
        let e = parse_seal_status(503, br#"{"errors":["Vault is sealed"]}"#).expect_err("5xx");
        assert!(e.is_transient());
    }

    #[test]
    fn seal_status_reads_both_servers() {
        let s = parse_seal_status(200, BAO_SEAL_SEALED.as_bytes()).expect("bao sealed");
        assert!(s.initialized && s.sealed && s.t == 1 && s.n == 1);
        assert_eq!(s.seal_type, "shamir");
        let s = parse_seal_status(200, BAO_SEAL_UNSEALED.as_bytes()).expect("bao unsealed");
        assert!(!s.sealed);
        let s = parse_seal_status(200, BAO_SEAL_UNINIT.as_bytes()).expect("bao uninit");
        assert!(!s.initialized);
        let s = parse_seal_status(200, VAULT_SEAL_STATUS_DOCS.as_bytes()).expect("vault");
        assert_eq!((s.t, s.n, s.progress), (3, 5, 2));
        assert_eq!(s.version.as_deref(), Some("1.11.0"));
    }
}
