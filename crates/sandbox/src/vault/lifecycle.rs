//! The seal state machine around the storage: uninitialised -> sealed -> unsealed, and the
//! unauthenticated `sys/init`, `sys/unseal`, `sys/seal-status` and `sys/health` handlers.

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::json;

use super::VaultStatus;
use super::envelope::Reply;
use super::error::{ApiError, VaultError};
use super::health::{self, SealView};
use super::request::{ApiRequest, Verb};
use super::seal::{self, RootKey, UnsealProgress};
use super::state::State;
use super::storage::{SealConfig, Storage, UnlockError};
use super::tokens;

enum Seal {
    /// The root key is unknown; shares may be arriving.
    Sealed(UnsealProgress),
    /// The root key is known and the barrier content is in memory.
    Unsealed { key: RootKey, state: Box<State> },
}

/// Storage plus what is in memory about it.
pub struct Core {
    storage: Storage,
    seal: Seal,
    /// OpenBao's static seal: the key read from the file its `seal "static"` stanza names
    /// (the mounted Secret). With it, the server unseals itself at start and `sys/init` hands
    /// out recovery keys.
    static_key: Option<RootKey>,
}

impl Core {
    /// Opens the storage; a Vault always starts sealed.
    pub fn open(path: PathBuf) -> Result<Self, VaultError> {
        Ok(Self {
            storage: Storage::open(path)?,
            seal: Seal::Sealed(UnsealProgress::default()),
            static_key: None,
        })
    }

    /// Configures the seal as the server's configuration file does at start: the static
    /// seal's key, or `None` for Shamir.
    pub fn set_static_key(&mut self, key: Option<RootKey>) {
        self.static_key = key;
    }

    /// Whether the static seal is configured.
    pub fn has_static_key(&self) -> bool {
        self.static_key.is_some()
    }

    /// What a starting server under the static seal does: unwraps its stored root key with
    /// the seal's key and unseals (`core: unsealed with stored key`). Nothing happens under
    /// Shamir, before init, or when the key does not open the stored one (it stays sealed,
    /// as OpenBao logs `failed to unseal core`).
    pub fn unseal_with_stored_key(&mut self) {
        let Some(seal_key) = &self.static_key else {
            return;
        };
        if !matches!(self.seal, Seal::Sealed(_)) {
            return;
        }
        let Some(Ok(key)) = self.storage.stored_key(seal_key) else {
            return;
        };
        if let Ok(state) = self.storage.unlock::<State>(&key) {
            self.seal = Seal::Unsealed {
                key,
                state: Box::new(state),
            };
        }
    }

    /// Initialised and sealed flags.
    pub fn status(&self) -> VaultStatus {
        VaultStatus {
            initialized: self.storage.seal_config().is_some(),
            sealed: matches!(self.seal, Seal::Sealed(_)),
        }
    }

    fn view(&self) -> SealView<'_> {
        let config = self.storage.seal_config();
        match &self.seal {
            Seal::Sealed(progress) => SealView {
                config,
                sealed: true,
                progress: progress.progress(),
                nonce: progress.nonce(),
                cluster: None,
                static_seal: self.static_key.is_some(),
            },
            Seal::Unsealed { state, .. } => SealView {
                config,
                sealed: false,
                progress: 0,
                nonce: "",
                cluster: Some((&state.cluster_name, &state.cluster_id)),
                static_seal: self.static_key.is_some(),
            },
        }
    }

    /// Forgets the root key and the decrypted state: sealed again, storage untouched.
    pub fn seal(&mut self) {
        self.seal = Seal::Sealed(UnsealProgress::default());
    }

    /// The decrypted state, or 503 `Vault is sealed`.
    pub fn unsealed(&mut self) -> Result<&mut State, ApiError> {
        match &mut self.seal {
            Seal::Unsealed { state, .. } => Ok(state),
            Seal::Sealed(_) => Err(ApiError::Sealed),
        }
    }

    /// Writes the state through the barrier. When the write fails, the in-memory state is
    /// reloaded from storage, so the failed change is not served as if it were kept.
    pub fn persist(&mut self) -> Result<(), ApiError> {
        match &mut self.seal {
            Seal::Unsealed { key, state } => {
                state.tokens.purge_expired(tokens::now());
                match self.storage.persist(key, &**state) {
                    Ok(()) => Ok(()),
                    Err(err) => {
                        if let Ok(on_disk) = self.storage.unlock::<State>(key) {
                            **state = on_disk;
                        }
                        Err(err.into())
                    }
                }
            }
            Seal::Sealed(_) => Err(ApiError::Sealed),
        }
    }

    /// Serves the unauthenticated seal endpoints; `None` when `path` is not one of them.
    pub fn handle_unauthenticated(
        &mut self,
        req: &ApiRequest,
        path: &str,
    ) -> Option<Result<Reply, ApiError>> {
        Some(match (path, req.verb) {
            ("sys/init", Verb::Read) => Ok(Reply::Raw(
                hyper::StatusCode::OK,
                json!({ "initialized": self.status().initialized }),
            )),
            ("sys/init", Verb::Write) => self.init(req),
            ("sys/seal-status", Verb::Read) => Ok(Reply::Raw(
                hyper::StatusCode::OK,
                health::seal_status(self.view()),
            )),
            ("sys/unseal", Verb::Write) => self.unseal(req),
            ("sys/health", _) => health::health(req, self.view()),
            // `SealWithRequest` returns early on a sealed core: 204, token or not.
            ("sys/seal", Verb::Write) if self.status().sealed => Ok(Reply::NoContent),
            ("sys/init" | "sys/seal-status" | "sys/unseal", _) => {
                Err(ApiError::UnsupportedOperation)
            }
            _ => return None,
        })
    }

    fn init(&mut self, req: &ApiRequest) -> Result<Reply, ApiError> {
        if self.status().initialized {
            return Err(ApiError::bad("Vault is already initialized"));
        }
        if self.static_key.is_some() {
            return self.init_static(req);
        }
        let recovery = ["recovery_shares", "recovery_threshold"]
            .iter()
            .any(|k| req.u64_field(k).is_some_and(|n| n > 0))
            || req
                .list_field("recovery_pgp_keys")
                .is_some_and(|k| !k.is_empty());
        if recovery {
            return Err(ApiError::bad(
                "parameters specific to auto unseal seals present",
            ));
        }
        if req.list_field("pgp_keys").is_some_and(|k| !k.is_empty())
            || req
                .str_field("root_token_pgp_key")
                .is_some_and(|k| !k.is_empty())
        {
            return Err(ApiError::NotImplemented("PGP-encrypted init output".into()));
        }
        if req.u64_field("stored_shares").is_some_and(|n| n > 0) {
            return Err(ApiError::bad(
                "stored keys are not supported by the current seal type",
            ));
        }
        let (shares, threshold) = seal::validate_config(
            req.u64_field("secret_shares").unwrap_or(0),
            req.u64_field("secret_threshold").unwrap_or(0),
        )?;
        let (key, parts) = seal::generate(shares, threshold);
        let (state, root_token) = State::initial(tokens::now());
        self.storage.initialize(
            SealConfig {
                secret_shares: shares,
                secret_threshold: threshold,
                recovery: false,
            },
            &key,
            &state,
        )?;
        self.seal = Seal::Sealed(UnsealProgress::default());
        let keys: Vec<String> = parts.iter().map(|p| hex::encode(p.as_slice())).collect();
        let keys_base64: Vec<String> = parts
            .iter()
            .map(|p| base64::engine::general_purpose::STANDARD.encode(p.as_slice()))
            .collect();
        Ok(Reply::Raw(
            hyper::StatusCode::OK,
            json!({ "keys": keys, "keys_base64": keys_base64, "root_token": root_token }),
        ))
    }

    /// `sys/init` under the static seal, as OpenBao 2.7.2 answers it: `secret_shares` and
    /// `secret_threshold` are refused (400); `recovery_shares`/`recovery_threshold` (0 by
    /// default: no recovery keys) split a recovery key; the root key is stored wrapped by the
    /// seal's key, and the server is unsealed when init returns.
    fn init_static(&mut self, req: &ApiRequest) -> Result<Reply, ApiError> {
        if ["secret_shares", "secret_threshold"]
            .iter()
            .any(|k| req.u64_field(k).is_some_and(|n| n > 0))
        {
            return Err(ApiError::bad(
                "parameters secret_shares,secret_threshold not applicable to seal type static",
            ));
        }
        let Some(seal_key) = self.static_key.clone() else {
            return Err(ApiError::Internal("no static seal key".into()));
        };
        let recovery_shares = req.u64_field("recovery_shares").unwrap_or(0);
        let recovery_threshold = req.u64_field("recovery_threshold").unwrap_or(0);
        let recovery = if recovery_shares == 0 {
            None
        } else {
            Some(seal::validate_config(recovery_shares, recovery_threshold)?)
        };
        let (shares, threshold) = recovery.unwrap_or((0, 0));
        let (key, _) = seal::generate(1, 1);
        let (state, root_token) = State::initial(tokens::now());
        self.storage.initialize_stored(
            SealConfig {
                secret_shares: shares,
                secret_threshold: threshold,
                recovery: true,
            },
            &seal_key,
            &key,
            &state,
        )?;
        self.seal = Seal::Unsealed {
            key,
            state: Box::new(state),
        };
        let mut body = json!({ "keys": [], "keys_base64": [], "root_token": root_token });
        if let Some((shares, threshold)) = recovery {
            // The recovery key authorises operations such as generate-root; the emulator
            // implements none of them, so only its shares are handed out.
            let (_, parts) = seal::generate(shares, threshold);
            body["recovery_keys"] = json!(
                parts
                    .iter()
                    .map(|p| hex::encode(p.as_slice()))
                    .collect::<Vec<_>>()
            );
            body["recovery_keys_base64"] = json!(
                parts
                    .iter()
                    .map(|p| base64::engine::general_purpose::STANDARD.encode(p.as_slice()))
                    .collect::<Vec<_>>()
            );
        }
        Ok(Reply::Raw(hyper::StatusCode::OK, body))
    }

    fn unseal(&mut self, req: &ApiRequest) -> Result<Reply, ApiError> {
        let Some(config) = self.storage.seal_config() else {
            return Err(ApiError::bad("Vault is not initialized"));
        };
        // Go decodes untagged JSON fields case-insensitively.
        let field = |name: &str| {
            req.body
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        };
        let reset = field("reset")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let key = field("key")
            .and_then(serde_json::Value::as_str)
            .filter(|k| !k.is_empty());
        let status = |core: &Self| {
            Ok(Reply::Raw(
                hyper::StatusCode::OK,
                health::seal_status(core.view()),
            ))
        };
        let progress = match &mut self.seal {
            Seal::Unsealed { .. } if reset => return Err(ApiError::bad("vault is unsealed")),
            Seal::Unsealed { .. } => return status(self),
            Seal::Sealed(progress) => progress,
        };
        if reset {
            progress.reset();
            return status(self);
        }
        let Some(key) = key else {
            return Err(ApiError::bad(
                "'key' must be specified in request body as JSON, or 'reset' set to true",
            ));
        };
        progress.submit(seal::decode_share(key)?);
        if progress.progress() < usize::from(config.secret_threshold) {
            return status(self);
        }
        let parts = progress.take();
        let root_key: RootKey = seal::combine(config.secret_threshold, &parts)
            .ok_or_else(|| ApiError::bad("failed to combine the unseal key shares"))?;
        match self.storage.unlock::<State>(&root_key) {
            Ok(state) => {
                self.seal = Seal::Unsealed {
                    key: root_key,
                    state: Box::new(state),
                };
                status(self)
            }
            Err(UnlockError::WrongKey) => Err(ApiError::bad(UnlockError::WrongKey.to_string())),
            Err(other @ UnlockError::Corrupt(_)) => Err(ApiError::Internal(other.to_string())),
        }
    }
}
