//! Authenticated admin endpoints for tests and operators:
//!
//! - `GET /sandbox/v1/writes`: the write log (`count` = accepted API-client writes,
//!   `changed` = those that changed state, `controllerCount`, and every record);
//! - `GET|PUT /sandbox/v1/faults`: read or replace the fault spec (`PUT` body is a spec string);
//! - `POST /sandbox/v1/compact`: forget watch history (watches from older versions get 410);
//! - `POST /sandbox/v1/vault/restart`: restart the sandbox Vault (sealed again, data kept).

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::json;

use super::faults::FaultSpec;
use super::http::{self, Body};
use super::server::{Caller, Shared};
use super::status::ApiError;
use super::store::Actor;

/// Handles a `/sandbox/...` request.
pub async fn handle(shared: &Shared, req: Request<Incoming>, caller: &Caller) -> Response<Body> {
    if !caller.admin_token || crate::rbac::impersonation::requested(req.headers()) {
        let mut e =
            ApiError::bad_request("the sandbox admin API needs the kubeconfig's admin token");
        e.code = 403;
        e.reason = "Forbidden";
        return http::error(&e);
    }
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/sandbox/v1/writes") => {
            let writes = shared.cluster.store.writes();
            let client: Vec<_> = writes.iter().filter(|w| w.actor == Actor::Client).collect();
            let changed = client.iter().filter(|w| w.changed).count();
            http::json(
                200,
                &json!({
                    "count": client.len(),
                    "changed": changed,
                    "controllerCount": writes.len() - client.len(),
                    "writes": writes,
                }),
            )
        }
        (Method::GET, "/sandbox/v1/faults") => http::json(200, &json!(shared.faults.spec())),
        (Method::PUT | Method::POST, "/sandbox/v1/faults") => {
            let body = match http::read_body(req.into_body()).await {
                Ok(b) => b,
                Err(e) => return http::error(&e),
            };
            match FaultSpec::parse(String::from_utf8_lossy(&body).trim()) {
                Ok(spec) => {
                    tracing::info!(?spec, "fault spec replaced");
                    shared.faults.set(spec);
                    http::json(200, &json!(shared.faults.spec()))
                }
                Err(e) => http::error(&ApiError::bad_request(e.to_string())),
            }
        }
        (Method::POST, "/sandbox/v1/vault/restart") => match shared.vault.get() {
            Some(v) => {
                tracing::info!("vault restart requested through the admin API");
                v.restart();
                // A real server answers again within about a second; report its state then.
                v.answering(std::time::Duration::from_secs(30)).await;
                match v.status() {
                    Some(st) => http::json(
                        200,
                        &json!({"initialized": st.initialized, "sealed": st.sealed}),
                    ),
                    None => http::error(&ApiError::internal(
                        "vault did not answer within 30s after the restart; see its log",
                    )),
                }
            }
            None => http::error(&ApiError::no_route()),
        },
        (Method::POST, "/sandbox/v1/compact") => {
            shared.cluster.store.compact();
            http::json(
                200,
                &json!({"resourceVersion": shared.cluster.store.current_rv().to_string()}),
            )
        }
        _ => http::error(&ApiError::no_route()),
    }
}
