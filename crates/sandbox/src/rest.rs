//! Resource endpoints: `/api/v1/...` and `/apis/<g>/<v>/...` collections, objects and
//! subresources, mapped onto [`Cluster`](super::cluster::Cluster) operations.

use std::sync::Arc;

use base64::Engine;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{Value, json};

use super::cluster::WriteOpts;
use super::http::{self, Body, Query};
use super::patch::PatchType;
use super::portforward;
use super::protobuf;
use super::rbac::{self, UserInfo};
use super::resources::ResourceType;
use super::server::Shared;
use super::status::{ApiError, success_status};
use super::store::Actor;
use super::store::selector::{FieldSelector, LabelSelector};
use super::tokens;
use super::watch;

/// A parsed resource URL.
#[derive(Debug)]
struct Target<'a> {
    rt: Arc<ResourceType>,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    sub: Option<&'a str>,
}

fn parse<'a>(
    shared: &Shared,
    group: &str,
    version: &str,
    rest: &[&'a str],
) -> Result<Target<'a>, ApiError> {
    let reg = &shared.cluster.registry;
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if reg.lookup(group, version, plural).is_some()
                && !(group.is_empty() && matches!(*plural, "status" | "finalize")) =>
        {
            let mut v = vec![*plural];
            v.extend_from_slice(tail);
            (Some(*ns), v)
        }
        other => (None, other.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(*n), None),
        [p, n, s] => (*p, Some(*n), Some(*s)),
        _ => return Err(ApiError::no_route()),
    };
    let rt = reg
        .lookup(group, version, plural)
        .ok_or_else(ApiError::no_route)?;
    if namespace.is_some() && !rt.namespaced {
        return Err(ApiError::no_route());
    }
    if rt.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::no_route());
    }
    Ok(Target {
        rt,
        namespace,
        name,
        sub,
    })
}

fn user_agent_manager(req: &Request<Incoming>) -> String {
    req.headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.split('/').next().unwrap_or(ua).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn write_opts(q: &Query, req: &Request<Incoming>, apply: bool) -> Result<WriteOpts, ApiError> {
    let dry_run = match q.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other:?}; supported: All"
            )));
        }
    };
    let field_manager = match q.get("fieldManager") {
        Some(m) if !m.is_empty() => Some(m.to_string()),
        _ if apply => None,
        _ => Some(user_agent_manager(req)),
    };
    Ok(WriteOpts {
        dry_run,
        field_manager,
        actor: Actor::Client,
        force: q.flag("force"),
        strict: q.get("fieldValidation") == Some("Strict"),
    })
}

fn parse_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    if content_type.contains("protobuf") {
        return protobuf::decode(body);
    }
    // kubectl and kube-rs send JSON; accept YAML too, as the apiserver does.
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml_ng::from_slice(body))
        .map_err(|e| ApiError::bad_request(format!("cannot decode the request body: {e}")))
}

/// Handles one resource request.
pub async fn handle(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    user: &UserInfo,
    group: &str,
    version: &str,
    rest: &[&str],
    q: &Query,
) -> Response<Body> {
    let t = match parse(shared, group, version, rest) {
        Ok(t) => t,
        Err(e) => return http::error(&e),
    };
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if matches!(method, Method::POST | Method::PUT) && content_type.contains("cbor") {
        // CBOR clients fall back to JSON on 415.
        return http::error(&ApiError::unsupported_media_type(content_type));
    }
    // Upgrades take the request itself.
    if t.sub == Some("portforward") && t.rt.plural == "pods" && t.rt.group.is_empty() {
        return portforward::handle(
            shared.clone(),
            req,
            t.namespace.unwrap_or(""),
            t.name.unwrap_or(""),
            q,
        )
        .await;
    }
    if t.sub == Some("log")
        && t.rt.plural == "pods"
        && t.rt.group.is_empty()
        && method == Method::GET
    {
        // What a simulated process printed (the runtime's record); other containers are silent.
        let ns = t.namespace.unwrap_or("");
        let name = t.name.unwrap_or("");
        return match shared.cluster.get(&t.rt, ns, name) {
            Ok(pod) => {
                let container = q
                    .get("container")
                    .filter(|c| !c.is_empty())
                    .or_else(|| pod["spec"]["containers"][0]["name"].as_str())
                    .unwrap_or("")
                    .to_string();
                let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
                match shared
                    .runtime
                    .logs(uid, &container, q.flag("previous"), q.flag("timestamps"))
                {
                    Some(text) => http::text(200, text),
                    None => http::error(&ApiError::bad_request(format!(
                        "previous terminated container {container:?} in pod {name:?} not found"
                    ))),
                }
            }
            Err(e) => http::error(&e),
        };
    }
    let accept_table = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"));
    if method == Method::GET && t.name.is_none() && q.flag("watch") {
        let ns = t.namespace.map(str::to_string);
        return watch::handle(shared.clone(), t.rt.clone(), ns, q, accept_table).await;
    }
    let result = dispatch(shared, req, user, &t, &method, q).await;
    match result {
        Ok((code, body)) => {
            if accept_table && code == 200 && t.sub.is_none() && method == Method::GET {
                return http::json(200, &super::table::render(&t.rt, &body));
            }
            http::json(code, &body)
        }
        Err(e) => http::error(&e),
    }
}

async fn dispatch(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    user: &UserInfo,
    t: &Target<'_>,
    method: &Method,
    q: &Query,
) -> Result<(u16, Value), ApiError> {
    let c = &shared.cluster;
    let rt = &t.rt;
    let ns = t.namespace.unwrap_or("");
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let not_allowed = || {
        ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))
    };
    if rt.create_only {
        if *method != Method::POST || t.name.is_some() {
            return Err(not_allowed());
        }
        write_opts(q, &req, false)?;
        let body = parse_body(&ct, &http::read_body(req.into_body()).await?)?;
        if rt.plural == "tokenreviews" {
            return tokens::token_review(shared, body).map(|v| (201, v));
        }
        return rbac::reviews::review(&c.store, rt, user, ns, body).map(|v| (201, v));
    }
    match (method, t.name, t.sub) {
        (&Method::GET, None, None) => list(shared, rt, t.namespace, q).map(|v| (200, v)),
        (&Method::GET, Some(name), None | Some("status")) => c.get(rt, ns, name).map(|v| (200, v)),
        (&Method::POST, None, None) => {
            let opts = write_opts(q, &req, false)?;
            let body = parse_body(&ct, &http::read_body(req.into_body()).await?)?;
            let r = guarded(shared, user, rt, &opts, |o| {
                c.create(rt, ns, body.clone(), o)
            })?;
            Ok((201, r.object))
        }
        (&Method::POST, Some(name), Some("token"))
            if rt.plural == "serviceaccounts" && rt.group.is_empty() =>
        {
            let opts = write_opts(q, &req, false)?;
            let body = parse_body(&ct, &http::read_body(req.into_body()).await?)?;
            tokens::token_request(shared, ns, name, body, &opts).map(|v| (201, v))
        }
        (&Method::PUT, Some(name), sub @ (None | Some("status"))) => {
            if sub.is_some() && !rt.status_subresource {
                return Err(ApiError::no_route());
            }
            let opts = write_opts(q, &req, false)?;
            let body = parse_body(&ct, &http::read_body(req.into_body()).await?)?;
            let r = guarded(shared, user, rt, &opts, |o| {
                c.update(rt, ns, name, body.clone(), sub.is_some(), o)
            })?;
            Ok((200, r.object))
        }
        (&Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            if sub.is_some() && !rt.status_subresource {
                return Err(ApiError::no_route());
            }
            let kind = PatchType::from_content_type(&ct)?;
            let opts = write_opts(q, &req, kind == PatchType::Apply)?;
            let body = http::read_body(req.into_body()).await?;
            if kind == PatchType::Apply && sub.is_none() && c.get(rt, ns, name).is_err() {
                authorize_create_on_apply(shared, user, rt, ns, name)?;
            }
            let r = guarded(shared, user, rt, &opts, |o| {
                c.patch(rt, ns, name, kind, &body, sub.is_some(), o)
            })?;
            Ok((if r.created { 201 } else { 200 }, r.object))
        }
        (&Method::DELETE, Some(name), None) => {
            let mut opts = write_opts(q, &req, false)?;
            let body = parse_body(&ct, &http::read_body(req.into_body()).await?)?;
            if body["dryRun"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x == "All"))
            {
                opts.dry_run = true;
            }
            let r = c.delete(rt, ns, name, &body["preconditions"], &opts)?;
            if r.deleted || opts.dry_run {
                Ok((200, r.object))
            } else {
                Ok((202, r.object))
            }
        }
        (&Method::DELETE, None, None) => {
            let opts = write_opts(q, &req, false)?;
            let listed = list(shared, rt, t.namespace, q)?;
            for item in listed["items"].as_array().into_iter().flatten() {
                let item_ns = item["metadata"]["namespace"].as_str().unwrap_or("");
                let name = item["metadata"]["name"].as_str().unwrap_or("");
                match c.delete(rt, item_ns, name, &Value::Null, &opts) {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok((
                200,
                success_status(json!({"kind": rt.plural, "group": rt.group})),
            ))
        }
        (&Method::GET, Some(name), Some("scale")) => {
            let obj = c.get(rt, ns, name)?;
            Ok((200, scale_of(&obj)))
        }
        (&Method::PATCH | &Method::PUT, Some(name), Some("scale")) => {
            let opts = write_opts(q, &req, false)?;
            let body = parse_body(&ct, &http::read_body(req.into_body()).await?)?;
            let replicas = body["spec"]["replicas"]
                .as_i64()
                .ok_or_else(|| ApiError::bad_request("spec.replicas is required"))?;
            let patch = json!({"spec": {"replicas": replicas}}).to_string();
            let r = c.patch(
                rt,
                ns,
                name,
                PatchType::Merge,
                patch.as_bytes(),
                false,
                &opts,
            )?;
            Ok((200, scale_of(&r.object)))
        }
        _ => Err(not_allowed()),
    }
}

/// A server-side apply that creates its object also needs `create` (the apiserver's
/// `withAuthorization` on create-on-update); its denial carries only the authorizer's reason,
/// usually empty: `configmaps "x" is forbidden: `.
fn authorize_create_on_apply(
    shared: &Shared,
    user: &UserInfo,
    rt: &ResourceType,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    let a = rbac::Attributes::resource(
        user,
        "create",
        &rt.group,
        &rt.version,
        &rt.plural,
        "",
        if rt.namespaced { ns } else { "" },
        name,
    );
    let d = rbac::authorize(&shared.cluster.store, &a);
    if d.allowed {
        Ok(())
    } else {
        Err(rbac::new_forbidden(&rt.group, &rt.plural, name, &d.reason))
    }
}

/// Runs a write; for RBAC kinds written by anyone but `system:masters`, first as a dry run
/// whose result must pass escalation prevention (a role may only grant what its writer holds).
fn guarded(
    shared: &Shared,
    user: &UserInfo,
    rt: &ResourceType,
    opts: &WriteOpts,
    write: impl Fn(&WriteOpts) -> Result<crate::cluster::WriteResult, ApiError>,
) -> Result<crate::cluster::WriteResult, ApiError> {
    if rt.group == "rbac.authorization.k8s.io" && !user.in_group(rbac::MASTERS) {
        let mut dry = opts.clone();
        dry.dry_run = true;
        let would = write(&dry)?;
        rbac::escalation::check(&shared.cluster.store, user, rt, &would.object)?;
    }
    write(opts)
}

fn scale_of(obj: &Value) -> Value {
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"], "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"]},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector_string(&obj["spec"]["selector"])},
    })
}

fn selector_string(sel: &Value) -> String {
    sel["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Lists a resource with selectors and paging, as a `<Kind>List`.
///
/// # Errors
/// 400 for bad selectors or continue tokens.
pub fn list(
    shared: &Shared,
    rt: &ResourceType,
    namespace: Option<&str>,
    q: &Query,
) -> Result<Value, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))?;
    let (items, rv) = shared.cluster.store.list(&rt.storage_key(), namespace);
    let mut matched: Vec<Value> = items
        .iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
        .map(|o| shared.cluster.present(rt, o))
        .collect();
    let offset = match q.get("continue") {
        Some(c) if !c.is_empty() => {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .map_err(|_| ApiError::bad_request("invalid continue token"))?;
            String::from_utf8_lossy(&raw)
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request("invalid continue token"))?
        }
        _ => 0,
    };
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let total = matched.len();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if offset > 0 || limit.is_some() {
        let end = limit.map_or(total, |l| (offset + l).min(total));
        matched = matched.drain(offset.min(total)..end).collect();
        if end < total {
            meta["continue"] =
                json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(end.to_string()));
            meta["remainingItemCount"] = json!(total - end);
        }
    }
    Ok(json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version(),
        "metadata": meta,
        "items": matched,
    }))
}
