//! RBAC `PolicyRule`s and how one rule matches a request (`rbac/v1` helpers upstream):
//! `*` or exact verbs and groups, resources as `resource` or `resource/subresource` (with
//! `*` and `*/subresource`), resourceNames only for requests that name an object, and
//! non-resource URLs exactly or by a trailing `*` prefix.

use serde_json::{Value, json};

use super::attributes::{Attributes, Target};

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRule {
    /// Verbs (`*` for all).
    pub verbs: Vec<String>,
    /// API groups (`""` core, `*` all).
    pub api_groups: Vec<String>,
    /// Resources (`pods`, `pods/log`, `*`, `*/status`).
    pub resources: Vec<String>,
    /// Object names; empty = any.
    pub resource_names: Vec<String>,
    /// Non-resource URLs (`/healthz`, `/api/*`, `*`).
    pub non_resource_urls: Vec<String>,
}

use crate::json_fields::string_list as strings;

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

impl PolicyRule {
    /// Parses one `rules[]` entry.
    pub fn from_json(v: &Value) -> Self {
        Self {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    /// Every rule of a role object (`rules: null` is none).
    pub fn all_of(role: &Value) -> Vec<Self> {
        role["rules"]
            .as_array()
            .map(|a| a.iter().map(Self::from_json).collect())
            .unwrap_or_default()
    }

    /// The rule as `rules[]` JSON (empty lists left out, as the API omits them).
    pub fn to_json(&self) -> Value {
        let mut v = json!({"verbs": self.verbs});
        for (k, list) in [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !list.is_empty() {
                v[k] = json!(list);
            }
        }
        v
    }

    fn resource_matches(&self, resource: &str, subresource: &str) -> bool {
        let combined = if subresource.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}/{subresource}")
        };
        self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!subresource.is_empty()
                    && r.len() == subresource.len() + 2
                    && r.starts_with("*/")
                    && r.ends_with(subresource))
        })
    }

    fn name_matches(&self, name: &str) -> bool {
        self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == name)
    }

    fn url_matches(&self, path: &str) -> bool {
        self.non_resource_urls.iter().any(|u| {
            u == "*" || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
        })
    }

    /// Whether this rule allows the request.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        match &a.target {
            Target::Resource {
                group,
                resource,
                subresource,
                name,
                ..
            } => {
                has(&self.api_groups, group)
                    && self.resource_matches(resource, subresource)
                    && self.name_matches(name)
            }
            Target::NonResource { path } => self.url_matches(path),
        }
    }

    /// The rule split into single-verb, single-resource (single-name, single-URL) rules
    /// (`BreakdownRule` upstream), the unit escalation checks compare.
    pub fn breakdown(&self) -> Vec<PolicyRule> {
        let one = |s: &String| vec![s.clone()];
        let mut out = Vec::new();
        for g in &self.api_groups {
            for r in &self.resources {
                for v in &self.verbs {
                    let base = PolicyRule {
                        verbs: one(v),
                        api_groups: one(g),
                        resources: one(r),
                        ..PolicyRule::default()
                    };
                    if self.resource_names.is_empty() {
                        out.push(base);
                    } else {
                        for n in &self.resource_names {
                            out.push(PolicyRule {
                                resource_names: one(n),
                                ..base.clone()
                            });
                        }
                    }
                }
            }
        }
        for u in &self.non_resource_urls {
            for v in &self.verbs {
                out.push(PolicyRule {
                    verbs: one(v),
                    non_resource_urls: one(u),
                    ..PolicyRule::default()
                });
            }
        }
        out
    }

    /// Whether this (owner) rule covers a broken-down rule (`ruleCovers` upstream).
    pub fn covers(&self, sub: &PolicyRule) -> bool {
        let has_all = |set: &[String], want: &[String]| want.iter().all(|w| set.contains(w));
        let star = |set: &[String]| set.iter().any(|x| x == "*");
        let verbs = star(&self.verbs) || has_all(&self.verbs, &sub.verbs);
        let groups = star(&self.api_groups) || has_all(&self.api_groups, &sub.api_groups);
        let resources = star(&self.resources)
            || sub.resources.iter().all(|path| {
                self.resources.contains(path)
                    || path
                        .split_once('/')
                        .is_some_and(|(_, subres)| self.resources.contains(&format!("*/{subres}")))
            });
        let urls = sub.non_resource_urls.iter().all(|u| self.url_matches(u));
        let names = if sub.resource_names.is_empty() {
            self.resource_names.is_empty()
        } else {
            self.resource_names.is_empty() || has_all(&self.resource_names, &sub.resource_names)
        };
        verbs && groups && resources && urls && names
    }

    /// `{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}`: how the escalation error
    /// prints a rule (`rbacv1helpers.CompactString`).
    pub fn compact(&self) -> String {
        let q = |l: &[String]| {
            let inner: Vec<String> = l.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", inner.join(" "))
        };
        let mut parts = Vec::new();
        if !self.api_groups.is_empty() {
            parts.push(format!("APIGroups:{}", q(&self.api_groups)));
        }
        if !self.resources.is_empty() {
            parts.push(format!("Resources:{}", q(&self.resources)));
        }
        if !self.non_resource_urls.is_empty() {
            parts.push(format!("NonResourceURLs:{}", q(&self.non_resource_urls)));
        }
        if !self.resource_names.is_empty() {
            parts.push(format!("ResourceNames:{}", q(&self.resource_names)));
        }
        parts.push(format!("Verbs:{}", q(&self.verbs)));
        format!("{{{}}}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::user::UserInfo;

    fn rule(v: Value) -> PolicyRule {
        PolicyRule::from_json(&v)
    }

    fn req(verb: &str, group: &str, res: &str, sub: &str, name: &str) -> Attributes {
        Attributes::resource(
            &UserInfo::default(),
            verb,
            group,
            "v1",
            res,
            sub,
            "ns",
            name,
        )
    }

    #[test]
    fn subresources_need_their_own_grant() {
        let pods =
            rule(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "create"]}));
        assert!(pods.allows(&req("get", "", "pods", "", "p")));
        assert!(!pods.allows(&req("create", "", "pods", "portforward", "p")));
        let star_sub = rule(json!({"apiGroups": [""], "resources": ["*/status"], "verbs": ["*"]}));
        assert!(star_sub.allows(&req("update", "", "pods", "status", "p")));
        assert!(!star_sub.allows(&req("update", "", "pods", "", "p")));
        let all = rule(json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}));
        assert!(all.allows(&req("create", "apps", "deployments", "scale", "d")));
        assert!(!pods.allows(&req("get", "apps", "pods", "", "p")));
    }

    #[test]
    fn resource_names_never_match_unnamed_requests() {
        let r = rule(
            json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["keys"], "verbs": ["get", "list", "create"]}),
        );
        assert!(r.allows(&req("get", "", "secrets", "", "keys")));
        assert!(!r.allows(&req("get", "", "secrets", "", "other")));
        assert!(!r.allows(&req("list", "", "secrets", "", "")));
        assert!(!r.allows(&req("create", "", "secrets", "", "")));
        // A list pinned to the name by a field selector names it.
        assert!(r.allows(&req("list", "", "secrets", "", "keys")));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix() {
        let r = rule(json!({"nonResourceURLs": ["/api", "/api/*", "/version"], "verbs": ["get"]}));
        let u = UserInfo::default();
        assert!(r.allows(&Attributes::non_resource(&u, "get", "/api")));
        assert!(r.allows(&Attributes::non_resource(&u, "get", "/api/v1")));
        assert!(!r.allows(&Attributes::non_resource(&u, "get", "/apis")));
        assert!(!r.allows(&Attributes::non_resource(&u, "post", "/version")));
        assert!(!r.allows(&req("get", "", "pods", "", "")));
    }

    #[test]
    fn compact_prints_like_the_escalation_message() {
        let r = rule(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}));
        assert_eq!(
            r.compact(),
            r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#
        );
        let admin = rule(json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}));
        assert!(r.breakdown().iter().all(|b| admin.covers(b)));
        assert!(!admin.breakdown().iter().all(|b| r.covers(b)));
        let two = rule(
            json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}),
        );
        assert_eq!(two.breakdown().len(), 4);
        let sub = rule(json!({"apiGroups": [""], "resources": ["*/log"], "verbs": ["get"]}));
        assert!(sub.covers(&rule(
            json!({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]})
        )));
    }
}
