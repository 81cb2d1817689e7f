//! Scanning helpers for the secret-lifecycle tests (`tests/lifecycle_*.rs`): every form a
//! canary can take in memory or on disk, and scanners for a live process's memory, files and
//! process records.

pub mod audit;
pub mod children;
pub mod forms;
pub mod memory;

use std::path::{Path, PathBuf};

pub use forms::{Form, forms_of};

/// Where one copy of a canary was found.
#[derive(Debug, Clone)]
pub struct Hit {
    /// What was scanned: a file path, a memory region (`7f..-7f.. rw-p [heap]`), `stdout`.
    pub place: String,
    /// The byte offset (file) or address (memory).
    pub at: u64,
    /// Which canary in which form (`GITHUB_TOKEN base64+1`).
    pub form: String,
    /// The bytes around the hit, escaped, to find the code that left it there.
    pub context: String,
}

impl std::fmt::Display for Hit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at {:#x} in {}: …{}…",
            self.form, self.at, self.place, self.context
        )
    }
}

/// Every occurrence of any of `forms` in `haystack`, reported against `place` with `base`
/// added to offsets.
#[must_use]
pub fn scan_bytes(haystack: &[u8], forms: &[Form], place: &str, base: u64) -> Vec<Hit> {
    let mut hits = Vec::new();
    for form in forms {
        let finder = memchr::memmem::Finder::new(&form.bytes);
        for pos in finder.find_iter(haystack) {
            let lo = pos.saturating_sub(48);
            let hi = (pos + form.bytes.len() + 48).min(haystack.len());
            hits.push(Hit {
                place: place.to_owned(),
                at: base + pos as u64,
                form: form.label.clone(),
                context: haystack[lo..hi].escape_ascii().to_string(),
            });
        }
    }
    hits
}

/// Scan every regular file under `root` (recursively, following no symlinks), except the
/// subtrees in `exclude`. Returns the hits and the number of files scanned.
#[must_use]
pub fn scan_tree(root: &Path, exclude: &[PathBuf], forms: &[Form]) -> (Vec<Hit>, usize) {
    let mut hits = Vec::new();
    let mut files = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if exclude.iter().any(|x| path.starts_with(x)) {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                files += 1;
                hits.extend(scan_bytes(&bytes, forms, &path.display().to_string(), 0));
            }
        }
    }
    (hits, files)
}

/// Panic with every hit listed if there is any.
pub fn assert_no_hits(what: &str, hits: &[Hit]) {
    if !hits.is_empty() {
        let list: Vec<String> = hits.iter().map(ToString::to_string).collect();
        panic!(
            "{} cop{} of a canary in {what}:\n{}",
            hits.len(),
            if hits.len() == 1 { "y" } else { "ies" },
            list.join("\n")
        );
    }
}
