//! Kubernetes `Status` error objects.
//!
//! Every failure the API answers is a `meta/v1` `Status` with `code` always set, because
//! kube-rs parses any JSON error body leniently and reads a missing `code` as 0.

use serde_json::{Value, json};

/// An API failure that renders as a Kubernetes `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code, also written into `Status.code`.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// Human-readable message, formatted like the real apiserver's.
    pub message: String,
    /// `Status.details`, when the error is about one object.
    pub details: Option<Value>,
    /// Extra response headers (e.g. `Retry-After` on 429).
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// 404 for a missing object: `secrets "db" not found`.
    pub fn not_found(qualified_resource: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{qualified_resource} \"{name}\" not found"),
        )
        .with_details(qualified_resource, name)
    }

    /// 404 for a URL that names no resource type.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 409 for a create of an existing object.
    pub fn already_exists(qualified_resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{qualified_resource} \"{name}\" already exists"),
        )
        .with_details(qualified_resource, name)
    }

    /// 409 for a write with a stale `resourceVersion`.
    pub fn conflict(qualified_resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {qualified_resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        )
        .with_details(qualified_resource, name)
    }

    /// 422 for an object that fails validation.
    pub fn invalid(kind: &str, name: &str, field: &str, detail: &str) -> Self {
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {field}: {detail}"),
        );
        e.details = Some(json!({
            "name": name,
            "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}],
        }));
        e
    }

    /// 400 for a malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 for a request without valid credentials.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 415 for a patch type the resource does not accept.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
        )
    }

    /// 410 for a watch whose `resourceVersion` has been compacted away.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 500 for an internal failure (never carries object content).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// An injected fault with the given code (500, 503 or 429).
    pub fn injected(code: u16) -> Self {
        let (reason, retry_after) = match code {
            429 => ("TooManyRequests", Some(1)),
            503 => ("ServiceUnavailable", None),
            _ => ("InternalError", None),
        };
        let mut e = Self::new(code, reason, format!("sandbox fault injection: {reason}"));
        e.retry_after = retry_after;
        e
    }

    /// A server-side-apply conflict, in the shape the apiserver documents.
    pub fn apply_conflicts(conflicts: &[(String, String)]) -> Self {
        // conflicts: (manager description, field path)
        let message = if conflicts.len() == 1 {
            format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                conflicts[0].0, conflicts[0].1
            )
        } else {
            let mut m = format!("Apply failed with {} conflicts: ", conflicts.len());
            let mut by_mgr: Vec<(&String, Vec<&String>)> = Vec::new();
            for (mgr, path) in conflicts {
                match by_mgr.iter_mut().find(|(m, _)| *m == mgr) {
                    Some((_, paths)) => paths.push(path),
                    None => by_mgr.push((mgr, vec![path])),
                }
            }
            let parts: Vec<String> = by_mgr
                .iter()
                .map(|(mgr, paths)| {
                    let list: Vec<String> = paths.iter().map(|p| format!("- {p}")).collect();
                    format!("conflicts with {}:\n{}", mgr, list.join("\n"))
                })
                .collect();
            m.push_str(&parts.join("\n"));
            m
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(mgr, path)| {
                json!({"type": "FieldManagerConflict", "message": format!("conflict with {mgr}"), "field": path})
            })
            .collect();
        let mut e = Self::new(409, "Conflict", message);
        e.details = Some(json!({"causes": causes}));
        e
    }

    /// Attaches `details.name`/`details.group`/`details.kind` for a `<resource>.<group>` name.
    #[must_use]
    pub fn with_details(mut self, qualified_resource: &str, name: &str) -> Self {
        let (resource, group) = match qualified_resource.split_once('.') {
            Some((r, g)) => (r, g),
            None => (qualified_resource, ""),
        };
        let mut d = json!({"name": name, "kind": resource});
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        self.details = Some(d);
        self
    }

    /// Renders the `Status` object.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// A `Status` object for a successful operation (some deletes answer with it).
pub fn success_status(details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_names_group_and_resource() {
        let e = ApiError::not_found("externalsecrets.external-secrets.io", "db");
        let s = e.to_status();
        assert_eq!(s["code"], 404);
        assert_eq!(
            s["message"],
            "externalsecrets.external-secrets.io \"db\" not found"
        );
        assert_eq!(s["details"]["group"], "external-secrets.io");
        assert_eq!(s["details"]["kind"], "externalsecrets");
    }

    #[test]
    fn single_apply_conflict_matches_documented_shape() {
        let e = ApiError::apply_conflicts(&[("\"kubectl\" using v1".into(), ".data.key".into())]);
        assert_eq!(
            e.message,
            "Apply failed with 1 conflict: conflict with \"kubectl\" using v1: .data.key"
        );
        assert_eq!(
            e.to_status()["details"]["causes"][0]["type"],
            "FieldManagerConflict"
        );
    }
}
