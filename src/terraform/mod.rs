//! Running Terraform or OpenTofu with secrets passed through a pipe.
//!
//! Phase 2 of the bootstrap populates Vault with the bootstrap secrets by running the user's
//! Terraform module (the "self-referencing Terraform" of the design). This module is the safe
//! way to run it: resolved binary, cleared environment, variables on an inherited pipe,
//! streamed and redacted output, Terraform's own error text on failure.

mod pipe;
mod runner;
mod varfile;

pub use pipe::SecretPipe;
pub use runner::{OutputStream, Sink, Terraform, TerraformError, find_on_path};
pub use varfile::{VarFileError, VarValue, Variables};
