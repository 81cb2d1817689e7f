//! The single node: registered NotReady at start (like a booting kubelet) and Ready after
//! the `delay.node` fault delay.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::time::Instant;

use super::{Action, Controller};
use crate::cluster::WriteOpts;
use crate::discovery::GIT_VERSION;
use crate::server::Shared;
use crate::store::ObjectKey;

/// Name of the sandbox's node.
pub const NODE_NAME: &str = "sandbox";

const NAME: &str = "node-controller";

/// Keeps the node registered and flips it Ready after its delay.
#[derive(Debug)]
pub struct NodeController {
    started: Instant,
}

impl Default for NodeController {
    fn default() -> Self {
        Self {
            started: Instant::now(),
        }
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn ready_condition(ready: bool) -> serde_json::Value {
    let (status, reason, message) = if ready {
        ("True", "KubeletReady", "kubelet is posting ready status")
    } else {
        (
            "False",
            "KubeletNotReady",
            "container runtime network not ready: NetworkReady=false",
        )
    };
    json!({"type": "Ready", "status": status, "reason": reason, "message": message,
           "lastHeartbeatTime": now(), "lastTransitionTime": now()})
}

#[async_trait]
impl Controller for NodeController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<String> {
        vec!["/nodes".into()]
    }

    async fn start(&self, shared: &Arc<Shared>) {
        let c = &shared.cluster;
        let Some(rt) = c.registry.lookup("", "v1", "nodes") else {
            return;
        };
        let opts = WriteOpts::controller(NAME);
        if c.get(&rt, "", NODE_NAME).is_err() {
            let node = json!({
                "metadata": {"name": NODE_NAME, "labels": {
                    "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                    "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
                    "node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/master": "true",
                    "node.kubernetes.io/instance-type": "k3s"}},
                "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"], "providerID": format!("k3s://{NODE_NAME}")},
            });
            if let Err(e) = c.create(&rt, "", node, &opts) {
                tracing::error!(error = %e, "cannot register the sandbox node");
                return;
            }
        }
        // A (re)started sandbox boots its kubelet: NotReady until the delay passes.
        let _ = c.modify(&rt, "", NODE_NAME, true, NAME, |n| {
            n["status"] = json!({
                "conditions": [ready_condition(false)],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE_NAME}],
                "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "20Gi"},
                "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "20Gi"},
                "nodeInfo": {"kubeletVersion": GIT_VERSION, "kubeProxyVersion": GIT_VERSION, "containerRuntimeVersion": "containerd://2.0.5-k3s1",
                    "operatingSystem": "linux", "architecture": "amd64", "osImage": "kubestrap sandbox", "kernelVersion": "sandbox",
                    "machineID": "", "systemUUID": "", "bootID": ""},
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            });
        });
    }

    async fn reconcile(&self, shared: &Arc<Shared>, key: &ObjectKey) -> Action {
        if key.name != NODE_NAME {
            return Action::Done;
        }
        let c = &shared.cluster;
        let Some(rt) = c.registry.lookup("", "v1", "nodes") else {
            return Action::Done;
        };
        let Ok(node) = c.get(&rt, "", NODE_NAME) else {
            return Action::Done;
        };
        let ready = node["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .is_some_and(|c| c["status"] == "True");
        if ready {
            return Action::Done;
        }
        let due = self.started + shared.faults.delay("node");
        let now = Instant::now();
        if now < due {
            return Action::RequeueAfter((due - now).max(Duration::from_millis(5)));
        }
        let _ = c.modify(&rt, "", NODE_NAME, true, NAME, |n| {
            n["status"]["conditions"] = json!([ready_condition(true)]);
        });
        Action::Done
    }
}
