//! Endpoints: every Service with a selector gets an Endpoints object listing the IPs of
//! its pods (ready ones as `addresses`, others as `notReadyAddresses`), as
//! `kubectl describe svc` and readiness checks of installers expect; plus the matching
//! `discovery.k8s.io/v1` EndpointSlice (owned by the Service), which newer kubectl reads.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Action, Controller};
use crate::cluster::WriteOpts;
use crate::server::Shared;
use crate::store::selector::LabelSelector;
use crate::store::{ObjectKey, StoreEvent};

const NAME: &str = "endpoints-controller";
const SERVICES: &str = "/services";
const PODS: &str = "/pods";

/// Keeps Endpoints in line with Services and their pods.
#[derive(Debug, Default)]
pub struct EndpointsController;

fn selector_of(svc: &Value) -> Option<LabelSelector> {
    let sel = svc["spec"]["selector"].as_object()?;
    if sel.is_empty() {
        return None;
    }
    let s: Vec<String> = sel
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    LabelSelector::parse(&s.join(",")).ok()
}

fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Resolves a service port's `targetPort` (number or container-port name) for a pod.
fn target_port(port: &Value, pod: &Value) -> Option<i64> {
    match &port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => pod["spec"]["containers"]
            .as_array()?
            .iter()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_i64()),
        _ => port["port"].as_i64(),
    }
}

impl EndpointsController {
    fn slice(&self, shared: &Shared, svc: &Value, pods: &[Arc<Value>], ports: &[Value]) {
        let c = &shared.cluster;
        let Some(rt) = c
            .registry
            .lookup("discovery.k8s.io", "v1", "endpointslices")
        else {
            return;
        };
        let ns = svc["metadata"]["namespace"].as_str().unwrap_or("");
        let svc_name = svc["metadata"]["name"].as_str().unwrap_or("");
        let suffix: String = svc["metadata"]["uid"]
            .as_str()
            .unwrap_or("")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(5)
            .collect();
        let name = format!("{svc_name}-{suffix}");
        // Slice ports always carry a name ("" when unnamed): kubectl dereferences it.
        let ports: Vec<Value> = ports
            .iter()
            .map(|p| {
                let mut p = p.clone();
                if p["name"].is_null() {
                    p["name"] = json!("");
                }
                p
            })
            .collect();
        let endpoints: Vec<Value> = pods
            .iter()
            .map(|p| {
                let ready = pod_ready(p);
                json!({"addresses": [p["status"]["podIP"]], "nodeName": p["spec"]["nodeName"],
                       "conditions": {"ready": ready, "serving": ready, "terminating": false},
                       "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}})
            })
            .collect();
        let body = |o: &mut Value| {
            o["addressType"] = json!("IPv4");
            o["endpoints"] = json!(endpoints);
            o["ports"] = json!(ports);
        };
        if c.get(&rt, ns, &name).is_ok() {
            let _ = c.modify(&rt, ns, &name, false, NAME, body);
        } else {
            let mut o = json!({"metadata": {"name": name,
                "labels": {"kubernetes.io/service-name": svc_name, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc_name, "uid": svc["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]}});
            body(&mut o);
            let _ = c.create(&rt, ns, o, &WriteOpts::controller(NAME));
        }
    }
}

#[async_trait]
impl Controller for EndpointsController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<String> {
        vec![SERVICES.into(), PODS.into()]
    }

    fn map(&self, shared: &Shared, e: &StoreEvent) -> Vec<ObjectKey> {
        if e.key.resource == SERVICES {
            return vec![e.key.clone()];
        }
        // A pod change concerns every service in its namespace that selects it (now or before).
        shared
            .cluster
            .store
            .list(SERVICES, Some(&e.key.namespace))
            .0
            .iter()
            .filter(|s| {
                selector_of(s).is_some_and(|sel| {
                    sel.matches(&e.object) || e.old.as_deref().is_some_and(|o| sel.matches(o))
                })
            })
            .map(|s| {
                ObjectKey::new(
                    SERVICES,
                    e.key.namespace.as_str(),
                    s["metadata"]["name"].as_str().unwrap_or(""),
                )
            })
            .collect()
    }

    async fn reconcile(&self, shared: &Arc<Shared>, key: &ObjectKey) -> Action {
        let c = &shared.cluster;
        let Some(ep_rt) = c.registry.lookup("", "v1", "endpoints") else {
            return Action::Done;
        };
        let Some(svc) = c.store.get(key) else {
            // The service is gone: so are its endpoints.
            if c.get(&ep_rt, &key.namespace, &key.name).is_ok() {
                let opts = WriteOpts::controller(NAME);
                let _ = c.delete(&ep_rt, &key.namespace, &key.name, &Value::Null, &opts);
            }
            return Action::Done;
        };
        let Some(sel) = selector_of(&svc) else {
            return Action::Done;
        };
        let pods: Vec<Arc<Value>> = c
            .store
            .list(PODS, Some(&key.namespace))
            .0
            .into_iter()
            .filter(|p| {
                sel.matches(p)
                    && p["status"]["podIP"].is_string()
                    && p["metadata"]["deletionTimestamp"].is_null()
            })
            .collect();
        let address = |p: &Value| {
            json!({"ip": p["status"]["podIP"], "nodeName": p["spec"]["nodeName"],
                   "targetRef": {"kind": "Pod", "namespace": key.namespace, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}})
        };
        let ready: Vec<Value> = pods
            .iter()
            .filter(|p| pod_ready(p))
            .map(|p| address(p))
            .collect();
        let not_ready: Vec<Value> = pods
            .iter()
            .filter(|p| !pod_ready(p))
            .map(|p| address(p))
            .collect();
        let ports: Vec<Value> = svc["spec"]["ports"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|sp| {
                let mut p = json!({
                    "port": pods.first().and_then(|pod| target_port(sp, pod)).or_else(|| sp["port"].as_i64()),
                    "protocol": sp["protocol"].as_str().unwrap_or("TCP"),
                });
                if let Some(n) = sp["name"].as_str() {
                    p["name"] = json!(n);
                }
                p
            })
            .collect();
        let mut subset = json!({"ports": ports});
        if !ready.is_empty() {
            subset["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(not_ready);
        }
        let subsets = if pods.is_empty() {
            json!([])
        } else {
            json!([subset])
        };
        let labels = svc["metadata"]["labels"].clone();
        self.slice(shared, &svc, &pods, &ports);
        match c.get(&ep_rt, &key.namespace, &key.name) {
            Ok(_) => {
                let _ = c.modify(&ep_rt, &key.namespace, &key.name, false, NAME, |ep| {
                    ep["subsets"] = subsets;
                    if labels.is_object() {
                        ep["metadata"]["labels"] = labels;
                    }
                });
            }
            Err(_) => {
                let mut ep = json!({"metadata": {"name": key.name}, "subsets": subsets});
                if labels.is_object() {
                    ep["metadata"]["labels"] = labels;
                }
                let _ = c.create(&ep_rt, &key.namespace, ep, &WriteOpts::controller(NAME));
            }
        }
        Action::Done
    }
}
