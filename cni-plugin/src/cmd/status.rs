//! STATUS (spec 1.1.0): whether an ADD could succeed now. Forwarded to the IPAM backend;
//! without one, ADD cannot assign addresses, so the answer is "not available" (50).

use crate::ipam::Ipam;
use crate::spec::{Error, Maintenance};

pub async fn status(req: &Maintenance, ipam: Option<&mut impl Ipam>) -> Result<(), Error> {
    match ipam {
        Some(ipam) => ipam.status(req).await,
        None => Err(Error::NotAvailable { reason: "no ipam section in the network config".into() }),
    }
}
