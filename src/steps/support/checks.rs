//! Point-in-time checks for `verify`: read an object (absent is an answer, not an error) and
//! judge one of its conditions now, without waiting.

use ::kube::Api;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::{StepError, Verified};
use crate::kube::ConditionSpec;
use crate::kube::wait::evaluate_condition;

/// `name` through `api`, or `None` when it does not exist. `what` names it in the error
/// ("GitRepository flux-system/flux-system").
///
/// # Errors
/// A classified [`StepError`] when the API cannot be asked.
pub(crate) async fn read<K>(api: &Api<K>, name: &str, what: &str) -> Result<Option<K>, StepError>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(|e| StepError::classify(format!("read {what}"), e))
}

/// The answer of a verify whose object `what` is gone.
pub(crate) fn missing(what: &str) -> Verified {
    Verified::DoesNotHold {
        reason: format!("{what} does not exist"),
    }
}

/// Whether `obj`'s condition `spec` holds now, with what was seen otherwise.
pub(crate) fn condition_now(obj: &impl Serialize, what: &str, spec: &ConditionSpec) -> Verified {
    let value = serde_json::to_value(obj).unwrap_or_default();
    let check = evaluate_condition(Some(&value), spec);
    if check.done {
        Verified::Holds
    } else {
        Verified::DoesNotHold {
            reason: format!("{what}: {}", check.status),
        }
    }
}

/// Whether `name` exists and its condition `spec` holds now.
///
/// # Errors
/// A classified [`StepError`] when the API cannot be asked.
pub(crate) async fn exists_with<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    spec: &ConditionSpec,
) -> Result<Verified, StepError>
where
    K: Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    Ok(match read(api, name, what).await? {
        Some(obj) => condition_now(&obj, what, spec),
        None => missing(what),
    })
}
