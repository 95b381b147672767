//! The IPAM driver's calls, on the etcd block allocator: a Docker network's "pool" is a
//! subnet that is a tabby IP pool or lies inside one, and its addresses are /32s held by
//! `libnetwork.<random>` handles.
//!
//! The gateway: `RequestPool` answers with a dummy gateway in its data (as Calico's plugin
//! did), so libnetwork never asks for one; an explicit `--gateway` is answered with the
//! address asked for, without allocating it, and its release frees nothing.

use std::net::{IpAddr, Ipv4Addr};

use ipam::{attr, AssignRequest, Attrs, IpamError, ReleaseRequest};
use ipnet::{IpNet, Ipv4Net};
use serde_json::json;

use super::handlers::{is_dummy, pool_holding, Driver, DriverError, Reply};
use super::protocol::{
    decode, Invalid, PoolRef, ReleaseAddress, RequestAddress, RequestPool, DUMMY_GATEWAY,
    GATEWAY_DATA_KEY,
};

/// Prefix of every handle this driver allocates under; only such addresses are released.
pub const HANDLE_PREFIX: &str = "libnetwork.";
/// Docker's address spaces are names only; tabby has one of each.
pub const LOCAL_ADDRESS_SPACE: &str = "TabbyLocal";
pub const GLOBAL_ADDRESS_SPACE: &str = "TabbyGlobal";
/// Addresses tried one by one when a network's subnet is smaller than its pool.
const MAX_PROBES: usize = 4096;

impl Driver {
    pub(super) async fn handle_ipam(&self, call: &str, body: &[u8]) -> Reply {
        match call {
            "IpamDriver.GetCapabilities" => {
                decode::<serde_json::Value>(body)?;
                Ok(json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}))
            }
            "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
                "LocalDefaultAddressSpace": LOCAL_ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": GLOBAL_ADDRESS_SPACE,
            })),
            "IpamDriver.RequestPool" => self.request_pool(&RequestPool::parse(body)?).await,
            "IpamDriver.ReleasePool" => {
                PoolRef::parse(body)?;
                Ok(json!({}))
            }
            "IpamDriver.RequestAddress" => {
                self.request_address(&RequestAddress::parse(body)?).await
            }
            "IpamDriver.ReleaseAddress" => {
                self.release_address(&ReleaseAddress::parse(body)?).await
            }
            _ => Err(DriverError::UnknownCall { call: call.to_owned(), role: "IPAM" }),
        }
    }

    async fn request_pool(&self, req: &RequestPool) -> Reply {
        let pools = self.pools().await?;
        let subnet = if let Some(subnet) = req.subnet {
            pool_holding(&pools, subnet).ok_or_else(|| {
                Invalid::new(
                    "Pool",
                    format!(
                        "{subnet} is not a tabby IP pool nor inside one (tabbyctl get ippools lists them)"
                    ),
                )
            })?;
            subnet
        } else {
            // No --subnet: the first enabled IPv4 pool by name, as a whole.
            let mut v4: Vec<_> = pools
                .iter()
                .filter_map(|p| match p.cidr {
                    IpNet::V4(cidr) if !p.disabled => Some((p.name.as_str(), cidr)),
                    _ => None,
                })
                .collect();
            v4.sort_unstable();
            v4.first().map(|(_, cidr)| *cidr).ok_or_else(|| {
                Invalid::new("Pool", "no --subnet given and there is no enabled IPv4 pool")
            })?
        };
        Ok(json!({
            "PoolID": subnet.to_string(),
            "Pool": subnet.to_string(),
            "Data": {GATEWAY_DATA_KEY: DUMMY_GATEWAY},
        }))
    }

    async fn request_address(&self, req: &RequestAddress) -> Reply {
        if req.gateway {
            let ip = req.address.unwrap_or(Ipv4Addr::UNSPECIFIED);
            self.networks.add_gateway(req.pool, ip);
            let answer = if ip.is_unspecified() {
                DUMMY_GATEWAY.to_owned()
            } else {
                format!("{ip}/{}", req.pool.prefix_len())
            };
            return Ok(json!({"Address": answer, "Data": {}}));
        }
        let pools = self.pools().await?;
        let pool = pool_holding(&pools, req.pool).ok_or_else(|| {
            Invalid::new(
                "PoolID",
                format!("{} is no longer inside an enabled tabby IP pool", req.pool),
            )
        })?;
        let handle = format!("{HANDLE_PREFIX}{:016x}", rand::random::<u64>());
        let attrs = Attrs::from([(attr::NETWORK.to_owned(), req.pool.to_string())]);
        let ip = match req.address {
            Some(ip) => self.assign_one(ip, &handle, &attrs).await?,
            None if IpNet::V4(req.pool) == pool.cidr => {
                let assign = AssignRequest {
                    handle: handle.clone(),
                    attrs,
                    num_v4: 1,
                    v4_pools: vec![pool.name.clone()],
                    ..AssignRequest::default()
                };
                let got = Box::pin(self.allocator.assign(&assign))
                    .await
                    .map_err(|e| ipam_error("Pool", &e))?;
                match got.v4.first().map(IpNet::addr) {
                    Some(IpAddr::V4(ip)) => ip,
                    _ => {
                        return Err(DriverError::failed(
                            "assign",
                            "IPAM returned no address",
                            false,
                        ))
                    }
                }
            }
            None => self.assign_in_subnet(req.pool, &handle, &attrs).await?,
        };
        tracing::info!(%ip, pool = %req.pool, handle, "Docker address assigned");
        Ok(json!({"Address": format!("{ip}/32"), "Data": {}}))
    }

    async fn assign_one(
        &self,
        ip: Ipv4Addr,
        handle: &str,
        attrs: &Attrs,
    ) -> Result<Ipv4Addr, DriverError> {
        Box::pin(self.allocator.assign_ip(IpAddr::V4(ip), handle, attrs))
            .await
            .map(|_| ip)
            .map_err(|e| ipam_error("Address", &e))
    }

    /// A subnet smaller than its pool: the allocator picks blocks, not subnets, so the
    /// subnet's addresses are tried in order.
    async fn assign_in_subnet(
        &self,
        subnet: Ipv4Net,
        handle: &str,
        attrs: &Attrs,
    ) -> Result<Ipv4Addr, DriverError> {
        for ip in subnet.hosts().take(MAX_PROBES) {
            match Box::pin(self.allocator.assign_ip(IpAddr::V4(ip), handle, attrs)).await {
                Ok(_) => return Ok(ip),
                Err(IpamError::AddressInUse { .. }) => {}
                Err(e) => return Err(ipam_error("PoolID", &e)),
            }
        }
        Err(DriverError::failed(
            "assign",
            format!("no free address in {subnet} (tried {MAX_PROBES} at most)"),
            false,
        ))
    }

    /// Frees an address this driver handed out; gateway answers, the dummy gateway and
    /// addresses held by others (CNI workloads) are left alone.
    async fn release_address(&self, req: &ReleaseAddress) -> Reply {
        if is_dummy(req.address) || self.networks.take_gateway(req.pool, req.address) {
            return Ok(json!({}));
        }
        let ip = IpAddr::V4(req.address);
        let held = Box::pin(self.allocator.get_assignment(ip))
            .await
            .map_err(|e| ipam_error("Address", &e))?;
        let Some(handle) = held.and_then(|a| a.allocation.handle) else {
            return Ok(json!({}));
        };
        if !handle.starts_with(HANDLE_PREFIX) {
            return Err(Invalid::new(
                "Address",
                format!("{ip} is held by {handle}, not by a Docker endpoint; not released"),
            )
            .into());
        }
        let release = ReleaseRequest { ip, handle: Some(handle), sequence: None };
        Box::pin(self.allocator.release_ips(&[release]))
            .await
            .map_err(|e| ipam_error("Address", &e))?;
        tracing::info!(%ip, "Docker address released");
        Ok(json!({}))
    }
}

/// IPAM's refusals name the request field they concern; its failures say if retrying helps.
fn ipam_error(field: &str, e: &IpamError) -> DriverError {
    match e {
        IpamError::AddressInUse { .. } | IpamError::NotInPool { .. } => {
            Invalid::new(field, e.to_string()).into()
        }
        _ => DriverError::failed("IPAM", e, e.is_retryable()),
    }
}
