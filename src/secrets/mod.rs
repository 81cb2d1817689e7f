//! Bootstrap secrets, from capture to redaction (design §5).
//!
//! - [`capture()`] reads the playbook's declared variables before the runtime starts threads,
//!   removes them from the environment and wipes their bytes;
//! - [`SecretStore`] holds them as [`secrecy::SecretString`]s;
//! - [`ZeroizingAllocator`] wipes freed heap memory, so transient copies do not linger;
//! - [`Redactor`] masks live values in anything printed, logged or recorded.

mod alloc;
pub mod capture;
pub mod redact;
mod store;

pub use alloc::ZeroizingAllocator;
pub use capture::{CaptureError, capture};
pub use redact::{RedactingStderr, Redactor};
pub use store::SecretStore;
