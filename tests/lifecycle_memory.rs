//! Unit-level proofs of the secret lifecycle (issue 5), each made by reading this process's own
//! memory through `/proc/self/mem` before and after:
//!
//! - the **environment wipe** overwrites a variable's original bytes in the environment block
//!   the kernel set up at exec (`env_start..env_end` from `/proc/self/stat`), not just unlinks
//!   it;
//! - the **zeroizing global allocator** wipes a block freed through the ordinary global
//!   allocator path (a `Vec`/`String` dropped or grown);
//! - **stack burning** overwrites what a deeper frame left on the stack, on the main thread as
//!   deep as it was ever used.
//!
//! This binary has no test harness (`harness = false` in Cargo.toml): [`kubestrap::secrets::
//! capture`] must run while the process has a single thread, and libtest runs every test on a
//! thread of its own. `main` re-executes itself with a canary variable in its initial
//! environment and checks that the child succeeded.
#![cfg_attr(not(target_os = "linux"), allow(unused))]

use std::os::unix::fs::FileExt as _;
use std::process::Command;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;

/// This binary's allocations go through the allocator under test, as in `kubestrap` itself.
#[global_allocator]
static ALLOC: kubestrap::secrets::ZeroizingAllocator = kubestrap::secrets::ZeroizingAllocator;

const ROLE: &str = "KS_LIFECYCLE_MEMORY_ROLE";
const CANARY_VAR: &str = "KS_LIFECYCLE_CANARY";
const CANARY: &str = "envCANARY-7f3a9c1e5b2d8f4a6c0e";

fn main() {
    if !cfg!(target_os = "linux") {
        println!("lifecycle_memory: skipped (needs /proc)");
        return;
    }
    if std::env::var_os(ROLE).is_some() {
        environment_wipe_overwrites_the_original_bytes();
        println!("ok: environment wipe");
        freed_heap_blocks_are_wiped();
        println!("ok: zeroizing allocator");
        burned_stack_holds_no_leftovers();
        println!("ok: stack burn");
        main_stack_burn_reaches_the_deepest_frame();
        println!("ok: main stack burn");
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "child")
        .env(CANARY_VAR, CANARY)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the proof process hung"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "a memory proof failed: {status}");
    println!("test result: ok. 4 proofs passed");
}

/// Read `len` bytes of our own memory at `addr`.
fn peek(addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::fs::File::open("/proc/self/mem")
        .unwrap()
        .read_exact_at(&mut buf, addr)
        .unwrap();
    buf
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `env_start` and `env_end` (fields 50 and 51 of `/proc/self/stat`): where the kernel put the
/// environment strings at exec.
fn environment_block() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after `comm` (which may contain spaces) start at field 3.
    let rest = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields[n - 3].parse::<u64>().unwrap();
    (field(50), field(51))
}

fn environment_wipe_overwrites_the_original_bytes() {
    let (start, end) = environment_block();
    let len = usize::try_from(end - start).unwrap();
    let entry = format!("{CANARY_VAR}={CANARY}");
    let before = peek(start, len);
    assert!(
        contains(&before, entry.as_bytes()),
        "control: the canary is in the original environment block before capture"
    );

    let store = kubestrap::secrets::capture([CANARY_VAR]).expect("single-threaded capture");
    assert_eq!(
        store.get(CANARY_VAR).map(|v| v.expose_secret()),
        Some(CANARY),
        "the value was captured intact"
    );

    let after = peek(start, len);
    assert_eq!(after.len(), before.len());
    assert!(
        !contains(&after, CANARY.as_bytes()),
        "the canary is still in the original environment block"
    );
    let mut wiped = format!("{CANARY_VAR}=").into_bytes();
    wiped.extend(std::iter::repeat_n(0u8, CANARY.len()));
    assert!(
        contains(&after, &wiped),
        "the value's bytes were not overwritten in place with zeros"
    );
    // Only the value changed: every other byte of the block is as it was.
    let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert_eq!(changed, CANARY.len(), "bytes outside the value changed");
    assert_eq!(
        std::env::var_os(CANARY_VAR),
        None,
        "still in the environment"
    );
    let environ = std::fs::read("/proc/self/environ").unwrap();
    assert!(!contains(&environ, CANARY.as_bytes()), "/proc/self/environ");
}

fn freed_heap_blocks_are_wiped() {
    const PATTERN: &[u8] = b"heapCANARY-2b7d9e4f1a6c3e8b";
    // A 1 KiB block: glibc keeps it mapped in this thread's cache once freed and overwrites
    // only its first 16 bytes with list pointers, so anything beyond that is what we left.
    let secret: Vec<u8> = PATTERN.iter().copied().cycle().take(1024).collect();
    let addr = secret.as_ptr() as u64;
    assert!(
        contains(&peek(addr, 1024), PATTERN),
        "control: the live block holds the pattern"
    );
    drop(secret);
    let freed = peek(addr, 1024);
    assert!(
        freed[16..].iter().all(|&b| b == 0),
        "a dropped Vec left bytes behind"
    );

    // Growing a String moves it: the old block must be wiped too.
    let mut grown = String::from_utf8(PATTERN.to_vec()).unwrap();
    grown.reserve_exact(0);
    let old = grown.as_ptr() as u64;
    let old_len = grown.len();
    grown.push_str(&"x".repeat(64 * 1024));
    assert_ne!(grown.as_ptr() as u64, old, "the String moved");
    let left = peek(old, old_len);
    assert!(
        !contains(&left, &PATTERN[..16]),
        "the old block of a grown String kept its bytes"
    );
    drop(grown);
}

fn burned_stack_holds_no_leftovers() {
    const FILL: u8 = 0x5C;
    const SIZE: usize = 64 * 1024;

    /// Leave a 64 KiB pattern in a frame below the caller's; return its address.
    #[inline(never)]
    fn fill() -> u64 {
        let block = [FILL; SIZE];
        std::hint::black_box(&block);
        block.as_ptr() as u64
    }

    fn longest_fill_run(bytes: &[u8]) -> usize {
        bytes
            .split(|&b| b != FILL)
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0)
    }

    let addr = fill();
    assert!(
        longest_fill_run(&peek(addr, SIZE)) > SIZE / 2,
        "control: the dead frame still holds its pattern"
    );
    let addr = fill();
    kubestrap::secrets::burn_stack();
    let left = longest_fill_run(&peek(addr, SIZE));
    assert!(
        left < 64,
        "burn_stack left a {left}-byte run of the dead frame's pattern"
    );
}

fn main_stack_burn_reaches_the_deepest_frame() {
    const FILL: u8 = 0x6B;
    const FRAME: usize = 64 * 1024;
    // Deeper than the fixed burn_stack size, as a debug build's block_on can go.
    const DEPTH: usize = 3 * 1024 * 1024 / FRAME;

    /// Recurse `n` frames, each leaving a 64 KiB pattern; return the deepest block's address.
    #[inline(never)]
    fn descend(n: usize) -> u64 {
        let block = [FILL; FRAME];
        std::hint::black_box(&block);
        let deepest = if n == 0 {
            block.as_ptr() as u64
        } else {
            descend(n - 1)
        };
        std::hint::black_box(&block);
        deepest
    }

    let deepest = descend(DEPTH);
    let pattern_bytes = |addr| peek(addr, FRAME).iter().filter(|&&b| b == FILL).count();
    assert!(
        pattern_bytes(deepest) > FRAME / 2,
        "control: the deepest dead frame holds its pattern"
    );
    kubestrap::secrets::burn_main_stack();
    assert_eq!(
        pattern_bytes(deepest),
        0,
        "burn_main_stack did not reach the deepest frame the process used"
    );
}
