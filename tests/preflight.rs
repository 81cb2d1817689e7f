//! The preflight (issue 11): every local fact a run needs is checked before the first step, so
//! a bad input exits 2 with every problem listed and nothing written: no checkpoint, no lock
//! file, no cluster write (the sandbox's write log stays empty).
//!
//! Each test is one class of bad input a new user makes. Where a cluster is involved it is an
//! in-process sandbox reached as an `existing` cluster, so its write log proves nothing was sent.

use std::path::{Path, PathBuf};
use std::process::Output;

use kubestrap_sandbox::store::Actor;
use kubestrap_sandbox::{SandboxConfig, SandboxHandle};
use kubestrap_test_support::{self as common, kubestrap_bin, start_sandbox};

/// A playbook for an `existing` cluster at `kubeconfig`, with a real module and binary unless
/// the test replaces them.
fn playbook(kubeconfig: &str, extra_flux: &str, terraform: &str) -> String {
    format!(
        r#"[cluster]
name = "test"
provider = "existing"
kubeconfig = {kubeconfig:?}

[flux]
git_url = "https://example.com/org/fleet"
path = "clusters/test"
token_env = "KS_TEST_TOKEN"
{extra_flux}

[terraform]
{terraform}

[[secrets]]
env = "KS_TEST_TOKEN"
vault_path = "bootstrap/git"
vault_key = "token"
required = false
"#
    )
}

/// `dir/module` with one `.tf` file.
fn module(dir: &Path) -> &'static str {
    std::fs::create_dir_all(dir.join("module")).unwrap();
    std::fs::write(dir.join("module/main.tf"), "").unwrap();
    "dir = \"module\"\nbinary = \"terraform\""
}

/// A PATH holding a fake `terraform` (never run: the preflight only looks for it).
fn path_with_terraform(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let tf = bin.join("terraform");
    std::fs::write(&tf, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o755)).unwrap();
    let system = std::env::var("PATH").unwrap_or_default();
    format!("{}:{system}", bin.display())
}

/// Every path under `dir`, sorted: the state after a run must equal the state before it.
fn tree(dir: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            out.push(e.path());
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// A sandbox in the test's own runtime, the cluster behind the `existing` playbooks.
struct Live {
    rt: tokio::runtime::Runtime,
    handle: Option<SandboxHandle>,
    _dir: tempfile::TempDir,
}

impl Live {
    fn start() -> Self {
        let rt = common::serving_runtime();
        let dir = tempfile::tempdir().unwrap();
        let (handle, _) = rt.block_on(start_sandbox(SandboxConfig::new(dir.path().join("sb"))));
        Self {
            rt,
            handle: Some(handle),
            _dir: dir,
        }
    }

    fn kubeconfig(&self) -> String {
        self.handle().kubeconfig_path().display().to_string()
    }

    fn handle(&self) -> &SandboxHandle {
        self.handle.as_ref().unwrap()
    }

    /// Writes by API clients (the controllers' own are not kubestrap's).
    fn client_writes(&self) -> usize {
        self.handle()
            .shared()
            .cluster
            .store
            .writes()
            .iter()
            .filter(|w| w.actor == Actor::Client)
            .count()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = self.rt.block_on(h.shutdown());
        }
    }
}

/// `kubestrap ARGS` in `dir`, with PATH as given and the Git token set, so the preflight's
/// problems are the only ones.
fn run(dir: &Path, args: &[&str], path: &str) -> Output {
    common::run(
        &kubestrap_bin!(),
        args,
        dir,
        &[("PATH", path), ("KS_TEST_TOKEN", "preflight-canary")],
    )
}

/// As [`run`], without the Git token.
fn run_without_token(dir: &Path, args: &[&str], path: &str) -> Output {
    common::run(&kubestrap_bin!(), args, dir, &[("PATH", path)])
}

/// Exit 2, nothing new in `dir`, the messages in stderr; returns stderr.
/// Runs kubestrap `args` in `dir` with Terraform on PATH and checks it was refused (see
/// [`assert_refused`]); returns its stderr.
fn apply_refused(dir: &Path, args: &[&str], wanted: &[&str]) -> String {
    let search = path_with_terraform(&dir.join("tools"));
    let before = tree(dir);
    let out = run(dir, args, &search);
    assert_refused(&out, dir, &before, wanted)
}

fn assert_refused(out: &Output, dir: &Path, before: &[PathBuf], wanted: &[&str]) -> String {
    let all = common::text(out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for w in wanted {
        assert!(stderr.contains(w), "missing {w:?} in:\n{all}");
    }
    assert!(
        stderr.contains("nothing was written"),
        "the message must say nothing was touched:\n{all}"
    );
    assert_eq!(tree(dir), before, "the run wrote files:\n{all}");
    assert!(!dir.join(".kubestrap").exists(), "{all}");
    stderr
}

#[test]
fn a_missing_terraform_dir_is_refused_before_phase_one_writes() {
    let live = Live::start();
    let dir = tempfile::tempdir().unwrap();
    let pb = playbook(
        &live.kubeconfig(),
        "",
        "dir = \"no-such-module\"\nbinary = \"terraform\"",
    );
    let _ = common::write_playbook(dir.path(), &pb);
    let stderr = apply_refused(
        dir.path(),
        &["apply", "-p", "kubestrap.toml"],
        &[
            "kubestrap.toml:13:1: `terraform.dir`",
            "no-such-module does not exist",
            "point [terraform] dir at",
        ],
    );
    assert!(!stderr.contains("secrets.terraform"), "{stderr}");
    assert_eq!(live.client_writes(), 0, "no cluster write");
}

#[test]
fn a_terraform_binary_not_on_path_is_refused_before_any_write() {
    let live = Live::start();
    let dir = tempfile::tempdir().unwrap();
    let tf = module(dir.path()).replace("\"terraform\"", "\"tofu\"");
    let _ = common::write_playbook(dir.path(), &playbook(&live.kubeconfig(), "", &tf));
    let empty = dir.path().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let before = tree(dir.path());
    let out = run(dir.path(), &["apply"], &empty.display().to_string());
    assert_refused(
        &out,
        dir.path(),
        &before,
        &[":14:1: `terraform.binary`", "\"tofu\" is not on PATH"],
    );
    assert_eq!(live.client_writes(), 0);
}

#[test]
fn a_missing_local_install_manifest_is_refused_before_any_write() {
    let live = Live::start();
    let dir = tempfile::tempdir().unwrap();
    let tf = module(dir.path());
    let _ = common::write_playbook(
        dir.path(),
        &playbook(
            &live.kubeconfig(),
            "install_manifest = \"flux/install.yaml\"",
            tf,
        ),
    );
    apply_refused(
        dir.path(),
        &["apply"],
        &[
            ":10:1: `flux.install_manifest`",
            "flux/install.yaml does not exist",
        ],
    );
    assert_eq!(live.client_writes(), 0);
}

#[test]
fn k3s_ssh_without_a_kubeconfig_is_refused_before_ssh_runs() {
    let dir = tempfile::tempdir().unwrap();
    let tf = module(dir.path());
    let pb = playbook("unused", "", tf).replace("kubeconfig = \"unused\"\n", "");
    let pb = on_k3s_ssh(&pb, "host = \"kubestrap-preflight.invalid\"");
    let _ = common::write_playbook(dir.path(), &pb);
    apply_refused(
        dir.path(),
        &["apply"],
        &[
            "`cluster.kubeconfig`",
            "set [cluster] kubeconfig = \"test.kubeconfig\"",
        ],
    );
}

#[test]
fn a_k3s_ssh_host_missing_from_known_hosts_gets_an_ssh_keyscan_remedy() {
    let system = std::env::var("PATH").unwrap_or_default();
    let on_path = |b: &str| kubestrap::terraform::find_on_path(b, system.as_ref()).is_some();
    if !on_path("ssh") || !on_path("ssh-keygen") {
        eprintln!("skipped: needs the OpenSSH client");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tf = module(dir.path());
    let pb = on_k3s_ssh(
        &playbook("k3s.kubeconfig", "", tf),
        "host = \"kubestrap-preflight.invalid\"\nport = 2222",
    );
    let _ = common::write_playbook(dir.path(), &pb);
    apply_refused(
        dir.path(),
        &["apply"],
        &[
            "`cluster.ssh.host`",
            "[kubestrap-preflight.invalid]:2222 is not in known_hosts",
            "ssh-keyscan -p 2222 kubestrap-preflight.invalid >>",
        ],
    );
}

#[test]
fn an_existing_cluster_whose_kubeconfig_is_missing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tf = module(dir.path());
    let _ = common::write_playbook(dir.path(), &playbook("gone.yaml", "", tf));
    apply_refused(
        dir.path(),
        &["apply"],
        &[":4:1: `cluster.kubeconfig`", "gone.yaml does not exist"],
    );
}

#[test]
fn an_existing_cluster_context_missing_from_the_kubeconfig_is_reported_once() {
    let live = Live::start();
    let dir = tempfile::tempdir().unwrap();
    let tf = module(dir.path());
    let _ = common::write_playbook(dir.path(), &playbook(&live.kubeconfig(), "", tf));
    let stderr = apply_refused(
        dir.path(),
        &["apply", "--context", "prod-eu"],
        &["--context: context \"prod-eu\" is not defined in"],
    );
    assert_eq!(stderr.matches("prod-eu").count(), 1, "once:\n{stderr}");
    assert_eq!(live.client_writes(), 0);
}

#[test]
fn plan_shows_the_same_problems_and_every_problem_is_listed_at_once() {
    let live = Live::start();
    let dir = tempfile::tempdir().unwrap();
    let _ = common::write_playbook(
        dir.path(),
        &playbook(
            &live.kubeconfig(),
            "install_manifest = \"flux/install.yaml\"",
            "dir = \"no-such-module\"\nbinary = \"tofu\"",
        )
        .replace("required = false", "required = true"),
    );
    let empty = dir.path().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let empty = empty.display().to_string();
    let before = tree(dir.path());
    let wanted = [
        "preflight found 3 problems",
        "`flux.install_manifest`",
        "`terraform.dir`",
        "`terraform.binary`",
    ];
    // plan shows the same problems, and still the plan (it changes nothing).
    let plan = run(dir.path(), &["plan"], &empty);
    let all = common::text(&plan);
    assert_eq!(plan.status.code(), Some(0), "{all}");
    let stderr = String::from_utf8_lossy(&plan.stderr);
    assert!(
        stderr.contains("warning: `apply` would stop before its first step (exit 2)"),
        "{all}"
    );
    for w in wanted {
        assert!(stderr.contains(w), "plan lacks {w:?}:\n{all}");
    }
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains("Phase 1/5"),
        "{all}"
    );
    assert!(!dir.path().join(".kubestrap").exists(), "{all}");
    let apply = run_without_token(dir.path(), &["apply"], &empty);
    let stderr = assert_refused(&apply, dir.path(), &before, &wanted);
    assert!(
        stderr.contains("KS_TEST_TOKEN"),
        "the missing secret is listed too:\n{stderr}"
    );
    assert_eq!(live.client_writes(), 0);
}

/// `pb` (provider `existing`) turned into a `k3s-ssh` playbook whose `[cluster.ssh]` table holds
/// `ssh` (TOML lines, `\n`-separated).
fn on_k3s_ssh(pb: &str, ssh: &str) -> String {
    pb.replace(
        "provider = \"existing\"",
        "provider = \"k3s-ssh\"\nk3s_version = \"v1.33.1+k3s1\"",
    )
    .replace("[flux]", &format!("[cluster.ssh]\n{ssh}\n\n[flux]"))
}
