//! kubestrap: bootstrap a Kubernetes cluster into a GitOps platform (k3s, Flux, Vault, External
//! Secrets) in five resumable phases.
//!
//! The library is split so that planning never does IO and acting always does:
//! [`playbook`] reads and validates the one input file, [`engine`] turns typed steps into a
//! phased DAG and walks it (plan or apply), [`steps`] holds the step kinds (built from the
//! [`kube`], [`terraform`] and [`templates`] toolkits), [`secrets`] guards bootstrap secrets
//! from capture to redaction, [`output`] renders engine events and plans, [`cli`] is the command
//! line with its exit codes. The local stand-in cluster everything is proven on is its own crate,
//! `kubestrap-sandbox`, reached only through the CLI (`kubestrap sandbox`) and the `sandbox`
//! provider.

pub mod cli;
pub mod engine;
pub mod http;
pub mod kube;
pub mod output;
pub mod playbook;
pub mod preflight;
pub mod secrets;
pub mod steps;
pub mod templates;
pub mod terraform;
