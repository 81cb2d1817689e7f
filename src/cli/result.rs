//! Builds the result block ([`output::RunResult`]) from the playbook, the command line and the
//! run: the only place that knows both what the playbook asked for and how the user called us.

use std::path::Path;

use crate::engine::RunStatus;
use crate::output::{RunResult, VaultResult};
use crate::playbook::{LoadedPlaybook, VaultAccess};

/// The port the Vault chart serves on.
const VAULT_PORT: u16 = 8200;

/// What `apply -p playbook` built, for the result block. `kubeconfig` is the one the run used
/// (`--kubeconfig`, else the playbook's); `playbook` is the path as the user gave it, so the
/// printed commands work from the same directory.
pub(crate) fn build(
    pb: &LoadedPlaybook,
    playbook: &Path,
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    status: RunStatus,
) -> RunResult {
    let p = &pb.playbook;
    // The next commands start with `export KUBECONFIG=…` (absolute, so they work from any
    // directory) and stay short after it.
    let mut kubectl = String::from("kubectl");
    if let Some(ctx) = context {
        kubectl.push_str(&format!(" --context {ctx}"));
    }
    let vault = match p.vault.access {
        VaultAccess::PortForward => VaultResult {
            address: format!(
                "http://{}.{}.svc:{VAULT_PORT}",
                p.vault.release, p.vault.namespace
            ),
            reach: Some(format!(
                "{kubectl} -n {} port-forward svc/{} {VAULT_PORT}:{VAULT_PORT}",
                p.vault.namespace, p.vault.release
            )),
            vault_addr: format!("http://127.0.0.1:{VAULT_PORT}"),
        },
        VaultAccess::Address => {
            let addr = p.vault.address.clone().unwrap_or_default();
            VaultResult {
                address: addr.clone(),
                reach: None,
                vault_addr: addr,
            }
        }
    };
    let pb_arg = shown(playbook);
    let report = pb.cluster_dir().join("report.json");
    let mut next: Vec<String> = kubeconfig
        .map(|k| {
            let abs = std::path::absolute(k).unwrap_or_else(|_| k.to_path_buf());
            format!("export KUBECONFIG={}", abs.display())
        })
        .into_iter()
        .collect();
    next.extend([
        format!("{kubectl} get nodes"),
        format!(
            "{kubectl} -n {} get gitrepositories,kustomizations",
            p.flux.namespace
        ),
        format!("{kubectl} get helmreleases,externalsecrets -A"),
    ]);
    next.extend(vault.reach.clone());
    next.push(format!("kubestrap status -p {pb_arg}"));
    RunResult {
        status,
        cluster: p.cluster.name.clone(),
        provider: p.cluster.provider.as_str().to_owned(),
        kubeconfig: kubeconfig.map(shown),
        vault,
        keys_secret: format!("{}/{}", p.vault.namespace, p.vault.keys_secret),
        next,
        stop: pb
            .sandbox_dir()
            .map(|d| format!("kubestrap sandbox down --dir {}", shown(&d))),
        resume: format!("kubestrap apply -p {pb_arg} --resume"),
        report: report.exists().then(|| shown(&report)),
    }
}

/// A path as a user reads it: relative ones without a leading `./`.
fn shown(path: &Path) -> String {
    path.strip_prefix(".").unwrap_or(path).display().to_string()
}
