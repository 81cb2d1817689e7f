//! The audit pause (issue 5): make the secret-lifecycle promise checkable from outside.
//!
//! With `KUBESTRAP_AUDIT_PAUSE=1`, `apply` finishes its run (every step done or failed, output
//! printed, every secret released), then prints `audit-pause pid=N` on stderr and blocks until
//! its stdin reaches end of file. While it waits, an auditor can read the live process through
//! `/proc/N/mem`, `/proc/N/maps` and `/proc/N/environ` and look for the bootstrap secrets: the
//! canary test (`tests/lifecycle_canary.rs`) does exactly that.

use std::io::{self, Read, Write};

/// The environment variable that turns the pause on (value `1`).
pub const AUDIT_PAUSE_ENV: &str = "KUBESTRAP_AUDIT_PAUSE";

/// Whether the pause was asked for (`KUBESTRAP_AUDIT_PAUSE=1`; any other value is off).
#[must_use]
pub fn requested() -> bool {
    std::env::var_os(AUDIT_PAUSE_ENV).is_some_and(|v| v == "1")
}

/// Announce the pause on `announce` (`audit-pause pid=N`) and wait until `input` ends.
/// Whatever is read is discarded.
///
/// # Errors
/// Writing the announcement or reading `input` failed.
pub fn pause(announce: &mut impl Write, input: &mut impl Read) -> io::Result<()> {
    writeln!(announce, "audit-pause pid={}", std::process::id())?;
    announce.flush()?;
    let mut buf = [0u8; 64];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The end of an `apply` under audit: release the secrets the process still holds (the global
/// redactor, stack leftovers), then [`pause`] on stderr and stdin.
pub fn release_and_pause() {
    crate::secrets::release_process_secrets();
    let mut stdin = io::stdin().lock();
    if let Err(e) = pause(&mut io::stderr().lock(), &mut stdin) {
        // Nothing secret can be in an IO error; the pause simply ends.
        eprintln!("warning: audit pause ended early: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_announces_the_pid_and_returns_at_end_of_input() {
        let mut announce = Vec::new();
        let mut input: &[u8] = b"anything the auditor types is ignored\n";
        pause(&mut announce, &mut input).unwrap();
        assert_eq!(
            String::from_utf8(announce).unwrap(),
            format!("audit-pause pid={}\n", std::process::id())
        );
        assert!(input.is_empty(), "the input was read to its end");
    }
}
