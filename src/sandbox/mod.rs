//! The sandbox cluster: local stand-ins for k3s and its add-ons that speak the real protocols,
//! so kubestrap can be proven on a machine that cannot run them (design §6).

pub mod vault;
