//! JSON snapshot of the store, written atomically so a crash never leaves half a file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Failure to read or write the snapshot.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The snapshot file could not be read or written.
    #[error(
        "cannot access the sandbox state file {path}: {source}; check the directory permissions"
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot file is not a valid snapshot.
    #[error(
        "the sandbox state file {path} is corrupt ({source}); move it away to start an empty cluster"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Serialize)]
struct SnapshotOut<'a> {
    version: u32,
    rv: u64,
    objects: Vec<EntryOut<'a>>,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    resource: &'a str,
    object: &'a Value,
}

/// A loaded snapshot.
#[derive(Deserialize)]
pub(super) struct Snapshot {
    pub rv: u64,
    pub objects: Vec<Entry>,
}

/// One stored object.
#[derive(Deserialize)]
pub(super) struct Entry {
    pub resource: String,
    pub object: Value,
}

pub(super) fn load(path: &Path) -> Result<Option<Snapshot>, PersistError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PersistError::Io {
                path: path.into(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| PersistError::Corrupt {
            path: path.into(),
            source,
        })
}

pub(super) fn save(
    path: &Path,
    rv: u64,
    objects: &[(String, Arc<Value>)],
) -> Result<(), PersistError> {
    let io = |source| PersistError::Io {
        path: path.into(),
        source,
    };
    let snap = SnapshotOut {
        version: 1,
        rv,
        objects: objects
            .iter()
            .map(|(r, o)| EntryOut {
                resource: r,
                object: o,
            })
            .collect(),
    };
    let bytes = serde_json::to_vec(&snap).map_err(|e| io(std::io::Error::other(e)))?;
    let tmp = path.with_extension("json.tmp");
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The snapshot holds Secrets, like etcd: owner-only.
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state.json");
        assert!(load(&p).expect("absent").is_none());
        let obj = Arc::new(serde_json::json!({"metadata":{"name":"a"}}));
        save(&p, 42, &[("/configmaps".into(), obj)]).expect("save");
        let s = load(&p).expect("load").expect("present");
        assert_eq!(s.rv, 42);
        assert_eq!(s.objects[0].resource, "/configmaps");
    }
}
