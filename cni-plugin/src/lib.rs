//! The tabby CNI plugin: the CNI protocol ([`spec`]), the kernel side of a workload's
//! attachment ([`dataplane`]), the IPAM seam ([`ipam`]) and one module per verb ([`cmd`]).

pub mod cmd;
pub mod dataplane;
pub mod ipam;
pub mod logging;
pub mod spec;
