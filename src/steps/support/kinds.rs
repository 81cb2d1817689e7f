//! The custom kinds kubestrap reads and waits on (Flux, ESO), as served resources.

use ::kube::core::{ApiResource, GroupVersionKind};

/// The served resource for a custom kind (plural by the usual English rule, which holds for
/// every Flux and ESO kind kubestrap touches).
pub(crate) fn resource(group: &str, version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

/// Flux's GitRepository.
pub(crate) fn git_repository() -> ApiResource {
    resource("source.toolkit.fluxcd.io", "v1", "GitRepository")
}

/// Flux's Kustomization.
pub(crate) fn kustomization() -> ApiResource {
    resource("kustomize.toolkit.fluxcd.io", "v1", "Kustomization")
}

/// Flux's HelmRelease.
pub(crate) fn helm_release() -> ApiResource {
    resource("helm.toolkit.fluxcd.io", "v2", "HelmRelease")
}

/// ESO's ExternalSecret.
pub(crate) fn external_secret() -> ApiResource {
    resource("external-secrets.io", "v1", "ExternalSecret")
}

/// ESO's ClusterSecretStore.
pub(crate) fn cluster_secret_store() -> ApiResource {
    resource("external-secrets.io", "v1", "ClusterSecretStore")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flux_and_eso_kinds_pluralise_as_served() {
        assert_eq!(git_repository().plural, "gitrepositories");
        assert_eq!(kustomization().plural, "kustomizations");
        assert_eq!(helm_release().plural, "helmreleases");
        assert_eq!(external_secret().plural, "externalsecrets");
        assert_eq!(cluster_secret_store().plural, "clustersecretstores");
    }
}
