//! `status`'s diagnosis of a failed step: the root-cause chain recorded with the step's error,
//! walked again live from the same awaited object when the cluster answers (the cause may have
//! changed since), else the recorded one.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::engine::{Diagnosis, StatusReport, StepStatus};
use crate::kube::KubeAccess;
use crate::steps::support::diagnose;

/// The live walk gives up after this long (an unreachable cluster must not hold `status`).
const LIVE_LIMIT: Duration = Duration::from_secs(15);

/// A failed step's chain and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StepDiagnosis {
    /// The chain, deepest object first.
    pub chain: Diagnosis,
    /// Read from the cluster now (else: as recorded when the step failed).
    pub live: bool,
}

/// The chains of the failed or interrupted steps of `report`, by step id.
pub(super) fn failed_steps(
    report: &StatusReport,
    access: &KubeAccess,
) -> BTreeMap<String, StepDiagnosis> {
    let recorded: Vec<(String, Diagnosis)> = report
        .steps
        .iter()
        .filter(|s| matches!(s.status, StepStatus::Failed | StepStatus::Interrupted))
        .filter_map(|s| {
            let chain = Diagnosis::parse(s.last_error.as_deref()?)?;
            Some((s.id.as_str().to_owned(), chain))
        })
        .collect();
    if recorded.is_empty() {
        return BTreeMap::new();
    }
    let live = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()
        .map(|rt| {
            rt.block_on(async {
                let Ok(Ok(client)) = tokio::time::timeout(LIVE_LIMIT, access.client()).await else {
                    return Vec::new();
                };
                let mut out = Vec::new();
                for (_, chain) in &recorded {
                    let root = chain.levels.last().map(|l| l.object.as_str()).unwrap_or("");
                    let found = tokio::time::timeout(LIVE_LIMIT, diagnose::walk(&client, root))
                        .await
                        .ok()
                        .flatten();
                    out.push(found.map(|f| f.diagnosis));
                }
                out
            })
        })
        .unwrap_or_default();
    recorded
        .into_iter()
        .enumerate()
        .map(|(i, (id, chain))| {
            let diagnosis = match live.get(i).cloned().flatten() {
                Some(now) => StepDiagnosis {
                    chain: now,
                    live: true,
                },
                None => StepDiagnosis { chain, live: false },
            };
            (id, diagnosis)
        })
        .collect()
}
