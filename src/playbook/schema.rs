//! Finds every unknown key in a playbook at once, with its position and the nearest valid key.
//!
//! serde's `deny_unknown_fields` stops at the first unknown key; users fixing a playbook want all
//! of them. The valid keys are read from the serde derives themselves (see [`fields_of`]), so this
//! list cannot drift from the model.

use serde::de::{self, Deserialize, Visitor};
use toml::de::{DeTable, DeValue};

use super::model::{
    Apps, Cluster, ExternalSecrets, Flux, GitAuth, Playbook, Sandbox, SecretDecl, SshTarget,
    Terraform, Timeouts, Vault, Verify,
};

/// The shape of a part of the playbook, as far as key checking cares.
#[derive(Debug)]
pub(crate) enum Shape {
    /// A table with a fixed set of keys; some keys have nested shapes.
    Struct {
        fields: &'static [&'static str],
        children: Vec<(&'static str, Shape)>,
    },
    /// An array of tables of one shape (`[[secrets]]`).
    ArrayOf(Box<Shape>),
    /// A table with free-form keys (`git_repos`).
    FreeMap,
}

/// An unknown key found by [`unknown_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownKey {
    /// Dotted path of the key, e.g. `vault.key_shars`.
    pub path: String,
    /// Byte span of the key in the source.
    pub span: std::ops::Range<usize>,
    /// Nearest valid key, when one is close enough.
    pub suggestion: Option<&'static str>,
    /// All valid keys at that place (for the message when nothing is close).
    pub valid: &'static [&'static str],
}

/// The playbook's full key schema.
pub(crate) fn playbook_shape() -> Shape {
    Shape::Struct {
        fields: fields_of::<Playbook>(),
        children: vec![
            (
                "cluster",
                Shape::Struct {
                    fields: fields_of::<Cluster>(),
                    children: vec![("ssh", leaf_struct(fields_of::<SshTarget>()))],
                },
            ),
            (
                "sandbox",
                Shape::Struct {
                    fields: fields_of::<Sandbox>(),
                    children: vec![("git_repos", Shape::FreeMap)],
                },
            ),
            ("flux", leaf_struct(fields_of::<Flux>())),
            ("vault", leaf_struct(fields_of::<Vault>())),
            (
                "external_secrets",
                leaf_struct(fields_of::<ExternalSecrets>()),
            ),
            ("terraform", leaf_struct(fields_of::<Terraform>())),
            (
                "secrets",
                Shape::ArrayOf(Box::new(leaf_struct(fields_of::<SecretDecl>()))),
            ),
            ("git_auth", leaf_struct(fields_of::<GitAuth>())),
            ("apps", leaf_struct(fields_of::<Apps>())),
            ("verify", leaf_struct(fields_of::<Verify>())),
            ("timeouts", leaf_struct(fields_of::<Timeouts>())),
        ],
    }
}

fn leaf_struct(fields: &'static [&'static str]) -> Shape {
    Shape::Struct {
        fields,
        children: Vec::new(),
    }
}

/// Every key in `table` that `shape` does not allow, in source order.
pub(crate) fn unknown_keys(table: &DeTable<'_>, shape: &Shape) -> Vec<UnknownKey> {
    let mut found = Vec::new();
    walk_table(table, shape, "", &mut found);
    found.sort_by_key(|k| k.span.start);
    found
}

fn walk_table(table: &DeTable<'_>, shape: &Shape, prefix: &str, found: &mut Vec<UnknownKey>) {
    let Shape::Struct { fields, children } = shape else {
        return;
    };
    for (key, value) in table {
        let name: &str = key.get_ref();
        let path = super::schema::dotted(prefix, name);
        if !fields.contains(&name) {
            found.push(UnknownKey {
                path,
                span: key.span(),
                suggestion: nearest(name, fields),
                valid: fields,
            });
            continue;
        }
        if let Some((_, child)) = children.iter().find(|(k, _)| *k == name) {
            walk_value(value.get_ref(), child, &path, found);
        }
    }
}

/// The dotted key of `name` inside `prefix` (`vault` + `key_shares` = `vault.key_shares`).
pub(crate) fn dotted(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

fn walk_value(value: &DeValue<'_>, shape: &Shape, path: &str, found: &mut Vec<UnknownKey>) {
    match (value, shape) {
        (DeValue::Table(table), Shape::Struct { .. }) => walk_table(table, shape, path, found),
        (DeValue::Array(items), Shape::ArrayOf(inner)) => {
            for (i, item) in items.iter().enumerate() {
                walk_value(item.get_ref(), inner, &format!("{path}[{i}]"), found);
            }
        }
        // Wrong types are reported by the typed deserialisation that follows.
        _ => {}
    }
}

/// Remove the keys at `spans` (the unknown ones) everywhere in `table`, so the typed
/// deserialisation can go on to report the remaining problems (missing fields, wrong types).
pub(crate) fn strip_keys(table: &mut DeTable<'_>, spans: &[std::ops::Range<usize>]) {
    let unknown: Vec<String> = table
        .iter()
        .filter(|(k, _)| spans.contains(&k.span()))
        .map(|(k, _)| k.get_ref().to_string())
        .collect();
    for name in unknown {
        table.remove(name.as_str());
    }
    for (_, value) in table.iter_mut() {
        strip_value(value.get_mut(), spans);
    }
}

pub(crate) fn strip_value(value: &mut DeValue<'_>, spans: &[std::ops::Range<usize>]) {
    match value {
        DeValue::Table(t) => strip_keys(t, spans),
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                strip_value(item.get_mut(), spans);
            }
        }
        _ => {}
    }
}

/// The valid key closest to `name`, if it is plausibly a typo of it.
#[must_use]
pub(crate) fn nearest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(name, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The field names serde's derive knows for struct `T`.
///
/// The derived `Deserialize` hands its `FIELDS` list to `deserialize_struct`; this probe
/// deserializer records it and stops.
pub(crate) fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldsProbe {
        fields: &mut fields,
    });
    fields
}

struct FieldsProbe<'a> {
    fields: &'a mut &'static [&'static str],
}

#[derive(Debug)]
struct ProbeDone;

impl std::fmt::Display for ProbeDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("probe done")
    }
}
impl std::error::Error for ProbeDone {}
impl de::Error for ProbeDone {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        Self
    }
}

impl<'de> de::Deserializer<'de> for FieldsProbe<'_> {
    type Error = ProbeDone;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(ProbeDone)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.fields = fields;
        Err(ProbeDone)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_from_the_serde_derive() {
        let fields = fields_of::<SecretDecl>();
        assert_eq!(
            fields,
            &["env", "tf_var", "vault_path", "vault_key", "required"]
        );
    }

    #[test]
    fn finds_every_unknown_key_with_suggestions() {
        let src = "[cluster]\nname = \"x\"\nprovidr = \"sandbox\"\n[vault]\nkey_shars = 3\n[[secrets]]\nenv = \"A\"\nvault_pth = \"p\"\n[bogus]\n";
        let table = toml::de::DeTable::parse(src).unwrap();
        let found = unknown_keys(table.get_ref(), &playbook_shape());
        let paths: Vec<_> = found
            .iter()
            .map(|k| (k.path.as_str(), k.suggestion))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("cluster.providr", Some("provider")),
                ("vault.key_shars", Some("key_shares")),
                ("secrets[0].vault_pth", Some("vault_path")),
                ("bogus", None),
            ]
        );
    }
}
