//! Access reviews answered from the same rules that authorize requests:
//! `SelfSubjectAccessReview` (`kubectl auth can-i`), `SubjectAccessReview` (webhook
//! authorizers, Vault), `LocalSubjectAccessReview`, `SelfSubjectRulesReview`
//! (`kubectl auth can-i --list`) and `SelfSubjectReview` (`kubectl auth whoami`).

use serde_json::{Map, Value, json};

use super::attributes::Attributes;
use super::authorizer::{authorize, rules_for};
use super::user::UserInfo;
use crate::resources::ResourceType;
use crate::status::ApiError;
use crate::store::Store;

fn invalid(rt: &ResourceType, field: &str, value: &str, detail: &str) -> ApiError {
    ApiError::invalid(
        &format!("{}.{}", rt.kind, rt.group),
        "",
        field,
        &format!("Invalid value: {value}: {detail}"),
    )
}

use crate::json_fields::string_list as str_list;

/// The attributes a review's spec asks about, for `user`.
fn attributes_of(rt: &ResourceType, user: &UserInfo, spec: &Value) -> Result<Attributes, ApiError> {
    let res = &spec["resourceAttributes"];
    let non = &spec["nonResourceAttributes"];
    match (res.is_object(), non.is_object()) {
        (true, true) => Err(invalid(
            rt,
            "spec.nonResourceAttributes",
            &non.to_string(),
            "cannot be specified in combination with resourceAttributes",
        )),
        (false, false) => Err(invalid(
            rt,
            "spec.resourceAttributes",
            "null",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
        (true, false) => {
            let s = |k: &str| res[k].as_str().unwrap_or("");
            Ok(Attributes::resource(
                user,
                s("verb"),
                s("group"),
                s("version"),
                s("resource"),
                s("subresource"),
                s("namespace"),
                s("name"),
            ))
        }
        (false, true) => Ok(Attributes::non_resource(
            user,
            non["verb"].as_str().unwrap_or(""),
            non["path"].as_str().unwrap_or(""),
        )),
    }
}

fn answer(
    rt: &ResourceType,
    spec: Value,
    store: &Store,
    a: &Attributes,
    namespace: Option<&str>,
) -> Value {
    let d = authorize(store, a);
    let mut status = json!({"allowed": d.allowed});
    if !d.reason.is_empty() {
        status["reason"] = json!(d.reason);
    }
    let mut meta = json!({"creationTimestamp": null});
    if let Some(ns) = namespace {
        meta["namespace"] = json!(ns);
    }
    json!({
        "kind": rt.kind,
        "apiVersion": rt.api_version(),
        "metadata": meta,
        "spec": spec,
        "status": status,
    })
}

/// Answers a POST of any review kind by `user` (the caller after impersonation), in
/// `namespace` for the namespaced `LocalSubjectAccessReview`.
///
/// # Errors
/// 422 for a spec that names no (or both) attribute kinds, or no user for a
/// SubjectAccessReview; 400 for a LocalSubjectAccessReview about another namespace.
pub fn review(
    store: &Store,
    rt: &ResourceType,
    user: &UserInfo,
    namespace: &str,
    body: Value,
) -> Result<Value, ApiError> {
    let spec = body["spec"].clone();
    match rt.plural.as_str() {
        "selfsubjectaccessreviews" => {
            let a = attributes_of(rt, user, &spec)?;
            Ok(answer(rt, spec, store, &a, None))
        }
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            let name = spec["user"].as_str().unwrap_or("").to_string();
            let groups = str_list(&spec["groups"]);
            if name.is_empty() && groups.is_empty() {
                return Err(invalid(
                    rt,
                    "spec.user",
                    "\"\"",
                    "at least one of user or group must be specified",
                ));
            }
            let extra = spec["extra"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), str_list(v))).collect())
                .unwrap_or_default();
            let subject = UserInfo {
                name,
                uid: spec["uid"].as_str().unwrap_or("").to_string(),
                groups,
                extra,
            };
            let a = attributes_of(rt, &subject, &spec)?;
            if rt.plural == "localsubjectaccessreviews" {
                let asked = spec["resourceAttributes"]["namespace"]
                    .as_str()
                    .unwrap_or("");
                if !spec["resourceAttributes"].is_object() || asked != namespace {
                    return Err(ApiError::bad_request(format!(
                        "spec.resourceAttributes.namespace must match namespace: {asked:?} != {namespace:?}"
                    )));
                }
                return Ok(answer(rt, spec, store, &a, Some(namespace)));
            }
            Ok(answer(rt, spec, store, &a, None))
        }
        "selfsubjectrulesreviews" => {
            let ns = spec["namespace"].as_str().unwrap_or("");
            let (rules, errors) = rules_for(store, user, ns);
            let mut resource_rules = Vec::new();
            let mut non_resource_rules = Vec::new();
            for r in rules {
                if r.non_resource_urls.is_empty() {
                    let mut v = Map::new();
                    v.insert("verbs".into(), json!(r.verbs));
                    v.insert("apiGroups".into(), json!(r.api_groups));
                    v.insert("resources".into(), json!(r.resources));
                    if !r.resource_names.is_empty() {
                        v.insert("resourceNames".into(), json!(r.resource_names));
                    }
                    resource_rules.push(Value::Object(v));
                } else {
                    non_resource_rules
                        .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
                }
            }
            let mut status = json!({
                "resourceRules": resource_rules,
                "nonResourceRules": non_resource_rules,
                "incomplete": !errors.is_empty(),
            });
            if !errors.is_empty() {
                status["evaluationError"] = json!(errors.join(", "));
            }
            Ok(json!({
                "kind": rt.kind, "apiVersion": rt.api_version(),
                "metadata": {"creationTimestamp": null}, "spec": spec, "status": status,
            }))
        }
        "selfsubjectreviews" => {
            let mut info = json!({"username": user.name, "groups": user.groups});
            if !user.uid.is_empty() {
                info["uid"] = json!(user.uid);
            }
            if !user.extra.is_empty() {
                info["extra"] = json!(user.extra);
            }
            Ok(json!({
                "kind": rt.kind, "apiVersion": rt.api_version(),
                "metadata": {"creationTimestamp": null}, "status": {"userInfo": info},
            }))
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource (POST)",
        )),
    }
}
