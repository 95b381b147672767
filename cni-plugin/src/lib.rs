//! The tabby CNI plugin: the CNI protocol ([`spec`]), the kernel side of a workload's
//! attachment ([`dataplane`]), where addresses come from ([`ipam`]), the records kept in etcd
//! ([`store`]) and one module per verb ([`cmd`]).

#![forbid(unsafe_code)]
pub mod cmd;
pub mod dataplane;
pub mod ipam;
pub mod logging;
pub mod spec;
pub mod store;
