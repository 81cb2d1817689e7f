//! Files only the sandbox's user may read: its service-account signing key, its CA key, its
//! admin token. Created with mode 0600 from the first byte, so no other user ever sees them.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `data` to `path`, created (or truncated) with mode 0600.
pub(crate) fn write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(data)
}
