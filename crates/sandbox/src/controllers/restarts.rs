//! The `restart.<component>=<interval>` fault: deletes a component's pods periodically,
//! like a crashing or rescheduled workload. Their controller recreates them, and their pod
//! backend sees the deletion (a restarted Vault comes back sealed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::workloads::component_of;
use crate::cluster::WriteOpts;
use crate::server::Shared;

const NAME: &str = "fault-injector";

/// Runs until shutdown, restarting components as the live fault spec says.
pub async fn run(shared: Arc<Shared>) {
    let mut last: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let restarts = shared.faults.restarts();
        last.retain(|c, _| restarts.contains_key(c));
        for (component, every) in restarts {
            let since = last.entry(component.clone()).or_insert_with(Instant::now);
            if since.elapsed() < every {
                continue;
            }
            *since = Instant::now();
            let c = &shared.cluster;
            let Some(rt) = c.registry.lookup("", "v1", "pods") else {
                return;
            };
            for pod in c.store.list("/pods", None).0 {
                if component_of(&pod) != component
                    || pod["metadata"]["deletionTimestamp"].is_string()
                {
                    continue;
                }
                let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
                let name = pod["metadata"]["name"].as_str().unwrap_or("");
                tracing::info!(namespace = ns, pod = name, "fault: restarting pod");
                let _ = c.delete(&rt, ns, name, &Value::Null, &WriteOpts::controller(NAME));
            }
        }
    }
}
