//! The mount tables: secrets engines (`sys/mounts`) and auth methods (`sys/auth`), their JSON
//! entries, and the enable/disable/read handlers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth_kubernetes::KubernetesAuth;
use super::envelope::Reply;
use super::error::ApiError;
use super::kv1::Kv1Store;
use super::kv2::Kv2Store;
use super::request::{ApiRequest, Verb};
use super::state::State;

/// The descriptive part of a mount, as `sys/mounts` and `sys/auth` list it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountInfo {
    /// Engine type (`kv`, `kubernetes`, `system`, ...).
    pub kind: String,
    /// Free text.
    pub description: String,
    /// `<type>_<8 hex>`.
    pub accessor: String,
    /// Unique id.
    pub uuid: String,
    /// Engine options (`{"version":"2"}` for KV v2).
    pub options: Option<BTreeMap<String, String>>,
    /// Local-only mount (replication; informational here).
    pub local: bool,
    /// Seal wrapping (informational).
    pub seal_wrap: bool,
}

impl MountInfo {
    /// A new mount description with fresh accessor and uuid.
    pub fn new(kind: &str, description: &str, options: Option<BTreeMap<String, String>>) -> Self {
        let accessor_kind = if kind == "kubernetes" {
            "auth_kubernetes"
        } else {
            kind
        };
        Self {
            kind: kind.into(),
            description: description.into(),
            accessor: format!(
                "{accessor_kind}_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            uuid: uuid::Uuid::new_v4().to_string(),
            options,
            local: false,
            seal_wrap: false,
        }
    }

    /// The JSON entry; auth methods also carry `config.token_type`.
    pub fn json(&self, auth: bool) -> Value {
        let mut config = json!({
            "default_lease_ttl": 0,
            "force_no_cache": false,
            "max_lease_ttl": 0,
        });
        if auth {
            config["token_type"] = json!("default-service");
        }
        json!({
            "accessor": self.accessor,
            "config": config,
            "description": self.description,
            "external_entropy_access": false,
            "local": self.local,
            "options": self.options,
            "plugin_version": "",
            "running_plugin_version": format!("v{}-builtin", super::health::VERSION),
            "running_sha256": "",
            "seal_wrap": self.seal_wrap,
            "type": self.kind,
            "uuid": self.uuid,
            "deprecation_status": "supported",
        })
    }
}

/// A secrets engine mounted by a user.
#[derive(Serialize, Deserialize)]
pub struct SecretMount {
    /// The listed description.
    pub info: MountInfo,
    /// The engine's data.
    pub engine: SecretEngine,
}

/// The engines the sandbox implements.
#[derive(Serialize, Deserialize)]
pub enum SecretEngine {
    /// KV version 1 (unversioned).
    KvV1(Kv1Store),
    /// KV version 2.
    KvV2(Kv2Store),
}

/// An auth method mounted by a user.
#[derive(Serialize, Deserialize)]
pub struct AuthMount {
    /// The listed description.
    pub info: MountInfo,
    /// Kubernetes auth configuration, roles and aliases.
    pub kubernetes: KubernetesAuth,
}

/// The built-in secret mounts present on every Vault.
pub fn builtin_mounts() -> BTreeMap<String, MountInfo> {
    [
        (
            "sys/",
            "system",
            "system endpoints used for control, policy and debugging",
        ),
        (
            "cubbyhole/",
            "cubbyhole",
            "per-token private secret storage",
        ),
        ("identity/", "identity", "identity store"),
    ]
    .into_iter()
    .map(|(path, kind, description)| (path.to_string(), MountInfo::new(kind, description, None)))
    .collect()
}

fn mount_path(raw: &str) -> String {
    format!("{}/", raw.trim_matches('/'))
}

/// `sys/mounts[/<path>]`.
pub fn handle_mounts(state: &mut State, req: &ApiRequest, rest: &str) -> Result<Reply, ApiError> {
    if rest.is_empty() {
        return match req.verb {
            Verb::Read => {
                let mut all = serde_json::Map::new();
                for (path, info) in &state.builtin {
                    all.insert(path.clone(), info.json(false));
                }
                for (path, mount) in &state.mounts {
                    all.insert(path.clone(), mount.info.json(false));
                }
                Ok(Reply::data(Value::Object(all)))
            }
            _ => Err(ApiError::UnsupportedOperation),
        };
    }
    if rest.ends_with("/tune") {
        return Err(ApiError::NotImplemented("mount tuning".into()));
    }
    let path = mount_path(rest);
    match req.verb {
        Verb::Read => state
            .mounts
            .get(&path)
            .map(|m| &m.info)
            .or_else(|| state.builtin.get(&path))
            .map(|info| Reply::data(info.json(false)))
            .ok_or_else(|| ApiError::bad(format!("No secret engine mount at {path}"))),
        Verb::Write => {
            enable_mount(state, req, &path)?;
            Ok(Reply::NoContent)
        }
        Verb::Delete => {
            if state.builtin.contains_key(&path) {
                return Err(ApiError::bad(format!("cannot unmount {path:?}")));
            }
            state.mounts.remove(&path);
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::UnsupportedOperation),
    }
}

fn enable_mount(state: &mut State, req: &ApiRequest, path: &str) -> Result<(), ApiError> {
    let kind = req
        .str_field("type")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad("backend type must be specified as a string"))?;
    let mut options: BTreeMap<String, String> = BTreeMap::new();
    if let Some(Value::Object(given)) = req.body.get("options") {
        for (k, v) in given {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            options.insert(k.clone(), v);
        }
    }
    let (kind, version) = match kind {
        "kv-v2" => ("kv", "2".to_string()),
        "kv" | "generic" => (
            "kv",
            options
                .get("version")
                .cloned()
                .unwrap_or_else(|| "1".into()),
        ),
        other => {
            return Err(ApiError::bad(format!(
                "plugin not found in the catalog: {other}"
            )));
        }
    };
    let reserved = ["sys/", "auth/", "cubbyhole/", "identity/"];
    let taken = reserved
        .iter()
        .map(|p| p.to_string())
        .chain(state.mounts.keys().cloned())
        .find(|existing| existing.starts_with(path) || path.starts_with(existing.as_str()));
    if let Some(existing) = taken {
        return Err(ApiError::bad(format!(
            "path is already in use at {existing}"
        )));
    }
    let engine = match version.as_str() {
        "2" => SecretEngine::KvV2(Kv2Store::default()),
        "1" | "" => SecretEngine::KvV1(Kv1Store::default()),
        other => return Err(ApiError::bad(format!("invalid kv version {other:?}"))),
    };
    options.insert("version".into(), version);
    let description = req.str_field("description").unwrap_or_default();
    state.mounts.insert(
        path.to_string(),
        SecretMount {
            info: MountInfo::new(kind, description, Some(options)),
            engine,
        },
    );
    Ok(())
}

/// `sys/auth[/<path>]`.
pub fn handle_auth(state: &mut State, req: &ApiRequest, rest: &str) -> Result<Reply, ApiError> {
    if rest.is_empty() {
        return match req.verb {
            Verb::Read => {
                let mut all = serde_json::Map::new();
                all.insert("token/".into(), state.token_auth.json(true));
                for (path, mount) in &state.auths {
                    all.insert(path.clone(), mount.info.json(true));
                }
                Ok(Reply::data(Value::Object(all)))
            }
            _ => Err(ApiError::UnsupportedOperation),
        };
    }
    if rest.ends_with("/tune") {
        return Err(ApiError::NotImplemented("auth method tuning".into()));
    }
    let path = mount_path(rest);
    match req.verb {
        Verb::Read => {
            if path == "token/" {
                return Ok(Reply::data(state.token_auth.json(true)));
            }
            state
                .auths
                .get(&path)
                .map(|m| Reply::data(m.info.json(true)))
                .ok_or_else(|| ApiError::bad(format!("No auth engine at {path}")))
        }
        Verb::Write => {
            let kind = req
                .str_field("type")
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ApiError::bad("backend type must be specified as a string"))?;
            match kind {
                "kubernetes" => {}
                "token" => {
                    return Err(ApiError::bad(
                        "token credential backend cannot be instantiated",
                    ));
                }
                other => {
                    return Err(ApiError::bad(format!(
                        "plugin not found in the catalog: {other}"
                    )));
                }
            }
            let taken = std::iter::once("token/".to_string())
                .chain(state.auths.keys().cloned())
                .find(|existing| {
                    existing.starts_with(&path) || path.starts_with(existing.as_str())
                });
            if let Some(existing) = taken {
                return Err(ApiError::bad(format!(
                    "path is already in use at {existing}"
                )));
            }
            let description = req.str_field("description").unwrap_or_default();
            state.auths.insert(
                path,
                AuthMount {
                    info: MountInfo::new(kind, description, None),
                    kubernetes: KubernetesAuth::default(),
                },
            );
            Ok(Reply::NoContent)
        }
        Verb::Delete => {
            if path == "token/" {
                return Err(ApiError::bad("token credential backend cannot be disabled"));
            }
            state.auths.remove(&path);
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::UnsupportedOperation),
    }
}
