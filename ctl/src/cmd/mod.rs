//! One module per command family; each takes parsed arguments and a [`crate::store::Store`]
//! and returns what to print.

pub mod apply;
pub mod delete;
pub mod endpoint;
pub mod get;
pub mod node;
pub mod profile;
