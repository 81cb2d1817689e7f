//! Objects that installers would have created, for tests that start "preinstalled" without
//! the add-ons' chart renderer. (`sandbox up --preinstall vault` renders the same chart from
//! `assets/charts/vault.yaml` through `addons`, the objects its helm-controller creates.)
//!
//! [`VAULT`] is what the `hashicorp/vault` chart creates in standalone mode for release
//! `vault` in namespace `vault` (server only): the `vault-0` pod comes from the
//! StatefulSet, and `vault:8200` is what `kubectl port-forward svc/vault` resolves.
//! Apply it with [`SandboxHandle::apply_manifest`](super::SandboxHandle::apply_manifest).

/// The Kubernetes objects of a standalone Vault as the chart leaves them.
pub const VAULT: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: vault
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: vault
  namespace: vault
  labels: {app.kubernetes.io/name: vault, app.kubernetes.io/instance: vault, app.kubernetes.io/managed-by: Helm, helm.sh/chart: vault-0.30.0}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: vault-config
  namespace: vault
  labels: {app.kubernetes.io/name: vault, app.kubernetes.io/instance: vault, app.kubernetes.io/managed-by: Helm, helm.sh/chart: vault-0.30.0}
data:
  extraconfig-from-values.hcl: |-
    disable_mlock = true
    ui = true
    listener "tcp" {
      tls_disable = 1
      address = "[::]:8200"
      cluster_address = "[::]:8201"
    }
    storage "file" {
      path = "/vault/data"
    }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: vault-server-binding
  labels: {app.kubernetes.io/name: vault, app.kubernetes.io/instance: vault, app.kubernetes.io/managed-by: Helm, helm.sh/chart: vault-0.30.0}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:auth-delegator}
subjects:
- {kind: ServiceAccount, name: vault, namespace: vault}
---
apiVersion: v1
kind: Service
metadata:
  name: vault-internal
  namespace: vault
  labels: {app.kubernetes.io/name: vault, app.kubernetes.io/instance: vault, app.kubernetes.io/managed-by: Helm, helm.sh/chart: vault-0.30.0, vault-internal: "true"}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app.kubernetes.io/name: vault, app.kubernetes.io/instance: vault, component: server}
  ports:
  - {name: http, port: 8200, targetPort: 8200}
  - {name: https-internal, port: 8201, targetPort: 8201}
---
apiVersion: v1
kind: Service
metadata:
  name: vault
  namespace: vault
  labels: {app.kubernetes.io/name: vault, app.kubernetes.io/instance: vault, app.kubernetes.io/managed-by: Helm, helm.sh/chart: vault-0.30.0}
spec:
  publishNotReadyAddresses: true
  selector: {app.kubernetes.io/name: vault, app.kubernetes.io/instance: vault, component: server}
  ports:
  - {name: http, port: 8200, targetPort: 8200}
  - {name: https-internal, port: 8201, targetPort: 8201}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: vault
  namespace: vault
  labels: {app.kubernetes.io/name: vault, app.kubernetes.io/instance: vault, app.kubernetes.io/managed-by: Helm, helm.sh/chart: vault-0.30.0}
spec:
  serviceName: vault-internal
  podManagementPolicy: Parallel
  replicas: 1
  updateStrategy: {type: OnDelete}
  selector:
    matchLabels: {app.kubernetes.io/name: vault, app.kubernetes.io/instance: vault, component: server}
  template:
    metadata:
      labels: {app.kubernetes.io/name: vault, app.kubernetes.io/instance: vault, component: server, helm.sh/chart: vault-0.30.0}
    spec:
      serviceAccountName: vault
      terminationGracePeriodSeconds: 10
      containers:
      - name: vault
        image: hashicorp/vault:1.19.0
        command: ["/bin/sh", "-ec"]
        args: ["cp /vault/config/extraconfig-from-values.hcl /tmp/storageconfig.hcl; /usr/local/bin/docker-entrypoint.sh vault server -config=/tmp/storageconfig.hcl"]
        env:
        - {name: VAULT_ADDR, value: "http://127.0.0.1:8200"}
        - {name: VAULT_API_ADDR, value: "http://$(POD_IP):8200"}
        ports:
        - {containerPort: 8200, name: http}
        - {containerPort: 8201, name: https-internal}
        - {containerPort: 8202, name: http-rep}
        readinessProbe:
          exec:
            command: ["/bin/sh", "-ec", "vault status -tls-skip-verify"]
          failureThreshold: 2
          initialDelaySeconds: 5
          periodSeconds: 5
        volumeMounts:
        - {name: config, mountPath: /vault/config}
        - {name: data, mountPath: /vault/data}
      volumes:
      - name: config
        configMap: {name: vault-config}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 10Gi}}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_objects_parse_as_typed_kubernetes_objects() {
        use serde::Deserialize;
        let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(VAULT)
            .map(|d| serde_json::Value::deserialize(d).expect("yaml"))
            .filter(|v| !v.is_null())
            .collect();
        assert_eq!(docs.len(), 7);
        let sts = docs
            .iter()
            .find(|d| d["kind"] == "StatefulSet")
            .expect("sts");
        let typed: k8s_openapi::api::apps::v1::StatefulSet =
            serde_json::from_value(sts.clone()).expect("typed");
        assert_eq!(
            typed.spec.expect("spec").service_name.as_deref(),
            Some("vault-internal")
        );
    }
}
