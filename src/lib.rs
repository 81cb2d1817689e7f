//! kubestrap: bootstrap a Kubernetes cluster into a GitOps platform.

pub mod sandbox;
