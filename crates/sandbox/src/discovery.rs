//! `/version` and API discovery (`/api`, `/api/v1`, `/apis`, `/apis/<g>`, `/apis/<g>/<v>`).
//!
//! kubectl and kube-rs ask `/api` and `/apis` for aggregated discovery (`apidiscovery.k8s.io/v2`)
//! first. kubectl falls back to the plain documents when the response is not aggregated, but
//! kube-rs' `Discovery::run_aggregated` does not, so aggregated requests get the aggregated
//! document with its own `Content-Type`.

use std::collections::BTreeMap;

use hyper::HeaderMap;
use serde_json::{Value, json};

use super::resources::Registry;
use super::status::ApiError;

/// The Kubernetes version the sandbox claims (k8s-openapi is built for v1.33).
pub const GIT_VERSION: &str = "v1.33.1+k3s1";

/// The `/version` document with all nine fields k8s-openapi requires.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": "99ec2ec9d4a4d2e8f1d45ac87b4e0b5dea1e5b3f",
        "gitTreeState": "clean",
        "buildDate": "2025-05-15T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `GET /api`.
///
/// # Errors
/// Never; the signature matches the other handlers.
pub fn core_versions(_headers: &HeaderMap) -> Result<Value, ApiError> {
    Ok(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
    }))
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": vs, "preferredVersion": preferred})
}

/// Groups and their versions, preferred (first) version by Kubernetes version priority.
fn groups(registry: &Registry) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in registry.all() {
        if r.group.is_empty() {
            continue;
        }
        let e = out.entry(r.group.clone()).or_default();
        if !e.contains(&r.version) {
            e.push(r.version.clone());
        }
    }
    for vs in out.values_mut() {
        vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    }
    out
}

/// Orders versions like the apiserver: GA > beta > alpha, higher numbers first.
fn version_priority(v: &str) -> (u8, u32, u32) {
    let rest = v.strip_prefix('v').unwrap_or(v);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (stability, minor) = if tail.is_empty() {
        (3, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n.parse().unwrap_or(0))
    } else {
        (0, 0)
    };
    (stability, major, minor)
}

/// `GET /apis`.
///
/// # Errors
/// Never; the signature matches the other handlers.
pub fn group_list(registry: &Registry, _headers: &HeaderMap) -> Result<Value, ApiError> {
    let gs: Vec<Value> = groups(registry)
        .iter()
        .map(|(g, vs)| group_entry(g, vs))
        .collect();
    Ok(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs}))
}

/// `GET /apis/<group>`.
///
/// # Errors
/// 404 for an unknown group.
pub fn group(registry: &Registry, group: &str) -> Result<Value, ApiError> {
    let gs = groups(registry);
    let vs = gs.get(group).ok_or_else(ApiError::no_route)?;
    let mut e = group_entry(group, vs);
    e["kind"] = json!("APIGroup");
    e["apiVersion"] = json!("v1");
    Ok(e)
}

/// `GET /api/v1` or `GET /apis/<g>/<v>`.
///
/// # Errors
/// 404 for an unknown group/version.
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Result<Value, ApiError> {
    let types = registry.in_group_version(group, version);
    if types.is_empty() {
        return Err(ApiError::no_route());
    }
    let mut resources = Vec::new();
    for r in &types {
        let mut main = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            main["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            main["categories"] = json!(r.categories);
        }
        main["storageVersionHash"] = json!(storage_hash(&r.storage_key()));
        resources.push(main);
        if r.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        for (sub, verbs) in &r.extra_subresources {
            let kind = match sub.as_str() {
                "token" => "TokenRequest",
                "scale" => "Scale",
                "portforward" => "PodPortForwardOptions",
                "log" => "Pod",
                _ => r.kind.as_str(),
            };
            let mut e = json!({
                "name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": kind, "verbs": verbs,
            });
            if sub == "token" {
                e["group"] = json!("authentication.k8s.io");
                e["version"] = json!("v1");
            }
            if sub == "scale" {
                e["group"] = json!("autoscaling");
                e["version"] = json!("v1");
            }
            resources.push(e);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// The media type of an aggregated discovery response.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether a request's `Accept` includes aggregated discovery `v2` (clients that only know
/// `v2beta1`, like kubectl 1.29, get the plain documents and fall back).
pub fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept.split(',').any(|media| {
                let params: Vec<&str> = media.split(';').map(str::trim).collect();
                params.contains(&"g=apidiscovery.k8s.io")
                    && params.contains(&"v=v2")
                    && params.contains(&"as=APIGroupDiscoveryList")
            })
        })
}

/// The aggregated discovery document of the core group (`core`) or of all named groups.
pub fn aggregated(registry: &Registry, core: bool) -> Value {
    let types = registry.all();
    let names: Vec<String> = if core {
        vec![String::new()]
    } else {
        groups(registry).keys().cloned().collect()
    };
    let items: Vec<Value> = names
        .iter()
        .map(|g| {
            let mut versions: Vec<String> = types.iter().filter(|r| &r.group == g).map(|r| r.version.clone()).collect();
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
            versions.dedup();
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = types
                        .iter()
                        .filter(|r| &r.group == g && &r.version == v)
                        .map(|r| {
                            let kind = json!({"group": r.group, "version": r.version, "kind": r.kind});
                            let mut subs: Vec<Value> = Vec::new();
                            if r.status_subresource {
                                subs.push(json!({"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]}));
                            }
                            for (sub, verbs) in &r.extra_subresources {
                                subs.push(json!({"subresource": sub, "responseKind": kind, "verbs": verbs}));
                            }
                            let mut e = json!({
                                "resource": r.plural,
                                "responseKind": kind,
                                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": r.singular,
                                "verbs": r.verbs(),
                            });
                            if !r.short_names.is_empty() {
                                e["shortNames"] = json!(r.short_names);
                            }
                            if !r.categories.is_empty() {
                                e["categories"] = json!(r.categories);
                            }
                            if !subs.is_empty() {
                                e["subresources"] = json!(subs);
                            }
                            e
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": vs})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

fn storage_hash(key: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let d = sha2::Sha256::digest(key.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&d[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_has_all_nine_fields() {
        let v = version();
        for k in [
            "major",
            "minor",
            "gitVersion",
            "gitCommit",
            "gitTreeState",
            "buildDate",
            "goVersion",
            "compiler",
            "platform",
        ] {
            assert!(v[k].is_string(), "{k}");
        }
        let _: k8s_openapi::apimachinery::pkg::version::Info =
            serde_json::from_value(v).expect("k8s-openapi parses it");
    }

    #[test]
    fn discovery_documents_parse_with_k8s_openapi() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
            APIGroupList, APIResourceList, APIVersions,
        };
        let r = Registry::new();
        let h = HeaderMap::new();
        let _: APIVersions =
            serde_json::from_value(core_versions(&h).expect("api")).expect("APIVersions");
        let gl: APIGroupList =
            serde_json::from_value(group_list(&r, &h).expect("apis")).expect("APIGroupList");
        assert!(gl.groups.iter().any(|g| g.name == "apps"));
        let rl: APIResourceList = serde_json::from_value(resource_list(&r, "", "v1").expect("v1"))
            .expect("APIResourceList");
        assert!(
            rl.resources
                .iter()
                .any(|x| x.name == "serviceaccounts/token")
        );
        assert!(resource_list(&r, "nope", "v1").is_err());
    }

    #[test]
    fn aggregated_documents_parse_with_kube_core() {
        let r = Registry::new();
        let apis: kube::core::discovery::v2::APIGroupDiscoveryList =
            serde_json::from_value(aggregated(&r, false)).expect("aggregated /apis");
        let apps = apis
            .items
            .iter()
            .find(|g| g.metadata.as_ref().and_then(|m| m.name.as_deref()) == Some("apps"))
            .expect("apps");
        assert!(
            apps.versions[0]
                .resources
                .iter()
                .any(|x| x.resource.as_deref() == Some("deployments"))
        );
        let core: kube::core::discovery::v2::APIGroupDiscoveryList =
            serde_json::from_value(aggregated(&r, true)).expect("aggregated /api");
        assert_eq!(core.items.len(), 1);
    }

    #[test]
    fn only_v2_aggregated_requests_get_the_aggregated_document() {
        let mut h = HeaderMap::new();
        h.insert(
            "accept",
            kube::core::discovery::v2::ACCEPT_AGGREGATED_DISCOVERY_V2
                .parse()
                .expect("header"),
        );
        assert!(wants_aggregated(&h));
        h.insert(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json".parse().expect("header"),
        );
        assert!(!wants_aggregated(&h));
        assert!(!wants_aggregated(&HeaderMap::new()));
    }

    #[test]
    fn ga_versions_are_preferred() {
        let mut vs = vec!["v1beta1".to_string(), "v1".into(), "v2alpha1".into()];
        vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(vs, vec!["v1", "v1beta1", "v2alpha1"]);
    }
}
