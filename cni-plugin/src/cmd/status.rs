//! STATUS (spec 1.1.0): whether an ADD could succeed now. The in-process allocator answers
//! itself (etcd healthy, a usable pool with room); a delegate is asked; when endpoints are
//! written to etcd, etcd must be healthy too. Without IPAM, ADD cannot assign addresses, so
//! the answer is "not available" (50).

use crate::ipam::Backend;
use crate::spec::{Error, Maintenance};
use crate::store::Session;

pub async fn status(
    req: &Maintenance,
    backend: Option<&Backend>,
    session: Option<&Session>,
) -> Result<(), Error> {
    let Some(backend) = backend else {
        return Err(Error::NotAvailable { reason: "no ipam section in the network config".into() });
    };
    if let (Backend::Delegate(_), Some(s)) = (backend, session) {
        let healthy = tokio::time::timeout(s.timeout(), async {
            let client = s.client().await.map_err(|e| e.to_string())?;
            client.health().await.map(drop).map_err(|e| format!("etcd is not healthy: {e}"))
        })
        .await
        .unwrap_or_else(|_| Err(format!("etcd did not answer within {:?}", s.timeout())));
        healthy.map_err(|reason| Error::NotAvailable { reason })?;
    }
    backend.status(req).await
}
