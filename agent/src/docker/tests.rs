//! Unit tests of the driver's answers that need neither etcd nor the kernel.
#![allow(clippy::unwrap_used)]

use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::handlers::{host_ifname, join_reply, peer_ifname, DriverError};
use super::protocol::ObjectId;
use super::*;

#[test]
fn sockets_are_named_after_the_driver() {
    let [(r1, net), (r2, ipam)] = socket_paths(Path::new("/run/docker/plugins"), "tabby");
    assert_eq!((r1, r2), (Role::Network, Role::Ipam));
    assert_eq!(net, Path::new("/run/docker/plugins/tabby.sock"));
    assert_eq!(ipam, Path::new("/run/docker/plugins/tabby-ipam.sock"));
    assert_eq!(
        state_path(Path::new("/var/lib/tabby/nodename")),
        Path::new("/var/lib/tabby/docker-networks.json")
    );
}

#[test]
fn join_hands_over_the_peer_with_the_link_local_gateway() {
    let id = ObjectId::parse("EndpointID", &"ab".repeat(32)).unwrap();
    assert_eq!(host_ifname(&id), "caliabababababa");
    assert_eq!(peer_ifname(&id), "tmpabababababa");
    let reply = join_reply(&peer_ifname(&id));
    assert_eq!(
        reply,
        json!({
            "InterfaceName": {"SrcName": "tmpabababababa", "DstPrefix": "eth"},
            "Gateway": "169.254.1.1",
            "StaticRoutes": [{"Destination": "169.254.1.1/32", "RouteType": 1}],
            "DisableGatewayService": true,
        })
    );
}

async fn body_of(
    response: hyper::Response<http_body_util::Full<hyper::body::Bytes>>,
) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(response.headers()[hyper::header::CONTENT_TYPE], CONTENT_TYPE);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn refusals_are_err_json_with_the_field() {
    let (status, body) = body_of(server::reply(Err(DriverError::from(Invalid::new(
        "Interface.Address",
        "10.9.0.1 is outside the network's subnet 10.1.0.0/24",
    )))))
    .await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        json!({"Err": "Interface.Address: 10.9.0.1 is outside the network's subnet 10.1.0.0/24"})
    );
    let (status, body) = body_of(server::reply(Err(DriverError::UnknownCall {
        call: "NetworkDriver.Fly".into(),
        role: "network",
    })))
    .await;
    assert_eq!(status, 404);
    assert!(body["Err"].as_str().unwrap().contains("NetworkDriver.Fly"));
    let (status, body) = body_of(server::reply(Ok(json!({})))).await;
    assert_eq!((status, body), (200, json!({})));
}

#[test]
fn a_network_settles_on_dockers_name_or_its_fallback() {
    use super::engine::{EngineError, NetworkInfo};
    use super::handlers::settled_name;

    let id = ObjectId::parse("NetworkID", &"cd".repeat(32)).unwrap();
    let fallback = protocol::fallback_name(&id);
    assert_eq!(fallback, "cdcdcdcdcdcd");
    let named = settled_name(&id, &fallback, Ok(NetworkInfo { name: "web".into() }));
    assert_eq!(named.unwrap(), "web");
    // Docker unreachable: the id-based name, so containers still start.
    let unreachable = EngineError::Connect {
        socket: "/var/run/docker.sock".into(),
        source: std::io::ErrorKind::NotFound.into(),
    };
    assert_eq!(settled_name(&id, &fallback, Err(unreachable)).unwrap(), fallback);
    // A name that cannot be a profile is refused, saying how to name the network instead.
    let invalid = EngineError::InvalidName {
        network: id.clone(),
        name: "My_Net".into(),
        reason: "not a valid name".into(),
    };
    let err = settled_name(&id, &fallback, Err(invalid)).unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("\"My_Net\"") && err.to_string().contains("-o network="));
}

#[test]
fn network_state_keeps_the_pending_name_across_restarts() {
    use super::state::NetworkRecord;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker-networks.json");
    let id = ObjectId::parse("NetworkID", &"cd".repeat(32)).unwrap();
    // A file written before names were asked for: its names are final.
    let old = json!({id.as_str(): {"name": "web", "subnet": "192.168.22.0/24"}});
    std::fs::write(&path, old.to_string()).unwrap();
    let loaded = Networks::load(path.clone()).get(&id).unwrap();
    assert_eq!(loaded.name, "web");
    assert!(!loaded.provisional);
    // A network still to be named stays so after a restart.
    let pending = NetworkRecord {
        name: "cdcdcdcdcdcd".into(),
        subnet: "192.168.23.0/24".parse().unwrap(),
        provisional: true,
    };
    Networks::load(path.clone()).insert(id.clone(), pending.clone()).unwrap();
    assert_eq!(Networks::load(path).get(&id), Some(pending));
}
