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
