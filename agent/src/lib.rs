//! tabby-agent: watches etcd and programs nftables ACLs and routes on each host.
//!
//! The pipeline, one module per stage: [`config`] → etcd watch ([`daemon`]) → [`model`]
//! (the cluster snapshot) → planners ([`routes`], nftables) → appliers, driven by the
//! level-triggered loop in [`reconcile`]; kernel programmers other than routes plug in
//! through [`dataplane::Dataplane`]. Around it: [`node`] (this host's address and Node
//! resource), [`status`] (heartbeat), [`health`], [`metrics`] and [`http`].
//!
//! Unsafe code is denied crate-wide (workspace lint) and allowed only in `nft::sys`.

pub mod bgp;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod docker;
pub mod health;
pub mod host;
pub mod http;
pub mod metrics;
pub mod model;
pub mod node;
pub mod reconcile;
pub mod routes;
pub mod status;

pub mod nft;
pub mod nft_dataplane;
pub mod plan;
