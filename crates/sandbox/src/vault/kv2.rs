//! The KV version 2 secrets engine (`vault-plugin-secrets-kv` `path_data.go`, `path_metadata.go`,
//! `path_delete.go`, `path_destroy.go`, `path_config.go`): versioned secrets with check-and-set,
//! soft delete, undelete, destroy and metadata.

use std::collections::BTreeMap;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::duration;
use super::envelope::Reply;
use super::error::ApiError;
use super::request::{ApiRequest, Verb};

/// Versions kept per secret when neither the secret nor the mount says otherwise.
const DEFAULT_MAX_VERSIONS: u64 = 10;

/// One KV v2 mount's data.
#[derive(Default, Serialize, Deserialize)]
pub struct Kv2Store {
    config: Kv2Config,
    secrets: BTreeMap<String, Secret>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Kv2Config {
    max_versions: u64,
    cas_required: bool,
    delete_version_after: u64,
}

#[derive(Serialize, Deserialize)]
struct Secret {
    created_time: String,
    updated_time: String,
    current_version: u64,
    oldest_version: u64,
    max_versions: u64,
    cas_required: bool,
    delete_version_after: u64,
    custom_metadata: Option<BTreeMap<String, String>>,
    versions: BTreeMap<u64, Version>,
}

#[derive(Serialize, Deserialize)]
struct Version {
    data: Option<Map<String, Value>>,
    created_time: String,
    deletion_time: String,
    destroyed: bool,
}

impl Secret {
    fn new(now: &str) -> Self {
        Self {
            created_time: now.into(),
            updated_time: now.into(),
            current_version: 0,
            oldest_version: 0,
            max_versions: 0,
            cas_required: false,
            delete_version_after: 0,
            custom_metadata: None,
            versions: BTreeMap::new(),
        }
    }

    fn version_metadata(&self, number: u64, version: &Version) -> Value {
        json!({
            "created_time": version.created_time,
            "custom_metadata": self.custom_metadata,
            "deletion_time": version.deletion_time,
            "destroyed": version.destroyed,
            "version": number,
        })
    }

    fn metadata(&self) -> Value {
        let versions: Map<String, Value> = self
            .versions
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    json!({
                        "created_time": v.created_time,
                        "deletion_time": v.deletion_time,
                        "destroyed": v.destroyed,
                    }),
                )
            })
            .collect();
        json!({
            "cas_required": self.cas_required,
            "created_time": self.created_time,
            "current_version": self.current_version,
            "custom_metadata": self.custom_metadata,
            "delete_version_after": go_duration(self.delete_version_after),
            "max_versions": self.max_versions,
            "oldest_version": self.oldest_version,
            "updated_time": self.updated_time,
            "versions": versions,
        })
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// Formats seconds as Go's `time.Duration.String()` does (`0s`, `1h0m0s`, `90s` -> `1m30s`).
fn go_duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// Splits `data/app/db` into (`data`, `app/db`).
fn split(sub: &str) -> (&str, &str) {
    sub.split_once('/').unwrap_or((sub, ""))
}

impl Kv2Store {
    /// Whether a write to `sub` updates something that exists (the ACL then needs `update`
    /// instead of `create`).
    pub fn exists(&self, sub: &str) -> bool {
        match split(sub) {
            ("data" | "metadata", key) => self.secrets.contains_key(key.trim_end_matches('/')),
            _ => true,
        }
    }

    /// Serves a request below the mount (`sub` is the path after `<mount>/`).
    pub fn handle(&mut self, req: &ApiRequest, sub: &str) -> Result<Reply, ApiError> {
        let (area, key) = split(sub);
        match (area, req.verb) {
            ("config", Verb::Read) if key.is_empty() => Ok(Reply::data(json!({
                "cas_required": self.config.cas_required,
                "delete_version_after": go_duration(self.config.delete_version_after),
                "max_versions": self.config.max_versions,
            }))),
            ("config", Verb::Write) if key.is_empty() => {
                if let Some(max) = req.u64_field("max_versions") {
                    self.config.max_versions = max;
                }
                if let Some(cas) = req.bool_field("cas_required") {
                    self.config.cas_required = cas;
                }
                if req.body.contains_key("delete_version_after") {
                    self.config.delete_version_after = duration::seconds(
                        "delete_version_after",
                        req.body.get("delete_version_after"),
                    )?;
                }
                Ok(Reply::NoContent)
            }
            ("metadata", Verb::List) => self.list(key),
            ("data", _) if key.is_empty() => Err(ApiError::NoHandler(sub.into())),
            ("data", Verb::Read) => self.read(key, req),
            ("data", Verb::Write) => self.write(key, req),
            ("data", Verb::Delete) => {
                self.delete_latest(key);
                Ok(Reply::NoContent)
            }
            ("metadata", _) if key.is_empty() => Err(ApiError::NoHandler(sub.into())),
            ("metadata", Verb::Read) => self
                .secrets
                .get(key)
                .map(|s| Reply::data(s.metadata()))
                .ok_or(ApiError::NotFound),
            ("metadata", Verb::Write) => self.write_metadata(key, req),
            ("metadata", Verb::Delete) => {
                self.secrets.remove(key);
                Ok(Reply::NoContent)
            }
            ("delete" | "undelete" | "destroy", Verb::Write) if !key.is_empty() => {
                let versions = req
                    .body
                    .get("versions")
                    .and_then(Value::as_array)
                    .map(|vs| {
                        vs.iter()
                            .filter_map(|v| {
                                v.as_u64()
                                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                            })
                            .collect::<Vec<u64>>()
                    })
                    .filter(|vs| !vs.is_empty())
                    .ok_or_else(|| ApiError::bad("no version number provided"))?;
                self.change_versions(area, key, &versions);
                Ok(Reply::NoContent)
            }
            ("subkeys", _) => Err(ApiError::NotImplemented("kv v2 subkeys".into())),
            ("config" | "data" | "metadata" | "delete" | "undelete" | "destroy", _) => {
                Err(ApiError::UnsupportedOperation)
            }
            // `pathInvalid`: a 404 envelope whose only content is a warning naming the CLI
            // subcommand for the operation (no `errors`).
            _ => Ok(Reply::Envelope {
                status: hyper::StatusCode::NOT_FOUND,
                data: None,
                warnings: Some(vec![format!(
                    "Invalid path for a versioned K/V secrets engine. See the API docs for the \
                     appropriate API endpoints to use. If using the Vault CLI, use 'vault kv {}' \
                     for this operation.",
                    match req.verb {
                        Verb::Write => "put",
                        Verb::List => "list",
                        Verb::Delete => "delete",
                        Verb::Read | Verb::Head => "get",
                    }
                )]),
                auth: None,
            }),
        }
    }

    fn read(&self, key: &str, req: &ApiRequest) -> Result<Reply, ApiError> {
        let secret = self.secrets.get(key).ok_or(ApiError::NotFound)?;
        let number = match req.query.get("version") {
            None => secret.current_version,
            Some(v) => match v.parse::<u64>() {
                Ok(0) => secret.current_version,
                Ok(n) => n,
                Err(_) => return Err(ApiError::bad("invalid version")),
            },
        };
        let version = secret.versions.get(&number).ok_or(ApiError::NotFound)?;
        let metadata = secret.version_metadata(number, version);
        match &version.data {
            Some(data) if version.deletion_time.is_empty() && !version.destroyed => {
                Ok(Reply::data(json!({ "data": data, "metadata": metadata })))
            }
            // Soft-deleted or destroyed: 404 that still carries the version metadata.
            _ => Ok(Reply::Envelope {
                status: StatusCode::NOT_FOUND,
                data: Some(json!({ "data": null, "metadata": metadata })),
                warnings: None,
                auth: None,
            }),
        }
    }

    fn write(&mut self, key: &str, req: &ApiRequest) -> Result<Reply, ApiError> {
        let Some(Value::Object(data)) = req.body.get("data") else {
            return Err(ApiError::bad("no data provided"));
        };
        let cas = req
            .body
            .get("options")
            .and_then(|o| o.get("cas"))
            .and_then(|c| {
                c.as_u64()
                    .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
            });
        let current = self.secrets.get(key).map_or(0, |s| s.current_version);
        let cas_required =
            self.config.cas_required || self.secrets.get(key).is_some_and(|s| s.cas_required);
        match cas {
            None if cas_required => {
                return Err(ApiError::bad(
                    "check-and-set parameter required for this call",
                ));
            }
            Some(cas) if cas != current => {
                return Err(ApiError::bad(
                    "check-and-set parameter did not match the current version",
                ));
            }
            _ => {}
        }
        let now = now();
        let mount_max = self.config.max_versions;
        let secret = self
            .secrets
            .entry(key.to_string())
            .or_insert_with(|| Secret::new(&now));
        let number = secret.current_version + 1;
        secret.current_version = number;
        secret.updated_time = now.clone();
        secret.versions.insert(
            number,
            Version {
                data: Some(data.clone()),
                created_time: now,
                deletion_time: String::new(),
                destroyed: false,
            },
        );
        let max = match (secret.max_versions, mount_max) {
            (0, 0) => DEFAULT_MAX_VERSIONS,
            (0, m) => m,
            (s, _) => s,
        };
        while secret.versions.len() as u64 > max {
            secret.versions.pop_first();
            secret.oldest_version = secret.versions.keys().next().copied().unwrap_or(0);
        }
        let version = &secret.versions[&number];
        Ok(Reply::data(secret.version_metadata(number, version)))
    }

    fn delete_latest(&mut self, key: &str) {
        if let Some(secret) = self.secrets.get_mut(key) {
            let current = secret.current_version;
            if let Some(version) = secret.versions.get_mut(&current)
                && version.deletion_time.is_empty()
            {
                version.deletion_time = now();
            }
        }
    }

    fn change_versions(&mut self, action: &str, key: &str, numbers: &[u64]) {
        let Some(secret) = self.secrets.get_mut(key) else {
            return;
        };
        let now = now();
        for number in numbers {
            let Some(version) = secret.versions.get_mut(number) else {
                continue;
            };
            match action {
                "delete" if version.deletion_time.is_empty() && !version.destroyed => {
                    version.deletion_time = now.clone();
                }
                "undelete" if !version.destroyed => version.deletion_time.clear(),
                "destroy" => {
                    version.destroyed = true;
                    version.data = None;
                }
                _ => {}
            }
        }
    }

    fn write_metadata(&mut self, key: &str, req: &ApiRequest) -> Result<Reply, ApiError> {
        let custom = match req.body.get("custom_metadata") {
            None => None,
            Some(Value::Object(map)) => Some(
                map.iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => Ok((k.clone(), s.clone())),
                        _ => Err(ApiError::bad("custom_metadata values must be strings")),
                    })
                    .collect::<Result<BTreeMap<_, _>, _>>()?,
            ),
            Some(Value::Null) => None,
            Some(_) => return Err(ApiError::bad("custom_metadata must be a map")),
        };
        let delete_after = match req.body.get("delete_version_after") {
            Some(v) => Some(duration::seconds("delete_version_after", Some(v))?),
            None => None,
        };
        let now = now();
        let secret = self
            .secrets
            .entry(key.to_string())
            .or_insert_with(|| Secret::new(&now));
        if let Some(max) = req.u64_field("max_versions") {
            secret.max_versions = max;
        }
        if let Some(cas) = req.bool_field("cas_required") {
            secret.cas_required = cas;
        }
        if let Some(after) = delete_after {
            secret.delete_version_after = after;
        }
        if custom.is_some() {
            secret.custom_metadata = custom;
        }
        secret.updated_time = now;
        Ok(Reply::NoContent)
    }

    fn list(&self, dir: &str) -> Result<Reply, ApiError> {
        list_under(self.secrets.keys(), dir)
    }
}

/// The `keys` of a list below `dir`: direct children, folders suffixed `/`; 404 when none.
pub fn list_under<'a>(
    keys: impl Iterator<Item = &'a String>,
    dir: &str,
) -> Result<Reply, ApiError> {
    let prefix = if dir.is_empty() || dir.ends_with('/') {
        dir.to_string()
    } else {
        format!("{dir}/")
    };
    let mut found: Vec<String> = keys
        .filter_map(|k| k.strip_prefix(&prefix))
        .filter(|rest| !rest.is_empty())
        .map(|rest| match rest.split_once('/') {
            Some((folder, _)) => format!("{folder}/"),
            None => rest.to_string(),
        })
        .collect();
    found.sort();
    found.dedup();
    if found.is_empty() {
        return Err(ApiError::NotFound);
    }
    Ok(Reply::data(json!({ "keys": found })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;

    fn req(method: &str, path: &str, query: Option<&str>, body: Value) -> ApiRequest {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        ApiRequest::decode(
            &method,
            &format!("/v1/secret/{path}"),
            query,
            None,
            body.to_string().as_bytes(),
        )
        .unwrap()
    }

    fn run(store: &mut Kv2Store, method: &str, sub: &str, body: Value) -> Result<Reply, ApiError> {
        store.handle(&req(method, sub, None, body.clone()), sub)
    }

    fn data_of(reply: Reply) -> Value {
        match reply {
            Reply::Envelope { data: Some(d), .. } => d,
            other => panic!("no data in {other:?}"),
        }
    }

    #[test]
    fn versions_cas_and_reads() {
        let mut kv = Kv2Store::default();
        assert_eq!(
            run(&mut kv, "GET", "data/app", json!({})),
            Err(ApiError::NotFound)
        );
        let v1 = data_of(run(&mut kv, "POST", "data/app", json!({"data": {"a": "1"}})).unwrap());
        assert_eq!(v1["version"], 1);
        assert_eq!(v1["deletion_time"], "");
        let stale = run(
            &mut kv,
            "POST",
            "data/app",
            json!({"data": {"a": "2"}, "options": {"cas": 0}}),
        );
        assert_eq!(
            stale,
            Err(ApiError::bad(
                "check-and-set parameter did not match the current version"
            ))
        );
        let v2 = run(
            &mut kv,
            "POST",
            "data/app",
            json!({"data": {"a": "2"}, "options": {"cas": 1}}),
        )
        .unwrap();
        assert_eq!(data_of(v2)["version"], 2);
        let latest = data_of(run(&mut kv, "GET", "data/app", json!({})).unwrap());
        assert_eq!(latest["data"]["a"], "2");
        let old = kv
            .handle(
                &req("GET", "data/app", Some("version=1"), json!({})),
                "data/app",
            )
            .unwrap();
        assert_eq!(data_of(old)["data"]["a"], "1");
        assert_eq!(
            run(&mut kv, "POST", "data/app", json!({})),
            Err(ApiError::bad("no data provided"))
        );
    }

    #[test]
    fn soft_delete_answers_404_with_metadata_and_undelete_restores() {
        let mut kv = Kv2Store::default();
        run(&mut kv, "POST", "data/app", json!({"data": {"a": "1"}})).unwrap();
        assert_eq!(
            run(&mut kv, "DELETE", "data/app", json!({})),
            Ok(Reply::NoContent)
        );
        match run(&mut kv, "GET", "data/app", json!({})).unwrap() {
            Reply::Envelope { status, data, .. } => {
                assert_eq!(status, StatusCode::NOT_FOUND);
                let data = data.unwrap();
                assert!(data["data"].is_null());
                assert_ne!(data["metadata"]["deletion_time"], "");
            }
            other => panic!("{other:?}"),
        }
        run(&mut kv, "POST", "undelete/app", json!({"versions": [1]})).unwrap();
        assert!(run(&mut kv, "GET", "data/app", json!({})).is_ok());
        run(&mut kv, "POST", "destroy/app", json!({"versions": [1]})).unwrap();
        let meta = data_of(run(&mut kv, "GET", "metadata/app", json!({})).unwrap());
        assert_eq!(meta["versions"]["1"]["destroyed"], true);
        assert_eq!(meta["current_version"], 1);
        run(&mut kv, "DELETE", "metadata/app", json!({})).unwrap();
        assert_eq!(
            run(&mut kv, "GET", "metadata/app", json!({})),
            Err(ApiError::NotFound)
        );
    }

    #[test]
    fn list_shows_keys_and_folders() {
        let mut kv = Kv2Store::default();
        for key in ["app/db", "app/api/token", "top"] {
            run(
                &mut kv,
                "POST",
                &format!("data/{key}"),
                json!({"data": {"x": "y"}}),
            )
            .unwrap();
        }
        let root = data_of(run(&mut kv, "LIST", "metadata/", json!({})).unwrap());
        assert_eq!(root["keys"], json!(["app/", "top"]));
        let app = data_of(run(&mut kv, "LIST", "metadata/app", json!({})).unwrap());
        assert_eq!(app["keys"], json!(["api/", "db"]));
        assert_eq!(
            run(&mut kv, "LIST", "metadata/none/", json!({})),
            Err(ApiError::NotFound)
        );
    }

    #[test]
    fn max_versions_prunes_old_versions() {
        let mut kv = Kv2Store::default();
        run(&mut kv, "POST", "config", json!({"max_versions": 2})).unwrap();
        for i in 0..3 {
            run(&mut kv, "POST", "data/k", json!({"data": {"i": i}})).unwrap();
        }
        let meta = data_of(run(&mut kv, "GET", "metadata/k", json!({})).unwrap());
        assert_eq!(meta["oldest_version"], 2);
        assert!(meta["versions"].get("1").is_none());
        assert_eq!(go_duration(3600), "1h0m0s");
    }
}
