//! Reading a live process's memory through `/proc/PID/maps` and `/proc/PID/mem` (Linux).
//!
//! The reader needs ptrace access to the target (same user, and with Yama's default scope the
//! target must be a descendant of the reader): the tests scan a kubestrap they spawned.

use std::fs::File;
use std::os::unix::fs::FileExt as _;

use super::{Form, Hit, scan_bytes};

/// One mapping from `/proc/PID/maps`.
#[derive(Debug, Clone)]
pub struct Region {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `rw-p` and friends.
    pub perms: String,
    /// The mapped file or pseudo-name (`[heap]`, `[stack]`), empty for anonymous memory.
    pub name: String,
}

impl Region {
    /// `start-end perms name`, for reports.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "{:x}-{:x} {} {}",
            self.start, self.end, self.perms, self.name
        )
    }
}

/// What a scan of a process covered and found.
#[derive(Debug, Default)]
pub struct MemoryScan {
    /// Readable mappings read in full.
    pub regions: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Mappings marked readable that the kernel refused to read (`[vvar]`), with the error.
    pub unreadable: Vec<String>,
    /// Every copy found.
    pub hits: Vec<Hit>,
}

/// The mappings of `pid`.
///
/// # Panics
/// When `/proc/PID/maps` cannot be read.
#[must_use]
pub fn regions(pid: u32) -> Vec<Region> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/maps: {e}"));
    maps.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(6, ' ');
            let range = parts.next()?;
            let perms = parts.next()?.to_owned();
            let (_offset, _dev, _inode) = (parts.next()?, parts.next()?, parts.next()?);
            let name = parts.next().unwrap_or("").trim().to_owned();
            let (start, end) = range.split_once('-')?;
            Some(Region {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                perms,
                name,
            })
        })
        .collect()
}

/// Read `len` bytes at `addr` of `pid`'s memory.
///
/// # Errors
/// The kernel refused the read (no ptrace access, unmapped or special mapping).
pub fn read(pid: u32, addr: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mem = File::open(format!("/proc/{pid}/mem"))?;
    let mut buf = vec![0u8; len];
    mem.read_exact_at(&mut buf, addr)?;
    Ok(buf)
}

/// Scan every readable mapping of `pid` for `forms`, in chunks that overlap by the longest
/// form so a copy straddling a chunk boundary is still found once.
///
/// # Panics
/// When `/proc/PID/mem` cannot be opened (no ptrace access).
#[must_use]
pub fn scan_process(pid: u32, forms: &[Form]) -> MemoryScan {
    const CHUNK: u64 = 4 << 20;
    let mem = File::open(format!("/proc/{pid}/mem"))
        .unwrap_or_else(|e| panic!("open /proc/{pid}/mem: {e}"));
    let overlap = forms.iter().map(|f| f.bytes.len()).max().unwrap_or(1) as u64 - 1;
    let mut scan = MemoryScan::default();
    let mut buf = vec![0u8; (CHUNK + overlap) as usize];
    for region in regions(pid) {
        if !region.perms.starts_with('r') {
            continue;
        }
        let place = region.describe();
        let mut addr = region.start;
        let mut failed = None;
        while addr < region.end {
            let len = (region.end - addr).min(CHUNK + overlap) as usize;
            if let Err(e) = mem.read_exact_at(&mut buf[..len], addr) {
                failed = Some(e);
                break;
            }
            scan.bytes += len as u64;
            let found = scan_bytes(&buf[..len], forms, &place, addr);
            // A hit inside the overlap is found again by the next chunk: keep it once.
            scan.hits.extend(
                found
                    .into_iter()
                    .filter(|h| h.at < addr + CHUNK || addr + len as u64 >= region.end),
            );
            addr += CHUNK;
        }
        match failed {
            Some(e) if addr == region.start => scan.unreadable.push(format!("{place}: {e}")),
            Some(e) => panic!("{place}: read failed part-way at {addr:#x}: {e}"),
            None => scan.regions += 1,
        }
    }
    scan
}
