//! The redaction backstop: masks live secret values (raw, base64 and hex forms) in any text
//! before it reaches a log line, an error record, a checkpoint or the terminal.
//!
//! Steps are written never to put a secret into a message; this is the net under that rule,
//! because upstream errors (an HTTP body echoed back, a Terraform diagnostic) can contain one.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use tracing_subscriber::fmt::MakeWriter;
use zeroize::Zeroizing;

use super::SecretStore;

/// Shortest secret that is masked; shorter values would mask ordinary words.
pub const MIN_SECRET_LEN: usize = 4;

/// Shortest base64 fragment that is masked (fragments cover secrets embedded at any offset).
const MIN_FRAGMENT_LEN: usize = 8;

/// (pattern, label) pairs, longest first so a longer match wins over its own substring.
type Patterns = Vec<(Zeroizing<String>, String)>;

/// Masks known secret values in text.
///
/// Starts with the captured bootstrap secrets and learns the ones a run creates (Vault's root
/// token and unseal keys) through [`Redactor::add`], so one shared instance (the run's and the
/// process-wide one are the same `Arc`) masks them everywhere from then on.
#[derive(Default)]
pub struct Redactor {
    patterns: RwLock<Patterns>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.read().len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for every value in `store`.
    #[must_use]
    pub fn new(store: &SecretStore) -> Self {
        let mut patterns = Vec::new();
        for (name, value) in store.iter() {
            push_forms(&mut patterns, name, value.expose_secret());
        }
        sort(&mut patterns);
        Self {
            patterns: RwLock::new(patterns),
        }
    }

    /// Also mask `value` (raw, hex, base64 at any alignment) as `[redacted NAME]` from now on:
    /// for secrets that appear during a run, such as Vault's root token and unseal keys.
    pub fn add(&self, name: &str, value: &SecretString) {
        let mut patterns = self
            .patterns
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        push_forms(&mut patterns, name, value.expose_secret());
        sort(&mut patterns);
    }

    /// Whether this redactor masks anything at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// `text` with every known secret form replaced by `[redacted NAME]`.
    #[must_use]
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for (pattern, label) in self.read().iter() {
            if out.contains(pattern.as_str()) {
                out = Cow::Owned(out.replace(pattern.as_str(), label));
            }
        }
        out
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Patterns> {
        self.patterns.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Add the forms of one secret (too short ones are skipped: they would mask ordinary words).
fn push_forms(patterns: &mut Patterns, name: &str, raw: &str) {
    if raw.len() < MIN_SECRET_LEN {
        return;
    }
    let label = format!("[redacted {name}]");
    patterns.push((Zeroizing::new(raw.to_owned()), label.clone()));
    patterns.push((Zeroizing::new(hex::encode(raw.as_bytes())), label.clone()));
    for fragment in base64_fragments(raw.as_bytes()) {
        patterns.push((fragment, label.clone()));
    }
    // Escaped forms: a value inside a JSON string (an API body echoed in an error) or a URL
    // (a query string, `user:pass@` userinfo) is written differently from the raw one.
    for escaped in [
        json_escaped(raw),
        percent_encoded(raw, true),
        percent_encoded(raw, false),
    ]
    .into_iter()
    .flatten()
    {
        patterns.push((escaped, label.clone()));
    }
    // A hex-encoded key (Vault's unseal `keys`) also travels as base64 of its bytes
    // (`keys_base64` in the same sys/init answer).
    if raw.len().is_multiple_of(2)
        && raw.bytes().all(|b| b.is_ascii_hexdigit())
        && let Ok(bytes) = hex::decode(raw)
    {
        let bytes = Zeroizing::new(bytes);
        patterns.push((
            Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*bytes)),
            label.clone(),
        ));
        for fragment in base64_fragments(&bytes) {
            patterns.push((fragment, label.clone()));
        }
    }
}

/// `raw` as it appears inside a JSON string, when that differs from `raw`.
fn json_escaped(raw: &str) -> Option<Zeroizing<String>> {
    let quoted = Zeroizing::new(serde_json::to_string(raw).ok()?);
    let inner = &quoted[1..quoted.len() - 1];
    (inner != raw).then(|| Zeroizing::new(inner.to_owned()))
}

/// `raw` percent-encoded (every byte but RFC 3986's unreserved ones), in upper- or lowercase
/// hex, when that differs from `raw`.
fn percent_encoded(raw: &str, upper: bool) -> Option<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(raw.len() * 3));
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    (*out != raw).then_some(out)
}

/// Longest first, duplicates dropped.
fn sort(patterns: &mut Patterns) {
    patterns.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    patterns.dedup_by(|a, b| *a.0 == *b.0);
}

/// Base64 forms of `secret` as they appear when it is encoded at any byte offset inside a
/// larger value (e.g. `user:token` in a basic-auth header or a Kubernetes Secret's `data`):
/// for each of the three alignments, only the characters that depend on secret bytes alone.
fn base64_fragments(secret: &[u8]) -> Vec<Zeroizing<String>> {
    let mut out = Vec::new();
    for offset in 0..3usize {
        let mut buf = Zeroizing::new(vec![0u8; offset]);
        buf.extend_from_slice(secret);
        let total_bits = buf.len() * 8;
        let first = (offset * 8).div_ceil(6);
        let last = total_bits / 6; // exclusive; characters mixing in padding bits are dropped
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = Zeroizing::new(engine.encode(&*buf));
            if last > first && last - first >= MIN_FRAGMENT_LEN {
                out.push(Zeroizing::new(encoded[first..last].to_owned()));
            }
        }
    }
    out
}

/// The process-wide redactor. Not a `OnceLock`: it holds every secret in raw and encoded form,
/// so it must be droppable once the run is over ([`uninstall_global`]).
static GLOBAL: RwLock<Option<Arc<Redactor>>> = RwLock::new(None);

/// Install the process-wide redactor used by the tracing writer and the CLI's error printer.
/// A later call replaces it.
pub fn install_global(redactor: Arc<Redactor>) {
    *GLOBAL.write().unwrap_or_else(PoisonError::into_inner) = Some(redactor);
}

/// Drop the process-wide redactor (and with it, when no step still holds a clone, its copies
/// of the secrets). Called once a run is over, before the audit pause.
pub fn uninstall_global() {
    let old = GLOBAL
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    drop(old);
}

/// The process-wide redactor (`None` before [`install_global`] and after
/// [`uninstall_global`]).
#[must_use]
pub fn global() -> Option<Arc<Redactor>> {
    GLOBAL
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Mask `value` as `[redacted NAME]` in everything printed, logged or recorded from now on, by
/// teaching the process-wide redactor (shared with the run's) about it. Steps call it as soon
/// as a secret they did not capture enters the process (Vault's root token, unseal keys). A
/// no-op before [`install_global`] (`status`, which reads no secret; `plan` and `apply` install
/// one).
pub fn mask_also(name: &str, value: &SecretString) {
    if let Some(redactor) = global() {
        redactor.add(name, value);
    }
}

/// A `tracing_subscriber` writer that redacts each formatted log record before writing it to
/// stderr; plug it in with `.with_writer(RedactingStderr)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactingStderr;

/// One log record being formatted; redacted and written when dropped.
#[derive(Debug, Default)]
pub struct RedactingRecord {
    buf: Zeroizing<Vec<u8>>,
}

impl Write for RedactingRecord {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingRecord {
    fn drop(&mut self) {
        let redactor = global();
        let _ = write_redacted(redactor.as_deref(), &self.buf, &mut io::stderr());
    }
}

/// Write one formatted record to `out`, masked by `redactor`.
fn write_redacted(
    redactor: Option<&Redactor>,
    record: &[u8],
    out: &mut impl Write,
) -> io::Result<()> {
    let text = String::from_utf8_lossy(record);
    match redactor {
        Some(r) => out.write_all(r.redact(&text).as_bytes()),
        None => out.write_all(text.as_bytes()),
    }
}

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingRecord;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingRecord::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(values: &[(&str, &str)]) -> Redactor {
        let mut store = SecretStore::new();
        for (k, v) in values {
            store.insert(*k, SecretString::from(*v));
        }
        Redactor::new(&store)
    }

    #[test]
    fn masks_raw_hex_and_base64_forms() {
        let r = redactor(&[("GITHUB_TOKEN", "ghp_s3cretvalue123")]);
        let b64 = base64::engine::general_purpose::STANDARD.encode("ghp_s3cretvalue123");
        let text = format!(
            "token ghp_s3cretvalue123 b64 {b64} hex {}",
            hex::encode("ghp_s3cretvalue123")
        );
        let out = r.redact(&text);
        assert!(!out.contains("s3cret"), "{out}");
        assert!(!out.contains(&b64[..16]), "{out}");
        assert_eq!(out.matches("[redacted GITHUB_TOKEN]").count(), 3, "{out}");
    }

    #[test]
    fn masks_secret_embedded_in_larger_base64_value() {
        let r = redactor(&[("T", "correct-horse-battery-staple")]);
        for prefix in ["", "g", "gi", "git:"] {
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(format!("{prefix}correct-horse-battery-staple"));
            let out = r.redact(&encoded);
            assert!(out.contains("[redacted T]"), "prefix {prefix:?}: {out}");
        }
    }

    #[test]
    fn log_records_are_masked_before_they_are_written() {
        let r = redactor(&[("CLOUDFLARE_API_TOKEN", "cf-token-123456")]);
        let mut out = Vec::new();
        write_redacted(
            Some(&r),
            b"WARN request failed: bearer cf-token-123456\n",
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "WARN request failed: bearer [redacted CLOUDFLARE_API_TOKEN]\n"
        );
    }

    #[test]
    fn secrets_added_during_a_run_are_masked_by_every_holder() {
        let shared = Arc::new(redactor(&[("GITHUB_TOKEN", "ghp_s3cretvalue123")]));
        let holder = Arc::clone(&shared);
        let token = SecretString::from("hvs.ROOTtokenFromInit42");
        assert_eq!(
            holder.redact("token hvs.ROOTtokenFromInit42"),
            "token hvs.ROOTtokenFromInit42"
        );
        shared.add("VAULT_ROOT_TOKEN", &token);
        assert_eq!(
            holder.redact("x-vault-token: hvs.ROOTtokenFromInit42 and ghp_s3cretvalue123"),
            "x-vault-token: [redacted VAULT_ROOT_TOKEN] and [redacted GITHUB_TOKEN]"
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode("k:hvs.ROOTtokenFromInit42");
        assert!(
            holder.redact(&b64).contains("[redacted VAULT_ROOT_TOKEN]"),
            "{b64}"
        );
    }

    #[test]
    fn json_and_url_escaped_forms_are_masked() {
        let r = redactor(&[("TOKEN", "p@ss\"w/rd+canary")]);
        let json = serde_json::json!({ "token": "p@ss\"w/rd+canary" }).to_string();
        assert!(!r.redact(&json).contains("canary"), "{}", r.redact(&json));
        let url = "https://git.example/?t=p%40ss%22w%2Frd%2Bcanary";
        assert!(!r.redact(url).contains("canary"), "{}", r.redact(url));
        let lower = "p%40ss%22w%2frd%2bcanary";
        assert!(!r.redact(lower).contains("canary"), "{}", r.redact(lower));
    }

    #[test]
    fn an_unseal_keys_base64_form_is_masked_with_its_hex_form() {
        let key_hex = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
        let key_b64 =
            base64::engine::general_purpose::STANDARD.encode(hex::decode(key_hex).unwrap());
        let r = Redactor::default();
        r.add("unseal key 1", &SecretString::from(key_hex.to_owned()));
        let body = format!(r#"{{"keys":["{key_hex}"],"keys_base64":["{key_b64}"]}}"#);
        let masked = r.redact(&body);
        assert!(
            !masked.contains(key_hex) && !masked.contains(&key_b64[..20]),
            "{masked}"
        );
    }

    #[test]
    fn leaves_text_without_secrets_alone() {
        let r = redactor(&[("T", "abcdefgh")]);
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
        assert!(redactor(&[("T", "ab")]).is_empty());
    }
}
