//! Runs the auto-unsealer workload kubestrap deploys (`phases/1-infrastructure/
//! vault-auto-unseal.yaml`) as its container would run on a real node: in every Running pod of
//! the Deployment labelled `app.kubernetes.io/name: vault-unsealer`, every `UNSEAL_INTERVAL`
//! seconds (fractions allowed) the loop
//!
//! 1. checks that it can read each `unseal-key-*` file of its Secret volume — as the uid, gid
//!    and groups the kubelet gives its process, against the owner, group and mode the kubelet
//!    gives the files ([`crate::kubelet`]); an unreadable key is printed and the container exits
//!    1, so the pod shows `CrashLoopBackOff` and `kubectl logs` says why ([`crate::runtime`]);
//! 2. reads Vault's seal status at `BAO_ADDR`, else `VAULT_ADDR` (cluster DNS; an unreachable
//!    Vault is printed once per outage);
//! 3. when Vault is initialised and sealed, submits the key files through `sys/unseal` with
//!    the CLI named by `UNSEAL_CLI` (`vault` when unset, as older manifests ran it) until Vault
//!    reports unsealed, printing what the CLI prints on failure; a round that leaves Vault
//!    sealed is retried after 5 seconds.
//!
//! The CLI behaves as in the container's image ([`kubelet::image_clis`]): a CLI the image does
//! not have fails as busybox `sh` reports it (`bao` in hashicorp/vault: `sh: bao: not found`),
//! and the CLI reads its own address variable — HashiCorp's `vault` only `VAULT_ADDR`, OpenBao's
//! `bao` (also under the name `vault` in its image) `BAO_ADDR`, falling back to `VAULT_ADDR` —
//! defaulting to `https://127.0.0.1:8200`, which nothing in the unsealer's pod serves.
//!
//! Its lines are the script's lines. The unsealer needs no API access (the kubelet mounts its
//! keys), so it makes no API request. No unsealer, no unseal: Vault stays sealed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{Value, json};

use super::kit;
use super::vault::{VaultCallError, VaultHttp, vault_errors};
use crate::controllers::{Action, Controller};
use crate::kubelet::{self, VolumeFile};
use crate::server::Shared;
use crate::store::{ObjectKey, StoreEvent};

const DEPLOY: &str = "apps/deployments";
const LABEL: &str = "vault-unsealer";
/// The glob the script submits keys from (relative to the keys volume).
const KEY_PREFIX: &str = "unseal-key-";

/// The simulated unsealer loop.
pub struct Unsealer {
    vault: VaultHttp,
    /// Per pod uid: whether the last poll reached Vault (the script prints an outage once).
    reachable: Mutex<HashMap<String, bool>>,
    /// Per pod uid: when the script polls again after an unseal round that failed.
    retry_at: Mutex<HashMap<String, Instant>>,
}

/// How long the script sleeps after an unseal round that left Vault sealed.
const FAILED_ROUND_PAUSE: Duration = Duration::from_secs(5);

impl Unsealer {
    /// An unsealer talking to `vault`.
    pub fn new(vault: VaultHttp) -> Self {
        Self {
            vault,
            reachable: Mutex::default(),
            retry_at: Mutex::default(),
        }
    }
}

fn env(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_string))
}

/// The Secret volume the container mounts its keys from: `(volume name, secret name)`.
fn keys_volume(pod: &Value, container: &Value) -> Option<(String, String)> {
    let mounts = container["volumeMounts"].as_array()?;
    pod["spec"]["volumes"].as_array()?.iter().find_map(|v| {
        let secret = v["secret"]["secretName"].as_str()?;
        let name = v["name"].as_str()?;
        mounts
            .iter()
            .any(|m| m["name"] == name)
            .then(|| (name.to_string(), secret.to_string()))
    })
}

/// How busybox `wget` reports a failed connection (the script prints it).
fn wget_error(e: &VaultCallError) -> String {
    match e {
        VaultCallError::NoSuchHost(host) => format!("wget: bad address '{host}'"),
        VaultCallError::Refused(_) => {
            "wget: can't connect to remote host: Connection refused".into()
        }
        VaultCallError::Http(m) => format!("wget: {m}"),
    }
}

/// The address the unsealer's CLI sends `sys/unseal` to: the variable its binary reads.
fn cli_addr(container: &Value, cli: &str, image: &str) -> String {
    let is_bao =
        cli == "bao" || kubelet::image_clis(image).is_some_and(|clis| clis.contains(&"bao"));
    let bao = is_bao.then(|| env(container, "BAO_ADDR")).flatten();
    bao.or_else(|| env(container, "VAULT_ADDR"))
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| DEFAULT_CLI_ADDR.to_string())
}

/// Where the Vault and OpenBao CLIs connect without an address variable.
const DEFAULT_CLI_ADDR: &str = "https://127.0.0.1:8200";

fn file_name(f: &VolumeFile) -> &str {
    f.path.rsplit('/').next().unwrap_or(&f.path)
}

impl Unsealer {
    /// One pass of the loop in one pod.
    async fn run(&self, shared: &Shared, pod: &Value) {
        let uid = kit::meta(pod, "uid").to_string();
        let container = &pod["spec"]["containers"][0];
        let cname = container["name"].as_str().unwrap_or("unsealer").to_string();
        // The kubelet refuses to start it (runAsNonRoot): nothing runs.
        let Ok(Some(process)) = kubelet::process(pod, container) else {
            return;
        };
        let rt = &shared.runtime;
        if rt.running(&uid, &cname).is_none() {
            return;
        }
        let log = |line: &str| rt.log(&uid, &cname, line);
        // The script's `addr="${BAO_ADDR:-${VAULT_ADDR:-}}"`, which its wget polls.
        let addr = env(container, "BAO_ADDR")
            .filter(|a| !a.is_empty())
            .or_else(|| env(container, "VAULT_ADDR"))
            .unwrap_or_default();
        let image = container["image"].as_str().unwrap_or("");
        let cli = env(container, "UNSEAL_CLI").unwrap_or_else(|| "vault".to_string());
        let cli_found = kubelet::image_clis(image).is_none_or(|clis| clis.contains(&cli.as_str()));
        let cli_addr = cli_addr(container, &cli, image);
        if rt.fresh(&uid, &cname) {
            log(&format!(
                "vault-unsealer: watching {addr} every {}s as uid {} gid {}",
                env(container, "UNSEAL_INTERVAL").unwrap_or_default(),
                process.uid,
                process.gid
            ));
            self.set_reachable(&uid, true);
        }
        let (files, secret) = match keys_volume(pod, container) {
            Some((volume, secret_name)) => {
                let secret = kit::get(
                    shared,
                    "/secrets",
                    kit::meta(pod, "namespace"),
                    &secret_name,
                );
                let mut files: Vec<VolumeFile> =
                    kubelet::volume_files(pod, container, &volume, secret.as_deref())
                        .into_iter()
                        .filter(|f| file_name(f).starts_with(KEY_PREFIX))
                        .collect();
                files.sort_by(|a, b| a.path.cmp(&b.path));
                (files, secret)
            }
            None => (Vec::new(), None),
        };
        let pausing = self
            .retry_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&uid)
            .is_some_and(|at| Instant::now() < *at);
        if pausing {
            return;
        }
        if let Some(f) = files.iter().find(|f| !kubelet::can_read(&process, f)) {
            log(&format!(
                "vault-unsealer: cannot read {} as uid {} gid {} (file {} owner {}:{}): Permission denied; the pod's fsGroup must own the key files",
                f.path,
                process.uid,
                process.gid,
                f.mode_string(),
                f.uid,
                f.gid
            ));
            rt.exit(&uid, &cname, 1);
            shared.triggers.fire(ObjectKey::new(
                "/pods",
                kit::meta(pod, "namespace"),
                kit::meta(pod, "name"),
            ));
            return;
        }
        if let Err(e) = self
            .vault
            .resolve(shared, &addr, kit::meta(pod, "namespace"))
        {
            if self.set_reachable(&uid, false) {
                log(&format!(
                    "vault-unsealer: vault not reachable: {}",
                    wget_error(&e)
                ));
            }
            return;
        }
        self.set_reachable(&uid, true);
        let status = self.vault.status();
        if !status.initialized || !status.sealed {
            return;
        }
        log("vault-unsealer: vault is sealed, submitting unseal keys");
        let pause = || {
            self.retry_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(uid.clone(), Instant::now() + FAILED_ROUND_PAUSE);
        };
        let Some(secret) = secret.filter(|_| !files.is_empty()) else {
            log("vault-unsealer: no unseal keys mounted yet");
            pause();
            return;
        };
        for f in &files {
            let Some(raw) = secret["data"][&f.key]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
            else {
                continue;
            };
            let failed = |detail: String| {
                log(&format!("Error writing data to sys/unseal: {detail}"));
                log(&format!(
                    "vault-unsealer: submitting {} failed",
                    file_name(f)
                ));
            };
            if !cli_found {
                log(&format!("sh: {cli}: not found"));
                log(&format!(
                    "vault-unsealer: submitting {} failed",
                    file_name(f)
                ));
                continue;
            }
            // Nothing listens on the unsealer pod's own loopback.
            let reached = if cli_addr == DEFAULT_CLI_ADDR {
                Err(VaultCallError::Refused("127.0.0.1:8200".into()))
            } else {
                self.vault
                    .resolve(shared, &cli_addr, kit::meta(pod, "namespace"))
            };
            if let Err(e) = reached {
                failed(format!("Put \"{cli_addr}/v1/sys/unseal\": {e}"));
                continue;
            }
            match self
                .vault
                .call("PUT", "sys/unseal", None, Some(&json!({"key": raw.trim()})))
                .await
            {
                Ok((200, body)) if body["sealed"] == false => {
                    log("vault-unsealer: vault is unsealed");
                    return;
                }
                Ok((200, _)) => {}
                Ok((code, body)) => failed(format!(
                    "Error making API request.\n\nURL: PUT {cli_addr}/v1/sys/unseal\n{}",
                    vault_errors(code, &body)
                )),
                Err(e) => failed(e.to_string()),
            }
        }
        log("vault-unsealer: vault is still sealed after the mounted keys; retrying in 5s");
        pause();
    }

    /// Records reachability; `true` when it changed to unreachable (print the outage once).
    fn set_reachable(&self, pod_uid: &str, ok: bool) -> bool {
        let mut m = self.reachable.lock().unwrap_or_else(|p| p.into_inner());
        let before = m.insert(pod_uid.to_string(), ok).unwrap_or(true);
        before && !ok
    }
}

#[async_trait]
impl Controller for Unsealer {
    fn name(&self) -> &'static str {
        "vault-unsealer"
    }

    fn watches(&self) -> Vec<String> {
        vec![DEPLOY.into()]
    }

    fn map(&self, _shared: &Shared, e: &StoreEvent) -> Vec<ObjectKey> {
        if e.object["metadata"]["labels"]["app.kubernetes.io/name"] == LABEL {
            vec![e.key.clone()]
        } else {
            Vec::new()
        }
    }

    async fn reconcile(&self, shared: &Arc<Shared>, key: &ObjectKey) -> Action {
        let Some(d) = kit::get(shared, DEPLOY, &key.namespace, &key.name) else {
            return Action::Done;
        };
        if d["metadata"]["labels"]["app.kubernetes.io/name"] != LABEL
            || d["metadata"]["deletionTimestamp"].is_string()
        {
            return Action::Done;
        }
        let container = &d["spec"]["template"]["spec"]["containers"][0];
        let interval = env(container, "UNSEAL_INTERVAL")
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(Duration::from_secs(10), Duration::from_secs_f64);
        // The loop runs in the pods: only while they are Running.
        let selector = d["spec"]["selector"]["matchLabels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let pods: Vec<Arc<Value>> = kit::list(shared, "/pods", Some(&key.namespace))
            .into_iter()
            .filter(|p| {
                selector
                    .iter()
                    .all(|(k, v)| p["metadata"]["labels"][k] == *v)
                    && p["status"]["phase"] == "Running"
                    && p["metadata"]["deletionTimestamp"].is_null()
            })
            .collect();
        for pod in &pods {
            self.run(shared, pod).await;
        }
        Action::RequeueAfter(interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wget_errors_read_like_busybox() {
        assert_eq!(
            wget_error(&VaultCallError::NoSuchHost("vault.vault.svc".into())),
            "wget: bad address 'vault.vault.svc'"
        );
        assert!(
            wget_error(&VaultCallError::Refused("x:8200".into())).ends_with("Connection refused")
        );
    }
}
