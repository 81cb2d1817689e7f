//! Strict field validation for built-in kinds (`fieldValidation=Strict`, kubectl's default).
//!
//! The object is decoded into its k8s-openapi type (which drops fields it does not know)
//! and encoded again; any field of the request missing from the round trip is unknown to
//! Kubernetes v1.33, and the apiserver would reject it.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::resources::ResourceType;
use super::status::ApiError;

fn round_trip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

macro_rules! typed {
    ($v:expr, $kind:expr, { $($k:literal => $t:ty),* $(,)? }) => {
        match $kind {
            $($k => Some(round_trip::<$t>($v)),)*
            _ => None,
        }
    };
}

fn typed_round_trip(rt: &ResourceType, v: &Value) -> Option<Result<Value, String>> {
    use k8s_openapi::api::{apps, batch, coordination, core, networking, policy, rbac};
    let key = format!("{}/{}", rt.group, rt.kind);
    typed!(v, key.as_str(), {
        "/Namespace" => core::v1::Namespace,
        "/Secret" => core::v1::Secret,
        "/ConfigMap" => core::v1::ConfigMap,
        "/ServiceAccount" => core::v1::ServiceAccount,
        "/Service" => core::v1::Service,
        "/Endpoints" => core::v1::Endpoints,
        "/Pod" => core::v1::Pod,
        "/PersistentVolumeClaim" => core::v1::PersistentVolumeClaim,
        "/ResourceQuota" => core::v1::ResourceQuota,
        "/LimitRange" => core::v1::LimitRange,
        "apps/Deployment" => apps::v1::Deployment,
        "apps/StatefulSet" => apps::v1::StatefulSet,
        "apps/DaemonSet" => apps::v1::DaemonSet,
        "batch/Job" => batch::v1::Job,
        "batch/CronJob" => batch::v1::CronJob,
        "coordination.k8s.io/Lease" => coordination::v1::Lease,
        "rbac.authorization.k8s.io/Role" => rbac::v1::Role,
        "rbac.authorization.k8s.io/RoleBinding" => rbac::v1::RoleBinding,
        "rbac.authorization.k8s.io/ClusterRole" => rbac::v1::ClusterRole,
        "rbac.authorization.k8s.io/ClusterRoleBinding" => rbac::v1::ClusterRoleBinding,
        "networking.k8s.io/Ingress" => networking::v1::Ingress,
        "networking.k8s.io/NetworkPolicy" => networking::v1::NetworkPolicy,
        "policy/PodDisruptionBudget" => policy::v1::PodDisruptionBudget,
        "apiextensions.k8s.io/CustomResourceDefinition" =>
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    })
}

fn unknown_fields(input: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    None => out.push(p),
                    Some(kv) => unknown_fields(v, kv, &p, out),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                unknown_fields(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Rejects fields a built-in kind does not have (only call with `fieldValidation=Strict`).
///
/// # Errors
/// 400 BadRequest naming every unknown field, like the apiserver's strict decoding error;
/// also 400 when the object does not decode as its kind at all.
pub fn strict(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let Some(rt_result) = typed_round_trip(rt, obj) else {
        return Ok(());
    };
    let known = rt_result.map_err(|e| {
        // Decoding errors can quote the offending value; never for a Secret.
        let why = if rt.kind == "Secret" {
            "a field has the wrong type".to_string()
        } else {
            e
        };
        ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: {why}",
            rt.kind, rt.version, rt.kind
        ))
    })?;
    let mut unknown = Vec::new();
    unknown_fields(obj, &known, "", &mut unknown);
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|u| format!("unknown field {u:?}"))
        .collect();
    Err(ApiError::bad_request(format!(
        "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
        rt.kind,
        rt.version,
        rt.kind,
        list.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;
    use serde_json::json;

    #[test]
    fn typos_are_unknown_and_valid_objects_pass() {
        let r = Registry::new();
        let d = r.lookup("apps", "v1", "deployments").expect("deployments");
        let good = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "labels": {"a": "b"}, "creationTimestamp": null},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "strategy": {},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i", "resources": {},
                    "ports": [{"containerPort": 80}], "env": [{"name": "X", "value": "1"}]}]}}}, "status": {}});
        strict(&d, &good).expect("valid deployment");
        let mut bad = good.clone();
        bad["spec"]["replica"] = json!(2);
        bad["spec"]["template"]["spec"]["containers"][0]["imagePolicy"] = json!("x");
        let e = strict(&d, &bad).expect_err("typos");
        assert!(
            e.message.contains("unknown field \"spec.replica\""),
            "{}",
            e.message
        );
        assert!(
            e.message
                .contains("spec.template.spec.containers[0].imagePolicy"),
            "{}",
            e.message
        );
        let s = r.lookup("", "v1", "secrets").expect("secrets");
        strict(&s, &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}, "data": {"a": "eA=="}, "type": "Opaque"}))
            .expect("valid secret");
        let e = strict(&s, &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": 987654}}))
            .expect_err("wrong type");
        assert!(
            !e.message.contains("987654"),
            "secret values never reach errors: {}",
            e.message
        );
    }
}
