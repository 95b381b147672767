//! Writes in Calico's compare-and-swap shapes: create if absent, update if unchanged, delete if
//! unchanged, and general transactions that report what they found when they fail.

use etcd_client::{Compare, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};
use serde::Serialize;

use super::types::kvs_from_etcd;
use super::{
    header_revision, Client, Cmp, Error, Kv, Listing, Op, Read, Resend, TxnOrRead, TxnOutcome,
};

impl Client {
    /// Creates `key` only if it does not exist; returns the new mod revision.
    ///
    /// One transaction: `If(Version(key) == 0) Then(Put) Else(Get)`, so a refusal carries
    /// the value found: [`Error::AlreadyExists`] with `current`.
    pub async fn create(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<i64, Error> {
        let outcome = self
            .txn_inner(
                &format!("create {key}"),
                &[Cmp::Absent(key.to_string())],
                &[Op::Put { key: key.to_string(), value: value.into(), lease: None }],
            )
            .await?;
        if outcome.succeeded {
            return Ok(outcome.revision);
        }
        let current = found(key, outcome.current)?;
        Err(Error::AlreadyExists { key: key.to_string(), current: Box::new(current) })
    }

    /// Replaces `key` only if its mod revision is still `expected_mod_revision`; returns the
    /// new mod revision.
    ///
    /// One transaction: `If(ModRevision(key) == rev) Then(Put) Else(Get)`. A lost race gives
    /// [`Error::Conflict`] with the value now stored (so the caller can retry without
    /// re-reading); a key deleted meanwhile gives [`Error::NotFound`].
    pub async fn update(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        expected_mod_revision: i64,
    ) -> Result<i64, Error> {
        let outcome = self
            .txn_inner(
                &format!("update {key}"),
                &[Cmp::ModRevision(key.to_string(), expected_mod_revision)],
                &[Op::Put { key: key.to_string(), value: value.into(), lease: None }],
            )
            .await?;
        if outcome.succeeded {
            return Ok(outcome.revision);
        }
        match outcome.current.into_iter().next() {
            Some(current) => {
                Err(Error::Conflict { key: key.to_string(), current: Box::new(current) })
            }
            None => Err(Error::NotFound { key: key.to_string() }),
        }
    }

    /// Deletes `key`; with `expected_mod_revision`, only if it is unchanged. Returns whether a
    /// key was deleted.
    ///
    /// Without a revision, deleting an absent key is `Ok(false)`. With one, the transaction is
    /// `If(ModRevision(key) == rev) Then(Delete) Else(Get)`: a changed key gives
    /// [`Error::Conflict`], a key already gone [`Error::NotFound`].
    pub async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<i64>,
    ) -> Result<bool, Error> {
        let op = format!("delete {key}");
        let Some(rev) = expected_mod_revision else {
            let resp = self
                .call(&op, 0, Resend::IfNotSent, |mut m| {
                    let key = key.to_string();
                    async move { m.kv.delete(key, None).await }
                })
                .await?;
            return Ok(resp.deleted() > 0);
        };
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(key, etcd_client::CompareOp::Equal, rev)])
            .and_then(vec![TxnOp::delete(key, None)])
            .or_else(vec![TxnOp::get(key, None)]);
        let resp = self.send_txn(&op, &txn).await?;
        if resp.succeeded() {
            let deleted = resp
                .op_responses()
                .iter()
                .any(|r| matches!(r, TxnOpResponse::Delete(d) if d.deleted() > 0));
            return Ok(deleted);
        }
        match else_gets(&resp).into_iter().next() {
            Some(current) => {
                Err(Error::Conflict { key: key.to_string(), current: Box::new(current) })
            }
            None => Err(Error::NotFound { key: key.to_string() }),
        }
    }

    /// Deletes every key under `prefix`; returns how many were deleted.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<i64, Error> {
        let op = format!("delete prefix {prefix}");
        let resp = self
            .call(&op, 0, Resend::IfNotSent, |mut m| {
                let prefix = prefix.to_string();
                let options = etcd_client::DeleteOptions::new().with_prefix();
                async move { m.kv.delete(prefix, Some(options)).await }
            })
            .await?;
        Ok(resp.deleted())
    }

    /// Stores `value` at `key` unconditionally (attached to `lease` if given); returns the
    /// new mod revision. For data with a single writer, such as an agent's status; shared
    /// data goes through [`Client::create`] and [`Client::update`].
    pub async fn put(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        lease: Option<i64>,
    ) -> Result<i64, Error> {
        let value: Vec<u8> = value.into();
        let op = format!("put {key}");
        let resp = self
            .call(&op, 0, Resend::IfNotSent, |mut m| {
                let (key, value) = (key.to_string(), value.clone());
                let options = lease.map(|lease| PutOptions::new().with_lease(lease));
                async move { m.kv.put(key, value, options).await }
            })
            .await?;
        header_revision(resp.header())
    }

    /// Applies `ops` atomically if every condition in `cmps` holds.
    ///
    /// One round trip. When a condition fails nothing is written and `current` holds the
    /// present values of the compared keys, read in the same transaction, so the caller can
    /// decide its next attempt without another read.
    pub async fn txn(&self, cmps: Vec<Cmp>, ops: Vec<Op>) -> Result<TxnOutcome, Error> {
        self.txn_inner("txn", &cmps, &ops).await
    }

    /// Applies `ops` atomically if every condition in `cmps` holds, and otherwise performs
    /// `reads` in the same transaction: a caller that wrote on a guess learns the truth in the
    /// same round trip when the guess was wrong.
    pub async fn txn_or_read(
        &self,
        cmps: Vec<Cmp>,
        ops: Vec<Op>,
        reads: &[Read],
    ) -> Result<TxnOrRead, Error> {
        let txn = Txn::new()
            .when(cmps.iter().map(Cmp::to_etcd).collect::<Vec<_>>())
            .and_then(ops.iter().map(Op::to_etcd).collect::<Vec<_>>())
            .or_else(reads.iter().map(Read::to_etcd).collect::<Vec<_>>());
        let resp = self.send_txn("txn", &txn).await?;
        let revision = header_revision(resp.header())?;
        let listings = if resp.succeeded() {
            Vec::new()
        } else {
            let listings: Vec<Listing> = resp
                .op_responses()
                .iter()
                .filter_map(|r| match r {
                    TxnOpResponse::Get(get) => {
                        Some(Listing { kvs: kvs_from_etcd(get.kvs()), revision })
                    }
                    _ => None,
                })
                .collect();
            if listings.len() != reads.len() {
                return Err(Error::Server {
                    reason: format!(
                        "transaction answered {} of {} reads",
                        listings.len(),
                        reads.len()
                    ),
                });
            }
            listings
        };
        Ok(TxnOrRead { succeeded: resp.succeeded(), revision, listings })
    }

    async fn txn_inner(&self, op: &str, cmps: &[Cmp], ops: &[Op]) -> Result<TxnOutcome, Error> {
        let mut compared: Vec<&str> = Vec::new();
        for cmp in cmps {
            if !compared.contains(&cmp.key()) {
                compared.push(cmp.key());
            }
        }
        let txn = Txn::new()
            .when(cmps.iter().map(Cmp::to_etcd).collect::<Vec<_>>())
            .and_then(ops.iter().map(Op::to_etcd).collect::<Vec<_>>())
            .or_else(compared.iter().map(|key| TxnOp::get(*key, None)).collect::<Vec<_>>());
        let resp = self.send_txn(op, &txn).await?;
        let revision = header_revision(resp.header())?;
        let current = if resp.succeeded() { Vec::new() } else { else_gets(&resp) };
        Ok(TxnOutcome { succeeded: resp.succeeded(), revision, current })
    }

    /// Sends a transaction that writes: resent to another endpoint only if never sent.
    async fn send_txn(&self, op: &str, txn: &Txn) -> Result<TxnResponse, Error> {
        self.call(op, 0, Resend::IfNotSent, |mut m| {
            let txn = txn.clone();
            async move { m.kv.txn(txn).await }
        })
        .await
    }

    /// Creates `key` holding `value` as JSON; see [`Client::create`].
    pub async fn create_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<i64, Error> {
        self.create(key, encode(key, value)?).await
    }

    /// Replaces `key` with `value` as JSON if unchanged since `expected_mod_revision`; see
    /// [`Client::update`].
    pub async fn update_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        expected_mod_revision: i64,
    ) -> Result<i64, Error> {
        self.update(key, encode(key, value)?, expected_mod_revision).await
    }
}

/// The values read by a failed transaction's else branch.
fn else_gets(resp: &TxnResponse) -> Vec<Kv> {
    resp.op_responses()
        .iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(get) => Some(kvs_from_etcd(get.kvs())),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The one value a failed existence check must have found.
fn found(key: &str, current: Vec<Kv>) -> Result<Kv, Error> {
    current.into_iter().next().ok_or_else(|| Error::Server {
        reason: format!("{key}: transaction failed its existence check but read nothing"),
    })
}

fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value)
        .map_err(|e| Error::Decode { key: key.to_string(), reason: format!("cannot encode: {e}") })
}
