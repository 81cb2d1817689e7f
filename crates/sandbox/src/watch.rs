//! `?watch=true`: a chunked stream of one JSON event per line, resumable from a
//! resourceVersion, with bookmarks, `timeoutSeconds`, selectors, and 410 Expired as an
//! in-stream ERROR event (what kube-runtime's watcher re-lists on).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::http::{self, Body, Query};
use super::resources::ResourceType;
use super::server::Shared;
use super::status::ApiError;
use super::store::selector::{FieldSelector, LabelSelector};
use super::store::{EventType, StoreEvent};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Filter {
    resource: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn selects(&self, o: &Value) -> bool {
        self.labels.matches(o) && self.fields.matches(o)
    }

    /// The event type this watch sees for a change, if any: an object that starts
    /// matching the selectors is ADDED, one that stops matching is DELETED.
    fn view(&self, e: &StoreEvent) -> Option<EventType> {
        if e.key.resource != self.resource
            || self
                .namespace
                .as_deref()
                .is_some_and(|ns| ns != e.key.namespace)
        {
            return None;
        }
        let now = self.selects(&e.object);
        let before = e.old.as_deref().map(|o| self.selects(o));
        match (e.kind, before, now) {
            (EventType::Modified, Some(false), true) => Some(EventType::Added),
            (EventType::Modified, Some(true), false) => Some(EventType::Deleted),
            (kind, _, true) => Some(kind),
            (_, _, false) => None,
        }
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn event_line(
    shared: &Shared,
    rt: &ResourceType,
    e: &StoreEvent,
    seen: EventType,
    table: bool,
) -> Bytes {
    let kind = match seen {
        EventType::Added => "ADDED",
        EventType::Modified => "MODIFIED",
        EventType::Deleted => "DELETED",
    };
    object_line(shared, rt, kind, &e.object, table)
}

fn object_line(shared: &Shared, rt: &ResourceType, kind: &str, o: &Value, table: bool) -> Bytes {
    let obj = shared.cluster.present(rt, o);
    if table {
        line(kind, &super::table::render(rt, &obj))
    } else {
        line(kind, &obj)
    }
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta}),
    )
}

/// Starts a watch and returns the streaming response.
/// `table`: the client asked for `meta.k8s.io` Tables (`kubectl get -w`).
pub async fn handle(
    shared: Arc<Shared>,
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    q: &Query,
    table: bool,
) -> Response<Body> {
    let labels = match LabelSelector::parse(q.get("labelSelector").unwrap_or("")) {
        Ok(l) => l,
        Err(e) => return http::error(&e),
    };
    let fields = match FieldSelector::parse(q.get("fieldSelector").unwrap_or("")) {
        Ok(f) => f,
        Err(e) => return http::error(&e),
    };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let bookmarks = q.flag("allowWatchBookmarks");
    let send_initial = q.flag("sendInitialEvents");
    let from = match q.get("resourceVersion") {
        None | Some("" | "0") => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => {
                return http::error(&ApiError::bad_request(format!(
                    "invalid resourceVersion {rv:?}"
                )));
            }
        },
    };
    let filter = Filter {
        resource: rt.storage_key(),
        namespace,
        labels,
        fields,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let store = &shared.cluster.store;
    let mut initial: Vec<Bytes> = Vec::new();
    let start = if from.is_none() || send_initial {
        let (items, rv, sub) = store.list_and_watch(&filter.resource, filter.namespace.as_deref());
        for o in items
            .iter()
            .filter(|o| filter.labels.matches(o) && filter.fields.matches(o))
        {
            initial.push(object_line(&shared, &rt, "ADDED", o, table));
        }
        if send_initial && bookmarks {
            initial.push(bookmark(&rt, rv, true));
        }
        Ok((Vec::new(), sub, rv))
    } else {
        store.watch_from(from.unwrap_or(0))
    };
    match start {
        Err(e) => {
            // The apiserver answers 200 with an ERROR event; kube-runtime re-lists on it.
            initial.push(line("ERROR", &e.to_status()));
            tokio::spawn(async move {
                for l in initial {
                    if tx.send(l).await.is_err() {
                        return;
                    }
                }
            });
        }
        Ok((backlog, sub, rv)) => {
            let shared2 = shared.clone();
            tokio::spawn(async move {
                let opts = StreamOpts {
                    timeout,
                    bookmarks,
                    table,
                };
                run(shared2, rt, filter, initial, backlog, sub, rv, tx, opts).await;
            });
        }
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(StreamBody::new(stream).boxed())
        .unwrap_or_else(|_| http::error(&ApiError::internal("cannot build the watch response")))
}

struct StreamOpts {
    timeout: Duration,
    bookmarks: bool,
    table: bool,
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
async fn run(
    shared: Arc<Shared>,
    rt: Arc<ResourceType>,
    filter: Filter,
    initial: Vec<Bytes>,
    backlog: Vec<Arc<StoreEvent>>,
    mut sub: broadcast::Receiver<Arc<StoreEvent>>,
    mut last_rv: u64,
    tx: mpsc::Sender<Bytes>,
    opts: StreamOpts,
) {
    let StreamOpts {
        timeout,
        bookmarks,
        table,
    } = opts;
    for l in initial {
        if tx.send(l).await.is_err() {
            return;
        }
    }
    for e in backlog {
        last_rv = last_rv.max(e.rv);
        if let Some(seen) = filter.view(&e)
            && tx
                .send(event_line(&shared, &rt, &e, seen, table))
                .await
                .is_err()
        {
            return;
        }
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(shared.bookmark_interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = &mut deadline => return,
            () = shared.shutdown.cancelled() => return,
            () = tx.closed() => return,
            _ = ticker.tick(), if bookmarks => {
                if tx.send(bookmark(&rt, last_rv, false)).await.is_err() {
                    return;
                }
            }
            r = sub.recv() => match r {
                Ok(e) => {
                    if e.rv <= last_rv {
                        continue;
                    }
                    last_rv = e.rv;
                    if let Some(seen) = filter.view(&e)
                        && tx.send(event_line(&shared, &rt, &e, seen, table)).await.is_err() {
                            return;
                        }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let oldest = shared.cluster.store.current_rv();
                    let _ = tx.send(line("ERROR", &ApiError::expired(last_rv, oldest).to_status())).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectKey;

    fn event(kind: EventType, old: Option<Value>, new: Value) -> StoreEvent {
        StoreEvent {
            rv: 2,
            key: ObjectKey::new("/configmaps", "default", "a"),
            kind,
            object: Arc::new(new),
            old: old.map(Arc::new),
        }
    }

    #[test]
    fn leaving_and_entering_a_selector_are_deleted_and_added() {
        let f = Filter {
            resource: "/configmaps".into(),
            namespace: Some("default".into()),
            labels: LabelSelector::parse("app=web").expect("selector"),
            fields: FieldSelector::default(),
        };
        let web = json!({"metadata": {"labels": {"app": "web"}}});
        let db = json!({"metadata": {"labels": {"app": "db"}}});
        assert_eq!(
            f.view(&event(EventType::Modified, Some(web.clone()), db.clone())),
            Some(EventType::Deleted)
        );
        assert_eq!(
            f.view(&event(EventType::Modified, Some(db.clone()), web.clone())),
            Some(EventType::Added)
        );
        assert_eq!(
            f.view(&event(EventType::Modified, Some(web.clone()), web.clone())),
            Some(EventType::Modified)
        );
        assert_eq!(
            f.view(&event(EventType::Modified, Some(db.clone()), db.clone())),
            None
        );
        assert_eq!(f.view(&event(EventType::Added, None, db)), None);
        let mut other_ns = event(EventType::Added, None, web);
        other_ns.key.namespace = "kube-system".into();
        assert_eq!(f.view(&other_ns), None);
    }
}
