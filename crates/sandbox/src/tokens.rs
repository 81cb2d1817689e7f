//! TokenRequest (`serviceaccounts/<name>/token`) and TokenReview. Who may call them is
//! decided by RBAC before they run (`create serviceaccounts/token`, `create tokenreviews`).

use serde_json::{Value, json};

use super::auth::{Claims, DEFAULT_AUDIENCES, ISSUER, K8sClaims, NameUid};
use super::cluster::WriteOpts;
use super::server::Shared;
use super::status::ApiError;
use super::store::{ObjectKey, WriteMeta};

/// Shortest token lifetime the apiserver issues (10 minutes).
const MIN_EXPIRATION: i64 = 600;
/// Default lifetime (1 hour).
const DEFAULT_EXPIRATION: i64 = 3600;

/// Issues a signed service-account token.
///
/// # Errors
/// 404 when the service account is missing; 422 for a too-short expiration.
pub fn token_request(
    shared: &Shared,
    ns: &str,
    name: &str,
    body: Value,
    opts: &WriteOpts,
) -> Result<Value, ApiError> {
    let sa = shared
        .cluster
        .store
        .get(&ObjectKey::new("/serviceaccounts", ns, name))
        .ok_or_else(|| ApiError::not_found("serviceaccounts", name))?;
    let spec = &body["spec"];
    let exp_secs = spec["expirationSeconds"]
        .as_i64()
        .unwrap_or(DEFAULT_EXPIRATION);
    if exp_secs < MIN_EXPIRATION {
        return Err(ApiError::invalid(
            "TokenRequest",
            name,
            "spec.expirationSeconds",
            &format!("Invalid value: {exp_secs}: may not specify a duration less than 10 minutes"),
        ));
    }
    let audiences: Vec<String> = match spec["audiences"].as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => DEFAULT_AUDIENCES.iter().map(|s| s.to_string()).collect(),
    };
    let now = jiff::Timestamp::now().as_second();
    let claims = Claims {
        aud: audiences.clone(),
        exp: now + exp_secs,
        iat: now,
        nbf: now,
        iss: ISSUER.into(),
        jti: uuid::Uuid::new_v4().to_string(),
        sub: format!("system:serviceaccount:{ns}:{name}"),
        kubernetes: K8sClaims {
            namespace: ns.into(),
            serviceaccount: NameUid {
                name: name.into(),
                uid: sa["metadata"]["uid"].as_str().unwrap_or("").into(),
            },
        },
    };
    shared.cluster.store.record_unstored(
        &ObjectKey::new("/serviceaccounts", ns, name),
        &WriteMeta {
            verb: "create-token",
            resource: "serviceaccounts/token".into(),
            field_manager: opts.field_manager.clone(),
            actor: opts.actor.clone(),
            dry_run: opts.dry_run,
        },
    );
    let token = if opts.dry_run {
        String::new()
    } else {
        shared.auth.issue(&claims)
    };
    let exp_ts = jiff::Timestamp::from_second(now + exp_secs)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": {"audiences": audiences, "expirationSeconds": exp_secs, "boundObjectRef": spec["boundObjectRef"].clone()},
        "status": {"token": token, "expirationTimestamp": exp_ts},
    }))
}

/// Reviews a token: signature, expiry, audiences, and that the service account still
/// exists with the uid the token names.
///
/// # Errors
/// 400 when `spec.token` is missing.
pub fn token_review(shared: &Shared, body: Value) -> Result<Value, ApiError> {
    let token = body["spec"]["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::invalid("TokenReview", "", "spec.token", "Required value"))?;
    let requested = crate::json_fields::string_list(&body["spec"]["audiences"]);
    let check_auds: Vec<String> = if requested.is_empty() {
        DEFAULT_AUDIENCES.iter().map(|s| s.to_string()).collect()
    } else {
        requested.clone()
    };
    let now = jiff::Timestamp::now().as_second();
    let status = match shared.auth.verify(token, &check_auds, now) {
        Err(e) => json!({"authenticated": false, "user": {}, "error": e.to_string()}),
        Ok(claims) => {
            let k = &claims.kubernetes;
            let sa = shared.cluster.store.get(&ObjectKey::new(
                "/serviceaccounts",
                k.namespace.as_str(),
                k.serviceaccount.name.as_str(),
            ));
            match sa {
                Some(sa)
                    if sa["metadata"]["uid"].as_str() == Some(k.serviceaccount.uid.as_str()) =>
                {
                    let auds: Vec<String> = claims
                        .aud
                        .iter()
                        .filter(|a| check_auds.contains(a))
                        .cloned()
                        .collect();
                    json!({
                        "authenticated": true,
                        "user": {
                            "username": format!("system:serviceaccount:{}:{}", k.namespace, k.serviceaccount.name),
                            "uid": k.serviceaccount.uid,
                            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", k.namespace), "system:authenticated"],
                            "extra": {"authentication.kubernetes.io/credential-id": [format!("JTI={}", claims.jti)]},
                        },
                        "audiences": auds,
                    })
                }
                _ => {
                    let e = super::auth::TokenError::Revoked(format!(
                        "{}/{}",
                        k.namespace, k.serviceaccount.name
                    ));
                    json!({"authenticated": false, "user": {}, "error": e.to_string()})
                }
            }
        }
    };
    Ok(json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": {"token": token, "audiences": body["spec"]["audiences"].clone()},
        "status": status,
    }))
}
