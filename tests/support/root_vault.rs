//! Vault as the bootstrap left it, for end-to-end assertions: through a port-forward to the
//! chart's Service, with the root token from the keys Secret (`#[path]`-included by the test
//! files that need it).

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kubestrap::kube::portforward::{self, PortForward};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

/// A root client of Vault `namespace/service`; keep the forward alive while using it.
pub async fn root_vault(
    client: &kube::Client,
    namespace: &str,
    service: &str,
    keys_secret: &str,
) -> (VaultClient, PortForward) {
    let keys: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let keys = keys.get(keys_secret).await.unwrap();
    let token = String::from_utf8(keys.data.unwrap()["root-token"].0.clone()).unwrap();
    let forward = portforward::to_service(client, namespace, service, 8200)
        .await
        .unwrap();
    let settings = VaultClientSettingsBuilder::default()
        .address(forward.http_url())
        .token(token)
        .build()
        .unwrap();
    (VaultClient::new(settings).unwrap(), forward)
}
