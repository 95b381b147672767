//! CHECK: the attachment as the kernel has it and as the datastore records it, compared with
//! what ADD made. Addresses come from prevResult when given, else from the stored endpoint,
//! else from the interface. Every difference is one line of the error; success prints
//! nothing.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use datastore::model::WorkloadEndpoint;
use ipnet::IpNet;

use crate::dataplane::{self, host_veth_name, Netns, Observed, WorkloadLink};
use crate::ipam::{Backend, IpamRequest};
use crate::spec::{CniResult, Error, Invocation, DEFAULT_MTU};
use crate::store::endpoint::{self, EndpointPlan, Prefetched};
use crate::store::Session;

pub async fn check(
    inv: &Invocation<PathBuf>,
    backend: &Backend,
    session: Option<&Session>,
) -> Result<(), Error> {
    let container = Netns::open(&inv.netns)?;
    let plan = session
        .map(|s| EndpointPlan::new(s, &inv.conf, &inv.container_id, &inv.ifname))
        .transpose()?;
    let (stored, facts) = match (session, plan.as_ref()) {
        (Some(s), Some(p)) => {
            let (wep, facts) =
                s.bounded("read workload endpoint", endpoint::read_with_pools(s, &p.key)).await?;
            (Some(wep), facts)
        }
        _ => (None, Prefetched::default()),
    };
    let observed = dataplane::observe(&container, inv.ifname.as_str())?;
    let expected: Vec<IpAddr> = if let Some(prev) = &inv.conf.prev_result {
        addresses_for(prev, inv.ifname.as_str())
    } else if let Some(Some(wep)) = &stored {
        wep.spec.ip_networks.iter().map(IpNet::addr).collect()
    } else {
        observed.as_ref().map(|o| o.addresses.clone()).unwrap_or_default()
    };
    let link = WorkloadLink {
        host_ifname: host_veth_name(inv.container_id.as_str(), inv.ifname.as_str()),
        container_ifname: inv.ifname.to_string(),
        mtu: inv.conf.mtu.or_else(|| facts.mtu_for(&expected)).unwrap_or(DEFAULT_MTU),
        addresses: expected,
    };
    let mut drift = dataplane::inspect(&Netns::current(), &container, &link)?;
    if let (Some(stored), Some(plan)) = (&stored, &plan) {
        compare_endpoint(&mut drift, plan, stored.as_ref(), &link, observed.as_ref());
    }
    drift.extend(backend.check(&IpamRequest::of(inv), &link.addresses).await?);
    if drift.is_empty() {
        Ok(())
    } else {
        Err(Error::CheckFailed { drift })
    }
}

/// Differences between the stored endpoint and the attachment.
fn compare_endpoint(
    drift: &mut Vec<String>,
    plan: &EndpointPlan,
    stored: Option<&WorkloadEndpoint>,
    link: &WorkloadLink,
    observed: Option<&Observed>,
) {
    let Some(wep) = stored else {
        drift.push(format!("workload endpoint {} is missing from the datastore", plan.key));
        return;
    };
    let key = &plan.key;
    let want: BTreeSet<IpNet> = link.addresses.iter().map(|ip| IpNet::from(*ip)).collect();
    let got: BTreeSet<IpNet> = wep.spec.ip_networks.iter().copied().collect();
    if want != got {
        drift.push(format!(
            "workload endpoint {key} has ipNetworks {got:?}, the attachment has {want:?}"
        ));
    }
    if wep.spec.interface_name.as_deref() != Some(link.host_ifname.as_str()) {
        drift.push(format!(
            "workload endpoint {key} names interface {:?}, want {}",
            wep.spec.interface_name, link.host_ifname
        ));
    }
    if let Some(observed) = observed {
        if wep.spec.mac.as_deref() != Some(observed.mac.as_str()) {
            drift.push(format!(
                "workload endpoint {key} has MAC {:?}, {} has {}",
                wep.spec.mac, link.container_ifname, observed.mac
            ));
        }
    }
    let ids = [
        ("containerID", wep.spec.container_id.as_deref(), plan.container_id.as_str()),
        ("node", wep.spec.node.as_deref(), plan.node.as_str()),
        ("endpoint", wep.spec.endpoint.as_deref(), plan.ifname.as_str()),
    ];
    for (field, got, want) in ids {
        if got != Some(want) {
            drift.push(format!("workload endpoint {key} has {field} {got:?}, want {want}"));
        }
    }
    if !wep.spec.profiles.contains(&plan.profile) {
        drift.push(format!(
            "workload endpoint {key} lacks profile {} (has {:?})",
            plan.profile, wep.spec.profiles
        ));
    }
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
