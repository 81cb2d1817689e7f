//! Bootstrap secrets, from capture to redaction (design §5).
//!
//! - [`capture()`] reads the playbook's declared variables before the runtime starts threads,
//!   removes them from the environment and wipes their bytes;
//! - [`SecretStore`] holds them as [`secrecy::SecretString`]s;
//! - [`ZeroizingAllocator`] wipes freed heap memory, so transient copies do not linger;
//! - [`Redactor`] masks live values in anything printed, logged or recorded;
//! - [`write_private`] puts secret material on disk (the emergency keys copy) as 0600 only;
//! - [`burn_stack`] and [`release_process_secrets`] wipe what is never freed (stacks, the global
//!   redactor) once a run is over.

mod alloc;
pub mod capture;
pub mod private_file;
pub mod redact;
mod store;
pub mod wipe;

pub use alloc::ZeroizingAllocator;
pub use capture::{CaptureError, capture};
pub use private_file::{ensure_private_dir, write_private};
pub use redact::{RedactingStderr, Redactor};
pub use store::SecretStore;
pub use wipe::{burn_main_stack, burn_stack, release_process_secrets};
