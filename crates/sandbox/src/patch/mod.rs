//! The four patch types the apiserver accepts, plus `managedFields` bookkeeping.

pub mod apply;
pub mod fields;
pub mod strategic;

use serde_json::Value;

use super::status::ApiError;

/// A patch type, from the request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 6902.
    Json,
    /// RFC 7386.
    Merge,
    /// Strategic merge (built-in kinds only).
    Strategic,
    /// Server-side apply.
    Apply,
}

impl PatchType {
    /// Parses a `Content-Type` header.
    ///
    /// # Errors
    /// 415 for anything else.
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            _ => Err(ApiError::unsupported_media_type(ct)),
        }
    }
}

/// Applies a non-apply patch body to `target`.
///
/// # Errors
/// 400 for an unparseable body or a failing JSON-patch operation.
pub fn apply_patch(target: &mut Value, kind: PatchType, body: &[u8]) -> Result<(), ApiError> {
    match kind {
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid json patch: {e}")))?;
            json_patch::patch(target, &p).map_err(|e| ApiError::invalid_patch(&e.to_string()))
        }
        PatchType::Merge => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
            json_patch::merge(target, &p);
            Ok(())
        }
        PatchType::Strategic => {
            let p: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("invalid strategic merge patch: {e}"))
            })?;
            strategic::apply(target, &p);
            Ok(())
        }
        PatchType::Apply => Err(ApiError::internal(
            "apply patches go through server_side_apply",
        )),
    }
}

impl ApiError {
    /// 422 for a JSON patch that cannot be applied (the apiserver's answer).
    pub fn invalid_patch(detail: &str) -> Self {
        let mut e = Self::bad_request(format!(
            "the server rejected our request due to an error in our request: {detail}"
        ));
        e.code = 422;
        e.reason = "Invalid";
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8")
                .expect("merge"),
            PatchType::Merge
        );
        assert_eq!(
            PatchType::from_content_type("text/plain")
                .expect_err("415")
                .code,
            415
        );
    }

    #[test]
    fn json_patch_ops() {
        let mut v = json!({"a":1});
        apply_patch(
            &mut v,
            PatchType::Json,
            br#"[{"op":"add","path":"/b","value":2},{"op":"remove","path":"/a"}]"#,
        )
        .expect("patch");
        assert_eq!(v, json!({"b":2}));
        let err = apply_patch(
            &mut v,
            PatchType::Json,
            br#"[{"op":"test","path":"/b","value":3}]"#,
        )
        .expect_err("test op");
        assert_eq!(err.code, 422);
    }
}
