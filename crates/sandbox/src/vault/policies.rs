//! Policy endpoints: the legacy `sys/policy[/<name>]` (what vaultrs uses) and
//! `sys/policies/acl[/<name>]`.

use base64::Engine as _;
use serde_json::json;

use super::envelope::Reply;
use super::error::ApiError;
use super::policy::Policy;
use super::request::{ApiRequest, Verb};
use super::state::State;

/// Which of the two policy APIs is being served; they differ in field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `sys/policy`: `rules`, list under `policies` and `keys`.
    Legacy,
    /// `sys/policies/acl`: `policy`, list under `keys`.
    Acl,
}

/// Serves `name` (empty for the collection) under either flavor.
pub fn handle(
    state: &mut State,
    req: &ApiRequest,
    flavor: Flavor,
    name: &str,
) -> Result<Reply, ApiError> {
    let name = name.trim_matches('/').to_lowercase();
    if name.is_empty() {
        return match (req.verb, flavor) {
            (Verb::Read | Verb::List, Flavor::Legacy) => {
                let names = state.policy_names();
                Ok(Reply::data(json!({ "keys": names, "policies": names })))
            }
            (Verb::List, Flavor::Acl) => Ok(Reply::data(json!({ "keys": state.policy_names() }))),
            _ => Err(ApiError::UnsupportedOperation),
        };
    }
    match req.verb {
        Verb::Read => {
            let text = state.policy_text(&name).ok_or(ApiError::NotFound)?;
            Ok(Reply::data(match flavor {
                Flavor::Legacy => json!({ "name": name, "rules": text }),
                Flavor::Acl => json!({ "name": name, "policy": text }),
            }))
        }
        Verb::Write => {
            if name == "root" {
                return Err(ApiError::bad("cannot update \"root\" policy"));
            }
            let raw = req
                .str_field("policy")
                .or_else(|| req.str_field("rules"))
                .ok_or_else(|| ApiError::bad("'policy' parameter not supplied or empty"))?;
            // sys/policies/acl accepts a base64-encoded policy.
            let text = match base64::engine::general_purpose::STANDARD.decode(raw) {
                Ok(bytes) if flavor == Flavor::Acl => {
                    String::from_utf8(bytes).unwrap_or_else(|_| raw.to_string())
                }
                _ => raw.to_string(),
            };
            Policy::parse(&text).map_err(|e| ApiError::bad(e.to_string()))?;
            state.policies.insert(name, text);
            Ok(Reply::NoContent)
        }
        Verb::Delete => {
            if name == "root" || name == "default" {
                return Err(ApiError::bad(format!("cannot delete {name:?} policy")));
            }
            state.policies.remove(&name);
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::UnsupportedOperation),
    }
}
