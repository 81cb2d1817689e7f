//! OpenBao's static seal as the Vault pod's process meets it at start: the server's
//! configuration (the chart's `<fullname>-config` ConfigMap, `server.standalone.config`) names a
//! key file in a `seal "static"` stanza, and the process reads that file from its container's
//! filesystem, i.e. from the Secret volume mounted there, with the container's uid and groups.
//!
//! Measured with OpenBao 2.7.2: the file holds 32 bytes raw, or their hex or base64 form (a
//! trailing newline is refused); a missing or unreadable file or a wrong length stops the
//! server at start (`Error configuring seal "static": …`).

use base64::Engine as _;
use serde_json::Value;
use zeroize::Zeroizing;

use super::kit;
use crate::kubelet;
use crate::server::Shared;

/// The AES-256 key the static seal reads.
pub type SealKey = Zeroizing<[u8; 32]>;

/// What the pod's server configuration says about its seal.
pub enum PodSeal {
    /// No `seal` stanza: Shamir.
    Shamir,
    /// `seal "static"`: its key id and the key as the process reads it, or why the server
    /// does not start (never the key).
    Static {
        /// `current_key_id`.
        key_id: String,
        /// The key, or the server's start error.
        key: Result<SealKey, String>,
    },
}

/// Decodes a key file as OpenBao does: 32 raw bytes, else hex, else standard base64, each
/// exactly 32 bytes with nothing around it.
pub fn decode_key(bytes: &[u8]) -> Option<SealKey> {
    if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
        return Some(Zeroizing::new(raw));
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let decoded = Zeroizing::new(
        hex::decode(text)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())?,
    );
    <[u8; 32]>::try_from(decoded.as_slice())
        .ok()
        .map(Zeroizing::new)
}

/// The seal of the Vault server in `pod` (container 0), from its chart's ConfigMap and its
/// mounted volumes.
pub fn pod_seal(shared: &Shared, pod: &Value) -> PodSeal {
    let ns = kit::meta(pod, "namespace");
    let owner = pod["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|o| o.iter().find(|r| r["kind"] == "StatefulSet"))
        .and_then(|r| r["name"].as_str())
        .unwrap_or_default();
    let Some(config) = kit::get(shared, "/configmaps", ns, &format!("{owner}-config")) else {
        return PodSeal::Shamir;
    };
    let Some(text) = config["data"]["extraconfig-from-values.hcl"].as_str() else {
        return PodSeal::Shamir;
    };
    let Ok(parsed) = hcl::from_str::<Value>(text) else {
        return PodSeal::Shamir;
    };
    let stanza = &parsed["seal"]["static"];
    if !stanza.is_object() {
        return PodSeal::Shamir;
    }
    let key_id = stanza["current_key_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let key = match stanza["current_key"].as_str() {
        Some(url) => read_key(shared, pod, url),
        None => Err("Error configuring seal \"static\": current_key is required".to_string()),
    };
    PodSeal::Static { key_id, key }
}

/// Reads `url` (`file:///path`) from the container's filesystem: a file of a mounted Secret
/// volume, readable by the container's process.
fn read_key(shared: &Shared, pod: &Value, url: &str) -> Result<SealKey, String> {
    let fail = |why: String| format!("Error configuring seal \"static\": {why}");
    let Some(path) = url.strip_prefix("file://") else {
        return Err(fail(format!(
            "unsupported key url {url:?} in the sandbox (use file://)"
        )));
    };
    let ns = kit::meta(pod, "namespace");
    let container = &pod["spec"]["containers"][0];
    let not_found = || {
        fail(format!(
            "error reading file at {url}: open {path}: no such file or directory"
        ))
    };
    let mounts = container["volumeMounts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mount = mounts
        .iter()
        .filter(|m| {
            m["mountPath"].as_str().is_some_and(|mp| {
                let mp = mp.trim_end_matches('/');
                path.strip_prefix(mp)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
        })
        .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len))
        .ok_or_else(not_found)?;
    let volume = mount["name"].as_str().unwrap_or_default();
    let secret_name = pod["spec"]["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == volume))
        .and_then(|v| v["secret"]["secretName"].as_str())
        .ok_or_else(not_found)?;
    let secret = kit::get(shared, "/secrets", ns, secret_name).ok_or_else(not_found)?;
    let file = kubelet::volume_files(pod, container, volume, Some(&secret))
        .into_iter()
        .find(|f| f.path == path)
        .ok_or_else(not_found)?;
    let readable = match kubelet::process(pod, container) {
        Ok(Some(p)) => kubelet::can_read(&p, &file),
        Ok(None) => true,
        Err(e) => return Err(e),
    };
    if !readable {
        return Err(fail(format!(
            "error reading file at {url}: open {path}: permission denied"
        )));
    }
    let encoded = secret["data"][file.key.as_str()]
        .as_str()
        .unwrap_or_default();
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap_or_default(),
    );
    decode_key(&bytes).ok_or_else(|| {
        fail(
            "unknown encoding for AES-256 key: must be either a raw, hex, or base64-encoded"
                .to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encodings OpenBao 2.7.2 accepted and refused in its key file.
    #[test]
    fn keys_decode_as_openbao_reads_them() {
        let raw = [7u8; 32];
        assert!(decode_key(&raw).is_some());
        let hex_form = hex::encode(raw);
        assert!(decode_key(hex_form.as_bytes()).is_some());
        assert!(decode_key(format!("{hex_form}\n").as_bytes()).is_none());
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(
            decode_key(b64.as_bytes()).map(|k| *k),
            Some(raw),
            "base64 decodes to the same key"
        );
        assert!(decode_key(&[7u8; 16]).is_none());
    }
}
