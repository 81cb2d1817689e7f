//! Decoding of `application/vnd.kubernetes.protobuf` request bodies.
//!
//! kubectl's typed `create` commands (namespace, secret, configmap, serviceaccount,
//! deployment, token, service, job, cronjob, role(binding), clusterrole(binding), and
//! `kubectl run`'s pod) and its `auth can-i [--list]` and `auth whoami` reviews send protobuf
//! and do not fall back to JSON, so the sandbox decodes the kinds they send into JSON objects. Field numbers follow the upstream
//! `generated.proto` files. Non-pointer scalars are always on the wire in protobuf; their
//! zero values are dropped here, as JSON's `omitempty` would. Unknown fields are skipped;
//! unknown kinds are refused with 415 so the client sees a clear message.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::status::ApiError;

const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy)]
enum T {
    Str,
    Int,
    Bool,
    Bytes,
    Msg(&'static [F]),
    MapStr,
    MapBytes,
    MapQuantity,
    Time,
    Quantity,
    IntOrString,
}

#[derive(Clone, Copy)]
struct F {
    num: u64,
    name: &'static str,
    ty: T,
    repeated: bool,
    /// A pointer field: keep its zero value.
    keep_zero: bool,
}

const fn f(num: u64, name: &'static str, ty: T) -> F {
    F {
        num,
        name,
        ty,
        repeated: false,
        keep_zero: false,
    }
}

const fn r(num: u64, name: &'static str, ty: T) -> F {
    F {
        num,
        name,
        ty,
        repeated: true,
        keep_zero: false,
    }
}

const fn p(num: u64, name: &'static str, ty: T) -> F {
    F {
        num,
        name,
        ty,
        repeated: false,
        keep_zero: true,
    }
}

const OWNER_REF: &[F] = &[
    f(1, "kind", T::Str),
    f(3, "name", T::Str),
    f(4, "uid", T::Str),
    f(5, "apiVersion", T::Str),
    p(6, "controller", T::Bool),
    p(7, "blockOwnerDeletion", T::Bool),
];

const OBJECT_META: &[F] = &[
    f(1, "name", T::Str),
    f(2, "generateName", T::Str),
    f(3, "namespace", T::Str),
    f(5, "uid", T::Str),
    f(6, "resourceVersion", T::Str),
    f(7, "generation", T::Int),
    f(8, "creationTimestamp", T::Time),
    f(11, "labels", T::MapStr),
    f(12, "annotations", T::MapStr),
    r(13, "ownerReferences", T::Msg(OWNER_REF)),
    r(14, "finalizers", T::Str),
];

const SELECTOR_REQ: &[F] = &[
    f(1, "key", T::Str),
    f(2, "operator", T::Str),
    r(3, "values", T::Str),
];
const LABEL_SELECTOR: &[F] = &[
    f(1, "matchLabels", T::MapStr),
    r(2, "matchExpressions", T::Msg(SELECTOR_REQ)),
];

const NAMESPACE_SPEC: &[F] = &[r(1, "finalizers", T::Str)];
const NAMESPACE: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(NAMESPACE_SPEC)),
];

const SECRET: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "data", T::MapBytes),
    f(3, "type", T::Str),
    f(4, "stringData", T::MapStr),
    p(5, "immutable", T::Bool),
];

const CONFIG_MAP: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "data", T::MapStr),
    f(3, "binaryData", T::MapBytes),
    p(4, "immutable", T::Bool),
];

const LOCAL_REF: &[F] = &[f(1, "name", T::Str)];
const OBJECT_REF: &[F] = &[
    f(1, "kind", T::Str),
    f(2, "namespace", T::Str),
    f(3, "name", T::Str),
    f(4, "uid", T::Str),
    f(5, "apiVersion", T::Str),
];

const SERVICE_ACCOUNT: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    r(2, "secrets", T::Msg(OBJECT_REF)),
    r(3, "imagePullSecrets", T::Msg(LOCAL_REF)),
    p(4, "automountServiceAccountToken", T::Bool),
];

const BOUND_REF: &[F] = &[
    f(1, "kind", T::Str),
    f(2, "apiVersion", T::Str),
    f(3, "name", T::Str),
    f(4, "uid", T::Str),
];
const TOKEN_REQUEST_SPEC: &[F] = &[
    r(1, "audiences", T::Str),
    p(4, "expirationSeconds", T::Int),
    f(3, "boundObjectRef", T::Msg(BOUND_REF)),
];
const TOKEN_REQUEST: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(TOKEN_REQUEST_SPEC)),
];

const CONTAINER_PORT: &[F] = &[
    f(1, "name", T::Str),
    f(2, "hostPort", T::Int),
    f(3, "containerPort", T::Int),
    f(4, "protocol", T::Str),
    f(5, "hostIP", T::Str),
];
const ENV_VAR: &[F] = &[f(1, "name", T::Str), p(2, "value", T::Str)];
const RESOURCES: &[F] = &[
    f(1, "limits", T::MapQuantity),
    f(2, "requests", T::MapQuantity),
];
const VOLUME_MOUNT: &[F] = &[
    f(1, "name", T::Str),
    p(2, "readOnly", T::Bool),
    f(3, "mountPath", T::Str),
    f(4, "subPath", T::Str),
];
const CONTAINER: &[F] = &[
    f(1, "name", T::Str),
    f(2, "image", T::Str),
    r(3, "command", T::Str),
    r(4, "args", T::Str),
    f(5, "workingDir", T::Str),
    r(6, "ports", T::Msg(CONTAINER_PORT)),
    r(7, "env", T::Msg(ENV_VAR)),
    p(8, "resources", T::Msg(RESOURCES)),
    r(9, "volumeMounts", T::Msg(VOLUME_MOUNT)),
    f(13, "terminationMessagePath", T::Str),
    f(14, "imagePullPolicy", T::Str),
    f(16, "stdin", T::Bool),
    f(17, "stdinOnce", T::Bool),
    f(18, "tty", T::Bool),
    f(20, "terminationMessagePolicy", T::Str),
];
const POD_SPEC: &[F] = &[
    r(2, "containers", T::Msg(CONTAINER)),
    f(3, "restartPolicy", T::Str),
    p(4, "terminationGracePeriodSeconds", T::Int),
    p(5, "activeDeadlineSeconds", T::Int),
    f(6, "dnsPolicy", T::Str),
    f(7, "nodeSelector", T::MapStr),
    f(8, "serviceAccountName", T::Str),
    f(10, "nodeName", T::Str),
    r(15, "imagePullSecrets", T::Msg(LOCAL_REF)),
    f(16, "hostname", T::Str),
    f(17, "subdomain", T::Str),
    f(19, "schedulerName", T::Str),
    r(20, "initContainers", T::Msg(CONTAINER)),
    p(21, "automountServiceAccountToken", T::Bool),
];
const POD: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(POD_SPEC)),
];
const POD_TEMPLATE_SPEC: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(POD_SPEC)),
];
const ROLLING_UPDATE: &[F] = &[
    f(1, "maxUnavailable", T::IntOrString),
    f(2, "maxSurge", T::IntOrString),
];
const DEPLOYMENT_STRATEGY: &[F] = &[
    f(1, "type", T::Str),
    f(2, "rollingUpdate", T::Msg(ROLLING_UPDATE)),
];
const DEPLOYMENT_SPEC: &[F] = &[
    p(1, "replicas", T::Int),
    f(2, "selector", T::Msg(LABEL_SELECTOR)),
    p(3, "template", T::Msg(POD_TEMPLATE_SPEC)),
    p(4, "strategy", T::Msg(DEPLOYMENT_STRATEGY)),
    f(5, "minReadySeconds", T::Int),
    p(6, "revisionHistoryLimit", T::Int),
    f(7, "paused", T::Bool),
    p(9, "progressDeadlineSeconds", T::Int),
];
const DEPLOYMENT: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(DEPLOYMENT_SPEC)),
];

const SERVICE_PORT: &[F] = &[
    f(1, "name", T::Str),
    f(2, "protocol", T::Str),
    f(3, "port", T::Int),
    f(4, "targetPort", T::IntOrString),
    f(5, "nodePort", T::Int),
    p(6, "appProtocol", T::Str),
];
const SERVICE_SPEC: &[F] = &[
    r(1, "ports", T::Msg(SERVICE_PORT)),
    f(2, "selector", T::MapStr),
    f(3, "clusterIP", T::Str),
    f(4, "type", T::Str),
    r(5, "externalIPs", T::Str),
    f(7, "sessionAffinity", T::Str),
    f(11, "externalName", T::Str),
];
const SERVICE: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(SERVICE_SPEC)),
];

const JOB_SPEC: &[F] = &[
    p(1, "parallelism", T::Int),
    p(2, "completions", T::Int),
    p(3, "activeDeadlineSeconds", T::Int),
    f(4, "selector", T::Msg(LABEL_SELECTOR)),
    p(5, "manualSelector", T::Bool),
    f(6, "template", T::Msg(POD_TEMPLATE_SPEC)),
    p(7, "backoffLimit", T::Int),
    p(8, "ttlSecondsAfterFinished", T::Int),
    p(9, "completionMode", T::Str),
    p(10, "suspend", T::Bool),
];
const JOB: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(JOB_SPEC)),
];
const JOB_TEMPLATE: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(JOB_SPEC)),
];
const CRON_JOB_SPEC: &[F] = &[
    f(1, "schedule", T::Str),
    p(2, "startingDeadlineSeconds", T::Int),
    f(3, "concurrencyPolicy", T::Str),
    p(4, "suspend", T::Bool),
    f(5, "jobTemplate", T::Msg(JOB_TEMPLATE)),
    p(6, "successfulJobsHistoryLimit", T::Int),
    p(7, "failedJobsHistoryLimit", T::Int),
    p(8, "timeZone", T::Str),
];
const CRON_JOB: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(CRON_JOB_SPEC)),
];

const POLICY_RULE: &[F] = &[
    r(1, "verbs", T::Str),
    r(2, "apiGroups", T::Str),
    r(3, "resources", T::Str),
    r(4, "resourceNames", T::Str),
    r(5, "nonResourceURLs", T::Str),
];
const ROLE: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    r(2, "rules", T::Msg(POLICY_RULE)),
];
const SUBJECT: &[F] = &[
    f(1, "kind", T::Str),
    f(2, "apiGroup", T::Str),
    f(3, "name", T::Str),
    f(4, "namespace", T::Str),
];
const ROLE_REF: &[F] = &[
    f(1, "apiGroup", T::Str),
    f(2, "kind", T::Str),
    f(3, "name", T::Str),
];
const ROLE_BINDING: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    r(2, "subjects", T::Msg(SUBJECT)),
    f(3, "roleRef", T::Msg(ROLE_REF)),
];

const RESOURCE_ATTRIBUTES: &[F] = &[
    f(1, "namespace", T::Str),
    f(2, "verb", T::Str),
    f(3, "group", T::Str),
    f(4, "version", T::Str),
    f(5, "resource", T::Str),
    f(6, "subresource", T::Str),
    f(7, "name", T::Str),
];
const NON_RESOURCE_ATTRIBUTES: &[F] = &[f(1, "path", T::Str), f(2, "verb", T::Str)];
const SELF_ACCESS_REVIEW_SPEC: &[F] = &[
    f(1, "resourceAttributes", T::Msg(RESOURCE_ATTRIBUTES)),
    f(2, "nonResourceAttributes", T::Msg(NON_RESOURCE_ATTRIBUTES)),
];
const SELF_ACCESS_REVIEW: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(SELF_ACCESS_REVIEW_SPEC)),
];

const SELF_RULES_REVIEW_SPEC: &[F] = &[p(1, "namespace", T::Str)];
const SELF_RULES_REVIEW: &[F] = &[
    f(1, "metadata", T::Msg(OBJECT_META)),
    f(2, "spec", T::Msg(SELF_RULES_REVIEW_SPEC)),
];
/// `kubectl auth whoami` sends only metadata.
const SELF_SUBJECT_REVIEW: &[F] = &[f(1, "metadata", T::Msg(OBJECT_META))];

fn schema_for(api_version: &str, kind: &str) -> Option<&'static [F]> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "Secret") => SECRET,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("authentication.k8s.io/v1", "TokenRequest") => TOKEN_REQUEST,
        ("apps/v1", "Deployment") => DEPLOYMENT,
        ("v1", "Service") => SERVICE,
        ("v1", "Pod") => POD,
        ("batch/v1", "Job") => JOB,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => SELF_ACCESS_REVIEW,
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => SELF_RULES_REVIEW,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => SELF_SUBJECT_REVIEW,
        ("batch/v1", "CronJob") => CRON_JOB,
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => ROLE,
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => ROLE_BINDING,
        _ => return None,
    })
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

fn malformed() -> ApiError {
    ApiError::bad_request("malformed protobuf request body")
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.i).ok_or_else(malformed)?;
            self.i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed())
    }

    fn bytes(&mut self) -> Result<&'a [u8], ApiError> {
        let n = usize::try_from(self.varint()?).map_err(|_| malformed())?;
        let end = self
            .i
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(malformed)?;
        let s = &self.b[self.i..end];
        self.i = end;
        Ok(s)
    }

    fn skip(&mut self, wire: u64) -> Result<(), ApiError> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.advance(8),
            2 => self.bytes().map(|_| ()),
            5 => self.advance(4),
            _ => Err(malformed()),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), ApiError> {
        if self.i + n > self.b.len() {
            return Err(malformed());
        }
        self.i += n;
        Ok(())
    }

    fn done(&self) -> bool {
        self.i >= self.b.len()
    }
}

fn string(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| malformed())
}

/// Fields of a two-field message (map entries, Time, IntOrString...), by number.
/// (field number, wire type, bytes for length-delimited, value for varints).
type Pair<'a> = (u64, u64, &'a [u8], u64);

fn pairs(b: &[u8]) -> Result<Vec<Pair<'_>>, ApiError> {
    let mut rd = Reader { b, i: 0 };
    let mut out = Vec::new();
    while !rd.done() {
        let key = rd.varint()?;
        let (num, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = rd.varint()?;
                out.push((num, wire, &b[0..0], v));
            }
            2 => {
                let v = rd.bytes()?;
                out.push((num, wire, v, 0));
            }
            w => rd.skip(w)?,
        }
    }
    Ok(out)
}

fn decode_value(ty: T, wire: u64, raw: &[u8], varint: u64) -> Result<Option<Value>, ApiError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(match (ty, wire) {
        (T::Str, 2) => Some(json!(string(raw)?)),
        (T::Int, 0) => Some(json!(varint as i64)),
        (T::Bool, 0) => Some(json!(varint != 0)),
        (T::Bytes, 2) => Some(json!(b64.encode(raw))),
        (T::Msg(schema), 2) => Some(decode_message(schema, raw)?),
        (T::Time, 2) => {
            let secs = pairs(raw)?
                .into_iter()
                .find(|(n, ..)| *n == 1)
                .map_or(0, |(.., v)| v);
            let secs = secs as i64;
            if secs == 0 {
                None
            } else {
                jiff::Timestamp::from_second(secs)
                    .ok()
                    .map(|t| json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
            }
        }
        (T::Quantity, 2) => {
            let s = pairs(raw)?
                .into_iter()
                .find(|(n, ..)| *n == 1)
                .map(|(_, _, b, _)| string(b))
                .transpose()?;
            s.map(|s| json!(s))
        }
        (T::IntOrString, 2) => {
            let fs = pairs(raw)?;
            let ty = fs.iter().find(|(n, ..)| *n == 1).map_or(0, |(.., v)| *v);
            if ty == 1 {
                fs.iter()
                    .find(|(n, ..)| *n == 3)
                    .map(|(_, _, b, _)| string(b))
                    .transpose()?
                    .map(|s| json!(s))
            } else {
                let v = fs
                    .iter()
                    .find(|(n, ..)| *n == 2)
                    .map_or(0, |(.., v)| *v as i32);
                Some(json!(v))
            }
        }
        _ => None,
    })
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Bool(b) => !b,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Null => true,
    }
}

fn decode_message(schema: &'static [F], b: &[u8]) -> Result<Value, ApiError> {
    let mut rd = Reader { b, i: 0 };
    let mut out = Map::new();
    while !rd.done() {
        let key = rd.varint()?;
        let (num, wire) = (key >> 3, key & 7);
        let Some(field) = schema.iter().find(|f| f.num == num) else {
            rd.skip(wire)?;
            continue;
        };
        let (raw, varint) = match wire {
            0 => (&b[0..0], rd.varint()?),
            2 => (rd.bytes()?, 0),
            w => {
                rd.skip(w)?;
                continue;
            }
        };
        match field.ty {
            T::MapStr | T::MapBytes | T::MapQuantity => {
                let mut k = String::new();
                let mut v = Value::Null;
                for (n, w, bytes, _) in pairs(raw)? {
                    match (n, w) {
                        (1, 2) => k = string(bytes)?,
                        (2, 2) => {
                            let vt = match field.ty {
                                T::MapStr => T::Str,
                                T::MapBytes => T::Bytes,
                                _ => T::Quantity,
                            };
                            v = decode_value(vt, 2, bytes, 0)?.unwrap_or(Value::Null);
                        }
                        _ => {}
                    }
                }
                if v.is_null() {
                    v = match field.ty {
                        T::MapQuantity => json!("0"),
                        _ => json!(""),
                    };
                }
                let entry = out.entry(field.name).or_insert_with(|| json!({}));
                entry[k] = v;
            }
            ty => {
                let Some(v) = decode_value(ty, wire, raw, varint)? else {
                    continue;
                };
                if field.repeated {
                    out.entry(field.name)
                        .or_insert_with(|| json!([]))
                        .as_array_mut()
                        .ok_or_else(malformed)?
                        .push(v);
                } else if field.keep_zero || !is_zero(&v) {
                    out.insert(field.name.to_string(), v);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a protobuf-encoded object (`k8s\0` + `runtime.Unknown`) into JSON.
///
/// # Errors
/// 400 for a malformed body; 415 for a kind the sandbox cannot decode.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let rest = body.strip_prefix(MAGIC).ok_or_else(malformed)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, w, bytes, _) in pairs(rest)? {
        match (n, w) {
            (1, 2) => {
                for (tn, tw, tb, _) in pairs(bytes)? {
                    match (tn, tw) {
                        (1, 2) => api_version = string(tb)?,
                        (2, 2) => kind = string(tb)?,
                        _ => {}
                    }
                }
            }
            (2, 2) => raw = bytes,
            _ => {}
        }
    }
    let schema = schema_for(&api_version, &kind).ok_or_else(|| {
        ApiError::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf for {api_version} {kind} (send JSON)"
        ))
    })?;
    let mut obj = decode_message(schema, raw)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![(num << 3 | 2) as u8, bytes.len() as u8];
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn decodes_a_secret() {
        let meta = [field(1, b"s1"), field(3, b"")].concat();
        let entry = [field(1, b"password"), field(2, b"hunter2")].concat();
        let secret = [field(1, &meta), field(2, &entry), field(3, b"Opaque")].concat();
        let tm = [field(1, b"v1"), field(2, b"Secret")].concat();
        let body = [MAGIC.to_vec(), field(1, &tm), field(2, &secret)].concat();
        let v = decode(&body).expect("decode");
        assert_eq!(v["metadata"], json!({"name": "s1"}));
        assert_eq!(v["data"]["password"], "aHVudGVyMg==");
        assert_eq!(v["type"], "Opaque");
        assert_eq!(v["kind"], "Secret");
    }

    #[test]
    fn unknown_kinds_are_refused() {
        let tm = [field(1, b"v1"), field(2, b"ReplicationController")].concat();
        let body = [MAGIC.to_vec(), field(1, &tm)].concat();
        assert_eq!(decode(&body).expect_err("415").code, 415);
        assert_eq!(decode(b"nope").expect_err("400").code, 400);
    }
}
