//! IP pools as the allocator uses them: validated once, then asked which node they serve,
//! which block an address falls in, and whether they collide with each other.

use std::net::IpAddr;

use datastore::keys::IpFamily;
use datastore::model::Resource;
use datastore::model::{AllowedUse, AssignmentMode, EncapMode, IpPoolSpec};
use datastore::selector::{Labels, Selector};
use ipnet::IpNet;

use crate::block::block_cidr_for;
use crate::error::IpamError;

/// A pool that passed validation: every field the allocator reads is typed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    pub cidr: IpNet,
    /// Prefix length of the pool's blocks (26 / 122 unless the pool says otherwise).
    pub block_size: u8,
    pub disabled: bool,
    pub nat_outgoing: bool,
    pub ipip_mode: EncapMode,
    pub vxlan_mode: EncapMode,
    pub node_selector: Selector,
    pub assignment_mode: AssignmentMode,
    pub allowed_uses: Vec<AllowedUse>,
}

impl Pool {
    /// Validates a stored or user-given pool resource. Errors name the pool and the field.
    pub fn from_resource(res: &Resource<IpPoolSpec>) -> Result<Pool, IpamError> {
        let name = res.metadata.name.clone();
        res.validate().map_err(|e| IpamError::InvalidPool {
            name: name.clone(),
            field: e.field().to_string(),
            reason: e.to_string(),
        })?;
        let spec = &res.spec;
        let node_selector = Selector::parse(spec.effective_node_selector()).map_err(|e| {
            IpamError::InvalidPool {
                name: name.clone(),
                field: "spec.nodeSelector".into(),
                reason: e.to_string(),
            }
        })?;
        Ok(Pool {
            name,
            cidr: spec.cidr,
            block_size: spec.effective_block_size(),
            disabled: spec.disabled,
            nat_outgoing: spec.nat_outgoing,
            ipip_mode: spec.effective_ipip_mode(),
            vxlan_mode: spec.effective_vxlan_mode(),
            node_selector,
            assignment_mode: spec.effective_assignment_mode(),
            allowed_uses: spec.effective_allowed_uses(),
        })
    }

    pub fn family(&self) -> IpFamily {
        IpFamily::of_net(&self.cidr)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(&ip)
    }

    /// The block of this pool that holds `ip`, if the pool holds it.
    pub fn block_for(&self, ip: IpAddr) -> Option<IpNet> {
        if !self.contains(ip) {
            return None;
        }
        block_cidr_for(ip, self.block_size)
    }

    /// Whether `block` is one of this pool's blocks (inside it, of its block size).
    pub fn owns_block(&self, block: IpNet) -> bool {
        block.prefix_len() == self.block_size && self.cidr.contains(&block)
    }

    /// Addresses in the pool (saturating for a v6 /0).
    pub fn total_addresses(&self) -> u128 {
        let bits = u32::from(self.cidr.max_prefix_len() - self.cidr.prefix_len());
        1u128.checked_shl(bits).unwrap_or(u128::MAX)
    }

    /// Whether the pool serves `node` on its own (without being named in the request).
    pub fn selects<L: Labels + ?Sized>(&self, node_labels: &L) -> bool {
        !self.disabled
            && self.assignment_mode == AssignmentMode::Automatic
            && self.allowed_uses.contains(&AllowedUse::Workload)
            && self.node_selector.matches(node_labels)
    }

    /// Whether the name or CIDR given in a request (`ipv4_pools`) means this pool.
    pub fn matches_request(&self, requested: &str) -> bool {
        let requested = requested.trim();
        if requested == self.name {
            return true;
        }
        requested.parse::<IpNet>().is_ok_and(|net| net == self.cidr)
    }
}

/// The pools a node allocates from, in order. A non-empty `requested` list (names or CIDRs
/// from the netconf) is used as given, ignoring node selectors, as Calico does; each named
/// pool must exist, be enabled and be of `family`.
pub fn choose<'a, L: Labels + ?Sized>(
    pools: &'a [Pool],
    family: IpFamily,
    node: &str,
    node_labels: &L,
    requested: &[String],
) -> Result<Vec<&'a Pool>, IpamError> {
    let no_pool = |reason: String| IpamError::NoPool { family, node: node.to_string(), reason };
    if requested.is_empty() {
        let chosen: Vec<&Pool> =
            pools.iter().filter(|p| p.family() == family && p.selects(node_labels)).collect();
        if chosen.is_empty() {
            return Err(no_pool("no enabled pool selects this node".into()));
        }
        return Ok(chosen);
    }
    let mut chosen: Vec<&Pool> = Vec::with_capacity(requested.len());
    for want in requested {
        let pool = pools
            .iter()
            .find(|p| p.matches_request(want))
            .ok_or_else(|| no_pool(format!("requested pool {want:?} does not exist")))?;
        if pool.family() != family {
            return Err(no_pool(format!(
                "requested pool {want:?} ({}) is not {family}",
                pool.cidr
            )));
        }
        if pool.disabled {
            return Err(no_pool(format!("requested pool {want:?} is disabled")));
        }
        if !chosen.iter().any(|p| p.name == pool.name) {
            chosen.push(pool);
        }
    }
    Ok(chosen)
}

/// The first pool in `pools` whose CIDR overlaps `cidr` (other than the pool named `name`).
pub fn find_overlap<'a>(pools: &'a [Pool], name: &str, cidr: IpNet) -> Option<&'a Pool> {
    pools.iter().find(|p| p.name != name && nets_overlap(p.cidr, cidr))
}

/// Whether two networks share an address (same family and one contains the other).
pub fn nets_overlap(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The pool holding `ip`; enabled pools are preferred when (invalidly) several overlap.
pub fn containing(pools: &[Pool], ip: IpAddr) -> Option<&Pool> {
    pools
        .iter()
        .filter(|p| p.contains(ip))
        .min_by_key(|p| (p.disabled, std::cmp::Reverse(p.cidr.prefix_len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn res(name: &str, cidr: &str) -> Resource<IpPoolSpec> {
        Resource::new(name, IpPoolSpec::new(cidr.parse().unwrap()))
    }

    fn pool(name: &str, cidr: &str) -> Pool {
        Pool::from_resource(&res(name, cidr)).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    #[test]
    fn defaults_and_fields() {
        let p = pool("p1", "10.65.0.0/16");
        assert_eq!(p.block_size, 26);
        assert_eq!(p.family(), IpFamily::V4);
        assert!(p.node_selector.is_all());
        assert_eq!(p.total_addresses(), 65536);
        assert_eq!(pool("p6", "fd00::/64").block_size, 122);
        let mut r = res("p2", "10.66.0.0/16");
        r.spec.block_size = Some(24);
        r.spec.nat_outgoing = true;
        r.spec.ipip_mode = Some(EncapMode::Always);
        let p = Pool::from_resource(&r).unwrap();
        assert_eq!((p.block_size, p.nat_outgoing, p.ipip_mode), (24, true, EncapMode::Always));
    }

    #[test]
    fn invalid_pools_name_the_field() {
        let mut r = res("bad", "10.0.0.0/16");
        r.spec.block_size = Some(19);
        let err = Pool::from_resource(&r).unwrap_err();
        assert!(
            matches!(&err, IpamError::InvalidPool { field, .. } if field == "spec.blockSize"),
            "{err}"
        );
        let err = Pool::from_resource(&res("bad", "10.0.0.1/16")).unwrap_err();
        assert!(
            matches!(&err, IpamError::InvalidPool { field, .. } if field == "spec.cidr"),
            "{err}"
        );
        let mut r = res("bad", "10.0.0.0/16");
        r.spec.node_selector = Some("a ==".into());
        let err = Pool::from_resource(&r).unwrap_err();
        assert!(
            matches!(&err, IpamError::InvalidPool { field, .. } if field == "spec.nodeSelector"),
            "{err}"
        );
    }

    #[test]
    fn block_arithmetic() {
        let p = pool("p", "10.65.0.0/16");
        let ip: IpAddr = "10.65.3.77".parse().unwrap();
        assert_eq!(p.block_for(ip), Some("10.65.3.64/26".parse().unwrap()));
        assert_eq!(p.block_for("10.66.0.1".parse().unwrap()), None);
        assert!(p.owns_block("10.65.3.64/26".parse().unwrap()));
        assert!(!p.owns_block("10.65.3.0/24".parse().unwrap()));
    }

    #[test]
    fn choice_follows_selectors_and_requests() {
        let mut rack1 = res("rack1", "10.1.0.0/16");
        rack1.spec.node_selector = Some("rack == 'one'".into());
        let mut off = res("off", "10.3.0.0/16");
        off.spec.disabled = true;
        let mut manual = res("manual", "10.4.0.0/16");
        manual.spec.assignment_mode = Some(AssignmentMode::Manual);
        let pools = vec![
            Pool::from_resource(&rack1).unwrap(),
            pool("all", "10.2.0.0/16"),
            Pool::from_resource(&off).unwrap(),
            Pool::from_resource(&manual).unwrap(),
            pool("v6", "fd00::/64"),
        ];
        let names = |v: Vec<&Pool>| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        let one = labels(&[("rack", "one")]);
        let two = labels(&[("rack", "two")]);
        assert_eq!(names(choose(&pools, IpFamily::V4, "n", &one, &[]).unwrap()), ["rack1", "all"]);
        assert_eq!(names(choose(&pools, IpFamily::V4, "n", &two, &[]).unwrap()), ["all"]);
        assert_eq!(names(choose(&pools, IpFamily::V6, "n", &two, &[]).unwrap()), ["v6"]);
        // Explicit requests override selectors and may name manual pools, by name or CIDR.
        let req = vec!["rack1".to_string(), "10.4.0.0/16".to_string()];
        assert_eq!(
            names(choose(&pools, IpFamily::V4, "n", &two, &req).unwrap()),
            ["rack1", "manual"]
        );
        for bad in ["off", "nope", "v6"] {
            let err = choose(&pools, IpFamily::V4, "n", &two, &[bad.to_string()]).unwrap_err();
            assert!(matches!(err, IpamError::NoPool { .. }), "{bad}: {err}");
        }
        let only_rack = vec![pools[0].clone()];
        assert!(choose(&only_rack, IpFamily::V4, "n", &two, &[]).is_err());
    }

    #[test]
    fn overlap_and_containment() {
        let pools =
            vec![pool("a", "10.0.0.0/16"), pool("b", "10.1.0.0/16"), pool("c", "fd00::/64")];
        assert_eq!(
            find_overlap(&pools, "new", "10.0.128.0/24".parse().unwrap()).unwrap().name,
            "a"
        );
        assert_eq!(find_overlap(&pools, "new", "10.0.0.0/8".parse().unwrap()).unwrap().name, "a");
        assert!(find_overlap(&pools, "new", "10.2.0.0/16".parse().unwrap()).is_none());
        assert!(find_overlap(&pools, "a", "10.0.0.0/16".parse().unwrap()).is_none());
        assert!(find_overlap(&pools, "new", "fd00::/48".parse().unwrap()).is_some());
        assert!(!nets_overlap("10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()));
        assert_eq!(containing(&pools, "10.1.2.3".parse().unwrap()).unwrap().name, "b");
        assert!(containing(&pools, "10.9.2.3".parse().unwrap()).is_none());
    }
}
