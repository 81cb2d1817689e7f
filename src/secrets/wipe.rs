//! Wiping what the zeroizing allocator cannot reach: thread stacks and the process-wide
//! redactor.
//!
//! The allocator wipes heap blocks when they are freed, but two kinds of memory outlive a run
//! without ever being freed:
//! - **stacks**: a serialiser, an encoder or a formatter may hold a secret in a stack buffer.
//!   The main thread's stack lives until exit, and glibc keeps the stacks of finished threads
//!   mapped (and unwiped) in a cache for reuse, so [`burn_stack`] overwrites the stack below the
//!   caller as each runtime thread stops, and [`burn_main_stack`] the main thread's as deep as
//!   the run ever used it, before the CLI finishes;
//! - **statics**: the global redactor holds every secret in raw and encoded form, so
//!   [`release_process_secrets`] drops it once nothing will be logged with secrets in it.
//!
//! Everything here is safe code: the stack is overwritten through an ordinary local array
//! whose writes the optimiser may not elide (`zeroize`).

use zeroize::Zeroize;

/// How much stack [`burn_stack`] overwrites below its caller. Runtime threads have 2 MiB
/// stacks (tokio's default) and poll tasks whose state lives in heap-allocated futures, so a
/// poll is shallow: half the stack covers it and leaves the other half as headroom. (The main
/// thread, which polls the whole run through `block_on`, gets [`burn_main_stack`] instead.)
pub const STACK_BURN_BYTES: usize = 1024 * 1024;

/// Overwrite [`STACK_BURN_BYTES`] of the calling thread's stack below the caller's frame with
/// zeros, so secrets copied into stack buffers by earlier, deeper calls do not survive.
///
/// Call it where a thread has unwound to a shallow depth: when a runtime thread stops
/// (`tokio::runtime::Builder::on_thread_stop`) or on the main thread once the work is done.
///
/// # Caveats
/// Only memory *below* the caller is wiped; the caller's own frame and its callers' frames are
/// left alone (they are live). A thread must have at least [`STACK_BURN_BYTES`] of stack left.
#[inline(never)]
pub fn burn_stack() {
    burn::<STACK_BURN_BYTES>();
}

#[inline(never)]
fn burn<const N: usize>() {
    let mut block = [0xA5u8; N];
    // Volatile writes: the optimiser may not drop them even though `block` is never read.
    block.zeroize();
    std::hint::black_box(&block);
}

/// Size of one recursive burn frame in [`burn_main_stack`].
const CHUNK: usize = 16 * 1024;

/// Overwrite the main thread's stack below the caller, as deep as the process ever used it.
///
/// The main thread's stack mapping (`[stack]` in `/proc/self/maps`) grows page by page as it
/// is touched and never shrinks, so its low end is the deepest point the run reached (with
/// a future polled by `block_on`, easily more than [`STACK_BURN_BYTES`] in a debug build).
/// Everything between that point and the caller is overwritten; where `/proc` cannot be read,
/// [`burn_stack`] is the fallback. Only meaningful on the main thread.
pub fn burn_main_stack() {
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker) as usize;
    match main_stack_low_end().filter(|low| *low < here) {
        // Cap it so a bogus mapping can never recurse without end.
        Some(low) => {
            let depth = (here - low).clamp(CHUNK, 256 * 1024 * 1024);
            burn_chunks(depth);
            // Between two chunk frames lie a few bytes of frame bookkeeping the chunks do not
            // cover; a second pass shifted by more than that covers them.
            shifted_burn_chunks(depth);
        }
        None => burn_stack(),
    }
}

/// [`burn_chunks`] from a frame at least [`SHIFT`] bytes deeper than the caller's.
#[inline(never)]
fn shifted_burn_chunks(depth: usize) {
    let mut pad = [0u8; SHIFT];
    pad.zeroize();
    std::hint::black_box(&pad);
    burn_chunks(depth);
    std::hint::black_box(&pad);
}

/// How far the second pass is shifted: more than one frame's bookkeeping.
const SHIFT: usize = 512;

/// The low end of the `[stack]` mapping.
fn main_stack_low_end() -> Option<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[stack]"))?;
    let range = line.split_whitespace().next()?;
    usize::from_str_radix(range.split_once('-')?.0, 16).ok()
}

/// Burn `remaining` bytes of stack in [`CHUNK`]-sized frames, each below the previous one.
#[inline(never)]
fn burn_chunks(remaining: usize) {
    let mut block = [0xA5u8; CHUNK];
    block.zeroize();
    std::hint::black_box(&block);
    if remaining > CHUNK {
        burn_chunks(remaining - CHUNK);
    }
    // Used after the call, so the recursion cannot become a loop reusing one frame.
    std::hint::black_box(&block);
}

/// Drop the process-wide secrets that are not freed by the end of a run (the global redactor),
/// then burn the main thread's stack as deep as it was used. Call it on the main thread once
/// the run is over and nothing secret will be printed again; later log lines are no longer
/// redacted, which is fine because no secret is left to redact.
pub fn release_process_secrets() {
    super::redact::uninstall_global();
    burn_main_stack();
}

// Proven in `tests/lifecycle_memory.rs`, which reads this thread's stack through
// `/proc/self/mem` before and after a burn.
