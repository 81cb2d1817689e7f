//! The KV version 1 secrets engine (`vault-plugin-secrets-kv` passthrough): one unversioned
//! JSON object per path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::envelope::Reply;
use super::error::ApiError;
use super::kv2::list_under;
use super::request::{ApiRequest, Verb};

/// One KV v1 mount's data.
#[derive(Default, Serialize, Deserialize)]
pub struct Kv1Store {
    secrets: BTreeMap<String, Map<String, Value>>,
}

impl Kv1Store {
    /// Whether a write to `key` updates an existing secret.
    pub fn exists(&self, key: &str) -> bool {
        self.secrets.contains_key(key)
    }

    /// Serves a request for `key` (the path below the mount).
    pub fn handle(&mut self, req: &ApiRequest, key: &str) -> Result<Reply, ApiError> {
        match req.verb {
            Verb::List => list_under(self.secrets.keys(), key),
            _ if key.is_empty() || key.ends_with('/') => Err(ApiError::NoHandler(key.into())),
            Verb::Read => self
                .secrets
                .get(key)
                .map(|data| Reply::data(Value::Object(data.clone())))
                .ok_or(ApiError::NotFound),
            Verb::Write => {
                if req.body.is_empty() {
                    return Err(ApiError::bad("missing data fields"));
                }
                self.secrets.insert(key.to_string(), req.body.clone());
                Ok(Reply::NoContent)
            }
            Verb::Delete => {
                self.secrets.remove(key);
                Ok(Reply::NoContent)
            }
            Verb::Head => Err(ApiError::UnsupportedOperation),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;
    use serde_json::json;

    fn req(method: Method, body: Value) -> ApiRequest {
        ApiRequest::decode(&method, "/v1/kv/x", None, None, body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn write_read_list_delete() {
        let mut kv = Kv1Store::default();
        assert_eq!(
            kv.handle(&req(Method::GET, json!({})), "a/b"),
            Err(ApiError::NotFound)
        );
        kv.handle(&req(Method::PUT, json!({"k": "v"})), "a/b")
            .unwrap();
        assert!(kv.exists("a/b"));
        let Reply::Envelope { data, .. } = kv.handle(&req(Method::GET, json!({})), "a/b").unwrap()
        else {
            panic!("envelope expected");
        };
        assert_eq!(data, Some(json!({"k": "v"})));
        let list = Method::from_bytes(b"LIST").unwrap();
        let Reply::Envelope { data, .. } = kv.handle(&req(list, json!({})), "").unwrap() else {
            panic!("envelope expected");
        };
        assert_eq!(data, Some(json!({"keys": ["a/"]})));
        kv.handle(&req(Method::DELETE, json!({})), "a/b").unwrap();
        assert!(!kv.exists("a/b"));
        assert!(kv.handle(&req(Method::PUT, json!({})), "a/b").is_err());
    }
}
