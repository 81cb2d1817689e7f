//! The preflight at the CLI edge: the command line's overrides and the selected steps, handed to
//! [`crate::preflight`] before anything is written or requested.

use super::{CliError, Common};
use crate::playbook::LoadedPlaybook;
use crate::preflight::{Env, Inputs};

/// Checks every local fact the run needs; with `only`, just those of the selected steps.
/// Synthetic test steps (`--synthetic-steps`) touch no cluster, file or binary: nothing to check.
///
/// # Errors
/// [`CliError::Preflight`] listing every problem.
pub(super) fn check(common: &Common, pb: &LoadedPlaybook, only: &[String]) -> Result<(), CliError> {
    #[cfg(feature = "test-hooks")]
    if common.synthetic_steps.is_some() {
        return Ok(());
    }
    let runs = |id: &str| only.is_empty() || only.iter().any(|o| o == id);
    crate::preflight::check(&Inputs {
        playbook: pb,
        kubeconfig_flag: common.kubeconfig.as_deref(),
        context_flag: common.context.as_deref(),
        runs: &runs,
        env: Env::current(),
    })?;
    Ok(())
}

/// Checks only what reaching the cluster needs (the kubeconfig and context), for commands that
/// run no step (`kubestrap unseal`).
///
/// # Errors
/// [`CliError::Preflight`] listing every problem.
pub(super) fn check_cluster(common: &Common, pb: &LoadedPlaybook) -> Result<(), CliError> {
    crate::preflight::check(&Inputs {
        playbook: pb,
        kubeconfig_flag: common.kubeconfig.as_deref(),
        context_flag: common.context.as_deref(),
        runs: &|_| false,
        env: Env::current(),
    })?;
    Ok(())
}
