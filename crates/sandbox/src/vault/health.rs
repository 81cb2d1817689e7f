//! The unauthenticated status bodies: `sys/seal-status` (also the answer of `sys/unseal`) and
//! `sys/health` with its status codes and query overrides (`http/sys_health.go`).

use hyper::StatusCode;
use serde_json::{Value, json};

use super::envelope::Reply;
use super::error::ApiError;
use super::request::{ApiRequest, Verb};
use super::storage::SealConfig;

/// The Vault version the sandbox reports.
pub const VERSION: &str = "1.19.0";
/// The build date the sandbox reports.
pub const BUILD_DATE: &str = "2025-03-04T12:36:40Z";

/// What the status bodies need to know about the seal.
#[derive(Debug, Clone, Copy)]
pub struct SealView<'a> {
    /// Seal configuration; `None` before init.
    pub config: Option<SealConfig>,
    /// Whether the root key is unknown.
    pub sealed: bool,
    /// Shares submitted towards the current unseal attempt.
    pub progress: usize,
    /// Nonce of the current unseal attempt, `""` when none.
    pub nonce: &'a str,
    /// Cluster name and id, reported only while unsealed.
    pub cluster: Option<(&'a str, &'a str)>,
    /// The server runs OpenBao's static seal (`seal "static"` in its configuration).
    pub static_seal: bool,
}

/// The `sys/seal-status` body (`SealStatusResponse`).
pub fn seal_status(view: SealView<'_>) -> Value {
    let (t, n) = view
        .config
        .map_or((0, 0), |c| (c.secret_threshold, c.secret_shares));
    let mut body = json!({
        "type": "shamir",
        "initialized": view.config.is_some(),
        "sealed": view.sealed,
        "t": t,
        "n": n,
        "progress": view.progress,
        "nonce": view.nonce,
        "version": VERSION,
        "build_date": BUILD_DATE,
        "migration": false,
        "recovery_seal": false,
        "storage_type": "file",
    });
    if view.static_seal {
        // OpenBao 2.7.2 under `seal "static"`: type static, a Shamir recovery seal whose
        // shares are `t`/`n` (0/0 before init).
        body["type"] = json!("static");
        body["recovery_seal"] = json!(true);
        body["recovery_seal_type"] = json!("shamir");
    }
    if let Some((name, id)) = view.cluster {
        body["cluster_name"] = json!(name);
        body["cluster_id"] = json!(id);
    }
    body
}

fn code(req: &ApiRequest, name: &str, default: u16) -> Result<StatusCode, ApiError> {
    let Some(raw) = req.query.get(name) else {
        return Ok(StatusCode::from_u16(default).unwrap_or(StatusCode::OK));
    };
    raw.parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| ApiError::bad(format!("bad code for '{name}' parameter")))
}

/// `GET|HEAD sys/health`: the health body (never an `errors` body) with 200, 501 when not
/// initialised, 503 when sealed, each overridable by its query parameter.
pub fn health(req: &ApiRequest, view: SealView<'_>) -> Result<Reply, ApiError> {
    if !matches!(req.verb, Verb::Read | Verb::Head) {
        return Err(ApiError::UnsupportedOperation);
    }
    // Every override is validated, also those that do not apply to a single active node.
    let active = code(req, "activecode", 200)?;
    code(req, "standbycode", 429)?;
    code(req, "drsecondarycode", 472)?;
    code(req, "performancestandbycode", 473)?;
    let sealed = code(req, "sealedcode", 503)?;
    let uninit = code(req, "uninitcode", 501)?;
    code(req, "haunhealthycode", 474)?;
    code(req, "removedcode", 530)?;
    let initialized = view.config.is_some();
    let status = if !initialized {
        uninit
    } else if view.sealed {
        sealed
    } else {
        active
    };
    let mut body = json!({
        "initialized": initialized,
        "sealed": view.sealed,
        "standby": view.sealed,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": jiff::Timestamp::now().as_second(),
        "version": VERSION,
        "enterprise": false,
        "echo_duration_ms": 0,
        "clock_skew_ms": 0,
        "replication_primary_canary_age_ms": 0,
        "removed_from_cluster": false,
    });
    if let Some((name, id)) = view.cluster {
        body["cluster_name"] = json!(name);
        body["cluster_id"] = json!(id);
    }
    Ok(Reply::Raw(status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;

    fn get(query: Option<&str>) -> ApiRequest {
        ApiRequest::decode(&Method::GET, "/v1/sys/health", query, None, b"").unwrap()
    }

    fn view(config: Option<SealConfig>, sealed: bool) -> SealView<'static> {
        SealView {
            config,
            sealed,
            progress: 0,
            nonce: "",
            cluster: (!sealed).then_some(("vault-cluster-x", "id")),
            static_seal: false,
        }
    }

    const CONFIG: SealConfig = SealConfig {
        secret_shares: 1,
        secret_threshold: 1,
        recovery: false,
    };

    #[test]
    fn health_codes_follow_the_seal() {
        let status = |r: Reply| match r {
            Reply::Raw(s, body) => {
                assert!(body.get("errors").is_none());
                s.as_u16()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(status(health(&get(None), view(None, true)).unwrap()), 501);
        assert_eq!(
            status(health(&get(None), view(Some(CONFIG), true)).unwrap()),
            503
        );
        assert_eq!(
            status(health(&get(None), view(Some(CONFIG), false)).unwrap()),
            200
        );
        let q = Some("sealedcode=200&uninitcode=204");
        assert_eq!(
            status(health(&get(q), view(Some(CONFIG), true)).unwrap()),
            200
        );
        assert_eq!(status(health(&get(q), view(None, true)).unwrap()), 204);
        assert!(health(&get(Some("activecode=abc")), view(None, true)).is_err());
    }

    #[test]
    fn seal_status_before_init_and_unsealed() {
        let body = seal_status(view(None, true));
        assert_eq!(body["initialized"], false);
        assert_eq!(body["sealed"], true);
        assert_eq!(body["t"], 0);
        assert!(body.get("cluster_id").is_none());
        let body = seal_status(view(Some(CONFIG), false));
        assert_eq!(body["n"], 1);
        assert_eq!(body["cluster_name"], "vault-cluster-x");
    }
}
