//! Shared fixture for the end-to-end phase tests: a temp state directory, a playbook on the
//! `sandbox` provider (the real `kubestrap` binary starts the sandbox as a background service),
//! the real `terraform` binary with the offline fixture module, and a guard that stops the
//! sandbox (`kubestrap sandbox down`) even when the test fails.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::kubestrap::workspace_root;
use crate::process::{Lines, finished, text, wait_with_timeout};

/// How many steps the fixture playbook's DAG has.
pub const STEPS: usize = 26;

/// How long one `kubestrap apply` may take before the test fails (never hangs).
pub const RUN_LIMIT: Duration = Duration::from_secs(240);

/// Playbook knobs a test may change.
#[derive(Debug, Clone)]
pub struct Options {
    /// `[sandbox] faults`.
    pub faults: Option<String>,
    /// `[timeouts] secret_sync` (short for the diagnosis tests).
    pub secret_sync: &'static str,
    /// `[timeouts] eso_ready`.
    pub eso_ready: &'static str,
    /// Extra `[[secrets]]` entries appended verbatim.
    pub extra_secrets: &'static str,
    /// `[verify] restart_vault`.
    pub restart_vault: bool,
    /// `[sandbox] vault_server`: a real Vault-API server as the Vault pod's process.
    pub vault_server: Option<PathBuf>,
    /// The fleet directory served as `https://git.sandbox.local/org/fleet` (default: the
    /// sandbox playbook's `playbooks/sandbox/git/fleet`).
    pub fleet: Option<PathBuf>,
    /// Extra lines for `[flux]` (e.g. `bootstrap_secret`, `interval`).
    pub flux_extra: &'static str,
    /// Extra lines for `[vault]` (e.g. `namespace`, `release`).
    pub vault_extra: &'static str,
    /// Extra lines for `[external_secrets]` (e.g. `namespace`, `release`).
    pub eso_extra: &'static str,
    /// `[external_secrets] store`.
    pub store: &'static str,
    /// `[git_auth] external_secret`.
    pub external_secret: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            faults: None,
            secret_sync: "60s",
            eso_ready: "60s",
            extra_secrets: "",
            restart_vault: true,
            vault_server: None,
            fleet: None,
            flux_extra: "",
            vault_extra: "",
            eso_extra: "",
            store: "vault-backend",
            external_secret: "flux-git-auth",
        }
    }
}

/// One bootstrap under test: its own directory, sandbox and canary secret values.
pub struct Bootstrap {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// Canary for `GITHUB_TOKEN`.
    pub github: String,
    /// Canary for `CLOUDFLARE_API_TOKEN`.
    pub cloudflare: String,
}

impl Drop for Bootstrap {
    fn drop(&mut self) {
        let _ = Command::new(&self.bin)
            .args(["sandbox", "down", "--dir"])
            .arg(self.sandbox_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Bootstrap {
    /// A fresh fixture driving `bin` (see [`crate::kubestrap_bin!`]); nothing started yet.
    ///
    /// # Panics
    /// When the temp directory or the playbook cannot be written.
    #[must_use]
    pub fn new(bin: PathBuf, options: &Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tag = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "");
        let fx = Self {
            bin,
            github: format!("ghp_canary_{tag}_gh"),
            cloudflare: format!("cf_canary_{tag}_cf"),
            dir,
        };
        let mut sandbox_extra = options
            .faults
            .as_ref()
            .map(|f| format!("faults = {f:?}\n"))
            .unwrap_or_default();
        if let Some(server) = &options.vault_server {
            sandbox_extra.push_str(&format!(
                "vault_server = {:?}\n",
                server.display().to_string()
            ));
        }
        let playbook = format!(
            r#"
[cluster]
name = "e2e"
provider = "sandbox"
state_dir = "{state}"

[sandbox]
git_repos = {{ "https://git.sandbox.local/org/fleet" = "{fleet}" }}
{sandbox_extra}
[flux]
install_manifest = "sandbox:/sandbox/flux/install.yaml"
git_url = "https://git.sandbox.local/org/fleet"
path = "clusters/sandbox"
token_env = "GITHUB_TOKEN"
{flux_extra}
[vault]
key_shares = 5
key_threshold = 3
{vault_extra}
[external_secrets]
store = "{store}"
{eso_extra}

[terraform]
dir = "{module}"

[[secrets]]
env = "GITHUB_TOKEN"
tf_var = "github_token"
vault_path = "bootstrap/github"
vault_key = "token"

[[secrets]]
env = "CLOUDFLARE_API_TOKEN"
tf_var = "cloudflare_api_token"
vault_path = "bootstrap/cloudflare"
vault_key = "api_token"
{extra}
[git_auth]
external_secret = "{external_secret}"

[apps]
kustomizations = ["apps"]

[verify]
restart_vault = {restart}

[timeouts]
node_ready = "60s"
flux_ready = "60s"
vault_ready = "60s"
eso_ready = "{eso_ready}"
reconcile = "60s"
secret_sync = "{secret_sync}"
terraform = "120s"
"#,
            state = fx.state_dir().display(),
            fleet = options
                .fleet
                .clone()
                .unwrap_or_else(|| workspace_root().join("playbooks/sandbox/git/fleet"))
                .display(),
            flux_extra = options.flux_extra,
            vault_extra = options.vault_extra,
            eso_extra = options.eso_extra,
            store = options.store,
            external_secret = options.external_secret,
            module = workspace_root()
                .join("tests/fixtures/terraform/vault-kv")
                .display(),
            extra = options.extra_secrets,
            restart = options.restart_vault,
            eso_ready = options.eso_ready,
            secret_sync = options.secret_sync,
        );
        std::fs::write(fx.playbook(), playbook).unwrap();
        fx
    }

    /// The temp directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The playbook file.
    pub fn playbook(&self) -> PathBuf {
        self.dir.path().join("kubestrap.toml")
    }

    /// kubestrap's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The cluster's state directory.
    pub fn cluster_dir(&self) -> PathBuf {
        self.state_dir().join("e2e")
    }

    /// The sandbox's directory (the playbook's default).
    pub fn sandbox_dir(&self) -> PathBuf {
        self.cluster_dir().join("sandbox")
    }

    /// The sandbox's kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.sandbox_dir().join("kubeconfig")
    }

    fn command(&self, args: &[&str], with_secrets: bool) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .arg("-p")
            .arg(self.playbook())
            .current_dir(self.path())
            .env_remove("KUBECONFIG")
            .env_remove("GITHUB_TOKEN")
            .env_remove("CLOUDFLARE_API_TOKEN");
        if with_secrets {
            cmd.env("GITHUB_TOKEN", &self.github)
                .env("CLOUDFLARE_API_TOKEN", &self.cloudflare);
        }
        cmd
    }

    /// Runs `kubestrap ARGS -p PLAYBOOK` to completion (with the canaries exported when
    /// `with_secrets`).
    pub fn run(&self, args: &[&str], with_secrets: bool) -> Output {
        self.run_with_env(args, with_secrets, &[])
    }

    /// [`Bootstrap::run`] with extra environment variables (e.g. `KUBESTRAP_LOG`).
    pub fn run_with_env(&self, args: &[&str], with_secrets: bool, env: &[(&str, &str)]) -> Output {
        let child = self
            .command(args, with_secrets)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_with_timeout(child, RUN_LIMIT)
    }

    /// Runs `apply --output json` with the canaries exported and checks that it succeeded with
    /// every one of the playbook's [`STEPS`] steps done; returns its output.
    ///
    /// # Panics
    /// When the run failed or a step did not end `done`.
    #[must_use]
    pub fn apply_all_done(&self) -> Output {
        let out = self.run(&["apply", "--output", "json"], true);
        assert_all_done(&out);
        out
    }

    /// Starts `apply --output json ARGS` and reads its events until one satisfies `until`; the
    /// child still runs. A panic while reading (no such event in [`RUN_LIMIT`]) is caught and
    /// returned, so the caller can stop the child before it resumes the panic.
    #[allow(clippy::type_complexity)]
    fn apply_until(
        &self,
        args: &[&str],
        until: impl Fn(&Value) -> bool,
    ) -> (std::process::Child, Lines, std::thread::Result<Vec<Value>>) {
        let mut full = vec!["apply", "--output", "json"];
        full.extend_from_slice(args);
        let mut child = self
            .command(&full, true)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Lines::follow(&mut child);
        let seen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lines.events_until(RUN_LIMIT, until)
        }));
        (child, lines, seen)
    }

    /// Starts `apply --output json ARGS` and SIGKILLs it as soon as an event line satisfies
    /// `kill_when`; returns the lines seen.
    pub fn apply_and_kill(&self, args: &[&str], kill_when: impl Fn(&Value) -> bool) -> Vec<Value> {
        let (mut child, _lines, seen) = self.apply_until(args, kill_when);
        let _ = child.kill();
        let _ = child.wait();
        seen.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Starts `apply --output json ARGS`, runs `meanwhile` as soon as an event line satisfies
    /// `when` (e.g. a repair by hand while the run waits), then lets the run finish; returns
    /// every event and the exit status.
    ///
    /// # Panics
    /// When no such event comes (the test's point was not reached) or the run outlives
    /// [`RUN_LIMIT`].
    pub fn apply_then(
        &self,
        args: &[&str],
        when: impl Fn(&Value) -> bool,
        meanwhile: impl FnOnce(),
    ) -> (Vec<Value>, std::process::ExitStatus) {
        let (mut child, lines, seen) = self.apply_until(args, when);
        let mut seen = match seen {
            Ok(seen) => seen,
            Err(panic) => {
                let _ = child.kill();
                let _ = child.wait();
                std::panic::resume_unwind(panic)
            }
        };
        meanwhile();
        seen.extend(
            lines
                .rest(RUN_LIMIT)
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok()),
        );
        let status = child.wait().unwrap();
        (seen, status)
    }

    /// The checkpoint file's text.
    pub fn checkpoint_text(&self) -> String {
        std::fs::read_to_string(self.cluster_dir().join("checkpoint.json")).unwrap_or_default()
    }

    /// A kube client for the sandbox (inside a runtime the caller provides).
    ///
    /// # Panics
    /// When the sandbox's kubeconfig is unusable.
    pub async fn client(&self) -> kube::Client {
        crate::sandbox::kube_client_from(&self.kubeconfig()).await
    }

    /// The sandbox's write log (`GET /sandbox/v1/writes`).
    pub async fn writes(&self) -> Value {
        let client = self.client().await;
        let req = http::Request::get("/sandbox/v1/writes")
            .body(Vec::new())
            .unwrap();
        let text = tokio::time::timeout(Duration::from_secs(30), client.request_text(req))
            .await
            .unwrap()
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// `apply --fresh --output json` over the finished cluster (with the canaries exported when
    /// `with_secrets`): it succeeds and no step reports a change. Returns its output.
    ///
    /// # Panics
    /// When the run fails or a step changed.
    pub fn assert_second_apply_unchanged(&self, with_secrets: bool) -> Output {
        let again = self.run(&["apply", "--fresh", "--output", "json"], with_secrets);
        assert!(again.status.success(), "{}", text(&again));
        let changed: Vec<Value> = finished(&again)
            .into_iter()
            .filter(|s| s["changed"] == true)
            .collect();
        assert!(
            changed.is_empty(),
            "changed on the second run: {changed:#?}"
        );
        again
    }

    /// `apply --fresh` over the finished cluster, without the environment variables (Vault
    /// holds every value): all `steps` report unchanged and nothing is written but the run's
    /// own Lease.
    ///
    /// # Panics
    /// When the run fails, a step changed or a write happened.
    pub fn assert_fresh_apply_changes_nothing(&self, rt: &tokio::runtime::Runtime, steps: usize) {
        let before = rt.block_on(self.client_writes_except_lease()).len();
        let again = self.assert_second_apply_unchanged(false);
        assert_eq!(finished(&again).len(), steps);
        let after = rt.block_on(self.client_writes_except_lease());
        assert_eq!(
            after.len(),
            before,
            "write requests on the second run: {:#?}",
            &after[before..]
        );
    }

    /// Client writes (not controllers') in the write log, excluding the run's own Lease lock.
    pub async fn client_writes_except_lease(&self) -> Vec<Value> {
        let log = self.writes().await;
        log["writes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["actor"]["type"] == "client")
            .filter(|w| w["resource"] != "leases.coordination.k8s.io")
            .cloned()
            .collect()
    }

    /// Replaces the sandbox's fault spec through its admin API.
    pub async fn set_faults(&self, spec: &str) {
        let client = self.client().await;
        let req = http::Request::put("/sandbox/v1/faults")
            .body(spec.as_bytes().to_vec())
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), client.request_text(req))
            .await
            .unwrap()
            .unwrap();
    }
}

/// Checks that an `apply --output json` succeeded with every one of the playbook's [`STEPS`]
/// steps done; returns their `step_finished` events.
///
/// # Panics
/// When the run failed or a step did not end `done`.
pub fn assert_all_done(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", text(out));
    let steps = finished(out);
    assert_eq!(steps.len(), STEPS, "{}", text(out));
    assert!(steps.iter().all(|s| s["status"] == "done"), "{}", text(out));
    steps
}

/// Checks that `verify.vault` restarted the Vault pod and saw it unsealed again (the restart
/// proof, `[verify] restart_vault`), among a run's `step_finished` events.
///
/// # Panics
/// When verify.vault did not run or changed nothing.
pub fn assert_vault_restarted(steps: &[Value]) {
    let restart = steps
        .iter()
        .find(|s| s["step"] == "verify.vault")
        .expect("verify.vault ran");
    assert_eq!(
        restart["changed"], true,
        "the Vault pod was restarted and unsealed again: {restart}"
    );
}
