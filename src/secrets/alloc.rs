//! A global allocator that wipes memory when it is freed or moved.
//!
//! Secrets pass through layers we do not control (HTTP clients, JSON, TLS buffers) that copy
//! them into ordinary heap buffers. Wiping every buffer on `dealloc`, and the old buffer on a
//! moving `realloc`, means those copies do not outlive their owners in freed memory.
//!
//! This module needs `unsafe`: implementing [`GlobalAlloc`] is an unsafe trait, and wiping goes
//! through raw pointers handed to us by the runtime. Each block says why it is sound.
#![expect(
    unsafe_code,
    reason = "a GlobalAlloc implementation is unsafe by definition"
)]

use std::alloc::{GlobalAlloc, Layout, System};

/// [`System`] plus wiping on free. Install in a binary with
/// `#[global_allocator] static ALLOC: ZeroizingAllocator = ZeroizingAllocator;`.
///
/// # Caveats
/// It cannot wipe memory that is never freed (leaks, the environment block: see
/// [`super::capture()`]) or copies in registers and on the stack.
#[derive(Debug, Default, Clone, Copy)]
pub struct ZeroizingAllocator;

/// Overwrite `len` bytes at `ptr` with zeros in a way the optimiser may not remove.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn wipe(ptr: *mut u8, len: usize) {
    if len == 0 {
        return;
    }
    #[cfg(any(target_env = "gnu", target_env = "musl"))]
    // SAFETY: the caller guarantees `ptr..ptr+len` is writable; explicit_bzero is specified
    // not to be optimised away.
    unsafe {
        libc::explicit_bzero(ptr.cast(), len);
    }
    #[cfg(not(any(target_env = "gnu", target_env = "musl")))]
    {
        use zeroize::Zeroize;
        // SAFETY: the caller guarantees `ptr..ptr+len` is valid and exclusively ours.
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }.zeroize();
    }
}

// SAFETY: every method forwards to `System` with the same layout contract; the only additions
// are wipes of blocks we own at that moment and a realloc expressed as alloc+copy+free, which
// preserves GlobalAlloc's semantics.
unsafe impl GlobalAlloc for ZeroizingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes until we free it below.
        unsafe {
            wipe(ptr, layout.size());
            System.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // `System.realloc` may move the block and free the old one unwiped, so move it
        // ourselves.
        // SAFETY: the caller guarantees `new_size` rounded to `layout.align()` does not
        // overflow, so the new layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_layout` has non-zero size (GlobalAlloc::realloc requires new_size > 0).
        let new_ptr = unsafe { System.alloc(new_layout) };
        if !new_ptr.is_null() {
            // SAFETY: both blocks are live, distinct, and at least `min` bytes long; the old
            // one is ours to wipe and free once copied.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                wipe(ptr, layout.size());
                System.dealloc(ptr, layout);
            }
        }
        new_ptr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realloc_preserves_contents_and_alignment() {
        let a = ZeroizingAllocator;
        let layout = Layout::from_size_align(16, 8).unwrap();
        // SAFETY: test of the allocator contract with valid layouts and pointers.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            for i in 0..16 {
                p.add(i).write(i as u8);
            }
            let q = a.realloc(p, layout, 64);
            assert!(!q.is_null());
            assert_eq!(q as usize % 8, 0);
            for i in 0..16 {
                assert_eq!(q.add(i).read(), i as u8);
            }
            a.dealloc(q, Layout::from_size_align(64, 8).unwrap());
        }
    }

    /// Read `len` bytes of this process's memory at `addr` through `/proc/self/mem`: an OS
    /// read, so inspecting a freed block is not a use-after-free in Rust's sense. `buf` is
    /// allocated by the caller beforehand, so the read itself does not reuse the freed block.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn peek(addr: usize, buf: &mut [u8]) {
        use std::os::unix::fs::FileExt as _;
        let mem = std::fs::File::open("/proc/self/mem").unwrap();
        mem.read_exact_at(buf, addr as u64).unwrap();
    }

    /// Free a 512-byte block full of a pattern through `free`, then look at it: glibc keeps a
    /// block of this size mapped in the freeing thread's cache, writing only its two list
    /// pointers (16 bytes) over the start. Returns how many pattern bytes survive after them.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn pattern_left_after_free(free: impl FnOnce(*mut u8, Layout)) -> usize {
        const PATTERN: u8 = 0xC3;
        let layout = Layout::from_size_align(512, 16).unwrap();
        let mut after = vec![0u8; 512];
        // SAFETY: a valid non-zero layout; the block is written within bounds, then handed to
        // `free` exactly once and never dereferenced again.
        let addr = unsafe {
            let p = ZeroizingAllocator.alloc(layout);
            assert!(!p.is_null());
            std::ptr::write_bytes(p, PATTERN, 512);
            let addr = p as usize;
            free(p, layout);
            addr
        };
        peek(addr, &mut after);
        after[16..].iter().filter(|&&b| b == PATTERN).count()
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_blocks_are_wiped_and_plain_system_frees_are_not() {
        // Control: the plain system allocator leaves the bytes behind, so the inspection
        // below can see them.
        // SAFETY: `p` was allocated with `layout` by `System` (ZeroizingAllocator::alloc is
        // System::alloc) and is freed once.
        let left = pattern_left_after_free(|p, l| unsafe { System.dealloc(p, l) });
        // (Most of it: glibc may consolidate the block and write a few more list pointers.)
        assert!(
            left > 256,
            "the control should leave the pattern in place, left {left}"
        );
        // SAFETY: as above, freed once through the zeroizing allocator.
        let left = pattern_left_after_free(|p, l| unsafe { ZeroizingAllocator.dealloc(p, l) });
        assert_eq!(
            left, 0,
            "the zeroizing allocator left secret bytes in a freed block"
        );
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_moving_realloc_wipes_the_old_block() {
        // SAFETY: the new block (and the old block's address, never dereferenced after the
        // realloc) come from our allocator; the old block is freed by realloc itself.
        let left = pattern_left_after_free(|p, l| unsafe {
            let q = ZeroizingAllocator.realloc(p, l, 8192);
            assert!(!q.is_null());
            assert_ne!(q, p, "realloc always moves, so the old block can be wiped");
            assert_eq!(*q.add(100), 0xC3, "contents moved");
            ZeroizingAllocator.dealloc(q, Layout::from_size_align(8192, 16).unwrap());
        });
        assert_eq!(left, 0, "realloc left the old block's bytes behind");
    }

    #[test]
    fn wipe_zeroes_the_block() {
        let mut buf = vec![0xAAu8; 32];
        // SAFETY: `buf` is a live, writable 32-byte buffer.
        unsafe { wipe(buf.as_mut_ptr(), buf.len()) };
        assert!(buf.iter().all(|&b| b == 0));
    }
}
