//! kubestrap: bootstrap a Kubernetes cluster into a GitOps platform.

pub mod kube;
pub mod sandbox;
pub mod templates;
pub mod terraform;
