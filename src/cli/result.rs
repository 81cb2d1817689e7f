//! Builds the result block ([`output::RunResult`]) from the playbook, the command line and the
//! run: the only place that knows both what the playbook asked for and how the user called us.

use std::path::Path;

use crate::engine::RunStatus;
use crate::output::{RunResult, VaultResult};
use crate::playbook::{LoadedPlaybook, VaultAccess};
use crate::steps::VaultNames;

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
    // The chart's Service is its fullname, not the release (`bank` → `bank-vault`).
    let names = VaultNames::new(p.vault.flavor, &p.vault.release);
    let vault = match p.vault.access {
        VaultAccess::PortForward => VaultResult {
            address: names.address(&p.vault.namespace),
            reach: Some(format!(
                "{kubectl} -n {} port-forward svc/{} {VAULT_PORT}:{VAULT_PORT}",
                p.vault.namespace,
                names.service()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn result_for(vault: &str) -> RunResult {
        let text = format!(
            "[cluster]\nname = \"t\"\nprovider = \"existing\"\n[flux]\ngit_url = \"https://example.com/org/fleet\"\npath = \"clusters/t\"\ntoken_env = \"KS_T\"\n[[secrets]]\nenv = \"KS_T\"\nvault_path = \"bootstrap/git\"\nvault_key = \"token\"\n[vault]\n{vault}\n"
        );
        let pb = crate::playbook::Playbook::from_str_at(&text, Path::new("/tmp/r/kubestrap.toml"))
            .expect("playbook");
        build(
            &pb,
            Path::new("kubestrap.toml"),
            None,
            None,
            RunStatus::Succeeded,
        )
    }

    /// Regression: the result block named the Vault Service after the release, but the chart
    /// names it after its fullname, so for release `bank` it printed `svc/bank`, which does
    /// not exist (the Service is `bank-vault`; with OpenBao `bank-openbao`).
    #[test]
    fn result_block_names_the_vault_service_by_the_chart_fullname() {
        let r = result_for("release = \"bank\"");
        assert_eq!(r.vault.address, "http://bank-vault.vault.svc:8200");
        assert!(
            r.next
                .iter()
                .any(|l| l == "kubectl -n vault port-forward svc/bank-vault 8200:8200"),
            "{:?}",
            r.next
        );
        let r = result_for("flavor = \"openbao\"\nrelease = \"bank\"");
        assert_eq!(r.vault.address, "http://bank-openbao.openbao.svc:8200");
        let r = result_for("flavor = \"openbao\"");
        assert!(
            r.next
                .iter()
                .any(|l| l == "kubectl -n openbao port-forward svc/openbao 8200:8200"),
            "{:?}",
            r.next
        );
        assert_eq!(r.keys_secret, "openbao/vault-init-keys");
    }
}
