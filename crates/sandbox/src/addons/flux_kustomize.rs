//! Flux's kustomize-controller: builds the YAML under `spec.path` of the source's content
//! (a `kustomization.yaml`'s `resources`, else every `*.yaml` below the path), server-side
//! applies it as `kustomize-controller`, prunes what it applied before and is gone now,
//! honours `dependsOn`, and reports like kustomize-controller 1.x (reference §3.4).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::charts::KUSTOMIZE_CONTROLLER;
use super::flux_source::{GITREPOS, flux_actor, flux_begin};
use super::git::GitHost;
use super::kit::{self, Backoff, Cond};
use crate::cluster::WriteOpts;
use crate::controllers::{Action, Controller};
use crate::rbac::UserInfo;
use crate::server::Shared;
use crate::store::{ObjectKey, StoreEvent};

/// Storage key of Kustomizations.
pub const KUSTOMIZATIONS: &str = "kustomize.toolkit.fluxcd.io/kustomizations";
const NAME: &str = "kustomize-controller";
const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

/// Reconciles Kustomizations.
pub struct KustomizeController {
    git: Arc<GitHost>,
    backoff: Backoff,
    last_applied: Mutex<HashMap<ObjectKey, Instant>>,
}

impl KustomizeController {
    /// A controller reading sources from `git`.
    pub fn new(git: Arc<GitHost>) -> Self {
        Self {
            git,
            backoff: Backoff::default(),
            last_applied: Mutex::default(),
        }
    }
}

/// Collects the manifest files of a kustomize directory.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let kfile = ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file());
    if let Some(kfile) = kfile {
        let text = std::fs::read_to_string(&kfile).map_err(|e| e.to_string())?;
        let k: Value = serde_yaml_ng::from_str(&text)
            .map_err(|e| format!("failed to decode {}: {e}", kfile.display()))?;
        for r in k["resources"].as_array().cloned().unwrap_or_default() {
            let Some(r) = r.as_str() else { continue };
            let p = dir.join(r);
            if p.is_dir() {
                collect(&p, out)?;
            } else if p.is_file() {
                out.push(p);
            } else {
                return Err(format!(
                    "accumulating resources: accumulation err='accumulating resources from '{r}': open {}: no such file or directory'",
                    p.display()
                ));
            }
        }
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
    Ok(())
}

/// Builds the objects of `path` below `root`.
fn build(root: &Path, path: &str) -> Result<Vec<Value>, (&'static str, String)> {
    let rel = path.trim_start_matches("./").trim_start_matches('/');
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    if !dir.is_dir() {
        return Err((
            "ArtifactFailed",
            format!(
                "kustomization path not found: stat {}: no such file or directory",
                dir.display()
            ),
        ));
    }
    let mut files = Vec::new();
    collect(&dir, &mut files).map_err(|e| ("BuildFailed", e))?;
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| ("BuildFailed", e.to_string()))?;
        let name = f.strip_prefix(root).unwrap_or(&f).display().to_string();
        for d in kit::parse_docs(&name, &text).map_err(|e| ("BuildFailed", e.to_string()))? {
            if d["apiVersion"]
                .as_str()
                .is_some_and(|a| a.starts_with("kustomize.config.k8s.io/"))
            {
                continue;
            }
            docs.push(d);
        }
    }
    Ok(docs)
}

impl KustomizeController {
    fn dependency_not_ready(shared: &Shared, ns: &str, o: &Value) -> Option<String> {
        for d in o["spec"]["dependsOn"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let dn = d["name"].as_str().unwrap_or("");
            let dns = d["namespace"].as_str().unwrap_or(ns);
            let ready = kit::get(shared, KUSTOMIZATIONS, dns, dn).is_some_and(|k| {
                kit::is_ready(&k)
                    && k["status"]["observedGeneration"] == k["metadata"]["generation"]
            });
            if !ready {
                return Some(format!("dependency '{dns}/{dn}' is not ready"));
            }
        }
        None
    }

    fn prune(
        shared: &Shared,
        user: Option<&UserInfo>,
        old: &Value,
        keep: &BTreeSet<String>,
    ) -> Result<(), String> {
        let opts = WriteOpts::controller(NAME);
        for e in old["entries"].as_array().cloned().unwrap_or_default() {
            let id = e["id"].as_str().unwrap_or("");
            if keep.contains(id) {
                continue;
            }
            let parts: Vec<&str> = id.splitn(4, '_').collect();
            let [ns, name, group, kind] = parts[..] else {
                continue;
            };
            let version = e["v"].as_str().unwrap_or("v1");
            let av = if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            };
            let Some(rt) = shared.cluster.registry.by_kind(&av, kind) else {
                continue;
            };
            kit::allowed(shared, user, "delete", &rt.group, &rt.plural, "", ns, name)
                .map_err(|e| format!("{kind}/{ns}/{name} prune failed: {}", e.message))?;
            match shared.cluster.delete(&rt, ns, name, &Value::Null, &opts) {
                Ok(_) => tracing::info!(%id, "pruned"),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(format!("{kind}/{ns}/{name} prune failed: {}", e.message)),
            }
        }
        Ok(())
    }

    fn reconcile_one(&self, shared: &Shared, key: &ObjectKey) -> Action {
        let (rt, o) = match flux_begin(
            shared,
            &self.backoff,
            key,
            KUSTOMIZATIONS,
            KUSTOMIZE_CONTROLLER,
        ) {
            Ok(begun) => begun,
            Err(action) => return action,
        };
        let ns = key.namespace.as_str();
        let generation = o["metadata"]["generation"].as_i64().unwrap_or(1);
        let every = o["spec"]["interval"]
            .as_str()
            .and_then(kit::go_duration)
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(600));
        let retry = o["spec"]["retryInterval"]
            .as_str()
            .and_then(kit::go_duration)
            .unwrap_or(every)
            .min(Duration::from_secs(10));
        let requested = o["metadata"]["annotations"][REQUESTED_AT]
            .as_str()
            .map(str::to_string);
        let fail = |reason: &str, msg: &str, revision: Option<&str>| {
            kit::write_status(shared, &rt, &o, NAME, |st| {
                st["observedGeneration"] = json!(generation);
                if let Some(r) = &requested {
                    st["lastHandledReconcileAt"] = json!(r);
                }
                if let Some(r) = revision {
                    st["lastAttemptedRevision"] = json!(r);
                }
                kit::set_conditions(
                    st,
                    &[Cond {
                        kind: "Ready",
                        status: "False",
                        reason,
                        message: msg,
                    }],
                    Some(generation),
                );
            });
        };
        if let Some(msg) = Self::dependency_not_ready(shared, ns, &o) {
            fail("DependencyNotReady", &msg, None);
            return Action::RequeueAfter(Duration::from_secs(1));
        }
        // The source and its artifact.
        let src_kind = o["spec"]["sourceRef"]["kind"].as_str().unwrap_or("");
        let src_name = o["spec"]["sourceRef"]["name"].as_str().unwrap_or("");
        let src_ns = o["spec"]["sourceRef"]["namespace"].as_str().unwrap_or(ns);
        if src_kind != "GitRepository" {
            fail(
                "ArtifactFailed",
                &format!("source kind '{src_kind}' is not supported by the sandbox"),
                None,
            );
            return Action::RequeueAfter(self.backoff.failed(key, retry));
        }
        let source = kit::get(shared, GITREPOS, src_ns, src_name);
        let revision = source.as_ref().and_then(|s| {
            s["status"]["artifact"]["revision"]
                .as_str()
                .map(str::to_string)
        });
        let (Some(source), Some(revision)) = (source, revision) else {
            fail(
                "ArtifactFailed",
                &format!(
                    "Source artifact not found, retrying in {}s",
                    retry.as_secs().max(1)
                ),
                None,
            );
            return Action::RequeueAfter(self.backoff.failed(key, retry));
        };
        // Nothing changed since the last successful apply: wait for the interval (drift
        // correction re-applies then).
        let handled = requested.is_none()
            || requested.as_deref() == o["status"]["lastHandledReconcileAt"].as_str();
        let up_to_date = kit::is_ready(&o)
            && handled
            && o["status"]["lastAppliedRevision"] == revision.as_str()
            && o["status"]["observedGeneration"] == generation;
        if up_to_date
            && let Some(at) = self
                .last_applied
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(key)
            && at.elapsed() < every
        {
            return Action::RequeueAfter(every - at.elapsed());
        }
        let url = source["spec"]["url"].as_str().unwrap_or("");
        let Some(root) = self.git.content_dir(url) else {
            fail(
                "ArtifactFailed",
                "Source artifact not found, retrying in 10s",
                None,
            );
            return Action::RequeueAfter(self.backoff.failed(key, retry));
        };
        let path = o["spec"]["path"].as_str().unwrap_or("./");
        let mut docs = match build(&root, path) {
            Ok(d) => d,
            Err((reason, msg)) => {
                fail(reason, &msg, Some(&revision));
                return Action::RequeueAfter(self.backoff.failed(key, retry));
            }
        };
        let target_ns = o["spec"]["targetNamespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        for d in &mut docs {
            let labels = &mut d["metadata"]["labels"];
            if !labels.is_object() {
                *labels = json!({});
            }
            labels["kustomize.toolkit.fluxcd.io/name"] = json!(key.name);
            labels["kustomize.toolkit.fluxcd.io/namespace"] = json!(ns);
            if !target_ns.is_empty()
                && d["kind"] != "Namespace"
                && d["kind"] != "CustomResourceDefinition"
            {
                d["metadata"]["namespace"] = json!(target_ns);
            }
        }
        let actor = match flux_actor(shared, KUSTOMIZE_CONTROLLER, &o) {
            Ok(a) => a,
            Err(msg) => {
                fail("ReconciliationFailed", &msg, Some(&revision));
                return Action::RequeueAfter(self.backoff.failed(key, retry));
            }
        };
        let applied = match kit::apply_all_as(shared, actor.as_ref(), &docs, NAME, "default") {
            Ok(a) => a,
            Err(e) => {
                fail("ReconciliationFailed", &e.to_string(), Some(&revision));
                return Action::RequeueAfter(self.backoff.failed(key, retry));
            }
        };
        let entries: Vec<Value> = applied
            .iter()
            .map(|a| json!({"id": a.id(), "v": a.version}))
            .collect();
        let keep: BTreeSet<String> = applied.iter().map(kit::Applied::id).collect();
        if o["spec"]["prune"] == true
            && let Err(msg) = Self::prune(shared, actor.as_ref(), &o["status"]["inventory"], &keep)
        {
            fail("PruneFailed", &msg, Some(&revision));
            return Action::RequeueAfter(self.backoff.failed(key, retry));
        }
        let health_checked = o["spec"]["wait"] == true
            || o["spec"]["healthChecks"]
                .as_array()
                .is_some_and(|h| !h.is_empty());
        let unhealthy = applied.iter().find(|a| {
            (a.kind == "Deployment" || a.kind == "StatefulSet")
                && !kit::get(shared, &a.resource, &a.namespace, &a.name)
                    .is_some_and(|w| kit::workload_ready(&w))
        });
        if health_checked && let Some(u) = unhealthy {
            let msg = format!(
                "Health check in progress: waiting for {}/{}/{} to become ready",
                u.kind, u.namespace, u.name
            );
            kit::write_status(shared, &rt, &o, NAME, |st| {
                st["lastAttemptedRevision"] = json!(revision);
                kit::set_conditions(
                    st,
                    &[Cond {
                        kind: "Ready",
                        status: "Unknown",
                        reason: "Progressing",
                        message: &msg,
                    }],
                    Some(generation),
                );
            });
            return Action::RequeueAfter(Duration::from_millis(500));
        }
        self.backoff.succeeded(key);
        self.last_applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), Instant::now());
        let msg = format!("Applied revision: {revision}");
        kit::write_status(shared, &rt, &o, NAME, |st| {
            st["observedGeneration"] = json!(generation);
            if let Some(r) = &requested {
                st["lastHandledReconcileAt"] = json!(r);
            }
            st["lastAppliedRevision"] = json!(revision);
            st["lastAttemptedRevision"] = json!(revision);
            st["inventory"] = json!({"entries": entries});
            let mut conds = vec![Cond {
                kind: "Ready",
                status: "True",
                reason: "ReconciliationSucceeded",
                message: &msg,
            }];
            // Health is only assessed with `wait` or health checks (applied workloads are
            // made ready by the sandbox's workload controller).
            if health_checked {
                conds.push(Cond {
                    kind: "Healthy",
                    status: "True",
                    reason: "Succeeded",
                    message: "Health check passed",
                });
            }
            kit::set_conditions(st, &conds, Some(generation));
        });
        Action::RequeueAfter(every)
    }
}

#[async_trait]
impl Controller for KustomizeController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<String> {
        vec![
            KUSTOMIZATIONS.into(),
            GITREPOS.into(),
            "apps/deployments".into(),
        ]
    }

    fn map(&self, shared: &Shared, e: &StoreEvent) -> Vec<ObjectKey> {
        match e.key.resource.as_str() {
            // A source or a dependency changed: every Kustomization may care (few objects).
            KUSTOMIZATIONS | GITREPOS => kit::list(shared, KUSTOMIZATIONS, None)
                .iter()
                .map(|k| kit::key_of(KUSTOMIZATIONS, k))
                .collect(),
            _ if e.key.name == KUSTOMIZE_CONTROLLER => kit::list(shared, KUSTOMIZATIONS, None)
                .iter()
                .map(|k| kit::key_of(KUSTOMIZATIONS, k))
                .collect(),
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, shared: &Arc<Shared>, key: &ObjectKey) -> Action {
        if key.resource != KUSTOMIZATIONS {
            return Action::Done;
        }
        self.reconcile_one(shared, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_follows_kustomization_resources_or_all_yaml() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a/sub")).expect("mkdir");
        std::fs::write(root.join("a/kustomization.yaml"), "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [one.yaml, sub]\n").expect("w");
        std::fs::write(root.join("a/one.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: two}\n").expect("w");
        std::fs::write(
            root.join("a/ignored.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: no}\n",
        )
        .expect("w");
        std::fs::write(
            root.join("a/sub/three.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: three}\n",
        )
        .expect("w");
        let names: Vec<String> = build(root, "./a")
            .expect("build")
            .iter()
            .map(|d| kit::meta(d, "name").to_string())
            .collect();
        assert_eq!(names, ["one", "two", "three"]);
        let all = build(root, "./a/sub").expect("build");
        assert_eq!(all.len(), 1);
        assert_eq!(build(root, "./missing").unwrap_err().0, "ArtifactFailed");
    }
}
