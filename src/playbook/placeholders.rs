//! Values left as `kubestrap init` placeholders (`"TODO: …"`): found before validation, so
//! `plan` and `apply` name each one (file:line:col, dotted key, what to write) instead of
//! failing on it later (a URL that is not a URL, a host that does not resolve).

use toml::de::{DeTable, DeValue};

/// How every placeholder value `kubestrap init` writes begins.
pub const PLACEHOLDER_PREFIX: &str = "TODO:";

/// A placeholder value found in the playbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placeholder {
    /// Dotted key (`flux.git_url`, `cluster.ssh.host`, `secrets[0].env`).
    pub key: String,
    /// Byte span of the value.
    pub span: std::ops::Range<usize>,
    /// What the placeholder asks for (the text after the prefix).
    pub wanted: String,
}

impl Placeholder {
    /// The problem text.
    pub(crate) fn message(&self) -> String {
        format!(
            "still the placeholder `kubestrap init` wrote: set it to {}",
            self.wanted
        )
    }
}

/// Every string value beginning with [`PLACEHOLDER_PREFIX`], in file order.
pub(crate) fn find(table: &DeTable<'_>) -> Vec<Placeholder> {
    let mut found = Vec::new();
    walk_table(table, "", &mut found);
    found.sort_by_key(|p| p.span.start);
    found
}

fn walk_table(table: &DeTable<'_>, prefix: &str, found: &mut Vec<Placeholder>) {
    for (key, value) in table {
        let name: &str = key.get_ref();
        let path = super::schema::dotted(prefix, name);
        walk_value(value, &path, found);
    }
}

fn walk_value(value: &toml::Spanned<DeValue<'_>>, path: &str, found: &mut Vec<Placeholder>) {
    match value.get_ref() {
        DeValue::String(s) => {
            if let Some(rest) = s.trim_start().strip_prefix(PLACEHOLDER_PREFIX) {
                found.push(Placeholder {
                    key: path.to_owned(),
                    span: value.span(),
                    wanted: rest.trim().to_owned(),
                });
            }
        }
        DeValue::Table(t) => walk_table(t, path, found),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_value(item, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_placeholders_at_any_depth_with_their_keys() {
        let text = "[cluster]\nname = \"x\"\n[cluster.ssh]\nhost = \"TODO: a host\"\n[flux]\ngit_url = \"TODO: a repo\"\n[[secrets]]\nenv = \"TODO: a variable\"\n";
        let (root, errors) = DeTable::parse_recoverable(text);
        assert!(errors.is_empty());
        let found = find(root.get_ref());
        let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["cluster.ssh.host", "flux.git_url", "secrets[0].env"]);
        assert_eq!(found[0].wanted, "a host");
        assert_eq!(&text[found[1].span.clone()], "\"TODO: a repo\"");
    }
}
