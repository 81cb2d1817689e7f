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
        // A child never outlives its parent.
        expire_at: (ttl > 0)
            .then(|| now + i64::try_from(ttl).unwrap_or(i64::MAX / 2))
            .map(|at| parent.expire_at.map_or(at, |parent_at| at.min(parent_at))),
        entity_id: parent.entity_id.clone(),
        orphan: sub.starts_with("create-orphan") || req.bool_field("no_parent").unwrap_or(false),
        renewable: req.bool_field("renewable").unwrap_or(true) && ttl > 0,
        role: None,
    };
    let entry = TokenEntry {
        creation_ttl: entry
            .expire_at
            .map_or(0, |at| u64::try_from(at - now).unwrap_or(0)),
        ..entry
    };
    let id = state.tokens.issue(entry.clone());
    Ok(Reply::auth(entry.auth_body(&id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;
    use serde_json::json;

    fn post(body: serde_json::Value) -> ApiRequest {
        ApiRequest::decode(
            &Method::POST,
            "/v1/auth/token/create",
            None,
            None,
            body.to_string().as_bytes(),
        )
        .unwrap()
    }

    fn parent(expire_at: Option<i64>) -> TokenEntry {
        TokenEntry {
            accessor: "a".into(),
            policies: vec!["app".into(), "default".into()],
            path: "auth/kubernetes/login".into(),
            display_name: "kubernetes-ns-sa".into(),
            meta: None,
            creation_time: 0,
            creation_ttl: 100,
            expire_at,
            entity_id: "entity-1".into(),
            orphan: true,
            renewable: true,
            role: None,
        }
    }

    #[test]
    fn child_tokens_stay_within_their_parent() {
        let (mut state, _) = State::initial(0);
        let entry = parent(Some(100));
        let caller = Caller {
            id: "hvs.parent",
            entry: &entry,
        };
        let reply = handle(
            &mut state,
            &post(json!({"ttl": "1h"})),
            "create",
            &caller,
            10,
        )
        .unwrap();
        let Reply::Envelope {
            auth: Some(auth), ..
        } = reply
        else {
            panic!("auth envelope expected");
        };
        assert_eq!(auth["policies"], json!(["app", "default"]));
        assert_eq!(auth["lease_duration"], 90, "capped at the parent's expiry");
        assert_eq!(auth["entity_id"], "entity-1");
        let child = auth["client_token"].as_str().unwrap();
        assert!(state.tokens.lookup(child, 99).is_some());
        assert!(state.tokens.lookup(child, 100).is_none());

        let escalate = handle(
            &mut state,
            &post(json!({"policies": ["admin"]})),
            "create",
            &caller,
            10,
        );
        assert_eq!(
            escalate,
            Err(ApiError::bad("child policies must be subset of parent"))
        );
    }

    #[test]
    fn lookup_self_and_revoke_self() {
        let (mut state, root) = State::initial(0);
        let entry = state.tokens.lookup(&root, 5).unwrap().clone();
        let caller = Caller {
            id: &root,
            entry: &entry,
        };
        let get = ApiRequest::decode(&Method::GET, "/v1/auth/token/lookup-self", None, None, b"")
            .unwrap();
        let Reply::Envelope {
            data: Some(data), ..
        } = handle(&mut state, &get, "lookup-self", &caller, 5).unwrap()
        else {
            panic!("data expected");
        };
        assert_eq!(data["id"], root.as_str());
        assert_eq!(data["policies"], json!(["root"]));
        handle(&mut state, &post(json!({})), "revoke-self", &caller, 5).unwrap();
        assert!(state.tokens.lookup(&root, 5).is_none());
    }
}
