//! CHECK: the attachment as the kernel has it, compared with what ADD made (addresses from
//! prevResult when given), plus the IPAM plugin's own CHECK. Success prints nothing.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::dataplane::{self, host_veth_name, Netns, WorkloadLink};
use crate::ipam::{Ipam, IpamRequest};
use crate::spec::{CniResult, Error, Invocation};

pub async fn check(inv: &Invocation<PathBuf>, ipam: &mut impl Ipam) -> Result<(), Error> {
    let container = Netns::open(&inv.netns)?;
    let link = WorkloadLink {
        host_ifname: host_veth_name(inv.container_id.as_str(), inv.ifname.as_str()),
        container_ifname: inv.ifname.to_string(),
        mtu: inv.conf.mtu(),
        addresses: inv
            .conf
            .prev_result
            .as_ref()
            .map(|prev| addresses_for(prev, inv.ifname.as_str()))
            .unwrap_or_default(),
    };
    let drift = dataplane::inspect(&Netns::current(), &container, &link)?;
    if !drift.is_empty() {
        return Err(Error::CheckFailed { drift });
    }
    ipam.check(&IpamRequest::of(inv)).await
}

/// The prevResult addresses that belong to `ifname` (or to no interface in particular).
fn addresses_for(prev: &CniResult, ifname: &str) -> Vec<IpAddr> {
    prev.ips
        .iter()
        .filter(|ip| {
            ip.interface.is_none_or(|i| prev.interfaces.get(i).is_some_and(|x| x.name == ifname))
        })
        .map(|ip| ip.address.addr())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Interface, IpConfig};

    #[test]
    fn prev_result_addresses_of_our_interface_only() {
        let ip = |a: &str, i| IpConfig { address: a.parse().unwrap(), gateway: None, interface: i };
        let prev = CniResult {
            interfaces: vec![
                Interface { name: "cali0".into(), ..Interface::default() },
                Interface { name: "eth0".into(), ..Interface::default() },
                Interface { name: "eth1".into(), ..Interface::default() },
            ],
            ips: vec![
                ip("10.0.0.1/32", Some(1)),
                ip("10.0.0.2/32", Some(2)),
                ip("10.0.0.3/32", None),
            ],
            ..CniResult::default()
        };
        let got = addresses_for(&prev, "eth0");
        let want: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "10.0.0.3".parse().unwrap()];
        assert_eq!(got, want);
    }
}
