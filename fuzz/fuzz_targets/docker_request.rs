//! Fuzzes the Docker libnetwork plugin's request parsers (`agent::docker::protocol`): every
//! body goes through every request type. Never panics; a refusal names a field; what is
//! accepted keeps the parser's promises (canonical subnets, addresses inside their pool).
//!
//! Input: a request body (JSON as Docker sends it).

#![no_main]

use std::fmt::Debug;

use agent::docker::protocol::{
    CreateEndpoint, CreateNetwork, EndpointRef, Invalid, NetworkRef, PoolRef, ReleaseAddress,
    RequestAddress, RequestPool,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Some(net) = accepted(CreateNetwork::parse(body)) {
        assert!(!net.name.is_empty());
        assert_eq!(net.subnet.trunc(), net.subnet, "subnet with host bits accepted");
    }
    if let Some(pool) = accepted(RequestPool::parse(body)) {
        assert!(pool.subnet.is_none_or(|s| s.trunc() == s), "pool with host bits accepted");
    }
    if let Some(req) = accepted(RequestAddress::parse(body)) {
        if let Some(ip) = req.address {
            assert!(req.pool.contains(&ip), "{ip} accepted outside {}", req.pool);
        }
    }
    accepted(NetworkRef::parse(body));
    accepted(EndpointRef::parse(body));
    accepted(CreateEndpoint::parse(body));
    accepted(PoolRef::parse(body));
    accepted(ReleaseAddress::parse(body));
});

fn accepted<T: Debug>(r: Result<T, Invalid>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(!e.reason.is_empty(), "refusal gives no reason: {e:?}");
            assert!(!e.field.is_empty(), "refusal names no field: {e:?}");
            None
        }
    }
}
