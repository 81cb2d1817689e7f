//! Field paths and field sets in the `FieldsV1` encoding used by `managedFields`.
//!
//! A set holds the paths a manager owns. Leaves are scalar fields, atomic lists and empty
//! maps; elements of associative lists (lists of objects with a merge key) are owned as a
//! node (`k:{"name":"x"}` with `"."`) and through their fields.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::strategic::merge_key;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElem {
    /// A map field (`f:name`).
    Field(String),
    /// An associative-list element by key (`k:{"name":"x"}`), holding the key field and
    /// its JSON value.
    Key(String, String),
}

/// A path from the object root.
pub type Path = Vec<PathElem>;

/// Renders a path as the apiserver does in conflict messages: `.spec.containers[name="a"].image`.
pub fn display(path: &Path) -> String {
    let mut s = String::new();
    for e in path {
        match e {
            PathElem::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            PathElem::Key(k, v) => s.push_str(&format!("[{k}={v}]")),
        }
    }
    s
}

/// A set of owned paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(pub BTreeSet<Path>);

/// Top-level fields the server owns and managers never do.
fn ignored(path: &[PathElem]) -> bool {
    match path {
        [PathElem::Field(f)] => f == "apiVersion" || f == "kind",
        [PathElem::Field(m), PathElem::Field(f)] if m == "metadata" => matches!(
            f.as_str(),
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "managedFields"
                | "deletionTimestamp"
                | "deletionGracePeriodSeconds"
                | "selfLink"
        ),
        _ => false,
    }
}

impl FieldSet {
    /// The fields an object sets (optionally only under `status`, or everything but it).
    pub fn of(obj: &Value, scope: Scope) -> Self {
        let mut set = BTreeSet::new();
        if let Value::Object(m) = obj {
            for (k, v) in m {
                let top = k == "status";
                match scope {
                    Scope::All => {}
                    Scope::NoStatus if top => continue,
                    Scope::StatusOnly if !top => continue,
                    _ => {}
                }
                walk(&mut set, vec![PathElem::Field(k.clone())], v);
            }
        }
        Self(set)
    }

    /// Paths present in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        Self(self.0.intersection(&other.0).cloned().collect())
    }

    /// Paths in `self` but not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        Self(self.0.difference(&other.0).cloned().collect())
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Encodes as `FieldsV1` JSON.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Map::new();
        for path in &self.0 {
            let mut node = &mut root;
            for e in path {
                let key = elem_key(e);
                node = node
                    .entry(key)
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("nodes are objects");
            }
            node.insert(".".into(), Value::Object(Map::new()));
        }
        // Leaves are `{}`: drop the "." marker where the node has no children.
        fn tidy(m: &mut Map<String, Value>) {
            for (_, v) in m.iter_mut() {
                if let Value::Object(child) = v {
                    if child.len() == 1 && child.contains_key(".") {
                        child.clear();
                    } else {
                        tidy(child);
                    }
                }
            }
        }
        tidy(&mut root);
        Value::Object(root)
    }

    /// Decodes `FieldsV1` JSON.
    pub fn from_fields_v1(v: &Value) -> Self {
        fn rec(set: &mut BTreeSet<Path>, prefix: &mut Path, m: &Map<String, Value>) {
            for (k, child) in m {
                if k == "." {
                    set.insert(prefix.clone());
                    continue;
                }
                let Some(elem) = parse_elem(k) else { continue };
                prefix.push(elem);
                match child.as_object() {
                    Some(c) if !c.is_empty() => rec(set, prefix, c),
                    _ => {
                        set.insert(prefix.clone());
                    }
                }
                prefix.pop();
            }
        }
        let mut set = BTreeSet::new();
        if let Some(m) = v.as_object() {
            rec(&mut set, &mut Vec::new(), m);
        }
        Self(set)
    }
}

/// Which part of an object a field set covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    All,
    /// Everything except `.status` (main resource with a status subresource).
    NoStatus,
    /// Only `.status` (the status subresource).
    StatusOnly,
}

fn walk(set: &mut BTreeSet<Path>, path: Path, v: &Value) {
    if ignored(&path) {
        return;
    }
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let mut p = path.clone();
                p.push(PathElem::Field(k.clone()));
                walk(set, p, child);
            }
        }
        Value::Array(items) => {
            let field = match path.last() {
                Some(PathElem::Field(f)) => f.as_str(),
                _ => "",
            };
            let key = if !items.is_empty() && items.iter().all(Value::is_object) {
                merge_key(field, items)
            } else {
                None
            };
            match key {
                Some(key) => {
                    for item in items {
                        let id = item.get(key).cloned().unwrap_or(Value::Null);
                        let mut p = path.clone();
                        p.push(PathElem::Key(key.to_string(), id.to_string()));
                        set.insert(p.clone());
                        if let Value::Object(m) = item {
                            for (k, child) in m {
                                let mut q = p.clone();
                                q.push(PathElem::Field(k.clone()));
                                walk(set, q, child);
                            }
                        }
                    }
                }
                None => {
                    set.insert(path);
                }
            }
        }
        _ => {
            set.insert(path);
        }
    }
}

fn elem_key(e: &PathElem) -> String {
    match e {
        PathElem::Field(f) => format!("f:{f}"),
        PathElem::Key(k, v) => format!("k:{{\"{k}\":{v}}}"),
    }
}

fn parse_elem(s: &str) -> Option<PathElem> {
    if let Some(f) = s.strip_prefix("f:") {
        return Some(PathElem::Field(f.to_string()));
    }
    if let Some(k) = s.strip_prefix("k:") {
        let obj: Map<String, Value> = serde_json::from_str(k).ok()?;
        let (key, val) = obj.into_iter().next()?;
        return Some(PathElem::Key(key, val.to_string()));
    }
    None
}

/// The value at a path, if present.
pub fn get<'a>(obj: &'a Value, path: &[PathElem]) -> Option<&'a Value> {
    let mut cur = obj;
    for e in path {
        cur = match e {
            PathElem::Field(f) => cur.get(f)?,
            PathElem::Key(k, v) => cur
                .as_array()?
                .iter()
                .find(|i| i.get(k).map(Value::to_string).as_deref() == Some(v.as_str()))?,
        };
    }
    Some(cur)
}

/// Removes the value at a path (a no-op when absent).
pub fn remove(obj: &mut Value, path: &[PathElem]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for e in parent_path {
        let next = match e {
            PathElem::Field(f) => cur.get_mut(f),
            PathElem::Key(k, v) => cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|i| i.get(k).map(Value::to_string).as_deref() == Some(v.as_str()))
            }),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        PathElem::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        PathElem::Key(k, v) => {
            if let Some(a) = cur.as_array_mut() {
                a.retain(|i| i.get(k).map(Value::to_string).as_deref() != Some(v.as_str()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_v1_round_trip() {
        let obj = json!({
            "apiVersion":"v1","kind":"ConfigMap",
            "metadata":{"name":"a","labels":{"x":"1"}},
            "data":{"k":"v"},
            "spec":{"containers":[{"name":"c","image":"i"}]}
        });
        let set = FieldSet::of(&obj, Scope::All);
        let v1 = set.to_fields_v1();
        assert_eq!(v1["f:data"]["f:k"], json!({}));
        assert_eq!(v1["f:metadata"]["f:labels"]["f:x"], json!({}));
        assert!(v1["f:metadata"].get("f:name").is_none());
        assert_eq!(
            v1["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["."],
            json!({})
        );
        assert_eq!(FieldSet::from_fields_v1(&v1), set);
    }

    #[test]
    fn get_and_remove_by_key() {
        let mut obj = json!({"spec":{"containers":[{"name":"a","image":"1"},{"name":"b"}]}});
        let p = vec![
            PathElem::Field("spec".into()),
            PathElem::Field("containers".into()),
            PathElem::Key("name".into(), "\"a\"".into()),
            PathElem::Field("image".into()),
        ];
        assert_eq!(get(&obj, &p), Some(&json!("1")));
        assert_eq!(display(&p), ".spec.containers[name=\"a\"].image");
        remove(&mut obj, &p[..3]);
        assert_eq!(obj, json!({"spec":{"containers":[{"name":"b"}]}}));
    }
}
