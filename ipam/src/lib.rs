//! tabby's IP address management: Calico's block-affinity allocator over etcd, with
//! Calico's key layout and JSON, in fewer round trips.
//!
//! - [`block`]: pure logic on one allocation block (ordinals, assign, release, guards).
//! - [`pool`], [`candidates`]: which pools serve a node and in which order a node probes blocks.
//! - [`allocator`]: the etcd-backed allocator of one node (assign, release, host removal).
//! - [`check`], [`gc`]: cross-checks of blocks, handles, affinities and endpoints, and repair.
//! - [`admin`]: pool and IPAM config management for `ipamctl`.
//! - [`lock`], [`nodename`]: host-wide lock file and node-name resolution for the CNI plugin.

#![forbid(unsafe_code)]
pub mod admin;
pub mod allocator;
pub mod block;
pub mod candidates;
pub mod check;
pub mod error;
pub mod gc;
pub mod inventory;
pub mod lock;
pub mod nodename;
pub mod pool;
pub mod query;
pub mod store;
pub mod time;

pub use allocator::{
    attr, Allocator, AllocatorOptions, AlsoWrite, AssignRequest, AssignResult, Assignment,
    HostRelease, ReleaseRequest,
};
pub use block::{Allocation, Attrs, Block, BlockError, ReleaseOutcome};
pub use error::{IpamError, Result};
pub use pool::Pool;
