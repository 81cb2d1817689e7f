//! A Vault API request reduced to what handlers need: the logical verb, the normalised path
//! below `/v1/`, the query, the client token and the JSON body.

use std::collections::BTreeMap;

use hyper::Method;
use serde_json::{Map, Value};

use super::error::ApiError;

/// The logical verb Vault derives from the HTTP method (and `?list=true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `GET`.
    Read,
    /// `HEAD` (only `sys/health` answers it).
    Head,
    /// `LIST`, or `GET` with `list=true`.
    List,
    /// `POST` or `PUT` (identical in Vault).
    Write,
    /// `DELETE`.
    Delete,
}

/// One request, decoded.
#[derive(Clone)]
pub struct ApiRequest {
    /// The logical verb.
    pub verb: Verb,
    /// The path below `/v1/`, percent-decoded, without empty segments; a trailing `/` kept.
    pub path: String,
    /// Query parameters (last value wins).
    pub query: BTreeMap<String, String>,
    /// `X-Vault-Token`, else the `Authorization: Bearer` token.
    pub token: Option<String>,
    /// The JSON body object (empty when the body was empty).
    pub body: Map<String, Value>,
}

/// Never prints the token or body values (they may be secrets); only the body's keys.
impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRequest")
            .field("verb", &self.verb)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("has_token", &self.token.is_some())
            .field("body_keys", &self.body.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ApiRequest {
    /// Decodes method, URI and body.
    ///
    /// # Errors
    /// 405 for methods Vault does not serve, 404 outside `/v1/`, 400 for a body that is not a
    /// JSON object.
    pub fn decode(
        method: &Method,
        raw_path: &str,
        raw_query: Option<&str>,
        token: Option<String>,
        body: &[u8],
    ) -> Result<Self, ApiError> {
        let query = parse_query(raw_query.unwrap_or(""));
        let listing = query.get("list").is_some_and(|v| v == "true" || v == "1");
        let verb = match method.as_str() {
            "GET" if listing => Verb::List,
            "GET" => Verb::Read,
            "HEAD" => Verb::Head,
            "LIST" => Verb::List,
            "POST" | "PUT" => Verb::Write,
            "DELETE" => Verb::Delete,
            "PATCH" => return Err(ApiError::NotImplemented("PATCH".into())),
            _ => return Err(ApiError::UnsupportedOperation),
        };
        let decoded = percent_decode(raw_path);
        let Some(rest) = decoded.strip_prefix("/v1/") else {
            return Err(ApiError::NoHandler(
                decoded.trim_start_matches('/').to_string(),
            ));
        };
        let path = normalize(rest);
        let body = if body.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => map,
                Ok(Value::Null) => Map::new(),
                Ok(_) => return Err(ApiError::bad("failed to parse JSON input: not an object")),
                // Position only: serde's messages can quote the input, which may be a secret.
                Err(e) => {
                    return Err(ApiError::bad(format!(
                        "failed to parse JSON input: invalid JSON at line {} column {}",
                        e.line(),
                        e.column()
                    )));
                }
            }
        };
        Ok(Self {
            verb,
            path,
            query,
            token: token.filter(|t| !t.is_empty()),
            body,
        })
    }

    /// A string body field; `None` when absent, null or not a string.
    pub fn str_field(&self, key: &str) -> Option<&str> {
        self.body.get(key).and_then(Value::as_str)
    }

    /// A boolean body field, also accepting `"true"`/`"false"` strings as Vault does.
    pub fn bool_field(&self, key: &str) -> Option<bool> {
        match self.body.get(key)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// An unsigned integer body field, also accepting numeric strings.
    pub fn u64_field(&self, key: &str) -> Option<u64> {
        match self.body.get(key)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// A list-of-strings field, also accepting a comma-separated string (Vault's
    /// `TypeCommaStringSlice`).
    pub fn list_field(&self, key: &str) -> Option<Vec<String>> {
        string_list(self.body.get(key)?)
    }
}

/// Reads a `TypeCommaStringSlice`: a JSON array of strings or a comma-separated string.
pub fn string_list(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(|s| s.trim().to_string()))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.into_iter().filter(|s| !s.is_empty()).collect()),
        Value::String(s) => Some(
            s.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        ),
        Value::Null => Some(Vec::new()),
        _ => None,
    }
}

fn normalize(path: &str) -> String {
    let trailing = path.ends_with('/');
    let mut out = path
        .split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    if trailing && !out.is_empty() {
        out.push('/');
    }
    out
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
            && let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_verbs_paths_and_bodies() {
        let list = Method::from_bytes(b"LIST").unwrap();
        let req = ApiRequest::decode(&list, "/v1//secret/metadata/app/", None, None, b"").unwrap();
        assert_eq!(req.verb, Verb::List);
        assert_eq!(req.path, "secret/metadata/app/");
        let req = ApiRequest::decode(
            &Method::GET,
            "/v1/secret/metadata",
            Some("list=true"),
            None,
            b"",
        )
        .unwrap();
        assert_eq!(req.verb, Verb::List);
        let req = ApiRequest::decode(
            &Method::PUT,
            "/v1/sys/unseal",
            None,
            Some(String::new()),
            br#"{"key":"ab"}"#,
        )
        .unwrap();
        assert_eq!(req.verb, Verb::Write);
        assert_eq!(req.str_field("key"), Some("ab"));
        assert!(req.token.is_none());
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            ApiRequest::decode(&Method::OPTIONS, "/v1/sys/health", None, None, b"")
                .unwrap_err()
                .status(),
            hyper::StatusCode::METHOD_NOT_ALLOWED
        );
        assert!(ApiRequest::decode(&Method::PUT, "/v1/x", None, None, b"{nope").is_err());
        assert!(ApiRequest::decode(&Method::GET, "/v2/x", None, None, b"").is_err());
    }

    #[test]
    fn comma_strings_are_lists() {
        assert_eq!(
            string_list(&Value::String("a, b,".into())),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
    }
}
