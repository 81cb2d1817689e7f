//! CustomResourceDefinitions: admission (names, conditions), turning a CRD into served
//! resource types, and the structural-schema behaviour of custom resources (defaults,
//! pruning of unknown fields, required/type/enum validation).

use serde_json::{Value, json};

use super::resources::{Registry, ResourceType};
use super::status::ApiError;

/// Whether `api_version` belongs to `group` (any version).
pub fn same_group(api_version: &str, group: &str) -> bool {
    !group.is_empty() && api_version.split_once('/').is_some_and(|(g, _)| g == group)
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Validates a CRD and sets its status the way the apiextensions controllers would:
/// names accepted, established, stored versions recorded.
///
/// # Errors
/// 422 Invalid for a malformed CRD.
pub fn admit_crd(old: Option<&Value>, obj: &mut Value) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let kind = "CustomResourceDefinition";
    let spec = &obj["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let plural = spec["names"]["plural"].as_str().unwrap_or("");
    let crd_kind = spec["names"]["kind"].as_str().unwrap_or("");
    if group.is_empty() || plural.is_empty() || crd_kind.is_empty() {
        return Err(ApiError::invalid(
            kind,
            &name,
            "spec",
            "Required value: group, names.plural and names.kind are required",
        ));
    }
    if name != format!("{plural}.{group}") {
        return Err(ApiError::invalid(
            kind,
            &name,
            "metadata.name",
            &format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if !matches!(spec["scope"].as_str(), Some("Namespaced" | "Cluster")) {
        return Err(ApiError::invalid(
            kind,
            &name,
            "spec.scope",
            "Unsupported value: must be Namespaced or Cluster",
        ));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage: Vec<&Value> = versions
        .iter()
        .filter(|v| v["storage"] == json!(true))
        .collect();
    if storage.len() != 1 {
        return Err(ApiError::invalid(
            kind,
            &name,
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        ));
    }
    let storage_version = storage[0]["name"].as_str().unwrap_or("").to_string();
    let mut names = spec["names"].clone();
    if names["singular"].is_null() {
        names["singular"] = json!(crd_kind.to_lowercase());
    }
    if names["listKind"].is_null() {
        names["listKind"] = json!(format!("{crd_kind}List"));
    }
    obj["spec"]["names"] = names.clone();
    if obj["spec"]["conversion"].is_null() {
        obj["spec"]["conversion"] = json!({"strategy": "None"});
    }
    let mut stored: Vec<Value> = old
        .and_then(|o| o["status"]["storedVersions"].as_array().cloned())
        .unwrap_or_default();
    if !stored.contains(&json!(storage_version)) {
        stored.push(json!(storage_version));
    }
    let since = old
        .and_then(|o| {
            o["status"]["conditions"][0]["lastTransitionTime"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(now);
    obj["status"] = json!({
        "acceptedNames": names,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": since},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": since},
        ],
    });
    if let (true, Some(conditions)) = (
        obj["metadata"]["deletionTimestamp"].is_string(),
        obj["status"]["conditions"].as_array_mut(),
    ) {
        conditions.push(json!({"type": "Terminating", "status": "True", "reason": "InstanceDeletionInProgress", "message": "CustomResourceDefinition marked for deletion", "lastTransitionTime": now()}));
    }
    Ok(())
}

/// The resource types a CRD serves (one per served version).
pub fn types_for(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let list = crate::json_fields::string_list;
    spec["versions"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter(|v| v["served"] != json!(false))
                .map(|v| ResourceType {
                    group: s(&spec["group"]),
                    version: s(&v["name"]),
                    plural: s(&names["plural"]),
                    singular: names["singular"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| s(&names["kind"]).to_lowercase()),
                    kind: s(&names["kind"]),
                    namespaced: spec["scope"] != json!("Cluster"),
                    short_names: list(&names["shortNames"]),
                    categories: list(&names["categories"]),
                    status_subresource: v["subresources"]["status"].is_object(),
                    builtin: false,
                    extra_subresources: if v["subresources"]["scale"].is_object() {
                        vec![(
                            "scale".into(),
                            vec!["get".into(), "patch".into(), "update".into()],
                        )]
                    } else {
                        vec![]
                    },
                    create_only: false,
                    printer_columns: v["additionalPrinterColumns"]
                        .as_array()
                        .map(|cols| {
                            cols.iter()
                                .filter(|c| c["priority"].as_i64().unwrap_or(0) == 0)
                                .map(|c| (s(&c["name"]), s(&c["type"]), s(&c["jsonPath"])))
                                .collect()
                        })
                        .unwrap_or_default(),
                    schema: v["schema"]["openAPIV3Schema"]
                        .as_object()
                        .map(|m| Value::Object(m.clone())),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Serves (or stops serving) the types of a CRD after it was written.
pub fn sync_registry(registry: &Registry, crd: &Value, deleted: bool) {
    let name = crd["metadata"]["name"].as_str().unwrap_or("");
    if deleted {
        registry.remove_custom(name);
    } else {
        registry.set_custom(name, types_for(crd));
    }
}

/// Applies structural-schema `default`s to missing fields, recursively.
pub fn apply_defaults(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(props) = schema["properties"].as_object() {
                for (k, ps) in props {
                    if !m.contains_key(k)
                        && let Some(d) = ps.get("default")
                    {
                        m.insert(k.clone(), d.clone());
                    }
                    if let Some(child) = m.get_mut(k) {
                        apply_defaults(ps, child);
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (_, child) in m.iter_mut() {
                    apply_defaults(ap, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for i in items {
                    apply_defaults(is, i);
                }
            }
        }
        _ => {}
    }
}

/// Removes fields the schema does not declare; returns their paths (for strict validation).
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Value::Object(m) = obj {
        for (k, child) in m.iter_mut() {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(ps) = schema["properties"].get(k) {
                prune_rec(ps, child, &format!(".{k}"), &mut unknown);
            }
        }
        if schema["properties"].is_object()
            && schema["x-kubernetes-preserve-unknown-fields"] != json!(true)
        {
            let props = schema["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let drop: Vec<String> = m
                .keys()
                .filter(|k| {
                    !matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                        && !props.contains_key(*k)
                })
                .cloned()
                .collect();
            for k in drop {
                m.remove(&k);
                unknown.push(format!(".{k}"));
            }
        }
    }
    unknown
}

fn prune_rec(schema: &Value, v: &mut Value, path: &str, unknown: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == json!(true) {
        return;
    }
    match v {
        Value::Object(m) => {
            if let Some(props) = schema["properties"].as_object() {
                let drop: Vec<String> = m
                    .keys()
                    .filter(|k| !props.contains_key(*k))
                    .cloned()
                    .collect();
                for k in drop {
                    m.remove(&k);
                    unknown.push(format!("{path}.{k}"));
                }
                for (k, child) in m.iter_mut() {
                    prune_rec(&props[k], child, &format!("{path}.{k}"), unknown);
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, child) in m.iter_mut() {
                    prune_rec(ap, child, &format!("{path}.{k}"), unknown);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_rec(is, item, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

fn type_ok(schema: &Value, v: &Value) -> bool {
    if schema["x-kubernetes-int-or-string"] == json!(true) {
        return v.is_string() || v.is_i64() || v.is_u64();
    }
    match schema["type"].as_str() {
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        _ => true,
    }
}

fn validate_rec(schema: &Value, v: &Value, path: &str, errs: &mut Vec<(String, String)>) {
    if v.is_null() && schema["nullable"] == json!(true) {
        return;
    }
    if !type_ok(schema, v) {
        errs.push((
            path.to_string(),
            format!(
                "Invalid value: {}: must be of type {}",
                short(v),
                schema["type"].as_str().unwrap_or("?")
            ),
        ));
        return;
    }
    if let Some(en) = schema["enum"].as_array()
        && !en.contains(v)
    {
        let allowed: Vec<String> = en.iter().map(|e| e.to_string()).collect();
        errs.push((
            path.to_string(),
            format!(
                "Unsupported value: {}: supported values: {}",
                short(v),
                allowed.join(", ")
            ),
        ));
    }
    match v {
        Value::Object(m) => {
            if let Some(req) = schema["required"].as_array() {
                for r in req.iter().filter_map(Value::as_str) {
                    if !m.contains_key(r) {
                        errs.push((format!("{path}.{r}"), "Required value".into()));
                    }
                }
            }
            if let Some(props) = schema["properties"].as_object() {
                for (k, ps) in props {
                    if let Some(child) = m.get(k) {
                        validate_rec(ps, child, &format!("{path}.{k}"), errs);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_rec(is, item, &format!("{path}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "object".into(),
        Value::Array(_) => "array".into(),
        other => other.to_string(),
    }
}

/// Validates a custom resource against its schema (required, types, enums).
///
/// # Errors
/// 422 Invalid listing every failing field.
pub fn validate_custom(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let Some(schema) = &rt.schema else {
        return Ok(());
    };
    let mut errs = Vec::new();
    if let (Some(props), Value::Object(m)) = (schema["properties"].as_object(), obj) {
        for (k, ps) in props {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(child) = m.get(k) {
                validate_rec(ps, child, k, &mut errs);
            }
        }
        if let Some(req) = schema["required"].as_array() {
            for r in req.iter().filter_map(Value::as_str) {
                if !m.contains_key(r) {
                    errs.push((r.to_string(), "Required value".into()));
                }
            }
        }
    }
    if errs.is_empty() {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let mut e = ApiError::invalid(&rt.kind, name, &errs[0].0, &errs[0].1);
    let msgs: Vec<String> = errs.iter().map(|(p, m)| format!("{p}: {m}")).collect();
    e.message = format!(
        "{} \"{}\" is invalid: {}",
        rt.kind,
        name,
        if msgs.len() == 1 {
            msgs[0].clone()
        } else {
            format!("[{}]", msgs.join(", "))
        }
    );
    let causes: Vec<Value> = errs
        .iter()
        .map(|(p, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": p}))
        .collect();
    e.details = Some(json!({"name": name, "group": rt.group, "kind": rt.kind, "causes": causes}));
    Err(e)
}

/// Marks every CRD object name as accepted (used when loading persisted state).
pub fn register_all(registry: &Registry, crds: &[std::sync::Arc<Value>]) {
    for c in crds {
        sync_registry(registry, c, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({
            "apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition",
            "metadata":{"name":"widgets.example.com"},
            "spec":{"group":"example.com","scope":"Namespaced",
                "names":{"plural":"widgets","kind":"Widget"},
                "versions":[{"name":"v1","served":true,"storage":true,"subresources":{"status":{}},
                    "schema":{"openAPIV3Schema":{"type":"object","properties":{
                        "spec":{"type":"object","required":["size"],"properties":{
                            "size":{"type":"integer"},
                            "mode":{"type":"string","default":"fast","enum":["fast","slow"]}}},
                        "status":{"type":"object","default":{"observedGeneration":-1},"properties":{"observedGeneration":{"type":"integer"}}}}}}}]}
        })
    }

    #[test]
    fn admission_sets_established() {
        let mut c = crd();
        admit_crd(None, &mut c).expect("admit");
        assert_eq!(c["status"]["conditions"][1]["type"], "Established");
        assert_eq!(c["status"]["acceptedNames"]["listKind"], "WidgetList");
        let mut bad = crd();
        bad["metadata"]["name"] = json!("wrong");
        assert_eq!(admit_crd(None, &mut bad).expect_err("name").code, 422);
    }

    #[test]
    fn defaults_prune_and_validate() {
        let mut c = crd();
        admit_crd(None, &mut c).expect("admit");
        let rt = types_for(&c).remove(0);
        assert!(rt.status_subresource);
        let schema = rt.schema.clone().expect("schema");
        let mut o = json!({"metadata":{"name":"w"},"spec":{"size":1,"junk":true}});
        let unknown = prune(&schema, &mut o);
        assert_eq!(unknown, vec![".spec.junk".to_string()]);
        apply_defaults(&schema, &mut o);
        assert_eq!(o["spec"]["mode"], "fast");
        assert_eq!(o["status"]["observedGeneration"], -1);
        assert!(validate_custom(&rt, &o).is_ok());
        let bad = json!({"metadata":{"name":"w"},"spec":{"mode":"odd"}});
        let e = validate_custom(&rt, &bad).expect_err("invalid");
        assert!(
            e.message.contains("spec.size: Required value"),
            "{}",
            e.message
        );
    }
}
