//! The storage backend: one JSON file holding the seal configuration (public) and the barrier
//! (everything else, AES-256-GCM encrypted with the root key). Written atomically.
//!
//! Because the barrier is encrypted with the Shamir-recombined root key, a restarted server
//! genuinely needs the unseal shares to read its data, and a wrong key is detected by the AEAD
//! tag instead of by a stored hash of the key.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::error::VaultError;
use super::seal::RootKey;

/// Version of the on-disk format.
const FORMAT: u32 = 1;
/// Binds ciphertexts to this use, so a barrier blob cannot be mistaken for something else.
const AAD: &[u8] = b"kubestrap-sandbox-vault-barrier/1";

/// How the root key was split at init; public, like Vault's seal configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealConfig {
    /// Number of shares handed out.
    pub secret_shares: u8,
    /// Number of shares needed to unseal.
    pub secret_threshold: u8,
    /// Initialised under an auto-unseal (static) seal: the shares are recovery shares, and
    /// the root key is stored wrapped by the seal's key.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recovery: bool,
}

const fn is_false(b: &bool) -> bool {
    !*b
}

/// Binds a wrapped root key to its use.
const KEY_AAD: &[u8] = b"kubestrap-sandbox-vault-stored-key/1";

#[derive(Clone, Serialize, Deserialize)]
struct SealedBarrier {
    nonce: String,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct StorageFile {
    format: u32,
    seal: Option<SealConfig>,
    barrier: Option<SealedBarrier>,
    /// The root key, encrypted with the static seal's key (auto-unseal's "stored keys").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stored_key: Option<SealedBarrier>,
}

/// Why the barrier could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    /// The key does not open the barrier (wrong shares).
    #[error("cipher: message authentication failed")]
    WrongKey,
    /// The barrier opened but its content is not valid state.
    #[error("vault storage barrier content is corrupt: {0}")]
    Corrupt(String),
}

/// The storage file and its last written content.
pub struct Storage {
    path: PathBuf,
    file: StorageFile,
}

impl Storage {
    /// Reads the storage file; a missing file is an uninitialised Vault.
    ///
    /// # Errors
    /// [`VaultError::Io`] when the file cannot be read, [`VaultError::Corrupt`] when it is not
    /// a storage file of this format.
    pub fn open(path: PathBuf) -> Result<Self, VaultError> {
        let file = match fs::read(&path) {
            Ok(bytes) => {
                let file: StorageFile =
                    serde_json::from_slice(&bytes).map_err(|e| VaultError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if file.format != FORMAT {
                    return Err(VaultError::Corrupt {
                        path,
                        reason: format!("unknown format {}", file.format),
                    });
                }
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StorageFile {
                format: FORMAT,
                seal: None,
                barrier: None,
                stored_key: None,
            },
            Err(source) => return Err(VaultError::Io { path, source }),
        };
        Ok(Self { path, file })
    }

    /// The seal configuration, `None` before init.
    pub fn seal_config(&self) -> Option<SealConfig> {
        self.file.seal.filter(|_| self.file.barrier.is_some())
    }

    /// Records the seal configuration and the first barrier content.
    pub fn initialize<T: Serialize>(
        &mut self,
        seal: SealConfig,
        key: &RootKey,
        state: &T,
    ) -> Result<(), VaultError> {
        self.file.seal = Some(seal);
        self.persist(key, state)
    }

    /// Records the seal configuration, the root key wrapped by the static seal's key, and the
    /// first barrier content (init under the static seal).
    pub fn initialize_stored<T: Serialize>(
        &mut self,
        seal: SealConfig,
        seal_key: &RootKey,
        key: &RootKey,
        state: &T,
    ) -> Result<(), VaultError> {
        let mut data = Zeroizing::new(key.to_vec());
        let nonce: [u8; NONCE_LEN] = rand::random();
        aead_key(seal_key)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(KEY_AAD),
                &mut *data,
            )
            .map_err(|_| VaultError::Crypto)?;
        self.file.stored_key = Some(SealedBarrier {
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(data.as_slice()),
        });
        self.initialize(seal, key, state)
    }

    /// The root key unwrapped with the static seal's key; `None` when none is stored.
    pub fn stored_key(&self, seal_key: &RootKey) -> Option<Result<RootKey, UnlockError>> {
        let wrapped = self.file.stored_key.as_ref()?;
        let nonce: Option<[u8; NONCE_LEN]> = B64
            .decode(&wrapped.nonce)
            .ok()
            .and_then(|n| n.try_into().ok());
        let Some(nonce) = nonce else {
            return Some(Err(UnlockError::Corrupt("bad stored key nonce".into())));
        };
        let Ok(data) = B64.decode(&wrapped.ciphertext) else {
            return Some(Err(UnlockError::Corrupt("bad stored key encoding".into())));
        };
        let mut data = Zeroizing::new(data);
        let Ok(plain) = aead_key(seal_key).open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(KEY_AAD),
            &mut data,
        ) else {
            return Some(Err(UnlockError::WrongKey));
        };
        let key: Option<[u8; super::seal::ROOT_KEY_LEN]> = plain.try_into().ok();
        Some(
            key.map(Zeroizing::new)
                .ok_or_else(|| UnlockError::Corrupt("stored key has the wrong length".into())),
        )
    }

    /// Decrypts the barrier with a candidate key.
    pub fn unlock<T: DeserializeOwned>(&self, key: &RootKey) -> Result<T, UnlockError> {
        let barrier = self
            .file
            .barrier
            .as_ref()
            .ok_or_else(|| UnlockError::Corrupt("no barrier".into()))?;
        let nonce: [u8; NONCE_LEN] = B64
            .decode(&barrier.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| UnlockError::Corrupt("bad nonce".into()))?;
        let mut data = Zeroizing::new(
            B64.decode(&barrier.ciphertext)
                .map_err(|_| UnlockError::Corrupt("bad ciphertext encoding".into()))?,
        );
        let plain = aead_key(key)
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut data,
            )
            .map_err(|_| UnlockError::WrongKey)?;
        // Position only: serde's messages can quote the (secret) plaintext.
        serde_json::from_slice(plain).map_err(|e| {
            UnlockError::Corrupt(format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }

    /// Encrypts `state` with `key` and writes the file atomically (temp file, fsync, rename).
    /// On failure the previous barrier stays current, so [`Storage::unlock`] still returns
    /// what is on disk.
    ///
    /// # Errors
    /// [`VaultError::Io`] when writing fails; [`VaultError::Crypto`] when encryption fails.
    pub fn persist<T: Serialize>(&mut self, key: &RootKey, state: &T) -> Result<(), VaultError> {
        let mut data =
            Zeroizing::new(serde_json::to_vec(state).map_err(|e| VaultError::Corrupt {
                path: self.path.clone(),
                reason: format!("state does not serialise: {e}"),
            })?);
        let nonce: [u8; NONCE_LEN] = rand::random();
        aead_key(key)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut *data,
            )
            .map_err(|_| VaultError::Crypto)?;
        let next = StorageFile {
            format: FORMAT,
            seal: self.file.seal,
            barrier: Some(SealedBarrier {
                nonce: B64.encode(nonce),
                ciphertext: B64.encode(data.as_slice()),
            }),
            stored_key: self.file.stored_key.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| VaultError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(&self.path, &bytes)?;
        // Only a written barrier becomes the current one, so a failed write leaves memory
        // describing what is on disk.
        self.file = next;
        Ok(())
    }
}

fn aead_key(key: &RootKey) -> LessSafeKey {
    // AES_256_GCM takes exactly ROOT_KEY_LEN bytes, so this cannot fail.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.as_slice()).expect("32-byte AES-256 key"))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VaultError::Io { path, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt as _;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("vault");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barrier_round_trips_and_rejects_a_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/vault.json");
        let key: RootKey = Zeroizing::new([7; 32]);
        let mut storage = Storage::open(path.clone()).unwrap();
        assert!(storage.seal_config().is_none());
        let config = SealConfig {
            secret_shares: 3,
            secret_threshold: 2,
            recovery: false,
        };
        storage
            .initialize(config, &key, &serde_json::json!({"hello": "s3cr3t"}))
            .unwrap();

        let raw = fs::read_to_string(&path).unwrap();
        assert!(!raw.contains("s3cr3t"), "the barrier is encrypted on disk");

        let reopened = Storage::open(path).unwrap();
        assert_eq!(reopened.seal_config(), Some(config));
        let state: serde_json::Value = reopened.unlock(&key).unwrap();
        assert_eq!(state["hello"], "s3cr3t");
        let wrong: RootKey = Zeroizing::new([8; 32]);
        assert!(matches!(
            reopened.unlock::<serde_json::Value>(&wrong),
            Err(UnlockError::WrongKey)
        ));
    }

    #[test]
    fn failed_write_keeps_the_previous_barrier() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let key: RootKey = Zeroizing::new([3; 32]);
        let mut storage = Storage::open(path).unwrap();
        let config = SealConfig {
            secret_shares: 1,
            secret_threshold: 1,
            recovery: false,
        };
        storage
            .initialize(config, &key, &serde_json::json!({"v": 1}))
            .unwrap();
        // A directory where the temp file must go makes the write fail.
        fs::create_dir(dir.path().join(".vault.json.tmp")).unwrap();
        assert!(matches!(
            storage.persist(&key, &serde_json::json!({"v": 2})),
            Err(VaultError::Io { .. })
        ));
        let current: serde_json::Value = storage.unlock(&key).unwrap();
        assert_eq!(current["v"], 1);
    }

    #[test]
    fn garbage_file_is_reported_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        fs::write(&path, b"not json").unwrap();
        assert!(matches!(
            Storage::open(path),
            Err(VaultError::Corrupt { .. })
        ));
    }
}
