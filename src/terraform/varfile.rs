//! Terraform variables rendered as an HCL var-file, in memory only.
//!
//! Terraform picks the var-file syntax from the file name, and `/dev/fd/N` does not end in
//! `.json`, so the file is parsed as HCL (`.tfvars` syntax). Strings are HCL quoted templates,
//! so besides `\` and `"` the template sequences must be escaped too: `${` becomes `$${` and
//! `%{` becomes `%%{`, or a secret containing them would be interpolated (or fail to parse).
//!
//! The rendered text holds secret values. It lives in a [`Zeroizing`] buffer sized up front so it
//! never reallocates (a reallocation would leave an unwiped copy behind), and it only ever goes
//! into the pipe to the Terraform child.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// Why variables could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum VarFileError {
    /// A variable name is not a valid HCL identifier.
    #[error(
        "{name:?} is not a valid terraform variable name: use letters, digits, `_` and `-`, starting with a letter or `_`"
    )]
    InvalidName {
        /// The offending name (a name, never a value).
        name: String,
    },
}

/// One variable value. Secret strings are kept as [`SecretString`] until rendering.
#[derive(Debug, Clone)]
pub enum VarValue {
    /// A non-secret string, e.g. a Vault mount name.
    Plain(String),
    /// A secret string.
    Secret(SecretString),
    /// A map (Terraform `map(...)` or `object(...)`), keys in sorted order.
    Map(BTreeMap<String, VarValue>),
}

impl VarValue {
    fn secrets<'a>(&'a self, out: &mut Vec<&'a SecretString>) {
        match self {
            VarValue::Plain(_) => {}
            VarValue::Secret(s) => out.push(s),
            VarValue::Map(m) => m.values().for_each(|v| v.secrets(out)),
        }
    }

    /// Upper bound of the rendered size, so the buffer never has to grow.
    fn capacity(&self) -> usize {
        match self {
            // Worst case: every char becomes a 6-byte `\uXXXX` escape (4-byte chars stay 4 bytes).
            VarValue::Plain(s) => s.len() * 6 + 2,
            VarValue::Secret(s) => s.expose_secret().len() * 6 + 2,
            VarValue::Map(m) => {
                4 + m
                    .iter()
                    .map(|(k, v)| k.len() * 6 + 8 + v.capacity())
                    .sum::<usize>()
            }
        }
    }
}

/// The variables passed to one Terraform run.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    vars: BTreeMap<String, VarValue>,
}

impl Variables {
    /// No variables.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a non-secret string variable.
    pub fn plain(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.vars.insert(name.into(), VarValue::Plain(value.into()));
        self
    }

    /// Sets a secret string variable.
    pub fn secret(&mut self, name: impl Into<String>, value: SecretString) -> &mut Self {
        self.vars.insert(name.into(), VarValue::Secret(value));
        self
    }

    /// Sets any value (e.g. a map of secrets).
    pub fn value(&mut self, name: impl Into<String>, value: VarValue) -> &mut Self {
        self.vars.insert(name.into(), value);
        self
    }

    /// Every secret value, so the runner can redact Terraform's output.
    #[must_use]
    pub fn secret_values(&self) -> Vec<&SecretString> {
        let mut out = Vec::new();
        self.vars.values().for_each(|v| v.secrets(&mut out));
        out
    }

    /// Renders the HCL var-file into a zeroizing buffer that never reallocates.
    ///
    /// # Errors
    /// [`VarFileError::InvalidName`] for a name Terraform would reject.
    pub fn render(&self) -> Result<Zeroizing<String>, VarFileError> {
        let capacity = self
            .vars
            .iter()
            .map(|(k, v)| k.len() + 4 + v.capacity())
            .sum::<usize>()
            + 1;
        let mut out = Zeroizing::new(String::with_capacity(capacity));
        let initial = out.capacity();
        for (name, value) in &self.vars {
            if !valid_identifier(name) {
                return Err(VarFileError::InvalidName { name: name.clone() });
            }
            out.push_str(name);
            out.push_str(" = ");
            write_value(&mut out, value);
            out.push('\n');
        }
        debug_assert!(out.capacity() == initial, "the var-file buffer reallocated");
        Ok(out)
    }
}

fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn write_value(out: &mut String, value: &VarValue) {
    match value {
        VarValue::Plain(s) => write_string(out, s),
        VarValue::Secret(s) => write_string(out, s.expose_secret()),
        VarValue::Map(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(out, k);
                out.push_str(" = ");
                write_value(out, v);
            }
            out.push('}');
        }
    }
}

/// Writes `s` as an HCL quoted string with every special sequence escaped.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let mut prev = '\0';
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // `${` -> `$${` and `%{` -> `%%{`: double the introducer before a `{`.
            '{' if prev == '$' || prev == '%' => {
                out.push(prev);
                out.push('{');
            }
            c if c.is_control() => {
                // Writing into a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
        prev = c;
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_one(s: &str) -> String {
        let mut v = Variables::new();
        v.secret("x", SecretString::from(s.to_owned()));
        v.render().unwrap().to_string()
    }

    #[test]
    fn escapes_quotes_backslashes_controls_and_template_sequences() {
        assert_eq!(render_one("plain"), "x = \"plain\"\n");
        assert_eq!(render_one("a\"b\\c"), "x = \"a\\\"b\\\\c\"\n");
        assert_eq!(
            render_one("l1\nl2\r\t\u{1}"),
            "x = \"l1\\nl2\\r\\t\\u0001\"\n"
        );
        assert_eq!(
            render_one("${x} %{if} $$ %x"),
            "x = \"$${x} %%{if} $$ %x\"\n"
        );
        assert_eq!(render_one("$${already}"), "x = \"$$${already}\"\n");
        assert_eq!(render_one("é😀"), "x = \"é😀\"\n");
    }

    #[test]
    fn renders_maps_sorted_and_rejects_bad_names() {
        let mut inner = BTreeMap::new();
        inner.insert(
            "token".to_owned(),
            VarValue::Secret(SecretString::from("t")),
        );
        inner.insert("user".to_owned(), VarValue::Plain("git".to_owned()));
        let mut outer = BTreeMap::new();
        outer.insert("app/git".to_owned(), VarValue::Map(inner));
        let mut v = Variables::new();
        v.value("secrets", VarValue::Map(outer))
            .plain("mount", "secret");
        assert_eq!(
            v.render().unwrap().as_str(),
            "mount = \"secret\"\nsecrets = {\"app/git\" = {\"token\" = \"t\", \"user\" = \"git\"}}\n"
        );
        assert_eq!(v.secret_values().len(), 1);
        let mut bad = Variables::new();
        bad.plain("1x", "v");
        assert!(matches!(
            bad.render(),
            Err(VarFileError::InvalidName { .. })
        ));
    }

    #[test]
    fn the_buffer_is_sized_up_front_for_the_worst_case() {
        let nasty: String = "\u{1}".repeat(100) + &"${".repeat(50);
        let mut v = Variables::new();
        v.secret("x", SecretString::from(nasty));
        let out = v.render().unwrap();
        assert!(out.len() <= out.capacity());
    }
}
