//! The `kubestrap` binary: a thin shell around [`kubestrap::cli`].

use std::process::ExitCode;

/// Freed memory is wiped, so copies of secrets made by HTTP/JSON layers do not linger (design §5).
#[global_allocator]
static ALLOC: kubestrap::secrets::ZeroizingAllocator = kubestrap::secrets::ZeroizingAllocator;

fn main() -> ExitCode {
    kubestrap::cli::main()
}
