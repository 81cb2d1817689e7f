//! What the builder of a run plugs in for its steps: typed, shared resources (a cluster
//! connection, a lock held outside the process) and what must happen to them when the run ends.
//!
//! The engine only schedules, retries, records and reports; it does not know what a resource is.
//! Toolkits and steps define their own resource types, the caller (CLI or test) inserts them
//! into the [`RunEnv`](super::RunEnv), and steps look them up by type through
//! [`StepContext::resource`](super::StepContext::resource), much as `http::Extensions` works.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::events::{EventBus, RunEvent};

/// A resource that holds something beyond the run's own process (a lock kept in the cluster): it is
/// given back when the run ends, whatever its outcome.
#[async_trait::async_trait]
pub trait Finish: Send + Sync {
    /// Release what the run took. An error is reported as a warning; the run's result stands.
    ///
    /// # Errors
    /// A message for the user saying what could not be released and what happens now.
    async fn finish(&self) -> Result<(), String>;
}

/// The run's resources, keyed by type.
#[derive(Clone, Default)]
pub struct Resources {
    by_type: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    finishers: Vec<Arc<dyn Finish>>,
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resources")
            .field("count", &self.by_type.len())
            .field("finishers", &self.finishers.len())
            .finish()
    }
}

impl Resources {
    /// Add (or replace) the resource of type `T`.
    pub fn insert<T: Any + Send + Sync>(&mut self, resource: Arc<T>) {
        self.by_type.insert(TypeId::of::<T>(), resource);
    }

    /// Add the resource of type `T` and have it finished when the run ends.
    pub fn insert_finished<T: Any + Finish>(&mut self, resource: Arc<T>) {
        self.finishers
            .push(Arc::clone(&resource) as Arc<dyn Finish>);
        self.insert(resource);
    }

    /// The resource of type `T`, if the run has one.
    #[must_use]
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.by_type
            .get(&TypeId::of::<T>())
            .and_then(|r| r.downcast_ref::<T>())
    }

    /// Finish every resource that asked for it, reporting failures as warnings.
    pub(crate) async fn finish_all(&self, events: &EventBus) {
        for resource in &self.finishers {
            if let Err(message) = resource.finish().await {
                events.emit(&RunEvent::Warning { message });
            }
        }
    }
}

/// What a helper that outlives the step which started it (a background renewer) may do to the
/// run: warn the user, and stop the run as Ctrl-C would.
#[derive(Debug, Clone)]
pub struct RunControl {
    events: EventBus,
    interrupt: CancellationToken,
}

impl RunControl {
    pub(crate) fn new(events: EventBus, interrupt: CancellationToken) -> Self {
        Self { events, interrupt }
    }

    /// Show `message` to the user as a warning.
    pub fn warn(&self, message: impl Into<String>) {
        self.events.emit(&RunEvent::Warning {
            message: message.into(),
        });
    }

    /// Warn with `message`, then stop the run: running steps are interrupted and nothing new
    /// starts.
    pub fn stop(&self, message: impl Into<String>) {
        self.warn(message);
        self.interrupt.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Default)]
    struct Counter(AtomicUsize);

    #[async_trait::async_trait]
    impl Finish for Counter {
        async fn finish(&self) -> Result<(), String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err("could not hand it back".into())
        }
    }

    #[tokio::test]
    async fn resources_are_found_by_type_and_finished_once() {
        let mut r = Resources::default();
        r.insert(Arc::new(7_u32));
        let counter = Arc::new(Counter::default());
        r.insert_finished(Arc::clone(&counter));
        assert_eq!(r.get::<u32>(), Some(&7));
        assert!(r.get::<String>().is_none());
        let events = EventBus::new();
        let seen = super::super::Recorder::new();
        events.subscribe(seen.subscriber());
        r.finish_all(&events).await;
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(seen.events().iter().any(
            |e| matches!(e, RunEvent::Warning { message } if message == "could not hand it back")
        ));
    }
}
