//! The HTTPS server: TLS accept loop, one `handle_request` that authenticates, injects
//! faults and dispatches to discovery, OpenAPI, admin, resource and upgrade handlers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admin;
use super::auth::{Authenticator, DEFAULT_AUDIENCES};
use super::cluster::Cluster;
use super::controllers::Triggers;
use super::discovery;
use super::faults::Faults;
use super::http::{self, Body, Query};
use super::openapi;
use super::portforward::Backends;
use super::rbac::{self, UserInfo};
use super::rest;
use super::status::ApiError;
use super::store::ObjectKey;

/// State every request handler sees.
#[derive(Debug)]
pub struct Shared {
    /// Objects and types.
    pub cluster: Cluster,
    /// Tokens and JWT keys.
    pub auth: Authenticator,
    /// Fault injection.
    pub faults: Faults,
    /// CA certificate PEM (`/cacerts`).
    pub ca_pem: String,
    /// Port-forward and readiness backends of pods.
    pub backends: Backends,
    /// Interval between watch bookmarks.
    pub bookmark_interval: Duration,
    /// Cancelled at shutdown: ends watches and port-forwards.
    pub shutdown: CancellationToken,
    /// Wakes controllers for objects whose readiness a backend decides.
    pub triggers: Triggers,
    /// The sandbox's Vault (set once the add-ons start).
    pub vault: std::sync::OnceLock<super::vault_pod::VaultPod>,
    /// Logs, exits and restarts of simulated containers.
    pub runtime: super::runtime::Runtime,
}

/// Who is calling, as authenticated (before any impersonation).
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// The identity the credential proves.
    pub user: UserInfo,
    /// Whether the credential is the kubeconfig's admin token (the only one the
    /// `/sandbox/v1/*` admin endpoints accept).
    pub admin_token: bool,
}

impl Caller {
    /// The kubeconfig's admin token.
    pub fn admin() -> Self {
        Self {
            user: UserInfo::admin(),
            admin_token: true,
        }
    }
}

/// Accepts TLS connections until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tracker.spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let svc_shared = shared.clone();
            let svc = service_fn(move |req| {
                let s = svc_shared.clone();
                async move { Ok::<_, Infallible>(handle_request(s, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                () = shared.shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
}

fn bearer(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Authenticates a bearer token: the admin token, or a valid service-account JWT whose
/// account still exists with the same uid.
pub fn authenticate(shared: &Shared, token: &str) -> Option<Caller> {
    if shared.auth.is_admin(token) {
        return Some(Caller::admin());
    }
    let auds: Vec<String> = DEFAULT_AUDIENCES.iter().map(|s| s.to_string()).collect();
    let claims = shared
        .auth
        .verify(token, &auds, jiff::Timestamp::now().as_second())
        .ok()?;
    let k = &claims.kubernetes;
    let sa = shared.cluster.store.get(&ObjectKey::new(
        "/serviceaccounts",
        k.namespace.as_str(),
        k.serviceaccount.name.as_str(),
    ))?;
    (sa["metadata"]["uid"].as_str() == Some(k.serviceaccount.uid.as_str())).then(|| Caller {
        user: UserInfo::service_account(
            &k.namespace,
            &k.serviceaccount.name,
            &k.serviceaccount.uid,
        ),
        admin_token: false,
    })
}

/// The single entry point for every request (logged without query or body: those may
/// carry object content).
pub async fn handle_request(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = route(shared, req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
    resp
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    // k3s's supervisor serves these without authentication (the apiserver itself runs with
    // anonymous-auth=false: everything else needs a credential).
    match (&method, path.as_str()) {
        (&Method::GET, "/ping") => return http::text(200, "pong"),
        (&Method::GET, "/cacerts") => return http::text(200, shared.ca_pem.clone()),
        // Like a release asset download: no cluster credentials needed.
        (&Method::GET, super::addons::FLUX_INSTALL_PATH) => {
            return http::text(200, super::addons::FLUX_INSTALL);
        }
        _ => {}
    }
    let caller = match bearer(&req).and_then(|t| authenticate(&shared, t)) {
        Some(c) => c,
        None => return http::error(&ApiError::unauthorized()),
    };
    if path.starts_with("/sandbox/") {
        return admin::handle(&shared, req, &caller).await;
    }
    // Impersonation, then authorization of the request as the user it acts as: the same
    // decision for every path (reads, writes, watches, port-forwards, logs, tokens).
    let user =
        match rbac::impersonation::resolve(&shared.cluster.store, &caller.user, req.headers()) {
            Ok(u) => u,
            Err(e) => return http::error(&e),
        };
    let query = Query::parse(req.uri().query());
    let attrs = rbac::Attributes::from_request(&user, method.as_str(), &path, &query);
    if let Err(e) = rbac::check(&shared.cluster.store, &attrs) {
        tracing::debug!(user = %user.name, %path, "forbidden");
        return http::error(&e);
    }
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz" | "/livez" | "/readyz") => {
            return http::text(200, health_body(req.uri().query()));
        }
        (&Method::GET, "/version") => return http::json(200, &discovery::version()),
        _ => {}
    }
    if path.starts_with("/api") {
        let d = shared.faults.decide();
        if !d.latency.is_zero() {
            tokio::time::sleep(d.latency).await;
        }
        if let Some(code) = d.error {
            tracing::info!(code, %path, "injected API fault");
            return http::error(&ApiError::injected(code));
        }
    }
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(http::decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    if method == Method::GET
        && matches!(segs.as_slice(), ["api"] | ["apis"])
        && discovery::wants_aggregated(req.headers())
    {
        let doc = discovery::aggregated(
            &shared.cluster.registry,
            segs.len() == 1 && segs[0] == "api",
        );
        let mut r = http::json(200, &doc);
        if let Ok(v) = discovery::AGGREGATED_CONTENT_TYPE.parse() {
            r.headers_mut().insert("content-type", v);
        }
        return r;
    }
    let resp = match segs.as_slice() {
        ["api"] => ok_get(&method, || discovery::core_versions(req.headers())),
        ["apis"] => ok_get(&method, || {
            discovery::group_list(&shared.cluster.registry, req.headers())
        }),
        ["api", "v1"] => ok_get(&method, || {
            discovery::resource_list(&shared.cluster.registry, "", "v1")
        }),
        ["apis", g] => ok_get(&method, || discovery::group(&shared.cluster.registry, g)),
        ["apis", g, v] => ok_get(&method, || {
            discovery::resource_list(&shared.cluster.registry, g, v)
        }),
        ["openapi", "v3"] => ok_get(&method, || Ok(openapi::index(&shared.cluster.registry))),
        ["openapi", "v3", rest @ ..] => ok_get(&method, || {
            openapi::document(&shared.cluster.registry, rest)
        }),
        ["openapi", "v2"] if method == Method::GET => {
            return openapi_v2_response(&shared, req.headers());
        }
        ["api", "v1", rest @ ..] => {
            return rest::handle(&shared, req, &user, "", "v1", rest, &query).await;
        }
        ["apis", g, v, rest @ ..] => {
            let (g, v) = (g.to_string(), v.to_string());
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            return rest::handle(&shared, req, &user, &g, &v, &rest, &query).await;
        }
        _ => Err(ApiError::no_route()),
    };
    match resp {
        Ok(v) => http::json(200, &v),
        Err(e) => http::error(&e),
    }
}

fn ok_get(
    method: &Method,
    f: impl FnOnce() -> Result<serde_json::Value, ApiError>,
) -> Result<serde_json::Value, ApiError> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        )));
    }
    f()
}

/// `GET /openapi/v2`: protobuf when the client asks for it (client-go, kubectl ≤ 1.28), else JSON.
fn openapi_v2_response(shared: &Shared, headers: &hyper::HeaderMap) -> Response<Body> {
    let doc = super::openapi_v2::document(&shared.cluster.registry);
    let wants_protobuf = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("com.github.proto-openapi.spec.v2"));
    if !wants_protobuf {
        return http::json(200, &doc);
    }
    let bytes = super::gnostic::encode_document(&doc);
    Response::builder()
        .status(200)
        .header(
            "content-type",
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
        )
        .header("cache-control", "no-cache, private")
        .body(http::full(bytes))
        .unwrap_or_else(|_| http::error(&ApiError::internal("cannot build the response")))
}

fn health_body(query: Option<&str>) -> String {
    if Query::parse(query).get("verbose").is_some() {
        "[+]ping ok\n[+]log ok\n[+]etcd ok\n[+]poststarthook/start-apiextensions-controllers ok\nreadyz check passed\n".into()
    } else {
        "ok".into()
    }
}
