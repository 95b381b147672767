//! The BIRD 2 config text of a [`BirdPlan`] (pure, golden-tested).
//!
//! Shape, after Calico's `bird.cfg` templates:
//! - `protocol static tabby_blocks`: a blackhole per local block. It is what BIRD advertises
//!   (the whole block: more specific routes never leave the host); the kernel's blackholes
//!   stay the agent's (protocol 112), so the data path does not depend on BIRD running.
//! - `filter tabby_export`: to peers, only those blocks, and blocks learned over BGP (so a
//!   route reflector reflects them).
//! - `filter tabby_kernel`: into the kernel (as `proto bird`), only routes learned over BGP,
//!   minus the blocks of IPIP pools, which the agent routes through `tunl0` itself.
//! - `protocol direct` and the kernel protocol's `learn` give BIRD the routes to its peers'
//!   addresses, which `gateway recursive` resolves next hops with.
//! - one `protocol bgp` per session, from `template bgp tabby_peer`.

use std::fmt::Write as _;

use super::peers::{BirdPlan, PoolRoutes, Session};

/// The config text; the same plan always gives the same bytes.
pub fn render(plan: &BirdPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# BIRD 2 config of node {} written by tabby-agent: edits are overwritten.",
        plan.nodename
    );
    let _ = writeln!(out, "router id {};\n", plan.router_id);
    render_filters(&mut out, &plan.pools);
    out.push_str(
        "protocol device {\n  scan time 2;\n}\n\n\
         protocol direct {\n  ipv4;\n  interface -\"cali*\", -\"tunl0\", \"*\";\n}\n\n\
         protocol kernel {\n  ipv4 {\n    import all;\n    export filter tabby_kernel;\n  };\n  \
         learn;\n  scan time 2;\n  merge paths on;\n}\n\n",
    );
    out.push_str("protocol static tabby_blocks {\n  ipv4;\n");
    for block in &plan.local_blocks {
        let _ = writeln!(out, "  route {block} blackhole;");
    }
    out.push_str("}\n\n");
    let _ = write!(
        out,
        "template bgp tabby_peer {{\n  local as {};\n  multihop;\n  connect delay time 2;\n  \
         connect retry time 5;\n  error wait time 5,30;\n  ipv4 {{\n    import all;\n    \
         export filter tabby_export;\n    gateway recursive;\n  }};\n}}\n",
        plan.as_number
    );
    for session in &plan.sessions {
        render_session(&mut out, plan, session);
    }
    out
}

fn render_filters(out: &mut String, pools: &[PoolRoutes]) {
    // BIRD refuses an empty prefix set, so each set is written only when it has members.
    let set = |items: Vec<String>| format!("[ {} ]", items.join(", "));
    let blocks: Vec<String> = pools
        .iter()
        .filter(|p| !p.no_export)
        .map(|p| format!("{}{{{},{}}}", p.cidr, p.block_size, p.block_size))
        .collect();
    out.push_str("filter tabby_export {\n  if proto = \"tabby_blocks\" then accept;\n");
    if !blocks.is_empty() {
        let _ = writeln!(out, "  if source = RTS_BGP && net ~ {} then accept;", set(blocks));
    }
    out.push_str("  reject;\n}\n\n");

    let tunnelled: Vec<String> =
        pools.iter().filter(|p| p.ipip).map(|p| format!("{}+", p.cidr)).collect();
    out.push_str("filter tabby_kernel {\n  if source != RTS_BGP then reject;\n");
    if !tunnelled.is_empty() {
        let _ = writeln!(
            out,
            "  # IPIP pools: tabby-agent routes their blocks through tunl0.\n  \
             if net ~ {} then reject;",
            set(tunnelled)
        );
    }
    out.push_str("  accept;\n}\n\n");
}

fn render_session(out: &mut String, plan: &BirdPlan, s: &Session) {
    let _ = write!(
        out,
        "\n# {}\nprotocol bgp {} from tabby_peer {{\n  neighbor {}",
        s.why,
        s.protocol_name(),
        s.address
    );
    if let Some(port) = s.port {
        let _ = write!(out, " port {port}");
    }
    let _ = writeln!(out, " as {};\n  source address {};", s.as_number, plan.router_id);
    if s.passive {
        out.push_str("  passive on;\n");
    }
    if let (true, Some(id)) = (s.rr_client, plan.rr_cluster_id) {
        let _ = writeln!(out, "  rr client;\n  rr cluster id {id};");
    }
    out.push_str("}\n");
}
