//! tabby's shared state: the Calico v3 resource model, where it lives in etcd, and how to read,
//! write and watch it safely.
//!
//! Everything that crosses a process boundary through etcd is defined here, so the CNI plugin,
//! IPAM, the agent and `tabbyctl` agree on one shape of the data.

#![forbid(unsafe_code)]
#[cfg(feature = "cli")]
pub mod cli;
pub mod client;
pub mod keys;
pub mod model;
pub mod selector;
pub mod watch;
