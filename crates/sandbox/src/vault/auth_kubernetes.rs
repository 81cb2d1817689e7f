//! The Kubernetes auth method (`vault-plugin-auth-kubernetes` `path_config.go`, `path_role.go`,
//! `path_login.go`): configuration, roles bound to service accounts, and login that checks the
//! JWT's claims against the role and then asks the cluster's TokenReview (through
//! [`super::TokenReviewer`]) whether the token is genuine.
//!
//! Login is split in two synchronous halves around the asynchronous review, so no lock is held
//! while the cluster is asked.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::duration;
use super::envelope::Reply;
use super::error::ApiError;
use super::request::{ApiRequest, Verb, string_list};
use super::tokens::{self, DEFAULT_TTL, TokenEntry, TokenStore};
use super::{ReviewedAccount, ReviewerJwt};

/// One kubernetes auth mount's configuration, roles and identity aliases.
#[derive(Default, Serialize, Deserialize)]
pub struct KubernetesAuth {
    config: Option<Config>,
    roles: BTreeMap<String, Role>,
    /// Alias name -> entity id, so a service account keeps its entity across logins.
    entities: BTreeMap<String, String>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Config {
    kubernetes_host: String,
    kubernetes_ca_cert: String,
    /// Kept inside the encrypted barrier; only `token_reviewer_jwt_set` is ever returned.
    token_reviewer_jwt: String,
    issuer: String,
    disable_iss_validation: bool,
    disable_local_ca_jwt: bool,
    use_annotations_as_alias_metadata: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Role {
    bound_service_account_names: Vec<String>,
    bound_service_account_namespaces: Vec<String>,
    audience: String,
    alias_name_source: String,
    token_policies: Vec<String>,
    token_ttl: u64,
    token_max_ttl: u64,
    token_period: u64,
    token_num_uses: u64,
    token_bound_cidrs: Vec<String>,
    token_explicit_max_ttl: u64,
    token_no_default_policy: bool,
    token_type: String,
}

/// The service account a JWT claims to be.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Claims {
    namespace: String,
    name: String,
    uid: String,
    audiences: Vec<String>,
    issuer: Option<String>,
    expires: Option<i64>,
}

/// A login that passed the local checks and awaits the TokenReview.
pub struct PendingLogin {
    mount: String,
    role_name: String,
    role: Role,
    claims: Claims,
    /// Where the TokenReview goes (the configured `kubernetes_host`).
    pub kubernetes_host: String,
    /// The login JWT, to be reviewed.
    pub jwt: String,
    /// The audiences the review must check (the role's `audience`, if any).
    pub audiences: Vec<String>,
    /// The credential the review is sent with.
    pub reviewer: ReviewerJwt,
}

/// Never prints the JWT.
impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("mount", &self.mount)
            .field("role", &self.role_name)
            .field("kubernetes_host", &self.kubernetes_host)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

impl PendingLogin {
    /// The auth mount path (`kubernetes/`) the login arrived on.
    pub fn mount(&self) -> &str {
        &self.mount
    }
}

impl KubernetesAuth {
    /// `config`, `role`, `role/<name>` below the mount. `login` is served by
    /// [`prepare_login`]/[`finish_login`].
    pub fn handle(&mut self, req: &ApiRequest, sub: &str) -> Result<Reply, ApiError> {
        match (sub.trim_end_matches('/'), req.verb) {
            ("config", Verb::Read) => {
                let config = self.config.as_ref().ok_or(ApiError::NotFound)?;
                Ok(Reply::data(json!({
                    "kubernetes_host": config.kubernetes_host,
                    "kubernetes_ca_cert": config.kubernetes_ca_cert,
                    "pem_keys": [],
                    "issuer": config.issuer,
                    "disable_iss_validation": config.disable_iss_validation,
                    "disable_local_ca_jwt": config.disable_local_ca_jwt,
                    "token_reviewer_jwt_set": !config.token_reviewer_jwt.is_empty(),
                    "use_annotations_as_alias_metadata": config.use_annotations_as_alias_metadata,
                })))
            }
            ("config", Verb::Write) => {
                self.config = Some(parse_config(req)?);
                Ok(Reply::NoContent)
            }
            ("role", Verb::List) => {
                if self.roles.is_empty() {
                    return Err(ApiError::NotFound);
                }
                Ok(Reply::data(
                    json!({ "keys": self.roles.keys().collect::<Vec<_>>() }),
                ))
            }
            (path, verb) => {
                let Some(name) = path.strip_prefix("role/").filter(|n| !n.is_empty()) else {
                    return Err(ApiError::NoHandler(sub.into()));
                };
                let name = name.to_lowercase();
                match verb {
                    Verb::Read => self
                        .roles
                        .get(&name)
                        .map(|role| Reply::data(role.json()))
                        .ok_or(ApiError::NotFound),
                    Verb::Write => {
                        let existing = self.roles.get(&name).cloned();
                        let role = parse_role(req, existing)?;
                        let warn = role.audience.is_empty();
                        self.roles.insert(name.clone(), role);
                        Ok(if warn {
                            Reply::warnings(vec![format!(
                                "Role {name} does not have an audience configured. While \
                                 audiences are not required, consider specifying them as it is \
                                 more secure."
                            )])
                        } else {
                            Reply::NoContent
                        })
                    }
                    Verb::Delete => {
                        self.roles.remove(&name);
                        Ok(Reply::NoContent)
                    }
                    _ => Err(ApiError::UnsupportedOperation),
                }
            }
        }
    }
}

impl Role {
    fn json(&self) -> Value {
        json!({
            "alias_name_source": self.alias_name_source,
            "audience": self.audience,
            "bound_service_account_names": self.bound_service_account_names,
            "bound_service_account_namespace_selector": "",
            "bound_service_account_namespaces": self.bound_service_account_namespaces,
            "token_bound_cidrs": self.token_bound_cidrs,
            "token_explicit_max_ttl": self.token_explicit_max_ttl,
            "token_max_ttl": self.token_max_ttl,
            "token_no_default_policy": self.token_no_default_policy,
            "token_num_uses": self.token_num_uses,
            "token_period": self.token_period,
            "token_policies": self.token_policies,
            "token_ttl": self.token_ttl,
            "token_type": self.token_type,
            "policies": self.token_policies,
            "ttl": self.token_ttl,
            "max_ttl": self.token_max_ttl,
            "period": self.token_period,
            "num_uses": self.token_num_uses,
        })
    }
}

fn parse_config(req: &ApiRequest) -> Result<Config, ApiError> {
    let host = req
        .str_field("kubernetes_host")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ApiError::bad("no host provided"))?;
    if req
        .list_field("pem_keys")
        .is_some_and(|keys| !keys.is_empty())
    {
        return Err(ApiError::NotImplemented(
            "JWT signature verification with pem_keys".into(),
        ));
    }
    let ca = req.str_field("kubernetes_ca_cert").unwrap_or_default();
    if !ca.is_empty() && !ca.contains("-----BEGIN CERTIFICATE-----") {
        return Err(ApiError::bad(
            "data does not contain any valid RSA or ECDSA certificates",
        ));
    }
    Ok(Config {
        kubernetes_host: host.to_string(),
        kubernetes_ca_cert: ca.to_string(),
        token_reviewer_jwt: req
            .str_field("token_reviewer_jwt")
            .unwrap_or_default()
            .into(),
        issuer: req.str_field("issuer").unwrap_or_default().into(),
        disable_iss_validation: req.bool_field("disable_iss_validation").unwrap_or(true),
        disable_local_ca_jwt: req.bool_field("disable_local_ca_jwt").unwrap_or(false),
        use_annotations_as_alias_metadata: req
            .bool_field("use_annotations_as_alias_metadata")
            .unwrap_or(false),
    })
}

/// Reads a field under its `token_*` name, else its deprecated alias (which Vault upgrades).
fn aliased<'a>(req: &'a ApiRequest, name: &str, alias: &str) -> Option<&'a Value> {
    let field = |key: &str| req.body.get(key).filter(|v| !v.is_null());
    field(name).or_else(|| field(alias))
}

fn parse_role(req: &ApiRequest, existing: Option<Role>) -> Result<Role, ApiError> {
    let mut role = existing.unwrap_or_else(|| Role {
        alias_name_source: "serviceaccount_uid".into(),
        token_type: "default".into(),
        ..Role::default()
    });
    let list = |key: &str| -> Result<Option<Vec<String>>, ApiError> {
        match req.body.get(key) {
            None => Ok(None),
            Some(v) => string_list(v)
                .map(Some)
                .ok_or_else(|| ApiError::bad(format!("{key:?} must be a list of strings"))),
        }
    };
    if let Some(names) = list("bound_service_account_names")? {
        role.bound_service_account_names = names;
    }
    if let Some(namespaces) = list("bound_service_account_namespaces")? {
        role.bound_service_account_namespaces = namespaces;
    }
    if req
        .str_field("bound_service_account_namespace_selector")
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::NotImplemented(
            "bound_service_account_namespace_selector".into(),
        ));
    }
    for (field, values) in [
        (
            "bound_service_account_names",
            &role.bound_service_account_names,
        ),
        (
            "bound_service_account_namespaces",
            &role.bound_service_account_namespaces,
        ),
    ] {
        if values.is_empty() {
            return Err(ApiError::bad(format!("{field:?} can not be empty")));
        }
        if values.len() > 1 && values.iter().any(|v| v == "*") {
            return Err(ApiError::bad(format!(
                "can not mix \"*\" with values for {field:?}"
            )));
        }
    }
    if let Some(audience) = req.str_field("audience") {
        role.audience = audience.to_string();
    }
    if let Some(source) = req.str_field("alias_name_source") {
        if !matches!(source, "serviceaccount_uid" | "serviceaccount_name") {
            return Err(ApiError::bad(format!(
                "invalid alias_name_source {source:?}, must be serviceaccount_uid or serviceaccount_name"
            )));
        }
        role.alias_name_source = source.to_string();
    }
    if let Some(value) = aliased(req, "token_policies", "policies") {
        role.token_policies = tokens::normalize_policies(
            &string_list(value)
                .ok_or_else(|| ApiError::bad("\"token_policies\" must be a list of strings"))?,
            false,
        );
    }
    for (name, alias, slot) in [
        ("token_ttl", "ttl", &mut role.token_ttl),
        ("token_max_ttl", "max_ttl", &mut role.token_max_ttl),
        ("token_period", "period", &mut role.token_period),
        (
            "token_explicit_max_ttl",
            "",
            &mut role.token_explicit_max_ttl,
        ),
    ] {
        if let Some(value) = aliased(req, name, alias) {
            *slot = duration::seconds(name, Some(value))?;
        }
    }
    if let Some(uses) = req
        .u64_field("token_num_uses")
        .or(req.u64_field("num_uses"))
    {
        role.token_num_uses = uses;
    }
    if let Some(value) = aliased(req, "token_bound_cidrs", "bound_cidrs") {
        role.token_bound_cidrs = string_list(value)
            .ok_or_else(|| ApiError::bad("\"token_bound_cidrs\" must be a list of strings"))?;
    }
    if let Some(flag) = req.bool_field("token_no_default_policy") {
        role.token_no_default_policy = flag;
    }
    if let Some(kind) = req.str_field("token_type") {
        match kind {
            "default" | "service" | "default-service" => role.token_type = kind.to_string(),
            "batch" | "default-batch" => {
                return Err(ApiError::NotImplemented("batch tokens".into()));
            }
            other => {
                return Err(ApiError::bad(format!(
                    "invalid 'token_type' value {other:?}"
                )));
            }
        }
    }
    if role.token_max_ttl > 0 && role.token_ttl > role.token_max_ttl {
        return Err(ApiError::bad(
            "\"token_ttl\" value must be less than \"token_max_ttl\" value",
        ));
    }
    Ok(role)
}

/// Decodes the claims of an (unverified) service-account JWT: the projected
/// `kubernetes.io` claims, else the legacy secret-token ones, else `sub`.
fn decode_claims(jwt: &str) -> Option<Claims> {
    let mut parts = jwt.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let text = |v: &Value| v.as_str().map(str::to_string);
    let projected = claims.get("kubernetes.io");
    let legacy = |key: &str| {
        claims
            .get(format!("kubernetes.io/serviceaccount/{key}"))
            .and_then(text)
    };
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .and_then(|s| s.strip_prefix("system:serviceaccount:"))
        .and_then(|s| s.split_once(':'));
    let namespace = projected
        .and_then(|p| p.get("namespace"))
        .and_then(text)
        .or_else(|| legacy("namespace"))
        .or_else(|| sub.map(|(ns, _)| ns.to_string()))?;
    let name = projected
        .and_then(|p| p.pointer("/serviceaccount/name"))
        .and_then(text)
        .or_else(|| legacy("service-account.name"))
        .or_else(|| sub.map(|(_, name)| name.to_string()))?;
    let uid = projected
        .and_then(|p| p.pointer("/serviceaccount/uid"))
        .and_then(text)
        .or_else(|| legacy("service-account.uid"))
        .unwrap_or_default();
    let audiences = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(text).collect(),
        _ => Vec::new(),
    };
    Some(Claims {
        namespace,
        name,
        uid,
        audiences,
        issuer: claims.get("iss").and_then(text),
        expires: claims.get("exp").and_then(Value::as_i64),
    })
}

/// Go's `glob.Glob`: `*` matches any run of characters.
fn glob(pattern: &str, value: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == value;
    };
    let Some(mut remaining) = value.strip_prefix(first) else {
        return false;
    };
    let mut pieces: Vec<&str> = rest.split('*').collect();
    let last = pieces.pop().unwrap_or_default();
    for piece in pieces {
        match remaining.find(piece) {
            Some(at) => remaining = &remaining[at + piece.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

fn bound(list: &[String], value: &str) -> bool {
    list.iter()
        .any(|pattern| pattern == "*" || glob(pattern, value))
}

/// First half of `auth/<mount>/login`: role, claims and bound checks.
///
/// # Errors
/// 400 for a missing role/jwt or unknown role, 403 for unbound service accounts or a JWT that
/// cannot be used, as the plugin answers.
pub fn prepare_login(
    auth: &KubernetesAuth,
    mount: &str,
    req: &ApiRequest,
    now: i64,
) -> Result<PendingLogin, ApiError> {
    let role_name = req
        .str_field("role")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad("missing role"))?
        .to_lowercase();
    let jwt = req
        .str_field("jwt")
        .filter(|j| !j.is_empty())
        .ok_or_else(|| ApiError::bad("missing jwt"))?;
    let role = auth
        .roles
        .get(&role_name)
        .ok_or_else(|| ApiError::bad(format!("invalid role name {role_name:?}")))?;
    let config = auth
        .config
        .as_ref()
        // The plugin answers this with a plain error, which Vault turns into a 500.
        .ok_or_else(|| {
            ApiError::Internal(
                "could not load backend configuration; write auth/<mount>/config first".into(),
            )
        })?;
    let claims = decode_claims(jwt).ok_or(ApiError::PermissionDenied)?;
    if claims.expires.is_some_and(|exp| exp <= now) {
        return Err(ApiError::PermissionDenied);
    }
    if !config.disable_iss_validation
        && !config.issuer.is_empty()
        && claims.issuer.as_deref() != Some(config.issuer.as_str())
    {
        return Err(ApiError::PermissionDenied);
    }
    if !bound(&role.bound_service_account_names, &claims.name) {
        return Err(ApiError::Forbidden(
            "service account name not authorized".into(),
        ));
    }
    if !bound(&role.bound_service_account_namespaces, &claims.namespace) {
        return Err(ApiError::Forbidden("namespace not authorized".into()));
    }
    let audiences = if role.audience.is_empty() {
        Vec::new()
    } else {
        if !claims.audiences.contains(&role.audience) {
            return Err(ApiError::Forbidden(
                "invalid audience (aud) claim: audience claim does not match any expected audience"
                    .into(),
            ));
        }
        vec![role.audience.clone()]
    };
    Ok(PendingLogin {
        mount: mount.to_string(),
        role_name,
        role: role.clone(),
        claims,
        kubernetes_host: config.kubernetes_host.clone(),
        jwt: jwt.to_string(),
        audiences,
        reviewer: if !config.token_reviewer_jwt.is_empty() {
            ReviewerJwt::Configured(config.token_reviewer_jwt.clone())
        } else if !config.disable_local_ca_jwt {
            ReviewerJwt::Local
        } else {
            ReviewerJwt::Client
        },
    })
}

/// Second half of login, after the TokenReview said the JWT is genuine: the reviewed account
/// must be the one the JWT claims; then a service token is issued.
///
/// # Errors
/// 403 `permission denied` when the review names another account, or the mount or role
/// vanished meanwhile.
pub fn finish_login(
    auth: &mut KubernetesAuth,
    tokens: &mut TokenStore,
    pending: PendingLogin,
    reviewed: &ReviewedAccount,
    now: i64,
) -> Result<Reply, ApiError> {
    let claims = &pending.claims;
    if reviewed.namespace != claims.namespace
        || reviewed.name != claims.name
        || (!claims.uid.is_empty() && reviewed.uid != claims.uid)
    {
        return Err(ApiError::PermissionDenied);
    }
    if !auth.roles.contains_key(&pending.role_name) {
        return Err(ApiError::PermissionDenied);
    }
    let role = &pending.role;
    let alias = if role.alias_name_source == "serviceaccount_name" {
        format!("{}/{}", reviewed.namespace, reviewed.name)
    } else {
        reviewed.uid.clone()
    };
    let entity_id = auth
        .entities
        .entry(alias)
        .or_insert_with(|| uuid::Uuid::new_v4().to_string())
        .clone();
    let mut ttl = if role.token_ttl > 0 {
        role.token_ttl
    } else {
        DEFAULT_TTL
    };
    if role.token_max_ttl > 0 {
        ttl = ttl.min(role.token_max_ttl);
    }
    let meta: BTreeMap<String, String> = [
        ("role", pending.role_name.clone()),
        ("service_account_name", reviewed.name.clone()),
        ("service_account_namespace", reviewed.namespace.clone()),
        ("service_account_secret_name", String::new()),
        ("service_account_uid", reviewed.uid.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let entry = TokenEntry {
        accessor: tokens::random_id(24),
        policies: tokens::normalize_policies(&role.token_policies, !role.token_no_default_policy),
        path: format!("auth/{}login", pending.mount),
        display_name: format!(
            "{}{}-{}",
            pending.mount.replace('/', "-"),
            reviewed.namespace,
            reviewed.name
        ),
        meta: Some(meta),
        creation_time: now,
        creation_ttl: ttl,
        expire_at: Some(now + i64::try_from(ttl).unwrap_or(i64::MAX / 2)),
        entity_id,
        orphan: true,
        renewable: true,
        role: Some(pending.role_name.clone()),
    };
    let id = tokens.issue(entry.clone());
    Ok(Reply::auth(entry.auth_body(&id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;

    fn jwt(claims: Value) -> String {
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            enc.encode(br#"{"alg":"RS256"}"#),
            enc.encode(claims.to_string())
        )
    }

    fn projected(ns: &str, name: &str) -> String {
        jwt(json!({
            "sub": format!("system:serviceaccount:{ns}:{name}"),
            "aud": ["vault"],
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": "u-1"}},
        }))
    }

    fn post(body: Value) -> ApiRequest {
        ApiRequest::decode(
            &Method::POST,
            "/v1/auth/kubernetes/x",
            None,
            None,
            body.to_string().as_bytes(),
        )
        .unwrap()
    }

    fn configured() -> KubernetesAuth {
        let mut auth = KubernetesAuth::default();
        auth.handle(&post(json!({"kubernetes_host": "https://k8s"})), "config")
            .unwrap();
        let reply = auth
            .handle(
                &post(json!({
                    "bound_service_account_names": ["external-secrets"],
                    "bound_service_account_namespaces": "external-secrets",
                    "token_policies": ["eso-read"],
                    "token_ttl": "1h",
                })),
                "role/eso",
            )
            .unwrap();
        assert!(
            matches!(
                reply,
                Reply::Envelope {
                    warnings: Some(_),
                    ..
                }
            ),
            "audience warning"
        );
        auth
    }

    #[test]
    fn decodes_projected_and_legacy_claims() {
        let c = decode_claims(&projected("ns", "sa")).unwrap();
        assert_eq!(
            (c.namespace.as_str(), c.name.as_str(), c.uid.as_str()),
            ("ns", "sa", "u-1")
        );
        assert_eq!(c.audiences, ["vault"]);
        let legacy = jwt(json!({
            "kubernetes.io/serviceaccount/namespace": "a",
            "kubernetes.io/serviceaccount/service-account.name": "b",
            "kubernetes.io/serviceaccount/service-account.uid": "c",
        }));
        let c = decode_claims(&legacy).unwrap();
        assert_eq!(
            (c.namespace.as_str(), c.name.as_str(), c.uid.as_str()),
            ("a", "b", "c")
        );
        assert!(decode_claims("not-a-jwt").is_none());
    }

    #[test]
    fn login_checks_bound_names_then_namespaces() {
        let auth = configured();
        let login = |jwt: String| post(json!({"role": "eso", "jwt": jwt}));
        let err = prepare_login(
            &auth,
            "kubernetes/",
            &login(projected("external-secrets", "other")),
            0,
        )
        .unwrap_err();
        assert_eq!(
            err,
            ApiError::Forbidden("service account name not authorized".into())
        );
        let err = prepare_login(
            &auth,
            "kubernetes/",
            &login(projected("default", "external-secrets")),
            0,
        )
        .unwrap_err();
        assert_eq!(err, ApiError::Forbidden("namespace not authorized".into()));
        let err = prepare_login(
            &auth,
            "kubernetes/",
            &post(json!({"role": "nope", "jwt": "x"})),
            0,
        )
        .unwrap_err();
        assert_eq!(err, ApiError::bad("invalid role name \"nope\""));
    }

    #[test]
    fn login_issues_a_token_for_the_reviewed_account() {
        let mut auth = configured();
        let mut tokens = TokenStore::default();
        let req =
            post(json!({"role": "eso", "jwt": projected("external-secrets", "external-secrets")}));
        let pending = prepare_login(&auth, "kubernetes/", &req, 0).unwrap();
        assert_eq!(pending.kubernetes_host, "https://k8s");
        let other = ReviewedAccount {
            namespace: "external-secrets".into(),
            name: "external-secrets".into(),
            uid: "u-2".into(),
        };
        assert_eq!(
            finish_login(&mut auth, &mut tokens, pending, &other, 0),
            Err(ApiError::PermissionDenied)
        );
        let pending = prepare_login(&auth, "kubernetes/", &req, 0).unwrap();
        let me = ReviewedAccount {
            uid: "u-1".into(),
            ..other
        };
        let Reply::Envelope {
            auth: Some(body), ..
        } = finish_login(&mut auth, &mut tokens, pending, &me, 0).unwrap()
        else {
            panic!("auth envelope expected");
        };
        assert_eq!(body["policies"], json!(["default", "eso-read"]));
        assert_eq!(body["lease_duration"], 3600);
        assert_eq!(body["metadata"]["service_account_uid"], "u-1");
        let token = body["client_token"].as_str().unwrap();
        assert!(tokens.lookup(token, 10).is_some());
    }

    #[test]
    fn role_validation_and_globs() {
        let mut auth = KubernetesAuth::default();
        let err = auth
            .handle(
                &post(json!({"bound_service_account_namespaces": ["a"]})),
                "role/r",
            )
            .unwrap_err();
        assert_eq!(
            err,
            ApiError::bad("\"bound_service_account_names\" can not be empty")
        );
        assert!(glob("vault-*", "vault-agent"));
        assert!(glob("*-agent", "vault-agent"));
        assert!(!glob("vault-*", "eso"));
        assert!(bound(&["*".into()], "anything"));
    }
}
