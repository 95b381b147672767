//! Leases (for keys that must vanish with their writer, like agent status) and the member
//! status behind health checks.

use std::time::Duration;

use super::{Client, Error, MemberStatus, Resend};

/// gRPC code etcd uses for an unknown lease.
const NOT_FOUND: i32 = 5;

impl Client {
    /// Grants a lease of `ttl` (rounded up to whole seconds, at least one); returns its id.
    pub async fn grant_lease(&self, ttl: Duration) -> Result<i64, Error> {
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let seconds = i64::try_from(seconds.max(1)).unwrap_or(i64::MAX);
        // A lease granted twice only expires unused: resending is harmless.
        let resp = self
            .call("grant lease", 0, Resend::Idempotent, |m| async move {
                m.inner.lease_client().grant(seconds, None).await
            })
            .await?;
        Ok(resp.id())
    }

    /// Refreshes `lease` once, restarting its TTL. An expired or revoked lease gives
    /// [`Error::NotFound`].
    pub async fn keep_alive(&self, lease: i64) -> Result<(), Error> {
        let refresh = self.call("keep lease alive", 0, Resend::Idempotent, |m| async move {
            m.inner.lease_client().keep_alive(lease).await
        });
        match refresh.await {
            Ok(_) => Ok(()),
            Err(Error::Unavailable { reason, .. }) if reason.contains("lease not found") => {
                Err(Error::NotFound { key: format!("lease {lease:x}") })
            }
            Err(e) => Err(e),
        }
    }

    /// Revokes `lease`, deleting every key attached to it. Returns `false` if the lease did
    /// not exist (already expired or revoked).
    pub async fn revoke_lease(&self, lease: i64) -> Result<bool, Error> {
        // A missing lease is an answer, not a failure: turn it into `false` inside the call.
        let revoke = self.call("revoke lease", 0, Resend::Idempotent, |m| async move {
            match m.inner.lease_client().revoke(lease).await {
                Ok(_) => Ok(true),
                Err(etcd_client::Error::GRpcStatus(status))
                    if status.code() as i32 == NOT_FOUND =>
                {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        });
        revoke.await
    }

    /// What the member that answers reports about itself.
    pub async fn member_status(&self) -> Result<MemberStatus, Error> {
        let resp = self
            .call("status", 0, Resend::Idempotent, |m| async move {
                m.inner.maintenance_client().status().await
            })
            .await?;
        let header = resp.header();
        Ok(MemberStatus {
            version: resp.version().to_string(),
            member_id: header.map_or(0, etcd_client::ResponseHeader::member_id),
            leader: resp.leader(),
            raft_term: resp.raft_term(),
            revision: header.map_or(0, etcd_client::ResponseHeader::revision),
            db_size: resp.db_size(),
            errors: resp.errors().to_vec(),
        })
    }

    /// Whether etcd can serve requests: a member answers, has a leader and reports no errors
    /// (such as a `NOSPACE` alarm). Returns the status on success, [`Error::Unavailable`]
    /// otherwise.
    pub async fn health(&self) -> Result<MemberStatus, Error> {
        let status = self.member_status().await?;
        let problem = if status.leader == 0 {
            Some("the member has no leader".to_string())
        } else if !status.errors.is_empty() {
            Some(format!("the member reports: {}", status.errors.join("; ")))
        } else {
            None
        };
        match problem {
            Some(reason) => {
                Err(Error::Unavailable { endpoints: self.endpoints.to_string(), reason })
            }
            None => Ok(status),
        }
    }
}
