//! A small controller framework: each controller watches storage keys, maps store events
//! to the objects it reconciles, and reconciles one object at a time from a deduplicated
//! queue, with requeue-after for timed transitions (readiness delays). Controllers write
//! through [`Cluster`](super::cluster::Cluster) with a controller actor, so watches fire
//! and the write log keeps their writes apart from API clients'.

mod endpoints;
mod gc;
mod namespaces;
mod node;
pub(crate) mod restarts;
mod stuck;
mod workloads;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

pub use endpoints::EndpointsController;
pub use gc::GarbageCollector;
pub use namespaces::NamespaceController;
pub use node::{NODE_NAME, NodeController};
pub use workloads::WorkloadController;

use super::server::Shared;
use super::store::{ObjectKey, StoreEvent};

/// What to do after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the next change.
    Done,
    /// Reconcile again after this long (even without changes).
    RequeueAfter(Duration),
}

/// A controller over the sandbox store.
#[async_trait]
pub trait Controller: Send + Sync + 'static {
    /// Name, used as the field manager and write-log actor.
    fn name(&self) -> &'static str;

    /// Storage keys (`apps/deployments`, `/pods`) whose events this controller receives;
    /// empty means every resource.
    fn watches(&self) -> Vec<String>;

    /// The objects to reconcile for a change (default: the changed object itself).
    fn map(&self, _shared: &Shared, event: &StoreEvent) -> Vec<ObjectKey> {
        vec![event.key.clone()]
    }

    /// One-off work before the first reconcile (creating built-in objects).
    async fn start(&self, _shared: &Arc<Shared>) {}

    /// Drives one object towards its desired state.
    async fn reconcile(&self, shared: &Arc<Shared>, key: &ObjectKey) -> Action;
}

/// Wakes controllers for an object from outside the store (a backend's readiness changed).
#[derive(Debug, Clone)]
pub struct Triggers(broadcast::Sender<ObjectKey>);

impl Default for Triggers {
    fn default() -> Self {
        Self(broadcast::channel(1024).0)
    }
}

impl Triggers {
    /// Requeues `key` in every controller watching its resource.
    pub fn fire(&self, key: ObjectKey) {
        let _ = self.0.send(key);
    }

    fn subscribe(&self) -> broadcast::Receiver<ObjectKey> {
        self.0.subscribe()
    }
}

/// The built-in controllers, in start order.
pub fn builtin() -> Vec<Arc<dyn Controller>> {
    vec![
        Arc::new(NamespaceController),
        Arc::new(NodeController::default()),
        Arc::new(WorkloadController),
        Arc::new(EndpointsController),
        Arc::new(GarbageCollector::default()),
        Arc::new(crate::rbac::AggregationController),
    ]
}

/// Runs a controller until shutdown.
pub fn spawn(shared: Arc<Shared>, controller: Arc<dyn Controller>, tracker: &TaskTracker) {
    tracker.spawn(async move {
        run(shared, controller).await;
    });
}

fn enqueue_all(shared: &Shared, watches: &[String], queue: &mut Queue) {
    for w in watches {
        for o in shared.cluster.store.list(w, None).0 {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
            let name = o["metadata"]["name"].as_str().unwrap_or("");
            queue.push(ObjectKey::new(w.as_str(), ns, name));
        }
    }
}

#[derive(Default)]
struct Queue {
    items: VecDeque<ObjectKey>,
    queued: HashSet<ObjectKey>,
    timers: BTreeMap<Instant, Vec<ObjectKey>>,
}

impl Queue {
    fn push(&mut self, k: ObjectKey) {
        if self.queued.insert(k.clone()) {
            self.items.push_back(k);
        }
    }

    fn pop(&mut self) -> Option<ObjectKey> {
        let k = self.items.pop_front()?;
        self.queued.remove(&k);
        Some(k)
    }

    fn later(&mut self, k: ObjectKey, after: Duration) {
        self.timers
            .entry(Instant::now() + after)
            .or_default()
            .push(k);
    }

    fn next_timer(&self) -> Option<Instant> {
        self.timers.keys().next().copied()
    }

    fn fire_due(&mut self) {
        let now = Instant::now();
        let due: Vec<Instant> = self.timers.range(..=now).map(|(t, _)| *t).collect();
        for t in due {
            for k in self.timers.remove(&t).unwrap_or_default() {
                self.push(k);
            }
        }
    }
}

async fn run(shared: Arc<Shared>, c: Arc<dyn Controller>) {
    let watches = c.watches();
    let mut events = shared.cluster.store.subscribe();
    let mut triggers = shared.triggers.subscribe();
    c.start(&shared).await;
    let mut queue = Queue::default();
    enqueue_all(&shared, &watches, &mut queue);
    loop {
        queue.fire_due();
        while let Some(k) = queue.pop() {
            if shared.shutdown.is_cancelled() {
                return;
            }
            match c.reconcile(&shared, &k).await {
                Action::Done => {}
                Action::RequeueAfter(d) => queue.later(k, d),
            }
            // Drain whatever arrived meanwhile without waiting.
            loop {
                match events.try_recv() {
                    Ok(e) => {
                        if watches.is_empty() || watches.contains(&e.key.resource) {
                            for k in c.map(&shared, &e) {
                                queue.push(k);
                            }
                        }
                    }
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        enqueue_all(&shared, &watches, &mut queue)
                    }
                    Err(_) => break,
                }
            }
            queue.fire_due();
        }
        let sleep_until = queue
            .next_timer()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = tokio::time::sleep_until(sleep_until) => {}
            e = events.recv() => match e {
                Ok(e) => {
                    if watches.is_empty() || watches.contains(&e.key.resource) {
                        for k in c.map(&shared, &e) {
                            queue.push(k);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => enqueue_all(&shared, &watches, &mut queue),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            t = triggers.recv() => {
                if let Ok(k) = t
                    && (watches.is_empty() || watches.contains(&k.resource)) {
                        queue.push(k);
                    }
            }
        }
    }
}
