//! OpenAPI v3: the `/openapi/v3` index and one document per group-version.
//!
//! kubectl's default `--validate=strict` asks OpenAPI v3 whether the PATCH operation of
//! the object's GVK accepts the `fieldValidation` query parameter; when it does, kubectl
//! lets the server validate. Every document therefore lists each resource's paths with
//! the GVK extension and the write parameters. Custom resources carry their CRD schema.
//! Patch operations have no request body, so kubectl computes client-side strategic merge
//! patches from its compiled-in types rather than from these (minimal) built-in schemas.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::resources::{Registry, ResourceType};
use super::status::ApiError;

/// `api/v1` or `apis/<group>/<version>`.
pub(crate) fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn hash(s: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(s.as_bytes())[..16]).to_uppercase()
}

/// `GET /openapi/v3`.
pub fn index(registry: &Registry) -> Value {
    let mut paths = BTreeMap::new();
    let mut gvs: BTreeMap<String, Vec<std::sync::Arc<ResourceType>>> = BTreeMap::new();
    for r in registry.all() {
        gvs.entry(gv_path(&r.group, &r.version))
            .or_default()
            .push(r);
    }
    for (p, types) in gvs {
        let fingerprint: String = types
            .iter()
            .map(|t| {
                format!(
                    "{}:{}",
                    t.plural,
                    t.schema.as_ref().map(Value::to_string).unwrap_or_default()
                )
            })
            .collect();
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(&fingerprint))}),
        );
    }
    json!({"paths": paths})
}

/// The definition name of a type (`io.k8s.api.apps.v1.Deployment`, `io.fluxcd.toolkit.source.v1.GitRepository`).
pub(crate) fn schema_id(rt: &ResourceType) -> String {
    if rt.builtin {
        let g = if rt.group.is_empty() {
            "core".to_string()
        } else {
            rt.group.split('.').next().unwrap_or("").to_string()
        };
        format!("io.k8s.api.{g}.{}.{}", rt.version, rt.kind)
    } else {
        let rev: Vec<&str> = rt.group.split('.').rev().collect();
        format!("{}.{}.{}", rev.join("."), rt.version, rt.kind)
    }
}

fn params(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| json!({"name": n, "in": "query", "schema": {"type": if *n == "force" { "boolean" } else { "string" }, "uniqueItems": true}}))
            .collect(),
    )
}

fn op(rt: &ResourceType, action: &str, parameters: Value, id: &str) -> Value {
    json!({
        "operationId": format!("{action}{}", rt.kind),
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{id}")}}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
    })
}

/// The schema of a type, shared by OpenAPI v3 and v2: a CRD's structural schema, or for
/// built-in kinds an open object (kubectl then uses its compiled-in types).
pub(crate) fn schema_of(rt: &ResourceType) -> Value {
    let mut schema = rt.schema.clone().unwrap_or_else(|| {
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}})
    });
    if let Some(props) = schema["properties"].as_object_mut() {
        props
            .entry("metadata")
            .or_insert(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    }
    schema
}

/// `x-kubernetes-group-version-kind` of a definition.
pub(crate) fn gvk_list(rt: &ResourceType) -> Value {
    json!([{"group": rt.group, "version": rt.version, "kind": rt.kind}])
}

/// `GET /openapi/v3/api/v1`, `GET /openapi/v3/apis/<g>/<v>`.
///
/// # Errors
/// 404 for an unknown group-version.
pub fn document(registry: &Registry, rest: &[&str]) -> Result<Value, ApiError> {
    let (group, version) = match rest {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return Err(ApiError::no_route()),
    };
    let types = registry.in_group_version(group, version);
    if types.is_empty() {
        return Err(ApiError::no_route());
    }
    let write = params(&["dryRun", "fieldManager", "fieldValidation"]);
    let patch = params(&["dryRun", "fieldManager", "fieldValidation", "force"]);
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for rt in &types {
        let id = schema_id(rt);
        let base = format!("/{}", gv_path(&rt.group, &rt.version));
        let coll = if rt.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("{base}/{}", rt.plural)
        };
        if rt.create_only {
            // kubectl's strict-validation check looks for the GVK's PATCH operation and
            // otherwise falls back to OpenAPI v2, which the sandbox does not serve. The
            // apiserver answers PATCH on this path with 405; the entry only carries the
            // GVK and the parameters kubectl checks for.
            paths.insert(
                coll,
                json!({"post": op(rt, "post", write.clone(), &id), "patch": op(rt, "patch", write.clone(), &id)}),
            );
        } else {
            paths.insert(coll.clone(), json!({
                "get": op(rt, "list", params(&["labelSelector", "fieldSelector", "limit", "continue", "watch", "resourceVersion"]), &id),
                "post": op(rt, "post", write.clone(), &id),
            }));
            paths.insert(
                format!("{coll}/{{name}}"),
                json!({
                    "get": op(rt, "get", json!([]), &id),
                    "put": op(rt, "put", write.clone(), &id),
                    "patch": op(rt, "patch", patch.clone(), &id),
                    "delete": op(rt, "delete", params(&["dryRun"]), &id),
                }),
            );
            if rt.status_subresource {
                paths.insert(
                    format!("{coll}/{{name}}/status"),
                    json!({
                        "get": op(rt, "get", json!([]), &id),
                        "put": op(rt, "put", write.clone(), &id),
                        "patch": op(rt, "patch", patch.clone(), &id),
                    }),
                );
            }
        }
        let mut schema = schema_of(rt);
        schema["x-kubernetes-group-version-kind"] = gvk_list(rt);
        schemas.insert(id, schema);
    }
    Ok(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": super::discovery::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// What kubectl's server-side apply reads from either OpenAPI version: the PATCH operation
/// of a Deployment names its kind and takes the `fieldValidation` query parameter.
#[cfg(test)]
pub(crate) fn assert_deployment_patch_declares_field_validation(doc: &Value) {
    let p = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "Deployment");
    assert!(
        p["parameters"]
            .as_array()
            .expect("params")
            .iter()
            .any(|x| x["name"] == "fieldValidation" && x["in"] == "query"),
        "{p}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_declare_field_validation() {
        let r = Registry::new();
        let idx = index(&r);
        let url = idx["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .expect("url");
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="));
        let doc = document(&r, &["apis", "apps", "v1"]).expect("doc");
        assert_deployment_patch_declares_field_validation(&doc);
        assert!(document(&r, &["apis", "nope", "v1"]).is_err());
    }
}
