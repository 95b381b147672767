//! Unit tests of request parsing and validation: every refusal names its field.
#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;

const NET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const EP: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn body(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn field_of(e: Invalid) -> String {
    e.field
}

#[test]
fn malformed_json_under_an_empty_key_names_the_body() {
    // Found by the docker_request fuzz target: the error's path is the empty key itself.
    let e = CreateNetwork::parse(br#"{"":{""#).unwrap_err();
    assert_eq!(e.field, "body");
    assert!(e.reason.starts_with("malformed request"), "{e:?}");
}

#[test]
fn create_network_takes_the_name_option_and_the_subnet() {
    let req = CreateNetwork::parse(&body(&json!({
        "NetworkID": NET,
        "Options": {"com.docker.network.enable_ipv6": false,
                    "com.docker.network.generic": {"network": "web"}},
        "IPv4Data": [{"AddressSpace": "TabbyLocal", "Pool": "192.168.22.0/24", "Gateway": "0.0.0.0/0"}],
        "IPv6Data": []
    })))
    .unwrap();
    assert_eq!(req.name, "web");
    assert!(req.name_given);
    assert_eq!(req.subnet.to_string(), "192.168.22.0/24");
    assert_eq!(req.id.short(), "0123456789a");
    // Without the option the name is a fallback, the short id as `docker network ls` shows
    // it, until Docker is asked.
    let req = CreateNetwork::parse(&body(&json!({
        "NetworkID": NET, "IPv4Data": [{"Pool": "10.0.0.0/26"}]
    })))
    .unwrap();
    assert_eq!(req.name, "0123456789ab");
    assert!(!req.name_given);
}

#[test]
fn create_network_refusals_name_the_field() {
    let cases = [
        (json!({"NetworkID": "xyz", "IPv4Data": [{"Pool": "10.0.0.0/24"}]}), "NetworkID"),
        (json!({"NetworkID": NET, "IPv4Data": [{"Pool": "10.0.0.1/24"}]}), "IPv4Data[0].Pool"),
        (json!({"NetworkID": NET, "IPv4Data": [{"Pool": "banana"}]}), "IPv4Data[0].Pool"),
        (json!({"NetworkID": NET, "IPv4Data": []}), "IPv4Data"),
        (
            json!({"NetworkID": NET, "IPv4Data": [{"Pool": "10.0.0.0/24"}],
                   "IPv6Data": [{"Pool": "fd00::/64"}]}),
            "IPv6Data",
        ),
        (
            json!({"NetworkID": NET, "IPv4Data": [{"Pool": "10.0.0.0/24"}],
                   "Options": {"com.docker.network.generic": {"mtu": "9000"}}}),
            "Options.com.docker.network.generic.mtu",
        ),
        (
            json!({"NetworkID": NET, "IPv4Data": [{"Pool": "10.0.0.0/24"}],
                   "Options": {"com.docker.network.enable_ipv6": true}}),
            "Options.com.docker.network.enable_ipv6",
        ),
        (json!({"NetworkID": 7}), "NetworkID"),
    ];
    for (req, field) in cases {
        let err = CreateNetwork::parse(&body(&req)).unwrap_err();
        assert_eq!(field_of(err.clone()), field, "{req}: {err}");
    }
}

#[test]
fn malformed_json_is_a_body_error() {
    let err = CreateNetwork::parse(b"{not json").unwrap_err();
    assert_eq!(err.field, "body");
    assert!(err.reason.contains("malformed"), "{err}");
    let err = EndpointRef::parse(b"{\"NetworkID\": \"x\"}").unwrap_err();
    assert!(err.to_string().contains("EndpointID"), "{err}");
}

#[test]
fn create_endpoint_parses_address_and_mac() {
    let req = CreateEndpoint::parse(&body(&json!({
        "NetworkID": NET, "EndpointID": EP,
        "Interface": {"Address": "192.168.22.7/32", "AddressIPv6": "", "MacAddress": ""},
        "Options": {}
    })))
    .unwrap();
    assert_eq!(req.address, Ipv4Addr::new(192, 168, 22, 7));
    assert_eq!(req.mac, None);
    let req = CreateEndpoint::parse(&body(&json!({
        "NetworkID": NET, "EndpointID": EP,
        "Interface": {"Address": "192.168.22.7/24", "MacAddress": "0A:58:00:00:00:01"}
    })))
    .unwrap();
    assert_eq!(req.mac.as_deref(), Some("0a:58:00:00:00:01"));
    for (iface, field) in [
        (json!({"Address": ""}), "Interface.Address"),
        (json!({"Address": "300.1.1.1/32"}), "Interface.Address"),
        (json!({"Address": "10.0.0.1/32", "AddressIPv6": "fd00::1/64"}), "Interface.AddressIPv6"),
        (json!({"Address": "10.0.0.1/32", "MacAddress": "zz"}), "Interface.MacAddress"),
    ] {
        let err = CreateEndpoint::parse(&body(
            &json!({"NetworkID": NET, "EndpointID": EP, "Interface": iface}),
        ))
        .unwrap_err();
        assert_eq!(err.field, field, "{iface}: {err}");
    }
}

#[test]
fn request_pool_and_address_validation() {
    assert_eq!(RequestPool::parse(b"{}").unwrap().subnet, None);
    let p =
        RequestPool::parse(&body(&json!({"AddressSpace": "TabbyLocal", "Pool": "10.1.0.0/16"})))
            .unwrap();
    assert_eq!(p.subnet.unwrap().to_string(), "10.1.0.0/16");
    for (req, field) in [
        (json!({"Pool": "10.1.0.0/16", "V6": true}), "V6"),
        (json!({"Pool": "10.1.0.0/16", "SubPool": "10.1.1.0/24"}), "SubPool"),
        (json!({"Pool": "10.1.0.0/16", "Options": {"x": "y"}}), "Options.x"),
        (json!({"Pool": "10.1.0.9/16"}), "Pool"),
    ] {
        assert_eq!(RequestPool::parse(&body(&req)).unwrap_err().field, field, "{req}");
    }

    let a = RequestAddress::parse(&body(&json!({"PoolID": "10.1.0.0/16", "Address": "10.1.2.3"})))
        .unwrap();
    assert_eq!(a.address, Some(Ipv4Addr::new(10, 1, 2, 3)));
    assert!(!a.gateway);
    let gw = RequestAddress::parse(&body(&json!({"PoolID": "10.1.0.0/16",
        "Options": {"RequestAddressType": "com.docker.network.gateway"}})))
    .unwrap();
    assert!(gw.gateway && gw.address.is_none());
    let err =
        RequestAddress::parse(&body(&json!({"PoolID": "10.1.0.0/16", "Address": "10.2.0.1"})))
            .unwrap_err();
    assert_eq!(err.field, "Address");
    assert!(err.reason.contains("outside"), "{err}");
    let err = RequestAddress::parse(&body(&json!({"PoolID": "nope"}))).unwrap_err();
    assert_eq!(err.field, "PoolID");

    let r = ReleaseAddress::parse(&body(&json!({"PoolID": "10.1.0.0/16", "Address": "0.0.0.0"})))
        .unwrap();
    assert!(r.address.is_unspecified());
    assert_eq!(PoolRef::parse(b"{\"PoolID\": 3}").unwrap_err().field, "PoolID");
}

#[test]
fn ids_are_hex_and_short_names_fit_an_interface() {
    assert!(ObjectId::parse("EndpointID", "abc").is_err());
    assert!(ObjectId::parse("EndpointID", &"g".repeat(64)).is_err());
    let id = ObjectId::parse("EndpointID", &EP.to_ascii_uppercase()).unwrap();
    assert_eq!(id.as_str(), EP);
    assert_eq!(format!("cali{}", id.short()).len(), 15);
}
