//! The applier against the real kernel, each test in private network namespaces: what it
//! programs lists exactly like `nft -f` of the rendered text, incremental updates touch only
//! what changed, drift is repaired, verdict-map dispatch really filters packets, and a large
//! ruleset applies fast (timings printed, not asserted).

mod nft_example;

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use agent::nft::ir::{
    proto, Action, BaseChain, Chain, CtStates, Dir, Elem, Family, Hook, IfPrefix, KeyType,
    MapVerdict, Match, Ports, Rule, Ruleset, Set, VerdictMap, VmapKey,
};
use agent::nft::{render_replace, Applier, ApplyError};
use nft_example::{established, ifname, name, net, rich, tcp_dport};
use serde_json::Value;
use testkit::Netns;

/// An applier whose socket lives in `ns`.
fn applier_in(ns: &Netns) -> Applier {
    ns.enter(|| Applier::new().expect("open applier"))
}

fn nft_ok(ns: &Netns, args: &[&str]) -> String {
    let out = ns.run("nft", args);
    assert!(out.status.success(), "nft {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nft_load(ns: &Netns, text: &str) {
    let mut child = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("nft finishes");
    assert!(out.status.success(), "nft -f failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn strip_handles(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("handle");
            map.values_mut().for_each(strip_handles);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_handles),
        _ => {}
    }
}

/// `nft -j list table inet <table>` without handles and metainfo, in a canonical order:
/// objects sorted (the kernel lists them in creation order, which differs between an
/// incremental history and one `nft -f`), then rules grouped by chain in chain order.
fn listing(ns: &Netns, table: &str) -> Vec<Value> {
    let text = nft_ok(ns, &["-j", "list", "table", "inet", table]);
    let mut v: Value = serde_json::from_str(&text).expect("nft JSON");
    strip_handles(&mut v);
    let items = v["nftables"].as_array().expect("nftables array");
    let mut objects: Vec<Value> = items
        .iter()
        .filter(|i| i.get("metainfo").is_none() && i.get("rule").is_none())
        .cloned()
        .collect();
    objects.sort_by_key(|o| serde_json::to_string(o).unwrap_or_default());
    let mut rules: Vec<Value> = items.iter().filter(|i| i.get("rule").is_some()).cloned().collect();
    rules.sort_by_key(|r| r["rule"]["chain"].as_str().unwrap_or_default().to_string());
    objects.extend(rules);
    objects
}

/// What `nft -f` makes of the rendered ruleset, listed, in a fresh namespace.
fn reference_listing(rs: &Ruleset) -> Vec<Value> {
    let ns = Netns::new("ref");
    nft_load(&ns, &render_replace(rs));
    listing(&ns, rs.table().as_str())
}

fn assert_same_listing(actual: &[Value], expected: &[Value]) {
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(
            a,
            e,
            "item {i} differs:\n applied: {}\n nft -f:  {}",
            serde_json::to_string(a).unwrap_or_default(),
            serde_json::to_string(e).unwrap_or_default()
        );
    }
    assert_eq!(actual.len(), expected.len(), "different number of objects");
}

/// The kernel holds exactly what `nft -f` of the rendered ruleset would give.
fn assert_kernel_holds(ns: &Netns, rs: &Ruleset) {
    assert_same_listing(&listing(ns, rs.table().as_str()), &reference_listing(rs));
}

#[test]
fn rich_ruleset_lists_exactly_like_nft_loading_its_text() {
    testkit::require_root();
    let ns = Netns::new("rich");
    let mut applier = applier_in(&ns);
    let rs = rich("tabby");
    let stats = applier.apply(&rs).expect("apply");
    assert!(stats.full_replace);
    assert_eq!(stats.chains_written, rs.chains().len());
    assert!(stats.messages > rs.rule_count());
    assert_kernel_holds(&ns, &rs);
    println!("rich ruleset: {stats:?}");

    // Nothing changed: nothing sent.
    let again = applier.apply(&rs).expect("apply again");
    assert_eq!(again.messages, 0);
    assert!(!again.full_replace);
}

#[test]
fn one_changed_chain_is_all_that_is_written() {
    testkit::require_root();
    let ns = Netns::new("incr");
    let mut applier = applier_in(&ns);
    let mut rs = rich("tabby");
    applier.apply(&rs).expect("first apply");

    rs.chain_mut("pri-web").expect("chain").push(tcp_dport(8443).counter().then(Action::Accept));
    let stats = applier.apply(&rs).expect("incremental apply");
    assert!(!stats.full_replace);
    assert_eq!(stats.chains_written, 1);
    assert_eq!((stats.set_elements_added, stats.set_elements_removed), (0, 0));
    // One flush and the chain's five rules.
    assert_eq!(stats.messages, 1 + rs.chain("pri-web").expect("chain").rules().len());
    let chain = nft_ok(&ns, &["list", "chain", "inet", "tabby", "pri-web"]);
    assert!(chain.contains("tcp dport 8443 counter packets 0 bytes 0 accept"), "{chain}");
    assert_kernel_holds(&ns, &rs);
}

#[test]
fn set_and_map_elements_change_incrementally() {
    testkit::require_root();
    let ns = Netns::new("elems");
    let mut applier = applier_in(&ns);
    let mut rs = rich("tabby");
    applier.apply(&rs).expect("first apply");

    // Plain set: one in, one out.
    let web = rs.set_mut("sel-web").expect("set");
    web.remove(&Elem::addr("10.65.0.1".parse().expect("ip")));
    web.insert(Elem::addr("10.65.0.9".parse().expect("ip"))).expect("insert");
    // Interval set: a new range, and one that swallows an old one.
    let pools = rs.set_mut("all-pools").expect("set");
    pools.insert(Elem::net(net("192.168.0.0/24"))).expect("insert");
    pools.insert(Elem::net(net("10.64.0.0/14"))).expect("insert");
    // Empty set gets its first element.
    rs.set_mut("sel-db_users")
        .expect("set")
        .insert(Elem::addr("10.65.0.2".parse().expect("ip")))
        .expect("insert");
    // Map: a verdict changes, an entry goes, an entry comes.
    let to_wl = rs.map_mut("to_wl").expect("map");
    to_wl.insert(Elem::Ifname(ifname("cali1")), MapVerdict::Drop).expect("insert");
    to_wl.remove(&Elem::Ifname(ifname("cali-down")));
    to_wl.insert(Elem::Ifname(ifname("cali3")), MapVerdict::Accept).expect("insert");

    let stats = applier.apply(&rs).expect("incremental apply");
    assert!(!stats.full_replace);
    assert_eq!(stats.chains_written, 0);
    // Added: sel-web 1, all-pools 2 (192.168.0.0/24 and 10.64.0.0/14, which swallows both
    // old ranges), sel-db_users 1, to_wl 2 (cali1's new verdict, cali3). Removed: sel-web 1,
    // all-pools 2, to_wl 2 (cali1's old verdict, cali-down).
    assert_eq!((stats.set_elements_added, stats.set_elements_removed), (6, 5), "{stats:?}");
    assert_kernel_holds(&ns, &rs);

    // Interval set emptied and refilled (its shared zero element must not get in the way).
    let pools = rs.set_mut("all-pools").expect("set");
    let all: Vec<Elem> = pools.elems().iter().cloned().collect();
    for e in &all {
        pools.remove(e);
    }
    applier.apply(&rs).expect("empty the interval set");
    assert_kernel_holds(&ns, &rs);
    rs.set_mut("all-pools").expect("set").insert(Elem::net(net("172.16.0.0/12"))).expect("insert");
    let stats = applier.apply(&rs).expect("refill the interval set");
    assert!(!stats.full_replace);
    assert_kernel_holds(&ns, &rs);
}

#[test]
fn chains_sets_and_maps_come_and_go_in_one_transaction() {
    testkit::require_root();
    let ns = Netns::new("struct");
    let mut applier = applier_in(&ns);
    let mut rs = rich("tabby");
    applier.apply(&rs).expect("first apply");

    // Remove endpoint cali2 entirely: its chains (referenced from both maps) and a set used
    // only by a rule that is rewritten away; add a new endpoint chain and a new set.
    rs.remove_chain("fw-cali2");
    rs.remove_chain("tw-cali2");
    rs.map_mut("from_wl").expect("map").remove(&Elem::Ifname(ifname("cali2")));
    rs.map_mut("to_wl").expect("map").remove(&Elem::Ifname(ifname("cali2")));
    let pri = rs.chain_mut("pri-web").expect("chain");
    pri.rules_mut().pop();
    rs.remove_set("sel-web6");
    let sel = Set::new(name("sel-new"), KeyType::Ipv4Addr)
        .with([Elem::addr("10.65.0.7".parse().expect("ip"))])
        .expect("set");
    rs.add_set(sel).expect("new set");
    rs.add_chain(
        Chain::regular(name("tw-cali7"))
            .rule(established())
            .rule(
                Rule::new()
                    .with(Match::addr_in(Family::V4, Dir::Src, name("sel-new")))
                    .then(Action::Accept),
            )
            .rule(Rule::action(Action::Drop)),
    )
    .expect("chain");
    rs.map_mut("to_wl")
        .expect("map")
        .insert(Elem::Ifname(ifname("cali7")), MapVerdict::Goto(name("tw-cali7")))
        .expect("insert");
    let mut newmap = VerdictMap::new(name("extra_map"), KeyType::Ifname);
    newmap
        .insert(Elem::Ifname(ifname("cali7")), MapVerdict::Jump(name("tw-cali7")))
        .expect("insert");
    rs.add_map(newmap).expect("map");

    let stats = applier.apply(&rs).expect("incremental apply");
    assert!(!stats.full_replace, "{stats:?}");
    assert_eq!(stats.chains_written, 2, "pri-web rewritten and tw-cali7 new: {stats:?}");
    assert_kernel_holds(&ns, &rs);

    // And back: the removed map goes before its chain can be deleted.
    rs.remove_map("extra_map");
    rs.map_mut("to_wl").expect("map").remove(&Elem::Ifname(ifname("cali7")));
    rs.remove_chain("tw-cali7");
    let stats = applier.apply(&rs).expect("second incremental apply");
    assert!(!stats.full_replace);
    assert_kernel_holds(&ns, &rs);
}

#[test]
fn a_hand_deleted_table_is_restored() {
    testkit::require_root();
    let ns = Netns::new("drift");
    let mut applier = applier_in(&ns);
    let rs = rich("tabby");
    applier.apply(&rs).expect("first apply");
    assert!(!applier.drift_suspected().expect("generation"));

    nft_ok(&ns, &["delete", "table", "inet", "tabby"]);
    assert!(applier.drift_suspected().expect("generation"));
    let stats = applier.resync(&rs).expect("resync");
    assert!(stats.full_replace);
    assert_kernel_holds(&ns, &rs);
    assert!(!applier.drift_suspected().expect("generation"));

    // A change by hand inside the table, then a plain apply: noticed and repaired too.
    nft_ok(&ns, &["add", "rule", "inet", "tabby", "pri-web", "accept"]);
    let stats = applier.apply(&rs).expect("apply after drift");
    assert!(stats.full_replace);
    assert_kernel_holds(&ns, &rs);

    // Someone else's table in the namespace is left alone.
    nft_ok(&ns, &["add", "table", "inet", "someone_else"]);
    applier.resync(&rs).expect("resync");
    nft_ok(&ns, &["list", "table", "inet", "someone_else"]);
}

#[test]
fn a_renamed_table_replaces_the_old_one() {
    testkit::require_root();
    let ns = Netns::new("rename");
    let mut applier = applier_in(&ns);
    applier.apply(&rich("tabby")).expect("first apply");
    let renamed = rich("tabby_v2");
    let stats = applier.apply(&renamed).expect("apply under the new name");
    assert!(stats.full_replace);
    let tables = nft_ok(&ns, &["list", "tables"]);
    assert_eq!(tables.trim(), "table inet tabby_v2");
    assert_kernel_holds(&ns, &renamed);
}

#[test]
fn a_rejected_transaction_names_the_rule_and_changes_nothing() {
    testkit::require_root();
    let ns = Netns::new("reject");
    let mut applier = applier_in(&ns);
    let good = rich("tabby");
    applier.apply(&good).expect("first apply");

    // Masquerade is only valid in nat chains: the kernel refuses the rule.
    let mut bad = good.clone();
    bad.chain_mut("forward")
        .expect("chain")
        .push(Rule::action(Action::Masquerade { fully_random: false }));
    let err = applier.apply(&bad).expect_err("the kernel must refuse masquerade in a filter chain");
    let text = err.to_string();
    println!("rejection: {text}");
    assert!(matches!(err, ApplyError::Rejected { .. }), "{err:?}");
    assert!(text.contains("add rule 5 of chain forward"), "{text}");
    assert!(err.is_retryable(), "an incremental failure is retried as a full replace");
    assert_kernel_holds(&ns, &good);

    // The retry is a full replace, which fails for good.
    let err = applier.apply(&bad).expect_err("still refused");
    assert!(!err.is_retryable(), "{err}");
    assert_kernel_holds(&ns, &good);
    // And a good ruleset applies again.
    assert!(applier.apply(&good).expect("recover").full_replace);
}

/// Router namespace with two workloads behind `cali` veths, as on a tabby host.
struct Topology {
    router: Netns,
    w1: Netns,
    w2: Netns,
}

fn topology() -> Topology {
    let t = Topology { router: Netns::new("router"), w1: Netns::new("w1"), w2: Netns::new("w2") };
    for (w, iface, subnet) in [(&t.w1, "caliA", "10.91.1"), (&t.w2, "caliB", "10.91.2")] {
        t.router.ip_ok([
            "link",
            "add",
            iface,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            w.name(),
        ]);
        t.router.ip_ok(["addr", "add", &format!("{subnet}.1/24"), "dev", iface]);
        t.router.ip_ok(["link", "set", iface, "up"]);
        w.ip_ok(["addr", "add", &format!("{subnet}.2/24"), "dev", "eth0"]);
        w.ip_ok(["link", "set", "eth0", "up"]);
        w.ip_ok(["route", "add", "default", "via", &format!("{subnet}.1")]);
    }
    t.router.sh_ok("sysctl -qw net.ipv4.ip_forward=1");
    t
}

fn pings(from: &Netns, to: &str) -> bool {
    from.run("busybox", ["ping", "-c", "1", "-W", "1", to]).status.success()
}

fn connects(from: &Netns, to: &str) -> bool {
    let addr: SocketAddr = to.parse().expect("socket address");
    from.enter(|| TcpStream::connect_timeout(&addr, Duration::from_millis(800)).is_ok())
}

/// forward → dispatch by verdict map → per-endpoint chains; W2 accepts ICMP and TCP 8080.
fn dispatch_ruleset() -> Ruleset {
    let mut rs = Ruleset::new(name("tabby"));
    let cali = || IfPrefix::new("cali").expect("prefix");
    rs.add_chain(
        Chain::base(name("forward"), BaseChain::filter(Hook::Forward))
            .rule(established())
            .rule(Rule::new().with(Match::CtState(CtStates::INVALID)).then(Action::Drop))
            .rule(
                Rule::new().with(Match::iifname_prefix(cali())).then(Action::Jump(name("from-wl"))),
            )
            .rule(
                Rule::new().with(Match::oifname_prefix(cali())).then(Action::Jump(name("to-wl"))),
            ),
    )
    .expect("chain");
    for (chain, key, map) in
        [("from-wl", VmapKey::Iifname, "from_wl"), ("to-wl", VmapKey::Oifname, "to_wl")]
    {
        rs.add_chain(
            Chain::regular(name(chain))
                .rule(Rule::action(Action::Vmap { key, map: name(map) }))
                .rule(Rule::new().counter().then(Action::Drop)),
        )
        .expect("chain");
    }
    rs.add_chain(Chain::regular(name("fw-a")).rule(Rule::action(Action::Return))).expect("chain");
    rs.add_chain(Chain::regular(name("fw-b")).rule(Rule::action(Action::Return))).expect("chain");
    rs.add_chain(Chain::regular(name("tw-a")).rule(Rule::action(Action::Drop))).expect("chain");
    rs.add_chain(
        Chain::regular(name("tw-b"))
            .rule(Rule::new().with(Match::l4proto(proto::ICMP)).then(Action::Accept))
            .rule(
                Rule::new()
                    .with(Match::l4proto(proto::TCP))
                    .with(Match::dport(Ports::one(8080)))
                    .then(Action::Accept),
            )
            .rule(Rule::action(Action::Drop)),
    )
    .expect("chain");
    let from_wl = VerdictMap::new(name("from_wl"), KeyType::Ifname)
        .with([
            (Elem::Ifname(ifname("caliA")), MapVerdict::Goto(name("fw-a"))),
            (Elem::Ifname(ifname("caliB")), MapVerdict::Goto(name("fw-b"))),
        ])
        .expect("map");
    let to_wl = VerdictMap::new(name("to_wl"), KeyType::Ifname)
        .with([
            (Elem::Ifname(ifname("caliA")), MapVerdict::Goto(name("tw-a"))),
            (Elem::Ifname(ifname("caliB")), MapVerdict::Goto(name("tw-b"))),
        ])
        .expect("map");
    rs.add_map(from_wl).expect("map");
    rs.add_map(to_wl).expect("map");
    rs
}

#[test]
fn verdict_map_dispatch_filters_real_packets() {
    testkit::require_root();
    let t = topology();
    // Before any rules everything flows (the test would prove nothing otherwise).
    assert!(pings(&t.w2, "10.91.1.2"), "no connectivity without rules");

    let listeners: Vec<TcpListener> = t.w2.enter(|| {
        ["10.91.2.2:8080", "10.91.2.2:9090"]
            .iter()
            .map(|a| TcpListener::bind(a).expect("listen"))
            .collect()
    });
    let mut applier = applier_in(&t.router);
    let mut rs = dispatch_ruleset();
    applier.apply(&rs).expect("apply");

    assert!(pings(&t.w1, "10.91.2.2"), "tw-b accepts ICMP from W1");
    assert!(!pings(&t.w2, "10.91.1.2"), "tw-a drops everything to W1");
    assert!(connects(&t.w1, "10.91.2.2:8080"), "tw-b accepts tcp 8080");
    assert!(!connects(&t.w1, "10.91.2.2:9090"), "tw-b drops tcp 9090");

    // Incremental: W2 stops accepting ICMP.
    rs.chain_mut("tw-b").expect("chain").rules_mut().remove(0);
    let stats = applier.apply(&rs).expect("incremental apply");
    assert_eq!((stats.chains_written, stats.full_replace), (1, false));
    assert!(!pings(&t.w1, "10.91.2.2"), "ICMP now dropped");
    assert!(connects(&t.w1, "10.91.2.2:8080"), "tcp 8080 still accepted");

    // W2's interface leaves the map: an unknown cali interface is dropped (fail closed).
    rs.map_mut("to_wl").expect("map").remove(&Elem::Ifname(ifname("caliB")));
    applier.apply(&rs).expect("map element removed");
    assert!(!connects(&t.w1, "10.91.2.2:8080"), "unknown interface must drop");
    rs.map_mut("to_wl")
        .expect("map")
        .insert(Elem::Ifname(ifname("caliB")), MapVerdict::Goto(name("tw-b")))
        .expect("insert");
    let stats = applier.apply(&rs).expect("map element back");
    assert_eq!((stats.set_elements_added, stats.messages), (1, 1));
    assert!(connects(&t.w1, "10.91.2.2:8080"), "dispatch restored");
    drop(listeners);
}

/// Cold start at scale: a 10,000-address set and 500 endpoint chains, then one-chain changes.
#[test]
fn large_ruleset_applies_fast() {
    testkit::require_root();
    let ns = Netns::new("large");
    let mut applier = applier_in(&ns);

    let build = || {
        let mut rs = Ruleset::new(name("tabby"));
        let mut big = Set::new(name("sel-big"), KeyType::Ipv4Addr);
        for i in 0..10_000u32 {
            big.insert(Elem::addr(std::net::Ipv4Addr::from(0x0a40_0000 + i).into()))
                .expect("insert");
        }
        rs.add_set(big).expect("set");
        let mut to_wl = VerdictMap::new(name("to_wl"), KeyType::Ifname);
        for i in 0..250 {
            let tw = name(&format!("tw-cali{i:05}"));
            let fw = name(&format!("fw-cali{i:05}"));
            to_wl
                .insert(Elem::Ifname(ifname(&format!("cali{i:05}"))), MapVerdict::Goto(tw.clone()))
                .expect("insert");
            rs.add_chain(
                Chain::regular(tw)
                    .rule(established())
                    .rule(
                        Rule::new()
                            .with(Match::addr_in(Family::V4, Dir::Src, name("sel-big")))
                            .then(Action::Accept),
                    )
                    .rule(tcp_dport(80).then(Action::Accept))
                    .rule(
                        Rule::new()
                            .with(Match::saddr(net("10.70.0.0/16")))
                            .with(Match::IcmpType { family: Family::V4, neg: false, value: 8 })
                            .then(Action::Drop),
                    )
                    .rule(Rule::new().counter().then(Action::Drop)),
            )
            .expect("chain");
            rs.add_chain(
                Chain::regular(fw)
                    .rule(established())
                    .rule(
                        Rule::new()
                            .with(
                                Match::saddr(net(&format!("10.65.{}.{}/32", i / 200, i % 200)))
                                    .negated()
                                    .expect("neg"),
                            )
                            .then(Action::Drop),
                    )
                    .rule(Rule::action(Action::Return)),
            )
            .expect("chain");
        }
        rs.add_map(to_wl).expect("map");
        rs.add_chain(
            Chain::base(name("forward"), BaseChain::filter(Hook::Forward)).rule(
                Rule::new()
                    .with(Match::oifname_prefix(IfPrefix::new("cali").expect("prefix")))
                    .then(Action::Vmap { key: VmapKey::Oifname, map: name("to_wl") }),
            ),
        )
        .expect("chain");
        rs
    };
    let t0 = Instant::now();
    let mut rs = build();
    let built = t0.elapsed();
    let stats = applier.apply(&rs).expect("cold apply");
    println!(
        "cold start: build {built:?}, apply {:?} ({} chains, {} rules, {} messages, {} KiB)",
        stats.duration,
        rs.chains().len(),
        rs.rule_count(),
        stats.messages,
        stats.bytes / 1024
    );
    let elems = nft_ok(&ns, &["-j", "list", "set", "inet", "tabby", "sel-big"]);
    let v: Value = serde_json::from_str(&elems).expect("json");
    let count = v["nftables"][1]["set"]["elem"].as_array().map_or(0, Vec::len);
    assert_eq!(count, 10_000);

    let mut times = Vec::new();
    for i in 0..100u16 {
        let chain = rs.chain_mut("tw-cali00042").expect("chain");
        chain.rules_mut()[2] = tcp_dport(1000 + i).then(Action::Accept);
        let started = Instant::now();
        let stats = applier.apply(&rs).expect("incremental apply");
        times.push(started.elapsed());
        assert!(!stats.full_replace && stats.chains_written == 1);
    }
    times.sort();
    println!("one changed chain: p50 {:?}, p99 {:?}", times[49], times[98]);

    let mut elem_times = Vec::new();
    for i in 0..100u32 {
        rs.set_mut("sel-big")
            .expect("set")
            .insert(Elem::addr(std::net::Ipv4Addr::from(0x0b00_0000 + i).into()))
            .expect("insert");
        let started = Instant::now();
        let stats = applier.apply(&rs).expect("element apply");
        elem_times.push(started.elapsed());
        assert_eq!(stats.set_elements_added, 1);
    }
    elem_times.sort();
    println!("one added set element: p50 {:?}, p99 {:?}", elem_times[49], elem_times[98]);

    let stats = applier.resync(&rs).expect("resync");
    println!("full resync: {:?}", stats.duration);
}
