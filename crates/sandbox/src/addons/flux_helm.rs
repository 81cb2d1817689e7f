//! Flux's helm-controller for the two charts the bootstrap installs (`vault`,
//! `external-secrets`): renders what the chart creates into the target namespace, applies it
//! as `helm-controller`, records a Helm release Secret, waits for the workloads like
//! `helm install --wait`, and reports `Ready`/`Released` as helm-controller 1.x (reference §3.5).
//! An unknown chart fails with `InstallFailed`, never a fake success.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::json;
use sha2::Digest;

use super::charts::{Chart, HELM_CONTROLLER};
use super::flux_source::{HELMREPOS, flux_actor, flux_begin};
use super::kit::{self, Backoff, Cond, Recorder};
use crate::controllers::{Action, Controller};
use crate::rbac::UserInfo;
use crate::server::Shared;
use crate::store::{ObjectKey, StoreEvent};

/// Storage key of HelmReleases.
pub const HELMRELEASES: &str = "helm.toolkit.fluxcd.io/helmreleases";
const NAME: &str = "helm-controller";

/// Reconciles HelmReleases.
#[derive(Default)]
pub struct HelmController {
    backoff: Backoff,
    events: Recorder,
}

struct Release {
    target_ns: String,
    name: String,
    chart: String,
    version: String,
    digest: String,
}

impl HelmController {
    fn reconcile_one(&self, shared: &Shared, key: &ObjectKey) -> Action {
        let (rt, o) = match flux_begin(shared, &self.backoff, key, HELMRELEASES, HELM_CONTROLLER) {
            Ok(begun) => begun,
            Err(action) => return action,
        };
        let ns = key.namespace.as_str();
        let generation = o["metadata"]["generation"].as_i64().unwrap_or(1);
        let spec = &o["spec"]["chart"]["spec"];
        let chart = spec["chart"].as_str().unwrap_or("").to_string();
        let version = spec["version"].as_str().unwrap_or("*").to_string();
        let src_ns = spec["sourceRef"]["namespace"]
            .as_str()
            .unwrap_or(ns)
            .to_string();
        let src_name = spec["sourceRef"]["name"].as_str().unwrap_or("").to_string();
        let tns = o["spec"]["targetNamespace"]
            .as_str()
            .filter(|s| !s.is_empty());
        let target_ns = tns.unwrap_or(ns).to_string();
        let release_name = o["spec"]["releaseName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| match tns {
                Some(t) => format!("{t}-{}", key.name),
                None => key.name.clone(),
            });
        let values = o["spec"]["values"].clone();
        let digest = format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(
                format!("{chart}\0{version}\0{values}").as_bytes()
            ))
        );
        let rel = Release {
            target_ns,
            name: release_name,
            chart,
            version,
            digest,
        };
        let helm_chart = format!("{src_ns}/{ns}-{}", key.name);
        let fail = |reason: &str, msg: &str| {
            kit::write_status(shared, &rt, &o, NAME, |st| {
                st["observedGeneration"] = json!(generation);
                st["helmChart"] = json!(helm_chart);
                kit::set_conditions(st, &not_released(reason, msg), Some(generation));
            });
        };
        let source_ready =
            kit::get(shared, HELMREPOS, &src_ns, &src_name).is_some_and(|s| kit::is_ready(&s));
        if spec["sourceRef"]["kind"] != "HelmRepository" || !source_ready {
            let msg = format!(
                "HelmChart '{helm_chart}' is not ready: latest generation of object has not been reconciled"
            );
            kit::write_status(shared, &rt, &o, NAME, |st| {
                st["observedGeneration"] = json!(generation);
                st["helmChart"] = json!(helm_chart);
                kit::set_conditions(
                    st,
                    &[Cond {
                        kind: "Ready",
                        status: "False",
                        reason: "ArtifactFailed",
                        message: &msg,
                    }],
                    Some(generation),
                );
            });
            return Action::RequeueAfter(self.backoff.failed(key, Duration::from_secs(5)));
        }
        let history = o["status"]["history"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let current = history.first().cloned();
        let needs_apply = current
            .as_ref()
            .is_none_or(|h| h["configDigest"] != rel.digest.as_str());
        let upgrade = current.is_some();
        let action_name = if upgrade { "upgrade" } else { "install" };
        let failed_reason = if upgrade {
            "UpgradeFailed"
        } else {
            "InstallFailed"
        };
        let fail_msg = |err: &str| {
            format!(
                "Helm {action_name} failed for release {}/{} with chart {}@{}: {err}",
                rel.target_ns, rel.name, rel.chart, rel.version
            )
        };
        let url = kit::get(shared, HELMREPOS, &src_ns, &src_name)
            .and_then(|s| s["spec"]["url"].as_str().map(str::to_string))
            .unwrap_or_default();
        let Some(kind) = Chart::find(&url, &rel.chart) else {
            fail(
                failed_reason,
                &fail_msg(&format!(
                    "chart \"{}\" version \"{}\" not found in {url} repository",
                    rel.chart, rel.version
                )),
            );
            return Action::RequeueAfter(self.backoff.failed(key, Duration::from_secs(30)));
        };
        if needs_apply
            && let Some(err) = shared
                .faults
                .helm_failure(&[key.name.as_str(), rel.name.as_str()])
        {
            self.stall(shared, &rt, &o, &rel, action_name, &fail_msg(&err));
            return Action::Done;
        }
        let mut version_n = current
            .as_ref()
            .and_then(|h| h["version"].as_i64())
            .unwrap_or(0);
        if needs_apply {
            let actor = match flux_actor(shared, HELM_CONTROLLER, &o) {
                Ok(a) => a,
                Err(msg) => {
                    fail(failed_reason, &fail_msg(&msg));
                    return Action::RequeueAfter(self.backoff.failed(key, Duration::from_secs(30)));
                }
            };
            if kit::get(shared, "/namespaces", "", &rel.target_ns).is_none() {
                if o["spec"]["install"]["createNamespace"] == true {
                    let ns_doc = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": rel.target_ns}});
                    if let Err(e) = kit::apply_all_as(shared, actor.as_ref(), &[ns_doc], NAME, "") {
                        fail(failed_reason, &fail_msg(&e.to_string()));
                        return Action::RequeueAfter(
                            self.backoff.failed(key, Duration::from_secs(30)),
                        );
                    }
                } else {
                    fail(
                        failed_reason,
                        &fail_msg(&format!(
                            "create: failed to create: namespaces \"{}\" not found",
                            rel.target_ns
                        )),
                    );
                    return Action::RequeueAfter(self.backoff.failed(key, Duration::from_secs(30)));
                }
            }
            let docs = match kind.render(&rel.target_ns, &rel.name, &values) {
                Ok(d) => d,
                Err(e) => {
                    fail(failed_reason, &fail_msg(&e.to_string()));
                    return Action::RequeueAfter(self.backoff.failed(key, Duration::from_secs(30)));
                }
            };
            if let Err(e) = kit::apply_all_as(shared, actor.as_ref(), &docs, NAME, &rel.target_ns) {
                fail(failed_reason, &fail_msg(&e.to_string()));
                return Action::RequeueAfter(self.backoff.failed(key, Duration::from_secs(30)));
            }
            version_n += 1;
            self.release_secret(shared, actor.as_ref(), &rel, version_n);
            let now = kit::now();
            let first = current
                .as_ref()
                .and_then(|h| h["firstDeployed"].as_str().map(str::to_string))
                .unwrap_or_else(|| now.clone());
            let entry = json!({
                "name": rel.name, "namespace": rel.target_ns, "version": version_n,
                "status": if upgrade { "pending-upgrade" } else { "pending-install" },
                "chartName": rel.chart, "chartVersion": rel.version, "appVersion": rel.version,
                "configDigest": rel.digest, "digest": rel.digest,
                "firstDeployed": first, "lastDeployed": now,
            });
            kit::write_status(shared, &rt, &o, NAME, |st| {
                st["observedGeneration"] = json!(generation);
                st["helmChart"] = json!(helm_chart);
                st["storageNamespace"] = json!(rel.target_ns);
                st["lastAttemptedRevision"] = json!(rel.version);
                st["lastAttemptedConfigDigest"] = json!(rel.digest);
                st["lastAttemptedGeneration"] = json!(generation);
                st["lastAttemptedReleaseAction"] = json!(action_name);
                let mut h = vec![entry.clone()];
                h.extend(history.iter().take(4).cloned());
                st["history"] = json!(h);
                let msg = format!("Running '{action_name}' action with timeout of 5m0s");
                kit::set_conditions(
                    st,
                    &[
                        Cond {
                            kind: "Ready",
                            status: "Unknown",
                            reason: "Progressing",
                            message: &msg,
                        },
                        Cond {
                            kind: "Reconciling",
                            status: "True",
                            reason: "Progressing",
                            message: &msg,
                        },
                    ],
                    Some(generation),
                );
            });
        }
        // `helm --wait`: every Deployment and StatefulSet of the release is ready.
        let disable_wait = o["spec"][action_name]["disableWait"] == true;
        let workloads_ready = disable_wait
            || ["apps/deployments", "apps/statefulsets"].iter().all(|res| {
                kit::list(shared, res, Some(&rel.target_ns))
                    .iter()
                    .filter(|w| {
                        w["metadata"]["annotations"]["meta.helm.sh/release-name"]
                            == rel.name.as_str()
                    })
                    .all(|w| kit::workload_ready(w))
            });
        if !workloads_ready {
            return Action::RequeueAfter(Duration::from_millis(500));
        }
        self.backoff.succeeded(key);
        let reason = if version_n > 1 {
            "UpgradeSucceeded"
        } else {
            "InstallSucceeded"
        };
        let verb = if version_n > 1 { "upgrade" } else { "install" };
        let msg = format!(
            "Helm {verb} succeeded for release {}/{}.v{version_n} with chart {}@{}",
            rel.target_ns, rel.name, rel.chart, rel.version
        );
        kit::write_status(shared, &rt, &o, NAME, |st| {
            st["observedGeneration"] = json!(generation);
            st["helmChart"] = json!(helm_chart);
            st["lastAppliedRevision"] = json!(rel.version);
            if let Some(h) = st["history"].as_array_mut()
                && let Some(first) = h.first_mut()
            {
                first["status"] = json!("deployed");
            }
            kit::set_conditions(
                st,
                &[
                    Cond {
                        kind: "Ready",
                        status: "True",
                        reason,
                        message: &msg,
                    },
                    Cond {
                        kind: "Released",
                        status: "True",
                        reason,
                        message: &msg,
                    },
                ],
                Some(generation),
            );
        });
        let every = o["spec"]["interval"]
            .as_str()
            .and_then(kit::go_duration)
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(600));
        Action::RequeueAfter(every)
    }

    /// A failed install (or upgrade) with no remediation retries left, as helm-controller's
    /// atomic release reconciler leaves it: `Ready=False` and `Released=False` with
    /// `InstallFailed`, `Stalled=True` with `RetriesExceeded` ("Failed to install after 1
    /// attempt(s)"), the failure counted, and a Warning Event. It stays so until the spec
    /// changes.
    fn stall(
        &self,
        shared: &Shared,
        rt: &crate::resources::ResourceType,
        o: &serde_json::Value,
        rel: &Release,
        action: &str,
        msg: &str,
    ) {
        let generation = o["metadata"]["generation"].as_i64().unwrap_or(1);
        let (reason, counter) = if action == "upgrade" {
            ("UpgradeFailed", "upgradeFailures")
        } else {
            ("InstallFailed", "installFailures")
        };
        let stalled = format!("Failed to {action} after 1 attempt(s)");
        kit::write_status(shared, rt, o, NAME, |st| {
            st["observedGeneration"] = json!(generation);
            st["lastAttemptedRevision"] = json!(rel.version);
            st["lastAttemptedConfigDigest"] = json!(rel.digest);
            st["lastAttemptedGeneration"] = json!(generation);
            st["lastAttemptedReleaseAction"] = json!(action);
            st["failures"] = json!(1);
            st[counter] = json!(1);
            let [ready, released] = not_released(reason, msg);
            kit::set_conditions(
                st,
                &[
                    Cond {
                        kind: "Stalled",
                        status: "True",
                        reason: "RetriesExceeded",
                        message: &stalled,
                    },
                    ready,
                    released,
                ],
                Some(generation),
            );
        });
        self.events.emit(shared, NAME, o, true, reason, msg);
    }

    /// Helm's release record (`sh.helm.release.v1.<name>.v<N>`), without chart contents.
    fn release_secret(&self, shared: &Shared, actor: Option<&UserInfo>, rel: &Release, n: i64) {
        let record = json!({"name": rel.name, "namespace": rel.target_ns, "version": n,
            "chart": {"metadata": {"name": rel.chart, "version": rel.version}}, "info": {"status": "deployed"}});
        let doc = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
            "metadata": {
                "name": format!("sh.helm.release.v1.{}.v{n}", rel.name), "namespace": rel.target_ns,
                "labels": {"name": rel.name, "owner": "helm", "status": "deployed", "version": n.to_string()},
            },
            "data": {"release": base64::engine::general_purpose::STANDARD.encode(record.to_string())},
        });
        if let Err(e) = kit::apply_all_as(shared, actor, &[doc], NAME, &rel.target_ns) {
            tracing::warn!(error = %e, "cannot record the helm release secret");
        }
    }
}

#[async_trait]
impl Controller for HelmController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<String> {
        vec![
            HELMRELEASES.into(),
            HELMREPOS.into(),
            "apps/deployments".into(),
        ]
    }

    fn map(&self, shared: &Shared, e: &StoreEvent) -> Vec<ObjectKey> {
        match e.key.resource.as_str() {
            HELMRELEASES => vec![e.key.clone()],
            _ if e.key.resource == HELMREPOS || e.key.name == HELM_CONTROLLER => {
                kit::list(shared, HELMRELEASES, None)
                    .iter()
                    .map(|h| kit::key_of(HELMRELEASES, h))
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, shared: &Arc<Shared>, key: &ObjectKey) -> Action {
        if key.resource != HELMRELEASES {
            return Action::Done;
        }
        self.reconcile_one(shared, key)
    }
}

/// `Ready=False` and `Released=False` with one reason and message: how helm-controller marks a
/// release that did not install.
fn not_released<'a>(reason: &'a str, message: &'a str) -> [Cond<'a>; 2] {
    [
        Cond {
            kind: "Ready",
            status: "False",
            reason,
            message,
        },
        Cond {
            kind: "Released",
            status: "False",
            reason,
            message,
        },
    ]
}
