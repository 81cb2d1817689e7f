//! Lazily-built Kubernetes client shared by all steps of a run.
//!
//! Built on first use, so `plan` on a cluster that does not exist yet (k3s not installed) and
//! steps that never talk to the API do not fail early. Kubeconfig selection follows kubectl,
//! through [`super::client::connect`]: `--kubeconfig`, else `KUBECONFIG`
//! (a colon-separated list), else `~/.kube/config`; then `--context`, else the current context.

use std::path::PathBuf;

use tokio::sync::OnceCell;

/// Why the Kubernetes client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KubeAccessError {
    /// The kubeconfig could not be found, read or parsed, or names no usable context.
    #[error("failed to read kubeconfig {}: {source}; pass --kubeconfig or set KUBECONFIG", .path.as_deref().map_or_else(|| "(KUBECONFIG or ~/.kube/config)".to_owned(), |p| p.display().to_string()))]
    Kubeconfig {
        /// The file, when one was named.
        path: Option<PathBuf>,
        /// The toolkit's error, which says which file or context is wrong.
        #[source]
        source: super::client::ClientError,
    },
    /// The client could not be created from the configuration.
    #[error("failed to create a Kubernetes client: {0}")]
    Client(#[source] ::kube::Error),
}

/// Where the cluster's API is, and the client once built.
#[derive(Default)]
pub struct KubeAccess {
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    client: OnceCell<::kube::Client>,
    endpoint: std::sync::OnceLock<super::Endpoint>,
}

impl std::fmt::Debug for KubeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeAccess")
            .field("kubeconfig", &self.kubeconfig)
            .field("context", &self.context)
            .field("connected", &self.client.initialized())
            .finish()
    }
}

impl KubeAccess {
    /// Access through `kubeconfig` (or kubectl's defaults when `None`) and `context`.
    #[must_use]
    pub fn new(kubeconfig: Option<PathBuf>, context: Option<String>) -> Self {
        Self {
            kubeconfig,
            context,
            client: OnceCell::new(),
            endpoint: std::sync::OnceLock::new(),
        }
    }

    /// Access through an existing client (tests, or a client built elsewhere).
    #[must_use]
    pub fn with_client(client: ::kube::Client) -> Self {
        Self {
            kubeconfig: None,
            context: None,
            client: OnceCell::new_with(Some(client)),
            endpoint: std::sync::OnceLock::new(),
        }
    }

    /// The kubeconfig path in use, when one was named explicitly.
    #[must_use]
    pub fn kubeconfig(&self) -> Option<&std::path::Path> {
        self.kubeconfig.as_deref()
    }

    /// The client, built on first call.
    ///
    /// # Errors
    /// [`KubeAccessError`] when the kubeconfig is unreadable or names no usable cluster.
    pub async fn client(&self) -> Result<::kube::Client, KubeAccessError> {
        self.client.get_or_try_init(|| self.build()).await.cloned()
    }

    /// The API server and context the client was built for, once it was (for messages that
    /// say where a request went).
    #[must_use]
    pub fn endpoint(&self) -> Option<&super::Endpoint> {
        self.endpoint.get()
    }

    /// Where this access points, for messages: the endpoint once known, else the kubeconfig
    /// and context as named.
    #[must_use]
    pub fn describe(&self) -> String {
        if let Some(e) = self.endpoint() {
            return e.to_string();
        }
        let file = self.kubeconfig.as_ref().map_or_else(
            || "KUBECONFIG or ~/.kube/config".to_owned(),
            |p| p.display().to_string(),
        );
        match &self.context {
            Some(c) => format!("the cluster of context {c:?} in {file}"),
            None => format!("the cluster of the current context in {file}"),
        }
    }

    async fn build(&self) -> Result<::kube::Client, KubeAccessError> {
        use super::client::{config_and_context, install_crypto_provider};
        install_crypto_provider();
        let kubeconfig_error = |source| KubeAccessError::Kubeconfig {
            path: self.kubeconfig.clone(),
            source,
        };
        let (config, context) =
            config_and_context(self.kubeconfig.as_deref(), self.context.as_deref())
                .await
                .map_err(kubeconfig_error)?;
        let _ = self.endpoint.set(super::Endpoint {
            server: config.cluster_url.to_string(),
            context,
            kubeconfig: self.kubeconfig.clone(),
        });
        ::kube::Client::try_from(config).map_err(KubeAccessError::Client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r"
apiVersion: v1
kind: Config
current-context: a
clusters:
- name: c
  cluster:
    server: http://127.0.0.1:9
contexts:
- name: a
  context: {cluster: c, user: u, namespace: ns-a}
- name: b
  context: {cluster: c, user: u, namespace: ns-b}
users:
- name: u
  user: {token: not-a-real-token}
";

    #[tokio::test]
    async fn context_selection_follows_kubectl() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, KUBECONFIG).unwrap();
        let current = KubeAccess::new(Some(path.clone()), None)
            .client()
            .await
            .unwrap();
        assert_eq!(current.default_namespace(), "ns-a");
        let chosen = KubeAccess::new(Some(path), Some("b".into()))
            .client()
            .await
            .unwrap();
        assert_eq!(chosen.default_namespace(), "ns-b");
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_is_a_clear_error() {
        let Err(err) = KubeAccess::new(Some("/nonexistent/kubeconfig".into()), None)
            .client()
            .await
        else {
            panic!("a missing kubeconfig must fail");
        };
        assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");
        assert!(err.to_string().contains("pass --kubeconfig"), "{err}");
    }
}
