//! What a handler answers ([`Reply`]) and how it becomes Vault's JSON: the logical response
//! envelope (`sdk/logical/translate_response.go`), the error body, and the "injected" top-level
//! data of some `sys/` routes (`http/handler.go` `injectDataIntoTopRoutes`).

use hyper::StatusCode;
use serde_json::{Map, Value, json};

use super::error::ApiError;

/// A successful answer of a handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `204` with an empty body (`respondOk(w, nil)`).
    NoContent,
    /// A body that is not an envelope (`sys/init`, `sys/seal-status`, `sys/health`).
    Raw(StatusCode, Value),
    /// A logical response in the envelope.
    Envelope {
        /// 200, or 404 for a soft-deleted KV version that still has metadata.
        status: StatusCode,
        /// The `data` object.
        data: Option<Value>,
        /// Warnings shown to the client.
        warnings: Option<Vec<String>>,
        /// The `auth` object of a login or token creation.
        auth: Option<Value>,
    },
}

impl Reply {
    /// `200` envelope with `data`.
    pub fn data(data: Value) -> Self {
        Self::Envelope {
            status: StatusCode::OK,
            data: Some(data),
            warnings: None,
            auth: None,
        }
    }

    /// `200` envelope with `auth` and no data.
    pub fn auth(auth: Value) -> Self {
        Self::Envelope {
            status: StatusCode::OK,
            data: None,
            warnings: None,
            auth: Some(auth),
        }
    }

    /// `200` envelope carrying only warnings (e.g. a role without audience).
    pub fn warnings(warnings: Vec<String>) -> Self {
        Self::Envelope {
            status: StatusCode::OK,
            data: None,
            warnings: Some(warnings),
            auth: None,
        }
    }

    /// Renders the status and body; `mount_type` goes into the envelope, `inject` copies the
    /// `data` keys to the top level.
    pub fn render(self, mount_type: &str, inject: bool) -> (StatusCode, Option<Value>) {
        match self {
            Self::NoContent => (StatusCode::NO_CONTENT, None),
            Self::Raw(status, body) => (status, Some(body)),
            Self::Envelope {
                status,
                data,
                warnings,
                auth,
            } => {
                let mut body = Map::new();
                if inject && let Some(Value::Object(fields)) = &data {
                    body.extend(fields.clone());
                }
                body.insert(
                    "request_id".into(),
                    Value::String(uuid::Uuid::new_v4().to_string()),
                );
                body.insert("lease_id".into(), Value::String(String::new()));
                body.insert("renewable".into(), Value::Bool(false));
                body.insert("lease_duration".into(), json!(0));
                body.insert("data".into(), data.unwrap_or(Value::Null));
                body.insert("wrap_info".into(), Value::Null);
                body.insert("warnings".into(), json!(warnings));
                body.insert("auth".into(), auth.unwrap_or(Value::Null));
                body.insert("mount_type".into(), Value::String(mount_type.into()));
                (status, Some(Value::Object(body)))
            }
        }
    }
}

/// The body of every error: `{"errors":[...]}`.
pub fn error_body(err: &ApiError) -> Value {
    json!({ "errors": err.messages() })
}

/// Whether Vault copies `data` to the top level for this (normalised, `/v1/`-less) path.
pub fn injects_data(path: &str) -> bool {
    const EXACT: [&str; 3] = ["sys/mounts", "sys/auth", "sys/policy"];
    const PREFIX: [&str; 3] = ["sys/mounts/", "sys/auth/", "sys/policy/"];
    EXACT.contains(&path) || PREFIX.iter().any(|p| path.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_every_field_vaultrs_requires() {
        let (status, body) = Reply::data(json!({"k": "v"})).render("kv", false);
        assert_eq!(status, StatusCode::OK);
        let body = body.unwrap();
        assert!(uuid::Uuid::parse_str(body["request_id"].as_str().unwrap()).is_ok());
        assert_eq!(body["lease_id"], "");
        assert_eq!(body["renewable"], false);
        assert_eq!(body["lease_duration"], 0);
        assert_eq!(body["data"], json!({"k": "v"}));
        assert!(body["wrap_info"].is_null());
        assert!(body["warnings"].is_null());
        assert!(body["auth"].is_null());
        assert_eq!(body["mount_type"], "kv");
        assert!(body.get("k").is_none(), "not injected");
    }

    #[test]
    fn injected_routes_copy_data_to_the_top() {
        assert!(injects_data("sys/mounts"));
        assert!(injects_data("sys/policy/app"));
        assert!(!injects_data("sys/policies/acl/app"));
        let (_, body) = Reply::data(json!({"secret/": {"type": "kv"}})).render("system", true);
        let body = body.unwrap();
        assert_eq!(body["secret/"]["type"], "kv");
        assert_eq!(body["data"]["secret/"]["type"], "kv");
    }

    #[test]
    fn errors_render_as_vault_does() {
        assert_eq!(error_body(&ApiError::NotFound), json!({"errors": []}));
        assert_eq!(
            error_body(&ApiError::PermissionDenied),
            json!({"errors": ["permission denied"]})
        );
        assert_eq!(ApiError::Sealed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            Reply::NoContent.render("system", false),
            (StatusCode::NO_CONTENT, None)
        );
    }
}
