//! Server-side apply of manifests, and the dry-run plan that predicts it.
//!
//! Steps hand over YAML (a rendered template or an upstream install manifest); this module turns
//! it into objects, finds out how the cluster serves each kind (discovery, cached, re-queried for
//! a kind it has not seen, since a CRD applied a moment ago makes new kinds appear), and
//! server-side-applies them with the field manager `kubestrap` in a safe order: Namespaces, then
//! CustomResourceDefinitions (waited to Established), then everything else.
//!
//! Apply is idempotent *without writing*: an object that exists is first applied with
//! `dryRun=All`, and the real apply is only sent when the dry-run result differs from the live
//! object. A second run on a finished cluster therefore makes no write request. `plan` is the
//! same comparison without the final write.

use std::collections::HashMap;
use std::time::Duration;

use ::kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use ::kube::core::{ApiResource, GroupVersionKind};
use ::kube::discovery::{self, Scope};
use ::kube::{Client, ResourceExt};
use backon::{ExponentialBuilder, Retryable};
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::object::ObjectKey;
use super::wait::{self, WaitError, WaitOptions};

/// The field manager every kubestrap write uses, so ownership in `managedFields` is clear.
pub const FIELD_MANAGER: &str = "kubestrap";

/// Labels and annotation prefixes that make a GitOps controller adopt (and later prune or
/// overwrite) an object. Pre-created Secrets must not carry them (seed 000).
const TRACKING_PREFIXES: &[&str] = &[
    "kustomize.toolkit.fluxcd.io/",
    "helm.toolkit.fluxcd.io/",
    "argocd.argoproj.io/",
    "app.kubernetes.io/managed-by",
    "meta.helm.sh/",
];

/// Why applying or planning failed. Every variant that concerns one object names it.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A YAML document is not valid YAML or not an object.
    #[error("manifest document {index} is not valid YAML: {message}: fix the manifest")]
    Parse {
        /// Zero-based document index in the stream.
        index: usize,
        /// The parser's message (the document content is never included).
        message: String,
    },
    /// A document lacks `apiVersion`, `kind` or `metadata.name`.
    #[error(
        "manifest document {index} has no {field}: every object needs apiVersion, kind and metadata.name"
    )]
    Incomplete {
        /// Zero-based document index.
        index: usize,
        /// The missing field.
        field: &'static str,
    },
    /// The cluster does not serve the object's kind (its CRD is missing or not Established).
    #[error(
        "{object}: the cluster does not serve {api_version}: install its CustomResourceDefinition first"
    )]
    UnknownKind {
        /// The object.
        object: ObjectKey,
        /// `apiVersion`/kind that was looked up.
        api_version: String,
    },
    /// The API answered with an error status.
    #[error("{0}")]
    Api(Box<ApiRejection>),
    /// The API could not be reached or answered something that is not a Kubernetes response.
    #[error(
        "{object}: {operation} failed, the API did not answer properly: {source}: check that the cluster is up"
    )]
    Transport {
        /// The object.
        object: ObjectKey,
        /// What was attempted.
        operation: &'static str,
        /// The client error.
        #[source]
        source: Box<::kube::Error>,
    },
    /// A Secret to pre-create carries a GitOps tracking label or annotation.
    #[error(
        "{object}: carries the GitOps tracking key {key:?}: pre-created secrets must not be adopted by a GitOps controller"
    )]
    TrackingLabel {
        /// The Secret.
        object: ObjectKey,
        /// The offending label or annotation key.
        key: String,
    },
    /// A CRD did not become Established in time.
    #[error("{0}")]
    CrdNotEstablished(#[source] Box<WaitError>),
}

/// An error status from the API about one object (boxed inside [`ApplyError::Api`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRejection {
    /// The object.
    pub object: ObjectKey,
    /// What was attempted: `apply`, `dry-run apply`, `get`, `create`, `discovery`.
    pub operation: &'static str,
    /// HTTP status code.
    pub code: u16,
    /// The API's machine-readable reason, e.g. `Conflict`.
    pub reason: String,
    /// The API's message.
    pub message: String,
    /// What to do next, when known (starts with `: `), else empty.
    pub hint: String,
}

impl std::fmt::Display for ApiRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} was rejected by the API ({} {}): {}{}",
            self.object, self.operation, self.code, self.reason, self.message, self.hint
        )
    }
}

/// How [`Applier`] writes.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Field manager for server-side apply; `kubestrap` unless a caller needs another.
    pub field_manager: String,
    /// Take over fields owned by other managers. Off by default: a conflict is an error that
    /// names the other manager, so kubestrap never silently fights a controller.
    pub force: bool,
    /// How long to wait for an applied CRD to become Established before applying its objects.
    pub crd_timeout: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            field_manager: FIELD_MANAGER.to_owned(),
            force: false,
            crd_timeout: Duration::from_secs(60),
        }
    }
}

/// What [`Applier::apply`] did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyAction {
    /// The object did not exist and was created.
    Created,
    /// The object existed and the apply changed it.
    Configured,
    /// The object already matched; nothing was written.
    Unchanged,
}

/// The result of applying one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApplyOutcome {
    /// The object.
    pub object: ObjectKey,
    /// What happened.
    pub action: ApplyAction,
}

/// What applying one object would do, as predicted by [`Applier::plan`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum PlanAction {
    /// The object does not exist; the server accepted a dry-run create.
    Create,
    /// The object cannot be checked yet (API unreachable, or its kind is not served yet, e.g.
    /// its CRD comes from an earlier step); it would be created.
    WouldCreate {
        /// Why it could not be checked.
        reason: String,
    },
    /// The object exists and applying would change these JSON pointer paths.
    Update {
        /// Changed paths such as `/spec/interval` (names only, never values).
        paths: Vec<String>,
    },
    /// The object exists and already matches.
    Unchanged,
}

/// The plan for one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlanOutcome {
    /// The object.
    pub object: ObjectKey,
    /// What would happen.
    pub action: PlanAction,
}

/// How the cluster serves a kind.
#[derive(Debug, Clone)]
struct Served {
    resource: ApiResource,
    namespaced: bool,
}

/// Applies and plans manifests against one cluster, caching discovery.
///
/// Cheap to share behind a reference; the discovery cache is behind an async mutex that is
/// never held across a request.
pub struct Applier {
    client: Client,
    options: ApplyOptions,
    served: Mutex<HashMap<GroupVersionKind, Served>>,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Applier {
    /// An applier for `client` with `options`.
    #[must_use]
    pub fn new(client: Client, options: ApplyOptions) -> Self {
        Self {
            client,
            options,
            served: Mutex::new(HashMap::new()),
        }
    }

    /// Server-side-applies `objects` in dependency order (see [`sort_for_apply`]), waiting for
    /// applied CRDs to be Established before the objects after them.
    ///
    /// Stops at the first failure; outcomes of objects applied before it are lost with the
    /// error, which names the failing object (re-running is safe: apply is idempotent).
    ///
    /// # Errors
    /// Any [`ApplyError`] naming the failing object.
    pub async fn apply(
        &self,
        objects: Vec<DynamicObject>,
    ) -> Result<Vec<ApplyOutcome>, ApplyError> {
        let ordered = sort_for_apply(objects);
        let mut outcomes = Vec::with_capacity(ordered.len());
        let mut pending_crds: Vec<String> = Vec::new();
        for obj in ordered {
            let is_crd = is_crd(&obj);
            if !is_crd && !pending_crds.is_empty() && !is_namespace(&obj) {
                for name in pending_crds.drain(..) {
                    self.wait_established(&name).await?;
                }
            }
            let name = obj.name_any();
            outcomes.push(self.apply_one_retrying(obj).await?);
            if is_crd {
                pending_crds.push(name);
            }
        }
        for name in pending_crds {
            self.wait_established(&name).await?;
        }
        Ok(outcomes)
    }

    async fn wait_established(&self, name: &str) -> Result<(), ApplyError> {
        let options = WaitOptions::new(self.options.crd_timeout);
        wait::crd_established(&self.client, name, &options, &mut |_| {})
            .await
            .map(|_| ())
            .map_err(|e| ApplyError::CrdNotEstablished(Box::new(e)))
    }

    /// Parses a multi-document YAML stream and applies it (see [`Applier::apply`]).
    ///
    /// # Errors
    /// A parse error or any [`ApplyError`] from applying.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<Vec<ApplyOutcome>, ApplyError> {
        self.apply(parse_manifests(yaml)?).await
    }

    /// Parses a multi-document YAML stream and plans it (see [`Applier::plan`]).
    ///
    /// # Errors
    /// A parse error or any [`ApplyError`] from planning.
    pub async fn plan_yaml(&self, yaml: &str) -> Result<Vec<PlanOutcome>, ApplyError> {
        self.plan(parse_manifests(yaml)?).await
    }

    /// [`Applier::apply_one`], retried a few times with a short backoff when the API answers
    /// 429/5xx or does not answer, as client-go does for its idempotent requests: one manifest
    /// is dozens of requests, and a single transient error must not fail the whole stream.
    ///
    /// # Errors
    /// The last [`ApplyError`] when every attempt failed, or the first permanent one.
    pub async fn apply_one_retrying(&self, obj: DynamicObject) -> Result<ApplyOutcome, ApplyError> {
        (|| self.apply_one(obj.clone()))
            .retry(request_backoff())
            .when(is_transient)
            .await
    }

    /// Server-side-applies one object; sends the real apply only when a dry-run shows a change.
    ///
    /// # Errors
    /// Any [`ApplyError`] naming the object.
    pub async fn apply_one(&self, obj: DynamicObject) -> Result<ApplyOutcome, ApplyError> {
        let (api, obj, key, live) = self.observe(obj).await?;
        let name = &key.name;
        let params = self.patch_params();
        if let Some(live) = &live {
            let dry = api
                .patch(name, &params.clone().dry_run(), &Patch::Apply(&obj))
                .await
                .map_err(|e| self.apply_error(&key, "dry-run apply", e))?;
            if changed_paths(live, &dry).is_empty() {
                return Ok(ApplyOutcome {
                    object: key,
                    action: ApplyAction::Unchanged,
                });
            }
        }
        api.patch(name, &params, &Patch::Apply(&obj))
            .await
            .map_err(|e| self.apply_error(&key, "apply", e))?;
        let action = if live.is_some() {
            ApplyAction::Configured
        } else {
            ApplyAction::Created
        };
        Ok(ApplyOutcome {
            object: key,
            action,
        })
    }

    /// Predicts what [`Applier::apply`] would do to each object, without changing anything:
    /// server-side `dryRun=All` applies compared with the live objects.
    ///
    /// Objects whose kind is not served yet, and every object once the API turns out to be
    /// unreachable, are reported as [`PlanAction::WouldCreate`] rather than failing the plan.
    ///
    /// # Errors
    /// An [`ApplyError::Api`] when the API rejects a dry-run (the real apply would fail too).
    pub async fn plan(&self, objects: Vec<DynamicObject>) -> Result<Vec<PlanOutcome>, ApplyError> {
        let mut out = Vec::with_capacity(objects.len());
        let mut unreachable: Option<String> = None;
        for obj in sort_for_apply(objects) {
            if let Some(reason) = &unreachable {
                out.push(PlanOutcome {
                    object: object_key(&obj, None)?,
                    action: PlanAction::WouldCreate {
                        reason: reason.clone(),
                    },
                });
                continue;
            }
            match self.plan_one_retrying(obj.clone()).await {
                Ok(outcome) => out.push(outcome),
                Err(ApplyError::UnknownKind { object, .. }) => out.push(PlanOutcome {
                    object,
                    action: PlanAction::WouldCreate {
                        reason: "its kind is not served yet".to_owned(),
                    },
                }),
                Err(ApplyError::Transport { object, source, .. }) if is_unreachable(&source) => {
                    let reason = "the API is not reachable".to_owned();
                    unreachable = Some(reason.clone());
                    out.push(PlanOutcome {
                        object,
                        action: PlanAction::WouldCreate { reason },
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// [`Applier::plan_one`] with the same retries as [`Applier::apply_one_retrying`].
    async fn plan_one_retrying(&self, obj: DynamicObject) -> Result<PlanOutcome, ApplyError> {
        // An unreachable API is not waited out here: the plan says "would create" at once.
        (|| self.plan_one(obj.clone()))
            .retry(request_backoff())
            .when(|e| {
                is_transient(e)
                    && !matches!(e, ApplyError::Transport { source, .. } if is_unreachable(source))
            })
            .await
    }

    /// Plans one object (see [`Applier::plan`]).
    ///
    /// # Errors
    /// Any [`ApplyError`], including [`ApplyError::UnknownKind`] and [`ApplyError::Transport`]
    /// which [`Applier::plan`] turns into "would create".
    pub async fn plan_one(&self, obj: DynamicObject) -> Result<PlanOutcome, ApplyError> {
        let (api, obj, key, live) = self.observe(obj).await?;
        let name = &key.name;
        let dry = api
            .patch(name, &self.patch_params().dry_run(), &Patch::Apply(&obj))
            .await
            .map_err(|e| self.apply_error(&key, "dry-run apply", e))?;
        let action = match live {
            None => PlanAction::Create,
            Some(live) => {
                let paths = changed_paths(&live, &dry);
                if paths.is_empty() {
                    PlanAction::Unchanged
                } else {
                    PlanAction::Update { paths }
                }
            }
        };
        Ok(PlanOutcome {
            object: key,
            action,
        })
    }

    fn patch_params(&self) -> PatchParams {
        let params = PatchParams::apply(&self.options.field_manager);
        if self.options.force {
            params.force()
        } else {
            params
        }
    }

    fn apply_error(
        &self,
        key: &ObjectKey,
        operation: &'static str,
        e: ::kube::Error,
    ) -> ApplyError {
        let mut err = api_error(key, operation, e);
        if let ApplyError::Api(rejection) = &mut err
            && rejection.code == 409
            && !self.options.force
        {
            rejection.hint = ": another field manager owns these fields; change them there, or apply with force to take them over".to_owned();
        }
        err
    }

    /// Resolves the object's kind, fills in the namespace and builds the matching `Api`.
    /// [`Applier::prepare`] and the live object, which both applying and planning compare
    /// against.
    async fn observe(&self, obj: DynamicObject) -> Result<Observed, ApplyError> {
        let (api, obj, key) = self.prepare(obj).await?;
        let name = key.name.clone();
        let live = api
            .get_opt(&name)
            .await
            .map_err(|e| api_error(&key, "get", e))?;
        Ok((api, obj, key, live))
    }

    async fn prepare(
        &self,
        mut obj: DynamicObject,
    ) -> Result<(Api<DynamicObject>, DynamicObject, ObjectKey), ApplyError> {
        let gvk = gvk_of(&obj)?;
        let served = self.served(&gvk, &obj).await?;
        let api = if served.namespaced {
            let ns = obj
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| self.client.default_namespace().to_owned());
            obj.metadata.namespace = Some(ns.clone());
            Api::namespaced_with(self.client.clone(), &ns, &served.resource)
        } else {
            obj.metadata.namespace = None;
            Api::all_with(self.client.clone(), &served.resource)
        };
        let key = object_key(&obj, None)?;
        Ok((api, obj, key))
    }

    /// Discovery for one kind: the cache, else a query of its group/version (so a CRD that
    /// became Established since the last lookup is found).
    async fn served(
        &self,
        gvk: &GroupVersionKind,
        obj: &DynamicObject,
    ) -> Result<Served, ApplyError> {
        if let Some(s) = self.served.lock().await.get(gvk) {
            return Ok(s.clone());
        }
        let key = object_key(obj, None)?;
        let unknown = || ApplyError::UnknownKind {
            object: key.clone(),
            api_version: format!("{}/{}", gvk.api_version(), gvk.kind),
        };
        let (resource, caps) = match discovery::pinned_kind(&self.client, gvk).await {
            Ok(found) => found,
            Err(::kube::Error::Discovery(_)) => return Err(unknown()),
            Err(::kube::Error::Api(status)) if status.code == 404 => return Err(unknown()),
            Err(e) => return Err(api_error(&key, "discovery", e)),
        };
        let served = Served {
            resource,
            namespaced: caps.scope == Scope::Namespaced,
        };
        self.served.lock().await.insert(gvk.clone(), served.clone());
        Ok(served)
    }
}

/// Whether a client error means "no API answered" (connection refused, TLS or DNS failure),
/// as opposed to an API that answered something wrong.
/// Attempts per object before a transient API error is given up on.
const REQUEST_ATTEMPTS: usize = 6;

/// Whether an error may pass by itself: throttling, a server error, a conflict, no answer.
/// An object ready to be applied or planned: its API, its normalised manifest, its key and
/// what the cluster holds now.
type Observed = (
    Api<DynamicObject>,
    DynamicObject,
    ObjectKey,
    Option<DynamicObject>,
);

/// The backoff of one request: 100 ms doubling up to 2 s, six attempts in all.
fn request_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(REQUEST_ATTEMPTS - 1)
}

/// Worth another attempt of the same request: the HTTP rule every client error follows, or no
/// proper answer at all.
fn is_transient(e: &ApplyError) -> bool {
    match e {
        ApplyError::Api(r) => crate::engine::is_transient_status(r.code),
        ApplyError::Transport { .. } => true,
        _ => false,
    }
}

fn is_unreachable(e: &::kube::Error) -> bool {
    matches!(e, ::kube::Error::HyperError(_) | ::kube::Error::Service(_))
}

/// The plan when no cluster can be reached at all (e.g. k3s is not installed yet, so there is no
/// kubeconfig): every object would be created.
///
/// # Errors
/// [`ApplyError::Incomplete`] for an object without type information.
pub fn plan_offline(
    objects: Vec<DynamicObject>,
    reason: &str,
) -> Result<Vec<PlanOutcome>, ApplyError> {
    sort_for_apply(objects)
        .iter()
        .map(|o| {
            Ok(PlanOutcome {
                object: object_key(o, None)?,
                action: PlanAction::WouldCreate {
                    reason: reason.to_owned(),
                },
            })
        })
        .collect()
}

/// Maps a kube-rs error onto [`ApplyError`], keeping the API's reason and message.
fn api_error(key: &ObjectKey, operation: &'static str, e: ::kube::Error) -> ApplyError {
    match e {
        ::kube::Error::Api(status) => ApplyError::Api(Box::new(ApiRejection {
            object: key.clone(),
            operation,
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
            hint: String::new(),
        })),
        other => ApplyError::Transport {
            object: key.clone(),
            operation,
            source: Box::new(other),
        },
    }
}

/// Parses a multi-document YAML stream into objects. Empty documents are skipped; `kind: List`
/// documents are flattened into their items.
///
/// # Errors
/// [`ApplyError::Parse`] or [`ApplyError::Incomplete`] naming the document.
pub fn parse_manifests(yaml: &str) -> Result<Vec<DynamicObject>, ApplyError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| ApplyError::Parse {
            index,
            message: location_only(&e),
        })?;
        match value {
            Value::Null => continue,
            Value::Object(_) => {}
            _ => {
                return Err(ApplyError::Parse {
                    index,
                    message: "the document is not a mapping".to_owned(),
                });
            }
        }
        let is_list = value
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List"))
            && value.get("items").is_some_and(Value::is_array);
        let items = if is_list {
            value["items"].as_array().cloned().unwrap_or_default()
        } else {
            vec![value]
        };
        for item in items {
            out.push(to_object(index, item)?);
        }
    }
    Ok(out)
}

/// A YAML error message without the offending text: manifests can hold secret values.
fn location_only(e: &serde_yaml_ng::Error) -> String {
    match e.location() {
        Some(l) => format!("syntax error at line {} column {}", l.line(), l.column()),
        None => "syntax error".to_owned(),
    }
}

fn to_object(index: usize, value: Value) -> Result<DynamicObject, ApplyError> {
    for (ptr, field) in [
        ("/apiVersion", "apiVersion"),
        ("/kind", "kind"),
        ("/metadata/name", "metadata.name"),
    ] {
        if value
            .pointer(ptr)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ApplyError::Incomplete { index, field });
        }
    }
    serde_json::from_value(value).map_err(|e| ApplyError::Parse {
        index,
        message: format!("not a kubernetes object ({})", e.classify_name()),
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Data => "a field has the wrong type",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Eof => "truncated",
            serde_json::error::Category::Io => "io",
        }
    }
}

fn gvk_of(obj: &DynamicObject) -> Result<GroupVersionKind, ApplyError> {
    let types = obj.types.as_ref().ok_or(ApplyError::Incomplete {
        index: 0,
        field: "apiVersion",
    })?;
    let (group, version) = match types.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", types.api_version.as_str()),
    };
    Ok(GroupVersionKind::gvk(group, version, &types.kind))
}

/// The [`ObjectKey`] of a parsed object (namespace as written, or `namespace` if given).
///
/// # Errors
/// [`ApplyError::Incomplete`] when type information is missing.
pub fn object_key(obj: &DynamicObject, namespace: Option<&str>) -> Result<ObjectKey, ApplyError> {
    let types = obj.types.as_ref().ok_or(ApplyError::Incomplete {
        index: 0,
        field: "apiVersion",
    })?;
    Ok(ObjectKey::new(
        types.api_version.clone(),
        types.kind.clone(),
        namespace.or(obj.metadata.namespace.as_deref()),
        obj.name_any(),
    ))
}

fn kind_of(obj: &DynamicObject) -> &str {
    obj.types.as_ref().map_or("", |t| t.kind.as_str())
}

fn is_namespace(obj: &DynamicObject) -> bool {
    kind_of(obj) == "Namespace"
}

fn is_crd(obj: &DynamicObject) -> bool {
    kind_of(obj) == "CustomResourceDefinition"
}

/// Orders objects for apply: Namespaces, then CRDs, then everything else; stable otherwise, so
/// the manifest author's order is kept within each group.
#[must_use]
pub fn sort_for_apply(mut objects: Vec<DynamicObject>) -> Vec<DynamicObject> {
    objects.sort_by_key(|o| match kind_of(o) {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        _ => 2,
    });
    objects
}

/// Removes what the server owns (managedFields, resourceVersion, uid, generation, timestamps,
/// status) so a live object and a dry-run result compare on intent only.
fn normalized(obj: &DynamicObject) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "managedFields",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "uid",
                "selfLink",
            ] {
                meta.remove(k);
            }
        }
    }
    v
}

/// JSON pointer paths that differ between the live object and the dry-run result, sorted.
fn changed_paths(live: &DynamicObject, dry: &DynamicObject) -> Vec<String> {
    let patch = json_patch::diff(&normalized(live), &normalized(dry));
    let mut paths: Vec<String> = patch
        .0
        .iter()
        .filter_map(|op| {
            serde_json::to_value(op)
                .ok()
                .and_then(|v| v.get("path").and_then(Value::as_str).map(str::to_owned))
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Creates a Secret only if no Secret of that name exists (seed 000: check before create,
/// reuse what exists, never delete-and-recreate, never overwrite).
///
/// Returns `true` when it created the Secret, `false` when one already existed (whatever its
/// content). The Secret must carry no GitOps tracking labels, so no controller adopts it.
///
/// # Errors
/// [`ApplyError::TrackingLabel`], or an API/transport error naming the Secret (never its data).
pub async fn create_secret_if_absent(client: &Client, secret: &Secret) -> Result<bool, ApplyError> {
    let ns = secret
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let name = secret.metadata.name.clone().ok_or(ApplyError::Incomplete {
        index: 0,
        field: "metadata.name",
    })?;
    let key = ObjectKey::new("v1", "Secret", Some(&ns), name.clone());
    let tracked = secret
        .metadata
        .labels
        .iter()
        .flatten()
        .chain(secret.metadata.annotations.iter().flatten())
        .map(|(k, _)| k)
        .find(|k| TRACKING_PREFIXES.iter().any(|p| k.starts_with(p)));
    if let Some(k) = tracked {
        return Err(ApplyError::TrackingLabel {
            object: key,
            key: k.clone(),
        });
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    if api
        .get_metadata_opt(&name)
        .await
        .map_err(|e| api_error(&key, "get", e))?
        .is_some()
    {
        return Ok(false);
    }
    let params = PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    };
    match api.create(&params, secret).await {
        Ok(_) => Ok(true),
        // Somebody created it between our check and our create: reuse theirs.
        Err(::kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => Ok(false),
        Err(e) => Err(api_error(&key, "create", e)),
    }
}

/// What [`create_secret_if_absent`] would do: [`PlanAction::Create`] or
/// [`PlanAction::Unchanged`]; [`PlanAction::WouldCreate`] when the API is not reachable.
///
/// # Errors
/// An API error other than "not found".
pub async fn plan_secret_if_absent(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<PlanAction, ApplyError> {
    let key = ObjectKey::new("v1", "Secret", Some(namespace), name);
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get_metadata_opt(name).await {
        Ok(Some(_)) => Ok(PlanAction::Unchanged),
        Ok(None) => Ok(PlanAction::Create),
        Err(e) if is_unreachable(&e) => Ok(PlanAction::WouldCreate {
            reason: "the API is not reachable".to_owned(),
        }),
        Err(e) => Err(api_error(&key, "get", e)),
    }
}

#[cfg(test)]
mod tests;
