//! Pure logic on one allocation block: ordinals, assignment, release and their guards.
//!
//! A [`Block`] wraps the Calico record ([`AllocationBlock`]) after validation, so every ordinal
//! and attribute index it holds can be trusted. All mutations keep three invariants that the
//! allocator relies on: every ordinal is either in `unallocated` or allocated (never both),
//! `sequenceNumber` grows on every mutation, and `sequenceNumberForAllocation` holds exactly the
//! allocated ordinals. Nothing here does I/O; the etcd layer persists what these methods return.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use datastore::model::ipam::{AllocationAttribute, AllocationBlock, HOST_AFFINITY_PREFIX};
use ipnet::IpNet;
use serde_json::Map;

/// Free-form attributes stored with an allocation (`node`, `container_id`, `timestamp`, ...).
pub type Attrs = BTreeMap<String, String>;

/// Why a block operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block record for {cidr} is invalid: {reason}")]
    Corrupt { cidr: IpNet, reason: String },
    #[error("{cidr} cannot be a block: {reason}")]
    BadCidr { cidr: IpNet, reason: String },
    #[error("{ip} is not inside block {cidr}")]
    NotInBlock { ip: IpAddr, cidr: IpNet },
    #[error("{ip} is already assigned (handle {handle:?})")]
    AddressInUse { ip: IpAddr, handle: Option<String> },
}

/// What a single-address release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The address was freed; it was held by `handle`.
    Released { handle: Option<String> },
    /// The address was already free: nothing to do (release is idempotent).
    NotAllocated,
    /// The caller expected another holder: the address stays assigned.
    HandleMismatch { actual: Option<String> },
    /// The address was re-assigned since the caller saw it (ABA guard): it stays assigned.
    SequenceMismatch { actual: u64 },
}

/// Who holds one allocated address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: IpAddr,
    pub ordinal: u32,
    pub handle: Option<String>,
    pub attrs: Attrs,
    /// The block's sequence number when the address was assigned; pass it back to release to
    /// guard against releasing a later re-assignment.
    pub sequence: Option<u64>,
}

/// A validated allocation block.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    rec: AllocationBlock,
}

impl Block {
    /// A fresh block for `cidr`, affine to `host` (or unaffine), with every ordinal free in
    /// ascending order. `seed` (creation time in nanoseconds, as Calico) starts the sequence so
    /// a re-created block never repeats the sequence numbers of its predecessor.
    pub fn new(cidr: IpNet, host: Option<&str>, seed: u64) -> Result<Self, BlockError> {
        if cidr.trunc() != cidr {
            return Err(BlockError::BadCidr {
                cidr,
                reason: "host bits are set; a block starts at its network address".into(),
            });
        }
        let span = AllocationBlock::span(cidr).ok_or_else(|| BlockError::BadCidr {
            cidr,
            reason: "larger than 4096 addresses".into(),
        })?;
        let rec = AllocationBlock {
            cidr,
            affinity: host.map(|h| format!("{HOST_AFFINITY_PREFIX}{h}")),
            affinity_claim_time: None,
            allocations: vec![None; span],
            unallocated: (0..span as u32).collect(),
            attributes: Vec::new(),
            sequence_number: seed,
            sequence_number_for_allocation: BTreeMap::new(),
            deleted: false,
            host_affinity: None,
            extra: Map::new(),
        };
        Ok(Block { rec })
    }

    /// Accepts a record read from the datastore after checking it is internally consistent.
    pub fn from_record(rec: AllocationBlock) -> Result<Self, BlockError> {
        rec.validate()
            .map_err(|e| BlockError::Corrupt { cidr: rec.cidr, reason: e.to_string() })?;
        Ok(Block { rec })
    }

    pub fn record(&self) -> &AllocationBlock {
        &self.rec
    }

    pub fn into_record(self) -> AllocationBlock {
        self.rec
    }

    pub fn cidr(&self) -> IpNet {
        self.rec.cidr
    }

    /// Number of addresses in the block.
    pub fn span(&self) -> usize {
        self.rec.allocations.len()
    }

    pub fn free_count(&self) -> usize {
        self.rec.unallocated.len()
    }

    pub fn used_count(&self) -> usize {
        self.rec.allocations.iter().filter(|a| a.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.rec.allocations.iter().all(Option::is_none)
    }

    pub fn sequence_number(&self) -> u64 {
        self.rec.sequence_number
    }

    /// The host this block is affine to, if any.
    pub fn affine_host(&self) -> Option<&str> {
        self.rec.affine_host()
    }

    pub fn is_affine_to(&self, host: &str) -> bool {
        self.affine_host() == Some(host)
    }

    /// Sets or clears the host affinity (host released, or block re-affined after recovery).
    pub fn set_affinity(&mut self, host: Option<&str>) {
        self.rec.affinity = host.map(|h| format!("{HOST_AFFINITY_PREFIX}{h}"));
        self.rec.host_affinity = None;
        self.bump();
    }

    /// The ordinal of `ip` in this block, if the block contains it.
    pub fn ordinal_of(&self, ip: IpAddr) -> Option<u32> {
        if !self.rec.cidr.contains(&ip) {
            return None;
        }
        let offset = ip_to_u128(ip).wrapping_sub(ip_to_u128(self.rec.cidr.network()));
        u32::try_from(offset).ok().filter(|&o| (o as usize) < self.span())
    }

    /// The address at `ordinal`, if the ordinal is inside the block.
    pub fn ip_of(&self, ordinal: u32) -> Option<IpAddr> {
        if ordinal as usize >= self.span() {
            return None;
        }
        Some(add_to_ip(self.rec.cidr.network(), u128::from(ordinal)))
    }

    /// Assigns up to `n` addresses from the head of the free list to `handle` with `attrs`;
    /// returns the addresses assigned (fewer than `n` when the block runs out).
    pub fn assign(&mut self, n: usize, handle: &str, attrs: &Attrs) -> Vec<IpAddr> {
        let take = n.min(self.rec.unallocated.len());
        if take == 0 {
            return Vec::new();
        }
        let idx = self.attribute_index(handle, attrs);
        let seq = self.rec.sequence_number;
        let ordinals: Vec<u32> = self.rec.unallocated.drain(..take).collect();
        let mut out = Vec::with_capacity(take);
        for ordinal in ordinals {
            self.rec.allocations[ordinal as usize] = Some(idx);
            self.rec.sequence_number_for_allocation.insert(ordinal.to_string(), seq);
            out.extend(self.ip_of(ordinal));
        }
        self.bump();
        out
    }

    /// Assigns exactly `ip` to `handle`; refused when it is outside the block or taken.
    pub fn assign_ip(&mut self, ip: IpAddr, handle: &str, attrs: &Attrs) -> Result<(), BlockError> {
        let ordinal =
            self.ordinal_of(ip).ok_or(BlockError::NotInBlock { ip, cidr: self.rec.cidr })?;
        let Some(pos) = self.rec.unallocated.iter().position(|&o| o == ordinal) else {
            return Err(BlockError::AddressInUse { ip, handle: self.handle_at(ordinal) });
        };
        let idx = self.attribute_index(handle, attrs);
        self.rec.unallocated.remove(pos);
        self.rec.allocations[ordinal as usize] = Some(idx);
        self.rec
            .sequence_number_for_allocation
            .insert(ordinal.to_string(), self.rec.sequence_number);
        self.bump();
        Ok(())
    }

    /// Releases `ip`. With `expected_handle` or `expected_sequence`, the release only happens
    /// when the address is still held by that handle / that assignment.
    pub fn release(
        &mut self,
        ip: IpAddr,
        expected_handle: Option<&str>,
        expected_sequence: Option<u64>,
    ) -> Result<ReleaseOutcome, BlockError> {
        let ordinal =
            self.ordinal_of(ip).ok_or(BlockError::NotInBlock { ip, cidr: self.rec.cidr })?;
        if self.rec.allocations[ordinal as usize].is_none() {
            return Ok(ReleaseOutcome::NotAllocated);
        }
        let actual = self.handle_at(ordinal);
        if let Some(want) = expected_handle {
            if actual.as_deref() != Some(want) {
                return Ok(ReleaseOutcome::HandleMismatch { actual });
            }
        }
        if let Some(want) = expected_sequence {
            let have = self.sequence_of(ordinal).unwrap_or_default();
            if have != want {
                return Ok(ReleaseOutcome::SequenceMismatch { actual: have });
            }
        }
        self.free_ordinal(ordinal);
        self.compact_attributes();
        self.bump();
        Ok(ReleaseOutcome::Released { handle: actual })
    }

    /// Releases every address held by `handle`; returns them (empty when it holds none here).
    pub fn release_by_handle(&mut self, handle: &str) -> Vec<IpAddr> {
        let ordinals: Vec<u32> = (0..self.span() as u32)
            .filter(|&o| self.handle_at(o).as_deref() == Some(handle))
            .collect();
        if ordinals.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(ordinals.len());
        for ordinal in ordinals {
            self.free_ordinal(ordinal);
            out.extend(self.ip_of(ordinal));
        }
        self.compact_attributes();
        self.bump();
        out
    }

    /// Who holds `ip`, if it is allocated in this block.
    pub fn allocation(&self, ip: IpAddr) -> Option<Allocation> {
        let ordinal = self.ordinal_of(ip)?;
        self.allocation_at(ordinal)
    }

    /// Every allocated address in ordinal order.
    pub fn allocations(&self) -> impl Iterator<Item = Allocation> + '_ {
        (0..self.span() as u32).filter_map(|o| self.allocation_at(o))
    }

    /// Addresses held per handle in this block (allocations without a handle are not counted).
    pub fn handle_counts(&self) -> BTreeMap<String, u32> {
        let mut counts = BTreeMap::new();
        for idx in self.rec.allocations.iter().flatten() {
            if let Some(h) =
                self.rec.attributes.get(*idx as usize).and_then(|a| a.handle_id.clone())
            {
                *counts.entry(h).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Drops attribute entries no allocation points at and renumbers the rest, so released
    /// containers do not accumulate in the record.
    pub fn compact_attributes(&mut self) {
        let mut used = vec![false; self.rec.attributes.len()];
        for idx in self.rec.allocations.iter().flatten() {
            used[*idx as usize] = true;
        }
        if used.iter().all(|&u| u) {
            return;
        }
        let mut remap = vec![0u32; used.len()];
        let mut next = 0u32;
        for (old, &keep) in used.iter().enumerate() {
            if keep {
                remap[old] = next;
                next += 1;
            }
        }
        let mut old_idx = 0usize;
        self.rec.attributes.retain(|_| {
            let keep = used[old_idx];
            old_idx += 1;
            keep
        });
        for idx in self.rec.allocations.iter_mut().flatten() {
            *idx = remap[*idx as usize];
        }
    }

    fn allocation_at(&self, ordinal: u32) -> Option<Allocation> {
        let idx = (*self.rec.allocations.get(ordinal as usize)?)?;
        let attr = self.rec.attributes.get(idx as usize);
        Some(Allocation {
            ip: self.ip_of(ordinal)?,
            ordinal,
            handle: attr.and_then(|a| a.handle_id.clone()),
            attrs: attr.and_then(|a| a.secondary.clone()).unwrap_or_default(),
            sequence: self.sequence_of(ordinal),
        })
    }

    fn handle_at(&self, ordinal: u32) -> Option<String> {
        let idx = (*self.rec.allocations.get(ordinal as usize)?)?;
        self.rec.attributes.get(idx as usize)?.handle_id.clone()
    }

    fn sequence_of(&self, ordinal: u32) -> Option<u64> {
        self.rec.sequence_number_for_allocation.get(&ordinal.to_string()).copied()
    }

    /// Frees an allocated ordinal: it goes to the tail of the free list, so the address is
    /// reused as late as possible (conntrack entries of the old holder age out meanwhile).
    fn free_ordinal(&mut self, ordinal: u32) {
        self.rec.allocations[ordinal as usize] = None;
        self.rec.sequence_number_for_allocation.remove(&ordinal.to_string());
        self.rec.unallocated.push(ordinal);
    }

    /// The index of the attribute entry for (handle, attrs), shared with identical holders.
    fn attribute_index(&mut self, handle: &str, attrs: &Attrs) -> u32 {
        let found = self.rec.attributes.iter().position(|a| {
            a.handle_id.as_deref() == Some(handle)
                && a.secondary.as_ref() == Some(attrs)
                && a.extra.is_empty()
        });
        if let Some(i) = found {
            return i as u32;
        }
        self.rec.attributes.push(AllocationAttribute {
            handle_id: Some(handle.to_string()),
            secondary: Some(attrs.clone()),
            extra: Map::new(),
        });
        (self.rec.attributes.len() - 1) as u32
    }

    fn bump(&mut self) {
        self.rec.sequence_number = self.rec.sequence_number.wrapping_add(1);
    }
}

/// The address as one 128-bit number (v4 in the low 32 bits).
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// `base + offset` in the family of `base` (wrapping inside the family's address space).
pub fn add_to_ip(base: IpAddr, offset: u128) -> IpAddr {
    match base {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(offset as u32))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(offset))),
    }
}

/// The block of prefix length `block_prefix` containing `ip`.
pub fn block_cidr_for(ip: IpAddr, block_prefix: u8) -> Option<IpNet> {
    IpNet::new(ip, block_prefix).ok().map(|n| n.trunc())
}

/// The host route for an address: /32 for v4, /128 for v6.
pub fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

#[cfg(test)]
mod tests;
