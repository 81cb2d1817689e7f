//! The token auth method's endpoints (`auth/token/...`): lookup-self (what ESO validates its
//! login with), lookup, create, renew-self and revoke-self.

use super::duration;
use super::envelope::Reply;
use super::error::ApiError;
use super::request::{ApiRequest, Verb};
use super::state::State;
use super::tokens::{self, DEFAULT_TTL, TokenEntry};

/// The caller of a request: its token ID and entry.
pub struct Caller<'a> {
    /// The token ID presented.
    pub id: &'a str,
    /// What Vault knows about it.
    pub entry: &'a TokenEntry,
}

/// Serves `auth/token/<sub>`.
pub fn handle(
    state: &mut State,
    req: &ApiRequest,
    sub: &str,
    caller: &Caller<'_>,
    now: i64,
) -> Result<Reply, ApiError> {
    match (sub.trim_end_matches('/'), req.verb) {
        ("lookup-self", Verb::Read | Verb::Write) => {
            Ok(Reply::data(caller.entry.lookup_body(caller.id, now)))
        }
        ("lookup", Verb::Write) => {
            let id = req
                .str_field("token")
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ApiError::bad("missing token to look up"))?;
            let entry = state
                .tokens
                .lookup(id, now)
                .ok_or_else(|| ApiError::Forbidden("bad token".into()))?;
            Ok(Reply::data(entry.lookup_body(id, now)))
        }
        ("create" | "create-orphan", Verb::Write) => create(state, req, sub, caller, now),
        ("renew-self", Verb::Write) => {
            let increment = duration::seconds("increment", req.body.get("increment"))?;
            state
                .tokens
                .renew(caller.id, increment, now)
                .ok_or(ApiError::PermissionDenied)?;
            let entry = state
                .tokens
                .lookup(caller.id, now)
                .ok_or(ApiError::PermissionDenied)?
                .clone();
            let mut auth = entry.auth_body(caller.id);
            auth["lease_duration"] =
                serde_json::json!(entry.expire_at.map_or(0, |at| (at - now).max(0)));
            Ok(Reply::auth(auth))
        }
        ("revoke-self", Verb::Write) => {
            state.tokens.revoke(caller.id);
            Ok(Reply::NoContent)
        }
        (
            "lookup-self" | "lookup" | "create" | "create-orphan" | "renew-self" | "revoke-self",
            _,
        ) => Err(ApiError::UnsupportedOperation),
        (other, _) => Err(ApiError::NotImplemented(format!("auth/token/{other}"))),
    }
}

fn create(
    state: &mut State,
    req: &ApiRequest,
    sub: &str,
    caller: &Caller<'_>,
    now: i64,
) -> Result<Reply, ApiError> {
    let parent = caller.entry;
    let requested = req.list_field("policies").unwrap_or_default();
    let no_default = req.bool_field("no_default_policy").unwrap_or(false);
    let policies = if requested.is_empty() {
        tokens::normalize_policies(&parent.policies, false)
    } else {
        tokens::normalize_policies(&requested, !no_default)
    };
    if !parent.is_root()
        && policies
            .iter()
            .any(|p| p != "default" && !parent.policies.contains(p))
    {
        return Err(ApiError::bad("child policies must be subset of parent"));
    }
    let asked = duration::seconds("ttl", req.body.get("ttl"))?;
    let ttl = if policies.iter().any(|p| p == "root") && asked == 0 {
        0
    } else if asked == 0 {
        DEFAULT_TTL
    } else {
        asked.min(DEFAULT_TTL)
    };
    let display = req.str_field("display_name").unwrap_or_default();
    let meta = match req.body.get("meta") {
        Some(serde_json::Value::Object(map)) => Some(
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect(),
        ),
        _ => None,
    };
    let entry = TokenEntry {
        accessor: tokens::random_id(24),
        policies,
        path: format!("auth/token/{}", sub.trim_end_matches('/')),
        display_name: if display.is_empty() {
            "token".into()
        } else {
            format!("token-{display}")
        },
        meta,
        creation_time: now,
        creation_ttl: ttl,
        expire_at: (ttl > 0).then(|| now + i64::try_from(ttl).unwrap_or(i64::MAX / 2)),
        entity_id: String::new(),
        orphan: sub.starts_with("create-orphan") || req.bool_field("no_parent").unwrap_or(false),
        renewable: req.bool_field("renewable").unwrap_or(true) && ttl > 0,
        role: None,
    };
    let id = state.tokens.issue(entry.clone());
    Ok(Reply::auth(entry.auth_body(&id)))
}
