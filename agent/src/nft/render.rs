//! Renders the IR as `nft` text (`nft -f` input): for golden files, `--dump-ruleset`, and
//! debugging. `nft -f` compiles this text to the same netlink expressions the applier sends.

use std::fmt::Write as _;

use super::interval::{self, Interval};
use super::ir::{
    Action, AddrTarget, BaseChain, Chain, ChainKind, Dir, Family, Hook, IfaceMatch, Match, Policy,
    Ports, Rule, Ruleset, VmapKey,
};
use super::set::{proto_name, KeyType, MapVerdict, Set, VerdictMap};

/// The ruleset as one `table inet <name> { … }` block.
pub fn render(rs: &Ruleset) -> String {
    let mut out = String::with_capacity(64 * (rs.rule_count() + 16));
    let _ = writeln!(out, "table inet {} {{", rs.table());
    let mut first = true;
    let mut gap = |out: &mut String| {
        if !first {
            out.push('\n');
        }
        first = false;
    };
    for set in rs.sets() {
        gap(&mut out);
        render_set(&mut out, set);
    }
    for map in rs.maps() {
        gap(&mut out);
        render_map(&mut out, map);
    }
    for chain in rs.chains() {
        gap(&mut out);
        render_chain(&mut out, chain);
    }
    out.push_str("}\n");
    out
}

/// `nft -f` input that atomically replaces the table with the ruleset (create it if missing,
/// delete it, create it full), as the applier's full replace does.
pub fn render_replace(rs: &Ruleset) -> String {
    let table = rs.table();
    format!("table inet {table}\ndelete table inet {table}\n{}", render(rs))
}

fn render_elements(out: &mut String, items: &[String]) {
    if items.is_empty() {
        return;
    }
    out.push_str("\t\telements = {\n");
    for (i, item) in items.iter().enumerate() {
        let sep = if i + 1 == items.len() { "" } else { "," };
        let _ = writeln!(out, "\t\t\t{item}{sep}");
    }
    out.push_str("\t\t}\n");
}

fn render_key(key: KeyType) -> fn(u128) -> String {
    match key {
        KeyType::Ipv6Addr => interval::v6_key,
        KeyType::InetService => interval::port_key,
        _ => interval::v4_key,
    }
}

fn render_set(out: &mut String, set: &Set) {
    let _ = writeln!(out, "\tset {} {{", set.name());
    let _ = writeln!(out, "\t\ttype {}", set.key().nft_name());
    let items: Vec<String> = if set.is_interval() {
        out.push_str("\t\tflags interval\n");
        let bits = set.key().bits();
        let key = render_key(set.key());
        set.intervals().into_iter().map(|r| interval::render(r, bits, key)).collect()
    } else {
        set.elems().iter().map(super::set::Elem::render).collect()
    };
    render_elements(out, &items);
    out.push_str("\t}\n");
}

fn render_map(out: &mut String, map: &VerdictMap) {
    let _ = writeln!(out, "\tmap {} {{", map.name());
    let _ = writeln!(out, "\t\ttype {} : verdict", map.key().nft_name());
    let items: Vec<String> = map
        .elems()
        .iter()
        .map(|(k, v)| {
            let verdict = match v {
                MapVerdict::Accept => "accept".to_string(),
                MapVerdict::Drop => "drop".to_string(),
                MapVerdict::Jump(c) => format!("jump {c}"),
                MapVerdict::Goto(c) => format!("goto {c}"),
            };
            format!("{} : {verdict}", k.render())
        })
        .collect();
    render_elements(out, &items);
    out.push_str("\t}\n");
}

fn hook_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Prerouting => "prerouting",
        Hook::Input => "input",
        Hook::Forward => "forward",
        Hook::Output => "output",
        Hook::Postrouting => "postrouting",
    }
}

fn priority_text(base: BaseChain) -> String {
    let named = match (base.kind, base.hook, base.priority) {
        (ChainKind::Filter, _, 0) => Some("filter"),
        (ChainKind::Nat, Hook::Postrouting | Hook::Input, 100) => Some("srcnat"),
        (ChainKind::Nat, Hook::Prerouting | Hook::Output, -100) => Some("dstnat"),
        _ => None,
    };
    named.map_or_else(|| base.priority.to_string(), str::to_string)
}

fn render_chain(out: &mut String, chain: &Chain) {
    let _ = writeln!(out, "\tchain {} {{", chain.name());
    if let Some(base) = chain.base_chain() {
        let kind = match base.kind {
            ChainKind::Filter => "filter",
            ChainKind::Nat => "nat",
        };
        let policy = match base.policy {
            Policy::Accept => "accept",
            Policy::Drop => "drop",
        };
        let _ = writeln!(
            out,
            "\t\ttype {kind} hook {} priority {}; policy {policy};",
            hook_name(base.hook),
            priority_text(*base)
        );
    }
    for rule in chain.rules() {
        let _ = writeln!(out, "\t\t{}", render_rule(rule));
    }
    out.push_str("\t}\n");
}

/// One rule in `nft` syntax, without indentation or newline.
pub fn render_rule(rule: &Rule) -> String {
    let mut parts: Vec<String> = rule.matches.iter().map(render_match).collect();
    if rule.counter {
        parts.push("counter".into());
    }
    if let Some(prefix) = &rule.log {
        parts.push(format!("log prefix \"{}\"", prefix.as_str()));
    }
    if let Some(action) = &rule.action {
        parts.push(render_action(action));
    }
    if let Some(comment) = &rule.comment {
        parts.push(format!("comment \"{}\"", comment.as_str()));
    }
    parts.join(" ")
}

fn op(neg: bool) -> &'static str {
    if neg {
        "!= "
    } else {
        ""
    }
}

fn render_iface(what: &str, neg: bool, iface: &IfaceMatch) -> String {
    match iface {
        IfaceMatch::Exact(n) => format!("{what} {}\"{n}\"", op(neg)),
        IfaceMatch::Prefix(p) => format!("{what} {}\"{}*\"", op(neg), p.as_str()),
    }
}

/// A negated single value is written as the range `v-v`: `nft` would otherwise merge two
/// adjacent `!=` matches (`th sport != 1 th dport != 2`) into one comparison that holds when
/// either differs, which is not what the IR means.
fn single_value(neg: bool, v: u8) -> String {
    if neg {
        format!("!= {v}-{v}")
    } else {
        v.to_string()
    }
}

fn render_ports(neg: bool, ports: &Ports) -> String {
    let items: Vec<String> = ports
        .ranges()
        .iter()
        .map(|r| {
            interval::render(
                Interval { start: u128::from(r.lo()), end: u128::from(r.hi()) },
                16,
                interval::port_key,
            )
        })
        .collect();
    match items.as_slice() {
        [one] if neg && !one.contains('-') => format!("!= {one}-{one}"),
        [one] => format!("{}{one}", op(neg)),
        _ => format!("{}{{ {} }}", op(neg), items.join(", ")),
    }
}

fn render_match(m: &Match) -> String {
    match m {
        Match::Iifname { neg, iface } => render_iface("iifname", *neg, iface),
        Match::Oifname { neg, iface } => render_iface("oifname", *neg, iface),
        Match::CtState(states) => format!("ct state {}", states.names().join(",")),
        Match::NfProto(Family::V4) => "meta nfproto ipv4".into(),
        Match::NfProto(Family::V6) => "meta nfproto ipv6".into(),
        Match::L4Proto { neg, protos } => {
            let names: Vec<String> = protos.iter().map(proto_name).collect();
            match names.as_slice() {
                [one] => format!("meta l4proto {}{one}", op(*neg)),
                _ => format!("meta l4proto {}{{ {} }}", op(*neg), names.join(", ")),
            }
        }
        Match::Addr { family, dir, neg, target } => {
            let proto = match family {
                Family::V4 => "ip",
                Family::V6 => "ip6",
            };
            let field = match dir {
                Dir::Src => "saddr",
                Dir::Dst => "daddr",
            };
            let value = match target {
                AddrTarget::Net(net) if net.prefix_len() == net.max_prefix_len() => {
                    net.addr().to_string()
                }
                AddrTarget::Net(net) => net.to_string(),
                AddrTarget::Set(name) => format!("@{name}"),
            };
            format!("{proto} {field} {}{value}", op(*neg))
        }
        Match::Port { dir, neg, ports } => {
            let field = match dir {
                Dir::Src => "sport",
                Dir::Dst => "dport",
            };
            format!("th {field} {}", render_ports(*neg, ports))
        }
        Match::IcmpType { family, neg, value } => {
            format!("{} type {}", icmp_name(*family), single_value(*neg, *value))
        }
        Match::IcmpCode { family, neg, value } => {
            format!("{} code {}", icmp_name(*family), single_value(*neg, *value))
        }
        Match::EtherSaddr { neg, mac } => format!("ether saddr {}{mac}", op(*neg)),
        Match::FibSaddrIifMissing => "fib saddr . iif oif missing".into(),
    }
}

fn icmp_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "icmp",
        Family::V6 => "icmpv6",
    }
}

fn render_action(action: &Action) -> String {
    match action {
        Action::Accept => "accept".into(),
        Action::Drop => "drop".into(),
        Action::Return => "return".into(),
        Action::Continue => "continue".into(),
        Action::Jump(c) => format!("jump {c}"),
        Action::Goto(c) => format!("goto {c}"),
        Action::Vmap { key, map } => {
            let key = match key {
                VmapKey::Iifname => "iifname",
                VmapKey::Oifname => "oifname",
            };
            format!("{key} vmap @{map}")
        }
        Action::Masquerade { fully_random: false } => "masquerade".into(),
        Action::Masquerade { fully_random: true } => "masquerade fully-random".into(),
    }
}
