//! The agent repairs a workload's device route, black box: two simulated hosts with real
//! agents (a short `route_refresh_interval`) and CNI workloads; someone deletes a workload's
//! `<ip>/32 dev cali…` route on its host with `ip route del`, and within the refresh interval
//! the route is back (tabby's protocol, scope link) and the workload reachable again.

use std::time::Duration;

use tests::cluster::{Cluster, Endpoint};
use tests::probe::{all_pairs, Matrix, Service};
use tests::wait;

/// Agents report ready within this.
const READY: Duration = Duration::from_secs(20);
/// A change in etcd shows in the dataplane within this.
const CONVERGE: Duration = Duration::from_secs(15);
/// The agents' route refresh period in this test.
const REFRESH: Duration = Duration::from_secs(2);
const PORT: u16 = 8080;

fn everyone_reaches_everyone(what: &str, endpoints: &[Endpoint], within: Duration) {
    let services = [Service::Tcp(PORT)];
    Matrix::assert_eventually(what, &all_pairs(endpoints), &services, &|_, _, _| true, within);
}

#[test]
fn deleted_workload_route_comes_back_within_the_refresh_interval() {
    let mut cluster = Cluster::builder()
        .serve_ports(&[PORT])
        .agent_setting("route_refresh_interval", &format!("\"{}s\"", REFRESH.as_secs()))
        .start();
    cluster.wait_ready(READY);
    let endpoints: Vec<Endpoint> =
        (0..2).map(|i| cluster.add_workload(i, "net", &format!("w{i}"))).collect();
    everyone_reaches_everyone("before the route is deleted", &endpoints, CONVERGE);

    let workload = cluster.workload("w0");
    let (ip, ifname) = (workload.ip(), workload.host_ifname().to_string());
    let host = cluster.host(workload.host_index());
    let deleted = host.sh(&format!("ip route del {ip}/32 dev {ifname}"));
    assert!(deleted.status.is_some_and(|s| s.success()), "{deleted:?}");

    // Nothing in etcd changed: only the refresh can bring it back.
    let want = format!("{ip} dev {ifname} proto 112 scope link");
    wait::until(&format!("{}: {want}", host.name()), REFRESH * 3, || {
        let shown = host.sh(&format!("ip -4 route show {ip}/32")).stdout;
        if shown.trim() == want {
            Ok(())
        } else {
            Err(shown)
        }
    });
    everyone_reaches_everyone("after the repair", &endpoints, REFRESH * 3);
    assert!(
        host.agent_log().contains("workload device route was missing; put it back"),
        "{}",
        host.agent_log_tail(30)
    );
}
