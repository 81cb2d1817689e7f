//! Flux's source-controller: GitRepository (credentials from `secretRef` checked by the
//! sandbox Git host, revision `<branch>@sha1:<tree digest>`, artifact in status) and
//! HelmRepository (an index revision). Conditions and messages follow source-controller 1.x
//! (reference §3.2, §3.3). Nothing is reconciled until the source-controller Deployment runs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest;

use super::charts::SOURCE_CONTROLLER;
use super::git::{GitError, GitHost};
use super::kit::{self, Backoff, Cond};
use crate::controllers::{Action, Controller};
use crate::rbac::UserInfo;
use crate::server::Shared;
use crate::store::{ObjectKey, StoreEvent};

/// Storage key of GitRepositories.
pub const GITREPOS: &str = "source.toolkit.fluxcd.io/gitrepositories";
/// Storage key of HelmRepositories.
pub const HELMREPOS: &str = "source.toolkit.fluxcd.io/helmrepositories";
const NAME: &str = "source-controller";
const FLUX_NS: &str = "flux-system";
const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

/// Reconciles GitRepositories and HelmRepositories.
pub struct SourceController {
    git: Arc<GitHost>,
    backoff: Backoff,
}

impl SourceController {
    /// A source controller fetching from `git`.
    pub fn new(git: Arc<GitHost>) -> Self {
        Self {
            git,
            backoff: Backoff::default(),
        }
    }
}

/// Whether the controller Deployment `name` in flux-system is available; Flux kinds are
/// only reconciled once their controller runs (as on a real cluster).
pub fn flux_running(shared: &Shared, name: &str) -> bool {
    kit::deployment_available(shared, FLUX_NS, name)
}

/// Who the Flux controller `name` acts as: the service account of its Deployment's pods
/// (the install manifest binds them to `crd-controller`, kustomize and helm to `cluster-admin`).
pub fn flux_identity(shared: &Shared, name: &str) -> Option<UserInfo> {
    kit::get(shared, "apps/deployments", FLUX_NS, name)
        .and_then(|d| kit::workload_identity(shared, &d))
}

/// Who the controller applies an object's manifests as: its own identity, or the account named
/// by `spec.serviceAccountName` in the object's namespace, which the controller impersonates
/// (so it needs `impersonate` on that account).
///
/// # Errors
/// The Forbidden message of the impersonation.
pub fn flux_actor(
    shared: &Shared,
    controller: &str,
    o: &Value,
) -> Result<Option<UserInfo>, String> {
    let own = flux_identity(shared, controller);
    let Some(sa) = o["spec"]["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
    else {
        return Ok(own);
    };
    let ns = kit::meta(o, "namespace");
    kit::allowed(
        shared,
        own.as_ref(),
        "impersonate",
        "",
        "serviceaccounts",
        "",
        ns,
        sa,
    )
    .map_err(|e| e.message)?;
    let uid = kit::get(shared, "/serviceaccounts", ns, sa)
        .map_or(String::new(), |a| kit::meta(&a, "uid").to_string());
    Ok(Some(UserInfo::service_account(ns, sa, &uid)))
}

/// What every Flux reconciler does before its own work, as the controllers do: skip a deleted
/// or suspended object, wait for the controller's Deployment, act as its service account (which
/// must be allowed to watch the kind and patch its status), and honour the `flux` readiness
/// delay. `Ok` carries the kind and the object; `Err` what to do now.
pub fn flux_begin(
    shared: &Shared,
    backoff: &Backoff,
    key: &ObjectKey,
    resource: &str,
    controller: &str,
) -> Result<(Arc<crate::resources::ResourceType>, Arc<Value>), Action> {
    let rt = kit::rt_of(shared, resource).ok_or(Action::Done)?;
    let Some(o) = kit::get(shared, resource, &key.namespace, &key.name) else {
        backoff.succeeded(key);
        return Err(Action::Done);
    };
    if o["metadata"]["deletionTimestamp"].is_string() || o["spec"]["suspend"] == true {
        return Err(Action::Done);
    }
    if !flux_running(shared, controller) {
        return Err(Action::RequeueAfter(Duration::from_secs(1)));
    }
    let user = flux_identity(shared, controller);
    if let Some(why) = flux_access_denied(shared, user.as_ref(), &rt, &key.namespace, &key.name) {
        tracing::warn!(error = %why, "{controller} cannot reconcile {}", rt.plural);
        return Err(Action::RequeueAfter(Duration::from_secs(5)));
    }
    if let Some(d) = kit::delay_remaining(shared, "flux", &o) {
        return Err(Action::RequeueAfter(d));
    }
    Ok((rt, o))
}

/// Why the Flux controller acting as `user` cannot reconcile `rt` objects (its informer lists
/// and watches every namespace; it patches their status), or `None`.
pub fn flux_access_denied(
    shared: &Shared,
    user: Option<&UserInfo>,
    rt: &crate::resources::ResourceType,
    ns: &str,
    name: &str,
) -> Option<String> {
    let checks = [
        ("list", "", "", ""),
        ("watch", "", "", ""),
        ("patch", "status", ns, name),
    ];
    checks.iter().find_map(|(verb, sub, ns, name)| {
        kit::allowed(shared, user, verb, &rt.group, &rt.plural, sub, ns, name)
            .err()
            .map(|e| e.message)
    })
}

fn interval(o: &Value, default: Duration) -> Duration {
    o["spec"]["interval"]
        .as_str()
        .and_then(kit::go_duration)
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
}

/// `(reason, message)` of a failed fetch.
type Failure = (&'static str, String);

fn credentials(
    shared: &Shared,
    user: Option<&UserInfo>,
    ns: &str,
    o: &Value,
) -> Result<Option<String>, Failure> {
    let Some(secret_name) = o["spec"]["secretRef"]["name"].as_str() else {
        return Ok(None);
    };
    if let Err(e) = kit::allowed(shared, user, "get", "", "secrets", "", ns, secret_name) {
        return Err((
            "AuthenticationFailed",
            format!("failed to get secret '{ns}/{secret_name}': {}", e.message),
        ));
    }
    let Some(secret) = kit::get(shared, "/secrets", ns, secret_name) else {
        return Err((
            "AuthenticationFailed",
            format!(
                "failed to get secret '{ns}/{secret_name}': secrets \"{secret_name}\" not found"
            ),
        ));
    };
    let field = |k: &str| {
        secret["data"][k]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
    };
    match (field("username"), field("password"), field("bearerToken")) {
        (Some(_), Some(p), _) => Ok(Some(p)),
        (_, _, Some(t)) => Ok(Some(t)),
        _ => Err((
            "AuthenticationFailed",
            format!(
                "invalid '{secret_name}' secret data: required fields 'username' and 'password'"
            ),
        )),
    }
}

impl SourceController {
    fn git_repository(&self, shared: &Shared, key: &ObjectKey) -> Action {
        let (rt, o) = match flux_begin(shared, &self.backoff, key, GITREPOS, SOURCE_CONTROLLER) {
            Ok(begun) => begun,
            Err(action) => return action,
        };
        let user = flux_identity(shared, SOURCE_CONTROLLER);
        let every = interval(&o, Duration::from_secs(60));
        let generation = o["metadata"]["generation"].as_i64().unwrap_or(1);
        let url = o["spec"]["url"].as_str().unwrap_or("").to_string();
        let branch = o["spec"]["ref"]["branch"]
            .as_str()
            .unwrap_or("master")
            .to_string();
        let requested = o["metadata"]["annotations"][REQUESTED_AT]
            .as_str()
            .map(str::to_string);
        let other_ref = ["tag", "semver", "name", "commit"]
            .into_iter()
            .find(|k| o["spec"]["ref"][*k].is_string());
        let fetched = match other_ref {
            Some(k) => Err((
                "GitOperationFailed",
                format!("not implemented in the sandbox: ref.{k} (only branch refs are served)"),
            )),
            None => Ok(()),
        }
        .and_then(|()| credentials(shared, user.as_ref(), &key.namespace, &o))
        .and_then(|pw| {
            self.git.fetch(&url, &branch, pw.as_deref()).map_err(|e| {
                let reason = match e {
                    GitError::AuthRequired | GitError::AuthFailed => "AuthenticationFailed",
                    _ => "GitOperationFailed",
                };
                (
                    reason,
                    format!(
                        "failed to checkout and determine revision: unable to clone '{url}': {e}"
                    ),
                )
            })
        });
        let (ns, name) = (key.namespace.clone(), key.name.clone());
        let action = match &fetched {
            Ok(_) => {
                self.backoff.succeeded(key);
                Action::RequeueAfter(every)
            }
            Err(_) => {
                Action::RequeueAfter(self.backoff.failed(key, every.min(Duration::from_secs(10))))
            }
        };
        kit::write_status(shared, &rt, &o, NAME, |st| {
            st["observedGeneration"] = json!(generation);
            if let Some(r) = &requested {
                st["lastHandledReconcileAt"] = json!(r);
            }
            match &fetched {
                Ok(c) => {
                    let revision = format!("{branch}@sha1:{}", c.commit);
                    let msg = format!("stored artifact for revision '{revision}'");
                    if st["artifact"]["revision"] != revision.as_str() {
                        let path = format!("gitrepository/{ns}/{name}/{}.tar.gz", c.commit);
                        st["artifact"] = json!({
                            "path": path,
                            "url": format!("http://source-controller.flux-system.svc.cluster.local./{path}"),
                            "revision": revision,
                            "digest": c.digest,
                            "lastUpdateTime": kit::now(),
                            "size": c.size,
                        });
                    }
                    kit::set_conditions(
                        st,
                        &[
                            Cond {
                                kind: "Ready",
                                status: "True",
                                reason: "Succeeded",
                                message: &msg,
                            },
                            Cond {
                                kind: "ArtifactInStorage",
                                status: "True",
                                reason: "Succeeded",
                                message: &msg,
                            },
                        ],
                        Some(generation),
                    );
                }
                Err((reason, msg)) => {
                    let mut conds = vec![
                        Cond {
                            kind: "Ready",
                            status: "False",
                            reason,
                            message: msg,
                        },
                        Cond {
                            kind: "FetchFailed",
                            status: "True",
                            reason,
                            message: msg,
                        },
                    ];
                    let stored;
                    if let Some(rev) = st["artifact"]["revision"].as_str() {
                        stored = format!("stored artifact for revision '{rev}'");
                        conds.push(Cond {
                            kind: "ArtifactInStorage",
                            status: "True",
                            reason: "Succeeded",
                            message: &stored,
                        });
                    }
                    kit::set_conditions(st, &conds, Some(generation));
                }
            }
        });
        if let Err((_, msg)) = &fetched {
            tracing::info!(gitrepository = %format!("{ns}/{name}"), %msg, "git fetch failed");
        }
        action
    }

    fn helm_repository(&self, shared: &Shared, key: &ObjectKey) -> Action {
        let (rt, o) = match flux_begin(shared, &self.backoff, key, HELMREPOS, SOURCE_CONTROLLER) {
            Ok(begun) => begun,
            Err(action) => return action,
        };
        let generation = o["metadata"]["generation"].as_i64().unwrap_or(1);
        let url = o["spec"]["url"].as_str().unwrap_or("").to_string();
        let oci = o["spec"]["type"] == "oci";
        let valid = if oci {
            url.starts_with("oci://")
        } else {
            url.starts_with("https://") || url.starts_with("http://")
        };
        let (ns, name) = (key.namespace.clone(), key.name.clone());
        kit::write_status(shared, &rt, &o, NAME, |st| {
            st["observedGeneration"] = json!(generation);
            if let Some(r) = o["metadata"]["annotations"][REQUESTED_AT].as_str() {
                st["lastHandledReconcileAt"] = json!(r);
            }
            if !valid {
                let msg = format!("invalid Helm repository URL: {url}");
                kit::set_conditions(
                    st,
                    &[Cond {
                        kind: "Ready",
                        status: "False",
                        reason: "URLInvalid",
                        message: &msg,
                    }],
                    Some(generation),
                );
                return;
            }
            if oci {
                kit::set_conditions(
                    st,
                    &[Cond {
                        kind: "Ready",
                        status: "True",
                        reason: "Succeeded",
                        message: "Helm repository is Ready",
                    }],
                    Some(generation),
                );
                return;
            }
            let index_url = format!("{}/index.yaml", url.trim_end_matches('/'));
            let digest = hex::encode(sha2::Sha256::digest(index_url.as_bytes()));
            let revision = format!("sha256:{digest}");
            let msg = format!("stored artifact: revision '{revision}'");
            st["url"] = json!(format!(
                "http://source-controller.flux-system.svc.cluster.local./helmrepository/{ns}/{name}/index.yaml"
            ));
            if st["artifact"]["revision"] != revision.as_str() {
                let path = format!("helmrepository/{ns}/{name}/index-{digest}.yaml");
                st["artifact"] = json!({
                    "path": path,
                    "url": format!("http://source-controller.flux-system.svc.cluster.local./{path}"),
                    "revision": revision, "digest": revision,
                    "lastUpdateTime": kit::now(), "size": 1024,
                });
            }
            kit::set_conditions(
                st,
                &[
                    Cond {
                        kind: "Ready",
                        status: "True",
                        reason: "Succeeded",
                        message: &msg,
                    },
                    Cond {
                        kind: "ArtifactInStorage",
                        status: "True",
                        reason: "Succeeded",
                        message: &msg,
                    },
                ],
                Some(generation),
            );
        });
        Action::RequeueAfter(interval(&o, Duration::from_secs(600)))
    }
}

#[async_trait]
impl Controller for SourceController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<String> {
        vec![
            GITREPOS.into(),
            HELMREPOS.into(),
            "/secrets".into(),
            "apps/deployments".into(),
        ]
    }

    fn map(&self, shared: &Shared, e: &StoreEvent) -> Vec<ObjectKey> {
        match e.key.resource.as_str() {
            GITREPOS | HELMREPOS => vec![e.key.clone()],
            "/secrets" => kit::list(shared, GITREPOS, Some(&e.key.namespace))
                .iter()
                .filter(|g| g["spec"]["secretRef"]["name"] == e.key.name.as_str())
                .map(|g| kit::key_of(GITREPOS, g))
                .collect(),
            _ if e.key.namespace == FLUX_NS && e.key.name == SOURCE_CONTROLLER => {
                let mut v: Vec<ObjectKey> = kit::list(shared, GITREPOS, None)
                    .iter()
                    .map(|g| kit::key_of(GITREPOS, g))
                    .collect();
                v.extend(
                    kit::list(shared, HELMREPOS, None)
                        .iter()
                        .map(|g| kit::key_of(HELMREPOS, g)),
                );
                v
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, shared: &Arc<Shared>, key: &ObjectKey) -> Action {
        match key.resource.as_str() {
            GITREPOS => self.git_repository(shared, key),
            HELMREPOS => self.helm_repository(shared, key),
            _ => Action::Done,
        }
    }
}
