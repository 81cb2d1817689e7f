//! OpenAPI v2 (`GET /openapi/v2`): the Swagger 2.0 document older kubectl (≤ 1.28 for
//! `apply`), Helm 3 and client-go tools read — as JSON, or as the gnostic `openapi_v2.Document`
//! protobuf they ask for ([`crate::gnostic`]).
//!
//! It is generated from the same registry and schemas as OpenAPI v3 ([`crate::openapi`]): one
//! path per collection, object and status subresource with the GVK extension on each operation
//! and the write parameters kubectl's field-validation check looks for (so kubectl lets the
//! server validate). Custom resources' definitions carry their CRD schema and GVK. Built-in
//! definitions are open objects without a GVK: kubectl then computes strategic merge patches
//! from its compiled-in types, as it does when a schema is absent, instead of from a schema
//! that does not describe the kind.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::openapi::{gv_path, gvk_list, schema_id, schema_of};
use super::resources::{Registry, ResourceType};

fn query(name: &str) -> Value {
    let ty = if name == "force" { "boolean" } else { "string" };
    json!({"name": name, "in": "query", "type": ty, "uniqueItems": true})
}

fn params(names: &[&str]) -> Vec<Value> {
    names.iter().map(|n| query(n)).collect()
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "type": "string", "uniqueItems": true})
}

fn body(id: &str) -> Value {
    json!({"name": "body", "in": "body", "required": true, "schema": {"$ref": format!("#/definitions/{id}")}})
}

const PATCH_BODY: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

fn op(rt: &ResourceType, action: &str, id: &str, mut parameters: Vec<Value>) -> Value {
    let verb_body = match action {
        "post" | "put" => Some(body(id)),
        "patch" => Some(body(PATCH_BODY)),
        _ => None,
    };
    if let Some(b) = verb_body {
        parameters.insert(0, b);
    }
    let consumes = if action == "patch" {
        json!([
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml"
        ])
    } else {
        json!(["*/*"])
    };
    json!({
        "operationId": format!("{action}{}", rt.kind),
        "consumes": consumes,
        "produces": ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"],
        "schemes": ["https"],
        "parameters": parameters,
        "responses": {
            "200": {"description": "OK", "schema": {"$ref": format!("#/definitions/{id}")}},
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
    })
}

/// The whole document, for every served type.
pub fn document(registry: &Registry) -> Value {
    let mut paths: BTreeMap<String, Value> = BTreeMap::new();
    let mut definitions = Map::new();
    let write = ["dryRun", "fieldManager", "fieldValidation"];
    let patch = ["dryRun", "fieldManager", "fieldValidation", "force"];
    for rt in registry.all() {
        let id = schema_id(&rt);
        let base = format!("/{}", gv_path(&rt.group, &rt.version));
        let (coll, mut coll_params) = if rt.namespaced {
            (
                format!("{base}/namespaces/{{namespace}}/{}", rt.plural),
                vec![path_param("namespace")],
            )
        } else {
            (format!("{base}/{}", rt.plural), vec![])
        };
        coll_params.push(query("pretty"));
        if rt.create_only {
            paths.insert(
                coll,
                json!({
                    "post": op(&rt, "post", &id, params(&write)),
                    "patch": op(&rt, "patch", &id, params(&write)),
                    "parameters": coll_params,
                }),
            );
        } else {
            let mut obj_params = coll_params.clone();
            obj_params.insert(0, path_param("name"));
            paths.insert(
                coll.clone(),
                json!({
                    "get": op(&rt, "list", &id, params(&["labelSelector", "fieldSelector", "limit", "continue", "watch", "resourceVersion"])),
                    "post": op(&rt, "post", &id, params(&write)),
                    "parameters": coll_params,
                }),
            );
            paths.insert(
                format!("{coll}/{{name}}"),
                json!({
                    "get": op(&rt, "get", &id, vec![]),
                    "put": op(&rt, "put", &id, params(&write)),
                    "patch": op(&rt, "patch", &id, params(&patch)),
                    "delete": op(&rt, "delete", &id, params(&["dryRun"])),
                    "parameters": obj_params,
                }),
            );
            if rt.status_subresource {
                paths.insert(
                    format!("{coll}/{{name}}/status"),
                    json!({
                        "get": op(&rt, "get", &id, vec![]),
                        "put": op(&rt, "put", &id, params(&write)),
                        "patch": op(&rt, "patch", &id, params(&patch)),
                        "parameters": obj_params,
                    }),
                );
            }
        }
        let mut schema = schema_of(&rt);
        if !rt.builtin {
            schema["x-kubernetes-group-version-kind"] = gvk_list(&rt);
        }
        definitions.insert(id, schema);
    }
    definitions.insert(
        PATCH_BODY.into(),
        json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"}),
    );
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": super::discovery::GIT_VERSION},
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {"description": "Bearer Token authentication", "type": "apiKey", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_carry_gvk_and_field_validation() {
        let doc = document(&Registry::new());
        assert_eq!(doc["swagger"], "2.0");
        crate::openapi::assert_deployment_patch_declares_field_validation(&doc);
        let d = &doc["definitions"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(d["type"], "object");
        assert!(d.get("x-kubernetes-group-version-kind").is_none());
    }
}
