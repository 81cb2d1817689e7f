//! An in-memory Kubernetes API for unit tests: a tower service behind `kube::Client::new`.
//!
//! Just enough of the wire protocol for the toolkit's unit tests (discovery documents, GET,
//! POST, server-side apply with `dryRun`, list and watch with line-delimited events), and a
//! request log so tests can assert what was (not) written. Integration against a faithful API
//! server is the sandbox's job.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use ::kube::Client;
use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
}

impl Recorded {
    /// A write that is not a dry run.
    pub fn is_write(&self) -> bool {
        self.method != "GET" && !self.query.contains("dryRun=All")
    }
}

/// What the handler answers.
pub enum Reply {
    Json(u16, Value),
    /// A watch response: these events, one per line, then the stream stays open.
    Watch(Vec<Value>),
}

type Handler = dyn Fn(&str, &str, &str, Option<Value>) -> Reply + Send + Sync;

/// A mock client whose every request is answered by `handler(method, path, query, body)`.
pub fn client(
    handler: impl Fn(&str, &str, &str, Option<Value>) -> Reply + Send + Sync + 'static,
) -> (Client, Arc<Mutex<Vec<Recorded>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let handler: Arc<Handler> = Arc::new(handler);
    let log2 = Arc::clone(&log);
    let svc = tower::service_fn(move |req: Request<::kube::client::Body>| {
        let handler = Arc::clone(&handler);
        let log = Arc::clone(&log2);
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_owned();
            let query = req.uri().query().unwrap_or("").to_owned();
            let bytes = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let body = serde_json::from_slice::<Value>(&bytes).ok();
            log.lock().unwrap().push(Recorded {
                method: method.clone(),
                path: path.clone(),
                query: query.clone(),
            });
            let reply = handler(&method, &path, &query, body);
            Ok::<_, Infallible>(respond(reply))
        }
    });
    (Client::new(svc, "default"), log)
}

fn respond(reply: Reply) -> Response<BoxBody<Bytes, Infallible>> {
    match reply {
        Reply::Json(code, v) => Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(BoxBody::new(http_body_util::Full::new(Bytes::from(
                v.to_string(),
            ))))
            .unwrap(),
        Reply::Watch(events) => {
            let lines = events
                .into_iter()
                .map(|e| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{e}\n")))));
            let stream = futures::stream::iter(lines).chain(futures::stream::pending());
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(BoxBody::new(StreamBody::new(stream)))
                .unwrap()
        }
    }
}

/// A Kubernetes `Status` error body.
pub fn status(code: u16, reason: &str, message: &str) -> Reply {
    Reply::Json(
        code,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message":message,"reason":reason,"code":code}),
    )
}

/// An `APIResourceList` for discovery of one group/version.
pub fn resource_list(group_version: &str, resources: &[(&str, &str, bool)]) -> Reply {
    let resources: Vec<Value> = resources
        .iter()
        .map(|(name, kind, namespaced)| {
            json!({"name":name,"singularName":"","namespaced":namespaced,"kind":kind,
                   "verbs":["create","delete","get","list","patch","update","watch"]})
        })
        .collect();
    Reply::Json(
        200,
        json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion":group_version,"resources":resources}),
    )
}

/// A tiny object store keyed by URL path, with server-side apply approximated as a JSON merge
/// (enough to tell "unchanged" from "changed") and server-set metadata.
#[derive(Default)]
pub struct Store {
    pub objects: BTreeMap<String, Value>,
    rv: u64,
}

impl Store {
    pub fn get(&self, path: &str) -> Reply {
        match self.objects.get(path) {
            Some(o) => Reply::Json(200, o.clone()),
            None => status(404, "NotFound", &format!("{path} not found")),
        }
    }

    pub fn apply(&mut self, path: &str, query: &str, body: Value) -> Reply {
        let dry = query.contains("dryRun=All");
        let existed = self.objects.contains_key(path);
        let mut obj = self.objects.get(path).cloned().unwrap_or_else(|| {
            json!({"metadata":{"uid":"u-1","creationTimestamp":"2026-01-01T00:00:00Z","generation":1}})
        });
        let before = obj.clone();
        json_patch::merge(&mut obj, &body);
        if !dry && obj != before {
            self.rv += 1;
            obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            obj["metadata"]["managedFields"] = json!([{"manager":"kubestrap","operation":"Apply","time":format!("2026-01-01T00:00:{:02}Z", self.rv % 60)}]);
            self.objects.insert(path.to_owned(), obj.clone());
        } else if dry {
            obj["metadata"]["managedFields"] =
                json!([{"manager":"kubestrap","operation":"Apply","time":"2026-01-01T00:01:00Z"}]);
        }
        Reply::Json(if existed { 200 } else { 201 }, obj)
    }

    pub fn create(&mut self, path: &str, body: Value) -> Reply {
        if self.objects.contains_key(path) {
            return status(409, "AlreadyExists", &format!("{path} already exists"));
        }
        self.rv += 1;
        let mut obj = body;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(path.to_owned(), obj.clone());
        Reply::Json(201, obj)
    }
}

/// Whether a path is a discovery document, a collection or an object.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Discovery,
    Collection,
    Object,
}

/// Classifies a Kubernetes API path.
pub fn route(path: &str) -> Route {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segs.first() {
        Some(&"api") => &segs[2.min(segs.len())..],
        _ => &segs[3.min(segs.len())..],
    };
    match rest.len() {
        0 => Route::Discovery,
        1 | 3 => Route::Collection,
        2 if rest[0] == "namespaces" => Route::Object,
        2 => Route::Object,
        _ => Route::Object,
    }
}

impl Store {
    /// Answers a request with the store: list, watch (no events, stays open), get, apply, create.
    pub fn serve(&mut self, method: &str, path: &str, query: &str, body: Option<Value>) -> Reply {
        match (method, route(path)) {
            ("GET", Route::Collection) if query.contains("watch=true") => Reply::Watch(vec![]),
            ("GET", Route::Collection) => {
                let prefix = format!("{path}/");
                let name_filter = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("fieldSelector=metadata.name%3D"))
                    .map(str::to_owned);
                let items: Vec<Value> = self
                    .objects
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                    .filter(|(k, _)| {
                        name_filter
                            .as_deref()
                            .is_none_or(|n| k[prefix.len()..] == *n)
                    })
                    .map(|(_, v)| v.clone())
                    .collect();
                Reply::Json(
                    200,
                    json!({"kind":"List","apiVersion":"v1","metadata":{"resourceVersion":self.rv.max(1).to_string()},"items":items}),
                )
            }
            ("GET", Route::Object) => self.get(path),
            ("PATCH", Route::Object) => self.apply(path, query, body.unwrap_or(Value::Null)),
            ("POST", Route::Collection) => {
                let body = body.unwrap_or(Value::Null);
                let name = body
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                self.create(&format!("{path}/{name}"), body)
            }
            _ => status(405, "MethodNotAllowed", "not supported by the mock"),
        }
    }
}
