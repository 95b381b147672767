//! A rich example ruleset in tabby's layout, using every kind of match, statement, set and
//! map the IR has; shared by the render and kernel tests.

#![allow(dead_code)]

use agent::nft::ir::{
    proto, Action, BaseChain, Chain, Comment, CtStates, Dir, Elem, Family, Hook, IfName, IfPrefix,
    KeyType, LogPrefix, MacAddr, MapVerdict, Match, Name, PortRange, Ports, Protos, Rule, Ruleset,
    Set, VerdictMap, VmapKey,
};
use ipnet::IpNet;

pub fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

pub fn ifname(s: &str) -> IfName {
    IfName::new(s).expect("valid interface name")
}

pub fn net(s: &str) -> IpNet {
    s.parse().expect("valid network")
}

pub fn comment(s: &str) -> Comment {
    Comment::new(s).expect("valid comment")
}

pub fn mac(s: &str) -> MacAddr {
    s.parse().expect("valid MAC")
}

pub fn established() -> Rule {
    Rule::new().with(Match::CtState(CtStates::ESTABLISHED | CtStates::RELATED)).then(Action::Accept)
}

pub fn invalid_drop() -> Rule {
    Rule::new().with(Match::CtState(CtStates::INVALID)).then(Action::Drop)
}

pub fn tcp_dport(port: u16) -> Rule {
    Rule::new().with(Match::l4proto(proto::TCP)).with(Match::dport(Ports::one(port)))
}

fn neg(m: Match) -> Match {
    m.negated().expect("negatable match")
}

fn ports(list: &[(u16, u16)]) -> Ports {
    Ports::new(list.iter().map(|&(lo, hi)| PortRange::new(lo, hi).expect("valid range")))
        .expect("non-empty ports")
}

/// Per-endpoint chains as the planner will make them.
fn endpoint_chains(rs: &mut Ruleset, iface: &str, ip: &str, mac_addr: &str) {
    let fw = Chain::regular(name(&format!("fw-{iface}")))
        .rule(established())
        .rule(invalid_drop())
        .rule(
            Rule::new()
                .with(neg(Match::EtherSaddr { neg: false, mac: mac(mac_addr) }))
                .then(Action::Drop),
        )
        .rule(
            Rule::new()
                .with(neg(Match::saddr(net(&format!("{ip}/32")))))
                .counter()
                .then(Action::Drop)
                .comment(comment("spoofed source address")),
        )
        .rule(Rule::new().with(Match::FibSaddrIifMissing).then(Action::Drop))
        .rule(Rule::action(Action::Jump(name("po-policy.ports"))))
        .rule(Rule::action(Action::Jump(name("pro-web"))))
        .rule(Rule::new().counter().then(Action::Drop).comment(comment("no profile accepted")));
    rs.add_chain(fw).expect("new chain");
    let tw = Chain::regular(name(&format!("tw-{iface}")))
        .rule(established())
        .rule(invalid_drop())
        .rule(Rule::action(Action::Jump(name("pi-policy.icmp"))))
        .rule(Rule::action(Action::Goto(name("pri-web"))));
    rs.add_chain(tw).expect("new chain");
}

/// Everything the IR can express, in table `table`.
pub fn rich(table: &str) -> Ruleset {
    let mut rs = Ruleset::new(name(table));

    let pools = Set::new_interval(name("all-pools"), KeyType::Ipv4Addr)
        .and_then(|s| s.with([Elem::net(net("10.65.0.0/16")), Elem::net(net("10.66.0.0/16"))]))
        .expect("valid set");
    rs.add_set(pools).expect("new set");
    let pools6 = Set::new_interval(name("all-pools6"), KeyType::Ipv6Addr)
        .and_then(|s| s.with([Elem::net(net("fd00:65::/48"))]))
        .expect("valid set");
    rs.add_set(pools6).expect("new set");
    let web = Set::new(name("sel-web"), KeyType::Ipv4Addr)
        .with([
            Elem::addr("10.65.0.1".parse().expect("ip")),
            Elem::addr("10.65.0.2".parse().expect("ip")),
        ])
        .expect("valid set");
    rs.add_set(web).expect("new set");
    rs.add_set(Set::new(name("sel-db_users"), KeyType::Ipv4Addr)).expect("new set");
    let web6 = Set::new(name("sel-web6"), KeyType::Ipv6Addr)
        .with([Elem::addr("fd00:65::1".parse().expect("ip"))])
        .expect("valid set");
    rs.add_set(web6).expect("new set");
    let svc = Set::new_interval(name("svc-ports"), KeyType::InetService)
        .and_then(|s| {
            s.with([Elem::Port(PortRange::new(8000, 8080).expect("range")), Elem::port(9090)])
        })
        .expect("valid set");
    rs.add_set(svc).expect("new set");
    let macs = Set::new(name("wl-macs"), KeyType::EtherAddr)
        .with([Elem::Mac(mac("aa:bb:cc:dd:ee:01"))])
        .expect("valid set");
    rs.add_set(macs).expect("new set");
    let ifs = Set::new(name("known-ifs"), KeyType::Ifname)
        .with([Elem::Ifname(ifname("cali1")), Elem::Ifname(ifname("cali2"))])
        .expect("valid set");
    rs.add_set(ifs).expect("new set");
    let protos = Set::new(name("l4-protos"), KeyType::InetProto)
        .with([Elem::Proto(proto::TCP), Elem::Proto(proto::UDP)])
        .expect("valid set");
    rs.add_set(protos).expect("new set");

    let mut from_wl = VerdictMap::new(name("from_wl"), KeyType::Ifname);
    let mut to_wl = VerdictMap::new(name("to_wl"), KeyType::Ifname);
    for (iface, ip, m) in
        [("cali1", "10.65.0.1", "aa:bb:cc:dd:ee:01"), ("cali2", "10.65.0.2", "aa:bb:cc:dd:ee:02")]
    {
        from_wl
            .insert(Elem::Ifname(ifname(iface)), MapVerdict::Goto(name(&format!("fw-{iface}"))))
            .expect("insert");
        to_wl
            .insert(Elem::Ifname(ifname(iface)), MapVerdict::Goto(name(&format!("tw-{iface}"))))
            .expect("insert");
        endpoint_chains(&mut rs, iface, ip, m);
    }
    to_wl.insert(Elem::Ifname(ifname("cali-down")), MapVerdict::Drop).expect("insert");
    rs.add_map(from_wl).expect("new map");
    rs.add_map(to_wl).expect("new map");

    let cali = || IfPrefix::new("cali").expect("prefix");
    rs.add_chain(
        Chain::base(name("forward"), BaseChain::filter(Hook::Forward))
            .rule(established())
            .rule(invalid_drop())
            .rule(
                Rule::new()
                    .with(Match::iifname_prefix(cali()))
                    .then(Action::Jump(name("from-wl-dispatch"))),
            )
            .rule(
                Rule::new()
                    .with(Match::oifname_prefix(cali()))
                    .then(Action::Jump(name("to-wl-dispatch"))),
            ),
    )
    .expect("new chain");
    rs.add_chain(Chain::base(name("input"), BaseChain::filter(Hook::Input)).rule(
        Rule::new().with(Match::iifname_prefix(cali())).then(Action::Goto(name("wl-to-host"))),
    ))
    .expect("new chain");
    rs.add_chain(Chain::base(name("output"), BaseChain::filter(Hook::Output)).rule(established()))
        .expect("new chain");
    rs.add_chain(
        Chain::base(name("postrouting"), BaseChain::nat(Hook::Postrouting))
            .rule(
                Rule::new()
                    .with(Match::addr_in(Family::V4, Dir::Src, name("all-pools")))
                    .with(neg(Match::addr_in(Family::V4, Dir::Dst, name("all-pools"))))
                    .then(Action::Masquerade { fully_random: false }),
            )
            .rule(
                Rule::new()
                    .with(Match::addr_in(Family::V6, Dir::Src, name("all-pools6")))
                    .with(neg(Match::addr_in(Family::V6, Dir::Dst, name("all-pools6"))))
                    .then(Action::Masquerade { fully_random: true }),
            ),
    )
    .expect("new chain");
    for (dispatch, key, map) in [
        ("from-wl-dispatch", VmapKey::Iifname, "from_wl"),
        ("to-wl-dispatch", VmapKey::Oifname, "to_wl"),
    ] {
        rs.add_chain(
            Chain::regular(name(dispatch))
                .rule(Rule::action(Action::Vmap { key, map: name(map) }))
                .rule(
                    Rule::new().counter().then(Action::Drop).comment(comment("Unknown interface")),
                ),
        )
        .expect("new chain");
    }
    rs.add_chain(
        Chain::regular(name("wl-to-host"))
            .rule(Rule::action(Action::Jump(name("from-wl-dispatch"))))
            .rule(Rule::action(Action::Drop).comment(comment("DefaultEndpointToHostAction"))),
    )
    .expect("new chain");

    rs.add_chain(
        Chain::regular(name("pri-web"))
            .rule(tcp_dport(80).then(Action::Accept))
            .rule(tcp_dport(443).then(Action::Accept))
            .rule(
                Rule::new()
                    .with(Match::addr_in(Family::V4, Dir::Src, name("sel-web")))
                    .then(Action::Accept),
            )
            .rule(
                Rule::new()
                    .with(Match::addr_in(Family::V6, Dir::Src, name("sel-web6")))
                    .then(Action::Accept),
            ),
    )
    .expect("new chain");
    rs.add_chain(Chain::regular(name("pro-web")).rule(Rule::action(Action::Return)))
        .expect("new chain");
    rs.add_chain(
        Chain::regular(name("pi-policy.icmp"))
            .rule(
                Rule::new()
                    .with(Match::saddr(net("10.65.3.0/24")))
                    .with(Match::IcmpType { family: Family::V4, neg: false, value: 8 })
                    .then(Action::Drop),
            )
            .rule(
                Rule::new()
                    .with(Match::IcmpType { family: Family::V4, neg: false, value: 8 })
                    .with(Match::IcmpCode { family: Family::V4, neg: false, value: 0 })
                    .then(Action::Accept),
            )
            .rule(
                Rule::new()
                    .with(Match::IcmpType { family: Family::V6, neg: false, value: 128 })
                    .then(Action::Accept),
            )
            .rule(
                Rule::new()
                    .with(Match::IcmpType { family: Family::V4, neg: true, value: 3 })
                    .with(Match::IcmpCode { family: Family::V4, neg: true, value: 1 })
                    .log(LogPrefix::new("tabby-drop ").expect("prefix"))
                    .then(Action::Drop),
            ),
    )
    .expect("new chain");
    rs.add_chain(
        Chain::regular(name("po-policy.ports"))
            .rule(
                Rule::new()
                    .with(Match::l4proto(proto::UDP))
                    .with(Match::dport(Ports::one(53)))
                    .with(Match::sport(Ports::one(53)))
                    .then(Action::Accept),
            )
            .rule(
                Rule::new()
                    .with(neg(Match::L4Proto {
                        neg: false,
                        protos: Protos::new([proto::TCP, proto::UDP]).expect("protos"),
                    }))
                    .then(Action::Drop),
            )
            .rule(
                Rule::new()
                    .with(Match::l4proto(proto::TCP))
                    .with(neg(Match::dport(Ports::range(1000, 2000).expect("range"))))
                    .with(neg(Match::sport(Ports::one(22))))
                    .with(neg(Match::dport(Ports::one(23))))
                    .then(Action::Accept),
            )
            .rule(
                Rule::new()
                    .with(Match::L4Proto {
                        neg: false,
                        protos: Protos::new([proto::TCP, proto::UDP]).expect("protos"),
                    })
                    .with(neg(Match::dport(ports(&[(22, 22), (8000, 8080)]))))
                    .with(Match::sport(ports(&[(1024, 1024), (1025, 1030), (4000, 4000)])))
                    .then(Action::Continue),
            )
            .rule(
                Rule::new()
                    .with(Match::l4proto(proto::SCTP))
                    .with(Match::dport(ports(&[(80, 80), (443, 443)])))
                    .then(Action::Accept),
            )
            .rule(
                Rule::new()
                    .with(neg(Match::daddr(net("10.0.0.0/8"))))
                    .with(Match::saddr(net("10.65.0.0/20")))
                    .with(Match::saddr(net("0.0.0.0/0")))
                    .then(Action::Accept),
            )
            .rule(
                Rule::new()
                    .with(Match::saddr(net("fd00:65::/48")))
                    .with(neg(Match::daddr(net("fd00::1/128"))))
                    .with(Match::daddr(net("fd00::/60")))
                    .then(Action::Accept),
            )
            .rule(
                Rule::new()
                    .with(Match::NfProto(Family::V6))
                    .with(neg(Match::iifname(ifname("cali9"))))
                    .with(Match::oifname(ifname("eth0")))
                    .counter()
                    .then(Action::Accept),
            )
            .rule(
                Rule::new()
                    .with(Match::EtherSaddr { neg: false, mac: mac("aa:bb:cc:dd:ee:01") })
                    .with(neg(Match::oifname_prefix(IfPrefix::new("eth").expect("prefix"))))
                    .then(Action::Return),
            )
            .rule(
                Rule::new()
                    .with(Match::l4proto(proto::ICMP))
                    .with(Match::IcmpType { family: Family::V4, neg: false, value: 0 })
                    .counter()
                    .log(LogPrefix::new("echo reply").expect("prefix")),
            ),
    )
    .expect("new chain");
    rs.validate().expect("the example is consistent");
    rs
}
