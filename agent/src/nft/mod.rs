//! nftables layer of the agent: a typed model of the desired table ([`ir`]), its text form
//! ([`render`]), and the [`Applier`] that programs it into the kernel over netlink in one
//! atomic transaction per call.

mod apply;
mod diff;
mod encode;
mod interval;
pub mod ir;
mod lower;
mod matches;
mod names;
mod netlink;
pub mod render;
mod set;
// The one module allowed unsafe code: the libnftnl FFI the safe `nftnl` crate lacks.
#[allow(unsafe_code)]
mod sys;

pub use apply::{Applier, ApplyError, ApplyStats};
pub use ir::Ruleset;
pub use render::{render, render_replace};
