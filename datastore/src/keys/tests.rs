//! Unit tests of the key layout and workload endpoint names.

#![allow(clippy::unwrap_used)]

use super::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn resource_keys_match_calico() {
    let k = KeyLayout::default();
    assert_eq!(
        k.resource(Kind::IpPool, None, "default-ipv4-ippool"),
        "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool"
    );
    assert_eq!(
        k.resource(Kind::Profile, None, "web"),
        "/calico/resources/v3/projectcalico.org/profiles/web"
    );
    assert_eq!(
        k.resource(Kind::GlobalNetworkPolicy, None, "allow-dns"),
        "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/allow-dns"
    );
    assert_eq!(
        k.resource(Kind::NetworkPolicy, Some("prod"), "db"),
        "/calico/resources/v3/projectcalico.org/networkpolicies/prod/db"
    );
    assert_eq!(
        k.resource(Kind::WorkloadEndpoint, Some("default"), "host1-cni-abc-eth0"),
        "/calico/resources/v3/projectcalico.org/workloadendpoints/default/host1-cni-abc-eth0"
    );
    assert_eq!(
        k.resource(Kind::Node, None, "host1"),
        "/calico/resources/v3/projectcalico.org/nodes/host1"
    );
    assert_eq!(
        k.resource(Kind::BgpPeer, None, "rack1-tor"),
        "/calico/resources/v3/projectcalico.org/bgppeers/rack1-tor"
    );
    assert_eq!(
        k.resource(Kind::BgpConfiguration, None, "default"),
        "/calico/resources/v3/projectcalico.org/bgpconfigurations/default"
    );
}

#[test]
fn namespaced_kind_without_namespace_uses_default() {
    let k = KeyLayout::default();
    assert_eq!(
        k.resource(Kind::WorkloadEndpoint, None, "w"),
        "/calico/resources/v3/projectcalico.org/workloadendpoints/default/w"
    );
    // A cluster-scoped kind never carries a namespace segment.
    assert_eq!(
        k.resource(Kind::Profile, Some("ignored"), "p"),
        "/calico/resources/v3/projectcalico.org/profiles/p"
    );
}

#[test]
fn prefixes_end_in_slash() {
    let k = KeyLayout::default();
    assert_eq!(
        k.resources_prefix(Kind::WorkloadEndpoint),
        "/calico/resources/v3/projectcalico.org/workloadendpoints/"
    );
    assert_eq!(
        k.namespace_prefix(Kind::NetworkPolicy, "prod"),
        "/calico/resources/v3/projectcalico.org/networkpolicies/prod/"
    );
    assert_eq!(k.all_resources_prefix(), "/calico/resources/v3/projectcalico.org/");
    assert_eq!(k.blocks_prefix(IpFamily::V4), "/calico/ipam/v2/assignment/ipv4/block/");
    assert_eq!(k.blocks_prefix(IpFamily::V6), "/calico/ipam/v2/assignment/ipv6/block/");
    assert_eq!(
        k.host_affinities_prefix("host1", IpFamily::V4),
        "/calico/ipam/v2/host/host1/ipv4/block/"
    );
    assert_eq!(k.all_hosts_prefix(), "/calico/ipam/v2/host/");
    assert_eq!(k.handles_prefix(), "/calico/ipam/v2/handle/");
    assert_eq!(k.agent_statuses_prefix(), "/calico/felix/v2/no-region/host/");
    assert_eq!(k.root_prefix(), "/calico/");
}

#[test]
fn ipam_keys_match_calico() {
    let k = KeyLayout::default();
    assert_eq!(
        k.block(net("10.65.79.0/26")),
        "/calico/ipam/v2/assignment/ipv4/block/10.65.79.0-26"
    );
    assert_eq!(
        k.block(net("fd5f:abcd:64:4f2c:ec1b:27b9:1989:77c0/122")),
        "/calico/ipam/v2/assignment/ipv6/block/fd5f:abcd:64:4f2c:ec1b:27b9:1989:77c0-122"
    );
    assert_eq!(
        k.affinity("host1", net("10.65.79.0/26")),
        "/calico/ipam/v2/host/host1/ipv4/block/10.65.79.0-26"
    );
    assert_eq!(
        k.affinity("host1", net("fd00::/122")),
        "/calico/ipam/v2/host/host1/ipv6/block/fd00::-122"
    );
    assert_eq!(k.handle("web.0123456789ab.eth0"), "/calico/ipam/v2/handle/web.0123456789ab.eth0");
    assert_eq!(k.ipam_config(), "/calico/ipam/v2/config");
    assert_eq!(k.agent_status("host1"), "/calico/felix/v2/no-region/host/host1/status");
}

#[test]
fn configurable_prefix() {
    let k = KeyLayout::new("/test-42/");
    assert_eq!(k.prefix(), "/test-42");
    assert_eq!(k.ipam_config(), "/test-42/ipam/v2/config");
    assert_eq!(k.parse("/test-42/ipam/v2/config"), Some(ParsedKey::IpamConfig));
    // Keys under another prefix are not ours.
    assert_eq!(k.parse("/calico/ipam/v2/config"), None);
    assert_eq!(k.parse("/test-420/ipam/v2/config"), None);
}

#[test]
fn every_builder_round_trips_through_parse() {
    let k = KeyLayout::new("/t");
    let cases = vec![
        (
            k.resource(Kind::IpPool, None, "pool1"),
            ParsedKey::Resource { kind: Kind::IpPool, namespace: None, name: "pool1".into() },
        ),
        (
            k.resource(Kind::NetworkPolicy, Some("ns1"), "pol"),
            ParsedKey::Resource {
                kind: Kind::NetworkPolicy,
                namespace: Some("ns1".into()),
                name: "pol".into(),
            },
        ),
        (
            k.resource(Kind::WorkloadEndpoint, Some("default"), "h--1-cni-c-eth0"),
            ParsedKey::Resource {
                kind: Kind::WorkloadEndpoint,
                namespace: Some("default".into()),
                name: "h--1-cni-c-eth0".into(),
            },
        ),
        (k.block(net("10.65.79.0/26")), ParsedKey::Block { cidr: net("10.65.79.0/26") }),
        (
            k.block(net("fd5f:abcd:64:4f2c:ec1b:27b9:1989:77c0/122")),
            ParsedKey::Block { cidr: net("fd5f:abcd:64:4f2c:ec1b:27b9:1989:77c0/122") },
        ),
        (
            k.affinity("host-1", net("10.65.79.64/26")),
            ParsedKey::Affinity { host: "host-1".into(), cidr: net("10.65.79.64/26") },
        ),
        (
            k.affinity("host-1", net("fd00::40/122")),
            ParsedKey::Affinity { host: "host-1".into(), cidr: net("fd00::40/122") },
        ),
        (k.handle("net.abc.eth0"), ParsedKey::Handle { id: "net.abc.eth0".into() }),
        (k.ipam_config(), ParsedKey::IpamConfig),
        (k.agent_status("host-1"), ParsedKey::AgentStatus { node: "host-1".into() }),
    ];
    for kind in Kind::ALL {
        let ns = kind.namespaced().then_some("ns");
        let key = k.resource(kind, ns, "x");
        assert_eq!(
            k.parse(&key),
            Some(ParsedKey::Resource { kind, namespace: ns.map(str::to_owned), name: "x".into() }),
            "{key}"
        );
    }
    for (key, want) in cases {
        assert_eq!(k.parse(&key), Some(want), "{key}");
    }
}

#[test]
fn parse_rejects_foreign_and_malformed_keys() {
    let k = KeyLayout::default();
    for key in [
        "/calico",
        "/calico/",
        "/calico/resources/v3/projectcalico.org/ippools/",
        "/calico/resources/v3/projectcalico.org/ippools/a/b",
        "/calico/resources/v3/projectcalico.org/workloadendpoints/only-name",
        "/calico/resources/v3/projectcalico.org/tiers/default",
        "/calico/resources/v3/example.org/ippools/a",
        "/calico/ipam/v2/assignment/ipv4/block/10.65.79.0-99",
        "/calico/ipam/v2/assignment/ipv6/block/10.65.79.0-26",
        "/calico/ipam/v2/assignment/ipv4/block/not-a-cidr",
        "/calico/ipam/v2/host/host1",
        "/calico/ipam/v2/host/host1/ipv4/block/",
        "/calico/ipam/v2/handle/",
        "/calico/felix/v2/no-region/host/host1/last_reported_status",
        "/calico/felix/v2/eu/host/host1/status",
        "/calico/v1/Ready",
    ] {
        assert_eq!(k.parse(key), None, "{key}");
    }
}

#[test]
fn handle_ids_are_opaque() {
    let k = KeyLayout::default();
    assert_eq!(
        k.parse("/calico/ipam/v2/handle/odd/id"),
        Some(ParsedKey::Handle { id: "odd/id".into() })
    );
}

#[test]
fn wep_name_doubles_dashes_inside_segments() {
    assert_eq!(
        workload_endpoint_name("host-1", "cni", "abc-def", "eth0").unwrap(),
        "host--1-cni-abc--def-eth0"
    );
    assert_eq!(
        workload_endpoint_name("host1", "cni", "0123456789ab", "eth0").unwrap(),
        "host1-cni-0123456789ab-eth0"
    );
    assert_eq!(
        split_workload_endpoint_name("host--1-cni-abc--def-eth0").unwrap(),
        ["host-1", "cni", "abc-def", "eth0"].map(String::from)
    );
}

#[test]
fn wep_name_rejects_unescapable_segments() {
    let err = workload_endpoint_name("host1", "cni", "-abc", "eth0").unwrap_err();
    assert_eq!(err.field(), "spec.workload");
    let err = workload_endpoint_name("host1-", "cni", "abc", "eth0").unwrap_err();
    assert_eq!(err.field(), "spec.node");
    let err = workload_endpoint_name("host1", "cni", "abc", "").unwrap_err();
    assert_eq!(err.field(), "spec.endpoint");
    assert_eq!(split_workload_endpoint_name("a-b-c"), None);
    assert_eq!(split_workload_endpoint_name("a-b-c-d-e"), None);
}

#[test]
fn kind_names_plurals_and_aliases() {
    for kind in Kind::ALL {
        assert_eq!(kind.as_str().parse::<Kind>().unwrap(), kind);
        assert_eq!(kind.plural().parse::<Kind>().unwrap(), kind);
        assert_eq!(kind.as_str().to_uppercase().parse::<Kind>().unwrap(), kind);
        assert_eq!(Kind::from_kind_name(kind.as_str()), Some(kind));
        assert_eq!(Kind::from_plural(kind.plural()), Some(kind));
    }
    assert_eq!("pool".parse::<Kind>().unwrap(), Kind::IpPool);
    assert_eq!("policy".parse::<Kind>().unwrap(), Kind::NetworkPolicy);
    assert_eq!("GNP".parse::<Kind>().unwrap(), Kind::GlobalNetworkPolicy);
    assert_eq!("wep".parse::<Kind>().unwrap(), Kind::WorkloadEndpoint);
    assert_eq!("BgpPeer".parse::<Kind>().unwrap(), Kind::BgpPeer);
    assert_eq!("bgpconfig".parse::<Kind>().unwrap(), Kind::BgpConfiguration);
    assert!("tier".parse::<Kind>().unwrap_err().to_string().contains("\"tier\""));
    // The envelope's `kind` is strict: only Calico's exact spelling.
    assert_eq!(Kind::from_kind_name("ippool"), None);
    assert_eq!(Kind::IpPool.to_string(), "IPPool");
    assert_eq!(Kind::BgpConfiguration.to_string(), "BGPConfiguration");
}
