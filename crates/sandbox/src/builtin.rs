//! Admission for built-in kinds: the defaulting and validation the real apiserver does
//! that clients notice (Secret `stringData`, Service cluster IPs, workload defaults).

use base64::Engine;
use serde_json::{Value, json};

use super::resources::ResourceType;
use super::status::ApiError;

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Validates an object name the way the apiserver does for the kind.
///
/// # Errors
/// 422 Invalid.
pub fn validate_name(rt: &ResourceType, name: &str) -> Result<(), ApiError> {
    let ok = match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces" | "services") => is_dns_label(name),
        // RBAC names are path segments and allow ':' (system:auth-delegator).
        ("rbac.authorization.k8s.io", _) => {
            !name.is_empty()
                && !name.contains('/')
                && !name.contains('%')
                && name != "."
                && name != ".."
        }
        _ => is_dns_subdomain(name),
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &rt.kind,
            name,
            "metadata.name",
            &format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ))
    }
}

/// Defaults and validates a built-in object about to be stored.
///
/// # Errors
/// 422 Invalid for objects the apiserver would reject.
pub fn admit(rt: &ResourceType, old: Option<&Value>, obj: &mut Value) -> Result<(), ApiError> {
    if !rt.builtin {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "secrets") => admit_secret(old, obj, &name)?,
        ("", "configmaps")
            if old.is_some_and(|o| o["immutable"] == json!(true))
                && old.is_some_and(|o| {
                    o["data"] != obj["data"] || o["binaryData"] != obj["binaryData"]
                }) =>
        {
            return Err(ApiError::invalid(
                "ConfigMap",
                &name,
                "data",
                "Forbidden: field is immutable when `immutable` is set",
            ));
        }
        ("", "namespaces") => {
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            if obj["spec"]["finalizers"].is_null() {
                obj["spec"]["finalizers"] = json!(["kubernetes"]);
            }
            if obj["metadata"]["deletionTimestamp"].is_null() {
                obj["status"]["phase"] = json!("Active");
            }
        }
        ("", "services") => admit_service(old, obj, &name),
        ("", "pods") => {
            if obj["spec"]["serviceAccountName"].is_null() {
                obj["spec"]["serviceAccountName"] = json!("default");
            }
            if obj["status"]["phase"].is_null() {
                obj["status"]["phase"] = json!("Pending");
            }
            if obj["spec"]["containers"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                return Err(ApiError::invalid(
                    "Pod",
                    &name,
                    "spec.containers",
                    "Required value",
                ));
            }
        }
        ("apps", "deployments" | "statefulsets" | "replicasets" | "daemonsets") => {
            if rt.plural != "daemonsets" && obj["spec"]["replicas"].is_null() {
                obj["spec"]["replicas"] = json!(1);
            }
            if obj["spec"]["selector"].is_null() {
                return Err(ApiError::invalid(
                    &rt.kind,
                    &name,
                    "spec.selector",
                    "Required value",
                ));
            }
            let labels = &obj["spec"]["template"]["metadata"]["labels"];
            if let Some(ml) = obj["spec"]["selector"]["matchLabels"].as_object()
                && ml.iter().any(|(k, v)| labels.get(k) != Some(v))
            {
                return Err(ApiError::invalid(
                    &rt.kind,
                    &name,
                    "spec.template.metadata.labels",
                    "Invalid value: `selector` does not match template `labels`",
                ));
            }
            match rt.plural.as_str() {
                "deployments" => {
                    if obj["spec"]["strategy"]
                        .as_object()
                        .is_none_or(serde_json::Map::is_empty)
                    {
                        obj["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
                    }
                    for (k, v) in [
                        ("revisionHistoryLimit", 10),
                        ("progressDeadlineSeconds", 600),
                    ] {
                        if obj["spec"][k].is_null() {
                            obj["spec"][k] = json!(v);
                        }
                    }
                }
                "statefulsets" => {
                    if obj["spec"]["podManagementPolicy"].is_null() {
                        obj["spec"]["podManagementPolicy"] = json!("OrderedReady");
                    }
                    if obj["spec"]["updateStrategy"].is_null() {
                        obj["spec"]["updateStrategy"] =
                            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
    Ok(())
}

fn admit_secret(old: Option<&Value>, obj: &mut Value, name: &str) -> Result<(), ApiError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
        && let Some(sd) = sd.as_object()
    {
        for (k, v) in sd {
            // Never echo the value: it is secret material.
            let s = v.as_str().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Secret in version \"v1\" cannot be handled as a Secret: stringData[{k}] must be a string"
                ))
            })?;
            obj["data"][k] = json!(b64.encode(s.as_bytes()));
        }
    }
    if let Some(data) = obj["data"].as_object() {
        for (k, v) in data {
            let ok = v.as_str().is_some_and(|s| b64.decode(s).is_ok());
            if !ok {
                // Never echo the value: it is secret material.
                return Err(ApiError::invalid(
                    "Secret",
                    name,
                    &format!("data[{k}]"),
                    "Invalid value: the value must be base64-encoded",
                ));
            }
        }
    }
    if obj["type"].is_null() {
        obj["type"] = json!("Opaque");
    }
    if let Some(o) = old {
        if o["type"] != obj["type"] {
            return Err(ApiError::invalid(
                "Secret",
                name,
                "type",
                "Invalid value: field is immutable",
            ));
        }
        if o["immutable"] == json!(true) && o["data"] != obj["data"] {
            return Err(ApiError::invalid(
                "Secret",
                name,
                "data",
                "Forbidden: field is immutable when `immutable` is set",
            ));
        }
    }
    Ok(())
}

fn admit_service(old: Option<&Value>, obj: &mut Value, name: &str) {
    let spec = &mut obj["spec"];
    if spec["type"].is_null() {
        spec["type"] = json!("ClusterIP");
    }
    if spec["sessionAffinity"].is_null() {
        spec["sessionAffinity"] = json!("None");
    }
    if spec["clusterIP"].is_null() {
        let kept = old
            .map(|o| o["spec"]["clusterIP"].clone())
            .filter(|v| !v.is_null());
        let ip = kept.unwrap_or_else(|| {
            let h = name
                .bytes()
                .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
            json!(format!("10.43.{}.{}", (h >> 8) % 254 + 1, h % 254 + 1))
        });
        spec["clusterIPs"] = json!([ip.clone()]);
        spec["clusterIP"] = ip;
    }
    if let Some(ports) = spec["ports"].as_array_mut() {
        for p in ports {
            if p["protocol"].is_null() {
                p["protocol"] = json!("TCP");
            }
            if p["targetPort"].is_null() {
                p["targetPort"] = p["port"].clone();
            }
        }
    }
    if obj["status"].is_null() {
        obj["status"] = json!({"loadBalancer": {}});
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    #[test]
    fn string_data_folds_into_base64_data() {
        let r = Registry::new();
        let rt = r.lookup("", "v1", "secrets").expect("secrets");
        let mut s = json!({"metadata":{"name":"s"},"data":{"a":"eA=="},"stringData":{"b":"y"}});
        admit(&rt, None, &mut s).expect("admit");
        assert_eq!(s["data"]["b"], "eQ==");
        assert_eq!(s["type"], "Opaque");
        assert!(s.get("stringData").is_none());
    }

    #[test]
    fn bad_base64_is_invalid_without_echoing_value() {
        let r = Registry::new();
        let rt = r.lookup("", "v1", "secrets").expect("secrets");
        let mut s = json!({"metadata":{"name":"s"},"data":{"a":"not base64 hunter2!"}});
        let e = admit(&rt, None, &mut s).expect_err("invalid");
        assert_eq!(e.code, 422);
        assert!(!e.message.contains("hunter2"));
    }

    #[test]
    fn names_are_validated() {
        let r = Registry::new();
        let ns = r.lookup("", "v1", "namespaces").expect("ns");
        assert!(validate_name(&ns, "flux-system").is_ok());
        assert!(validate_name(&ns, "Bad_Name").is_err());
        let crb = r
            .lookup("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
            .expect("crb");
        assert!(validate_name(&crb, "vault:auth-delegator").is_ok());
    }
}
