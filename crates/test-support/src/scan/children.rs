//! Recording the argv and environment of the processes kubestrap starts.
//!
//! Three sources, because no single one sees everything: a wrapper script placed first on
//! PATH logs its own argv and environ before it execs the real binary (exact, for Terraform);
//! a long-lived child is read from `/proc` while it runs (the sandbox); and a watcher thread
//! polls `/proc` for any direct child of kubestrap, as a backstop for children nobody expected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one child process was started with.
#[derive(Debug, Clone)]
pub struct ChildRecord {
    /// Where the record came from (`wrapper terraform #3`, `pid 1234`).
    pub origin: String,
    /// argv, one entry per argument.
    pub argv: Vec<Vec<u8>>,
    /// The environment, `NAME=value` entries.
    pub environ: Vec<Vec<u8>>,
}

impl ChildRecord {
    /// Parse NUL-separated `/proc/PID/cmdline` and `/proc/PID/environ` contents.
    #[must_use]
    pub fn parse(origin: String, cmdline: &[u8], environ: &[u8]) -> Self {
        let split = |b: &[u8]| -> Vec<Vec<u8>> {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        };
        Self {
            origin,
            argv: split(cmdline),
            environ: split(environ),
        }
    }

    /// The variable names in the environment, sorted.
    #[must_use]
    pub fn env_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .environ
            .iter()
            .map(|e| {
                let name = e.split(|&c| c == b'=').next().unwrap_or_default();
                String::from_utf8_lossy(name).into_owned()
            })
            .collect();
        names.sort();
        names
    }

    /// The argv as one readable line.
    #[must_use]
    pub fn command_line(&self) -> String {
        self.argv
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Read a running process's argv and environ; `None` once it has exited.
#[must_use]
pub fn read_pid(pid: u32, origin: &str) -> Option<ChildRecord> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    (!cmdline.is_empty())
        .then(|| ChildRecord::parse(format!("{origin} (pid {pid})"), &cmdline, &environ))
}

/// Put an executable `bin_dir/name` that records its argv and environment under
/// `log_dir/<name>.<pid>.{argv,environ}` and then execs `real` with the same arguments, the
/// same environment and the same inherited descriptors (the var-file pipe).
///
/// # Panics
/// On IO errors.
pub fn install_wrapper(bin_dir: &Path, name: &str, real: &Path, log_dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(bin_dir).unwrap();
    std::fs::create_dir_all(log_dir).unwrap();
    let script = format!(
        "#!/bin/sh\n\
         # Test wrapper: record how kubestrap started us, then become the real {name}.\n\
         cat /proc/$$/cmdline > '{log}/{name}.'$$'.argv'\n\
         cat /proc/$$/environ > '{log}/{name}.'$$'.environ'\n\
         exec '{real}' \"$@\"\n",
        log = log_dir.display(),
        real = real.display(),
    );
    let path = bin_dir.join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Every record the wrappers left in `log_dir`.
#[must_use]
pub fn wrapper_records(log_dir: &Path) -> Vec<ChildRecord> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return out;
    };
    let mut argv_files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "argv"))
        .collect();
    argv_files.sort();
    for argv in argv_files {
        let environ = argv.with_extension("environ");
        let stem = argv.file_stem().unwrap().to_string_lossy().into_owned();
        out.push(ChildRecord::parse(
            format!("wrapper {stem}"),
            &std::fs::read(&argv).unwrap_or_default(),
            &std::fs::read(&environ).unwrap_or_default(),
        ));
    }
    out
}

/// Polls `/proc` for direct children of one process and keeps the latest record of each
/// once it has exec'd (a short-lived child may be missed, which is why exact records come
/// from wrappers).
#[derive(Debug)]
pub struct ChildWatcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<u32, ChildRecord>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ChildWatcher {
    /// Start watching the children of `parent`.
    #[must_use]
    pub fn start(parent: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let thread = {
            let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
            std::thread::spawn(move || {
                let parent_cmdline = std::fs::read(format!("/proc/{parent}/cmdline")).ok();
                while !stop.load(Ordering::Relaxed) {
                    for pid in children_of(parent) {
                        // Between fork and exec a child still shows its parent's argv and
                        // environment block (kubestrap's own, checked separately): only a
                        // child that has exec'd is recorded, with its latest view.
                        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok();
                        if cmdline.is_none() || cmdline == parent_cmdline {
                            continue;
                        }
                        if let Some(record) = read_pid(pid, "child of kubestrap") {
                            seen.lock().unwrap().insert(pid, record);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Self {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stop watching; every child seen.
    #[must_use]
    pub fn finish(mut self) -> Vec<ChildRecord> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen.lock().unwrap().values().cloned().collect()
    }
}

impl Drop for ChildWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Pids whose parent is `parent` right now (from each process's `/proc/PID/stat`).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}
