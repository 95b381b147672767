//! GC (spec 1.1.0): releases addresses of attachments the runtime no longer knows.
//!
//! Veths need no collection (they die with their namespace), so GC is the IPAM backend's
//! job. With a delegate, it is forwarded as the spec asks; without IPAM there is nothing
//! to collect.

use crate::ipam::Ipam;
use crate::spec::{Error, Maintenance};

pub async fn gc(req: &Maintenance, ipam: Option<&mut impl Ipam>) -> Result<(), Error> {
    let valid = req.conf.valid_attachments.as_ref().map_or(0, Vec::len);
    tracing::info!(valid_attachments = valid, "GC");
    match ipam {
        Some(ipam) => ipam.gc(req).await,
        None => Ok(()),
    }
}
