//! Connecting to a cluster the way kubectl does.
//!
//! Users already have a kubeconfig that works with kubectl; kubestrap must pick exactly the same
//! file, context and credentials, or a bootstrap could land on the wrong cluster. The rules
//! (client-go's loading rules):
//! 1. `--kubeconfig PATH`: only that file, which must exist;
//! 2. else `KUBECONFIG`: a colon-separated list, merged first-wins, missing files skipped;
//! 3. else `~/.kube/config`.
//!
//! The context is `--context` if given, else the merged `current-context`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Once;

use ::kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--kubeconfig` names a file that does not exist.
    #[error("kubeconfig {path} does not exist: check the --kubeconfig path")]
    MissingFile {
        /// The path given.
        path: PathBuf,
    },
    /// None of the candidate files exists (KUBECONFIG entries or `~/.kube/config`).
    #[error(
        "no kubeconfig found (looked at {looked_at}): pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config"
    )]
    NoKubeconfig {
        /// The candidates, joined for display.
        looked_at: String,
    },
    /// A kubeconfig file exists but could not be read or parsed.
    #[error("could not load kubeconfig {path}: {source}")]
    Load {
        /// The file.
        path: PathBuf,
        /// The parse or read error.
        #[source]
        source: Box<KubeconfigError>,
    },
    /// `--context` names a context the kubeconfig does not define.
    #[error(
        "context {context:?} is not defined in the kubeconfig (defined: {available}): check --context"
    )]
    UnknownContext {
        /// The requested context.
        context: String,
        /// The contexts that exist, comma-separated.
        available: String,
    },
    /// No `--context` and no `current-context` in the kubeconfig.
    #[error("the kubeconfig has no current-context: pass --context")]
    NoContext,
    /// The selected context could not be turned into a client configuration.
    #[error("could not build a client for context {context:?}: {source}")]
    Config {
        /// The context in use.
        context: String,
        /// The underlying error (bad cluster URL, unreadable certificate, ...).
        #[source]
        source: Box<KubeconfigError>,
    },
    /// kube-rs refused the configuration (for example a TLS setup error).
    #[error("could not create the kubernetes client: {0}")]
    Client(#[source] Box<::kube::Error>),
}

/// Installs the ring rustls crypto provider for the process, once.
///
/// The crate enables rustls without a default provider (so that kube, reqwest and vaultrs agree
/// on one), which means somebody must install it before the first TLS handshake. Calling this
/// more than once, or after somebody else installed a provider, is harmless.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error only means a provider is already installed, which is what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The kubeconfig files to merge, in priority order, following kubectl's rules.
///
/// Pure (the environment and home directory are passed in) so the rules are unit-testable.
///
/// # Errors
/// [`ClientError::MissingFile`] when `flag` names a missing file, [`ClientError::NoKubeconfig`]
/// when no candidate exists.
pub fn kubeconfig_paths(
    flag: Option<&Path>,
    env: Option<&OsStr>,
    home: Option<&Path>,
) -> Result<Vec<PathBuf>, ClientError> {
    if let Some(path) = flag {
        if !path.exists() {
            return Err(ClientError::MissingFile {
                path: path.to_owned(),
            });
        }
        return Ok(vec![path.to_owned()]);
    }
    let candidates: Vec<PathBuf> = match env {
        Some(value) if !value.is_empty() => std::env::split_paths(value)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        _ => home
            .map(|h| vec![h.join(".kube").join("config")])
            .unwrap_or_default(),
    };
    let existing: Vec<PathBuf> = candidates.iter().filter(|p| p.exists()).cloned().collect();
    if existing.is_empty() {
        let looked_at = candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ClientError::NoKubeconfig {
            looked_at: if looked_at.is_empty() {
                "nothing: no HOME".to_owned()
            } else {
                looked_at
            },
        });
    }
    Ok(existing)
}

/// Reads and merges the kubeconfig files kubectl would use (first file wins per key).
///
/// # Errors
/// See [`kubeconfig_paths`]; [`ClientError::Load`] when a file cannot be parsed.
pub fn load_kubeconfig(flag: Option<&Path>) -> Result<Kubeconfig, ClientError> {
    let env = std::env::var_os("KUBECONFIG");
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let paths = kubeconfig_paths(flag, env.as_deref(), home.as_deref())?;
    merge_files(&paths)
}

/// Builds the kube-rs configuration from explicit sources instead of the process environment:
/// `flag` as `--kubeconfig`, `env` as the value of `KUBECONFIG`, `home` as `$HOME`.
///
/// For callers that must not depend on the process environment (tests, or a CLI that
/// captured and scrubbed it at start-up).
///
/// # Errors
/// Any [`ClientError`] except [`ClientError::Client`].
pub async fn config_from_sources(
    flag: Option<&Path>,
    env: Option<&OsStr>,
    home: Option<&Path>,
    context: Option<&str>,
) -> Result<::kube::Config, ClientError> {
    let paths = kubeconfig_paths(flag, env, home)?;
    config_for_context(merge_files(&paths)?, context).await
}

fn merge_files(paths: &[PathBuf]) -> Result<Kubeconfig, ClientError> {
    let mut merged = Kubeconfig::default();
    for path in paths {
        let load = |source| ClientError::Load {
            path: path.clone(),
            source: Box::new(source),
        };
        let one = Kubeconfig::read_from(path).map_err(load)?;
        merged = merged.merge(one).map_err(load)?;
    }
    Ok(merged)
}

/// Picks the context: the requested one (which must exist) or `current-context`.
///
/// # Errors
/// [`ClientError::UnknownContext`] or [`ClientError::NoContext`].
pub fn select_context(config: &Kubeconfig, context: Option<&str>) -> Result<String, ClientError> {
    let name = match context {
        Some(c) => c.to_owned(),
        None => config
            .current_context
            .clone()
            .ok_or(ClientError::NoContext)?,
    };
    if !config.contexts.iter().any(|c| c.name == name) {
        let mut available: Vec<&str> = config.contexts.iter().map(|c| c.name.as_str()).collect();
        available.sort_unstable();
        return Err(ClientError::UnknownContext {
            context: name,
            available: if available.is_empty() {
                "none".to_owned()
            } else {
                available.join(", ")
            },
        });
    }
    Ok(name)
}

/// Builds the kube-rs configuration for a kubeconfig and context, following kubectl's rules.
///
/// # Errors
/// Any [`ClientError`] except [`ClientError::Client`].
pub async fn config(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<::kube::Config, ClientError> {
    let merged = load_kubeconfig(kubeconfig)?;
    config_for_context(merged, context).await
}

/// As [`config`], also naming the context that was selected (the requested one or the
/// kubeconfig's current-context), so messages can say which cluster they mean.
///
/// # Errors
/// As [`config`].
pub async fn config_and_context(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<(::kube::Config, String), ClientError> {
    let merged = load_kubeconfig(kubeconfig)?;
    let name = select_context(&merged, context)?;
    let config = config_for_context(merged, Some(&name)).await?;
    Ok((config, name))
}

async fn config_for_context(
    merged: Kubeconfig,
    context: Option<&str>,
) -> Result<::kube::Config, ClientError> {
    let context = select_context(&merged, context)?;
    let options = KubeConfigOptions {
        context: Some(context.clone()),
        ..KubeConfigOptions::default()
    };
    ::kube::Config::from_custom_kubeconfig(merged, &options)
        .await
        .map_err(|source| ClientError::Config {
            context,
            source: Box::new(source),
        })
}

/// Connects to the cluster a kubeconfig and context name, exactly as kubectl would choose it.
///
/// No request is sent: a client is cheap and the first call reveals whether the API answers.
///
/// # Errors
/// Any [`ClientError`]: a missing or unparsable kubeconfig, an unknown context, or a client
/// configuration kube-rs rejects.
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<::kube::Client, ClientError> {
    install_crypto_provider();
    let config = config(kubeconfig, context).await?;
    ::kube::Client::try_from(config).map_err(|e| ClientError::Client(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_CONTEXTS: &str = include_str!("../../tests/fixtures/kubeconfig/two-contexts.yaml");

    const OTHER: &str = include_str!("../../tests/fixtures/kubeconfig/third-context.yaml");

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn flag_wins_over_env_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a", TWO_CONTEXTS);
        let b = write(dir.path(), "b", OTHER);
        let got = kubeconfig_paths(Some(&a), Some(b.as_os_str()), Some(dir.path())).unwrap();
        assert_eq!(got, vec![a]);
        let missing = dir.path().join("nope");
        assert!(matches!(
            kubeconfig_paths(Some(&missing), None, None),
            Err(ClientError::MissingFile { .. })
        ));
    }

    #[test]
    fn env_list_is_split_and_missing_entries_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a", TWO_CONTEXTS);
        let b = write(dir.path(), "b", OTHER);
        let env = std::env::join_paths([a.clone(), dir.path().join("missing"), b.clone()]).unwrap();
        let got = kubeconfig_paths(None, Some(&env), Some(dir.path())).unwrap();
        assert_eq!(got, vec![a, b]);
    }

    #[test]
    fn home_default_and_nothing_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = kubeconfig_paths(None, None, Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains(".kube/config"), "{err}");
        std::fs::create_dir(dir.path().join(".kube")).unwrap();
        let cfg = write(&dir.path().join(".kube"), "config", TWO_CONTEXTS);
        assert_eq!(
            kubeconfig_paths(None, Some(OsStr::new("")), Some(dir.path())).unwrap(),
            vec![cfg]
        );
    }

    #[tokio::test]
    async fn merge_is_first_wins_and_context_selects_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a", TWO_CONTEXTS);
        let b = write(dir.path(), "b", OTHER);
        let merged = merge_files(&[a, b]).unwrap();
        // current-context and cluster "one" come from the first file.
        assert_eq!(select_context(&merged, None).unwrap(), "first");
        let cfg = config_for_context(merged.clone(), None).await.unwrap();
        assert_eq!(cfg.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(cfg.default_namespace, "apps");
        let cfg = config_for_context(merged.clone(), Some("second"))
            .await
            .unwrap();
        assert_eq!(cfg.cluster_url.to_string(), "https://127.0.0.2:7443/");
        // "third" comes from the second file and uses the first file's cluster "one".
        let cfg = config_for_context(merged.clone(), Some("third"))
            .await
            .unwrap();
        assert_eq!(cfg.cluster_url.to_string(), "https://127.0.0.1:6443/");
        let err = select_context(&merged, Some("fourth")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "context \"fourth\" is not defined in the kubeconfig (defined: first, second, third): check --context"
        );
    }

    #[tokio::test]
    async fn connect_with_explicit_file_builds_a_client() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a", TWO_CONTEXTS);
        let client = connect(Some(&a), Some("second")).await.unwrap();
        assert_eq!(client.default_namespace(), "default");
    }
}
