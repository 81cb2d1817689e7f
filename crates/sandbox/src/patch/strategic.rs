//! Strategic merge patch for built-in kinds: maps merge, lists of objects merge by their
//! merge key (`name` for most lists), `null` deletes, and kubectl's `$patch`,
//! `$setElementOrder`, `$retainKeys` and `$deleteFromPrimitiveList` directives are honoured
//! or dropped.

use serde_json::{Map, Value};

/// The merge key of a list field, by field name (the apiserver reads it from Go struct tags;
/// these are the ones kubectl and controllers actually exercise).
pub fn merge_key(field: &str, sample: &[Value]) -> Option<&'static str> {
    let has = |k: &str| {
        !sample.is_empty()
            && sample
                .iter()
                .all(|e| e.as_object().is_some_and(|o| o.contains_key(k)))
    };
    match field {
        "volumeMounts" | "volumeDevices" => Some("mountPath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "ports" if has("containerPort") => Some("containerPort"),
        "ports" if has("port") => Some("port"),
        "ports" => Some("name"),
        _ if has("name") => Some("name"),
        _ => None,
    }
}

/// Applies a strategic merge patch to `target` in place.
pub fn apply(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                *target = clean(patch);
                return;
            }
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let Some(t) = target.as_object_mut() else {
                return;
            };
            for (k, v) in p {
                if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
                    if let (Some(Value::Array(cur)), Value::Array(del)) = (t.get_mut(list), v) {
                        cur.retain(|x| !del.contains(x));
                    }
                    continue;
                }
                if k.starts_with('$') {
                    continue;
                }
                match v {
                    Value::Null => {
                        t.remove(k);
                    }
                    Value::Object(_) => {
                        if v.get("$patch").and_then(Value::as_str) == Some("delete") {
                            t.remove(k);
                            continue;
                        }
                        let slot = t.entry(k.clone()).or_insert(Value::Null);
                        apply(slot, v);
                    }
                    Value::Array(items) => {
                        let slot = t.entry(k.clone()).or_insert(Value::Null);
                        merge_list(k, slot, items);
                    }
                    other => {
                        t.insert(k.clone(), other.clone());
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn merge_list(field: &str, slot: &mut Value, items: &[Value]) {
    // A list whose first element is `{"$patch": "replace"}` replaces wholesale.
    let replace = items.iter().any(|i| {
        i.get("$patch").and_then(Value::as_str) == Some("replace")
            && i.as_object().map(Map::len) == Some(1)
    });
    let objects = items.iter().all(Value::is_object) && !items.is_empty();
    let key = if objects {
        merge_key(field, items)
    } else {
        None
    };
    let (Some(key), false, Value::Array(cur)) = (key, replace, &mut *slot) else {
        if field == "finalizers"
            && let Value::Array(cur) = slot
        {
            for i in items {
                if !cur.contains(i) {
                    cur.push(i.clone());
                }
            }
            return;
        }
        *slot = Value::Array(
            items
                .iter()
                .filter(|i| !(i.get("$patch").is_some() && i.as_object().map(Map::len) == Some(1)))
                .map(clean)
                .collect(),
        );
        return;
    };
    for item in items {
        let id = item.get(key).cloned();
        let pos = id
            .as_ref()
            .and_then(|id| cur.iter().position(|c| c.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(p), true) => {
                cur.remove(p);
            }
            (None, true) => {}
            (Some(p), false) => apply(&mut cur[p], item),
            (None, false) => cur.push(clean(item)),
        }
    }
}

/// Drops `$`-directives and `null`s from a value that is inserted wholesale.
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), clean(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name() {
        let mut t =
            json!({"spec":{"containers":[{"name":"a","image":"x:1"},{"name":"b","image":"y:1"}]}});
        apply(
            &mut t,
            &json!({"spec":{"$setElementOrder/containers":[{"name":"a"}],"containers":[{"name":"a","image":"x:2"}]}}),
        );
        assert_eq!(t["spec"]["containers"][0]["image"], "x:2");
        assert_eq!(t["spec"]["containers"][1]["image"], "y:1");
    }

    #[test]
    fn null_deletes_and_maps_merge() {
        let mut t = json!({"metadata":{"labels":{"a":"1","b":"2"}}});
        apply(&mut t, &json!({"metadata":{"labels":{"a":null,"c":"3"}}}));
        assert_eq!(t, json!({"metadata":{"labels":{"b":"2","c":"3"}}}));
    }

    #[test]
    fn patch_delete_directive_removes_element() {
        let mut t = json!({"env":[{"name":"A","value":"1"},{"name":"B","value":"2"}]});
        apply(&mut t, &json!({"env":[{"name":"A","$patch":"delete"}]}));
        assert_eq!(t, json!({"env":[{"name":"B","value":"2"}]}));
    }

    #[test]
    fn scalar_lists_replace() {
        let mut t = json!({"args":["a","b"]});
        apply(&mut t, &json!({"args":["c"]}));
        assert_eq!(t, json!({"args":["c"]}));
    }
}
