//! Wiping what the zeroizing allocator cannot reach: thread stacks and the process-wide
//! redactor.
//!
//! The allocator wipes heap blocks when they are freed, but two kinds of memory outlive a run
//! without ever being freed:
//! - **stacks**: a serialiser, an encoder or a formatter may hold a secret in a stack buffer.
//!   The main thread's stack lives until exit, and glibc keeps the stacks of finished threads
//!   mapped (and unwiped) in a cache for reuse, so [`burn_stack`] overwrites the stack below the
//!   caller: the runtime calls it as each worker thread stops, the CLI on the main thread
//!   before it finishes;
//! - **statics**: the global redactor holds every secret in raw and encoded form, so
//!   [`release_process_secrets`] drops it once nothing will be logged with secrets in it.
//!
//! Everything here is safe code: the stack is overwritten through an ordinary local array
//! whose writes the optimiser may not elide (`zeroize`).

use zeroize::Zeroize;

/// How much stack [`burn_stack`] overwrites below its caller. Worker threads have 2 MiB stacks
/// (tokio's default) and the main thread 8 MiB; a run never goes deeper than a few hundred KiB
/// (measured with the canary test), so 1 MiB covers it with room to spare while leaving 1 MiB
/// of headroom on a worker thread.
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

/// Drop the process-wide secrets that are not freed by the end of a run (the global redactor),
/// then burn the calling thread's stack. Call it once the run is over and nothing secret will
/// be printed again; later log lines are no longer redacted, which is fine because no secret
/// is left to redact.
pub fn release_process_secrets() {
    super::redact::uninstall_global();
    burn_stack();
}

// Proven in `tests/lifecycle_memory.rs`, which reads this thread's stack through
// `/proc/self/mem` before and after a burn.
