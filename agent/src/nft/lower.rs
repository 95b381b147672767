//! Lowers IR rules to netlink expressions exactly as `nft` compiles the rendered text:
//! implicit `meta nfproto`/`l4proto`/`iiftype` dependencies tracked along the rule,
//! byte-aligned prefix loads, anonymous sets for protocol and port lists, and `nft`'s merge of
//! adjacent payload equality matches.

use std::ffi::CString;

use nftnl::expr::{Bitwise, Cmp, CmpOp, Conntrack, Counter, Meta, Verdict};
use nftnl::MsgType;

use super::encode::{cstring, interval_elems, key_len, EncodeError, MsgKind, Out, OwnedElem};
use super::interval::Interval;
use super::ir::{Action, AddrTarget, Dir, Family, IfaceMatch, Match, Rule, VmapKey};
use super::set::KeyType;
use super::sys::{FibSaddrIifOifPresent, Log, Lookup, Masquerade, Payload, Range, SetDef, SetMsg};

const PAYLOAD_LL: u32 = libc::NFT_PAYLOAD_LL_HEADER as u32;
const PAYLOAD_NETWORK: u32 = libc::NFT_PAYLOAD_NETWORK_HEADER as u32;
const PAYLOAD_TRANSPORT: u32 = libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32;
const ARPHRD_ETHER: u16 = 1;

/// `rule` as an nftnl rule of `chain`; its anonymous sets go into `out` first, as they must
/// precede the rule in the batch.
pub(super) fn build_rule<'a>(
    out: &mut Out,
    table: &CString,
    chain: &'a nftnl::Chain<'a>,
    rule: &Rule,
) -> Result<nftnl::Rule<'a>, EncodeError> {
    let stmts = lower_rule(out, table, rule)?;
    let mut r = nftnl::Rule::new(chain);
    for stmt in &stmts {
        emit_stmt(&mut r, stmt);
    }
    emit_tail(&mut r, rule)?;
    Ok(r)
}

#[derive(Debug, Clone, Copy)]
enum MetaKey {
    IifName,
    OifName,
    NfProto,
    L4Proto,
    IifType,
}

/// A low-level expression, owned until emitted.
enum Low {
    Meta(MetaKey),
    CtState,
    Payload { base: u32, offset: u32, len: u32 },
    Cmp(CmpOp, Vec<u8>),
    Mask(Vec<u8>),
    Range { neq: bool, from: Vec<u8>, to: Vec<u8> },
    Lookup { set: CString, id: Option<u32>, invert: bool },
    Fib,
}

/// One `nft` statement worth of expressions. `PayloadEq` (payload load compared equal to a
/// value) is the kind `nft` merges with adjacent ones.
enum Stmt {
    Exprs(Vec<Low>),
    PayloadEq { base: u32, offset: u32, data: Vec<u8> },
    Merged,
}

/// Protocol context along a rule, as `nft` tracks it to decide which dependencies to add.
#[derive(Default)]
struct Ctx {
    family: Option<Family>,
    l4: Option<u8>,
    link: bool,
}

fn nfproto_code(f: Family) -> u8 {
    match f {
        Family::V4 => libc::NFPROTO_IPV4 as u8,
        Family::V6 => libc::NFPROTO_IPV6 as u8,
    }
}

fn cmp_op(neg: bool) -> CmpOp {
    if neg {
        CmpOp::Neq
    } else {
        CmpOp::Eq
    }
}

fn need_family(ctx: &mut Ctx, f: Family, out: &mut Vec<Stmt>) {
    if ctx.family != Some(f) {
        out.push(Stmt::Exprs(vec![
            Low::Meta(MetaKey::NfProto),
            Low::Cmp(CmpOp::Eq, vec![nfproto_code(f)]),
        ]));
        ctx.family = Some(f);
    }
}

/// Creates an anonymous constant set holding `elems` in the batch; returns its id.
fn anon_set(
    out: &mut Out,
    table: &CString,
    key: KeyType,
    interval: bool,
    elems: &[OwnedElem],
) -> u32 {
    let id = out.set_id();
    let mut flags = (libc::NFT_SET_ANONYMOUS | libc::NFT_SET_CONSTANT) as u32;
    if interval {
        flags |= libc::NFT_SET_INTERVAL as u32;
    }
    let name = c"__set%d";
    let msg = SetMsg::new(&SetDef {
        table,
        name,
        id,
        flags,
        key_type: key.type_id(),
        key_len: key_len(key),
        verdict_map: false,
        size: Some(elems.len() as u32),
        // `nft` takes the byte order from the matched expression: `meta l4proto` is host
        // order, ports are big endian.
        key_byteorder: if key == KeyType::InetProto { 1 } else { key.byteorder() },
    });
    let n = out.name("anonymous set");
    out.push(&msg, MsgType::Add, MsgKind::AddSet, n, 0);
    out.elems(table, &CString::from(name), Some(id), elems, MsgType::Add);
    id
}

fn anon_lookup(id: u32, invert: bool) -> Low {
    Low::Lookup { set: CString::from(c"__set%d"), id: Some(id), invert }
}

fn addr_field(family: Family, dir: Dir) -> (u32, u32) {
    match (family, dir) {
        (Family::V4, Dir::Src) => (12, 4),
        (Family::V4, Dir::Dst) => (16, 4),
        (Family::V6, Dir::Src) => (8, 16),
        (Family::V6, Dir::Dst) => (24, 16),
    }
}

/// Lowers the matches of a rule to statements (creating its anonymous sets on the way),
/// then merges adjacent payload matches as `nft` does.
fn lower_rule(out: &mut Out, table: &CString, rule: &Rule) -> Result<Vec<Stmt>, EncodeError> {
    let mut ctx = Ctx::default();
    let mut stmts = Vec::with_capacity(rule.matches.len() + 2);
    for m in &rule.matches {
        lower_match(out, table, &mut ctx, m, &mut stmts)?;
    }
    merge_payloads(&mut stmts);
    Ok(stmts)
}

fn lower_match(
    out: &mut Out,
    table: &CString,
    ctx: &mut Ctx,
    m: &Match,
    stmts: &mut Vec<Stmt>,
) -> Result<(), EncodeError> {
    match m {
        Match::Iifname { neg, iface } | Match::Oifname { neg, iface } => {
            let key = if matches!(m, Match::Iifname { .. }) {
                MetaKey::IifName
            } else {
                MetaKey::OifName
            };
            let data = match iface {
                IfaceMatch::Exact(n) => n.key_bytes().to_vec(),
                IfaceMatch::Prefix(p) => p.as_str().as_bytes().to_vec(),
            };
            stmts.push(Stmt::Exprs(vec![Low::Meta(key), Low::Cmp(cmp_op(*neg), data)]));
        }
        Match::CtState(states) => stmts.push(Stmt::Exprs(vec![
            Low::CtState,
            Low::Mask(states.bits().to_ne_bytes().to_vec()),
            Low::Cmp(CmpOp::Neq, vec![0; 4]),
        ])),
        Match::NfProto(f) => {
            stmts.push(Stmt::Exprs(vec![
                Low::Meta(MetaKey::NfProto),
                Low::Cmp(CmpOp::Eq, vec![nfproto_code(*f)]),
            ]));
            ctx.family = Some(*f);
        }
        Match::L4Proto { neg, protos } => {
            if let Some(p) = protos.single() {
                stmts.push(Stmt::Exprs(vec![
                    Low::Meta(MetaKey::L4Proto),
                    Low::Cmp(cmp_op(*neg), vec![p]),
                ]));
                if !neg {
                    ctx.l4 = Some(p);
                }
            } else {
                let elems: Vec<OwnedElem> =
                    protos.iter().map(|p| OwnedElem::key(vec![p])).collect();
                let id = anon_set(out, table, KeyType::InetProto, false, &elems);
                stmts.push(Stmt::Exprs(vec![Low::Meta(MetaKey::L4Proto), anon_lookup(id, *neg)]));
            }
        }
        Match::Addr { family, dir, neg, target } => {
            need_family(ctx, *family, stmts);
            let (offset, len) = addr_field(*family, *dir);
            stmts.push(lower_addr(*neg, offset, len, target)?);
        }
        Match::Port { dir, neg, ports } => {
            let offset = if *dir == Dir::Src { 0 } else { 2 };
            let load = Low::Payload { base: PAYLOAD_TRANSPORT, offset, len: 2 };
            let stmt = match ports.ranges() {
                [r] if r.lo() == r.hi() && !neg => Stmt::PayloadEq {
                    base: PAYLOAD_TRANSPORT,
                    offset,
                    data: r.lo().to_be_bytes().to_vec(),
                },
                [r] if *neg => Stmt::Exprs(vec![
                    load,
                    Low::Range {
                        neq: true,
                        from: r.lo().to_be_bytes().to_vec(),
                        to: r.hi().to_be_bytes().to_vec(),
                    },
                ]),
                [r] => Stmt::Exprs(vec![
                    load,
                    Low::Cmp(CmpOp::Gte, r.lo().to_be_bytes().to_vec()),
                    Low::Cmp(CmpOp::Lte, r.hi().to_be_bytes().to_vec()),
                ]),
                many => {
                    let interval = many.iter().any(|r| r.lo() != r.hi());
                    let elems = if interval {
                        let ivs: Vec<Interval> = many.iter().map(|r| r.interval()).collect();
                        interval_elems(&ivs, 16, true)
                    } else {
                        many.iter().map(|r| OwnedElem::key(r.lo().to_be_bytes().to_vec())).collect()
                    };
                    let id = anon_set(out, table, KeyType::InetService, interval, &elems);
                    Stmt::Exprs(vec![load, anon_lookup(id, *neg)])
                }
            };
            stmts.push(stmt);
        }
        Match::IcmpType { family, neg, value } | Match::IcmpCode { family, neg, value } => {
            let want = if *family == Family::V4 {
                super::ir::proto::ICMP
            } else {
                super::ir::proto::ICMPV6
            };
            if ctx.l4 != Some(want) {
                need_family(ctx, *family, stmts);
                stmts.push(Stmt::Exprs(vec![
                    Low::Meta(MetaKey::L4Proto),
                    Low::Cmp(CmpOp::Eq, vec![want]),
                ]));
                ctx.l4 = Some(want);
            }
            let offset = u32::from(matches!(m, Match::IcmpCode { .. }));
            stmts.push(if *neg {
                // As a range, like the renderer's `!= v-v`: see render::single_value.
                Stmt::Exprs(vec![
                    Low::Payload { base: PAYLOAD_TRANSPORT, offset, len: 1 },
                    Low::Range { neq: true, from: vec![*value], to: vec![*value] },
                ])
            } else {
                Stmt::PayloadEq { base: PAYLOAD_TRANSPORT, offset, data: vec![*value] }
            });
        }
        Match::EtherSaddr { neg, mac } => {
            if !ctx.link {
                stmts.push(Stmt::Exprs(vec![
                    Low::Meta(MetaKey::IifType),
                    Low::Cmp(CmpOp::Eq, ARPHRD_ETHER.to_ne_bytes().to_vec()),
                ]));
                ctx.link = true;
            }
            stmts.push(if *neg {
                Stmt::Exprs(vec![
                    Low::Payload { base: PAYLOAD_LL, offset: 6, len: 6 },
                    Low::Cmp(CmpOp::Neq, mac.0.to_vec()),
                ])
            } else {
                Stmt::PayloadEq { base: PAYLOAD_LL, offset: 6, data: mac.0.to_vec() }
            });
        }
        Match::FibSaddrIifMissing => {
            // The fib result register holds a u32; "missing" is 0.
            stmts.push(Stmt::Exprs(vec![Low::Fib, Low::Cmp(CmpOp::Eq, vec![0; 4])]));
        }
    }
    Ok(())
}

/// An address match: full-length equality (mergeable), a shortened load for byte-aligned
/// prefixes, a masked load otherwise, or a set lookup.
fn lower_addr(neg: bool, offset: u32, len: u32, target: &AddrTarget) -> Result<Stmt, EncodeError> {
    let load = |len| Low::Payload { base: PAYLOAD_NETWORK, offset, len };
    Ok(match target {
        AddrTarget::Set(name) => Stmt::Exprs(vec![
            load(len),
            Low::Lookup { set: cstring(name.as_str())?, id: None, invert: neg },
        ]),
        AddrTarget::Net(net) => {
            let bytes = match net.network() {
                std::net::IpAddr::V4(a) => a.octets().to_vec(),
                std::net::IpAddr::V6(a) => a.octets().to_vec(),
            };
            let plen = u32::from(net.prefix_len());
            if plen == len * 8 {
                if neg {
                    Stmt::Exprs(vec![load(len), Low::Cmp(CmpOp::Neq, bytes)])
                } else {
                    Stmt::PayloadEq { base: PAYLOAD_NETWORK, offset, data: bytes }
                }
            } else if plen > 0 && plen % 8 == 0 {
                let n = (plen / 8) as usize;
                Stmt::Exprs(vec![load(plen / 8), Low::Cmp(cmp_op(neg), bytes[..n].to_vec())])
            } else {
                let mask = match net.netmask() {
                    std::net::IpAddr::V4(a) => a.octets().to_vec(),
                    std::net::IpAddr::V6(a) => a.octets().to_vec(),
                };
                Stmt::Exprs(vec![load(len), Low::Mask(mask), Low::Cmp(cmp_op(neg), bytes)])
            }
        }
    })
}

/// `nft`'s payload merge: among a rule's statements, equality matches on adjacent payload
/// bytes of the same header are joined into one load and compare, kept at the position of
/// the lowest-offset one. Loads stay within 4 bytes unless one part is already longer or the
/// header is the link layer (never above 16).
fn merge_payloads(stmts: &mut [Stmt]) {
    let mut idx: Vec<usize> = stmts
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s, Stmt::PayloadEq { .. }))
        .map(|(i, _)| i)
        .collect();
    if idx.len() < 2 {
        return;
    }
    let offset_of = |s: &Stmt| match s {
        Stmt::PayloadEq { offset, .. } => *offset,
        _ => 0,
    };
    idx.sort_by_key(|&i| offset_of(&stmts[i]));
    let mut last = idx[0];
    for &i in &idx[1..] {
        let joined = match (&stmts[last], &stmts[i]) {
            (
                Stmt::PayloadEq { base: b1, offset: o1, data: d1 },
                Stmt::PayloadEq { base: b2, offset: o2, data: d2 },
            ) => {
                let (l1, l2) = (d1.len() as u32, d2.len() as u32);
                let total = l1 + l2;
                let adjacent = b1 == b2 && o1 + l1 == *o2;
                let fast_enough = total <= 4 || *b1 == PAYLOAD_LL || l1 > 4 || l2 > 4;
                (adjacent && total <= 16 && fast_enough).then(|| {
                    let mut data = d1.clone();
                    data.extend_from_slice(d2);
                    Stmt::PayloadEq { base: *b1, offset: *o1, data }
                })
            }
            _ => None,
        };
        if let Some(j) = joined {
            stmts[last] = j;
            stmts[i] = Stmt::Merged;
        } else {
            last = i;
        }
    }
}

fn emit_stmt(r: &mut nftnl::Rule<'_>, stmt: &Stmt) {
    match stmt {
        Stmt::Merged => {}
        Stmt::PayloadEq { base, offset, data } => {
            r.add_expr(&Payload { base: *base, offset: *offset, len: data.len() as u32 });
            r.add_expr(&Cmp::new(CmpOp::Eq, data.as_slice()));
        }
        Stmt::Exprs(exprs) => {
            for e in exprs {
                emit_low(r, e);
            }
        }
    }
}

fn emit_low(r: &mut nftnl::Rule<'_>, e: &Low) {
    match e {
        Low::Meta(k) => r.add_expr(&match k {
            MetaKey::IifName => Meta::IifName,
            MetaKey::OifName => Meta::OifName,
            MetaKey::NfProto => Meta::NfProto,
            MetaKey::L4Proto => Meta::L4Proto,
            MetaKey::IifType => Meta::IifType,
        }),
        Low::CtState => r.add_expr(&Conntrack::State),
        Low::Payload { base, offset, len } => {
            r.add_expr(&Payload { base: *base, offset: *offset, len: *len });
        }
        Low::Cmp(op, data) => r.add_expr(&Cmp::new(*op, data.as_slice())),
        Low::Mask(mask) => {
            let zero = vec![0u8; mask.len()];
            r.add_expr(&Bitwise::new(mask.as_slice(), zero.as_slice()));
        }
        Low::Range { neq, from, to } => r.add_expr(&Range { neq: *neq, from, to }),
        Low::Lookup { set, id, invert } => {
            r.add_expr(&Lookup { set, set_id: *id, invert: *invert, verdict: false });
        }
        Low::Fib => r.add_expr(&FibSaddrIifOifPresent),
    }
}

/// Counter, log, action and comment.
fn emit_tail(r: &mut nftnl::Rule<'_>, rule: &Rule) -> Result<(), EncodeError> {
    if rule.counter {
        r.add_expr(&Counter);
    }
    if let Some(prefix) = &rule.log {
        let prefix = cstring(prefix.as_str())?;
        r.add_expr(&Log { prefix: &prefix });
    }
    match &rule.action {
        None => {}
        Some(Action::Accept) => r.add_expr(&Verdict::Accept),
        Some(Action::Drop) => r.add_expr(&Verdict::Drop),
        Some(Action::Return) => r.add_expr(&Verdict::Return),
        Some(Action::Continue) => r.add_expr(&Verdict::Continue),
        Some(Action::Jump(c)) => r.add_expr(&Verdict::Jump { chain: cstring(c.as_str())? }),
        Some(Action::Goto(c)) => r.add_expr(&Verdict::Goto { chain: cstring(c.as_str())? }),
        Some(Action::Vmap { key, map }) => {
            r.add_expr(&match key {
                VmapKey::Iifname => Meta::IifName,
                VmapKey::Oifname => Meta::OifName,
            });
            let map = cstring(map.as_str())?;
            r.add_expr(&Lookup { set: &map, set_id: None, invert: false, verdict: true });
        }
        Some(Action::Masquerade { fully_random }) => {
            r.add_expr(&Masquerade { fully_random: *fully_random });
        }
    }
    if let Some(comment) = &rule.comment {
        let text = comment.as_str().to_string();
        r.set_comment(cstring(&text)?).map_err(|_| EncodeError(text))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eq(base: u32, offset: u32, data: &[u8]) -> Stmt {
        Stmt::PayloadEq { base, offset, data: data.to_vec() }
    }

    fn shape(stmts: &[Stmt]) -> Vec<String> {
        stmts
            .iter()
            .map(|s| match s {
                Stmt::PayloadEq { base, offset, data } => format!("{base}@{offset}:{data:?}"),
                Stmt::Exprs(_) => "exprs".into(),
                Stmt::Merged => "-".into(),
            })
            .collect()
    }

    #[test]
    fn ports_merge_in_offset_order_at_the_lower_offset() {
        // th dport 53 meta l4proto tcp th sport 54
        let mut s = vec![
            eq(PAYLOAD_TRANSPORT, 2, &[0, 53]),
            Stmt::Exprs(vec![]),
            eq(PAYLOAD_TRANSPORT, 0, &[0, 54]),
        ];
        merge_payloads(&mut s);
        assert_eq!(shape(&s), vec!["-", "exprs", "2@0:[0, 54, 0, 53]"]);
    }

    #[test]
    fn ipv4_addresses_do_not_merge_but_icmp_type_and_code_do() {
        let mut s = vec![
            eq(PAYLOAD_NETWORK, 12, &[1, 2, 3, 4]),
            eq(PAYLOAD_NETWORK, 16, &[5, 6, 7, 8]),
            eq(PAYLOAD_TRANSPORT, 0, &[8]),
            eq(PAYLOAD_TRANSPORT, 1, &[0]),
        ];
        merge_payloads(&mut s);
        assert_eq!(shape(&s), vec!["1@12:[1, 2, 3, 4]", "1@16:[5, 6, 7, 8]", "2@0:[8, 0]", "-"]);
    }
}
