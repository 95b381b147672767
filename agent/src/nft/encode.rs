//! Turns IR objects into the messages of one nftnl batch (tables, chains, sets, elements;
//! rules via [`super::lower`]) and finishes it into one buffer, remembering what each message
//! was so a kernel error can name the object it refused.

use std::ffi::CString;

use nftnl::{Batch, MsgType, NlMsg, ProtoFamily, Table};

use super::interval::{self, Interval};
use super::ir::{Chain, ChainKind, Hook, Name, Policy};
use super::lower;
use super::netlink::{prepare_batch, Layout};
use super::set::{Elem, KeyType, MapVerdict, Set, VerdictMap};
use super::sys::{ElemData, ElemsMsg, SetDef, SetMsg};

/// What a batch message does, for error reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MsgKind {
    AddTable,
    DeleteTable,
    AddChain,
    DeleteChain,
    FlushChain,
    AddRule,
    AddSet,
    DeleteSet,
    AddElements,
    DeleteElements,
}

impl MsgKind {
    pub fn describe(self) -> &'static str {
        match self {
            MsgKind::AddTable => "add table",
            MsgKind::DeleteTable => "delete table",
            MsgKind::AddChain => "add chain",
            MsgKind::DeleteChain => "delete chain",
            MsgKind::FlushChain => "flush chain",
            MsgKind::AddRule => "add rule",
            MsgKind::DeleteSet => "delete set",
            MsgKind::AddSet => "add set",
            MsgKind::AddElements => "add elements to set",
            MsgKind::DeleteElements => "delete elements from set",
        }
    }
}

/// A string that cannot be handed to libnftnl (contains NUL). The IR's validated types
/// exclude this; seeing it means a bug, reported rather than panicked on.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {0:?}: contains a NUL byte")]
pub(crate) struct EncodeError(pub(super) String);

pub(super) fn cstring(s: &str) -> Result<CString, EncodeError> {
    CString::new(s).map_err(|_| EncodeError(s.to_string()))
}

/// One message's object: its kind, an index into the batch's names, and a detail (rule
/// number or element count). Kept compact so big batches stay cheap to build.
#[derive(Debug, Clone, Copy)]
struct Obj {
    kind: MsgKind,
    name: u32,
    detail: u32,
}

/// A finished batch: bytes ready to send and what each message was.
pub(crate) struct Encoded {
    pub bytes: Vec<u8>,
    pub layout: Layout,
    objects: Vec<Obj>,
    names: Vec<String>,
}

impl Encoded {
    /// What the message with sequence number `seq` did, e.g. ("add rule", "3 of chain x").
    pub fn describe(&self, seq: u32) -> (MsgKind, String) {
        let idx = seq.wrapping_sub(self.layout.first_seq) as usize;
        let Some(obj) = self.objects.get(idx) else {
            return (MsgKind::AddTable, format!("batch control message (sequence {seq})"));
        };
        let name = self.names.get(obj.name as usize).map_or("?", String::as_str);
        let what = match obj.kind {
            MsgKind::AddTable | MsgKind::DeleteTable => format!("inet {name}"),
            MsgKind::AddRule => format!("{} of chain {name}", obj.detail),
            MsgKind::AddElements | MsgKind::DeleteElements => {
                format!("{name} ({} elements)", obj.detail)
            }
            _ => name.to_string(),
        };
        (obj.kind, what)
    }

    pub fn messages(&self) -> usize {
        self.objects.len()
    }
}

/// An element owned until it is written.
pub(crate) struct OwnedElem {
    key: Vec<u8>,
    interval_end: bool,
    open_interval: bool,
    verdict: Option<(i32, Option<CString>)>,
}

impl OwnedElem {
    pub(super) fn key(key: Vec<u8>) -> Self {
        Self { key, interval_end: false, open_interval: false, verdict: None }
    }

    fn data(&self) -> ElemData<'_> {
        ElemData {
            key: &self.key,
            interval_end: self.interval_end,
            open_interval: self.open_interval,
            verdict: self.verdict.as_ref().map(|(code, chain)| (*code, chain.as_deref())),
        }
    }
}

/// Kernel elements for closed ranges of `bits`-wide keys: a start element and an end element
/// one past the range (none when the range runs to the top key; its start is then flagged
/// open). `zero`: also send the interval-end element at key 0 that `nft` puts first into an
/// interval set whose first range starts above 0.
pub(crate) fn interval_elems(ranges: &[Interval], bits: u32, zero: bool) -> Vec<OwnedElem> {
    let top = interval::max_key(bits);
    let mut out = Vec::with_capacity(ranges.len() * 2 + 1);
    if zero && ranges.first().is_some_and(|r| r.start != 0) {
        let mut e = OwnedElem::key(interval::key_bytes(0, bits));
        e.interval_end = true;
        out.push(e);
    }
    for r in ranges {
        let mut start = OwnedElem::key(interval::key_bytes(r.start, bits));
        if r.end >= top {
            start.open_interval = true;
            out.push(start);
        } else {
            out.push(start);
            let mut end = OwnedElem::key(interval::key_bytes(r.end + 1, bits));
            end.interval_end = true;
            out.push(end);
        }
    }
    out
}

/// Kernel elements for single keys.
pub(crate) fn plain_elems<'a>(elems: impl IntoIterator<Item = &'a Elem>) -> Vec<OwnedElem> {
    elems.into_iter().map(|e| OwnedElem::key(e.key_bytes())).collect()
}

/// Kernel elements for verdict map entries.
pub(crate) fn map_elems<'a>(
    elems: impl IntoIterator<Item = (&'a Elem, &'a MapVerdict)>,
) -> Result<Vec<OwnedElem>, EncodeError> {
    elems
        .into_iter()
        .map(|(k, v)| {
            let verdict = match v {
                MapVerdict::Accept => (libc::NF_ACCEPT, None),
                MapVerdict::Drop => (libc::NF_DROP, None),
                MapVerdict::Jump(c) => (libc::NFT_JUMP, Some(cstring(c.as_str())?)),
                MapVerdict::Goto(c) => (libc::NFT_GOTO, Some(cstring(c.as_str())?)),
            };
            let mut e = OwnedElem::key(k.key_bytes());
            e.verdict = Some(verdict);
            Ok(e)
        })
        .collect()
}

/// Elements of a whole set as first written into a fresh set.
pub(crate) fn set_elems(set: &Set) -> Vec<OwnedElem> {
    if set.is_interval() {
        interval_elems(&set.intervals(), set.key().bits(), true)
    } else {
        plain_elems(set.elems())
    }
}

pub(super) fn key_len(key: KeyType) -> u32 {
    key.bits() / 8
}

/// Batch messages and their descriptions, apart from the table object so rule building can
/// borrow both at once.
pub(super) struct Out {
    batch: Batch,
    objects: Vec<Obj>,
    names: Vec<String>,
    next_set_id: u32,
}

impl Out {
    pub(super) fn name(&mut self, s: &str) -> u32 {
        // Messages about one object come in a row: reuse its name when it is the last one.
        if self.names.last().is_some_and(|n| n == s) {
            return (self.names.len() - 1) as u32;
        }
        self.names.push(s.to_string());
        (self.names.len() - 1) as u32
    }

    pub(super) fn push<T: NlMsg>(
        &mut self,
        msg: &T,
        ty: MsgType,
        kind: MsgKind,
        name: u32,
        detail: u32,
    ) {
        self.batch.add(msg, ty);
        self.objects.push(Obj { kind, name, detail });
    }

    pub(super) fn set_id(&mut self) -> u32 {
        self.next_set_id += 1;
        self.next_set_id
    }

    /// Writes `elems` in as many messages as their size needs.
    pub(super) fn elems(
        &mut self,
        table: &CString,
        set: &CString,
        set_id: Option<u32>,
        elems: &[OwnedElem],
        ty: MsgType,
    ) {
        let kind = match ty {
            MsgType::Add => MsgKind::AddElements,
            MsgType::Del => MsgKind::DeleteElements,
        };
        let name = self.name(&set.to_string_lossy());
        let mut msg = ElemsMsg::new(table, set, set_id);
        for e in elems {
            let data = e.data();
            if !msg.push(&data) {
                if msg.count() > 0 {
                    self.push(&msg, ty, kind, name, msg.count() as u32);
                }
                msg = ElemsMsg::new(table, set, set_id);
                // A single element always fits an empty message (keys are ≤ 16 bytes, chain
                // names ≤ 128); one that does not is skipped rather than overflowing.
                if !msg.push(&data) {
                    tracing::error!(set = %set.to_string_lossy(), "set element too large to encode");
                }
            }
        }
        if msg.count() > 0 {
            self.push(&msg, ty, kind, name, msg.count() as u32);
        }
    }
}

/// Builds one batch for table `inet <name>`.
pub(crate) struct Writer {
    table: Table,
    table_c: CString,
    out: Out,
}

impl Writer {
    pub fn new(table: &Name) -> Result<Self, EncodeError> {
        let table_c = cstring(table.as_str())?;
        Ok(Self {
            table: Table::new(&table_c, ProtoFamily::Inet),
            table_c,
            out: Out {
                batch: Batch::new(),
                objects: Vec::new(),
                names: Vec::new(),
                next_set_id: 0,
            },
        })
    }

    pub fn add_table(&mut self) {
        let name = self.out.name(self.table.get_name().to_string_lossy().as_ref());
        self.out.push(&self.table, MsgType::Add, MsgKind::AddTable, name, 0);
    }

    pub fn delete_table(&mut self) {
        let name = self.out.name(self.table.get_name().to_string_lossy().as_ref());
        self.out.push(&self.table, MsgType::Del, MsgKind::DeleteTable, name, 0);
    }

    /// Removes another table of ours (after a rename), creating it first so a missing one
    /// is not an error.
    pub fn drop_other_table(&mut self, other: &Name) -> Result<(), EncodeError> {
        let t = Table::new(cstring(other.as_str())?, ProtoFamily::Inet);
        let name = self.out.name(other.as_str());
        self.out.push(&t, MsgType::Add, MsgKind::AddTable, name, 0);
        self.out.push(&t, MsgType::Del, MsgKind::DeleteTable, name, 0);
        Ok(())
    }

    pub fn add_chain(&mut self, chain: &Chain) -> Result<(), EncodeError> {
        let c = cstring(chain.name().as_str())?;
        let mut nc = nftnl::Chain::new(&c, &self.table);
        if let Some(base) = chain.base_chain() {
            let hook = match base.hook {
                Hook::Prerouting => nftnl::Hook::PreRouting,
                Hook::Input => nftnl::Hook::In,
                Hook::Forward => nftnl::Hook::Forward,
                Hook::Output => nftnl::Hook::Out,
                Hook::Postrouting => nftnl::Hook::PostRouting,
            };
            nc.set_hook(hook, base.priority);
            nc.set_type(match base.kind {
                ChainKind::Filter => nftnl::ChainType::Filter,
                ChainKind::Nat => nftnl::ChainType::Nat,
            });
            nc.set_policy(match base.policy {
                Policy::Accept => nftnl::Policy::Accept,
                Policy::Drop => nftnl::Policy::Drop,
            });
        }
        let name = self.out.name(chain.name().as_str());
        self.out.push(&nc, MsgType::Add, MsgKind::AddChain, name, 0);
        Ok(())
    }

    pub fn delete_chain(&mut self, chain: &Name) -> Result<(), EncodeError> {
        let c = cstring(chain.as_str())?;
        let nc = nftnl::Chain::new(&c, &self.table);
        let name = self.out.name(chain.as_str());
        self.out.push(&nc, MsgType::Del, MsgKind::DeleteChain, name, 0);
        Ok(())
    }

    /// Deletes every rule of the chain (a rule delete naming only the chain).
    pub fn flush_chain(&mut self, chain: &Name) -> Result<(), EncodeError> {
        let c = cstring(chain.as_str())?;
        let nc = nftnl::Chain::new(&c, &self.table);
        let rule = nftnl::Rule::new(&nc);
        let name = self.out.name(chain.as_str());
        self.out.push(&rule, MsgType::Del, MsgKind::FlushChain, name, 0);
        Ok(())
    }

    fn set_def(
        &mut self,
        name: &Name,
        key: KeyType,
        flags: u32,
        map: bool,
    ) -> Result<u32, EncodeError> {
        let c = cstring(name.as_str())?;
        let id = self.out.set_id();
        let msg = SetMsg::new(&SetDef {
            table: &self.table_c,
            name: &c,
            id,
            flags,
            key_type: key.type_id(),
            key_len: key_len(key),
            verdict_map: map,
            size: None,
            key_byteorder: key.byteorder(),
        });
        let n = self.out.name(name.as_str());
        self.out.push(&msg, MsgType::Add, MsgKind::AddSet, n, 0);
        Ok(id)
    }

    /// Creates a named set with all its elements.
    pub fn add_set(&mut self, set: &Set) -> Result<(), EncodeError> {
        let flags = if set.is_interval() { libc::NFT_SET_INTERVAL as u32 } else { 0 };
        let id = self.set_def(set.name(), set.key(), flags, false)?;
        let elems = set_elems(set);
        self.elements(set.name(), Some(id), &elems, MsgType::Add)
    }

    /// Creates a verdict map, empty: its elements name chains, which must exist first.
    pub fn add_map(&mut self, map: &VerdictMap) -> Result<(), EncodeError> {
        self.set_def(map.name(), map.key(), libc::NFT_SET_MAP as u32, true)?;
        Ok(())
    }

    pub fn delete_set(&mut self, name: &Name) -> Result<(), EncodeError> {
        let c = cstring(name.as_str())?;
        let msg = SetMsg::named(&self.table_c, &c);
        let n = self.out.name(name.as_str());
        self.out.push(&msg, MsgType::Del, MsgKind::DeleteSet, n, 0);
        Ok(())
    }

    pub fn elements(
        &mut self,
        set: &Name,
        set_id: Option<u32>,
        elems: &[OwnedElem],
        ty: MsgType,
    ) -> Result<(), EncodeError> {
        if elems.is_empty() {
            return Ok(());
        }
        let c = cstring(set.as_str())?;
        self.out.elems(&self.table_c, &c, set_id, elems, ty);
        Ok(())
    }

    /// Appends all rules of `chain` (which must exist or be created earlier in the batch).
    pub fn add_rules(&mut self, chain: &Chain) -> Result<(), EncodeError> {
        let c = cstring(chain.name().as_str())?;
        let nc = nftnl::Chain::new(&c, &self.table);
        let name = self.out.name(chain.name().as_str());
        for (i, rule) in chain.rules().iter().enumerate() {
            let r = lower::build_rule(&mut self.out, &self.table_c, &nc, rule)?;
            self.out.batch.add(&r, MsgType::Add);
            self.out.objects.push(Obj { kind: MsgKind::AddRule, name, detail: (i + 1) as u32 });
        }
        Ok(())
    }

    /// Finalizes the batch into one contiguous buffer.
    pub fn finish(self) -> Result<Encoded, String> {
        let finalized = self.out.batch.finalize();
        let mut bytes = Vec::with_capacity(finalized.iter().map(<[u8]>::len).sum());
        for page in &finalized {
            bytes.extend_from_slice(page);
        }
        let layout = prepare_batch(&mut bytes)?;
        if layout.count != self.out.objects.len() {
            return Err(format!(
                "batch holds {} messages but {} were written",
                layout.count,
                self.out.objects.len()
            ));
        }
        Ok(Encoded { bytes, layout, objects: self.out.objects, names: self.out.names })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_elements_follow_nft() {
        let ivs = [
            Interval { start: 0x0a00_0000, end: 0x0aff_ffff },
            Interval { start: 0xffff_ff00, end: 0xffff_ffff },
        ];
        let e = interval_elems(&ivs, 32, true);
        let keys: Vec<(Vec<u8>, bool, bool)> =
            e.iter().map(|e| (e.key.clone(), e.interval_end, e.open_interval)).collect();
        assert_eq!(
            keys,
            vec![
                (vec![0, 0, 0, 0], true, false),
                (vec![10, 0, 0, 0], false, false),
                (vec![11, 0, 0, 0], true, false),
                (vec![255, 255, 255, 0], false, true),
            ]
        );
        // A range from key 0 needs no leading zero element.
        let from_zero = interval_elems(&[Interval { start: 0, end: 10 }], 16, true);
        assert_eq!(from_zero.len(), 2);
    }
}
