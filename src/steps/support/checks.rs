//! Point-in-time checks for `verify`: read an object (absent is an answer, not an error) and
//! judge one of its conditions now, without waiting.

use ::kube::Api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
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

/// Why a CRD being deleted does not count as established (`what` names it).
pub(crate) fn crd_being_deleted(what: &str) -> String {
    format!("{what} is being deleted (its custom resources are deleted with it)")
}

/// Whether every named CustomResourceDefinition exists, is not being deleted and is
/// `Established=True` now: what a wait for the CRDs made sure of, checked once.
///
/// # Errors
/// A classified [`StepError`] when the API cannot be asked.
pub(crate) async fn crds_established(
    client: ::kube::Client,
    names: &[&str],
) -> Result<Verified, StepError> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let established = ConditionSpec::is_true("Established");
    for name in names {
        let what = format!("CustomResourceDefinition {name}");
        let Some(crd) = read(&api, name, &what).await? else {
            return Ok(missing(&what));
        };
        if crd.metadata.deletion_timestamp.is_some() {
            return Ok(Verified::DoesNotHold {
                reason: crd_being_deleted(&what),
            });
        }
        let now = condition_now(&crd, &what, &established);
        if now != Verified::Holds {
            return Ok(now);
        }
    }
    Ok(Verified::Holds)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::kube::mock::{self, Reply};

    const CRDS: [&str; 2] = [
        "gitrepositories.source.toolkit.fluxcd.io",
        "kustomizations.kustomize.toolkit.fluxcd.io",
    ];

    fn crd(name: &str, established: &str, deleting: bool) -> Value {
        let mut v = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {"group": "g", "names": {"kind": "K", "plural": "ks"}, "scope": "Namespaced",
                     "versions": []},
            "status": {"conditions": [
                {"type": "NamesAccepted", "status": "True"},
                {"type": "Established", "status": established}
            ]}
        });
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        v
    }

    /// A cluster holding `objects` (CRD name => object); the others are 404.
    async fn verify(objects: Vec<(&'static str, Value)>) -> Verified {
        let (client, _log) = mock::client(move |_method, path, _query, _body| {
            let name = path.rsplit('/').next().unwrap_or_default();
            match objects.iter().find(|(n, _)| *n == name) {
                Some((_, o)) => Reply::Json(200, o.clone()),
                None => mock::status(404, "NotFound", "not found"),
            }
        });
        crds_established(client, &CRDS).await.unwrap()
    }

    #[tokio::test]
    async fn crds_established_holds_only_while_every_crd_is_there_and_established() {
        let [git, ks] = CRDS;
        assert_eq!(
            verify(vec![
                (git, crd(git, "True", false)),
                (ks, crd(ks, "True", false))
            ])
            .await,
            Verified::Holds
        );
        let reason = |v: Verified| match v {
            Verified::DoesNotHold { reason } => reason,
            Verified::Holds => panic!("holds"),
        };
        assert_eq!(
            reason(verify(vec![(git, crd(git, "True", false))]).await),
            format!("CustomResourceDefinition {ks} does not exist")
        );
        let not_established = reason(
            verify(vec![
                (git, crd(git, "True", false)),
                (ks, crd(ks, "False", false)),
            ])
            .await,
        );
        assert!(
            not_established.starts_with(&format!("CustomResourceDefinition {ks}: ")),
            "{not_established}"
        );
        assert_eq!(
            reason(
                verify(vec![
                    (git, crd(git, "True", true)),
                    (ks, crd(ks, "True", false))
                ])
                .await
            ),
            format!(
                "CustomResourceDefinition {git} is being deleted (its custom resources are deleted with it)"
            )
        );
    }
}
