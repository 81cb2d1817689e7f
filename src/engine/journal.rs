//! The checkpoint's journal: one JSON line per step transition, appended to
//! `checkpoint.journal` next to the snapshot (`checkpoint.json`) and folded into it when the run
//! ends (or the next run starts).
//!
//! Why a journal: rewriting and fsyncing the whole snapshot (file and directory) after every
//! transition cost two to four synced writes per step. A line append costs one `write`, and only
//! a step's *completion* must be durable before its dependents start or anything announces it,
//! so only completions wait for `fdatasync`. Completions of steps that finish together share
//! one `fdatasync` (group commit): the first waiter syncs for everyone written so far, the
//! others wait for it. A start is written at once (a SIGKILL loses nothing the kernel holds) and
//! reaches the disk with the next sync.
//!
//! What a crash loses: a step whose completion was not yet synced is recorded as running (or not
//! at all), and is verified or run again on `--resume`, which is what "running" means anyway.
//! A torn last line (power loss mid-append) is ignored when reading.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::checkpoint::StepRecord;
use super::step::StepId;

/// One journal line: a step's whole record after a transition.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Entry {
    /// The step.
    pub step: StepId,
    /// Its record after the transition.
    pub record: StepRecord,
}

/// The journal path for a snapshot path (`checkpoint.json` -> `checkpoint.journal`).
#[must_use]
pub(crate) fn path_for(snapshot: &Path) -> PathBuf {
    snapshot.with_extension("journal")
}

/// Reads the entries of the journal at `path` (none when it does not exist). A last line without
/// its newline is a torn append and is skipped.
///
/// # Errors
/// IO errors, and a message for a complete line that is not an entry.
pub(crate) fn read(path: &Path) -> Result<Vec<Entry>, JournalReadError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(JournalReadError::Io(e)),
    };
    let complete = match text.iter().rposition(|&b| b == b'\n') {
        Some(last) => &text[..=last],
        None => &[][..],
    };
    complete
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_slice(line)
                .map_err(|e| JournalReadError::Corrupt(format!("journal line {}: {e}", i + 1)))
        })
        .collect()
}

/// Why a journal could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JournalReadError {
    /// Reading failed.
    #[error("{0}")]
    Io(#[source] io::Error),
    /// A complete line is not an entry.
    #[error("{0}")]
    Corrupt(String),
}

/// An open journal, appended to by the run's steps.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    sync: Mutex<SyncState>,
    synced: Condvar,
}

/// Group-commit bookkeeping: lines are numbered as written; `synced` is the highest number known
/// to be on disk.
#[derive(Debug, Default)]
struct SyncState {
    written: u64,
    synced: u64,
    syncing: bool,
    /// `fdatasync` calls made, for the tests and the benchmark.
    syncs: u64,
}

impl Journal {
    /// Open (create, 0600) the journal at `path` for appending.
    ///
    /// # Errors
    /// IO errors.
    pub(crate) fn open(path: PathBuf) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
            sync: Mutex::new(SyncState::default()),
            synced: Condvar::new(),
        })
    }

    /// The journal's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Append `entry` without waiting for the disk; returns its sequence number.
    ///
    /// # Errors
    /// IO errors.
    pub(crate) fn append(&self, entry: &Entry) -> io::Result<u64> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(&line)?;
        let mut sync = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        sync.written += 1;
        Ok(sync.written)
    }

    /// Append `entry` and return once it is on disk. Concurrent callers share `fdatasync`s.
    ///
    /// # Errors
    /// IO errors.
    pub(crate) fn commit(&self, entry: &Entry) -> io::Result<()> {
        let seq = self.append(entry)?;
        self.wait_synced(seq)
    }

    /// Block until every line up to `seq` is on disk, syncing if nobody else is.
    fn wait_synced(&self, seq: u64) -> io::Result<()> {
        let mut state = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if state.synced >= seq {
                return Ok(());
            }
            if state.syncing {
                state = self
                    .synced
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Lead: sync everything written so far, for every waiter.
            state.syncing = true;
            let target = state.written;
            drop(state);
            let result = self
                .file
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .try_clone()
                .and_then(|f| f.sync_data());
            state = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
            state.syncing = false;
            state.syncs += 1;
            if result.is_ok() {
                state.synced = state.synced.max(target);
            }
            self.synced.notify_all();
            result?;
        }
    }

    /// How many `fdatasync`s were made.
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.sync
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .syncs
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::{Phase, StepStatus};

    fn entry(id: &str, status: StepStatus) -> Entry {
        Entry {
            step: StepId::new(id),
            record: StepRecord::new(status, Phase::Infrastructure, "h".into()),
        }
    }

    #[test]
    fn lines_are_read_back_and_a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.journal");
        let j = Journal::open(path.clone()).unwrap();
        j.append(&entry("a", StepStatus::Running)).unwrap();
        j.commit(&entry("a", StepStatus::Done)).unwrap();
        drop(j);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(br#"{"step":"b","rec"#)
            .unwrap();
        let got = read(&path).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].record.status, StepStatus::Done);
        assert!(read(&dir.path().join("none")).unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_complete_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.journal");
        std::fs::write(&path, "not json\n").unwrap();
        assert!(matches!(read(&path), Err(JournalReadError::Corrupt(_))));
    }

    #[test]
    fn concurrent_commits_share_syncs_and_are_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let j = Arc::new(Journal::open(dir.path().join("checkpoint.journal")).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let j = Arc::clone(&j);
                std::thread::spawn(move || {
                    for i in 0..25 {
                        j.commit(&entry(&format!("s{t}-{i}"), StepStatus::Done))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(read(j.path()).unwrap().len(), 200);
        assert!(j.syncs() <= 200, "at most one sync per commit");
        assert!(j.syncs() >= 1);
    }
}
