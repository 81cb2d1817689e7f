//! Reading a playbook file: parse, check keys, deserialise, validate, resolve paths, fingerprint.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::error::{LineIndex, PlaybookError, PlaybookProblems, Problem};
use super::model::{Playbook, Provider, SecretDecl};
use super::schema::{playbook_shape, strip_keys, strip_value, unknown_keys};
use super::validate::{Finding, suggest_variant, validate};

/// The kubeconfig k3s writes on its own machine.
pub const K3S_LOCAL_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

/// A validated playbook with its paths resolved, ready for the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedPlaybook {
    /// The model; every relative path in it is already resolved against [`Self::dir`].
    pub playbook: Playbook,
    /// The playbook file as given.
    pub path: PathBuf,
    /// The directory relative paths were resolved against.
    pub dir: PathBuf,
    /// `sha256:<hex>` of the playbook's meaning (not its comments or layout); a checkpoint made
    /// from a different fingerprint was made from a different playbook.
    pub fingerprint: String,
}

impl Playbook {
    /// Load, validate and resolve the playbook at `path`.
    ///
    /// # Errors
    /// [`PlaybookError::Read`] when the file cannot be read; [`PlaybookError::Invalid`] with every
    /// problem found (syntax, unknown keys, wrong types, bad values), each with file:line and key.
    pub fn load(path: &Path) -> Result<LoadedPlaybook, PlaybookError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlaybookError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_str_at(&text, path)
    }

    /// Load a playbook from `text` as if it were the file at `path` (relative paths resolve
    /// against `path`'s directory).
    ///
    /// # Errors
    /// As [`Playbook::load`], minus the read error.
    pub fn from_str_at(text: &str, path: &Path) -> Result<LoadedPlaybook, PlaybookError> {
        let dir = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let lines = LineIndex::new(text);
        let mut problems = Vec::new();
        let at = |span: Option<std::ops::Range<usize>>| span.map(|s| lines.position(s.start));

        let (root, syntax) = DeTable::parse_recoverable(text);
        for err in &syntax {
            problems.push(problem(at(err.span()), "", first_line(err.message()), None));
        }
        let unknown = unknown_keys(root.get_ref(), &playbook_shape());
        let unknown_spans: Vec<_> = unknown.iter().map(|u| u.span.clone()).collect();
        for unknown in unknown {
            let message = match unknown.suggestion {
                Some(_) => "unknown key".to_owned(),
                None => format!("unknown key; valid keys here: {}", unknown.valid.join(", ")),
            };
            problems.push(problem(
                at(Some(unknown.span)),
                &unknown.path,
                message,
                unknown.suggestion.map(str::to_owned),
            ));
        }
        if !syntax.is_empty() {
            return Err(invalid(path, problems));
        }
        // `kubestrap init` placeholders first: a TODO is reported as one, not as whatever
        // check its text happens to fail.
        let placeholders = super::placeholders::find(root.get_ref());
        for p in &placeholders {
            problems.push(problem(at(Some(p.span.clone())), &p.key, p.message(), None));
        }

        let mut known = root.clone();
        strip_keys(known.get_mut(), &unknown_spans);
        let mut sections = Sections {
            table: known.get_ref(),
            lines: &lines,
            problems: &mut problems,
            degraded: std::collections::BTreeSet::new(),
        };
        let cluster = sections.required("cluster");
        let flux = sections.required("flux");
        let sandbox = sections.optional("sandbox");
        let vault = sections.optional("vault");
        let external_secrets = sections.optional("external_secrets");
        let terraform = sections.optional("terraform");
        let secrets: Option<Option<Vec<SecretDecl>>> = sections.optional_raw("secrets");
        let git_auth = sections.optional("git_auth");
        let apps = sections.optional("apps");
        let verify = sections.optional("verify");
        let timeouts = sections.optional("timeouts");

        let (
            Some(cluster),
            Some(flux),
            Some(sandbox),
            Some(vault),
            Some(external_secrets),
            Some(terraform),
            Some(secrets),
            Some(git_auth),
            Some(apps),
            Some(verify),
            Some(timeouts),
        ) = (
            cluster,
            flux,
            sandbox,
            vault,
            external_secrets,
            terraform,
            secrets,
            git_auth,
            apps,
            verify,
            timeouts,
        )
        else {
            return Err(invalid(path, problems));
        };
        let playbook = Playbook {
            cluster,
            sandbox,
            flux,
            vault: vault.unwrap_or_default(),
            external_secrets: external_secrets.unwrap_or_default(),
            terraform: terraform.unwrap_or_default(),
            secrets: secrets.unwrap_or_default(),
            git_auth: git_auth.unwrap_or_default(),
            apps: apps.unwrap_or_default(),
            verify: verify.unwrap_or_default(),
            timeouts: timeouts.unwrap_or_default(),
        };
        let degraded = std::mem::take(&mut sections.degraded);
        let mut findings = validate(&playbook);
        // A section with a type error holds defaults in place of the bad fields: checks of its
        // values would judge the defaults, not the file.
        findings.retain(|f| {
            let section = f.key.split(['.', '[']).next().unwrap_or_default();
            !degraded.contains(section)
        });
        let fingerprint = fingerprint(&playbook);
        let playbook = resolve(playbook, &dir, &mut findings);
        for f in findings
            .into_iter()
            .filter(|f| !placeholders.iter().any(|p| p.key == f.key))
        {
            let span = locate(&root, &f.key);
            problems.push(problem(at(span), &f.key, f.message, f.suggestion));
        }
        if !problems.is_empty() {
            return Err(invalid(path, problems));
        }
        Ok(LoadedPlaybook {
            playbook,
            path: path.to_owned(),
            dir,
            fingerprint,
        })
    }
}

impl LoadedPlaybook {
    /// Root of kubestrap's local state (checkpoints, locks, sandbox data).
    #[must_use]
    pub fn state_dir(&self) -> &Path {
        self.playbook
            .cluster
            .state_dir
            .as_deref()
            .unwrap_or_else(|| Path::new(".kubestrap"))
    }

    /// This cluster's state directory: `<state_dir>/<cluster name>`.
    #[must_use]
    pub fn cluster_dir(&self) -> PathBuf {
        self.state_dir().join(&self.playbook.cluster.name)
    }

    /// The sandbox's directory, for `provider = "sandbox"`.
    #[must_use]
    pub fn sandbox_dir(&self) -> Option<PathBuf> {
        (self.playbook.cluster.provider == Provider::Sandbox).then(|| {
            self.playbook
                .sandbox
                .as_ref()
                .and_then(|s| s.dir.clone())
                .unwrap_or_else(|| self.cluster_dir().join("sandbox"))
        })
    }

    /// The kubeconfig the playbook names: `[cluster] kubeconfig`, else the sandbox's own, else
    /// for `k3s-local` the one k3s writes ([`K3S_LOCAL_KUBECONFIG`]). `--kubeconfig` takes
    /// precedence at the CLI edge.
    ///
    /// A provider that creates its cluster never falls back to `KUBECONFIG` or
    /// `~/.kube/config`: those point at whatever cluster the current context names, and a
    /// bootstrap must land on the cluster it just made.
    #[must_use]
    pub fn kubeconfig(&self) -> Option<PathBuf> {
        self.playbook
            .cluster
            .kubeconfig
            .clone()
            .or_else(|| self.sandbox_dir().map(|d| d.join("kubeconfig")))
            .or_else(|| {
                (self.playbook.cluster.provider == Provider::K3sLocal)
                    .then(|| PathBuf::from(K3S_LOCAL_KUBECONFIG))
            })
    }

    /// 1-based (line, column) of the dotted `key` (`terraform.dir`, `secrets[1].env`) in the
    /// playbook file, or of its nearest parent written there; read again from disk, so checks
    /// that run after loading (the preflight) point into the file too.
    #[must_use]
    pub fn position_of(&self, key: &str) -> Option<(usize, usize)> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let (root, _) = DeTable::parse_recoverable(&text);
        let span = locate(&root, key)?;
        Some(LineIndex::new(&text).position(span.start))
    }

    /// The `[[secrets]]` declaration for `env`.
    #[must_use]
    pub fn secret(&self, env: &str) -> Option<&SecretDecl> {
        self.playbook.secrets.iter().find(|s| s.env == env)
    }
}

struct Sections<'a, 'i> {
    table: &'a DeTable<'i>,
    lines: &'a LineIndex,
    problems: &'a mut Vec<Problem>,
    /// Sections that deserialised only after their bad fields were removed.
    degraded: std::collections::BTreeSet<String>,
}

impl<'i> Sections<'_, 'i> {
    fn value(&self, key: &str) -> Option<&toml::Spanned<DeValue<'i>>> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, v)| v)
    }

    /// `Some(value)` when present and well-typed; `None` after recording a problem.
    fn required<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        if self.value(key).is_none() {
            self.problems.push(problem(
                None,
                key,
                format!("missing section [{key}]; see playbooks/sandbox.toml for an example"),
                None,
            ));
            return None;
        }
        self.optional_raw::<T>(key).flatten()
    }

    fn optional<T: DeserializeOwned>(&mut self, key: &str) -> Option<Option<T>> {
        self.optional_raw(key)
    }

    /// `Some(None)` when absent, `Some(Some(v))` when valid, `None` after recording problems.
    ///
    /// serde stops at the first bad field, so each bad field is reported under its own dotted
    /// key, removed, and the section deserialised again: every type, enum and duration error
    /// of the section is found in one load.
    fn optional_raw<T: DeserializeOwned>(&mut self, key: &str) -> Option<Option<T>> {
        let Some(mut value) = self.value(key).cloned() else {
            return Some(None);
        };
        let mut reported: Vec<String> = Vec::new();
        // Each round removes one key, so this ends; the bound is a guard against a bug.
        for _ in 0..256 {
            let err = match T::deserialize(ValueDeserializer::from(value.clone())) {
                Ok(v) => {
                    if !reported.is_empty() {
                        // Valid without the bad fields (their defaults stand in): the rest of
                        // the playbook can still be checked, this section's values cannot.
                        self.degraded.insert(key.to_owned());
                    }
                    return Some(Some(v));
                }
                Err(err) => err,
            };
            let raw = first_line(err.message());
            if let Some(field) = missing_field(&raw)
                && reported.iter().any(|k| k.rsplit('.').next() == Some(field))
            {
                // The field was removed after its own error: already reported.
                return None;
            }
            let suggestion = variant_suggestion(&raw);
            let Some(span) = err.span() else {
                self.problems
                    .push(problem(None, key, explain(&raw), suggestion));
                return None;
            };
            let (mut path, key_span) = key_at(&value, key, &span);
            if let Some(field) = missing_field(&raw) {
                path = format!("{path}.{field}");
            }
            let pos = Some(self.lines.position(span.start));
            self.problems
                .push(problem(pos, &path, explain(&raw), suggestion));
            reported.push(path);
            strip_value(value.get_mut(), &[key_span?]);
        }
        None
    }
}

/// The field of serde's "missing field `x`".
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|r| r.split_once('`'))
        .map(|(f, _)| f)
}

/// serde's "invalid type: integer `5`, expected a string" as "expected a string, found
/// integer `5`": what was expected first, then what the file has.
fn explain(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            let expected = match expected {
                "u8" => "a whole number from 0 to 255",
                "u16" => "a whole number from 0 to 65535",
                "u32" | "u64" | "usize" => "a whole number, 0 or more",
                other => other,
            };
            return format!("expected {expected}, found {found}");
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        return format!("expected {expected}, found {found}");
    }
    if let Some(field) = missing_field(message) {
        return format!("required key is missing: add `{field} = …`");
    }
    message.to_owned()
}

/// The dotted key of the innermost value of `value` (the section `prefix`) whose span holds
/// `span`, and the span of that key in the source (none for array items and the section
/// itself, which cannot be removed from inside).
fn key_at(
    value: &toml::Spanned<DeValue<'_>>,
    prefix: &str,
    span: &std::ops::Range<usize>,
) -> (String, Option<std::ops::Range<usize>>) {
    let inside = |outer: std::ops::Range<usize>| outer.start <= span.start && span.end <= outer.end;
    let mut path = prefix.to_owned();
    let mut key_span = None;
    let mut current = value.get_ref();
    loop {
        let next = match current {
            // A `[sub.table]`'s span may cover only its header: then it is the last nested
            // table or array that starts before the error.
            DeValue::Table(t) => t
                .iter()
                .find(|(k, v)| inside(v.span()) || inside(k.span()))
                .or_else(|| {
                    t.iter()
                        .filter(|(k, v)| {
                            matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_))
                                && k.span().start <= span.start
                        })
                        .max_by_key(|(k, _)| k.span().start)
                })
                .map(|(k, v)| {
                    path.push('.');
                    path.push_str(k.get_ref());
                    key_span = Some(k.span());
                    v.get_ref()
                }),
            // An `[[array]]` table's span may cover only its header: then the item is the
            // last one that starts before the error.
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .find(|(_, v)| inside(v.span()))
                .or_else(|| {
                    items
                        .iter()
                        .enumerate()
                        .rfind(|(_, v)| v.span().start <= span.start)
                })
                .map(|(i, v)| {
                    path.push_str(&format!("[{i}]"));
                    key_span = None;
                    v.get_ref()
                }),
            _ => None,
        };
        match next {
            Some(n) => current = n,
            None => return (path, key_span),
        }
    }
}

/// For serde's "unknown variant `x`, expected one of `a`, `b`", the variant nearest to `x`.
fn variant_suggestion(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown variant `")?;
    let (given, rest) = rest.split_once('`')?;
    let candidates: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    suggest_variant(given, &candidates).map(str::to_owned)
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_owned()
}

fn problem(
    pos: Option<(usize, usize)>,
    key: &str,
    message: impl Into<String>,
    suggestion: Option<String>,
) -> Problem {
    Problem {
        line: pos.map(|p| p.0),
        column: pos.map(|p| p.1),
        key: key.to_owned(),
        message: message.into(),
        suggestion,
    }
}

fn invalid(path: &Path, mut problems: Vec<Problem>) -> PlaybookError {
    problems.sort_by_key(|p| (p.line.unwrap_or(0), p.column));
    problems.dedup();
    PlaybookError::Invalid(PlaybookProblems {
        path: path.to_owned(),
        problems,
    })
}

/// The byte span of the value at a dotted key path like `secrets[1].env`, or of its nearest
/// existing parent.
fn locate(root: &toml::Spanned<DeTable<'_>>, key: &str) -> Option<std::ops::Range<usize>> {
    let mut best = None;
    let mut current: Option<&DeValue<'_>> = None;
    let mut table = Some(root.get_ref());
    for segment in key.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((name, idx)) => (name, idx.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let t = match (table, current) {
            (Some(t), _) => t,
            (None, Some(DeValue::Table(t))) => t,
            _ => break,
        };
        let Some((k, v)) = t.iter().find(|(k, _)| k.get_ref() == name) else {
            break;
        };
        best = Some(k.span());
        let mut value = v;
        if let Some(i) = index {
            let Some(item) = value.get_ref().as_array().and_then(|a| a.get(i)) else {
                break;
            };
            value = item;
            best = Some(item.span());
        }
        current = Some(value.get_ref());
        table = None;
    }
    best
}

fn fingerprint(pb: &Playbook) -> String {
    let bytes = serde_json::to_vec(pb).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

/// Whether `path` is a regular file someone may execute (checked before `sandbox up` is
/// started with it, so a wrong path is bad input, not a failed step).
fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn resolve(mut pb: Playbook, dir: &Path, findings: &mut Vec<Finding>) -> Playbook {
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            dir.join(p)
        }
    };
    let c = &mut pb.cluster;
    c.kubeconfig = c.kubeconfig.as_deref().map(abs);
    c.state_dir = Some(
        c.state_dir
            .as_deref()
            .map_or_else(|| dir.join(".kubestrap"), abs),
    );
    if let Some(ssh) = &mut c.ssh {
        ssh.identity_file = ssh.identity_file.as_deref().map(abs);
    }
    if let Some(sandbox) = &mut pb.sandbox {
        sandbox.dir = sandbox.dir.as_deref().map(abs);
        sandbox.vault_server = sandbox.vault_server.as_deref().map(abs);
        if let Some(server) = &sandbox.vault_server
            && !is_executable_file(server)
        {
            findings.push(Finding {
                key: "sandbox.vault_server".into(),
                message: format!(
                    "{} is not an executable file: name a `bao` or `vault` server binary",
                    server.display()
                ),
                suggestion: Some(
                    "scripts/install-openbao installs OpenBao and prints its binary's path".into(),
                ),
            });
        }
        for (url, path) in &mut sandbox.git_repos {
            *path = abs(path);
            if !path.is_dir() {
                findings.push(Finding {
                    key: "sandbox.git_repos".into(),
                    message: format!(
                        "{url:?} maps to {}, which is not a directory",
                        path.display()
                    ),
                    suggestion: None,
                });
            }
        }
    }
    pb.terraform.dir = abs(&pb.terraform.dir);
    if let Some(src) = &mut pb.flux.install_manifest
        && !src.contains("://")
        && !src.starts_with("sandbox:")
    {
        *src = abs(Path::new(src.as_str())).display().to_string();
    }
    pb
}
