//! The kubeconfig the sandbox writes: one cluster/context/user named `default`, like k3s.

use std::path::Path;

use base64::Engine;

/// Renders a kubeconfig for `server` trusting `ca_pem`, authenticating with `token`.
pub fn render(server: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
preferences: {{}}
users:
- name: default
  user:
    token: {token}
"
    )
}

/// Writes the kubeconfig with mode 0600 (it holds the admin token).
///
/// # Errors
/// The file cannot be written.
pub fn write(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_a_kube_rs_kubeconfig() {
        let s = render(
            "https://127.0.0.1:6443",
            "-----BEGIN CERTIFICATE-----\n",
            "tok",
        );
        let k = kube::config::Kubeconfig::from_yaml(&s).expect("valid kubeconfig");
        assert_eq!(k.current_context.as_deref(), Some("default"));
        assert_eq!(k.clusters[0].name, "default");
    }
}
