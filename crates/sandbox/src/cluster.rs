//! The write path shared by the HTTP API and the controllers: create, update, patch,
//! apply and delete with server-set metadata, admission, status-subresource rules,
//! generation, managedFields and dry runs. Reads rewrite `apiVersion` for the served version.

use std::sync::Arc;

use rand::Rng;
use serde_json::{Map, Value, json};

use super::builtin;
use super::crd;
use super::patch::apply::{self, Writer};
use super::patch::fields::Scope;
use super::patch::{self, PatchType};
use super::portforward::Backends;
use super::resources::{Registry, ResourceType};
use super::status::ApiError;
use super::store::{Actor, Mutation, ObjectKey, Store, WriteMeta};
use super::validation;

/// Options of one write.
#[derive(Debug, Clone)]
pub struct WriteOpts {
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// `fieldManager` (defaulted from the User-Agent by the HTTP layer).
    pub field_manager: Option<String>,
    /// Who writes.
    pub actor: Actor,
    /// `force=true` (apply only).
    pub force: bool,
    /// `fieldValidation=Strict`: unknown fields in custom resources are errors.
    pub strict: bool,
}

impl WriteOpts {
    /// Options for a sandbox controller's write.
    pub fn controller(name: &str) -> Self {
        Self {
            dry_run: false,
            field_manager: Some(name.to_string()),
            actor: Actor::Controller(name.to_string()),
            force: true,
            strict: false,
        }
    }
}

/// The result of a write.
#[derive(Debug, Clone)]
pub struct WriteResult {
    /// The object after the write (as it would be, for dry runs).
    pub object: Value,
    /// Created by this write (201).
    pub created: bool,
    /// Removed by this write.
    pub deleted: bool,
}

/// The cluster state: store plus registry. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Objects.
    pub store: Arc<Store>,
    /// Served types.
    pub registry: Registry,
    /// What runs in pods: told when its pod is deleted.
    pub backends: Backends,
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj["metadata"][field].as_str()
}

/// Whether two objects differ outside `metadata` (and `status`, when `skip_status`).
fn spec_differs(a: &Value, b: &Value, skip_status: bool) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| {
                        let meta = matches!(k.as_str(), "metadata" | "apiVersion" | "kind");
                        let status = skip_status && k.as_str() == "status";
                        !meta && !status
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    strip(a) != strip(b)
}

/// `managedFields` without the `time` of each entry.
fn without_times(mf: &Value) -> Value {
    match mf {
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|e| {
                    let mut e = e.clone();
                    if let Some(m) = e.as_object_mut() {
                        m.remove("time");
                    }
                    e
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

impl Cluster {
    /// A cluster over a store, a registry and pod backends.
    pub fn new(store: Arc<Store>, registry: Registry, backends: Backends) -> Self {
        Self {
            store,
            registry,
            backends,
        }
    }

    /// Tells a pod's backend that the pod is going away. Runs under the store lock, in
    /// the same critical section as the delete, so a replacement pod (same name) cannot
    /// be created and probed before the backend has reacted.
    fn pod_removed(&self, rt: &ResourceType, ns: &str, name: &str, dry_run: bool) {
        if dry_run || !rt.group.is_empty() || rt.plural != "pods" {
            return;
        }
        if let Some(b) = self.backends.find(ns, name) {
            b.pod_deleted(ns, name);
        }
    }

    fn key(rt: &ResourceType, ns: &str, name: &str) -> ObjectKey {
        ObjectKey::new(rt.storage_key(), if rt.namespaced { ns } else { "" }, name)
    }

    /// Prepares a stored object for a response in `rt`'s version.
    pub fn present(&self, rt: &ResourceType, obj: &Value) -> Value {
        let mut v = obj.clone();
        v["apiVersion"] = json!(rt.api_version());
        v["kind"] = json!(rt.kind);
        if let Some(schema) = &rt.schema {
            crd::apply_defaults(schema, &mut v);
        }
        v
    }

    /// Reads one object.
    ///
    /// # Errors
    /// 404 when absent.
    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.store
            .get(&Self::key(rt, ns, name))
            .map(|o| self.present(rt, &o))
            .ok_or_else(|| ApiError::not_found(&rt.qualified(), name))
    }

    fn check_namespace(&self, rt: &ResourceType, ns: &str) -> Result<(), ApiError> {
        if !rt.namespaced {
            return Ok(());
        }
        if ns.is_empty() {
            return Err(ApiError::bad_request(
                "the namespace is required for this resource",
            ));
        }
        let key = ObjectKey::new("/namespaces", "", ns);
        match self.store.get(&key) {
            None => Err(ApiError::not_found("namespaces", ns)),
            Some(n) if n["metadata"]["deletionTimestamp"].is_string() => {
                let mut e = ApiError::bad_request(format!(
                    "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    rt.plural
                ));
                e.code = 403;
                e.reason = "Forbidden";
                Err(e)
            }
            Some(_) => Ok(()),
        }
    }

    fn normalise_identity(rt: &ResourceType, ns: &str, obj: &mut Value) -> Result<(), ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        if rt.namespaced {
            match meta_str(obj, "namespace") {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => obj["metadata"]["namespace"] = json!(ns),
            }
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        if let Some(av) = obj["apiVersion"].as_str()
            && av != rt.api_version()
            && !(crd::same_group(av, &rt.group))
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                rt.api_version()
            )));
        }
        if let Some(k) = obj["kind"].as_str()
            && k != rt.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        Ok(())
    }

    fn meta(&self, rt: &ResourceType, verb: &'static str, o: &WriteOpts) -> WriteMeta {
        WriteMeta {
            verb,
            resource: rt.qualified(),
            field_manager: o.field_manager.clone(),
            actor: o.actor.clone(),
            dry_run: o.dry_run,
        }
    }

    /// Ownership-tracking parameters for a write in `rt`'s version (`api_version`).
    fn writer<'a>(
        rt: &ResourceType,
        manager: &'a str,
        status: bool,
        now: &'a str,
        api_version: &'a str,
    ) -> Writer<'a> {
        let scope = if status {
            Scope::StatusOnly
        } else if rt.status_subresource {
            Scope::NoStatus
        } else {
            Scope::All
        };
        Writer {
            manager,
            api_version,
            scope,
            subresource: status.then_some("status"),
            now,
        }
    }

    /// Validates, defaults and post-processes an object about to be stored.
    fn finish(
        &self,
        rt: &ResourceType,
        old: Option<&Value>,
        mut obj: Value,
        status_write: bool,
        opts: &WriteOpts,
        tracked: bool,
    ) -> Result<Mutation, ApiError> {
        // Identity fields are the server's.
        if let Some(o) = old {
            for f in [
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match o["metadata"].get(f) {
                    Some(v) => obj["metadata"][f] = v.clone(),
                    None => {
                        if let Some(m) = obj["metadata"].as_object_mut() {
                            m.remove(f);
                        }
                    }
                }
            }
        }
        // Status subresource rules.
        if rt.status_subresource {
            if status_write {
                if let Some(o) = old {
                    let status = obj.get("status").cloned();
                    let mut keep = o.clone();
                    match status {
                        Some(s) => keep["status"] = s,
                        None => {
                            if let Some(m) = keep.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                    keep["metadata"]["managedFields"] = obj["metadata"]["managedFields"].clone();
                    if keep["metadata"]["managedFields"].is_null()
                        && let Some(m) = keep["metadata"].as_object_mut()
                    {
                        m.remove("managedFields");
                    }
                    obj = keep;
                }
            } else {
                match old.and_then(|o| o.get("status")) {
                    Some(s) => obj["status"] = s.clone(),
                    None if old.is_some() => {
                        if let Some(m) = obj.as_object_mut() {
                            m.remove("status");
                        }
                    }
                    None => {}
                }
            }
        }
        if opts.strict && rt.builtin {
            validation::strict(rt, &obj)?;
        }
        if let Some(schema) = &rt.schema {
            let unknown = crd::prune(schema, &mut obj);
            if opts.strict && !unknown.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
                    rt.kind,
                    rt.version,
                    rt.kind,
                    unknown
                        .iter()
                        .map(|u| format!("unknown field {u:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            crd::apply_defaults(schema, &mut obj);
        }
        builtin::admit(rt, old, &mut obj)?;
        if !rt.builtin {
            crd::validate_custom(rt, &obj)?;
        }
        if rt.plural == "customresourcedefinitions" && rt.group == "apiextensions.k8s.io" {
            crd::admit_crd(old, &mut obj)?;
        }
        // Generation: 1 on create; +1 when anything but metadata/status changes.
        let generational = rt.status_subresource || !rt.builtin;
        if generational {
            let gen_now = match old {
                None => 1,
                Some(o) => {
                    let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
                    if spec_differs(o, &obj, rt.status_subresource) {
                        g + 1
                    } else {
                        g
                    }
                }
            };
            obj["metadata"]["generation"] = json!(gen_now);
        }
        if !tracked {
            let manager = opts
                .field_manager
                .clone()
                .unwrap_or_else(|| "unknown".into());
            let now = now();
            let av = rt.api_version();
            let w = Self::writer(rt, &manager, status_write, &now, &av);
            apply::track_update(old, &mut obj, &w);
        }
        // A finalizing object whose last finalizer is gone is removed.
        if obj["metadata"]["deletionTimestamp"].is_string()
            && obj["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty)
        {
            let ns = meta_str(&obj, "namespace").unwrap_or("");
            self.pod_removed(rt, ns, meta_str(&obj, "name").unwrap_or(""), opts.dry_run);
            return Ok(Mutation::Delete);
        }
        if let Some(o) = old {
            let mut a = o.clone();
            let mut b = obj.clone();
            for v in [&mut a, &mut b] {
                if let Some(m) = v["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                    m.remove("managedFields");
                }
            }
            // A write that changes neither content nor ownership (timestamps aside) is a
            // no-op: no new resourceVersion, no event, like the apiserver.
            if a == b
                && without_times(&o["metadata"]["managedFields"])
                    == without_times(&obj["metadata"]["managedFields"])
            {
                return Ok(Mutation::Unchanged(o.clone()));
            }
        }
        Ok(Mutation::Put(obj))
    }

    fn after_commit(&self, rt: &ResourceType, obj: &Value, deleted: bool, dry_run: bool) {
        if dry_run {
            return;
        }
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            if deleted {
                // The apiextensions controller deletes every instance with the CRD.
                for served in crd::types_for(obj).into_iter().take(1) {
                    for o in self.store.list(&served.storage_key(), None).0 {
                        let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
                        let name = o["metadata"]["name"].as_str().unwrap_or("");
                        self.remove(&served, ns, name, "apiextensions-controller");
                    }
                }
            }
            crd::sync_registry(&self.registry, obj, deleted);
        }
    }

    /// POST: creates an object (201).
    ///
    /// # Errors
    /// 409 AlreadyExists, 404 for a missing namespace, 400/422 for invalid objects.
    pub fn create(
        &self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
        opts: &WriteOpts,
    ) -> Result<WriteResult, ApiError> {
        Self::normalise_identity(rt, ns, &mut obj)?;
        self.check_namespace(rt, ns)?;
        if meta_str(&obj, "name").is_none_or(str::is_empty) {
            match meta_str(&obj, "generateName") {
                Some(g) if !g.is_empty() => {
                    obj["metadata"]["name"] = json!(format!("{g}{}", random_suffix(5)));
                }
                _ => {
                    return Err(ApiError::invalid(
                        &rt.kind,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ));
                }
            }
        }
        let name = meta_str(&obj, "name").unwrap_or("").to_string();
        builtin::validate_name(rt, &name)?;
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            m.remove("managedFields");
            m.remove("deletionTimestamp");
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now()));
        }
        let key = Self::key(rt, ns, &name);
        let qualified = rt.qualified();
        // Admission webhooks are called before the store is touched (they read it).
        super::webhooks::admit(&self.store, rt, "CREATE")?;
        let res = self
            .store
            .mutate(&key, self.meta(rt, "create", opts), |cur| {
                if cur.is_some() {
                    return Err(ApiError::already_exists(&qualified, &name));
                }
                if rt.status_subresource {
                    // Status is a subresource: a create cannot set it.
                    if let Some(m) = obj.as_object_mut() {
                        m.remove("status");
                    }
                }
                self.finish(rt, None, obj, false, opts, false)
            })?;
        self.after_commit(rt, &res.object, false, opts.dry_run);
        Ok(WriteResult {
            object: self.present(rt, &res.object),
            created: true,
            deleted: false,
        })
    }

    /// PUT on the object or its status.
    ///
    /// # Errors
    /// 404, 409 Conflict on a stale resourceVersion, 400 on a name mismatch.
    pub fn update(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut obj: Value,
        status: bool,
        opts: &WriteOpts,
    ) -> Result<WriteResult, ApiError> {
        Self::normalise_identity(rt, ns, &mut obj)?;
        match meta_str(&obj, "name") {
            Some(n) if n == name => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the name of the object does not match the name on the URL",
                ));
            }
            None => obj["metadata"]["name"] = json!(name),
        }
        let want_rv = meta_str(&obj, "resourceVersion")
            .filter(|rv| !rv.is_empty())
            .map(str::to_string);
        if want_rv.is_none() && !rt.builtin {
            return Err(ApiError::invalid(
                &rt.kind,
                name,
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            ));
        }
        let key = Self::key(rt, ns, name);
        let qualified = rt.qualified();
        let verb = if status { "update-status" } else { "update" };
        if !status {
            super::webhooks::admit(&self.store, rt, "UPDATE")?;
        }
        let res = self.store.mutate(&key, self.meta(rt, verb, opts), |cur| {
            let Some(cur) = cur else {
                return Err(ApiError::not_found(&qualified, name));
            };
            if let Some(rv) = &want_rv
                && Some(rv.as_str()) != meta_str(cur, "resourceVersion")
            {
                return Err(ApiError::conflict(&qualified, name));
            }
            // Without managedFields in the body the record is kept; with them, the client
            // rewrites it (kubectl does when migrating client-side to server-side apply).
            if obj["metadata"]["managedFields"].is_null() {
                obj["metadata"]["managedFields"] = cur["metadata"]["managedFields"].clone();
            }
            self.finish(rt, Some(cur), obj, status, opts, false)
        })?;
        self.after_commit(rt, &res.object, res.deleted, opts.dry_run);
        Ok(WriteResult {
            object: self.present(rt, &res.object),
            created: false,
            deleted: res.deleted,
        })
    }

    /// PATCH (any type) on the object or its status; apply may create.
    ///
    /// # Errors
    /// 404 for non-apply patches of missing objects, 415 for strategic patches of custom
    /// resources, 422 for apply without a field manager, 409 on apply conflicts.
    #[expect(
        clippy::too_many_arguments,
        reason = "mirrors the PATCH request: target, type, body, subresource, options"
    )]
    pub fn patch(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        kind: PatchType,
        body: &[u8],
        status: bool,
        opts: &WriteOpts,
    ) -> Result<WriteResult, ApiError> {
        if kind == PatchType::Strategic && !rt.builtin {
            return Err(ApiError::unsupported_media_type(
                "application/strategic-merge-patch+json",
            ));
        }
        if opts.force && kind != PatchType::Apply {
            return Err(ApiError::invalid(
                "PatchOptions",
                "",
                "force",
                "Unsupported value: true: may not be specified for non-apply patch",
            ));
        }
        let applied = if kind == PatchType::Apply {
            let manager = opts.field_manager.as_deref().unwrap_or("");
            if manager.is_empty() {
                let mut e = ApiError::invalid(
                    "PatchOptions.meta.k8s.io",
                    "",
                    "fieldManager",
                    "Required value: is required for apply patch",
                );
                e.message = "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into();
                return Err(e);
            }
            let mut v: Value = serde_yaml_ng::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            if !v.is_object() {
                return Err(ApiError::bad_request("apply patch must be an object"));
            }
            if v["metadata"]["managedFields"].is_array() {
                return Err(ApiError::bad_request("metadata.managedFields must be nil"));
            }
            match (v["apiVersion"].as_str(), v["kind"].as_str()) {
                (Some(_), Some(_)) => {}
                _ => {
                    return Err(ApiError::bad_request(
                        "apply patch must contain apiVersion and kind",
                    ));
                }
            }
            match meta_str(&v, "name") {
                Some(n) if n == name => {}
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "the name of the object does not match the name on the URL",
                    ));
                }
                None => v["metadata"]["name"] = json!(name),
            }
            Self::normalise_identity(rt, ns, &mut v)?;
            Some(v)
        } else {
            None
        };
        let key = Self::key(rt, ns, name);
        let qualified = rt.qualified();
        let verb = match (kind == PatchType::Apply, status) {
            (true, false) => "apply",
            (true, true) => "apply-status",
            (false, false) => "patch",
            (false, true) => "patch-status",
        };
        if applied.is_some() {
            let exists = self.store.get(&key).is_some();
            if !exists && !status {
                self.check_namespace(rt, ns)?;
            }
        }
        if !status {
            let exists = self.store.get(&key).is_some();
            super::webhooks::admit(&self.store, rt, if exists { "UPDATE" } else { "CREATE" })?;
        }
        let now = now();
        let res = self.store.mutate(&key, self.meta(rt, verb, opts), |cur| {
            match (&applied, cur) {
                (None, None) => Err(ApiError::not_found(&qualified, name)),
                (Some(_), None) if status => Err(ApiError::not_found(&qualified, name)),
                (None, Some(cur)) => {
                    let mut target = cur.clone();
                    patch::apply_patch(&mut target, kind, body)?;
                    if let Some(rv) = meta_str(&target, "resourceVersion")
                        && Some(rv) != meta_str(cur, "resourceVersion") {
                            return Err(ApiError::conflict(&qualified, name));
                        }
                    Self::normalise_identity(rt, ns, &mut target)?;
                    target["metadata"]["name"] = json!(name);
                    // A patch that edits managedFields rewrites the record (see update).
                    self.finish(rt, Some(cur), target, status, opts, false)
                }
                (Some(applied), cur) => {
                    let manager = opts.field_manager.as_deref().unwrap_or("");
                    let av = rt.api_version();
                    let w = Self::writer(rt, manager, status, &now, &av);
                    let base = match cur {
                        Some(c) => c.clone(),
                        None => {
                            let mut b = json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"name": name}});
                            if rt.namespaced {
                                b["metadata"]["namespace"] = json!(ns);
                            }
                            b["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
                            b["metadata"]["creationTimestamp"] = json!(now);
                            b
                        }
                    };
                    if cur.is_none() {
                        builtin::validate_name(rt, name)?;
                    }
                    if let (Some(want), Some(c)) = (meta_str(applied, "resourceVersion"), cur)
                        && Some(want) != meta_str(c, "resourceVersion") {
                            return Err(ApiError::conflict(&qualified, name));
                        }
                    let merged = apply::server_side_apply(&base, applied, &w, opts.force)?;
                    self.finish(rt, cur, merged, status, opts, true)
                }
            }
        })?;
        self.after_commit(rt, &res.object, res.deleted, opts.dry_run);
        Ok(WriteResult {
            object: self.present(rt, &res.object),
            created: res.created,
            deleted: res.deleted,
        })
    }

    /// DELETE: removes the object, or marks it for deletion while finalizers remain.
    ///
    /// # Errors
    /// 404 when absent; 409 when a precondition (uid, resourceVersion) fails.
    pub fn delete(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        preconditions: &Value,
        opts: &WriteOpts,
    ) -> Result<WriteResult, ApiError> {
        let key = Self::key(rt, ns, name);
        let qualified = rt.qualified();
        let is_namespace = rt.builtin && rt.plural == "namespaces";
        let res = self
            .store
            .mutate(&key, self.meta(rt, "delete", opts), |cur| {
                let Some(cur) = cur else {
                    return Err(ApiError::not_found(&qualified, name));
                };
                if let Some(uid) = preconditions["uid"].as_str()
                    && Some(uid) != meta_str(cur, "uid")
                {
                    return Err(ApiError::conflict(&qualified, name));
                }
                if let Some(rv) = preconditions["resourceVersion"].as_str()
                    && Some(rv) != meta_str(cur, "resourceVersion")
                {
                    return Err(ApiError::conflict(&qualified, name));
                }
                let has_finalizers = cur["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty())
                    || (is_namespace);
                if !has_finalizers {
                    self.pod_removed(rt, ns, name, opts.dry_run);
                    return Ok(Mutation::Delete);
                }
                if cur["metadata"]["deletionTimestamp"].is_string() {
                    return Ok(Mutation::Unchanged(cur.clone()));
                }
                let mut obj = cur.clone();
                obj["metadata"]["deletionTimestamp"] = json!(now());
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                if is_namespace {
                    obj["status"]["phase"] = json!("Terminating");
                }
                Ok(Mutation::Put(obj))
            })?;
        self.after_commit(rt, &res.object, res.deleted, opts.dry_run);
        Ok(WriteResult {
            object: self.present(rt, &res.object),
            created: false,
            deleted: res.deleted,
        })
    }

    /// Removes an object for good, ignoring finalizers (namespace and garbage collection).
    pub fn remove(&self, rt: &ResourceType, ns: &str, name: &str, actor: &str) {
        let key = Self::key(rt, ns, name);
        let meta = self.meta(rt, "delete", &WriteOpts::controller(actor));
        if let Ok(r) = self.store.mutate(&key, meta, |cur| {
            if cur.is_some() {
                self.pod_removed(rt, ns, name, false);
                Ok(Mutation::Delete)
            } else {
                Err(ApiError::not_found("", name))
            }
        }) {
            self.after_commit(rt, &r.object, true, false);
        }
    }

    /// Server-side applies every document of a (multi-document) YAML manifest as
    /// `manager`, with force and a controller actor: how simulated installers (Helm
    /// charts, Flux, a preinstalled Vault) create what they create. Namespaced objects
    /// without a namespace land in `default_namespace`.
    ///
    /// # Errors
    /// 400 for unparseable YAML, 404 for an unknown kind, or the first failing apply.
    pub fn apply_manifest(
        &self,
        yaml: &str,
        manager: &str,
        default_namespace: &str,
    ) -> Result<Vec<Value>, ApiError> {
        use serde::Deserialize;
        let mut out = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
            let v = Value::deserialize(doc)
                .map_err(|e| ApiError::bad_request(format!("invalid manifest YAML: {e}")))?;
            if v.is_null() {
                continue;
            }
            let (Some(av), Some(kind)) = (v["apiVersion"].as_str(), v["kind"].as_str()) else {
                return Err(ApiError::bad_request(
                    "every manifest document needs apiVersion and kind",
                ));
            };
            let rt = self.registry.by_kind(av, kind).ok_or_else(|| {
                let mut e = ApiError::no_route();
                e.message = format!(
                    "no kind {kind:?} is registered for version {av:?}; install its CRD first"
                );
                e
            })?;
            let name = meta_str(&v, "name")
                .ok_or_else(|| {
                    ApiError::bad_request(format!("a {kind} in the manifest has no metadata.name"))
                })?
                .to_string();
            let ns = meta_str(&v, "namespace")
                .unwrap_or(default_namespace)
                .to_string();
            let body = serde_json::to_vec(&v).map_err(|e| ApiError::internal(e.to_string()))?;
            let mut opts = WriteOpts::controller(manager);
            opts.force = true;
            let r = self.patch(&rt, &ns, &name, PatchType::Apply, &body, false, &opts)?;
            out.push(r.object);
        }
        Ok(out)
    }

    /// Convenience for controllers: read-modify-write of an object's status (or whole
    /// object) by a closure; a no-op closure result writes nothing.
    ///
    /// # Errors
    /// 404 when absent.
    pub fn modify(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        status: bool,
        actor: &str,
        f: impl FnOnce(&mut Value),
    ) -> Result<WriteResult, ApiError> {
        let key = Self::key(rt, ns, name);
        let opts = WriteOpts::controller(actor);
        let qualified = rt.qualified();
        let res = self.store.mutate(
            &key,
            self.meta(rt, if status { "update-status" } else { "update" }, &opts),
            |cur| {
                let Some(cur) = cur else {
                    return Err(ApiError::not_found(&qualified, name));
                };
                let mut obj = cur.clone();
                f(&mut obj);
                if obj == *cur {
                    return Ok(Mutation::Unchanged(obj));
                }
                self.finish(rt, Some(cur), obj, status, &opts, false)
            },
        )?;
        self.after_commit(rt, &res.object, res.deleted, false);
        Ok(WriteResult {
            object: self.present(rt, &res.object),
            created: false,
            deleted: res.deleted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Actor;

    fn cluster() -> Cluster {
        let c = Cluster::new(
            Arc::new(Store::new(None, 1000)),
            Registry::new(),
            Backends::default(),
        );
        let ns = c.registry.lookup("", "v1", "namespaces").expect("ns");
        c.create(&ns, "", json!({"metadata":{"name":"default"}}), &opts())
            .expect("ns");
        c
    }

    fn opts() -> WriteOpts {
        WriteOpts {
            dry_run: false,
            field_manager: Some("test".into()),
            actor: Actor::Client,
            force: false,
            strict: false,
        }
    }

    /// Regression (issue 9): ESO's webhook did not gate CR writes; a real API server refuses
    /// writes a `failurePolicy: Fail` webhook cannot answer, until its Service has a ready
    /// endpoint and the cert-controller injected its CA.
    #[test]
    fn webhook_gates_writes_until_it_serves_with_an_injected_ca() {
        let c = cluster();
        let lookup = |g: &str, p: &str| {
            c.registry
                .lookup(g, "v1", p)
                .unwrap_or_else(|| panic!("{p}"))
        };
        let (cm, vwc, svc, ep) = (
            lookup("", "configmaps"),
            lookup(
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
            ),
            lookup("", "services"),
            lookup("", "endpoints"),
        );
        let mut config = json!({"metadata": {"name": "v"}, "webhooks": [{
            "name": "validate.cm.example.io", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}],
            "clientConfig": {"service": {"namespace": "default", "name": "hook", "path": "/validate"}}}]});
        c.create(&vwc, "", config.clone(), &opts()).expect("vwc");
        let write = |n: &str| {
            c.create(&cm, "default", json!({"metadata": {"name": n}}), &opts())
                .map(|_| ())
                .map_err(|e| (e.code, e.message))
        };
        let refused = write("a").expect_err("no service");
        assert_eq!(refused.0, 500);
        assert!(
            refused.1.starts_with("Internal error occurred: failed calling webhook \"validate.cm.example.io\": failed to call webhook: Post \"https://hook.default.svc:443/validate?timeout=10s\": service \"hook\" not found"),
            "{}",
            refused.1
        );
        c.create(
            &svc,
            "default",
            json!({"metadata": {"name": "hook"}, "spec": {"ports": [{"port": 443}]}}),
            &opts(),
        )
        .expect("svc");
        assert!(
            write("b")
                .expect_err("no endpoints")
                .1
                .contains("no endpoints available for service \"hook\"")
        );
        c.create(&ep, "default", json!({"metadata": {"name": "hook"}, "subsets": [{"addresses": [{"ip": "10.42.0.9"}], "ports": [{"port": 10250}]}]}), &opts())
            .expect("ep");
        assert!(
            write("c")
                .expect_err("no CA")
                .1
                .contains("x509: certificate signed by unknown authority")
        );
        config["webhooks"][0]["clientConfig"]["caBundle"] = json!("Y2E=");
        let live = c.get(&vwc, "", "v").expect("get");
        config["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
        c.update(&vwc, "", "v", config.clone(), false, &opts())
            .expect("inject");
        write("d").expect("served");
        // failurePolicy Ignore never blocks.
        config["webhooks"][0]["clientConfig"]["caBundle"] = json!("");
        config["webhooks"][0]["failurePolicy"] = json!("Ignore");
        let live = c.get(&vwc, "", "v").expect("get");
        config["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
        c.update(&vwc, "", "v", config, false, &opts())
            .expect("ignore");
        write("e").expect("ignored");
    }

    #[test]
    fn create_sets_server_metadata_and_rejects_duplicates() {
        let c = cluster();
        let rt = c.registry.lookup("", "v1", "configmaps").expect("cm");
        let r = c
            .create(
                &rt,
                "default",
                json!({"metadata":{"name":"a"},"data":{"k":"v"}}),
                &opts(),
            )
            .expect("create");
        assert!(r.created);
        let m = &r.object["metadata"];
        assert!(m["uid"].is_string() && m["resourceVersion"].is_string());
        assert!(m["creationTimestamp"].as_str().expect("ts").ends_with('Z'));
        let e = c
            .create(&rt, "default", json!({"metadata":{"name":"a"}}), &opts())
            .expect_err("dup");
        assert_eq!(e.reason, "AlreadyExists");
    }

    #[test]
    fn stale_update_conflicts_and_status_is_separate() {
        let c = cluster();
        let rt = c
            .registry
            .lookup("apps", "v1", "deployments")
            .expect("deploy");
        let r = c
            .create(&rt, "default", json!({"metadata":{"name":"d"},"spec":{"replicas":1,"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}}}},"status":{"replicas":9}}), &opts())
            .expect("create");
        assert_eq!(r.object["metadata"]["generation"], 1);
        let mut stale = r.object.clone();
        stale["metadata"]["resourceVersion"] = json!("1");
        assert_eq!(
            c.update(&rt, "default", "d", stale, false, &opts())
                .expect_err("stale")
                .reason,
            "Conflict"
        );
        let st = c
            .patch(
                &rt,
                "default",
                "d",
                PatchType::Merge,
                br#"{"status":{"replicas":1},"spec":{"replicas":5}}"#,
                true,
                &opts(),
            )
            .expect("status");
        assert_eq!(st.object["status"]["replicas"], 1);
        assert_eq!(
            st.object["spec"]["replicas"], 1,
            "status writes ignore spec"
        );
        assert_eq!(st.object["metadata"]["generation"], 1);
        let sp = c
            .patch(
                &rt,
                "default",
                "d",
                PatchType::Merge,
                br#"{"status":{"replicas":7},"spec":{"replicas":3}}"#,
                false,
                &opts(),
            )
            .expect("spec");
        assert_eq!(
            sp.object["status"]["replicas"], 1,
            "spec writes ignore status"
        );
        assert_eq!(sp.object["metadata"]["generation"], 2);
    }

    #[test]
    fn finalizers_delay_deletion() {
        let c = cluster();
        let rt = c.registry.lookup("", "v1", "configmaps").expect("cm");
        c.create(
            &rt,
            "default",
            json!({"metadata":{"name":"f","finalizers":["x/y"]}}),
            &opts(),
        )
        .expect("create");
        let d = c
            .delete(&rt, "default", "f", &Value::Null, &opts())
            .expect("delete");
        assert!(!d.deleted);
        assert!(d.object["metadata"]["deletionTimestamp"].is_string());
        let gone = c
            .patch(
                &rt,
                "default",
                "f",
                PatchType::Merge,
                br#"{"metadata":{"finalizers":null}}"#,
                false,
                &opts(),
            )
            .expect("patch");
        assert!(gone.deleted);
        assert!(c.get(&rt, "default", "f").is_err());
    }

    #[test]
    fn create_in_missing_namespace_is_not_found() {
        let c = cluster();
        let rt = c.registry.lookup("", "v1", "configmaps").expect("cm");
        let e = c
            .create(&rt, "nope", json!({"metadata":{"name":"a"}}), &opts())
            .expect_err("ns");
        assert_eq!(e.message, "namespaces \"nope\" not found");
    }

    #[test]
    fn identical_apply_is_a_no_op_and_stale_apply_conflicts() {
        let c = cluster();
        let rt = c.registry.lookup("", "v1", "configmaps").expect("cm");
        let mut o = opts();
        o.field_manager = Some("orch".into());
        let body =
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}}"#;
        let first = c
            .patch(&rt, "default", "a", PatchType::Apply, body, false, &o)
            .expect("apply");
        assert!(first.created);
        let writes_before = c.store.writes().iter().filter(|w| w.changed).count();
        let second = c
            .patch(&rt, "default", "a", PatchType::Apply, body, false, &o)
            .expect("again");
        assert_eq!(
            first.object["metadata"]["resourceVersion"],
            second.object["metadata"]["resourceVersion"],
            "a no-op apply keeps the resourceVersion"
        );
        assert_eq!(
            c.store.writes().iter().filter(|w| w.changed).count(),
            writes_before
        );
        let stale = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","resourceVersion":"1"},"data":{"k":"w"}}"#;
        let e = c
            .patch(&rt, "default", "a", PatchType::Apply, stale, false, &o)
            .expect_err("stale");
        assert_eq!(e.reason, "Conflict");
        let odd = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","uid":"fake","creationTimestamp":null},"data":{"k":"v"}}"#;
        let kept = c
            .patch(&rt, "default", "a", PatchType::Apply, odd, false, &o)
            .expect("identity ignored");
        assert_eq!(
            kept.object["metadata"]["uid"],
            first.object["metadata"]["uid"]
        );
        assert!(kept.object["metadata"]["creationTimestamp"].is_string());
    }

    #[test]
    fn manifests_apply_document_by_document() {
        let c = cluster();
        let yaml = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: vault\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: vault\n  namespace: vault\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\ndata:\n  a: b\n";
        let objs = c
            .apply_manifest(yaml, "preinstall", "default")
            .expect("apply");
        assert_eq!(objs.len(), 3);
        let cm = c.registry.lookup("", "v1", "configmaps").expect("cm");
        assert_eq!(
            c.get(&cm, "default", "plain").expect("cm")["data"]["a"],
            "b"
        );
        let writes = c.store.writes();
        let installer: Vec<_> = writes
            .iter()
            .filter(|w| w.field_manager.as_deref() == Some("preinstall"))
            .collect();
        assert_eq!(installer.len(), 3);
        assert!(
            installer.iter().all(|w| w.actor != Actor::Client),
            "installer writes are not client writes"
        );
        let e = c
            .apply_manifest(
                "apiVersion: x/v1\nkind: Nope\nmetadata:\n  name: n\n",
                "p",
                "default",
            )
            .expect_err("unknown kind");
        assert_eq!(e.code, 404);
    }
}
