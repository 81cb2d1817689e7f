//! Routing of authenticated requests: token check, ACL enforcement, dispatch to the backend
//! owning the path, persistence after writes; and the two-phase kubernetes login.

use std::time::Duration;

use super::auth_kubernetes;
use super::auth_token::{self, Caller};
use super::envelope::Reply;
use super::error::ApiError;
use super::mounts::{self, SecretEngine};
use super::policies::{self, Flavor};
use super::policy::Operation;
use super::request::{ApiRequest, Verb};
use super::state::State;
use super::tokens::{self, TokenEntry};
use super::{ReviewRequest, ReviewedAccount, VaultServer};

/// How long a login waits for the TokenReview before denying.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a path leads.
enum Target {
    Seal,
    CapabilitiesSelf,
    Mounts(String),
    Auths(String),
    Policy(Flavor, String),
    Token(String),
    Kubernetes(String, String),
    Kv(String, String),
}

impl Target {
    fn mount_type(&self) -> &'static str {
        match self {
            Self::Seal
            | Self::CapabilitiesSelf
            | Self::Mounts(_)
            | Self::Auths(_)
            | Self::Policy(..) => "system",
            Self::Token(_) => "token",
            Self::Kubernetes(..) => "kubernetes",
            Self::Kv(..) => "kv",
        }
    }
}

fn resolve(state: &State, path: &str) -> Result<Target, ApiError> {
    let trimmed = path.trim_end_matches('/');
    let rest_of = |prefix: &str| {
        (trimmed == prefix)
            .then(String::new)
            .or_else(|| path.strip_prefix(&format!("{prefix}/")).map(str::to_string))
    };
    if let Some(sys) = path
        .strip_prefix("sys/")
        .or((trimmed == "sys").then_some(""))
    {
        match sys.trim_end_matches('/') {
            "seal" => return Ok(Target::Seal),
            "capabilities-self" => return Ok(Target::CapabilitiesSelf),
            _ => {}
        }
        if let Some(rest) = rest_of("sys/mounts") {
            return Ok(Target::Mounts(rest));
        }
        if let Some(rest) = rest_of("sys/auth") {
            return Ok(Target::Auths(rest));
        }
        if let Some(rest) = rest_of("sys/policy") {
            return Ok(Target::Policy(Flavor::Legacy, rest));
        }
        if let Some(rest) = rest_of("sys/policies/acl") {
            return Ok(Target::Policy(Flavor::Acl, rest));
        }
        return Err(ApiError::NoHandler(path.into()));
    }
    if let Some(rest) = rest_of("auth/token") {
        return Ok(Target::Token(rest));
    }
    if let Some(rest) = path.strip_prefix("auth/") {
        return state
            .auth_mount_of(rest)
            .map(|(mount, sub)| Target::Kubernetes(mount, sub.to_string()))
            .ok_or_else(|| ApiError::NoHandler(path.into()));
    }
    state
        .secret_mount_of(path)
        .map(|(mount, sub)| Target::Kv(mount, sub.to_string()))
        .ok_or_else(|| ApiError::NoHandler(path.into()))
}

/// The ACL operation of a request, with Vault's create-vs-update existence check.
fn operation(state: &State, verb: Verb, target: &Target) -> Operation {
    match verb {
        Verb::Read | Verb::Head => Operation::Read,
        Verb::List => Operation::List,
        Verb::Delete => Operation::Delete,
        Verb::Write => {
            let exists = match target {
                Target::Kv(mount, sub) => match state.mounts.get(mount).map(|m| &m.engine) {
                    Some(SecretEngine::KvV2(kv)) => kv.exists(sub),
                    Some(SecretEngine::KvV1(kv)) => kv.exists(sub),
                    None => true,
                },
                _ => true,
            };
            if exists {
                Operation::Update
            } else {
                Operation::Create
            }
        }
    }
}

/// Root-protected paths need `sudo` as well.
fn needs_sudo(target: &Target) -> bool {
    match target {
        Target::Seal => true,
        Target::Auths(rest) => !rest.is_empty(),
        _ => false,
    }
}

/// Serves one request. Returns the reply and the envelope's `mount_type`.
pub async fn handle(
    server: &VaultServer,
    req: &ApiRequest,
) -> Result<(Reply, &'static str), ApiError> {
    let path = req.path.trim_end_matches('/');
    {
        let mut core = server.lock();
        if let Some(result) = core.handle_unauthenticated(req, path) {
            return result.map(|reply| (reply, "system"));
        }
    }
    if req.verb == Verb::Head {
        return Err(ApiError::UnsupportedOperation);
    }
    if let Some(rest) = path.strip_prefix("auth/")
        && is_login(server, rest)
    {
        return login(server, req, rest)
            .await
            .map(|reply| (reply, "kubernetes"));
    }
    let mut core = server.lock();
    let now = tokens::now();
    let state = core.unsealed()?;
    let token = req.token.as_deref().ok_or(ApiError::PermissionDenied)?;
    let entry = state
        .tokens
        .lookup(token, now)
        .cloned()
        .ok_or(ApiError::PermissionDenied)?;
    let target = resolve(state, &req.path);
    if !entry.is_root() {
        let acl_path = match req.verb {
            Verb::List if !req.path.ends_with('/') => format!("{}/", req.path),
            _ => req.path.clone(),
        };
        let allowed = match &target {
            Ok(target) => state.acl(&entry).allows(
                &acl_path,
                operation(state, req.verb, target),
                needs_sudo(target),
            ),
            // Unknown paths are denied before they are reported missing.
            Err(_) => false,
        };
        if !allowed {
            return Err(ApiError::PermissionDenied);
        }
    }
    let target = target?;
    let mount_type = target.mount_type();
    let caller = Caller {
        id: token,
        entry: &entry,
    };
    let reply = match &target {
        Target::Seal => {
            if req.verb != Verb::Write {
                return Err(ApiError::UnsupportedOperation);
            }
            core.seal();
            return Ok((Reply::NoContent, mount_type));
        }
        Target::CapabilitiesSelf => capabilities_self(state, req, &entry)?,
        Target::Mounts(rest) => mounts::handle_mounts(state, req, rest)?,
        Target::Auths(rest) => mounts::handle_auth(state, req, rest)?,
        Target::Policy(flavor, name) => policies::handle(state, req, *flavor, name)?,
        Target::Token(sub) => auth_token::handle(state, req, sub, &caller, now)?,
        Target::Kubernetes(mount, sub) => state
            .auths
            .get_mut(mount)
            .ok_or_else(|| ApiError::NoHandler(req.path.clone()))?
            .kubernetes
            .handle(req, sub)?,
        Target::Kv(mount, sub) => {
            match &mut state
                .mounts
                .get_mut(mount)
                .ok_or_else(|| ApiError::NoHandler(req.path.clone()))?
                .engine
            {
                SecretEngine::KvV2(kv) => kv.handle(req, sub)?,
                SecretEngine::KvV1(kv) => kv.handle(req, sub)?,
            }
        }
    };
    if matches!(req.verb, Verb::Write | Verb::Delete) {
        core.persist()?;
    }
    Ok((reply, mount_type))
}

/// `sys/capabilities-self`: what the caller's token may do on the given paths.
fn capabilities_self(
    state: &State,
    req: &ApiRequest,
    entry: &TokenEntry,
) -> Result<Reply, ApiError> {
    if req.verb != Verb::Write {
        return Err(ApiError::UnsupportedOperation);
    }
    let mut paths = req.list_field("paths").unwrap_or_default();
    if let Some(path) = req.str_field("path").filter(|p| !p.is_empty()) {
        paths.push(path.to_string());
    }
    if paths.is_empty() {
        return Err(ApiError::bad("missing paths"));
    }
    let acl = state.acl(entry);
    let mut data = serde_json::Map::new();
    let mut all: Vec<&str> = Vec::new();
    for path in &paths {
        let path = path.trim_start_matches('/');
        let names = if entry.is_root() {
            vec!["root"]
        } else {
            acl.capabilities(path).names()
        };
        all.extend(&names);
        data.insert(path.to_string(), serde_json::json!(names));
    }
    all.sort_unstable();
    all.dedup();
    data.insert("capabilities".into(), serde_json::json!(all));
    Ok(Reply::data(serde_json::Value::Object(data)))
}

/// Whether `rest` (after `auth/`) is exactly the `login` path of a user auth mount (a role
/// named `login` is not).
fn is_login(server: &VaultServer, rest: &str) -> bool {
    let mut core = server.lock();
    let Ok(state) = core.unsealed() else {
        return false;
    };
    state
        .auth_mount_of(rest)
        .is_some_and(|(_, sub)| sub.trim_end_matches('/') == "login")
}

/// `auth/<mount>/login`: local checks under the lock, the TokenReview without it, then the
/// token is issued under the lock again.
async fn login(server: &VaultServer, req: &ApiRequest, rest: &str) -> Result<Reply, ApiError> {
    let pending = {
        let mut core = server.lock();
        let state = core.unsealed()?;
        let (mount, _) = state
            .auth_mount_of(rest)
            .ok_or_else(|| ApiError::NoHandler(req.path.clone()))?;
        if req.verb != Verb::Write {
            return Err(ApiError::UnsupportedOperation);
        }
        auth_kubernetes::prepare_login(&state.auths[&mount].kubernetes, &mount, req, tokens::now())?
    };
    let request = ReviewRequest {
        kubernetes_host: &pending.kubernetes_host,
        jwt: &pending.jwt,
        audiences: &pending.audiences,
    };
    let review = server.reviewer().review_as(&request, &pending.reviewer);
    let reviewed: ReviewedAccount = match tokio::time::timeout(REVIEW_TIMEOUT, review).await {
        Ok(Ok(account)) => account,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "vault kubernetes login: token review failed");
            return Err(ApiError::PermissionDenied);
        }
        Err(_) => {
            tracing::debug!("vault kubernetes login: token review timed out");
            return Err(ApiError::PermissionDenied);
        }
    };
    let mut core = server.lock();
    let now = tokens::now();
    let State {
        auths,
        tokens: store,
        ..
    } = core.unsealed()?;
    let mount = auths
        .get_mut(pending.mount())
        .ok_or(ApiError::PermissionDenied)?;
    let reply =
        auth_kubernetes::finish_login(&mut mount.kubernetes, store, pending, &reviewed, now)?;
    core.persist()?;
    Ok(reply)
}
