//! Server-side printing: `meta.k8s.io/v1` Tables for `kubectl get`, with the columns
//! users expect for the common kinds.

use serde_json::{Value, json};

use super::resources::ResourceType;

fn age(ts: &Value) -> String {
    let Some(t) = ts.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn col(name: &str, ty: &str) -> Value {
    json!({"name": name, "type": ty, "format": if name == "Name" { "name" } else { "" }, "description": "", "priority": 0})
}

fn extra_columns(rt: &ResourceType) -> Vec<(&'static str, &'static str)> {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => vec![
            ("Ready", "string"),
            ("Status", "string"),
            ("Restarts", "integer"),
        ],
        ("apps", "deployments") => vec![
            ("Ready", "string"),
            ("Up-to-date", "integer"),
            ("Available", "integer"),
        ],
        ("apps", "statefulsets") => vec![("Ready", "string")],
        ("apps", "replicasets") => vec![
            ("Desired", "integer"),
            ("Current", "integer"),
            ("Ready", "integer"),
        ],
        ("", "namespaces") => vec![("Status", "string")],
        ("", "nodes") => vec![
            ("Status", "string"),
            ("Roles", "string"),
            ("Version", "string"),
        ],
        ("", "secrets") => vec![("Type", "string"), ("Data", "integer")],
        ("", "configmaps") => vec![("Data", "integer")],
        ("", "services") => vec![
            ("Type", "string"),
            ("Cluster-IP", "string"),
            ("Ports", "string"),
        ],
        _ if !rt.builtin => vec![("Ready", "string"), ("Status", "string")],
        _ => vec![],
    }
}

fn cells(rt: &ResourceType, o: &Value) -> Vec<Value> {
    let s = |v: &Value| v.as_i64().unwrap_or(0);
    let condition = |t: &str| {
        o["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .cloned()
    };
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => {
            let statuses = o["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = statuses.iter().map(|c| s(&c["restartCount"])).sum();
            let terminated = statuses.iter().find_map(|c| {
                c["state"]["terminated"]["reason"]
                    .as_str()
                    .map(str::to_string)
            });
            let phase = if o["metadata"]["deletionTimestamp"].is_string() {
                json!("Terminating")
            } else if let Some(reason) = terminated {
                json!(reason)
            } else {
                o["status"]["phase"].clone()
            };
            vec![json!(format!("{ready}/{total}")), phase, json!(restarts)]
        }
        ("apps", "deployments") => vec![
            json!(format!(
                "{}/{}",
                s(&o["status"]["readyReplicas"]),
                s(&o["spec"]["replicas"])
            )),
            json!(s(&o["status"]["updatedReplicas"])),
            json!(s(&o["status"]["availableReplicas"])),
        ],
        ("apps", "replicasets") => vec![
            json!(s(&o["spec"]["replicas"])),
            json!(s(&o["status"]["replicas"])),
            json!(s(&o["status"]["readyReplicas"])),
        ],
        ("apps", "statefulsets") => vec![json!(format!(
            "{}/{}",
            s(&o["status"]["readyReplicas"]),
            s(&o["spec"]["replicas"])
        ))],
        ("", "namespaces") => vec![o["status"]["phase"].clone()],
        ("", "nodes") => {
            let ready = condition("Ready").is_some_and(|c| c["status"] == "True");
            vec![
                json!(if ready { "Ready" } else { "NotReady" }),
                json!("control-plane,master"),
                o["status"]["nodeInfo"]["kubeletVersion"].clone(),
            ]
        }
        ("", "secrets") => vec![
            o["type"].clone(),
            json!(o["data"].as_object().map_or(0, |m| m.len())),
        ],
        ("", "configmaps") => vec![json!(
            o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len())
        )],
        ("", "services") => {
            let ports: Vec<String> = o["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
                .collect();
            vec![
                o["spec"]["type"].clone(),
                o["spec"]["clusterIP"].clone(),
                json!(if ports.is_empty() {
                    "<none>".into()
                } else {
                    ports.join(",")
                }),
            ]
        }
        _ if !rt.builtin => {
            let c = condition("Ready");
            vec![
                c.as_ref().map_or(json!(""), |c| c["status"].clone()),
                c.as_ref().map_or(json!(""), |c| c["message"].clone()),
            ]
        }
        _ => vec![],
    }
}

/// Evaluates the JSONPath subset CRD printer columns use: `.a.b`, `[0]` and
/// `[?(@.field=="value")]` filters. Returns the first match.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                cur = cur.get(&r[..end])?;
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (field, want) = filter.split_once("==")?;
                let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
                cur = cur
                    .as_array()?
                    .iter()
                    .find(|e| e.get(field.trim()).and_then(Value::as_str) == Some(want))?;
            } else {
                cur = cur.as_array()?.get(inner.trim().parse::<usize>().ok()?)?;
            }
        } else {
            return None;
        }
    }
    Some(cur)
}

fn printer_cell(ty: &str, v: Option<&Value>) -> Value {
    match (ty, v) {
        (_, None | Some(Value::Null)) => json!("<none>"),
        ("date", Some(v)) => json!(age(v)),
        (_, Some(Value::String(s))) => json!(s),
        (_, Some(other)) => json!(other.to_string()),
    }
}

/// Renders a list (or one object) as a Table.
pub fn render(rt: &ResourceType, body: &Value) -> Value {
    let items: Vec<&Value> = match body["items"].as_array() {
        Some(a) => a.iter().collect(),
        None => vec![body],
    };
    let custom = !rt.printer_columns.is_empty();
    let extra = if custom { vec![] } else { extra_columns(rt) };
    let mut columns = vec![col("Name", "string")];
    if custom {
        columns.extend(
            rt.printer_columns
                .iter()
                .map(|(n, t, _)| col(n, if t == "date" { "string" } else { t })),
        );
    } else {
        columns.extend(extra.iter().map(|(n, t)| col(n, t)));
        columns.push(col("Age", "string"));
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut c = vec![o["metadata"]["name"].clone()];
            if custom {
                c.extend(rt.printer_columns.iter().map(|(_, t, p)| printer_cell(t, json_path(o, p))));
                return json!({
                    "cells": c,
                    "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]},
                });
            }
            let mut e = cells(rt, o);
            e.resize(extra.len(), json!(""));
            c.extend(e);
            c.push(json!(age(&o["metadata"]["creationTimestamp"])));
            json!({
                "cells": c,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]},
            })
        })
        .collect();
    let mut meta = json!({});
    if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
        && body["items"].is_array()
    {
        meta["resourceVersion"] = json!(rv);
    }
    if let Some(c) = body["metadata"]["continue"].as_str() {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_subset() {
        let o = json!({"spec": {"url": "https://x"}, "status": {"conditions": [
            {"type": "Reconciling", "status": "False"}, {"type": "Ready", "status": "True", "message": "ok"}]}});
        assert_eq!(json_path(&o, ".spec.url"), Some(&json!("https://x")));
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type==\"Ready\")].message"),
            Some(&json!("ok"))
        );
        assert_eq!(
            json_path(&o, ".status.conditions[0].type"),
            Some(&json!("Reconciling"))
        );
        assert_eq!(json_path(&o, ".status.missing"), None);
    }
    use crate::resources::Registry;

    #[test]
    fn pods_get_ready_and_status_columns() {
        let r = Registry::new();
        let rt = r.lookup("", "v1", "pods").expect("pods");
        let list = json!({"items":[{"metadata":{"name":"p","creationTimestamp":"2020-01-01T00:00:00Z"},
            "spec":{"containers":[{"name":"c"}]},
            "status":{"phase":"Running","containerStatuses":[{"ready":true,"restartCount":0}]}}],
            "metadata":{"resourceVersion":"5"}});
        let t = render(&rt, &list);
        assert_eq!(t["rows"][0]["cells"][1], "1/1");
        assert_eq!(t["rows"][0]["cells"][2], "Running");
        assert_eq!(t["columnDefinitions"].as_array().expect("cols").len(), 5);
    }
}
