//! Protobuf encoding of a Swagger 2.0 document as gnostic's `openapi.v2.Document`
//! (`openapiv2/OpenAPIv2.proto`), the form client-go's `OpenAPISchema()` downloads
//! (`Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`).
//!
//! Only what a Kubernetes document uses is encoded: info, paths (operations, parameters,
//! responses, vendor extensions) and definitions (schemas with their validation keywords and
//! `x-` extensions). Values of `default`, `enum`, `example` and extensions travel as
//! `Any.yaml`; JSON text is valid YAML, so they are written as JSON. Keywords OpenAPI v2 has no
//! field for (`nullable`, `oneOf`, `anyOf`, `not`) are dropped, as the apiserver's v2
//! publication drops them.

use serde_json::Value;

/// A protobuf message being written.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn strings(&mut self, field: u32, v: &Value) {
        for s in v.as_array().into_iter().flatten().filter_map(Value::as_str) {
            self.bytes(field, s.as_bytes());
        }
    }

    fn boolean(&mut self, field: u32, v: &Value) {
        if v.as_bool() == Some(true) {
            self.key(field, 0);
            self.varint(1);
        }
    }

    fn int64(&mut self, field: u32, v: &Value) {
        if let Some(n) = v.as_i64().filter(|n| *n != 0) {
            self.key(field, 0);
            self.varint(n as u64);
        }
    }

    fn double(&mut self, field: u32, v: &Value) {
        if let Some(f) = v.as_f64() {
            self.key(field, 1);
            self.0.extend_from_slice(&f.to_le_bytes());
        }
    }

    fn msg(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }
}

/// `Any{yaml}` with the value's JSON text.
fn any(v: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(2, &v.to_string());
    m
}

/// `NamedAny{name, value: Any{yaml}}`.
fn named_any(name: &str, v: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(1, name);
    m.msg(2, any(v));
    m
}

fn extensions(m: &mut Msg, field: u32, obj: &Value) {
    for (k, v) in obj.as_object().into_iter().flatten() {
        if k.starts_with("x-") {
            m.msg(field, named_any(k, v));
        }
    }
}

/// `Schema`.
fn schema(s: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(1, s["$ref"].as_str().unwrap_or(""));
    m.string(2, s["format"].as_str().unwrap_or(""));
    m.string(3, s["title"].as_str().unwrap_or(""));
    m.string(4, s["description"].as_str().unwrap_or(""));
    if !s["default"].is_null() {
        m.msg(5, any(&s["default"]));
    }
    m.double(6, &s["multipleOf"]);
    m.double(7, &s["maximum"]);
    m.boolean(8, &s["exclusiveMaximum"]);
    m.double(9, &s["minimum"]);
    m.boolean(10, &s["exclusiveMinimum"]);
    m.int64(11, &s["maxLength"]);
    m.int64(12, &s["minLength"]);
    m.string(13, s["pattern"].as_str().unwrap_or(""));
    m.int64(14, &s["maxItems"]);
    m.int64(15, &s["minItems"]);
    m.boolean(16, &s["uniqueItems"]);
    m.int64(17, &s["maxProperties"]);
    m.int64(18, &s["minProperties"]);
    m.strings(19, &s["required"]);
    for e in s["enum"].as_array().into_iter().flatten() {
        m.msg(20, any(e));
    }
    match &s["additionalProperties"] {
        Value::Bool(b) => {
            let mut ap = Msg::default();
            ap.key(2, 0);
            ap.varint(u64::from(*b));
            m.msg(21, ap);
        }
        v @ Value::Object(_) => {
            let mut ap = Msg::default();
            ap.msg(1, schema(v));
            m.msg(21, ap);
        }
        _ => {}
    }
    match &s["type"] {
        Value::String(t) => {
            let mut ty = Msg::default();
            ty.string(1, t);
            m.msg(22, ty);
        }
        v @ Value::Array(_) => {
            let mut ty = Msg::default();
            ty.strings(1, v);
            m.msg(22, ty);
        }
        _ => {}
    }
    match &s["items"] {
        v @ Value::Object(_) => {
            let mut items = Msg::default();
            items.msg(1, schema(v));
            m.msg(23, items);
        }
        Value::Array(list) => {
            let mut items = Msg::default();
            for v in list {
                items.msg(1, schema(v));
            }
            m.msg(23, items);
        }
        _ => {}
    }
    for a in s["allOf"].as_array().into_iter().flatten() {
        m.msg(24, schema(a));
    }
    if let Some(props) = s["properties"].as_object() {
        let mut p = Msg::default();
        for (k, v) in props {
            let mut named = Msg::default();
            named.string(1, k);
            named.msg(2, schema(v));
            p.msg(1, named);
        }
        m.msg(25, p);
    }
    m.boolean(27, &s["readOnly"]);
    if !s["example"].is_null() {
        m.msg(30, any(&s["example"]));
    }
    extensions(&mut m, 31, s);
    m
}

/// `ParametersItem{parameter: Parameter{body_parameter | non_body_parameter}}`.
fn parameter(p: &Value) -> Msg {
    let mut param = Msg::default();
    let s = |k: &str| p[k].as_str().unwrap_or("").to_string();
    if p["in"] == "body" {
        let mut b = Msg::default();
        b.string(1, &s("description"));
        b.string(2, &s("name"));
        b.string(3, "body");
        b.boolean(4, &p["required"]);
        if p["schema"].is_object() {
            b.msg(5, schema(&p["schema"]));
        }
        extensions(&mut b, 6, p);
        param.msg(1, b);
    } else {
        // Query and path sub-schemas share their first fields; `type` and `uniqueItems`
        // differ in number.
        let (field, type_no, unique_no, ext_no) = match p["in"].as_str() {
            Some("path") => (4, 5, 19, 22),
            Some("header") => (1, 5, 19, 22),
            _ => (3, 6, 20, 23),
        };
        let mut sub = Msg::default();
        sub.boolean(1, &p["required"]);
        sub.string(2, &s("in"));
        sub.string(3, &s("description"));
        sub.string(4, &s("name"));
        sub.string(type_no, &s("type"));
        sub.boolean(unique_no, &p["uniqueItems"]);
        extensions(&mut sub, ext_no, p);
        let mut non_body = Msg::default();
        non_body.msg(field, sub);
        param.msg(2, non_body);
    }
    let mut item = Msg::default();
    item.msg(1, param);
    item
}

/// `Operation`.
fn operation(o: &Value) -> Msg {
    let mut m = Msg::default();
    m.strings(1, &o["tags"]);
    m.string(2, o["summary"].as_str().unwrap_or(""));
    m.string(3, o["description"].as_str().unwrap_or(""));
    m.string(5, o["operationId"].as_str().unwrap_or(""));
    m.strings(6, &o["produces"]);
    m.strings(7, &o["consumes"]);
    for p in o["parameters"].as_array().into_iter().flatten() {
        m.msg(8, parameter(p));
    }
    if let Some(responses) = o["responses"].as_object() {
        let mut rs = Msg::default();
        for (code, r) in responses {
            let mut resp = Msg::default();
            resp.string(1, r["description"].as_str().unwrap_or(""));
            if r["schema"].is_object() {
                let mut item = Msg::default();
                item.msg(1, schema(&r["schema"]));
                resp.msg(2, item);
            }
            let mut value = Msg::default();
            value.msg(1, resp);
            let mut named = Msg::default();
            named.string(1, code);
            named.msg(2, value);
            rs.msg(1, named);
        }
        m.msg(9, rs);
    }
    m.strings(10, &o["schemes"]);
    m.boolean(11, &o["deprecated"]);
    extensions(&mut m, 13, o);
    m
}

/// `PathItem`.
fn path_item(p: &Value) -> Msg {
    let mut m = Msg::default();
    for (field, verb) in [
        (2, "get"),
        (3, "put"),
        (4, "post"),
        (5, "delete"),
        (6, "options"),
        (7, "head"),
        (8, "patch"),
    ] {
        if p[verb].is_object() {
            m.msg(field, operation(&p[verb]));
        }
    }
    for param in p["parameters"].as_array().into_iter().flatten() {
        m.msg(9, parameter(param));
    }
    extensions(&mut m, 10, p);
    m
}

/// Encodes a Swagger 2.0 JSON document as `openapi.v2.Document`.
pub fn encode_document(doc: &Value) -> Vec<u8> {
    let mut m = Msg::default();
    m.string(1, doc["swagger"].as_str().unwrap_or("2.0"));
    let mut info = Msg::default();
    info.string(1, doc["info"]["title"].as_str().unwrap_or(""));
    info.string(2, doc["info"]["version"].as_str().unwrap_or(""));
    m.msg(2, info);
    let mut paths = Msg::default();
    for (name, item) in doc["paths"].as_object().into_iter().flatten() {
        let mut named = Msg::default();
        named.string(1, name);
        named.msg(2, path_item(item));
        paths.msg(2, named);
    }
    m.msg(8, paths);
    let mut defs = Msg::default();
    for (name, s) in doc["definitions"].as_object().into_iter().flatten() {
        let mut named = Msg::default();
        named.string(1, name);
        named.msg(2, schema(s));
        defs.msg(1, named);
    }
    m.msg(9, defs);
    extensions(&mut m, 16, doc);
    m.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Reads one length-delimited or varint field list (enough to walk the encoding back).
    fn fields(mut b: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let varint = |b: &mut &[u8]| {
            let mut v = 0u64;
            let mut shift = 0;
            loop {
                let byte = b[0];
                *b = &b[1..];
                v |= u64::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    return v;
                }
            }
        };
        while !b.is_empty() {
            let key = varint(&mut b);
            let (field, wire) = ((key >> 3) as u32, key & 7);
            match wire {
                0 => out.push((field, varint(&mut b).to_le_bytes().to_vec())),
                1 => {
                    out.push((field, b[..8].to_vec()));
                    b = &b[8..];
                }
                _ => {
                    let n = varint(&mut b) as usize;
                    out.push((field, b[..n].to_vec()));
                    b = &b[n..];
                }
            }
        }
        out
    }

    #[test]
    fn documents_encode_as_gnostic_fields() {
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1"},
            "paths": {"/api/v1/x/{name}": {"patch": {
                "parameters": [{"name": "fieldValidation", "in": "query", "type": "string"}],
                "x-kubernetes-group-version-kind": {"group": "", "version": "v1", "kind": "X"},
            }}},
            "definitions": {"X": {"type": "object", "properties": {"a": {"type": "string"}}}},
        });
        let top = fields(&encode_document(&doc));
        assert_eq!(top[0], (1, b"2.0".to_vec()));
        let paths = &top.iter().find(|f| f.0 == 8).expect("paths").1;
        let named = fields(&fields(paths)[0].1);
        assert_eq!(named[0], (1, b"/api/v1/x/{name}".to_vec()));
        let item = fields(&named[1].1);
        let patch = fields(&item.iter().find(|f| f.0 == 8).expect("patch").1);
        let ext = fields(&patch.iter().find(|f| f.0 == 13).expect("gvk").1);
        assert_eq!(ext[0].1, b"x-kubernetes-group-version-kind".to_vec());
        let yaml = fields(&ext[1].1);
        let v: Value = serde_json::from_slice(&yaml[0].1).expect("json yaml");
        assert_eq!(v["kind"], "X");
        let param = fields(&patch.iter().find(|f| f.0 == 8).expect("param").1);
        let non_body = fields(&fields(&param[0].1)[0].1);
        assert_eq!(non_body[0].0, 3, "a query parameter");
        let query = fields(&non_body[0].1);
        assert!(query.contains(&(4, b"fieldValidation".to_vec())));
    }
}
