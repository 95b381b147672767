//! The operators' Calico scenario: networks (and profiles) `web`, `app`, `mysqldb` and
//! `db-users`, set up with the Calico v1 profile commands they ran, and what it must allow.
//!
//! - `web` accepts tcp 80 and 443 from anyone, and everything from `web`;
//! - `app` accepts everything from `web`, and nothing else;
//! - `mysqldb` accepts tcp 3306 from `db-users`, and nothing else;
//! - `app` endpoints carry the `db-users` tag (label);
//! - every profile allows all egress (the classic default).

use std::time::Duration;

use crate::cluster::{Cluster, ClusterBuilder, Endpoint};
use crate::probe::Service;

/// The TCP ports every scenario workload answers on: the allowed ones and one nobody allows.
pub const PORTS: [u16; 4] = [80, 443, 3306, 8080];

/// The workloads of the two-host scenario: (name, network, host index).
pub const WORKLOADS: [(&str, &str, usize); 5] = [
    ("web-a", "web", 0),
    ("web-b", "web", 1),
    ("app-a", "app", 0),
    ("app-b", "app", 1),
    ("db-a", "mysqldb", 0),
];

/// The operator's commands, as `tabbyctl` argument lists, in order.
///
/// Each `profile add` leaves an existing profile alone (as calicoctl did), and a profile the
/// CNI plugin created for a network has the same classic default that `profile add` gives
/// (`allow from tag <name>` inbound, allow all outbound), so the commands give the same
/// result whether they run before or after the first workload of a network.
pub const COMMANDS: &[&[&str]] = &[
    &["profile", "add", "web"],
    &["profile", "web", "rule", "add", "inbound", "allow", "tcp", "to", "ports", "80,443"],
    &["profile", "add", "app"],
    &["profile", "app", "rule", "remove", "inbound", "allow", "from", "tag", "app"],
    &["profile", "app", "rule", "add", "inbound", "allow", "from", "tag", "web"],
    &["profile", "app", "tag", "add", "db-users"],
    &["profile", "add", "mysqldb"],
    &["profile", "mysqldb", "rule", "remove", "inbound", "allow", "from", "tag", "mysqldb"],
    &[
        "profile", "mysqldb", "rule", "add", "inbound", "allow", "tcp", "from", "tag", "db-users",
        "to", "ports", "3306",
    ],
    &["profile", "add", "db-users"],
];

/// Every service the scenario matrix measures: the TCP ports and ICMP echo.
pub fn services() -> Vec<Service> {
    PORTS.iter().map(|&p| Service::Tcp(p)).chain([Service::Icmp]).collect()
}

/// Runs [`COMMANDS`] through `tabbyctl`; panics on the first that fails. Returns the command
/// lines as run, for display.
pub fn apply(cluster: &Cluster) -> Vec<String> {
    COMMANDS
        .iter()
        .map(|args| {
            cluster.tabbyctl_ok(args);
            format!("tabbyctl {}", args.join(" "))
        })
        .collect()
}

/// Starts [`WORKLOADS`] (hosts beyond the cluster's are folded onto its last host); returns
/// their probe views.
pub fn start_workloads(cluster: &mut Cluster) -> Vec<Endpoint> {
    let last = cluster.hosts().len() - 1;
    WORKLOADS
        .iter()
        .map(|&(name, network, host)| cluster.add_workload(host.min(last), network, name))
        .collect()
}

/// Starts a cluster from `builder`, attaches [`WORKLOADS`], applies [`COMMANDS`] and waits up
/// to `ready` for the agents to report ready; returns the cluster and the workloads' probe
/// views. The dataplane may still be converging: measure with a bounded wait.
pub fn start(builder: ClusterBuilder, ready: Duration) -> (Cluster, Vec<Endpoint>) {
    let mut cluster = builder.start();
    let endpoints = start_workloads(&mut cluster);
    apply(&cluster);
    cluster.wait_ready(ready);
    (cluster, endpoints)
}

/// The labels a workload on `network` carries (its profile's `labelsToApply`).
pub fn labels(network: &str) -> &'static [&'static str] {
    match network {
        "web" => &["web"],
        "app" => &["app", "db-users"],
        "mysqldb" => &["mysqldb"],
        "db-users" => &["db-users"],
        _ => &[],
    }
}

/// Whether the scenario lets `service` traffic from `from` reach `to`.
pub fn allowed(from: &Endpoint, to: &Endpoint, service: Service) -> bool {
    let has = |label: &str| labels(&from.network).contains(&label);
    match to.network.as_str() {
        "web" => matches!(service, Service::Tcp(80 | 443)) || has("web"),
        "app" => has("web"),
        "mysqldb" => service == Service::Tcp(3306) && has("db-users"),
        "db-users" => has("db-users"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn ep(name: &str, network: &str) -> Endpoint {
        Endpoint {
            name: name.into(),
            network: network.into(),
            host: "host-a".into(),
            ip: std::net::Ipv4Addr::LOCALHOST,
            netns: PathBuf::new(),
        }
    }

    #[test]
    fn expectations_follow_the_operators_rules() {
        let (web, app, db) = (ep("w", "web"), ep("a", "app"), ep("d", "mysqldb"));
        // web: 80/443 from anyone, everything from web.
        assert!(allowed(&app, &web, Service::Tcp(80)));
        assert!(allowed(&db, &web, Service::Tcp(443)));
        assert!(!allowed(&app, &web, Service::Tcp(8080)));
        assert!(!allowed(&app, &web, Service::Icmp));
        assert!(allowed(&web, &web, Service::Tcp(8080)));
        assert!(allowed(&web, &web, Service::Icmp));
        // app: everything from web only.
        assert!(allowed(&web, &app, Service::Tcp(3306)));
        assert!(!allowed(&app, &app, Service::Tcp(80)));
        assert!(!allowed(&db, &app, Service::Icmp));
        // mysqldb: 3306 from db-users (the app endpoints) only.
        assert!(allowed(&app, &db, Service::Tcp(3306)));
        assert!(!allowed(&web, &db, Service::Tcp(3306)));
        assert!(!allowed(&app, &db, Service::Tcp(80)));
        assert!(!allowed(&app, &db, Service::Icmp));
    }
}
