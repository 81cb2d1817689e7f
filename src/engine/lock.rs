//! One run per cluster on this machine: an advisory lock on `<cluster dir>/lock`.
//!
//! The kernel releases an `flock` when its holder dies, so "held" always means a live process:
//! a lock file that still names a PID but can be locked was left by a dead run and is reclaimed
//! with a warning. The file is never deleted (deleting would let two runs lock different inodes).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::secrets::ensure_private_dir;

/// File name inside the cluster's state directory.
pub const LOCK_FILE: &str = "lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds it.
    #[error(
        "another kubestrap run (pid {holder}) holds {path}; wait for it to finish or stop it, then try again"
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// What the file says about the holder.
        holder: String,
    },
    /// The lock file could not be created or locked.
    #[error("failed to lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
}

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

/// Result of taking the lock.
#[derive(Debug)]
pub struct Acquired {
    /// The lock.
    pub lock: RunLock,
    /// The PID a dead run left in the file, when the lock was reclaimed from it.
    pub reclaimed_from: Option<String>,
}

impl RunLock {
    /// Take the lock in `cluster_dir` (created 0700 if missing).
    ///
    /// # Errors
    /// [`LockError::Held`] while a live process holds it; [`LockError::Io`] otherwise.
    pub fn acquire(cluster_dir: &Path) -> Result<Acquired, LockError> {
        let path = cluster_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        ensure_private_dir(cluster_dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let mut previous = String::new();
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let _ = file.read_to_string(&mut previous);
                return Err(LockError::Held {
                    path,
                    holder: holder_pid(&previous),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.read_to_string(&mut previous).map_err(io)?;
        let reclaimed_from = (!previous.trim().is_empty()).then(|| holder_pid(&previous));
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(
            file,
            "pid={}\nstarted_at={}",
            std::process::id(),
            jiff::Timestamp::now()
        )
        .map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Acquired {
            lock: Self { file, path },
            reclaimed_from,
        })
    }

    /// Whether a live run holds the lock in `cluster_dir` right now. Takes and drops a shared
    /// lock without writing anything, so it is safe while a run is going on.
    #[must_use]
    pub fn is_held(cluster_dir: &Path) -> bool {
        let Ok(file) = File::open(cluster_dir.join(LOCK_FILE)) else {
            return false;
        };
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(_) => true,
        }
    }

    /// The lock file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // An empty file means "released cleanly"; the kernel drops the flock with the fd.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn holder_pid(content: &str) -> String {
    content
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .map_or_else(|| "unknown".to_owned(), |p| p.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_is_refused_then_allowed_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        assert!(first.reclaimed_from.is_none());
        match RunLock::acquire(dir.path()) {
            Err(LockError::Held { holder, .. }) => {
                assert_eq!(holder, std::process::id().to_string())
            }
            other => panic!("expected Held, got {other:?}"),
        }
        assert!(RunLock::is_held(dir.path()));
        drop(first);
        assert!(!RunLock::is_held(dir.path()));
        let again = RunLock::acquire(dir.path()).unwrap();
        assert!(
            again.reclaimed_from.is_none(),
            "a clean release leaves nothing to reclaim"
        );
    }

    #[test]
    fn stale_lock_file_is_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "pid=999999\nstarted_at=x\n").unwrap();
        let acquired = RunLock::acquire(dir.path()).unwrap();
        assert_eq!(acquired.reclaimed_from.as_deref(), Some("999999"));
    }
}
