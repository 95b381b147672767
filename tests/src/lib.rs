//! Black-box harness for tabby: simulated multi-host clusters in network namespaces, real
//! etcd, real agents and the real CNI plugin, and connectivity checks with real packets.
//!
//! Like `testkit`, the harness panics with a message that says what it was doing and what it
//! saw when something it builds on fails: a black-box test that cannot set up its cluster must
//! fail loudly. Everything it creates (namespaces, links, processes, temp files) is removed
//! when the owning value is dropped, also while a test panics.

#![forbid(unsafe_code)]

pub mod bins;
pub mod cancel;
pub mod churn;
pub mod cluster;
pub mod docker;
pub mod netns;
pub mod probe;
pub mod process;
pub mod scenario;
pub mod wait;

pub use cluster::{Agent, Cluster, ClusterBuilder, Endpoint, Host, Workload};
pub use probe::{Matrix, Mismatch, Outcome, Service};
