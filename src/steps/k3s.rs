//! k3s: make the cluster exist (or find it) and wait for its node to be Ready.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::support::{
    ClusterContext, StepWaits, cancellable, reporter, step_identity, wait_error, wait_options,
};
use crate::engine::{Action, Step, StepContext, StepError, StepOutcome, Verified};
use crate::playbook::{HumanDuration, LoadedPlaybook, Provider, SshTarget};
use ::kube::ResourceExt;
use k8s_openapi::api::core::v1::Node;

/// `INSTALL_K3S_EXEC` when the playbook gives none: a server whose kubeconfig only root reads.
pub const DEFAULT_K3S_EXEC: &str = "server --write-kubeconfig-mode 600";

/// `k3s.install`: install k3s (k3s-local, k3s-ssh), or check that the sandbox / existing cluster
/// is reachable.
#[derive(Debug, Clone, Serialize)]
pub struct K3sInstall {
    /// How the cluster comes to exist.
    pub provider: Provider,
    /// Pinned k3s version (installing providers).
    pub k3s_version: Option<String>,
    /// `INSTALL_K3S_EXEC` for the install script.
    pub k3s_exec: String,
    /// `user@host:port` for k3s-ssh.
    pub ssh_target: Option<String>,
    /// The kubeconfig the rest of the run uses.
    pub kubeconfig: Option<String>,
    /// The sandbox directory (provider sandbox).
    pub sandbox_dir: Option<String>,
    /// Git URL => local directory the sandbox's Git host serves (provider sandbox).
    pub git_repos: BTreeMap<String, String>,
    /// `--faults` for the sandbox (provider sandbox; tests and benchmarks).
    pub sandbox_faults: Option<String>,
    /// `--vault-server` for the sandbox: a real Vault-API server as the Vault pod's process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_vault_server: Option<String>,
    /// The SSH target in full (k3s-ssh).
    pub ssh: Option<SshTarget>,
    /// Declared secrets `k3s_exec` references as `${NAME}` (names only: the values go to the
    /// installer's environment at apply time, never into the payload, plan or checkpoint).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exec_secrets: Vec<String>,
}

impl K3sInstall {
    /// From the playbook's `[cluster]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let c = &pb.playbook.cluster;
        Self {
            provider: c.provider,
            k3s_version: c.k3s_version.clone(),
            k3s_exec: c
                .k3s_exec
                .clone()
                .unwrap_or_else(|| DEFAULT_K3S_EXEC.to_owned()),
            ssh_target: c
                .ssh
                .as_ref()
                .map(|s| format!("{}@{}:{}", s.user, s.host, s.port)),
            kubeconfig: pb.kubeconfig().map(|p| p.display().to_string()),
            sandbox_dir: pb.sandbox_dir().map(|p| p.display().to_string()),
            git_repos: pb
                .playbook
                .sandbox
                .as_ref()
                .map(|s| {
                    s.git_repos
                        .iter()
                        .map(|(u, p)| (u.clone(), p.display().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            sandbox_faults: pb.playbook.sandbox.as_ref().and_then(|s| s.faults.clone()),
            sandbox_vault_server: pb
                .playbook
                .sandbox
                .as_ref()
                .and_then(|s| s.vault_server.as_ref())
                .map(|p| p.display().to_string()),
            ssh: c.ssh.clone(),
            exec_secrets: if c.provider.installs_k3s() {
                c.k3s_exec
                    .as_deref()
                    .map(crate::playbook::k3s_exec_secret_refs)
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
        }
    }

    /// The values of [`K3sInstall::exec_secrets`], by name.
    ///
    /// # Errors
    /// A permanent [`StepError`] when one was not captured, or holds a line break (which the
    /// installer's environment, and the line read over ssh, cannot carry).
    fn exec_secret_values(
        &self,
        ctx: &StepContext,
    ) -> Result<Vec<(String, SecretString)>, StepError> {
        self.exec_secrets
            .iter()
            .map(|name| {
                let value = ctx.secret(name)?;
                if value.expose_secret().contains(['\n', '\r']) {
                    return Err(StepError::permanent(format!(
                        "secret {name} (referenced by [cluster] k3s_exec) holds a line break: export it as one line"
                    )));
                }
                Ok((name.clone(), value.clone()))
            })
            .collect()
    }

    /// What the plan says about an install: when it is skipped, and how referenced secrets
    /// reach the installer (by name; values are never shown).
    fn install_detail(&self, how: &str) -> String {
        let mut detail = "skipped when k3s of this version already runs".to_owned();
        if !self.exec_secrets.is_empty() {
            detail.push_str(&format!(
                "; {} handed to the installer {how}, never on a command line",
                self.exec_secrets.join(", ")
            ));
        }
        detail
    }

    fn install_command(&self) -> String {
        format!(
            "curl -sfL https://get.k3s.io | INSTALL_K3S_VERSION={} INSTALL_K3S_EXEC='{}' sh -",
            self.k3s_version.as_deref().unwrap_or("?"),
            self.k3s_exec
        )
    }
}

#[async_trait::async_trait]
impl Step for K3sInstall {
    step_identity!("k3s.install");

    fn secrets(&self) -> Vec<String> {
        self.exec_secrets.clone()
    }

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        let kubeconfig = self
            .kubeconfig
            .as_deref()
            .unwrap_or("KUBECONFIG / ~/.kube/config");
        Ok(match self.provider {
            Provider::Sandbox
                if self.sandbox_dir().is_ok_and(|d| {
                    // Checked synchronously below; plan must not start anything.
                    d.join("kubeconfig").exists()
                }) && sandbox_healthy(&self.sandbox_dir()?).await =>
            {
                let dir = self.sandbox_dir.as_deref().unwrap_or("?");
                vec![
                    Action::unchanged(format!("sandbox cluster in {dir}"))
                        .with_detail("already running and healthy"),
                    Action::unchanged(format!("kubeconfig {kubeconfig}")),
                ]
            }
            Provider::Sandbox => {
                let dir = self.sandbox_dir.as_deref().unwrap_or("?");
                vec![
                    Action::run(format!(
                        "start the sandbox cluster in {dir} unless it is already running"
                    ))
                    .with_detail(match &self.sandbox_vault_server {
                        None => format!("as `kubestrap sandbox up --dir {dir}`, in the background"),
                        Some(server) => format!(
                            "as `kubestrap sandbox up --dir {dir} --vault-server {server}`, in the background (Vault is that real server)"
                        ),
                    }),
                    Action::create(format!("kubeconfig {kubeconfig}"))
                        .with_detail("written by the sandbox"),
                ]
            }
            Provider::K3sLocal => vec![
                Action::run(self.install_command())
                    .with_detail(self.install_detail("in its environment")),
                Action::create("kubeconfig /etc/rancher/k3s/k3s.yaml"),
            ],
            Provider::K3sSsh => {
                let target = self.ssh_target.as_deref().unwrap_or("?");
                vec![
                    Action::run(format!("ssh {target} -- {}", self.install_command()))
                        .with_detail(self.install_detail("over ssh's stdin, into its environment")),
                    Action::create(format!(
                        "kubeconfig copied from {target}:/etc/rancher/k3s/k3s.yaml"
                    )),
                ]
            }
            Provider::Existing => vec![Action::unchanged(format!(
                "existing cluster from {kubeconfig}"
            ))],
        })
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let changed = match self.provider {
            Provider::Sandbox => self.ensure_sandbox(ctx).await?,
            Provider::K3sLocal => self.install_local(ctx).await?,
            Provider::K3sSsh => self.install_ssh(ctx).await?,
            Provider::Existing => {
                let kubeconfig = ctx.kubeconfig_path().map(Path::to_path_buf);
                if let Some(path) = &kubeconfig
                    && !path.exists()
                {
                    return Err(StepError::permanent(format!(
                        "kubeconfig {} does not exist: point [cluster] kubeconfig or --kubeconfig at the existing cluster's",
                        path.display()
                    )));
                }
                false
            }
        };
        StepOutcome::with_outputs(
            changed,
            &InstallOutputs {
                kubeconfig: ctx.kubeconfig_path().map(|p| p.display().to_string()),
            },
        )
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        match self.provider {
            Provider::Sandbox => {
                let dir = self.sandbox_dir()?;
                Ok(if sandbox_healthy(&dir).await {
                    Verified::Holds
                } else {
                    Verified::DoesNotHold {
                        reason: format!("no healthy sandbox is running from {}", dir.display()),
                    }
                })
            }
            Provider::Existing => Ok(match readyz(&ctx.kube().await?).await {
                Ok(()) => Verified::Holds,
                Err(e) => Verified::DoesNotHold {
                    reason: e.to_string(),
                },
            }),
            // What apply installed: a cluster that answers, running the pinned k3s (a node
            // upgraded or downgraded by hand is installed again at the pin).
            Provider::K3sLocal | Provider::K3sSsh => {
                let client = ctx.kube().await?;
                if let Err(e) = readyz(&client).await {
                    return Ok(Verified::DoesNotHold {
                        reason: e.to_string(),
                    });
                }
                let Some(pin) = &self.k3s_version else {
                    return Ok(Verified::Holds);
                };
                let nodes = ::kube::Api::<Node>::all(client)
                    .list(&::kube::api::ListParams::default())
                    .await
                    .map_err(|e| StepError::classify("list the nodes", e))?;
                Ok(version_drift(pin, &nodes.items)
                    .map_or(Verified::Holds, |reason| Verified::DoesNotHold { reason }))
            }
        }
    }
}

/// Tells the run which cluster this is (its `kube-system` namespace UID, which lives as long
/// as the cluster), so a cluster the run itself created is recorded in this run's checkpoint,
/// and a checkpoint of another cluster is refused.
///
/// # Errors
/// A classified [`StepError`] when the namespace cannot be read; the run's refusal when the
/// checkpoint records another cluster.
async fn identify_cluster(ctx: &StepContext, client: &::kube::Client) -> Result<(), StepError> {
    let namespaces: ::kube::Api<k8s_openapi::api::core::v1::Namespace> =
        ::kube::Api::all(client.clone());
    let uid = namespaces
        .get_opt("kube-system")
        .await
        .map_err(|e| StepError::classify("read namespace kube-system", e))?
        .and_then(|ns| ns.metadata.uid);
    match uid {
        Some(uid) => ctx.identify(crate::engine::Identity::Cluster, &uid),
        None => Ok(()),
    }
}

/// Which of the k3s servers (nodes labelled `node-role.kubernetes.io/control-plane`, or every
/// node when none is) do not run the pinned k3s version, said as a reason; `None` when all do.
/// The kubelet reports k3s's own version string (`v1.33.1+k3s1`), the one `k3s --version`
/// prints and `INSTALL_K3S_VERSION` takes.
fn version_drift(pin: &str, nodes: &[Node]) -> Option<String> {
    let is_server = |n: &&Node| {
        n.labels()
            .get("node-role.kubernetes.io/control-plane")
            .is_some_and(|v| v == "true")
    };
    let servers: Vec<&Node> = if nodes.iter().any(|n| is_server(&n)) {
        nodes.iter().filter(is_server).collect()
    } else {
        nodes.iter().collect()
    };
    let off: Vec<String> = servers
        .iter()
        .filter_map(|n| {
            let running = n
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .map_or("an unknown version", |i| i.kubelet_version.as_str());
            (running != pin).then(|| format!("node {} runs {running}", n.name_any()))
        })
        .collect();
    (!off.is_empty()).then(|| {
        format!(
            "[cluster] k3s_version pins {pin}, but {}: applying again runs the k3s install script with INSTALL_K3S_VERSION={pin}",
            off.join(", ")
        )
    })
}

/// What `k3s.install` hands on: where the kubeconfig is.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct InstallOutputs {
    /// The kubeconfig the run uses, when one is named.
    pub kubeconfig: Option<String>,
}

impl K3sInstall {
    fn sandbox_dir(&self) -> Result<PathBuf, StepError> {
        self.sandbox_dir
            .as_deref()
            .map(PathBuf::from)
            .ok_or_else(|| StepError::permanent("provider sandbox without a sandbox directory"))
    }

    /// The `kubestrap sandbox up` command line for this playbook.
    fn sandbox_command(&self, exe: &Path, dir: &Path) -> std::process::Command {
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("sandbox").arg("up").arg("--dir").arg(dir);
        for (url, path) in &self.git_repos {
            cmd.arg("--git-repo").arg(format!("{url}={path}"));
        }
        if let Some(faults) = self.sandbox_faults.as_deref().filter(|f| !f.is_empty()) {
            cmd.arg("--faults").arg(faults);
        }
        if let Some(server) = &self.sandbox_vault_server {
            cmd.arg("--vault-server").arg(server);
        }
        cmd
    }

    /// Starts the sandbox as a detached service unless a healthy one runs from its directory.
    async fn ensure_sandbox(&self, ctx: &StepContext) -> Result<bool, StepError> {
        let dir = self.sandbox_dir()?;
        if sandbox_healthy(&dir).await {
            ctx.progress(format!(
                "the sandbox in {} is already running",
                dir.display()
            ));
            return Ok(false);
        }
        create_private_dir(&dir)?;
        // A kubeconfig left by a dead sandbox names a port nobody listens on any more.
        let kubeconfig = dir.join("kubeconfig");
        let _ = std::fs::remove_file(&kubeconfig);
        let exe = std::env::current_exe().map_err(|e| {
            StepError::permanent(format!("cannot find kubestrap's own executable: {e}"))
        })?;
        let log = dir.join(CONSOLE_LOG);
        let mut child = super::detach::spawn_detached(self.sandbox_command(&exe, &dir), &log)
            .map_err(|e| StepError::permanent(format!("start the sandbox: {e}")))?;
        ctx.progress(format!(
            "started the sandbox (pid {}) in {}; its output goes to {}",
            child.id(),
            dir.display(),
            log.display()
        ));
        let deadline = tokio::time::Instant::now() + SANDBOX_START;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(StepError::permanent(format!(
                    "the sandbox exited at start ({status}); see {}",
                    log.display()
                )));
            }
            if kubeconfig.exists() && sandbox_healthy(&dir).await {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StepError::permanent(format!(
                    "the sandbox did not answer /readyz within {}s; see {}",
                    SANDBOX_START.as_secs(),
                    log.display()
                )));
            }
            // The sandbox's own start-up is a local process writing a file: there is no API
            // to watch yet, so this is the one short poll in the bootstrap.
            super::support::cancellable(ctx, async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(())
            })
            .await?;
        }
    }

    /// The local install script invocation (k3s-local): version and flags through the
    /// environment, never interpolated into a shell string.
    fn local_install_command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(INSTALL_PIPELINE);
        if let Some(v) = &self.k3s_version {
            cmd.env("INSTALL_K3S_VERSION", v);
        }
        cmd.env("INSTALL_K3S_EXEC", &self.k3s_exec);
        cmd
    }

    async fn install_local(&self, ctx: &StepContext) -> Result<bool, StepError> {
        let running = run_capture(std::process::Command::new("k3s").arg("--version"))
            .await
            .ok()
            .and_then(|out| parse_k3s_version(&out));
        if running.is_some() && running == self.k3s_version {
            ctx.progress(format!(
                "k3s {} already runs here",
                running.unwrap_or_default()
            ));
            return Ok(false);
        }
        ctx.progress("running the k3s install script");
        let mut cmd = self.local_install_command();
        for (name, value) in self.exec_secret_values(ctx)? {
            cmd.env(name, value.expose_secret());
        }
        run_capture(&mut cmd).await?;
        if let Some(target) = ctx.kubeconfig_path()
            && target != Path::new(K3S_KUBECONFIG)
        {
            let text = std::fs::read_to_string(K3S_KUBECONFIG).map_err(|e| {
                StepError::permanent(format!("read {K3S_KUBECONFIG}: {e} (run as root?)"))
            })?;
            write_private(target, &text)?;
        }
        Ok(true)
    }

    /// `ssh` with host-key checking on and no prompts, to the playbook's target.
    fn ssh_command(&self, remote: &str) -> Result<std::process::Command, StepError> {
        let ssh = self
            .ssh
            .as_ref()
            .ok_or_else(|| StepError::permanent("provider k3s-ssh needs [cluster.ssh]"))?;
        let mut cmd = std::process::Command::new("ssh");
        cmd.args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-p",
            &ssh.port.to_string(),
        ]);
        if let Some(key) = &ssh.identity_file {
            cmd.arg("-i").arg(key);
        }
        cmd.arg(format!("{}@{}", ssh.user, ssh.host))
            .arg("--")
            .arg(remote);
        Ok(cmd)
    }

    /// The remote install pipeline, with version and flags shell-quoted. The secrets
    /// `k3s_exec` references are read from stdin first, one line each, and exported for the
    /// install script: never part of this command line.
    fn remote_install(&self) -> String {
        let reads: String = self
            .exec_secrets
            .iter()
            .map(|name| format!("IFS= read -r {name} && export {name} && "))
            .collect();
        let mut env = String::new();
        if let Some(v) = &self.k3s_version {
            env.push_str(&format!("INSTALL_K3S_VERSION={} ", shell_quote(v)));
        }
        env.push_str(&format!(
            "INSTALL_K3S_EXEC={} ",
            shell_quote(&self.k3s_exec)
        ));
        format!("{reads}curl -sfL https://get.k3s.io | {env}sh -")
    }

    fn sudo(&self) -> &'static str {
        match &self.ssh {
            Some(s) if s.user != "root" => "sudo ",
            _ => "",
        }
    }

    async fn install_ssh(&self, ctx: &StepContext) -> Result<bool, StepError> {
        let target = ctx.kubeconfig_path().map(Path::to_path_buf).ok_or_else(|| {
            StepError::permanent(
                "provider k3s-ssh needs [cluster] kubeconfig: the file kubestrap writes the fetched kubeconfig to",
            )
        })?;
        let running = run_capture(&mut self.ssh_command("k3s --version")?)
            .await
            .ok()
            .and_then(|out| parse_k3s_version(&out));
        let changed = if running.is_some() && running == self.k3s_version {
            false
        } else {
            ctx.progress("running the k3s install script over ssh");
            let mut input = zeroize::Zeroizing::new(Vec::new());
            for (_, value) in self.exec_secret_values(ctx)? {
                input.extend_from_slice(value.expose_secret().as_bytes());
                input.push(b'\n');
            }
            run_capture_with(
                &mut self.ssh_command(&format!(
                    "{}sh -c {}",
                    self.sudo(),
                    shell_quote(&self.remote_install())
                ))?,
                &input,
            )
            .await?;
            true
        };
        let remote =
            run_capture(&mut self.ssh_command(&format!("{}cat {K3S_KUBECONFIG}", self.sudo()))?)
                .await?;
        let host = self
            .ssh
            .as_ref()
            .map(|s| s.host.as_str())
            .unwrap_or_default();
        let rewritten = rewrite_server(&remote, host);
        let same = std::fs::read_to_string(&target).is_ok_and(|t| t == rewritten);
        if !same {
            write_private(&target, &rewritten)?;
        }
        Ok(changed || !same)
    }
}

/// Where `sandbox up`'s stdout/stderr go (the sandbox writes its own `sandbox.log` too).
pub const CONSOLE_LOG: &str = "sandbox.console.log";
/// How long a starting sandbox may take to answer.
const SANDBOX_START: Duration = Duration::from_secs(60);
/// k3s's own kubeconfig.
const K3S_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";
/// The official install script, fed by environment variables.
const INSTALL_PIPELINE: &str = "curl -sfL https://get.k3s.io | sh -";

/// Whether a sandbox answers `/readyz` with the kubeconfig in `dir`.
pub async fn sandbox_healthy(dir: &Path) -> bool {
    let path = dir.join("kubeconfig");
    if !path.exists() {
        return false;
    }
    let Ok(mut config) = crate::kube::client::config(Some(&path), None).await else {
        return false;
    };
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(5));
    crate::kube::install_crypto_provider();
    let Ok(client) = ::kube::Client::try_from(config) else {
        return false;
    };
    readyz(&client).await.is_ok()
}

/// `GET /readyz` must answer `ok`.
///
/// # Errors
/// A transient [`StepError`] with what the API answered.
pub(crate) async fn readyz(client: &::kube::Client) -> Result<(), StepError> {
    let req = hyper::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| StepError::permanent(format!("build /readyz request: {e}")))?;
    let text = client
        .request_text(req)
        .await
        .map_err(|e| StepError::transient(format!("GET /readyz failed: {e}")))?;
    if text.trim() == "ok" {
        Ok(())
    } else {
        Err(StepError::transient(format!(
            "GET /readyz answered {:?}, not ok",
            text.trim()
        )))
    }
}

/// Runs a command to completion and returns its stdout; a failure carries its stderr tail.
async fn run_capture(cmd: &mut std::process::Command) -> Result<String, StepError> {
    run_capture_with(cmd, &[]).await
}

/// [`run_capture`] with `input` on the command's stdin (secrets: never on its command line).
async fn run_capture_with(
    cmd: &mut std::process::Command,
    input: &[u8],
) -> Result<String, StepError> {
    use tokio::io::AsyncWriteExt;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let spawn_error = |e: std::io::Error| StepError::permanent(format!("run {program}: {e}"));
    let mut child =
        tokio::process::Command::from(std::mem::replace(cmd, std::process::Command::new(&program)))
            .stdin(if input.is_empty() {
                std::process::Stdio::null()
            } else {
                std::process::Stdio::piped()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that exits without reading its input is judged by its exit status.
        let _ = stdin.write_all(input).await;
        drop(stdin);
    }
    let out = child.wait_with_output().await.map_err(spawn_error)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(StepError::permanent(format!(
            "{program} failed ({}): {}",
            out.status,
            tail.join("\n")
        )))
    }
}

/// `k3s version v1.33.1+k3s1 (abc)` -> `v1.33.1+k3s1`.
fn parse_k3s_version(out: &str) -> Option<String> {
    let line = out.lines().next()?;
    let mut words = line.split_whitespace();
    (words.next()? == "k3s" && words.next()? == "version").then_some(())?;
    words.next().map(str::to_owned)
}

/// Points k3s's kubeconfig (which names `https://127.0.0.1:6443`) at the remote host.
fn rewrite_server(kubeconfig: &str, host: &str) -> String {
    kubeconfig
        .replace("https://127.0.0.1:", &format!("https://{host}:"))
        .replace("https://localhost:", &format!("https://{host}:"))
}

/// Single-quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn create_private_dir(dir: &Path) -> Result<(), StepError> {
    crate::secrets::ensure_private_dir(dir)
        .map_err(|e| StepError::permanent(format!("create {}: {e}", dir.display())))
}

/// Writes a credentials file (a cluster-admin kubeconfig) privately: 0600 from its first
/// byte, never through an existing temp file or a symlink (see [`crate::secrets::write_private`]).
fn write_private(path: &Path, text: &str) -> Result<(), StepError> {
    crate::secrets::write_private(path, text.as_bytes())
        .map_err(|e| StepError::permanent(format!("write {}: {e}", path.display())))
}

/// `k3s.ready`: the API answers `/readyz` and the node reports `Ready`.
#[derive(Debug, Clone, Serialize)]
pub struct K3sReady {
    /// How long to wait for the node.
    pub timeout: HumanDuration,
}

impl K3sReady {
    /// From the playbook's `[timeouts]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        Self {
            timeout: pb.playbook.timeouts.node_ready,
        }
    }
}

#[async_trait::async_trait]
impl Step for K3sReady {
    step_identity!("k3s.ready");

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        Ok(vec![
            Action::run("GET /readyz"),
            Action::run(format!(
                "wait for every Node condition Ready=True (timeout {})",
                self.timeout
            )),
        ])
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let client = ctx.kube().await?;
        readyz(&client).await?;
        identify_cluster(ctx, &client).await?;
        let nodes = self.wait_nodes(ctx, &client).await?;
        StepOutcome::with_outputs(false, &ReadyOutputs { nodes }).map(StepOutcome::as_ready)
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        let client = ctx.kube().await?;
        if let Err(e) = readyz(&client).await {
            return Ok(Verified::DoesNotHold {
                reason: e.to_string(),
            });
        }
        identify_cluster(ctx, &client).await?;
        let api: ::kube::Api<Node> = ::kube::Api::all(client);
        let nodes = api
            .list(&Default::default())
            .await
            .map_err(|e| StepError::classify("list nodes", e))?;
        for node in &nodes.items {
            let v = serde_json::to_value(node).unwrap_or_default();
            let (ready, status) = super::support::ready_state(&v);
            if !ready {
                return Ok(Verified::DoesNotHold {
                    reason: format!("Node {} is not Ready: {status}", node.name_any()),
                });
            }
        }
        Ok(if nodes.items.is_empty() {
            Verified::DoesNotHold {
                reason: "the cluster has no node".into(),
            }
        } else {
            Verified::Holds
        })
    }
}

/// What `k3s.ready` hands on.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReadyOutputs {
    /// Names of the Ready nodes.
    pub nodes: Vec<String>,
}

impl K3sReady {
    /// Waits (watch-based) until a node exists and every node is Ready.
    async fn wait_nodes(
        &self,
        ctx: &StepContext,
        client: &::kube::Client,
    ) -> Result<Vec<String>, StepError> {
        let api: ::kube::Api<Node> = ::kube::Api::all(client.clone());
        let options = wait_options(self.timeout);
        let mut report = reporter(ctx);
        // First any node at all (a fresh k3s registers its node a moment after /readyz).
        let waiting = ctx.waiting();
        let first = cancellable(ctx, async {
            wait_any_node(api.clone(), &options, &mut report).await
        })
        .await;
        drop(waiting);
        let first = first?;
        let mut names = vec![first];
        let listed = api
            .list(&Default::default())
            .await
            .map_err(|e| StepError::classify("list nodes", e))?;
        for n in listed.items {
            let name = n.name_any();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let node = super::support::kinds::resource("", "v1", "Node");
        let waits = StepWaits::new(ctx, client.clone(), self.timeout);
        for name in &names {
            waits.ready(&node, None, name).await?;
        }
        Ok(names)
    }
}

/// Waits for the first Node to appear (watch on the node list, no name known yet).
async fn wait_any_node(
    api: ::kube::Api<Node>,
    options: &crate::kube::WaitOptions,
    report: crate::kube::wait::Progress<'_>,
) -> Result<String, StepError> {
    use ::kube::runtime::WatchStreamExt;
    use futures::StreamExt;
    let stream = ::kube::runtime::watcher::watcher(api, Default::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    let start = tokio::time::Instant::now();
    let mut last = "no node registered yet".to_owned();
    loop {
        let next = tokio::time::timeout_at(start + options.timeout, stream.next()).await;
        match next {
            Err(_) => {
                return Err(wait_error(crate::kube::WaitError::Timeout {
                    object: "Node (any)".into(),
                    condition: "registered".into(),
                    waited: start.elapsed(),
                    last,
                }));
            }
            Ok(Some(Ok(node))) => return Ok(node.name_any()),
            Ok(Some(Err(e))) => {
                last = format!("watch error: {e}");
                report(&crate::kube::WaitProgress {
                    object: "Node (any)",
                    condition: "registered",
                    elapsed: start.elapsed(),
                    last: &last,
                });
            }
            Ok(None) => {
                return Err(StepError::transient("the node watch ended"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(provider: Provider) -> K3sInstall {
        K3sInstall {
            provider,
            k3s_version: Some("v1.33.1+k3s1".into()),
            k3s_exec: "server --disable traefik".into(),
            ssh_target: Some("admin@10.0.0.5:2222".into()),
            kubeconfig: Some("/tmp/kc".into()),
            sandbox_dir: Some("/tmp/sb".into()),
            git_repos: BTreeMap::from([("https://git.example/fleet".into(), "/srv/fleet".into())]),
            sandbox_faults: Some("api_error_rate=0.1".into()),
            sandbox_vault_server: Some("/opt/openbao/bin/bao".into()),
            ssh: Some(SshTarget {
                host: "10.0.0.5".into(),
                user: "admin".into(),
                port: 2222,
                identity_file: Some("/home/me/.ssh/id".into()),
            }),
            exec_secrets: Vec::new(),
        }
    }

    fn argv(cmd: &std::process::Command) -> Vec<String> {
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn sandbox_command_passes_dir_git_repos_faults_and_vault_server() {
        let i = install(Provider::Sandbox);
        let cmd = i.sandbox_command(Path::new("/bin/kubestrap"), Path::new("/tmp/sb"));
        assert_eq!(
            argv(&cmd),
            [
                "/bin/kubestrap",
                "sandbox",
                "up",
                "--dir",
                "/tmp/sb",
                "--git-repo",
                "https://git.example/fleet=/srv/fleet",
                "--faults",
                "api_error_rate=0.1",
                "--vault-server",
                "/opt/openbao/bin/bao"
            ]
        );
    }

    #[test]
    fn local_install_passes_version_and_exec_in_the_environment() {
        let cmd = install(Provider::K3sLocal).local_install_command();
        assert_eq!(argv(&cmd), ["/bin/sh", "-c", INSTALL_PIPELINE]);
        let env: BTreeMap<String, String> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.unwrap().to_string_lossy().into_owned(),
                )
            })
            .collect();
        assert_eq!(env["INSTALL_K3S_VERSION"], "v1.33.1+k3s1");
        assert_eq!(env["INSTALL_K3S_EXEC"], "server --disable traefik");
    }

    #[test]
    fn ssh_checks_host_keys_and_never_prompts() {
        let i = install(Provider::K3sSsh);
        let cmd = i.ssh_command("k3s --version").unwrap();
        assert_eq!(
            argv(&cmd),
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-p",
                "2222",
                "-i",
                "/home/me/.ssh/id",
                "admin@10.0.0.5",
                "--",
                "k3s --version"
            ]
        );
        assert_eq!(i.sudo(), "sudo ");
        assert_eq!(
            i.remote_install(),
            "curl -sfL https://get.k3s.io | INSTALL_K3S_VERSION='v1.33.1+k3s1' INSTALL_K3S_EXEC='server --disable traefik' sh -"
        );
    }

    #[test]
    fn referenced_secrets_are_read_from_stdin_never_written_into_the_command() {
        let mut i = install(Provider::K3sSsh);
        i.k3s_exec = "server --token ${K3S_TOKEN}".into();
        i.exec_secrets = vec!["K3S_TOKEN".into()];
        assert_eq!(
            i.remote_install(),
            "IFS= read -r K3S_TOKEN && export K3S_TOKEN && curl -sfL https://get.k3s.io | INSTALL_K3S_VERSION='v1.33.1+k3s1' INSTALL_K3S_EXEC='server --token ${K3S_TOKEN}' sh -"
        );
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }

    fn node(name: &str, server: bool, version: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": if server {
                serde_json::json!({"node-role.kubernetes.io/control-plane": "true"})
            } else {
                serde_json::json!({})
            }},
            "status": {"nodeInfo": {"kubeletVersion": version, "architecture": "amd64",
                "bootID": "", "containerRuntimeVersion": "", "kernelVersion": "",
                "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux",
                "osImage": "", "systemUUID": ""}}
        }))
        .unwrap()
    }

    #[test]
    fn version_drift_names_the_servers_off_the_pin() {
        let pin = "v1.33.1+k3s1";
        assert_eq!(version_drift(pin, &[node("a", true, pin)]), None);
        // Agents are not what k3s.install installed; servers are.
        assert_eq!(
            version_drift(
                pin,
                &[node("a", true, pin), node("w", false, "v1.32.5+k3s1")]
            ),
            None
        );
        assert_eq!(
            version_drift(pin, &[node("a", true, "v1.32.5+k3s1")]).as_deref(),
            Some(
                "[cluster] k3s_version pins v1.33.1+k3s1, but node a runs v1.32.5+k3s1: applying again runs the k3s install script with INSTALL_K3S_VERSION=v1.33.1+k3s1"
            )
        );
        // A cluster that labels no server: every node counts.
        assert!(
            version_drift(pin, &[node("b", false, "v1.34.0+k3s1")])
                .is_some_and(|r| r.contains("node b runs v1.34.0+k3s1"))
        );
    }

    #[test]
    fn k3s_version_and_kubeconfig_rewrite() {
        assert_eq!(
            parse_k3s_version("k3s version v1.33.1+k3s1 (99d91538)\ngo version go1.24"),
            Some("v1.33.1+k3s1".into())
        );
        assert_eq!(parse_k3s_version("bash: k3s: not found"), None);
        let kc = "clusters:\n- cluster:\n    server: https://127.0.0.1:6443\n";
        assert!(rewrite_server(kc, "10.0.0.5").contains("server: https://10.0.0.5:6443"));
    }

    #[test]
    fn private_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/kubeconfig");
        write_private(&path, "x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    #[ignore = "needs a real cluster"]
    fn k3s_local_install_on_a_real_machine() {
        // Run by hand on a disposable VM: `cargo test -- --ignored k3s_local`.
        let cmd = install(Provider::K3sLocal).local_install_command();
        let mut cmd = cmd;
        assert!(cmd.status().unwrap().success());
    }
}
