//! The sandbox's Git host: repository URLs map to local directories (the sandbox has no
//! network), HTTPS basic credentials are checked (the host trusts the first token it sees and
//! rejects a different one later, like a forge with one valid token), and a revision is a
//! digest of the content tree, so editing the directory is a new "commit".
//!
//! Only a digest of the trusted token is kept (in `DIR/git-host.json`), never the token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Why a fetch failed, worded like go-git's errors as Flux reports them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    /// No repository is configured at this URL (or its directory is missing).
    #[error("repository not found")]
    NotFound,
    /// Credentials missing.
    #[error("authentication required")]
    AuthRequired,
    /// Credentials rejected.
    #[error("authentication required: invalid credentials")]
    AuthFailed,
    /// The branch does not exist.
    #[error("couldn't find remote ref \"refs/heads/{0}\"")]
    NoBranch(String),
    /// The content could not be read.
    #[error("cannot read repository content: {0}")]
    Io(String),
}

/// A checked-out tree.
#[derive(Debug, Clone)]
pub struct Checkout {
    /// The directory holding the content.
    pub dir: PathBuf,
    /// `sha1`-sized (40 hex) digest of the tree: paths and contents, sorted.
    pub commit: String,
    /// Full SHA-256 of the tree (the artifact digest).
    pub digest: String,
    /// Bytes of content.
    pub size: u64,
}

/// The Git host.
#[derive(Debug)]
pub struct GitHost {
    repos: BTreeMap<String, PathBuf>,
    trust_file: PathBuf,
    trusted: Mutex<Option<String>>,
}

fn normalise(url: &str) -> String {
    url.trim_end_matches('/')
        .trim_end_matches(".git")
        .to_string()
}

fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(
        format!("kubestrap-sandbox-git\0{token}").as_bytes(),
    ))
}

fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let p = e.path();
        let name = e.file_name();
        if name.to_string_lossy().starts_with(".git") {
            continue;
        }
        if e.file_type()?.is_dir() {
            walk(&p, base, out)?;
        } else {
            let rel = p
                .strip_prefix(base)
                .unwrap_or(&p)
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, std::fs::read(&p)?));
        }
    }
    Ok(())
}

impl GitHost {
    /// A host serving `repos` (URL -> directory), remembering the trusted token digest in
    /// `trust_file`.
    pub fn new(repos: BTreeMap<String, PathBuf>, trust_file: PathBuf) -> Self {
        let trusted = std::fs::read_to_string(&trust_file)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["trusted_token_sha256"].as_str().map(str::to_string));
        Self {
            repos: repos.into_iter().map(|(k, v)| (normalise(&k), v)).collect(),
            trust_file,
            trusted: Mutex::new(trusted),
        }
    }

    /// The configured URLs.
    pub fn urls(&self) -> Vec<String> {
        self.repos.keys().cloned().collect()
    }

    /// The directory behind `url` (what a checkout of its `main` branch contains).
    pub fn content_dir(&self, url: &str) -> Option<PathBuf> {
        self.repos
            .get(&normalise(url))
            .filter(|d| d.is_dir())
            .cloned()
    }

    /// Checks credentials (`None` = anonymous) for `url` at `branch` and reads the tree.
    ///
    /// # Errors
    /// Unknown repository, missing or wrong credentials, unknown branch, unreadable content.
    pub fn fetch(
        &self,
        url: &str,
        branch: &str,
        password: Option<&str>,
    ) -> Result<Checkout, GitError> {
        let dir = self.repos.get(&normalise(url)).ok_or(GitError::NotFound)?;
        let token = password
            .filter(|p| !p.is_empty())
            .ok_or(GitError::AuthRequired)?;
        let digest = token_digest(token);
        {
            let mut trusted = self.trusted.lock().unwrap_or_else(|p| p.into_inner());
            match trusted.as_deref() {
                Some(t) if t == digest => {}
                Some(_) => return Err(GitError::AuthFailed),
                None => {
                    let body = serde_json::json!({"trusted_token_sha256": digest}).to_string();
                    if let Err(e) = std::fs::write(&self.trust_file, body) {
                        tracing::warn!(error = %e, "cannot persist the git host's trusted token digest");
                    }
                    *trusted = Some(digest);
                }
            }
        }
        if branch != "main" {
            return Err(GitError::NoBranch(branch.into()));
        }
        if !dir.is_dir() {
            return Err(GitError::NotFound);
        }
        let mut files = Vec::new();
        walk(dir, dir, &mut files).map_err(|e| GitError::Io(e.to_string()))?;
        let mut h = Sha256::new();
        let mut size = 0u64;
        for (path, data) in &files {
            h.update(path.as_bytes());
            h.update([0]);
            h.update((data.len() as u64).to_be_bytes());
            h.update(data);
            size += data.len() as u64;
        }
        let full = hex::encode(h.finalize());
        Ok(Checkout {
            dir: dir.clone(),
            commit: full[..40].to_string(),
            digest: format!("sha256:{full}"),
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusts_the_first_token_and_digests_content() {
        let tmp = tempfile::tempdir().expect("tmp");
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(repo.join("a")).expect("mkdir");
        std::fs::write(repo.join("a/x.yaml"), "k: v\n").expect("write");
        let mut m = BTreeMap::new();
        m.insert("https://git.example/org/r.git".to_string(), repo.clone());
        let host = GitHost::new(m.clone(), tmp.path().join("trust.json"));
        assert_eq!(
            host.fetch("https://git.example/org/r", "main", None)
                .unwrap_err(),
            GitError::AuthRequired
        );
        let c1 = host
            .fetch("https://git.example/org/r", "main", Some("t1"))
            .expect("first");
        assert_eq!(c1.commit.len(), 40);
        assert_eq!(
            host.fetch("https://git.example/org/r", "main", Some("t2"))
                .unwrap_err(),
            GitError::AuthFailed
        );
        assert_eq!(
            host.fetch("https://git.example/org/r", "dev", Some("t1"))
                .unwrap_err(),
            GitError::NoBranch("dev".into())
        );
        std::fs::write(repo.join("a/x.yaml"), "k: w\n").expect("write");
        let c2 = host
            .fetch("https://git.example/org/r", "main", Some("t1"))
            .expect("again");
        assert_ne!(c1.commit, c2.commit);
        // The trust survives a restart of the host, and the token itself is not stored.
        let again = GitHost::new(m, tmp.path().join("trust.json"));
        assert_eq!(
            again
                .fetch("https://git.example/org/r", "main", Some("t2"))
                .unwrap_err(),
            GitError::AuthFailed
        );
        let stored = std::fs::read_to_string(tmp.path().join("trust.json")).expect("read");
        assert!(!stored.contains("t1"));
        assert_eq!(
            host.fetch("https://git.example/org/other", "main", Some("t1"))
                .unwrap_err(),
            GitError::NotFound
        );
    }
}
