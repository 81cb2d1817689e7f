//! kubestrap: bootstrap a Kubernetes cluster into a GitOps platform.

fn main() {}
