//! Named sets and verdict maps of the IR: key types, typed elements checked against the key
//! type on insert, and the canonical interval form of interval sets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::interval::{self, Interval};
use super::ir::{IrError, PortRange};
use super::names::{IfName, MacAddr, Name};

/// Key type of a named set or map (`type ipv4_addr`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyType {
    Ipv4Addr,
    Ipv6Addr,
    EtherAddr,
    InetProto,
    InetService,
    Ifname,
}

impl KeyType {
    /// The type's name in `nft` syntax.
    pub fn nft_name(self) -> &'static str {
        match self {
            KeyType::Ipv4Addr => "ipv4_addr",
            KeyType::Ipv6Addr => "ipv6_addr",
            KeyType::EtherAddr => "ether_addr",
            KeyType::InetProto => "inet_proto",
            KeyType::InetService => "inet_service",
            KeyType::Ifname => "ifname",
        }
    }

    /// `nft`'s datatype number, stored with the set so `nft list` can print its elements.
    pub(crate) fn type_id(self) -> u32 {
        match self {
            KeyType::Ipv4Addr => 7,
            KeyType::Ipv6Addr => 8,
            KeyType::EtherAddr => 9,
            KeyType::InetProto => 12,
            KeyType::InetService => 13,
            KeyType::Ifname => 41,
        }
    }

    /// Key width in bits.
    pub(crate) fn bits(self) -> u32 {
        match self {
            KeyType::Ipv4Addr => 32,
            KeyType::Ipv6Addr | KeyType::Ifname => 128,
            KeyType::EtherAddr => 48,
            KeyType::InetProto => 8,
            KeyType::InetService => 16,
        }
    }

    /// `nft`'s byte order of the key type (`BYTEORDER_HOST_ENDIAN` 1, `_BIG_ENDIAN` 2, or 0
    /// for single bytes), as recorded with named sets.
    pub(crate) fn byteorder(self) -> u32 {
        match self {
            KeyType::Ipv4Addr | KeyType::Ipv6Addr | KeyType::EtherAddr | KeyType::InetService => 2,
            KeyType::Ifname => 1,
            KeyType::InetProto => 0,
        }
    }

    fn supports_interval(self) -> bool {
        matches!(self, KeyType::Ipv4Addr | KeyType::Ipv6Addr | KeyType::InetService)
    }
}

/// One element of a set or one key of a map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Elem {
    V4(Ipv4Net),
    V6(Ipv6Net),
    Mac(MacAddr),
    Proto(u8),
    Port(PortRange),
    Ifname(IfName),
}

impl Elem {
    /// A single address.
    pub fn addr(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Elem::V4(Ipv4Net::from(a)),
            IpAddr::V6(a) => Elem::V6(Ipv6Net::from(a)),
        }
    }

    /// A network, host bits cleared.
    pub fn net(net: IpNet) -> Self {
        match net.trunc() {
            IpNet::V4(n) => Elem::V4(n),
            IpNet::V6(n) => Elem::V6(n),
        }
    }

    pub fn port(port: u16) -> Self {
        Elem::Port(PortRange::single(port))
    }

    fn key_type(&self) -> KeyType {
        match self {
            Elem::V4(_) => KeyType::Ipv4Addr,
            Elem::V6(_) => KeyType::Ipv6Addr,
            Elem::Mac(_) => KeyType::EtherAddr,
            Elem::Proto(_) => KeyType::InetProto,
            Elem::Port(_) => KeyType::InetService,
            Elem::Ifname(_) => KeyType::Ifname,
        }
    }

    /// True for a single key (not a network or range).
    fn is_single(&self) -> bool {
        match self {
            Elem::V4(n) => n.prefix_len() == 32,
            Elem::V6(n) => n.prefix_len() == 128,
            Elem::Port(r) => r.lo() == r.hi(),
            Elem::Mac(_) | Elem::Proto(_) | Elem::Ifname(_) => true,
        }
    }

    /// The key range of an address or port element (none for other kinds).
    pub(crate) fn interval(&self) -> Option<Interval> {
        match self {
            Elem::V4(n) => Some(Interval {
                start: u128::from(u32::from(n.network())),
                end: u128::from(u32::from(n.broadcast())),
            }),
            Elem::V6(n) => {
                Some(Interval { start: u128::from(n.network()), end: u128::from(n.broadcast()) })
            }
            Elem::Port(r) => Some(r.interval()),
            Elem::Mac(_) | Elem::Proto(_) | Elem::Ifname(_) => None,
        }
    }

    /// The key as the kernel stores it in a non-interval set.
    pub(crate) fn key_bytes(&self) -> Vec<u8> {
        match self {
            Elem::V4(n) => n.network().octets().to_vec(),
            Elem::V6(n) => n.network().octets().to_vec(),
            Elem::Mac(m) => m.0.to_vec(),
            Elem::Proto(p) => vec![*p],
            Elem::Port(r) => r.lo().to_be_bytes().to_vec(),
            Elem::Ifname(n) => n.key_bytes().to_vec(),
        }
    }

    /// The element in `nft` syntax.
    pub(crate) fn render(&self) -> String {
        match self {
            Elem::V4(n) if n.prefix_len() == 32 => n.addr().to_string(),
            Elem::V6(n) if n.prefix_len() == 128 => n.addr().to_string(),
            Elem::V4(n) => n.to_string(),
            Elem::V6(n) => n.to_string(),
            Elem::Mac(m) => m.to_string(),
            Elem::Proto(p) => proto_name(*p),
            Elem::Port(r) if r.lo() == r.hi() => r.lo().to_string(),
            Elem::Port(r) => format!("{}-{}", r.lo(), r.hi()),
            Elem::Ifname(n) => format!("\"{n}\""),
        }
    }
}

/// Protocol name `nft` accepts, or the number.
pub(crate) fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        other => other.to_string(),
    }
}

fn check_elem(owner: &str, key: KeyType, interval: bool, elem: &Elem) -> Result<(), IrError> {
    if elem.key_type() != key {
        return Err(IrError::Inconsistent {
            place: owner.to_string(),
            reason: format!("element {} is not of type {}", elem.render(), key.nft_name()),
        });
    }
    if !interval && !elem.is_single() {
        return Err(IrError::Inconsistent {
            place: owner.to_string(),
            reason: format!(
                "element {} is a range but the set has no interval flag",
                elem.render()
            ),
        });
    }
    Ok(())
}

/// A named set: `set <name> { type <key>; [flags interval;] elements = { … } }`.
///
/// The elements are shared between clones (copied on the first change): a planner can keep
/// last run's selector sets, and the diff sees at once that a set kept whole did not change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Set {
    name: Name,
    key: KeyType,
    interval: bool,
    elems: Arc<BTreeSet<Elem>>,
}

impl Set {
    /// A set of single keys.
    pub fn new(name: Name, key: KeyType) -> Self {
        Self { name, key, interval: false, elems: Arc::default() }
    }

    /// A set with `flags interval`, holding networks or port ranges.
    pub fn new_interval(name: Name, key: KeyType) -> Result<Self, IrError> {
        if !key.supports_interval() {
            return Err(IrError::Inconsistent {
                place: format!("set {name}"),
                reason: format!("{} sets cannot have the interval flag", key.nft_name()),
            });
        }
        Ok(Self { name, key, interval: true, elems: Arc::default() })
    }

    /// Adds `elem`; false when it was already there.
    pub fn insert(&mut self, elem: Elem) -> Result<bool, IrError> {
        check_elem(&format!("set {}", self.name), self.key, self.interval, &elem)?;
        Ok(Arc::make_mut(&mut self.elems).insert(elem))
    }

    pub fn remove(&mut self, elem: &Elem) -> bool {
        Arc::make_mut(&mut self.elems).remove(elem)
    }

    /// Builder form of [`Set::insert`].
    pub fn with(mut self, elems: impl IntoIterator<Item = Elem>) -> Result<Self, IrError> {
        for e in elems {
            self.insert(e)?;
        }
        Ok(self)
    }

    pub fn name(&self) -> &Name {
        &self.name
    }

    pub fn key(&self) -> KeyType {
        self.key
    }

    pub fn is_interval(&self) -> bool {
        self.interval
    }

    pub fn elems(&self) -> &BTreeSet<Elem> {
        &self.elems
    }

    /// The ranges the kernel holds for an interval set: overlapping elements merged, touching
    /// ones kept apart (as `nft` does for named sets). Empty for other sets.
    pub(crate) fn intervals(&self) -> Vec<Interval> {
        if !self.interval {
            return Vec::new();
        }
        interval::canonicalize(self.elems.iter().filter_map(Elem::interval).collect(), false)
    }

    /// The same set under another name, sharing the elements.
    pub(crate) fn renamed(&self, name: Name) -> Self {
        Self { name, ..self.clone() }
    }

    /// Whether `other` holds this very element list (a clone of this set, unchanged since):
    /// equal contents without comparing them.
    pub(crate) fn shares_elems(&self, other: &Set) -> bool {
        Arc::ptr_eq(&self.elems, &other.elems)
    }

    /// Same definition (name, key type, flags), contents aside.
    pub(crate) fn same_definition(&self, other: &Set) -> bool {
        self.name == other.name && self.key == other.key && self.interval == other.interval
    }
}

/// What a verdict map element does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MapVerdict {
    Accept,
    Drop,
    Jump(Name),
    Goto(Name),
}

/// A named verdict map: `map <name> { type <key> : verdict; elements = { k : v, … } }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerdictMap {
    name: Name,
    key: KeyType,
    elems: BTreeMap<Elem, MapVerdict>,
}

impl VerdictMap {
    pub fn new(name: Name, key: KeyType) -> Self {
        Self { name, key, elems: BTreeMap::new() }
    }

    /// Sets the verdict for `key`; returns the previous one.
    pub fn insert(
        &mut self,
        key: Elem,
        verdict: MapVerdict,
    ) -> Result<Option<MapVerdict>, IrError> {
        check_elem(&format!("map {}", self.name), self.key, false, &key)?;
        Ok(self.elems.insert(key, verdict))
    }

    pub fn remove(&mut self, key: &Elem) -> Option<MapVerdict> {
        self.elems.remove(key)
    }

    /// Builder form of [`VerdictMap::insert`].
    pub fn with(
        mut self,
        elems: impl IntoIterator<Item = (Elem, MapVerdict)>,
    ) -> Result<Self, IrError> {
        for (k, v) in elems {
            self.insert(k, v)?;
        }
        Ok(self)
    }

    pub fn name(&self) -> &Name {
        &self.name
    }

    pub fn key(&self) -> KeyType {
        self.key
    }

    pub fn elems(&self) -> &BTreeMap<Elem, MapVerdict> {
        &self.elems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::new(s).expect("valid name")
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("valid net")
    }

    #[test]
    fn elements_must_match_the_key_type() {
        let mut s = Set::new(name("ep-addrs"), KeyType::Ipv4Addr);
        assert_eq!(s.insert(Elem::addr("10.0.0.1".parse().expect("ip"))), Ok(true));
        assert_eq!(s.insert(Elem::addr("10.0.0.1".parse().expect("ip"))), Ok(false));
        assert!(s.insert(Elem::addr("fd00::1".parse().expect("ip"))).is_err());
        assert!(s.insert(Elem::port(80)).is_err());
        // A network needs the interval flag.
        assert!(s.insert(Elem::net(net("10.0.0.0/8"))).is_err());
    }

    #[test]
    fn interval_sets_take_networks_and_merge_overlaps_only() {
        let s = Set::new_interval(name("all-pools"), KeyType::Ipv4Addr)
            .and_then(|s| {
                s.with([
                    Elem::net(net("10.0.0.0/24")),
                    Elem::net(net("10.0.1.0/24")),
                    Elem::net(net("192.168.0.0/16")),
                    Elem::net(net("192.168.3.7/32")),
                ])
            })
            .expect("valid set");
        let ivs = s.intervals();
        assert_eq!(ivs.len(), 3, "{ivs:?}");
        assert!(Set::new_interval(name("wl-ifs"), KeyType::Ifname).is_err());
    }

    #[test]
    fn host_bits_are_cleared() {
        assert_eq!(Elem::net(net("10.1.2.3/8")), Elem::net(net("10.0.0.0/8")));
    }

    #[test]
    fn maps_replace_verdicts() {
        let mut m = VerdictMap::new(name("to_wl"), KeyType::Ifname);
        let k = Elem::Ifname(IfName::new("cali1").expect("ifname"));
        assert_eq!(m.insert(k.clone(), MapVerdict::Goto(name("tw-cali1"))), Ok(None));
        assert_eq!(
            m.insert(k.clone(), MapVerdict::Drop),
            Ok(Some(MapVerdict::Goto(name("tw-cali1"))))
        );
        assert!(m.insert(Elem::port(1), MapVerdict::Drop).is_err());
        assert_eq!(m.remove(&k), Some(MapVerdict::Drop));
    }
}
