//! kubestrap
