//! Capturing bootstrap secrets from the environment, then erasing them from it.
//!
//! Design §5: the declared variables are read into `secrecy` types before the async runtime
//! starts threads, removed from the environment (so child processes and `/proc/<pid>/environ`
//! readers do not see them) and their original bytes are overwritten, because `unsetenv` only
//! unlinks the `NAME=value` string: the bytes stay in the process's initial stack block.
//!
//! This module needs `unsafe` twice: `std::env::remove_var` is unsafe in edition 2024 (it races
//! with other threads reading the environment), and overwriting the value means writing through
//! the raw `environ` pointers. Both are sound only while the process is single-threaded, which
//! [`capture`] checks before touching anything.
#![expect(
    unsafe_code,
    reason = "environment removal and in-place wiping of the environ block need raw access"
)]

use std::ffi::CStr;

use secrecy::SecretString;
use zeroize::Zeroizing;

use super::SecretStore;

/// Why secrets could not be captured.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Threads were already running, so touching the environment would be a data race.
    #[error(
        "secrets must be captured before any thread starts ({0} threads running); this is a bug in the caller"
    )]
    ThreadsRunning(usize),
    /// A variable's value is not UTF-8.
    #[error("environment variable {0} is not valid UTF-8; export it as text")]
    NotUnicode(String),
}

/// Read each of `names` from the environment into a [`SecretStore`], then remove it and wipe
/// its original bytes. Unset or empty variables are simply absent from the store (the caller
/// decides which are required).
///
/// # Errors
/// [`CaptureError::ThreadsRunning`] when called after threads were started (Linux only check);
/// [`CaptureError::NotUnicode`] for a non-UTF-8 value (the variable is still wiped).
pub fn capture<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<SecretStore, CaptureError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(CaptureError::ThreadsRunning(threads));
    }
    let mut store = SecretStore::new();
    let mut bad = None;
    for name in names {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            continue;
        }
        let value = take_and_wipe(name);
        // SAFETY: the process is single-threaded (checked above), so no other thread can be
        // reading or writing the environment concurrently.
        unsafe { std::env::remove_var(name) };
        match value {
            Some(bytes) if !bytes.is_empty() => match std::str::from_utf8(&bytes) {
                Ok(text) => store.insert(name, SecretString::from(text)),
                Err(_) => bad = Some(name.to_owned()),
            },
            _ => {}
        }
    }
    match bad {
        Some(name) => Err(CaptureError::NotUnicode(name)),
        None => Ok(store),
    }
}

/// Copy the value of the first `name=` entry of `environ` and overwrite the value bytes of every
/// such entry with zeros in place.
fn take_and_wipe(name: &str) -> Option<Zeroizing<Vec<u8>>> {
    let prefix = format!("{name}=");
    let mut found: Option<Zeroizing<Vec<u8>>> = None;
    // SAFETY: single-threaded (checked by the caller); `environ` is a NULL-terminated array of
    // pointers to NUL-terminated strings owned by the C runtime, valid until the environment is
    // modified, which nothing does during this loop. Overwriting bytes *before* the terminating
    // NUL with zeros keeps every entry a valid C string.
    unsafe {
        let mut entry = environ_ptr();
        while !entry.is_null() && !(*entry).is_null() {
            let c = CStr::from_ptr(*entry);
            let bytes = c.to_bytes();
            if bytes.starts_with(prefix.as_bytes()) {
                let value_ptr = (*entry).cast::<u8>().add(prefix.len());
                let value_len = bytes.len() - prefix.len();
                if found.is_none() {
                    found = Some(Zeroizing::new(
                        std::slice::from_raw_parts(value_ptr, value_len).to_vec(),
                    ));
                }
                for i in 0..value_len {
                    std::ptr::write_volatile(value_ptr.add(i), 0);
                }
                std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
            }
            entry = entry.add(1);
        }
    }
    found
}

#[cfg(target_os = "linux")]
fn environ_ptr() -> *mut *mut libc::c_char {
    // SAFETY: reading the pointer value of the C runtime's `environ`; single-threaded.
    unsafe { libc::environ }
}

#[cfg(not(target_os = "linux"))]
fn environ_ptr() -> *mut *mut libc::c_char {
    unsafe extern "C" {
        static mut environ: *mut *mut libc::c_char;
    }
    // SAFETY: as above.
    unsafe { environ }
}

/// Threads in this process (Linux: `/proc/self/task`); 1 where it cannot be known.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, Iterator::count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_once_threads_are_running() {
        // The test harness itself runs tests on threads; make sure at least one more exists.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        let result = capture(["KUBESTRAP_CAPTURE_TEST_UNSET"]);
        drop(tx);
        helper.join().unwrap();
        assert!(
            matches!(result, Err(CaptureError::ThreadsRunning(n)) if n > 1),
            "{result:?}"
        );
    }
}
