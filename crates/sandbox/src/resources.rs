//! The resource-type registry: which group/version/resource triples the API serves.
//!
//! Built-in kinds come from a static table; CustomResourceDefinitions add and remove
//! entries at run time, so discovery, OpenAPI and routing all read this one registry.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

/// One served resource type (one group/version/plural).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    /// API group, `""` for the core group.
    pub group: String,
    /// Version served under this entry.
    pub version: String,
    /// Plural resource name used in URLs.
    pub plural: String,
    /// Singular name (discovery `singularName`).
    pub singular: String,
    /// Kind of the objects.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names (`cm`, `deploy`, ...).
    pub short_names: Vec<String>,
    /// Discovery categories (`all`).
    pub categories: Vec<String>,
    /// Whether `/status` is a subresource whose writes are kept apart from spec writes.
    pub status_subresource: bool,
    /// Built-in types accept strategic-merge patches; custom resources answer 415.
    pub builtin: bool,
    /// Extra subresources with their verbs (`token`, `portforward`, `scale`).
    pub extra_subresources: Vec<(String, Vec<String>)>,
    /// Only `create` is allowed and nothing is stored (TokenReview).
    pub create_only: bool,
    /// Structural schema (CRDs), used for defaults and OpenAPI.
    pub schema: Option<Value>,
    /// CRD `additionalPrinterColumns`: (name, type, JSONPath), for `kubectl get` tables.
    pub printer_columns: Vec<(String, String, String)>,
}

impl ResourceType {
    /// `apiVersion` of the objects (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        match self.group.as_str() {
            "" => self.version.clone(),
            group => format!("{group}/{}", self.version),
        }
    }

    /// Storage key shared by all versions of one group/resource.
    pub fn storage_key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    /// `secrets` or `externalsecrets.external-secrets.io`, as error messages name it.
    pub fn qualified(&self) -> String {
        match self.group.as_str() {
            "" => self.plural.clone(),
            group => format!("{}.{group}", self.plural),
        }
    }

    /// URL prefix of the collection, without namespace (`/api/v1`, `/apis/apps/v1`): the core
    /// group lives under `/api`, named groups under `/apis/<group>`.
    pub fn gv_prefix(&self) -> String {
        match self.group.as_str() {
            "" => format!("/api/{}", self.version),
            group => format!("/apis/{group}/{}", self.version),
        }
    }

    /// Verbs of the main resource, as discovery lists them.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.create_only {
            vec!["create"]
        } else {
            vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }
}

/// Compact description used to build the built-in table.
struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    extra: &'static [(&'static str, &'static [&'static str])],
}

#[expect(
    clippy::too_many_arguments,
    reason = "a positional table row reads best for the built-in list"
)]
const fn b(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
) -> Builtin {
    Builtin {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        short,
        status,
        extra: &[],
    }
}

const BUILTINS: &[Builtin] = &[
    b(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        true,
    ),
    b("", "v1", "nodes", "node", "Node", false, &["no"], true),
    b("", "v1", "secrets", "secret", "Secret", true, &[], false),
    b(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        false,
    ),
    Builtin {
        extra: &[("token", &["create"])],
        ..b(
            "",
            "v1",
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            true,
            &["sa"],
            false,
        )
    },
    b(
        "",
        "v1",
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        true,
    ),
    b(
        "",
        "v1",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        false,
    ),
    Builtin {
        extra: &[("portforward", &["create", "get"]), ("log", &["get"])],
        ..b("", "v1", "pods", "pod", "Pod", true, &["po"], true)
    },
    b("", "v1", "events", "event", "Event", true, &["ev"], false),
    b(
        "",
        "v1",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        true,
    ),
    b(
        "",
        "v1",
        "persistentvolumes",
        "persistentvolume",
        "PersistentVolume",
        false,
        &["pv"],
        true,
    ),
    Builtin {
        extra: &[("scale", &["get", "patch", "update"])],
        ..b(
            "apps",
            "v1",
            "deployments",
            "deployment",
            "Deployment",
            true,
            &["deploy"],
            true,
        )
    },
    Builtin {
        extra: &[("scale", &["get", "patch", "update"])],
        ..b(
            "apps",
            "v1",
            "statefulsets",
            "statefulset",
            "StatefulSet",
            true,
            &["sts"],
            true,
        )
    },
    b(
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        &["ds"],
        true,
    ),
    b(
        "apps",
        "v1",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        &["rs"],
        true,
    ),
    b("batch", "v1", "jobs", "job", "Job", true, &[], true),
    b(
        "batch",
        "v1",
        "cronjobs",
        "cronjob",
        "CronJob",
        true,
        &["cj"],
        true,
    ),
    b(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        &[],
        false,
    ),
    b(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        &[],
        false,
    ),
    b(
        "",
        "v1",
        "resourcequotas",
        "resourcequota",
        "ResourceQuota",
        true,
        &["quota"],
        true,
    ),
    b(
        "",
        "v1",
        "limitranges",
        "limitrange",
        "LimitRange",
        true,
        &["limits"],
        false,
    ),
    b(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        "HorizontalPodAutoscaler",
        true,
        &["hpa"],
        true,
    ),
    b(
        "apiregistration.k8s.io",
        "v1",
        "apiservices",
        "apiservice",
        "APIService",
        false,
        &[],
        true,
    ),
    b(
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "ingressclass",
        "IngressClass",
        false,
        &[],
        false,
    ),
    b(
        "events.k8s.io",
        "v1",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        true,
        &[],
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &[],
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        &[],
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &[],
        false,
    ),
    b(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        true,
    ),
    b(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "ingress",
        "Ingress",
        true,
        &["ing"],
        true,
    ),
    b(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "networkpolicy",
        "NetworkPolicy",
        true,
        &["netpol"],
        false,
    ),
    b(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        true,
    ),
    b(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "storageclass",
        "StorageClass",
        false,
        &["sc"],
        false,
    ),
    b(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        "ValidatingWebhookConfiguration",
        false,
        &[],
        false,
    ),
    b(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration",
        "MutatingWebhookConfiguration",
        false,
        &[],
        false,
    ),
    b(
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "priorityclass",
        "PriorityClass",
        false,
        &["pc"],
        false,
    ),
];

fn builtin_types() -> Vec<ResourceType> {
    let mut out: Vec<ResourceType> = BUILTINS
        .iter()
        .map(|b| ResourceType {
            group: b.group.into(),
            version: b.version.into(),
            plural: b.plural.into(),
            singular: b.singular.into(),
            kind: b.kind.into(),
            namespaced: b.namespaced,
            short_names: b.short.iter().map(|s| s.to_string()).collect(),
            categories: if matches!(
                b.plural,
                "pods"
                    | "services"
                    | "deployments"
                    | "statefulsets"
                    | "daemonsets"
                    | "replicasets"
                    | "jobs"
                    | "cronjobs"
            ) {
                vec!["all".into()]
            } else {
                vec![]
            },
            status_subresource: b.status,
            builtin: true,
            extra_subresources: b
                .extra
                .iter()
                .map(|(n, v)| (n.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            create_only: false,
            schema: None,
            printer_columns: vec![],
        })
        .collect();
    // Reviews: create-only, nothing stored.
    for (group, plural, kind, namespaced) in [
        (
            "authentication.k8s.io",
            "tokenreviews",
            "TokenReview",
            false,
        ),
        (
            "authorization.k8s.io",
            "subjectaccessreviews",
            "SubjectAccessReview",
            false,
        ),
        (
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            false,
        ),
        (
            "authorization.k8s.io",
            "localsubjectaccessreviews",
            "LocalSubjectAccessReview",
            true,
        ),
        (
            "authorization.k8s.io",
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            false,
        ),
        (
            "authentication.k8s.io",
            "selfsubjectreviews",
            "SelfSubjectReview",
            false,
        ),
    ] {
        out.push(ResourceType {
            group: group.into(),
            version: "v1".into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            short_names: vec![],
            categories: vec![],
            status_subresource: false,
            builtin: true,
            extra_subresources: vec![],
            create_only: true,
            schema: None,
            printer_columns: vec![],
        });
    }
    out
}

/// The set of served resource types; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<RwLock<RegistryInner>>,
}

#[derive(Debug)]
struct RegistryInner {
    builtin: Vec<Arc<ResourceType>>,
    /// CRD-served types, keyed by CRD name (`<plural>.<group>`).
    custom: BTreeMap<String, Vec<Arc<ResourceType>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry holding the built-in kinds.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(RwLock::new(RegistryInner {
                builtin: builtin_types().into_iter().map(Arc::new).collect(),
                custom: BTreeMap::new(),
            })),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RegistryInner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Every served type, built-ins first.
    pub fn all(&self) -> Vec<Arc<ResourceType>> {
        let g = self.read();
        let mut out = g.builtin.clone();
        for v in g.custom.values() {
            out.extend(v.iter().cloned());
        }
        out
    }

    /// Every type served under one group/version, as discovery and OpenAPI list them.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        let mut types = self.all();
        types.retain(|r| r.group == group && r.version == version);
        types
    }

    /// The type served at `group/version/plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        let g = self.read();
        g.builtin
            .iter()
            .chain(g.custom.values().flatten())
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    /// Any served version of `group/plural` (the storage key).
    pub fn by_storage_key(&self, key: &str) -> Option<Arc<ResourceType>> {
        let g = self.read();
        g.builtin
            .iter()
            .chain(g.custom.values().flatten())
            .find(|r| r.storage_key() == key)
            .cloned()
    }

    /// The type for an `apiVersion` + `kind` pair.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        let g = self.read();
        g.builtin
            .iter()
            .chain(g.custom.values().flatten())
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .cloned()
    }

    /// Whether `group/version` has at least one served type.
    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.all()
            .iter()
            .any(|r| r.group == group && r.version == version)
    }

    /// Installs (or replaces) the types served for one CRD.
    pub fn set_custom(&self, crd_name: &str, types: Vec<ResourceType>) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if types.is_empty() {
            g.custom.remove(crd_name);
        } else {
            g.custom.insert(
                crd_name.to_string(),
                types.into_iter().map(Arc::new).collect(),
            );
        }
    }

    /// Stops serving the types of one CRD.
    pub fn remove_custom(&self, crd_name: &str) {
        self.set_custom(crd_name, Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_resolve_by_url_and_kind() {
        let r = Registry::new();
        let d = r.lookup("apps", "v1", "deployments").expect("deployments");
        assert_eq!(d.kind, "Deployment");
        assert!(d.status_subresource);
        assert_eq!(
            r.by_kind("v1", "Secret").expect("secret").storage_key(),
            "/secrets"
        );
        assert!(r.lookup("apps", "v1", "nothing").is_none());
    }

    #[test]
    fn custom_types_come_and_go() {
        let r = Registry::new();
        let t = ResourceType {
            group: "example.com".into(),
            version: "v1".into(),
            plural: "widgets".into(),
            singular: "widget".into(),
            kind: "Widget".into(),
            namespaced: true,
            short_names: vec![],
            categories: vec![],
            status_subresource: true,
            builtin: false,
            extra_subresources: vec![],
            create_only: false,
            schema: None,
            printer_columns: vec![],
        };
        r.set_custom("widgets.example.com", vec![t]);
        assert!(r.has_group_version("example.com", "v1"));
        assert_eq!(
            r.lookup("example.com", "v1", "widgets")
                .expect("served")
                .qualified(),
            "widgets.example.com"
        );
        r.remove_custom("widgets.example.com");
        assert!(r.lookup("example.com", "v1", "widgets").is_none());
    }
}
