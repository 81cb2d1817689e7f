//! The Shamir seal: a random 32-byte root key split into shares at init, and the unseal
//! progress that collects shares until the threshold is reached and recombines them.
//!
//! The recombined key is only proven right by opening the storage barrier with it (an AEAD tag
//! check in [`super::storage`]); nothing on disk lets anyone verify a key without the shares.

use base64::Engine as _;
use blahaj::{Share, Sharks};
use zeroize::Zeroizing;

use super::error::ApiError;

/// Length of the root key, which is also the barrier's AES-256-GCM key.
pub const ROOT_KEY_LEN: usize = 32;

/// The root key in memory; wiped when dropped.
pub type RootKey = Zeroizing<[u8; ROOT_KEY_LEN]>;

/// One unseal key share in its binary form (x coordinate first, then the y bytes).
pub type ShareBytes = Zeroizing<Vec<u8>>;

/// Checks `secret_shares`/`secret_threshold` as Vault's `validateSealConfig` does.
pub fn validate_config(shares: u64, threshold: u64) -> Result<(u8, u8), ApiError> {
    let invalid = |why: &str| ApiError::bad(format!("invalid seal configuration: {why}"));
    if shares < 1 {
        return Err(invalid("shares must be at least one"));
    }
    if threshold < 1 {
        return Err(invalid("threshold must be at least one"));
    }
    if shares > 1 && threshold == 1 {
        return Err(invalid(
            "threshold must be greater than one for multiple shares",
        ));
    }
    if shares > 255 {
        return Err(invalid("shares must be less than 256"));
    }
    if threshold > shares {
        return Err(invalid("threshold cannot be larger than shares"));
    }
    // Both fit: shares <= 255 and threshold <= shares.
    Ok((shares as u8, threshold as u8))
}

/// Generates a fresh random root key and splits it into `shares` shares, any `threshold` of
/// which recombine it.
pub fn generate(shares: u8, threshold: u8) -> (RootKey, Vec<ShareBytes>) {
    let key: RootKey = Zeroizing::new(rand::random());
    let parts = Sharks(threshold)
        .dealer(key.as_slice())
        .take(usize::from(shares))
        .map(|share| Zeroizing::new(Vec::from(&share)))
        .collect();
    (key, parts)
}

/// Recombines shares into a candidate root key. `None` when the shares are malformed or do
/// not have the key's length; a wrong but well-formed set yields a wrong key, which the barrier
/// rejects.
pub fn combine(threshold: u8, parts: &[ShareBytes]) -> Option<RootKey> {
    let shares: Vec<Share> = parts
        .iter()
        .map(|bytes| Share::try_from(bytes.as_slice()))
        .collect::<Result<_, _>>()
        .ok()?;
    let secret = Zeroizing::new(Sharks(threshold).recover(&shares).ok()?);
    let key: [u8; ROOT_KEY_LEN] = secret.as_slice().try_into().ok()?;
    Some(Zeroizing::new(key))
}

/// The shortest share `sys/unseal` accepts (the barrier's minimum key length).
const MIN_SHARE_LEN: usize = 16;
/// The longest: the root key plus Shamir's one byte of overhead (the x coordinate).
const MAX_SHARE_LEN: usize = ROOT_KEY_LEN + 1;

/// Decodes a share as `sys/unseal` accepts it: hex first, then standard base64, and checks its
/// length as Vault's `unsealFragment` does before counting it towards the threshold.
pub fn decode_share(text: &str) -> Result<ShareBytes, ApiError> {
    let text = text.trim();
    let bytes = match hex::decode(text) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(_) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Zeroizing::new)
            .map_err(|_| ApiError::bad("'key' must be a valid hex or base64 string"))?,
    };
    if bytes.len() < MIN_SHARE_LEN {
        return Err(ApiError::bad(format!(
            "invalid key: key is shorter than minimum {MIN_SHARE_LEN} bytes"
        )));
    }
    if bytes.len() > MAX_SHARE_LEN {
        return Err(ApiError::bad(format!(
            "invalid key: key is longer than maximum {MAX_SHARE_LEN} bytes"
        )));
    }
    Ok(bytes)
}

/// Shares submitted so far towards one unseal attempt.
#[derive(Default)]
pub struct UnsealProgress {
    nonce: String,
    parts: Vec<ShareBytes>,
}

impl UnsealProgress {
    /// How many distinct shares have been submitted.
    pub fn progress(&self) -> usize {
        self.parts.len()
    }

    /// The attempt's nonce: empty when no attempt is in progress.
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// Adds a share; a share already submitted is ignored, as Vault does.
    pub fn submit(&mut self, share: ShareBytes) {
        if self.parts.is_empty() {
            self.nonce = uuid::Uuid::new_v4().to_string();
        }
        if !self.parts.iter().any(|p| p.as_slice() == share.as_slice()) {
            self.parts.push(share);
        }
    }

    /// Takes the collected shares and resets the attempt.
    pub fn take(&mut self) -> Vec<ShareBytes> {
        self.nonce.clear();
        std::mem::take(&mut self.parts)
    }

    /// Forgets every submitted share.
    pub fn reset(&mut self) {
        self.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shamir_round_trip_with_any_threshold_subset() {
        let (key, parts) = generate(5, 3);
        assert_eq!(parts.len(), 5);
        let subset = vec![parts[4].clone(), parts[0].clone(), parts[2].clone()];
        let back = combine(3, &subset).expect("three shares recombine");
        assert_eq!(back.as_slice(), key.as_slice());
    }

    #[test]
    fn too_few_or_wrong_shares_do_not_give_the_key() {
        let (key, parts) = generate(5, 3);
        assert!(combine(3, &parts[..2]).is_none());
        let (_, other) = generate(5, 3);
        let mixed = vec![parts[0].clone(), parts[1].clone(), other[2].clone()];
        let wrong = combine(3, &mixed).expect("well-formed shares combine to something");
        assert_ne!(wrong.as_slice(), key.as_slice());
    }

    #[test]
    fn single_share_is_accepted_as_hex_and_base64() {
        let (key, parts) = generate(1, 1);
        let hex_form = hex::encode(parts[0].as_slice());
        let b64_form = base64::engine::general_purpose::STANDARD.encode(parts[0].as_slice());
        for form in [hex_form, b64_form] {
            let decoded = decode_share(&form).expect("decodes");
            let back = combine(1, &[decoded]).expect("recombines");
            assert_eq!(back.as_slice(), key.as_slice());
        }
        assert!(decode_share("not a key!").is_err());
    }

    /// Found by the differential test against OpenBao: a short key counted towards the
    /// threshold (200, progress 1) and spoiled the next unseal attempt.
    #[test]
    fn unseal_keys_of_the_wrong_length_are_refused_before_counting() {
        let short = decode_share("deadbeef").expect_err("short");
        assert_eq!(
            short.to_string(),
            "invalid key: key is shorter than minimum 16 bytes"
        );
        let long = decode_share(&hex::encode([7u8; 34])).expect_err("long");
        assert_eq!(
            long.to_string(),
            "invalid key: key is longer than maximum 33 bytes"
        );
        assert!(decode_share(&hex::encode([7u8; 16])).is_ok());
        assert!(decode_share(&hex::encode([7u8; 33])).is_ok());
    }

    #[test]
    fn seal_config_is_validated_like_vault() {
        assert_eq!(validate_config(5, 3), Ok((5, 3)));
        assert!(validate_config(0, 0).is_err());
        assert!(validate_config(3, 1).is_err());
        assert!(validate_config(2, 3).is_err());
        assert!(validate_config(256, 3).is_err());
    }

    #[test]
    fn progress_ignores_duplicates_and_resets() {
        let mut progress = UnsealProgress::default();
        assert_eq!(progress.nonce(), "");
        progress.submit(Zeroizing::new(vec![1, 2]));
        progress.submit(Zeroizing::new(vec![1, 2]));
        assert_eq!(progress.progress(), 1);
        assert!(!progress.nonce().is_empty());
        progress.reset();
        assert_eq!(progress.progress(), 0);
        assert_eq!(progress.nonce(), "");
    }
}
