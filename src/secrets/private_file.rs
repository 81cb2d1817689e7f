//! Writing a file that holds secret material (the emergency copy of Vault's keys) so that only
//! the owner can ever read it, even for an instant.
//!
//! `OpenOptions::mode` applies only when a file is *created*: opening an existing temp file
//! (left by a crash, or planted by another local user as a symlink) would keep that file's
//! mode or follow the link. So the temp file is created exclusively (`O_CREAT|O_EXCL`, which
//! also refuses a symlink), 0600 from its first byte, under a random name (a crashed writer's
//! leftover, even one with the same pid as in a container, is never in the way), in a
//! directory tightened to 0700, then fsynced and renamed over the destination, and the
//! directory fsynced. Everything kubestrap writes that a crash must not tear or expose goes
//! through here: checkpoints, the emergency keys copy, kubeconfigs, the run report.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of a private file.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of the directory holding one.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Create `dir` (and parents) with mode 0700, tightening an existing one.
///
/// # Errors
/// IO errors.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)?;
    let perms = fs::metadata(dir)?.permissions();
    if perms.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE))?;
    }
    Ok(())
}

/// Atomically replace `path` with `bytes`, readable and writable by the owner only (0600), in
/// a directory made (or tightened to) 0700.
///
/// # Errors
/// IO errors, including a temp file that already exists (a crashed writer's or a planted
/// one): it is never reused; remove it and retry.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    ensure_private_dir(dir)?;
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a private file needs a file name",
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    write_through(&tmp, path, dir, bytes)
}

/// Create `tmp` exclusively, write, sync, rename it over `path`, sync `dir`; a failure removes
/// `tmp` only when it is the regular file this call created.
fn write_through(tmp: &Path, path: &Path, dir: &Path, bytes: &[u8]) -> io::Result<()> {
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE_MODE)
            .open(tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        // Only our own temp file: `create_new` failed before anything was created otherwise.
        if fs::symlink_metadata(tmp).is_ok_and(|m| m.is_file()) {
            let _ = fs::remove_file(tmp);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_file_is_0600_and_its_directory_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state/cluster");
        let path = dir.join("vault-init-keys.emergency.json");
        write_private(&path, b"{\"keys\":[]}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{\"keys\":[]}");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // Replacing keeps the mode and leaves no temp file behind.
        write_private(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn a_lax_directory_is_tightened_and_a_lax_old_file_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("open");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("keys");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600, "the old file's mode is not inherited");
    }

    #[test]
    fn a_planted_temp_file_or_symlink_is_never_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        fs::create_dir(&dir).unwrap();
        let path = dir.join("keys");
        let target = tmp.path().join("stolen");
        // The temp name is random; plant the symlink where this write would go.
        let planted = dir.join(".keys.tmp-planted");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        let err = write_through(&planted, &path, &dir, b"secret").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!target.exists(), "the symlink was followed");
        assert!(!path.exists());
        assert!(fs::symlink_metadata(&planted).is_ok(), "not ours to remove");
    }
}
