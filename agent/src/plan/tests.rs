//! Unit tests of the planner: selector membership with inherited labels, policy order,
//! family splitting, active-only chains, name limits. Whole-table layouts are covered by the
//! golden files (`tests/plan_golden.rs`).

// Fixture builders take `json!` literals by value, which reads best at the call sites.
#![allow(clippy::needless_pass_by_value)]

use datastore::client::Kv;
use datastore::keys::KeyLayout;
use datastore::model::parse_resource;
use datastore::selector::Selector;
use serde_json::{json, Value};

use super::*;
use crate::nft::render::render_rule;

fn model(resources: &[Value]) -> ClusterModel {
    let layout = KeyLayout::new("/calico");
    let kvs: Vec<Kv> = resources
        .iter()
        .map(|v| {
            let bytes = serde_json::to_vec(v).expect("json");
            let r = parse_resource(&bytes).expect("resource");
            let key = layout.resource(r.kind(), r.namespace(), r.name());
            Kv { key, value: bytes, mod_revision: 1, create_revision: 1, version: 1 }
        })
        .collect();
    let model = ClusterModel::from_kvs(layout, &kvs, 1);
    assert!(model.invalid().is_empty(), "{:?}", model.invalid());
    model
}

fn wep(node: &str, id: &str, ips: &[&str], profiles: &[&str], labels: Value) -> Value {
    json!({
        "kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": format!("{node}-cni-{id}-eth0"), "namespace": "default", "labels": labels},
        "spec": {"orchestrator": "cni", "node": node, "containerID": id, "endpoint": "eth0",
                 "ipNetworks": ips, "profiles": profiles, "interfaceName": format!("cali{id}")}
    })
}

fn profile(name: &str, spec: Value) -> Value {
    json!({"kind": "Profile", "apiVersion": "projectcalico.org/v3", "metadata": {"name": name}, "spec": spec})
}

fn gnp(name: &str, spec: Value) -> Value {
    json!({"kind": "GlobalNetworkPolicy", "apiVersion": "projectcalico.org/v3", "metadata": {"name": name}, "spec": spec})
}

fn run(resources: &[Value]) -> Plan {
    let model = model(resources);
    let plan = plan(&model, &HostInfo::new("h1"), &PlanConfig::new("tabby").expect("config"));
    plan.ruleset.validate().expect("valid ruleset");
    plan
}

/// The rules of `chain`, as nft text.
fn chain_rules(plan: &Plan, chain: &str) -> Vec<String> {
    plan.ruleset
        .chain(chain)
        .unwrap_or_else(|| panic!("no chain {chain}"))
        .rules()
        .iter()
        .map(render_rule)
        .collect()
}

/// The elements of the set a rule of `chain` names, as text.
fn set_of_rule(plan: &Plan, rule: &str) -> Vec<String> {
    let at = rule.find('@').expect("rule names a set");
    let name: String = rule[at + 1..].chars().take_while(|c| !c.is_whitespace()).collect();
    let set = plan.ruleset.set(&name).unwrap_or_else(|| panic!("no set {name}"));
    set.elems().iter().map(|e| format!("{e:?}")).collect()
}

#[test]
fn selector_sets_see_labels_inherited_from_profiles() {
    let plan = run(&[
        // The first profile naming a key wins; the endpoint's own label beats both.
        profile("first", json!({"labelsToApply": {"tier": "gold", "db-users": ""}})),
        profile("second", json!({"labelsToApply": {"tier": "silver"}})),
        profile(
            "guard",
            json!({"ingress": [
                {"action": "Allow", "source": {"selector": "tier == 'gold'"}},
                {"action": "Allow", "source": {"selector": "has(db-users)"}},
            ]}),
        ),
        wep("h1", "local", &["10.0.0.1/32"], &["guard"], json!({})),
        wep("h2", "a", &["10.0.1.1/32"], &["first", "second"], json!({})),
        wep("h2", "b", &["10.0.1.2/32"], &["second", "first"], json!({})),
        wep("h2", "c", &["10.0.1.3/32"], &["first"], json!({"tier": "bronze"})),
        wep("h3", "d", &["10.0.2.1/32"], &["missing"], json!({"db-users": "yes"})),
    ]);
    let rules = chain_rules(&plan, "pri-guard");
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(set_of_rule(&plan, &rules[0]), ["V4(10.0.1.1/32)"], "tier == gold");
    assert_eq!(
        set_of_rule(&plan, &rules[1]),
        ["V4(10.0.1.1/32)", "V4(10.0.1.2/32)", "V4(10.0.1.3/32)", "V4(10.0.2.1/32)"],
        "has(db-users), from profiles or own labels, on any host"
    );
}

#[test]
fn policies_apply_in_order_then_name_and_unordered_last() {
    let mut resources = vec![wep("h1", "x", &["10.0.0.1/32"], &[], json!({"app": "x"}))];
    for (name, order) in [
        ("none", None),
        ("five", Some(5.0)),
        ("b-one", Some(1.0)),
        ("a-one", Some(1.0)),
        ("neg", Some(-2.5)),
    ] {
        let mut spec = json!({"selector": "app == 'x'", "types": ["Ingress"], "ingress": [{"action": "Allow"}]});
        if let Some(o) = order {
            spec["order"] = json!(o);
        }
        resources.push(gnp(name, spec));
    }
    resources.push(gnp(
        "elsewhere",
        json!({"order": 0, "selector": "app == 'y'", "ingress": [{"action": "Allow"}]}),
    ));
    let plan = run(&resources);
    assert_eq!(
        chain_rules(&plan, "tw-calix")[2..],
        [
            "jump pi-neg",
            "jump pi-a-one",
            "jump pi-b-one",
            "jump pi-five",
            "jump pi-none",
            "counter drop comment \"no policy accepted the packet\""
        ]
    );
    // A policy selecting no local endpoint is not active: no chain.
    assert!(plan.ruleset.chain("pi-elsewhere").is_none());
    // Ingress-only policies leave egress to the profiles (none here: drop).
    assert_eq!(
        chain_rules(&plan, "fw-calix").last().map(String::as_str),
        Some("counter drop comment \"no profile accepted the packet\"")
    );
}

#[test]
fn selector_rules_split_per_family_and_keep_their_family() {
    let plan = run(&[
        profile(
            "p",
            json!({"ingress": [
                {"action": "Allow", "protocol": "TCP", "source": {"selector": "has(peer)"}},
                {"action": "Allow", "ipVersion": 6, "source": {"selector": "has(peer)"}},
                {"action": "Deny", "source": {"notSelector": "has(peer)"}},
                {"action": "Allow", "source": {"selector": "has(nobody)"}},
            ]}),
        ),
        wep("h1", "l", &["10.0.0.1/32"], &["p"], json!({})),
        wep("h2", "peer", &["10.0.1.1/32", "fd00::1/128"], &[], json!({"peer": ""})),
        wep("h2", "peer4", &["10.0.1.2/32"], &[], json!({"peer": ""})),
    ]);
    let rules = chain_rules(&plan, "pri-p");
    let v4 = rules[0].split('@').nth(1).and_then(|s| s.split(' ').next()).expect("set");
    let hash = v4.trim_start_matches("s4-");
    assert_eq!(
        rules,
        [
            format!("meta l4proto tcp ip saddr @s4-{hash} accept"),
            format!("meta l4proto tcp ip6 saddr @s6-{hash} accept"),
            format!("ip6 saddr @s6-{hash} accept"),
            format!("ip saddr != @s4-{hash} drop"),
            format!("ip6 saddr != @s6-{hash} drop"),
        ],
        "a selector that picks nobody makes no rule"
    );
    assert_eq!(set_of_rule(&plan, &rules[1]), ["V6(fd00::1/128)"]);
}

#[test]
fn an_empty_negated_set_keeps_the_rule_in_its_family() {
    let plan = run(&[
        profile(
            "p",
            json!({"ingress": [{"action": "Deny", "source": {"notSelector": "has(peer)"}}]}),
        ),
        wep("h1", "l", &["10.0.0.1/32"], &["p"], json!({})),
        wep("h2", "peer", &["10.0.1.1/32"], &[], json!({"peer": ""})),
    ]);
    let rules = chain_rules(&plan, "pri-p");
    assert_eq!(rules.len(), 2);
    assert!(rules[0].starts_with("ip saddr != @s4-"), "{rules:?}");
    // No IPv6 peer: every IPv6 source is "not a peer", but only IPv6 ones.
    assert_eq!(rules[1], "meta nfproto ipv6 drop");
}

#[test]
fn only_profiles_of_local_endpoints_get_chains_and_long_names_are_cut() {
    let long = format!("p{}", "x".repeat(120));
    let plan = run(&[
        profile(&long, json!({"egress": [{"action": "Allow"}]})),
        profile("remote-only", json!({"egress": [{"action": "Allow"}]})),
        wep("h1", "l", &["10.0.0.1/32"], &[&long], json!({})),
        wep("h2", "r", &["10.0.1.1/32"], &["remote-only"], json!({})),
    ]);
    assert!(plan.ruleset.chains().all(|c| c.name().as_str().len() <= names::MAX_NAME_LEN));
    assert!(plan.ruleset.chains().all(|c| !c.name().as_str().contains("remote-only")));
    let fw = chain_rules(&plan, "fw-calil");
    let jump = fw.iter().find(|r| r.starts_with("jump pro-")).expect("jump to the profile");
    assert!(jump.starts_with("jump pro-pxxx"), "{jump}");
    assert_eq!(plan.ruleset.map("from-wl").map(|m| m.elems().len()), Some(1));
    assert_eq!(plan.local_endpoints, 1);
}

#[test]
fn unenforceable_rules_are_left_out_with_a_warning() {
    let plan = run(&[
        profile(
            "p",
            json!({"ingress": [
                {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["http"]}},
                {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["http", 8080]}},
                {"action": "Allow", "http": {"methods": ["GET"]}},
            ]}),
        ),
        wep("h1", "l", &["10.0.0.1/32"], &["p"], json!({})),
    ]);
    assert_eq!(chain_rules(&plan, "pri-p"), ["meta l4proto tcp th dport 8080 accept"]);
    let text: Vec<String> = plan.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 3, "{text:?}");
    assert!(text.iter().any(|w| w.contains("ingress[2]") && w.contains("HTTP")), "{text:?}");
}

#[test]
fn endpoints_sharing_an_interface_are_reported_and_only_one_is_programmed() {
    let mut second = wep("h1", "y", &["10.0.0.2/32"], &[], json!({}));
    second["spec"]["interfaceName"] = json!("calix");
    let plan = run(&[wep("h1", "x", &["10.0.0.1/32"], &[], json!({})), second]);
    assert_eq!(plan.local_endpoints, 1);
    assert!(plan.warnings.iter().any(|w| w.message.contains("calix already belongs")));
    assert_eq!(chain_rules(&plan, "fw-calix")[2], "ip saddr != 10.0.0.1 drop");
}

#[test]
fn indexed_selectors_agree_with_evaluating_every_endpoint() {
    let model = model(&[
        profile("px", json!({"labelsToApply": {"a": "x", "b": ""}})),
        profile("py", json!({"labelsToApply": {"a": "y"}})),
        wep("h1", "e1", &["10.0.0.1/32"], &["px"], json!({})),
        wep("h1", "e2", &["10.0.0.2/32"], &["px"], json!({"a": "z"})),
        wep("h2", "e3", &["10.0.0.3/32", "fd00::3/128"], &["py", "px"], json!({})),
        wep("h2", "e4", &["10.0.0.4/32"], &[], json!({"b": "y", "c": "has.a"})),
        wep("h3", "e5", &["10.0.0.5/32"], &["missing"], json!({"a": "x"})),
    ]);
    let mut index = index::Index::new(&model);
    let texts = [
        "has(a)",
        "a == 'x'",
        "a == 'y'",
        "a == 'z'",
        "has(b)",
        "b == ''",
        "has(nope)",
        "a == 'x' && has(b)",
        "!has(a)",
        "a != 'x'",
        "has(a) || b == 'y'",
        "all()",
        "c == 'has.a'",
        "a in {'x', 'z'}",
        "a == 'x' && b == 'y'",
        "has(a) && a == 'x'",
        "a == 'x' || a == 'y'",
        "has(a) && has(b)",
    ];
    for text in texts {
        let selector = Selector::parse(text).expect("selector");
        let mut want: Vec<std::net::IpAddr> = index
            .endpoints
            .iter()
            .filter(|ep| index.selects(&selector, ep))
            .flat_map(|ep| ep.wep.spec.ip_networks.iter().map(ipnet::IpNet::addr))
            .collect();
        want.sort_unstable();
        let canonical = selector.to_string();
        let got = index.members(index::Scope::Cluster, &selector, &canonical);
        let mut got: Vec<std::net::IpAddr> = got
            .v4
            .iter()
            .map(|a| std::net::IpAddr::V4(*a))
            .chain(got.v6.iter().map(|a| std::net::IpAddr::V6(*a)))
            .collect();
        got.sort_unstable();
        assert_eq!(got, want, "{text}");
    }
    // Own labels beat inherited ones and the first profile wins: spot-check the answers.
    let s = Selector::parse("a == 'x'").expect("selector");
    let x = index.members(index::Scope::Cluster, &s, &s.to_string());
    assert_eq!(x.v4.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.0.0.1", "10.0.0.5"]);
}

#[test]
fn pass_in_a_profile_hands_over_to_the_next_profile() {
    let plan = run(&[
        profile(
            "first",
            json!({"ingress": [
                {"action": "Pass", "protocol": "TCP"},
                {"action": "Allow"},
            ]}),
        ),
        profile("second", json!({"ingress": [{"action": "Allow", "protocol": "UDP"}]})),
        wep("h1", "l", &["10.0.0.1/32"], &["first", "second"], json!({})),
    ]);
    assert_eq!(chain_rules(&plan, "pri-first"), ["meta l4proto tcp return", "accept"]);
    assert!(plan.ruleset.map("to-wl-pass").is_none(), "profiles need no pass map");
}

/// A watch event putting `resource` at its key.
fn put(model: &mut ClusterModel, resource: &Value) {
    let bytes = serde_json::to_vec(resource).expect("json");
    let r = parse_resource(&bytes).expect("resource");
    let key = model.layout().resource(r.kind(), r.namespace(), r.name());
    let kv = Kv { key, value: bytes, mod_revision: 2, create_revision: 2, version: 1 };
    assert!(
        model.apply(crate::model::WatchSource::Resources, datastore::watch::WatchEvent::Put(kv))
    );
}

#[test]
fn plans_through_the_cache_equal_fresh_plans_and_keep_unchanged_sets() {
    let host = HostInfo::new("h1");
    let config = PlanConfig::new("tabby").expect("config");
    let rules = |port: u16| {
        json!({"labelsToApply": {"role": "web"}, "ingress": [
            {"action": "Allow", "source": {"selector": "role == 'db'"}},
            {"action": "Allow", "protocol": "TCP", "destination": {"ports": [port]},
             "source": {"selector": "has(tier)", "nets": ["10.9.0.0/16"]}},
        ]})
    };
    let mut model = model(&[
        profile("web", rules(80)),
        profile("db", json!({"labelsToApply": {"role": "db"}})),
        wep("h1", "a", &["10.0.0.1/32"], &["web"], json!({})),
        wep("h2", "b", &["10.0.0.2/32"], &["db"], json!({"tier": "x"})),
    ]);
    let mut cache = PlanCache::default();
    let mut last = plan_with_cache(&model, &host, &config, &mut cache);
    assert_eq!(last.ruleset, plan(&model, &host, &config).ruleset);
    let sets_of = |p: &Plan| p.ruleset.sets().cloned().collect::<Vec<_>>();
    let members = |p: &Plan, rule: usize| set_of_rule(p, &chain_rules(p, "pri-web")[rule]);
    assert_eq!(members(&last, 0), ["V4(10.0.0.2/32)"]);

    // Each step: the cached plan is the fresh plan; `kept` says whether every set of the
    // last plan comes back sharing its elements.
    let steps: Vec<(Value, bool)> = vec![
        // A rule change: selectors see nothing new.
        (profile("web", rules(8080)), true),
        // An endpoint's own label.
        (wep("h2", "c", &["10.0.0.3/32"], &["web"], json!({"tier": "y"})), false),
        // A profile's labelsToApply: `role == 'db'` now picks a.
        (
            profile(
                "web",
                json!({"labelsToApply": {"role": "db"}, "ingress": rules(8080)["ingress"]}),
            ),
            false,
        ),
        // Back to the rules alone.
        (profile("web", rules(9090)), false),
        (profile("web", rules(9091)), true),
    ];
    for (i, (resource, kept)) in steps.into_iter().enumerate() {
        put(&mut model, &resource);
        let cached = plan_with_cache(&model, &host, &config, &mut cache);
        cached.ruleset.validate().expect("valid ruleset");
        assert_eq!(cached.ruleset, plan(&model, &host, &config).ruleset, "step {i}");
        let all_shared = sets_of(&last).iter().all(|old| {
            cached.ruleset.set(old.name().as_str()).is_some_and(|new| new.shares_elems(old))
        });
        assert_eq!(all_shared, kept, "step {i}: sets kept");
        last = cached;
    }
    // The labelsToApply change was seen, and undone.
    assert_eq!(members(&last, 0), ["V4(10.0.0.2/32)"]);
    assert_eq!(members(&last, 1), ["V4(10.0.0.2/32)", "V4(10.0.0.3/32)"]);
}

#[test]
fn a_cache_filled_by_another_model_is_not_trusted() {
    let host = HostInfo::new("h1");
    let config = PlanConfig::new("tabby").expect("config");
    let web = profile(
        "web",
        json!({"ingress": [{"action": "Allow", "source": {"selector": "has(tier)"}}]}),
    );
    let local = wep("h1", "a", &["10.0.0.1/32"], &["web"], json!({}));
    let one = model(&[
        web.clone(),
        local.clone(),
        wep("h2", "b", &["10.0.0.2/32"], &[], json!({"tier": "x"})),
    ]);
    let two = model(&[web, local, wep("h2", "b", &["10.0.0.7/32"], &[], json!({"tier": "x"}))]);
    assert_eq!(one.generation(), two.generation());
    let mut cache = PlanCache::default();
    let first = plan_with_cache(&one, &host, &config, &mut cache);
    let second = plan_with_cache(&two, &host, &config, &mut cache);
    assert_eq!(set_of_rule(&first, &chain_rules(&first, "pri-web")[0]), ["V4(10.0.0.2/32)"]);
    assert_eq!(set_of_rule(&second, &chain_rules(&second, "pri-web")[0]), ["V4(10.0.0.7/32)"]);
}
