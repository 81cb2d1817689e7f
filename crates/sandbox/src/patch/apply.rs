//! Server-side apply and `managedFields` bookkeeping.
//!
//! Each manager owns a field set per (operation, subresource). Applying sets fields,
//! removes fields the same manager applied before and no longer applies (unless someone
//! else owns them too), and refuses to change a value another manager owns unless forced.
//! Non-apply writes take ownership of the fields they change.

use serde_json::{Map, Value, json};

use super::fields::{self, FieldSet, PathElem, Scope};
use super::strategic::merge_key;
use crate::status::ApiError;

/// Metadata fields an apply body cannot set.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    /// Field manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion the manager used.
    pub api_version: String,
    /// Time of the last change by this entry.
    pub time: String,
    /// `Some("status")` for status-subresource writes.
    pub subresource: Option<String>,
    /// The owned fields.
    pub set: FieldSet,
}

/// Reads `metadata.managedFields`.
pub fn parse_managed(obj: &Value) -> Vec<ManagedEntry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| ManagedEntry {
                    manager: e["manager"].as_str().unwrap_or("").to_string(),
                    operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                    api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
                    time: e["time"].as_str().unwrap_or("").to_string(),
                    subresource: e["subresource"].as_str().map(str::to_string),
                    set: FieldSet::from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `metadata.managedFields` (dropping entries that own nothing).
pub fn write_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    let arr: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": e.set.to_fields_v1(),
            });
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if let Some(m) = obj["metadata"].as_object_mut() {
        if arr.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(arr));
        }
    }
}

/// Parameters of one write, for ownership tracking.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// Field manager.
    pub manager: &'a str,
    /// apiVersion used by the request.
    pub api_version: &'a str,
    /// Which part of the object the endpoint writes.
    pub scope: Scope,
    /// `Some("status")` on the status subresource.
    pub subresource: Option<&'a str>,
    /// RFC 3339 timestamp for the entry.
    pub now: &'a str,
}

fn describe(e: &ManagedEntry) -> String {
    if e.operation == "Apply" {
        format!("{:?}", e.manager)
    } else {
        format!("{:?} using {}", e.manager, e.api_version)
    }
}

fn is_leaf(path: &[PathElem]) -> bool {
    !matches!(path.last(), Some(PathElem::Key(..)))
}

/// Server-side apply of `applied` onto `current` (None: the object is created).
///
/// # Errors
/// 409 `Conflict` listing every field another manager owns with a different value,
/// unless `force`.
pub fn server_side_apply(
    current: &Value,
    applied: &Value,
    w: &Writer<'_>,
    force: bool,
) -> Result<Value, ApiError> {
    let mut base = current.clone();
    let mut managed = parse_managed(&base);
    let new_set = FieldSet::of(applied, w.scope);
    let sub = w.subresource.map(str::to_string);
    let is_mine =
        |e: &ManagedEntry| e.manager == w.manager && e.operation == "Apply" && e.subresource == sub;

    let mut conflicts: Vec<(String, String)> = Vec::new();
    let mut conflicting: Vec<(usize, Vec<PathElem>)> = Vec::new();
    for (i, e) in managed.iter().enumerate() {
        if is_mine(e) {
            continue;
        }
        for p in e.set.intersection(&new_set).0 {
            if is_leaf(&p) && fields::get(&base, &p) != fields::get(applied, &p) {
                conflicts.push((describe(e), fields::display(&p)));
                conflicting.push((i, p));
            }
        }
    }
    if !conflicts.is_empty() && !force && !upgrades_client_side_apply(&base, w, &conflicting) {
        return Err(ApiError::apply_conflicts(&conflicts));
    }
    for (i, p) in conflicting {
        managed[i].set.0.remove(&p);
    }

    // Fields this manager applied before and dropped now are removed, unless shared.
    if let Some(prev) = managed.iter().find(|e| is_mine(e)) {
        let dropped = prev.set.difference(&new_set);
        let others: Vec<&ManagedEntry> = managed.iter().filter(|e| !is_mine(e)).collect();
        // Deepest paths first, so removing a list element cannot hide its fields.
        let mut dropped: Vec<_> = dropped.0.into_iter().collect();
        dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in dropped {
            if !others.iter().any(|o| o.set.0.contains(&p)) {
                fields::remove(&mut base, &p);
            }
        }
    }

    if let (Value::Object(b), Value::Object(a)) = (&mut base, applied) {
        for (k, v) in a {
            let in_scope = match w.scope {
                Scope::All => true,
                Scope::NoStatus => k != "status",
                Scope::StatusOnly => k == "status",
            };
            if !in_scope || k == "apiVersion" || k == "kind" {
                continue;
            }
            let slot = b.entry(k.clone()).or_insert(Value::Null);
            if k == "metadata" {
                // Identity and bookkeeping fields are the server's, whatever the body says.
                let mut m = v.clone();
                if let Some(mm) = m.as_object_mut() {
                    for f in SERVER_METADATA {
                        mm.remove(*f);
                    }
                }
                merge_applied(k, slot, &m);
                continue;
            }
            merge_applied(k, slot, v);
        }
    }

    let entry = ManagedEntry {
        manager: w.manager.to_string(),
        operation: "Apply".into(),
        api_version: w.api_version.to_string(),
        time: w.now.to_string(),
        subresource: sub.clone(),
        set: new_set,
    };
    match managed.iter_mut().find(|e| is_mine(e)) {
        Some(e) => *e = entry,
        None => managed.push(entry),
    }
    write_managed(&mut base, &managed);
    Ok(base)
}

/// kubectl moving an object from client-side to server-side apply: the apiserver lets
/// manager `kubectl` take over, without conflict, every field its last client-side apply
/// set (the `last-applied-configuration` annotation), so the switch needs no force.
fn upgrades_client_side_apply(
    live: &Value,
    w: &Writer<'_>,
    conflicting: &[(usize, Vec<PathElem>)],
) -> bool {
    if w.manager != "kubectl" {
        return false;
    }
    let Some(last) =
        live["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
    else {
        return false;
    };
    let allowed = FieldSet::of(&last, w.scope);
    conflicting.iter().all(|(_, p)| allowed.0.contains(p))
}

fn merge_applied(field: &str, slot: &mut Value, applied: &Value) {
    match applied {
        Value::Object(a) => {
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Some(s) = slot.as_object_mut() {
                for (k, v) in a {
                    if k == "managedFields" {
                        continue;
                    }
                    let child = s.entry(k.clone()).or_insert(Value::Null);
                    merge_applied(k, child, v);
                }
            }
        }
        Value::Array(items) => {
            let key = if !items.is_empty() && items.iter().all(Value::is_object) {
                merge_key(field, items)
            } else {
                None
            };
            match (key, slot.as_array_mut()) {
                (Some(key), Some(cur)) => {
                    for item in items {
                        let id = item.get(key);
                        match cur.iter_mut().find(|c| c.get(key) == id) {
                            Some(c) => merge_applied("", c, item),
                            None => cur.push(item.clone()),
                        }
                    }
                }
                _ => *slot = applied.clone(),
            }
        }
        other => *slot = other.clone(),
    }
}

/// Records ownership for a non-apply write (create, update, patch) by `w.manager`:
/// the manager takes the fields it changed, and removed fields leave every set.
/// The ownership record starts from `new`'s `managedFields`, which callers set to the
/// stored record unless the client deliberately rewrote it.
pub fn track_update(old: Option<&Value>, new: &mut Value, w: &Writer<'_>) {
    let mut managed = match old {
        Some(_) => parse_managed(new),
        None => Vec::new(),
    };
    let new_set = FieldSet::of(new, w.scope);
    let (changed, removed) = match old {
        None => (new_set.clone(), FieldSet::default()),
        Some(o) => {
            let old_set = FieldSet::of(o, w.scope);
            let changed = FieldSet(
                new_set
                    .0
                    .iter()
                    .filter(|p| fields::get(o, p) != fields::get(new, p) || !old_set.0.contains(*p))
                    .cloned()
                    .collect(),
            );
            (changed, old_set.difference(&new_set))
        }
    };
    if changed.is_empty() && removed.is_empty() {
        write_managed(new, &managed);
        return;
    }
    let sub = w.subresource.map(str::to_string);
    for e in &mut managed {
        for p in changed.0.iter().chain(removed.0.iter()) {
            // Element nodes stay shared; only values change hands.
            if is_leaf(p) || removed.0.contains(p) {
                e.set.0.remove(p);
            }
        }
    }
    let pos = managed
        .iter()
        .position(|e| e.manager == w.manager && e.operation == "Update" && e.subresource == sub);
    match pos {
        Some(i) => {
            managed[i].set.0.extend(changed.0);
            managed[i].time = w.now.to_string();
            managed[i].api_version = w.api_version.to_string();
        }
        None if !changed.is_empty() => managed.push(ManagedEntry {
            manager: w.manager.to_string(),
            operation: "Update".into(),
            api_version: w.api_version.to_string(),
            time: w.now.to_string(),
            subresource: sub,
            set: changed,
        }),
        None => {}
    }
    write_managed(new, &managed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w<'a>(m: &'a str) -> Writer<'a> {
        Writer {
            manager: m,
            api_version: "v1",
            scope: Scope::All,
            subresource: None,
            now: "2026-01-01T00:00:00Z",
        }
    }

    fn cm(data: Value) -> Value {
        json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"d"},"data":data})
    }

    #[test]
    fn apply_creates_and_records_fields() {
        let base =
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"d"}});
        let out =
            server_side_apply(&base, &cm(json!({"k":"v"})), &w("orch"), false).expect("apply");
        assert_eq!(out["data"]["k"], "v");
        let mf = &out["metadata"]["managedFields"][0];
        assert_eq!(mf["manager"], "orch");
        assert_eq!(mf["operation"], "Apply");
        assert_eq!(mf["fieldsV1"]["f:data"]["f:k"], json!({}));
    }

    #[test]
    fn conflicting_apply_is_refused_then_forced() {
        let base =
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"d"}});
        let one =
            server_side_apply(&base, &cm(json!({"key":"1"})), &w("kubectl"), false).expect("first");
        let err = server_side_apply(&one, &cm(json!({"key":"2"})), &w("orch"), false)
            .expect_err("conflict");
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"kubectl\": .data.key"
        );
        let forced =
            server_side_apply(&one, &cm(json!({"key":"2"})), &w("orch"), true).expect("force");
        assert_eq!(forced["data"]["key"], "2");
        let managers: Vec<_> = parse_managed(&forced)
            .into_iter()
            .map(|e| e.manager)
            .collect();
        assert_eq!(managers, vec!["orch"]);
    }

    #[test]
    fn same_value_is_shared_not_conflicting() {
        let base =
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"d"}});
        let one = server_side_apply(&base, &cm(json!({"key":"1"})), &w("a"), false).expect("a");
        let two = server_side_apply(&one, &cm(json!({"key":"1","other":"x"})), &w("b"), false)
            .expect("b");
        assert_eq!(parse_managed(&two).len(), 2);
    }

    #[test]
    fn dropped_fields_are_removed_unless_shared() {
        let base =
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"d"}});
        let one =
            server_side_apply(&base, &cm(json!({"x":"1","y":"2"})), &w("a"), false).expect("a");
        let two = server_side_apply(&one, &cm(json!({"x":"1"})), &w("a"), false).expect("a again");
        assert!(two["data"].get("y").is_none());
    }

    #[test]
    fn kubectl_takes_over_its_client_side_apply_fields() {
        let mut live = cm(json!({"key": "1"}));
        live["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/last-applied-configuration":
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"d"},"data":{"key":"1"}}"#});
        track_update(None, &mut live, &w("kubectl-client-side-apply"));
        let out = server_side_apply(&live, &cm(json!({"key": "2"})), &w("kubectl"), false)
            .expect("no conflict");
        assert_eq!(out["data"]["key"], "2");
        // Any other manager still conflicts.
        assert!(server_side_apply(&live, &cm(json!({"key": "2"})), &w("orch"), false).is_err());
    }

    #[test]
    fn update_conflict_names_api_version() {
        let old = cm(json!({"key":"1"}));
        let mut new = old.clone();
        track_update(None, &mut new, &w("kubectl-create"));
        let err = server_side_apply(&new, &cm(json!({"key":"2"})), &w("orch"), false)
            .expect_err("conflict");
        assert!(
            err.message.contains("\"kubectl-create\" using v1"),
            "{}",
            err.message
        );
    }
}
