//! Matches of the IR: what a rule can test about a packet (interfaces, conntrack state,
//! protocols, addresses, ports, ICMP type and code, source MAC, reverse path), with the
//! validated port and protocol lists they use.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::interval::{self, Interval};
use super::ir::IrError;
use super::names::{IfName, IfPrefix, MacAddr, Name};

/// IP version of an address match, ICMP match or `meta nfproto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

/// Source or destination (address or port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dir {
    Src,
    Dst,
}

/// Well-known IP protocol numbers for `meta l4proto`.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
}

/// Conntrack states; a match on several means "any of them".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtStates(u32);

impl CtStates {
    pub const INVALID: Self = Self(1);
    pub const ESTABLISHED: Self = Self(2);
    pub const RELATED: Self = Self(4);
    pub const NEW: Self = Self(8);
    pub const UNTRACKED: Self = Self(64);

    /// The kernel's bit mask (`NF_CT_STATE_*_BIT`).
    pub fn bits(self) -> u32 {
        self.0
    }

    /// State names in `nft`'s order.
    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::INVALID, "invalid"),
            (Self::ESTABLISHED, "established"),
            (Self::RELATED, "related"),
            (Self::NEW, "new"),
            (Self::UNTRACKED, "untracked"),
        ]
        .into_iter()
        .filter(|(s, _)| self.0 & s.0 != 0)
        .map(|(_, n)| n)
        .collect()
    }
}

impl std::ops::BitOr for CtStates {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// An inclusive port range; `lo == hi` is a single port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    lo: u16,
    hi: u16,
}

impl PortRange {
    pub fn new(lo: u16, hi: u16) -> Result<Self, IrError> {
        if lo > hi {
            return Err(IrError::Invalid {
                what: "port range",
                value: format!("{lo}-{hi}"),
                reason: "start is above end",
            });
        }
        Ok(Self { lo, hi })
    }

    pub fn single(port: u16) -> Self {
        Self { lo: port, hi: port }
    }

    pub fn lo(self) -> u16 {
        self.lo
    }

    pub fn hi(self) -> u16 {
        self.hi
    }

    pub(crate) fn interval(self) -> Interval {
        Interval { start: u128::from(self.lo), end: u128::from(self.hi) }
    }
}

/// A non-empty list of ports and ranges, kept sorted with overlapping and touching ranges
/// merged (`{80, 81}` is `80-81`), the form `nft` gives anonymous sets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ports(Vec<PortRange>);

impl Ports {
    pub fn new(ranges: impl IntoIterator<Item = PortRange>) -> Result<Self, IrError> {
        let merged =
            interval::canonicalize(ranges.into_iter().map(PortRange::interval).collect(), true);
        if merged.is_empty() {
            return Err(IrError::Invalid {
                what: "port list",
                value: String::new(),
                reason: "is empty",
            });
        }
        Ok(Self(
            merged
                .into_iter()
                .map(|r| PortRange { lo: r.start as u16, hi: r.end as u16 })
                .collect(),
        ))
    }

    pub fn one(port: u16) -> Self {
        Self(vec![PortRange::single(port)])
    }

    pub fn range(lo: u16, hi: u16) -> Result<Self, IrError> {
        Ok(Self(vec![PortRange::new(lo, hi)?]))
    }

    pub fn ranges(&self) -> &[PortRange] {
        &self.0
    }
}

/// A non-empty set of IP protocol numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Protos(BTreeSet<u8>);

impl Protos {
    pub fn new(protos: impl IntoIterator<Item = u8>) -> Result<Self, IrError> {
        let set: BTreeSet<u8> = protos.into_iter().collect();
        if set.is_empty() {
            return Err(IrError::Invalid {
                what: "protocol list",
                value: String::new(),
                reason: "is empty",
            });
        }
        Ok(Self(set))
    }

    pub fn one(proto: u8) -> Self {
        Self(BTreeSet::from([proto]))
    }

    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        self.0.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn single(&self) -> Option<u8> {
        (self.0.len() == 1).then(|| self.0.iter().next().copied()).flatten()
    }
}

/// Whole interface name or name prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IfaceMatch {
    Exact(IfName),
    Prefix(IfPrefix),
}

/// What an address is compared with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AddrTarget {
    /// A network (host bits cleared) or a single address (/32, /128).
    Net(IpNet),
    /// A named set of the same family.
    Set(Name),
}

/// One match of a rule. All matches of a rule must hold for its statements to run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    Iifname {
        neg: bool,
        iface: IfaceMatch,
    },
    Oifname {
        neg: bool,
        iface: IfaceMatch,
    },
    /// `ct state a,b`: the connection is in any of the states.
    CtState(CtStates),
    /// `meta nfproto ipv4|ipv6`.
    NfProto(Family),
    /// `meta l4proto p` or `meta l4proto { p, q }`.
    L4Proto {
        neg: bool,
        protos: Protos,
    },
    /// `ip saddr 10.0.0.0/8`, `ip6 daddr != @set`, …
    Addr {
        family: Family,
        dir: Dir,
        neg: bool,
        target: AddrTarget,
    },
    /// `th dport 80`, `th sport != 1000-2000`, `th dport { 80, 443 }`; meaningful only
    /// with a TCP/UDP/SCTP `L4Proto` match before it.
    Port {
        dir: Dir,
        neg: bool,
        ports: Ports,
    },
    /// `icmp type 8`, `icmpv6 type != 128`.
    IcmpType {
        family: Family,
        neg: bool,
        value: u8,
    },
    /// `icmp code 0`.
    IcmpCode {
        family: Family,
        neg: bool,
        value: u8,
    },
    /// `ether saddr aa:bb:cc:dd:ee:ff` (anti MAC spoofing).
    EtherSaddr {
        neg: bool,
        mac: MacAddr,
    },
    /// `fib saddr . iif oif missing`: no route back to the source through the input
    /// interface (strict reverse-path check against address spoofing).
    FibSaddrIifMissing,
}

impl Match {
    pub fn iifname(name: IfName) -> Self {
        Match::Iifname { neg: false, iface: IfaceMatch::Exact(name) }
    }

    pub fn iifname_prefix(prefix: IfPrefix) -> Self {
        Match::Iifname { neg: false, iface: IfaceMatch::Prefix(prefix) }
    }

    pub fn oifname(name: IfName) -> Self {
        Match::Oifname { neg: false, iface: IfaceMatch::Exact(name) }
    }

    pub fn oifname_prefix(prefix: IfPrefix) -> Self {
        Match::Oifname { neg: false, iface: IfaceMatch::Prefix(prefix) }
    }

    pub fn l4proto(proto: u8) -> Self {
        Match::L4Proto { neg: false, protos: Protos::one(proto) }
    }

    /// Address in network `net` (host bits are cleared: `10.1.2.3/8` means `10.0.0.0/8`).
    pub fn addr(dir: Dir, net: IpNet) -> Self {
        Match::Addr {
            family: Family::of(&net),
            dir,
            neg: false,
            target: AddrTarget::Net(net.trunc()),
        }
    }

    pub fn saddr(net: IpNet) -> Self {
        Self::addr(Dir::Src, net)
    }

    pub fn daddr(net: IpNet) -> Self {
        Self::addr(Dir::Dst, net)
    }

    /// Address in the named set `set`, whose key type must be `family`'s address type.
    pub fn addr_in(family: Family, dir: Dir, set: Name) -> Self {
        Match::Addr { family, dir, neg: false, target: AddrTarget::Set(set) }
    }

    pub fn dport(ports: Ports) -> Self {
        Match::Port { dir: Dir::Dst, neg: false, ports }
    }

    pub fn sport(ports: Ports) -> Self {
        Match::Port { dir: Dir::Src, neg: false, ports }
    }

    /// The opposite match (`!=`). `ct state`, `meta nfproto` and `fib` have no negated form
    /// here.
    pub fn negated(self) -> Result<Self, IrError> {
        let mut m = self;
        match &mut m {
            Match::Iifname { neg, .. }
            | Match::Oifname { neg, .. }
            | Match::L4Proto { neg, .. }
            | Match::Addr { neg, .. }
            | Match::Port { neg, .. }
            | Match::IcmpType { neg, .. }
            | Match::IcmpCode { neg, .. }
            | Match::EtherSaddr { neg, .. } => {
                *neg = !*neg;
                Ok(m)
            }
            Match::CtState(_) | Match::NfProto(_) | Match::FibSaddrIifMissing => {
                Err(IrError::Invalid {
                    what: "match",
                    value: format!("{m:?}"),
                    reason: "has no negated form",
                })
            }
        }
    }
}
