//! The generic object store: every resource kind, one global resourceVersion counter,
//! a bounded event history for resuming watches, a write log, and persistence.
//!
//! All mutation goes through [`Store::mutate`], which runs a pure closure under the lock
//! (never across an await), so check-and-set is atomic and watches, the write log and the
//! snapshot cannot drift apart.

mod persist;
pub mod selector;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, broadcast};

use super::status::ApiError;
pub use persist::PersistError;

/// Identifies one object: storage key (`group/plural`), namespace (`""` if cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Storage key, `group/plural` (core group: `/secrets`).
    pub resource: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key.
    pub fn new(
        resource: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    /// Created.
    #[serde(rename = "ADDED")]
    Added,
    /// Changed.
    #[serde(rename = "MODIFIED")]
    Modified,
    /// Removed.
    #[serde(rename = "DELETED")]
    Deleted,
}

/// One change, as watches and controllers see it.
#[derive(Debug, Clone)]
pub struct StoreEvent {
    /// The resourceVersion this change produced.
    pub rv: u64,
    /// Which object.
    pub key: ObjectKey,
    /// Kind of change.
    pub kind: EventType,
    /// The object after the change (before it, for deletes, with the delete's RV).
    pub object: Arc<Value>,
    /// The object before a modification (watches with selectors need it to turn
    /// "stopped matching" into DELETED).
    pub old: Option<Arc<Value>>,
}

/// Who made a write: API clients are counted apart from the sandbox's own controllers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "type", content = "name")]
pub enum Actor {
    /// A request through the HTTP API.
    Client,
    /// A sandbox controller (named).
    Controller(String),
}

/// One accepted (non-dry-run) write.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteRecord {
    /// Sequence number, from 1.
    pub seq: u64,
    /// `create`, `update`, `patch`, `apply`, `delete`, ...
    pub verb: String,
    /// `secrets`, `deployments.apps`.
    pub resource: String,
    /// Namespace (empty if cluster-scoped).
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// `fieldManager` of the write, if any.
    pub field_manager: Option<String>,
    /// Client or controller.
    pub actor: Actor,
    /// Whether the object actually changed (a no-op update does not bump resourceVersion).
    pub changed: bool,
}

/// What a mutation closure decided.
#[derive(Debug)]
pub enum Mutation {
    /// Store this object (create or replace). The store sets `metadata.resourceVersion`.
    Put(Value),
    /// Remove the object.
    Delete,
    /// Change nothing; answer with this object.
    Unchanged(Value),
}

/// The result of [`Store::mutate`].
#[derive(Debug, Clone)]
pub struct Mutated {
    /// The object as stored (or as it would be, for dry runs); for deletes, the last state.
    pub object: Value,
    /// Whether the object was newly created.
    pub created: bool,
    /// Whether the object was removed.
    pub deleted: bool,
}

/// Metadata for the write log, given by the caller of [`Store::mutate`].
#[derive(Debug, Clone)]
pub struct WriteMeta {
    /// Verb for the log.
    pub verb: &'static str,
    /// Qualified resource name for the log (`deployments.apps`).
    pub resource: String,
    /// `fieldManager`, if any.
    pub field_manager: Option<String>,
    /// Who writes.
    pub actor: Actor,
    /// Whether this is a dry run (nothing stored, nothing logged).
    pub dry_run: bool,
}

/// A watch's start: backlog from history, receiver for later events, current resourceVersion.
pub type WatchStart = (
    Vec<Arc<StoreEvent>>,
    broadcast::Receiver<Arc<StoreEvent>>,
    u64,
);

const EVENT_CHANNEL: usize = 8192;

#[derive(Debug)]
struct Inner {
    rv: u64,
    objects: HashMap<String, BTreeMap<(String, String), Arc<Value>>>,
    history: VecDeque<Arc<StoreEvent>>,
    history_limit: usize,
    /// Watches from a resourceVersion below this get 410 Expired.
    oldest_rv: u64,
    writes: VecDeque<WriteRecord>,
    write_seq: u64,
    /// When each object (by uid) was created, in milliseconds since the epoch:
    /// `creationTimestamp` has second precision, readiness delays need the instant.
    created_ms: HashMap<String, i64>,
}

/// The shared store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<StoreEvent>>,
    dirty: Notify,
    path: Option<PathBuf>,
    /// Serialises snapshot writers (the debounced loop and the final flush share a temp file).
    flushing: Mutex<()>,
}

impl Store {
    /// An empty store; `path` is the snapshot file (None: in memory only).
    pub fn new(path: Option<PathBuf>, history_limit: usize) -> Self {
        let (events, _) = broadcast::channel(EVENT_CHANNEL);
        Self {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: HashMap::new(),
                history: VecDeque::new(),
                history_limit: history_limit.max(1),
                oldest_rv: 1,
                writes: VecDeque::new(),
                write_seq: 0,
                created_ms: HashMap::new(),
            }),
            events,
            dirty: Notify::new(),
            path,
            flushing: Mutex::new(()),
        }
    }

    /// Opens the store at `path`, loading the snapshot if one exists.
    ///
    /// # Errors
    /// The snapshot exists but cannot be read or parsed.
    pub fn open(path: PathBuf, history_limit: usize) -> Result<Self, PersistError> {
        let store = Self::new(Some(path.clone()), history_limit);
        if let Some(snap) = persist::load(&path)? {
            let mut g = store.lock();
            g.rv = snap.rv;
            g.oldest_rv = snap.rv;
            for entry in snap.objects {
                let ns = entry.object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let name = entry.object["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                g.objects
                    .entry(entry.resource)
                    .or_default()
                    .insert((ns, name), Arc::new(entry.object));
            }
        }
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current (latest) resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// One object.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Value>> {
        self.lock()
            .objects
            .get(&key.resource)
            .and_then(|m| m.get(&(key.namespace.clone(), key.name.clone())))
            .cloned()
    }

    /// All objects of a resource (optionally in one namespace), sorted by namespace/name,
    /// with the resourceVersion the list is consistent with.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let g = self.lock();
        let items = match g.objects.get(resource) {
            None => Vec::new(),
            Some(m) => match namespace {
                None => m.values().cloned().collect(),
                Some(ns) => m
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect(),
            },
        };
        (items, g.rv)
    }

    /// Number of stored objects (all kinds).
    pub fn len(&self) -> usize {
        self.lock().objects.values().map(BTreeMap::len).sum()
    }

    /// Whether the store holds no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Atomically reads one object, lets `f` decide, and commits the decision.
    ///
    /// `f` runs under the store lock: it must be pure computation.
    ///
    /// # Errors
    /// Whatever `f` returns.
    pub fn mutate(
        &self,
        key: &ObjectKey,
        meta: WriteMeta,
        f: impl FnOnce(Option<&Value>) -> Result<Mutation, ApiError>,
    ) -> Result<Mutated, ApiError> {
        let mut g = self.lock();
        let current = g
            .objects
            .get(&key.resource)
            .and_then(|m| m.get(&(key.namespace.clone(), key.name.clone())))
            .cloned();
        let decision = f(current.as_deref())?;
        let existed = current.is_some();
        let (result, event) = match decision {
            Mutation::Unchanged(obj) => {
                if !meta.dry_run {
                    record(&mut g, key, &meta, false);
                }
                return Ok(Mutated {
                    object: obj,
                    created: false,
                    deleted: false,
                });
            }
            Mutation::Put(mut obj) => {
                if meta.dry_run {
                    return Ok(Mutated {
                        object: obj,
                        created: !existed,
                        deleted: false,
                    });
                }
                g.rv += 1;
                let rv = g.rv;
                obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
                if !existed && let Some(uid) = obj["metadata"]["uid"].as_str() {
                    let now = jiff::Timestamp::now().as_millisecond();
                    g.created_ms.insert(uid.to_string(), now);
                }
                let arc = Arc::new(obj);
                g.objects
                    .entry(key.resource.clone())
                    .or_default()
                    .insert((key.namespace.clone(), key.name.clone()), arc.clone());
                let kind = if existed {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                (
                    Mutated {
                        object: (*arc).clone(),
                        created: !existed,
                        deleted: false,
                    },
                    StoreEvent {
                        rv,
                        key: key.clone(),
                        kind,
                        object: arc,
                        old: current.clone(),
                    },
                )
            }
            Mutation::Delete => {
                let Some(cur) = current else {
                    return Err(ApiError::not_found(&meta.resource, &key.name));
                };
                if meta.dry_run {
                    return Ok(Mutated {
                        object: (*cur).clone(),
                        created: false,
                        deleted: true,
                    });
                }
                g.rv += 1;
                let rv = g.rv;
                if let Some(m) = g.objects.get_mut(&key.resource) {
                    m.remove(&(key.namespace.clone(), key.name.clone()));
                }
                if let Some(uid) = cur["metadata"]["uid"].as_str() {
                    g.created_ms.remove(uid);
                }
                let mut last = (*cur).clone();
                last["metadata"]["resourceVersion"] = Value::String(rv.to_string());
                let arc = Arc::new(last);
                (
                    Mutated {
                        object: (*arc).clone(),
                        created: false,
                        deleted: true,
                    },
                    StoreEvent {
                        rv,
                        key: key.clone(),
                        kind: EventType::Deleted,
                        object: arc,
                        old: None,
                    },
                )
            }
        };
        record(&mut g, key, &meta, true);
        let event = Arc::new(event);
        g.history.push_back(event.clone());
        while g.history.len() > g.history_limit {
            if let Some(old) = g.history.pop_front() {
                g.oldest_rv = old.rv;
            }
        }
        // Sent under the lock so subscribers see events in resourceVersion order.
        let _ = self.events.send(event);
        drop(g);
        self.dirty.notify_one();
        Ok(result)
    }

    /// When `obj` was created, in milliseconds since the epoch: the instant this store
    /// created it, or (for objects loaded from a snapshot) its second-precision
    /// `creationTimestamp`.
    pub fn created_ms(&self, obj: &Value) -> Option<i64> {
        let known = obj["metadata"]["uid"]
            .as_str()
            .and_then(|uid| self.lock().created_ms.get(uid).copied());
        known.or_else(|| {
            obj["metadata"]["creationTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_millisecond())
        })
    }

    /// Logs an accepted write that stores nothing (a TokenRequest): it counts as a client
    /// write, with `changed: false`.
    pub fn record_unstored(&self, key: &ObjectKey, meta: &WriteMeta) {
        if !meta.dry_run {
            record(&mut self.lock(), key, meta, false);
        }
    }

    /// Subscribes to changes after `from_rv`: returns the backlog from history and a
    /// receiver for everything later, atomically (no gap, no duplicate).
    ///
    /// # Errors
    /// 410 Expired when history no longer reaches back to `from_rv`.
    pub fn watch_from(&self, from_rv: u64) -> Result<WatchStart, ApiError> {
        let g = self.lock();
        if from_rv < g.oldest_rv {
            return Err(ApiError::expired(from_rv, g.oldest_rv));
        }
        let backlog = g
            .history
            .iter()
            .filter(|e| e.rv > from_rv)
            .cloned()
            .collect();
        Ok((backlog, self.events.subscribe(), g.rv))
    }

    /// Snapshot of one resource plus a receiver for later changes, atomically.
    pub fn list_and_watch(
        &self,
        resource: &str,
        namespace: Option<&str>,
    ) -> (Vec<Arc<Value>>, u64, broadcast::Receiver<Arc<StoreEvent>>) {
        let g = self.lock();
        let items = match g.objects.get(resource) {
            None => Vec::new(),
            Some(m) => m
                .iter()
                .filter(|((n, _), _)| namespace.is_none_or(|ns| ns == n))
                .map(|(_, v)| v.clone())
                .collect(),
        };
        (items, g.rv, self.events.subscribe())
    }

    /// A receiver for every future change (controllers).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoreEvent>> {
        self.events.subscribe()
    }

    /// Forgets the watch history, so any watch from an older resourceVersion gets 410.
    pub fn compact(&self) {
        let mut g = self.lock();
        g.history.clear();
        g.oldest_rv = g.rv;
    }

    /// The write log.
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.lock().writes.iter().cloned().collect()
    }

    /// Writes the snapshot now (atomically: temp file, fsync, rename).
    ///
    /// # Errors
    /// The snapshot could not be written.
    pub fn flush(&self) -> Result<(), PersistError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let _one_writer = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let (rv, objects) = {
            let g = self.lock();
            let mut objects: Vec<(String, Arc<Value>)> = Vec::with_capacity(g.objects.len());
            for (res, m) in &g.objects {
                for v in m.values() {
                    objects.push((res.clone(), v.clone()));
                }
            }
            (g.rv, objects)
        };
        persist::save(path, rv, &objects)
    }

    /// Runs forever, writing the snapshot shortly after changes (debounced).
    ///
    /// A snapshot is O(objects), so under sustained writes it is taken at most once a
    /// second; a graceful shutdown always writes the final state.
    pub async fn persist_loop(self: Arc<Self>) {
        let min_interval = std::time::Duration::from_secs(1);
        let mut last = tokio::time::Instant::now() - min_interval;
        loop {
            self.dirty.notified().await;
            let debounce = std::time::Duration::from_millis(200);
            let earliest = last + min_interval;
            tokio::time::sleep_until(earliest.max(tokio::time::Instant::now() + debounce)).await;
            last = tokio::time::Instant::now();
            let store = self.clone();
            let res = tokio::task::spawn_blocking(move || store.flush()).await;
            match res {
                Ok(Err(e)) => tracing::error!(error = %e, "cannot persist the sandbox state"),
                Err(e) => tracing::error!(error = %e, "persistence task failed"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// The write log keeps the most recent records; counts cover everything.
const WRITE_LOG_LIMIT: usize = 50_000;

fn record(g: &mut Inner, key: &ObjectKey, meta: &WriteMeta, changed: bool) {
    g.write_seq += 1;
    let seq = g.write_seq;
    if g.writes.len() >= WRITE_LOG_LIMIT {
        g.writes.pop_front();
    }
    g.writes.push_back(WriteRecord {
        seq,
        verb: meta.verb.to_string(),
        resource: meta.resource.clone(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        field_manager: meta.field_manager.clone(),
        actor: meta.actor.clone(),
        changed,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(dry: bool) -> WriteMeta {
        WriteMeta {
            verb: "create",
            resource: "configmaps".into(),
            field_manager: None,
            actor: Actor::Client,
            dry_run: dry,
        }
    }

    fn cm(name: &str) -> Value {
        json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":name,"namespace":"default"}})
    }

    #[test]
    fn put_assigns_increasing_resource_versions_and_logs() {
        let s = Store::new(None, 100);
        let k = ObjectKey::new("/configmaps", "default", "a");
        let a = s
            .mutate(&k, meta(false), |_| Ok(Mutation::Put(cm("a"))))
            .expect("put");
        let b = s
            .mutate(&k, meta(false), |_| Ok(Mutation::Put(cm("a"))))
            .expect("put");
        let rv = |v: &Value| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        assert!(rv(&b.object) > rv(&a.object));
        assert!(a.created && !b.created);
        assert_eq!(s.writes().len(), 2);
    }

    #[test]
    fn dry_run_stores_nothing() {
        let s = Store::new(None, 100);
        let k = ObjectKey::new("/configmaps", "default", "a");
        s.mutate(&k, meta(true), |_| Ok(Mutation::Put(cm("a"))))
            .expect("dry");
        assert!(s.get(&k).is_none());
        assert!(s.writes().is_empty());
    }

    #[test]
    fn watch_from_compacted_history_is_expired() {
        let s = Store::new(None, 2);
        for n in ["a", "b", "c", "d"] {
            let k = ObjectKey::new("/configmaps", "default", n);
            s.mutate(&k, meta(false), |_| Ok(Mutation::Put(cm(n))))
                .expect("put");
        }
        let err = s.watch_from(1).expect_err("expired");
        assert_eq!(err.code, 410);
        let (backlog, _, _) = s.watch_from(s.current_rv() - 1).expect("recent");
        assert_eq!(backlog.len(), 1);
    }

    #[test]
    fn namespace_list_is_scoped() {
        let s = Store::new(None, 10);
        for (ns, n) in [("a", "x"), ("b", "y"), ("a", "z")] {
            let k = ObjectKey::new("/configmaps", ns, n);
            s.mutate(&k, meta(false), |_| {
                Ok(Mutation::Put(json!({"metadata":{"name":n,"namespace":ns}})))
            })
            .expect("put");
        }
        assert_eq!(s.list("/configmaps", Some("a")).0.len(), 2);
        assert_eq!(s.list("/configmaps", None).0.len(), 3);
    }

    #[test]
    fn concurrent_flushes_do_not_race_on_the_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Arc::new(Store::open(dir.path().join("state.json"), 10).expect("open"));
        let k = ObjectKey::new("/configmaps", "default", "a");
        s.mutate(&k, meta(false), |_| Ok(Mutation::Put(cm("a"))))
            .expect("put");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || (0..20).try_for_each(|_| s.flush()))
            })
            .collect();
        for t in threads {
            t.join().expect("thread").expect("every flush succeeds");
        }
        let reopened = Store::open(dir.path().join("state.json"), 10).expect("reopen");
        assert!(reopened.get(&k).is_some());
    }
}
