//! The route diff: a pure function of the desired routes and the kernel's routes to the
//! changes that make the kernel match, touching only routes the agent owns.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::{DesiredRoute, KernelRoute, RouteOp};

/// The operations that bring `observed` to `desired`, adds and replaces first (so traffic
/// never loses a route it has), then deletes; each group sorted by destination.
///
/// Only routes that are ours ([`KernelRoute::is_ours`]) are replaced or deleted. A desired
/// destination already held by someone else's route in the default-metric slot is left
/// alone: adding ours
/// would clobber theirs. [`conflicts`] lists those so the caller can say so.
pub fn diff(desired: &BTreeSet<DesiredRoute>, observed: &[KernelRoute]) -> Vec<RouteOp> {
    let mut ours: BTreeMap<IpNet, Vec<&KernelRoute>> = BTreeMap::new();
    for route in observed.iter().filter(|r| r.is_ours()) {
        ours.entry(route.dst).or_default().push(route);
    }
    let foreign = foreign_slots(observed);

    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    let mut wanted: BTreeSet<IpNet> = BTreeSet::new();
    for route in desired {
        // One route per destination: a second desired route to the same place is a planner
        // bug, and the first one wins.
        if !wanted.insert(route.dst) {
            continue;
        }
        let existing = ours.remove(&route.dst).unwrap_or_default();
        let exact = existing.iter().position(|k| k.as_desired() == Some(*route));
        let in_slot = existing.iter().position(|k| k.in_default_slot());
        match (exact, in_slot) {
            (Some(keep), _) => {
                deletes.extend(
                    existing
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != keep)
                        .map(|(_, k)| (*k).clone()),
                );
            }
            (None, Some(slot)) => {
                upserts.push(RouteOp::Replace { old: existing[slot].clone(), new: *route });
                deletes.extend(
                    existing
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != slot)
                        .map(|(_, k)| (*k).clone()),
                );
            }
            (None, None) => {
                deletes.extend(existing.iter().map(|k| (*k).clone()));
                if !foreign.contains(&route.dst) {
                    upserts.push(RouteOp::Add(*route));
                }
            }
        }
    }
    for routes in ours.into_values() {
        deletes.extend(routes.into_iter().cloned());
    }
    upserts.sort_by_key(RouteOp::dst);
    deletes.sort();
    upserts.into_iter().chain(deletes.into_iter().map(RouteOp::Delete)).collect()
}

/// Desired routes not programmed because another owner's route holds the destination.
pub fn conflicts<'a>(
    desired: &'a BTreeSet<DesiredRoute>,
    observed: &'a [KernelRoute],
) -> Vec<(&'a DesiredRoute, &'a KernelRoute)> {
    let ours_at: BTreeSet<IpNet> =
        observed.iter().filter(|r| r.is_ours() && r.in_default_slot()).map(|r| r.dst).collect();
    desired
        .iter()
        .filter(|d| !ours_at.contains(&d.dst))
        .filter_map(|d| {
            observed
                .iter()
                .find(|k| k.dst == d.dst && k.in_default_slot() && !k.is_ours())
                .map(|k| (d, k))
        })
        .collect()
}

/// Destinations whose default-metric slot is held by routes that are not ours.
fn foreign_slots(observed: &[KernelRoute]) -> BTreeSet<IpNet> {
    observed.iter().filter(|r| !r.is_ours() && r.in_default_slot()).map(|r| r.dst).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::KernelRouteKind;
    use super::*;

    fn desired(routes: &[&str]) -> BTreeSet<DesiredRoute> {
        routes.iter().map(|r| r.parse().unwrap()).collect()
    }

    fn kernel(dst: &str, protocol: u8, gateway: Option<&str>) -> KernelRoute {
        KernelRoute {
            dst: dst.parse().unwrap(),
            protocol,
            kind: if gateway.is_some() {
                KernelRouteKind::Unicast
            } else {
                KernelRouteKind::Blackhole
            },
            gateway: gateway.map(|g| g.parse().unwrap()),
            oif: None,
            metric: 0,
            onlink: false,
        }
    }

    fn texts(ops: &[RouteOp]) -> Vec<String> {
        ops.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn nothing_to_do_when_in_step() {
        let want = desired(&["blackhole 10.65.0.0/26", "10.65.0.64/26 via 192.0.2.2"]);
        let have =
            [kernel("10.65.0.0/26", 112, None), kernel("10.65.0.64/26", 112, Some("192.0.2.2"))];
        assert!(diff(&want, &have).is_empty());
    }

    #[test]
    fn foreign_routes_are_never_touched() {
        let want = desired(&["blackhole 10.65.0.0/26"]);
        let have = [kernel("10.65.0.0/26", 4, None), kernel("10.99.0.0/16", 4, Some("192.0.2.9"))];
        assert!(diff(&want, &have).is_empty());
        assert_eq!(conflicts(&want, &have).len(), 1);
    }

    #[test]
    fn moved_block_is_replaced_and_stale_ones_deleted_last() {
        let want = desired(&["10.65.0.0/26 via 192.0.2.3", "blackhole 10.65.1.0/26"]);
        let have =
            [kernel("10.65.0.0/26", 112, Some("192.0.2.2")), kernel("10.65.9.0/26", 112, None)];
        assert_eq!(
            texts(&diff(&want, &have)),
            [
                "replace 10.65.0.0/26 via 192.0.2.3 (was 10.65.0.0/26 via 192.0.2.2 proto 112)",
                "add blackhole 10.65.1.0/26",
                "delete blackhole 10.65.9.0/26 proto 112",
            ]
        );
    }
}
