//! Docker's plugin protocol as typed, validated requests: every body is parsed and checked
//! here before a handler touches etcd or the kernel, and every refusal names the field.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// Docker's plugin media type, sent on every answer.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";
/// The option key under which Docker passes `docker network create -o k=v` options.
pub const GENERIC_OPTIONS: &str = "com.docker.network.generic";
/// The `-o` option naming the network (and so its profile): `-o network=web`.
pub const NETWORK_NAME_OPTION: &str = "network";
/// `RequestAddress` option marking the request for a network's gateway.
pub const ADDRESS_TYPE_OPTION: &str = "RequestAddressType";
/// Its value for the gateway.
pub const GATEWAY_ADDRESS_TYPE: &str = "com.docker.network.gateway";
/// The pool data key whose value libnetwork takes as the gateway instead of requesting one.
pub const GATEWAY_DATA_KEY: &str = "com.docker.network.gateway";
/// A gateway that is no address: containers route via 169.254.1.1, which nothing owns.
pub const DUMMY_GATEWAY: &str = "0.0.0.0/0";
/// Longest request body accepted; Docker's are a few hundred bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// A request refused before anything was done, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid { field: field.into(), reason: reason.into() }
    }
}

/// Decodes a body into `T`, naming the JSON path of the first wrong field. An empty body is
/// an empty object (Docker sends none to `Plugin.Activate`).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Invalid> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { &b"{}"[..] } else { body };
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field =
            if path.is_empty() || path == "." || path == "?" { "body".to_owned() } else { path };
        Invalid::new(field, format!("malformed request: {}", e.into_inner()))
    })
}

/// A libnetwork object id (network or endpoint): Docker's are 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, Deserialize)]
pub struct ObjectId(String);

impl ObjectId {
    pub fn parse(field: &str, raw: &str) -> Result<ObjectId, Invalid> {
        if raw.len() < 12 || raw.len() > 64 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Invalid::new(
                field,
                format!("{raw:?} is not a Docker id (12 to 64 hex digits)"),
            ));
        }
        Ok(ObjectId(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 11 hex digits: with a 4-letter prefix, a 15-character interface name.
    pub fn short(&self) -> &str {
        &self.0[..11]
    }
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Deserialize)]
struct RawIpamData {
    #[serde(rename = "Pool", default)]
    pool: String,
}

#[derive(Debug, Deserialize)]
struct RawCreateNetwork {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "Options", default)]
    options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data", default)]
    ipv4_data: Option<Vec<RawIpamData>>,
    #[serde(rename = "IPv6Data", default)]
    ipv6_data: Option<Vec<RawIpamData>>,
}

/// `NetworkDriver.CreateNetwork`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateNetwork {
    pub id: ObjectId,
    /// The network's name: `-o network=<name>`, else the id's first 12 digits until Docker
    /// is asked for the real one (see `name_given`).
    pub name: String,
    /// Whether `-o network=` named the network; otherwise `name` is only the fallback.
    pub name_given: bool,
    /// The IPv4 subnet the IPAM driver gave the network.
    pub subnet: Ipv4Net,
}

impl CreateNetwork {
    pub fn parse(body: &[u8]) -> Result<CreateNetwork, Invalid> {
        let raw: RawCreateNetwork = decode(body)?;
        let id = ObjectId::parse("NetworkID", &raw.network_id)?;
        let mut name = None;
        for (key, value) in &raw.options {
            match (key.as_str(), value) {
                (GENERIC_OPTIONS, Value::Object(generic)) => {
                    for (opt, v) in generic {
                        let field = format!("Options.{GENERIC_OPTIONS}.{opt}");
                        match (opt.as_str(), v) {
                            (NETWORK_NAME_OPTION, Value::String(s)) => name = Some(s.clone()),
                            (NETWORK_NAME_OPTION, other) => {
                                return Err(Invalid::new(field, format!("{other} is not a name")))
                            }
                            _ => {
                                return Err(Invalid::new(
                                    field,
                                    format!("unknown option (tabby knows only -o {NETWORK_NAME_OPTION}=<name>)"),
                                ))
                            }
                        }
                    }
                }
                (GENERIC_OPTIONS, Value::Null) | (_, Value::Bool(false)) => {}
                ("com.docker.network.enable_ipv6", Value::Bool(true)) => {
                    return Err(Invalid::new(
                        format!("Options.{key}"),
                        "tabby's Docker driver supports IPv4 networks only",
                    ))
                }
                _ => {
                    return Err(Invalid::new(
                        format!("Options.{key}"),
                        format!("{value} is not supported by tabby's Docker driver"),
                    ))
                }
            }
        }
        if raw.ipv6_data.as_ref().is_some_and(|d| !d.is_empty()) {
            return Err(Invalid::new("IPv6Data", "tabby's Docker driver supports IPv4 only"));
        }
        let subnet = match raw.ipv4_data.as_deref() {
            Some([one]) => parse_subnet("IPv4Data[0].Pool", &one.pool)?,
            Some([]) | None => {
                return Err(Invalid::new(
                    "IPv4Data",
                    "no IPv4 pool: use --ipam-driver tabby's IPAM",
                ))
            }
            Some(_) => {
                return Err(Invalid::new("IPv4Data", "one IPv4 subnet per network, not several"))
            }
        };
        let name_given = name.is_some();
        let name = name.unwrap_or_else(|| fallback_name(&id));
        if name.is_empty() {
            return Err(Invalid::new(
                format!("Options.{GENERIC_OPTIONS}.{NETWORK_NAME_OPTION}"),
                "must not be empty",
            ));
        }
        Ok(CreateNetwork { id, name, name_given, subnet })
    }
}

/// A network's name when neither `-o network=` nor Docker gives one: its id's first 12
/// digits, as `docker network ls` shows it.
pub fn fallback_name(id: &ObjectId) -> String {
    id.as_str()[..12].to_owned()
}

/// An IPv4 subnet given by Docker: canonical (no host bits), so `PoolID`s compare exactly.
pub fn parse_subnet(field: &str, raw: &str) -> Result<Ipv4Net, Invalid> {
    let net: Ipv4Net =
        raw.parse().map_err(|_| Invalid::new(field, format!("{raw:?} is not an IPv4 CIDR")))?;
    if net.trunc() != net {
        return Err(Invalid::new(
            field,
            format!("{raw:?} has host bits set (the subnet is {})", net.trunc()),
        ));
    }
    Ok(net)
}

#[derive(Debug, Deserialize)]
struct RawNetworkRef {
    #[serde(rename = "NetworkID")]
    network_id: String,
}

/// A request naming only a network (`DeleteNetwork`, `FreeNetwork`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRef {
    pub network: ObjectId,
}

impl NetworkRef {
    pub fn parse(body: &[u8]) -> Result<NetworkRef, Invalid> {
        let raw: RawNetworkRef = decode(body)?;
        Ok(NetworkRef { network: ObjectId::parse("NetworkID", &raw.network_id)? })
    }
}

#[derive(Debug, Deserialize)]
struct RawEndpointRef {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
}

/// A request naming an endpoint (`Join`, `Leave`, `DeleteEndpoint`, `EndpointOperInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRef {
    pub network: ObjectId,
    pub endpoint: ObjectId,
}

impl EndpointRef {
    pub fn parse(body: &[u8]) -> Result<EndpointRef, Invalid> {
        let raw: RawEndpointRef = decode(body)?;
        Ok(EndpointRef {
            network: ObjectId::parse("NetworkID", &raw.network_id)?,
            endpoint: ObjectId::parse("EndpointID", &raw.endpoint_id)?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct RawInterface {
    #[serde(rename = "Address", default)]
    address: String,
    #[serde(rename = "AddressIPv6", default)]
    address_v6: String,
    #[serde(rename = "MacAddress", default)]
    mac: String,
}

#[derive(Debug, Deserialize)]
struct RawCreateEndpoint {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(rename = "Interface", default)]
    interface: Option<RawInterface>,
}

/// `NetworkDriver.CreateEndpoint`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateEndpoint {
    pub network: ObjectId,
    pub endpoint: ObjectId,
    /// The address the IPAM driver assigned.
    pub address: Ipv4Addr,
    /// The MAC the operator asked for (`--mac-address`), lower-case.
    pub mac: Option<String>,
}

impl CreateEndpoint {
    pub fn parse(body: &[u8]) -> Result<CreateEndpoint, Invalid> {
        let raw: RawCreateEndpoint = decode(body)?;
        let network = ObjectId::parse("NetworkID", &raw.network_id)?;
        let endpoint = ObjectId::parse("EndpointID", &raw.endpoint_id)?;
        let iface = raw.interface.unwrap_or_default();
        if !iface.address_v6.is_empty() {
            return Err(Invalid::new(
                "Interface.AddressIPv6",
                "tabby's Docker driver supports IPv4 only",
            ));
        }
        if iface.address.is_empty() {
            return Err(Invalid::new(
                "Interface.Address",
                "no address: the network must use tabby's IPAM driver",
            ));
        }
        let address = parse_address("Interface.Address", &iface.address)?;
        let mac = if iface.mac.is_empty() { None } else { Some(parse_mac(&iface.mac)?) };
        Ok(CreateEndpoint { network, endpoint, address, mac })
    }
}

/// An IPv4 address, bare or with a prefix length (which tabby ignores: every workload is a
/// /32).
pub fn parse_address(field: &str, raw: &str) -> Result<Ipv4Addr, Invalid> {
    let addr = raw.split_once('/').map_or(raw, |(a, _)| a);
    let ip: IpAddr = match raw.split_once('/') {
        Some(_) => raw
            .parse::<ipnet::IpNet>()
            .map(|n| n.addr())
            .map_err(|_| Invalid::new(field, format!("{raw:?} is not an address")))?,
        None => {
            addr.parse().map_err(|_| Invalid::new(field, format!("{raw:?} is not an address")))?
        }
    };
    match ip {
        IpAddr::V4(v4) => Ok(v4),
        IpAddr::V6(_) => Err(Invalid::new(field, format!("{raw:?}: IPv4 only"))),
    }
}

fn parse_mac(raw: &str) -> Result<String, Invalid> {
    let parts: Vec<&str> = raw.split(':').collect();
    let ok = parts.len() == 6
        && parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(raw.to_ascii_lowercase())
    } else {
        Err(Invalid::new("Interface.MacAddress", format!("{raw:?} is not a MAC address")))
    }
}

#[derive(Debug, Deserialize)]
struct RawRequestPool {
    #[serde(rename = "Pool", default)]
    pool: String,
    #[serde(rename = "SubPool", default)]
    sub_pool: String,
    #[serde(rename = "Options", default)]
    options: Option<BTreeMap<String, String>>,
    #[serde(rename = "V6", default)]
    v6: bool,
}

/// `IpamDriver.RequestPool`, validated: `None` when Docker asks for any pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPool {
    pub subnet: Option<Ipv4Net>,
}

impl RequestPool {
    pub fn parse(body: &[u8]) -> Result<RequestPool, Invalid> {
        let raw: RawRequestPool = decode(body)?;
        if raw.v6 {
            return Err(Invalid::new("V6", "tabby's IPAM driver supports IPv4 only"));
        }
        if let Some((key, _)) = raw.options.iter().flatten().next() {
            return Err(Invalid::new(
                format!("Options.{key}"),
                "tabby's IPAM driver takes no --ipam-opt",
            ));
        }
        if !raw.sub_pool.is_empty() {
            return Err(Invalid::new(
                "SubPool",
                "--ip-range is not supported: addresses come from tabby's IP pools",
            ));
        }
        let subnet =
            if raw.pool.is_empty() { None } else { Some(parse_subnet("Pool", &raw.pool)?) };
        Ok(RequestPool { subnet })
    }
}

#[derive(Debug, Deserialize)]
struct RawPoolRef {
    #[serde(rename = "PoolID")]
    pool_id: String,
}

/// `IpamDriver.ReleasePool`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRef {
    pub pool: Ipv4Net,
}

impl PoolRef {
    pub fn parse(body: &[u8]) -> Result<PoolRef, Invalid> {
        let raw: RawPoolRef = decode(body)?;
        Ok(PoolRef { pool: parse_subnet("PoolID", &raw.pool_id)? })
    }
}

#[derive(Debug, Deserialize)]
struct RawRequestAddress {
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(rename = "Address", default)]
    address: String,
    #[serde(rename = "Options", default)]
    options: Option<BTreeMap<String, String>>,
}

/// `IpamDriver.RequestAddress`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAddress {
    pub pool: Ipv4Net,
    /// The address asked for (`--ip`, `--gateway`), inside `pool`.
    pub address: Option<Ipv4Addr>,
    /// Docker asks for the network's gateway, which tabby does not need.
    pub gateway: bool,
}

impl RequestAddress {
    pub fn parse(body: &[u8]) -> Result<RequestAddress, Invalid> {
        let raw: RawRequestAddress = decode(body)?;
        let pool = parse_subnet("PoolID", &raw.pool_id)?;
        let address = if raw.address.is_empty() {
            None
        } else {
            let ip = parse_address("Address", &raw.address)?;
            if !pool.contains(&ip) {
                return Err(Invalid::new(
                    "Address",
                    format!("{ip} is outside the network's subnet {pool}"),
                ));
            }
            Some(ip)
        };
        let gateway = raw
            .options
            .as_ref()
            .and_then(|o| o.get(ADDRESS_TYPE_OPTION))
            .is_some_and(|t| t == GATEWAY_ADDRESS_TYPE);
        Ok(RequestAddress { pool, address, gateway })
    }
}

#[derive(Debug, Deserialize)]
struct RawReleaseAddress {
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(rename = "Address")]
    address: String,
}

/// `IpamDriver.ReleaseAddress`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseAddress {
    pub pool: Ipv4Net,
    pub address: Ipv4Addr,
}

impl ReleaseAddress {
    pub fn parse(body: &[u8]) -> Result<ReleaseAddress, Invalid> {
        let raw: RawReleaseAddress = decode(body)?;
        Ok(ReleaseAddress {
            pool: parse_subnet("PoolID", &raw.pool_id)?,
            address: parse_address("Address", &raw.address)?,
        })
    }
}

#[cfg(test)]
mod tests;
