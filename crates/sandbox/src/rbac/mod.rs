//! Authorization as a k3s apiserver does it: every request is authorized for its user (the
//! admin kubeconfig is `system:admin` in `system:masters`; service-account tokens and
//! impersonated users get exactly what their Roles, ClusterRoles and bindings grant), with the
//! default roles a real cluster creates, aggregation, escalation prevention, the access
//! reviews behind `kubectl auth can-i`, and Forbidden messages worded as upstream.
//!
//! The sandbox's simulated controllers ask the same question for the service account of the
//! workload they stand for ([`check`]), so a missing grant fails there as it would for real.

mod attributes;
mod authorizer;
mod bootstrap;
pub mod escalation;
mod forbidden;
pub mod impersonation;
pub mod reviews;
mod rules;
mod user;

pub use attributes::{Attributes, Target};
pub use authorizer::{Decision, authorize, rules_for};
pub use bootstrap::{AggregationController, ensure_defaults};
pub use forbidden::{forbidden, forbidden_message, new_forbidden};
pub use rules::PolicyRule;
pub use user::{
    ADMIN, AUTHENTICATED, MASTERS, SERVICE_ACCOUNTS, UNAUTHENTICATED, UserInfo,
    service_account_username, split_service_account,
};

use crate::status::ApiError;
use crate::store::Store;

/// Authorizes `a`, answering a denial with the apiserver's Forbidden Status.
///
/// # Errors
/// 403 Forbidden when no bound rule allows the request.
pub fn check(store: &Store, a: &Attributes) -> Result<(), ApiError> {
    let d = authorize(store, a);
    if d.allowed {
        Ok(())
    } else {
        Err(forbidden(a, &d.reason))
    }
}
