//! Building Secrets in code from secret values, for the objects that must never pass through a
//! template or a manifest file (the Flux bootstrap Git credentials, the Vault keys Secret).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use secrecy::{ExposeSecret, SecretString};

/// An `Opaque` Secret holding `entries` (key => value), with no labels or annotations, so no
/// GitOps controller adopts it (seed 000). Pass it to
/// [`create_secret_if_absent`](super::apply::create_secret_if_absent).
///
/// The values are copied into the Secret's `data` (the API's wire form is base64 of these
/// bytes); drop the Secret as soon as it is sent.
#[must_use]
pub fn opaque_secret(namespace: &str, name: &str, entries: &[(&str, &SecretString)]) -> Secret {
    let data: BTreeMap<String, ByteString> = entries
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                ByteString(v.expose_secret().as_bytes().to_vec()),
            )
        })
        .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The Git credentials Secret Flux's source-controller reads for HTTPS basic auth (`username`,
/// `password`), as `flux bootstrap` creates it (GitHub tokens use the username `git`).
#[must_use]
pub fn git_basic_auth_secret(
    namespace: &str,
    name: &str,
    username: &str,
    password: &SecretString,
) -> Secret {
    let username = SecretString::from(username.to_owned());
    opaque_secret(
        namespace,
        name,
        &[("username", &username), ("password", password)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_secret_has_flux_keys_and_no_labels() {
        let s = git_basic_auth_secret(
            "flux-system",
            "flux-system",
            "git",
            &SecretString::from("ghp_x"),
        );
        assert_eq!(s.metadata.namespace.as_deref(), Some("flux-system"));
        assert!(s.metadata.labels.is_none() && s.metadata.annotations.is_none());
        let data = s.data.unwrap();
        assert_eq!(data["username"].0, b"git");
        assert_eq!(data["password"].0, b"ghp_x");
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
    }
}
