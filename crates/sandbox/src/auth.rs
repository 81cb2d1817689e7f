//! Authentication: the admin bearer token of the kubeconfig, and service-account JWTs
//! (ES256-signed TokenRequest tokens) that TokenReview and bearer auth both validate.
//!
//! Token values never reach logs or errors; comparisons are constant-time.

use std::path::Path;

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The service-account token issuer, as k3s sets it.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Default audiences of API-server tokens (k3s: the issuer and `k3s`).
pub const DEFAULT_AUDIENCES: &[&str] = &[ISSUER, "k3s"];

/// Failure to set up authentication material.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A key or token file could not be read or written.
    #[error("cannot access {path}: {source}; check the sandbox directory permissions")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The signing key could not be generated or parsed.
    #[error("the service-account signing key in {0} is unusable; delete it to generate a new one")]
    Key(std::path::PathBuf),
}

/// Claims of a service-account token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry (unix seconds).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Issuer.
    pub iss: String,
    /// Token id.
    pub jti: String,
    /// `system:serviceaccount:<ns>:<name>`.
    pub sub: String,
    /// Kubernetes-specific claims.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: K8sClaims,
}

/// The `kubernetes.io` claim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct K8sClaims {
    /// Namespace of the service account.
    pub namespace: String,
    /// The service account.
    pub serviceaccount: NameUid,
}

/// A name and uid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NameUid {
    /// Name.
    pub name: String,
    /// Uid.
    pub uid: String,
}

/// Why a token was rejected (safe to show: it never contains the token).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed JWS.
    #[error("invalid bearer token, token lookup failed")]
    Malformed,
    /// Signature does not verify.
    #[error("invalid bearer token, square/go-jose: error in cryptographic primitive")]
    Signature,
    /// Expired.
    #[error("invalid bearer token, service account token has expired")]
    Expired,
    /// No overlap with the accepted audiences.
    #[error(
        "invalid bearer token, token audiences {0:?} is invalid for the target audiences {1:?}"
    )]
    Audience(Vec<String>, Vec<String>),
    /// The service account is gone or was recreated.
    #[error("invalid bearer token, service account {0} has been deleted or recreated")]
    Revoked(String),
}

/// Authentication state: admin token and JWT signing key.
pub struct Authenticator {
    admin_token: String,
    key: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), AuthError> {
    crate::private_file::write(path, data).map_err(|source| AuthError::Io {
        path: path.into(),
        source,
    })
}

/// Constant-time equality for secrets.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    /// Loads the admin token and signing key from `dir`, creating them on first start.
    ///
    /// # Errors
    /// File access failures or an unusable key.
    pub fn load_or_create(dir: &Path) -> Result<Self, AuthError> {
        let rng = SystemRandom::new();
        let token_path = dir.join("token");
        let admin_token = match std::fs::read_to_string(&token_path) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let mut bytes = [0u8; 32];
                ring::rand::SecureRandom::fill(&rng, &mut bytes)
                    .map_err(|_| AuthError::Key(token_path.clone()))?;
                let t = hex::encode(bytes);
                write_private(&token_path, t.as_bytes())?;
                t
            }
        };
        let key_path = dir.join("sa.key");
        let pkcs8 = match std::fs::read(&key_path) {
            Ok(k) => k,
            Err(_) => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| AuthError::Key(key_path.clone()))?;
                write_private(&key_path, doc.as_ref())?;
                doc.as_ref().to_vec()
            }
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|_| AuthError::Key(key_path.clone()))?;
        let kid = b64url(&sha2_digest(key.public_key().as_ref())[..16]);
        Ok(Self {
            admin_token,
            key,
            rng,
            kid,
        })
    }

    /// The kubeconfig's bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Whether `token` is the admin token.
    pub fn is_admin(&self, token: &str) -> bool {
        ct_eq(token.as_bytes(), self.admin_token.as_bytes())
    }

    /// Signs a token for a service account.
    pub fn issue(&self, claims: &Claims) -> String {
        let header = serde_json::json!({"alg": "ES256", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(&serde_json::to_vec(claims).unwrap_or_default())
        );
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map(|s| b64url(s.as_ref()))
            .unwrap_or_default();
        format!("{signing_input}.{sig}")
    }

    /// Verifies signature, expiry and (when `audiences` is non-empty) audience overlap.
    /// Whether the service account still exists is the caller's check.
    ///
    /// # Errors
    /// Why the token is not valid.
    pub fn verify(
        &self,
        token: &str,
        audiences: &[String],
        now: i64,
    ) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let dec = |p: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .map_err(|_| TokenError::Malformed)
        };
        let header: Value = serde_json::from_slice(&dec(h)?).map_err(|_| TokenError::Malformed)?;
        if header["alg"] != "ES256" {
            return Err(TokenError::Signature);
        }
        let sig = dec(s)?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(format!("{h}.{c}").as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = serde_json::from_slice(&dec(c)?).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now || claims.nbf > now + 60 {
            return Err(TokenError::Expired);
        }
        if !audiences.is_empty() && !claims.aud.iter().any(|a| audiences.contains(a)) {
            return Err(TokenError::Audience(claims.aud.clone(), audiences.to_vec()));
        }
        Ok(claims)
    }
}

fn sha2_digest(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            aud: vec!["vault".into()],
            exp,
            iat: 0,
            nbf: 0,
            iss: ISSUER.into(),
            jti: "j".into(),
            sub: "system:serviceaccount:ns:sa".into(),
            kubernetes: K8sClaims {
                namespace: "ns".into(),
                serviceaccount: NameUid {
                    name: "sa".into(),
                    uid: "u".into(),
                },
            },
        }
    }

    #[test]
    fn issued_tokens_verify_and_tampering_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Authenticator::load_or_create(dir.path()).expect("auth");
        let t = a.issue(&claims(1000));
        assert_eq!(
            a.verify(&t, &["vault".into()], 10).expect("valid").sub,
            "system:serviceaccount:ns:sa"
        );
        assert_eq!(
            a.verify(&t, &[], 2000).expect_err("expired"),
            TokenError::Expired
        );
        assert!(matches!(
            a.verify(&t, &["other".into()], 10),
            Err(TokenError::Audience(..))
        ));
        let mut forged = t.clone();
        forged.replace_range(t.len() - 4.., "AAAA");
        assert!(a.verify(&forged, &[], 10).is_err());
        // A second load keeps the same key and admin token.
        let b = Authenticator::load_or_create(dir.path()).expect("reload");
        assert!(b.verify(&t, &[], 10).is_ok());
        assert!(b.is_admin(a.admin_token()));
    }
}
