//! The result block: what `apply` built and what to do next, printed on stdout after the
//! summary (TTY and plain alike) and sent as the last JSON line (`{"event":"result",...}`).
//!
//! Progress scrolls by on stderr and a terminal's status line erases itself; the block is what
//! stays on the screen, so it carries everything a user needs to pick the cluster up: where the
//! kubeconfig is, how to reach Vault, where the keys are, the next commands, how to stop and how
//! to continue. Its lines are stable (`key: value`, documented in the README); it never holds a
//! secret value, only where secrets are.

use std::io::{self, Write};

use serde::Serialize;

use super::machine::{FORMAT_VERSION, run_status_name};
use crate::engine::RunStatus;

/// How to reach Vault from this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VaultResult {
    /// The address Vault answers on: in-cluster (`http://vault.vault.svc:8200`) for a
    /// port-forward, else the playbook's `[vault] address`.
    pub address: String,
    /// The command that makes it reachable from here (a `kubectl port-forward`), if one is
    /// needed; it is also one of the next commands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reach: Option<String>,
    /// `VAULT_ADDR` to export once reachable.
    pub vault_addr: String,
}

/// Everything the result block shows; built by the CLI from the playbook and the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunResult {
    /// How the run ended.
    #[serde(serialize_with = "status_name")]
    pub status: RunStatus,
    /// Cluster name.
    pub cluster: String,
    /// Playbook provider (`sandbox`, `k3s-local`, ...).
    pub provider: String,
    /// The kubeconfig the cluster is reached with, when known.
    pub kubeconfig: Option<String>,
    /// Vault.
    pub vault: VaultResult,
    /// The Secret holding the unseal keys and the root token, `namespace/name`.
    pub keys_secret: String,
    /// Commands to look at what was built.
    pub next: Vec<String>,
    /// How to stop the cluster (the sandbox), when kubestrap started it.
    pub stop: Option<String>,
    /// How to continue (after a stop, a failure or an interruption).
    pub resume: String,
    /// The run report file, when it was written.
    pub report: Option<String>,
}

// serde's `serialize_with` hands the field by reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn status_name<S: serde::Serializer>(status: &RunStatus, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(run_status_name(*status))
}

/// The JSON line: `{"event":"result","version":1,...}`.
#[derive(Serialize)]
struct ResultEvent<'a> {
    event: &'static str,
    version: u32,
    #[serde(flatten)]
    result: &'a RunResult,
    /// When it was written, as on every event line.
    at: jiff::Timestamp,
}

impl RunResult {
    /// The final JSON event of `apply --output json`, one line.
    ///
    /// # Errors
    /// IO errors from `out`.
    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        let doc = ResultEvent {
            event: "result",
            version: FORMAT_VERSION,
            result: self,
            at: jiff::Timestamp::now(),
        };
        serde_json::to_writer(&mut *out, &doc).map_err(io::Error::other)?;
        writeln!(out)?;
        out.flush()
    }

    /// The block for people. A failed or interrupted run only gets the resume line (the summary
    /// above already says what failed); a successful one gets the whole block.
    ///
    /// # Errors
    /// IO errors from `out`.
    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        if self.status != RunStatus::Succeeded {
            return writeln!(out, "Resume:  {}", self.resume);
        }
        writeln!(out)?;
        writeln!(
            out,
            "Cluster {} is ready (provider {}).",
            self.cluster, self.provider
        )?;
        if let Some(kc) = &self.kubeconfig {
            writeln!(out, "  kubeconfig:  {kc}")?;
        }
        if self.vault.reach.is_some() {
            writeln!(
                out,
                "  vault:       {} (in the cluster)",
                self.vault.address
            )?;
            writeln!(
                out,
                "  VAULT_ADDR:  {} (with the port-forward below)",
                self.vault.vault_addr
            )?;
        } else {
            writeln!(out, "  vault:       {}", self.vault.address)?;
        }
        writeln!(
            out,
            "  keys:        Secret {} (unseal keys, root token)",
            self.keys_secret
        )?;
        if let Some(report) = &self.report {
            writeln!(out, "  report:      {report}")?;
        }
        writeln!(out, "Next:")?;
        for cmd in &self.next {
            writeln!(out, "  {cmd}")?;
        }
        if let Some(stop) = &self.stop {
            writeln!(out, "Stop:    {stop}")?;
        }
        writeln!(out, "Resume:  {}", self.resume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(status: RunStatus) -> RunResult {
        RunResult {
            status,
            cluster: "sandbox".into(),
            provider: "sandbox".into(),
            kubeconfig: Some("s/kubeconfig".into()),
            vault: VaultResult {
                address: "http://vault.vault.svc:8200".into(),
                reach: Some("kubectl -n vault port-forward svc/vault 8200:8200".into()),
                vault_addr: "http://127.0.0.1:8200".into(),
            },
            keys_secret: "vault/vault-init-keys".into(),
            next: vec![
                "export KUBECONFIG=/abs/s/kubeconfig".into(),
                "kubectl get nodes".into(),
                "kubectl -n vault port-forward svc/vault 8200:8200".into(),
            ],
            stop: Some("kubestrap sandbox down --dir s".into()),
            resume: "kubestrap apply -p sandbox.toml --resume".into(),
            report: Some("r.json".into()),
        }
    }

    #[test]
    fn text_block_names_everything_and_ends_with_resume() {
        let mut out = Vec::new();
        sample(RunStatus::Succeeded).write_text(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "\nCluster sandbox is ready (provider sandbox).\n  kubeconfig:  s/kubeconfig\n  vault:       http://vault.vault.svc:8200 (in the cluster)\n  VAULT_ADDR:  http://127.0.0.1:8200 (with the port-forward below)\n  keys:        Secret vault/vault-init-keys (unseal keys, root token)\n  report:      r.json\nNext:\n  export KUBECONFIG=/abs/s/kubeconfig\n  kubectl get nodes\n  kubectl -n vault port-forward svc/vault 8200:8200\nStop:    kubestrap sandbox down --dir s\nResume:  kubestrap apply -p sandbox.toml --resume\n"
        );
    }

    #[test]
    fn failed_run_gets_only_the_resume_line() {
        let mut out = Vec::new();
        sample(RunStatus::Failed).write_text(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Resume:  kubestrap apply -p sandbox.toml --resume\n"
        );
    }

    #[test]
    fn json_event_carries_the_same_fields() {
        let mut out = Vec::new();
        sample(RunStatus::Succeeded).write_json(&mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["event"], "result");
        assert_eq!(v["version"], FORMAT_VERSION);
        assert_eq!(v["status"], "succeeded");
        assert_eq!(v["kubeconfig"], "s/kubeconfig");
        assert_eq!(v["vault"]["vault_addr"], "http://127.0.0.1:8200");
        assert_eq!(v["keys_secret"], "vault/vault-init-keys");
        assert_eq!(v["stop"], "kubestrap sandbox down --dir s");
        assert_eq!(v["report"], "r.json");
        v["at"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap();
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
    }
}
