//! `ipamctl check`: reads blocks, handles, affinities, endpoints and nodes at one revision and
//! prints every problem grouped by kind, with counts; exit 1 when anything is found.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipam::check::Report;

use super::{Ctx, Status};
use crate::cli::Format;
use crate::error::CliError;
use crate::output::{emit, to_json, Table};

pub async fn run(ctx: &mut Ctx) -> Result<Status, CliError> {
    ctx.progress.step("Reading blocks, handles, affinities, endpoints and nodes");
    let report = ipam::check::check(&ctx.client, &ctx.keys).await?;
    ctx.progress.done(&format!(
        "{} blocks, {} handles, {} allocations",
        report.counts.blocks, report.counts.handles, report.counts.allocations
    ));
    let text = match ctx.format {
        Format::Json => to_json(&report)?,
        Format::Table => render(&report),
    };
    emit(&text)?;
    Ok(if report.is_clean() { Status::Clean } else { Status::Problems })
}

/// The human report: what was read, then one section per kind of problem found.
pub fn render(r: &Report) -> String {
    let c = &r.counts;
    let mut out = format!(
        "Checked IPAM at revision {}: {} pools, {} blocks, {} affinities, {} handles, \
         {} allocations, {} workload endpoints, {} nodes.\n",
        r.revision,
        c.pools,
        c.blocks,
        c.affinities,
        c.handles,
        c.allocations,
        c.workload_endpoints,
        c.nodes
    );
    for (title, table) in sections(r) {
        if table.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}: {}", table.len());
        out.push_str(&table.render_indented("  "));
    }
    let n = r.problems();
    if n == 0 {
        out.push_str("\nCheck complete: no problems found.\n");
    } else {
        let _ = writeln!(out, "\nCheck complete: found {n} problem{}.", plural(n));
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn dash(v: Option<&String>) -> String {
    v.cloned().unwrap_or_else(|| "-".into())
}

fn counts(m: &BTreeMap<String, u32>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter().map(|(b, n)| format!("{b}={n}")).collect::<Vec<_>>().join(",")
}

/// One table per kind of problem, in the order an operator should read them.
fn sections(r: &Report) -> Vec<(&'static str, Table)> {
    let mut out = Vec::new();

    let mut t = Table::new(&["KEY", "REASON"], &[]);
    for x in &r.corrupt_records {
        t.push(vec![x.key.clone(), x.reason.clone()]);
    }
    out.push(("Corrupt records (skipped by the allocator)", t));

    let mut t = Table::new(&["IP", "BLOCK", "HANDLE", "NODE", "CONTAINER", "ALLOCATED"], &[]);
    for x in &r.leaked {
        t.push(vec![
            x.ip.to_string(),
            x.block.to_string(),
            dash(x.handle.as_ref()),
            dash(x.node.as_ref()),
            dash(x.container_id.as_ref()),
            dash(x.timestamp.as_ref()),
        ]);
    }
    out.push(("Leaked addresses (no workload endpoint accounts for them)", t));

    let mut t = Table::new(&["HANDLE", "RECORDED"], &[]);
    for x in &r.handles_without_allocations {
        t.push(vec![x.handle.clone(), counts(&x.recorded)]);
    }
    out.push(("Handles without allocations", t));

    let mut t = Table::new(&["IP", "BLOCK", "HANDLE"], &[]);
    for x in &r.allocations_without_handles {
        t.push(vec![x.ip.to_string(), x.block.to_string(), dash(x.handle.as_ref())]);
    }
    out.push(("Allocations without handles", t));

    let mut t = Table::new(&["HANDLE", "RECORDED", "ACTUAL"], &[]);
    for x in &r.handle_count_mismatches {
        t.push(vec![x.handle.clone(), counts(&x.recorded), counts(&x.actual)]);
    }
    out.push(("Handles whose counts disagree with the blocks", t));

    let mut t = Table::new(&["BLOCK", "HOSTS"], &[]);
    for x in &r.duplicate_affinities {
        t.push(vec![x.block.to_string(), x.hosts.join(",")]);
    }
    out.push(("Duplicate affinities", t));

    let mut t = Table::new(&["HOST", "BLOCK", "STATE", "REASON"], &[]);
    for x in &r.orphaned_affinities {
        t.push(vec![x.host.clone(), x.block.to_string(), x.state.into(), x.reason.clone()]);
    }
    out.push(("Orphaned affinities", t));

    let mut t = Table::new(&["HOST", "BLOCK", "STATE", "REASON"], &[]);
    for x in &r.pending_affinities {
        t.push(vec![x.host.clone(), x.block.to_string(), x.state.into(), x.reason.clone()]);
    }
    out.push(("Unconfirmed affinities", t));

    for (title, list) in [
        ("Blocks without their affinity", &r.blocks_without_affinity),
        ("Blocks of deleted nodes", &r.blocks_of_deleted_nodes),
        ("Blocks outside every pool", &r.blocks_outside_pools),
    ] {
        let mut t = Table::new(&["BLOCK", "HOST", "IN USE"], &[2]);
        for x in list {
            t.push(vec![x.block.to_string(), dash(x.host.as_ref()), x.in_use.to_string()]);
        }
        out.push((title, t));
    }

    let mut t = Table::new(&["BLOCK", "OVERLAPS"], &[]);
    for [a, b] in &r.overlapping_blocks {
        t.push(vec![a.to_string(), b.to_string()]);
    }
    out.push(("Overlapping blocks", t));

    let mut t = Table::new(&["IP", "BLOCKS"], &[]);
    for x in &r.duplicate_addresses {
        let blocks: Vec<String> = x.blocks.iter().map(ToString::to_string).collect();
        t.push(vec![x.ip.to_string(), blocks.join(",")]);
    }
    out.push(("Addresses allocated twice", t));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::check::{AllocationRef, HandleIssue};
    use ipam::inventory::CorruptRecord;

    #[test]
    fn clean_and_dirty_reports_read_well() {
        let clean = Report::default();
        assert!(render(&clean).ends_with("Check complete: no problems found.\n"));

        let mut r = Report::default();
        r.corrupt_records.push(CorruptRecord { key: "/k/b".into(), reason: "not JSON".into() });
        r.handles_without_allocations.push(HandleIssue {
            handle: "net.a.eth0".into(),
            recorded: [("10.0.0.0/26".to_string(), 1)].into_iter().collect(),
            actual: BTreeMap::new(),
            mod_revision: 3,
        });
        r.allocations_without_handles.push(AllocationRef {
            ip: "10.0.0.7".parse().unwrap(),
            block: "10.0.0.0/26".parse().unwrap(),
            handle: Some("net.b.eth0".into()),
        });
        let text = render(&r);
        assert!(text.contains("Corrupt records (skipped by the allocator): 1\n  KEY"), "{text}");
        assert!(text.contains("Handles without allocations: 1\n"), "{text}");
        assert!(text.contains("  net.a.eth0   10.0.0.0/26=1\n"), "{text}");
        assert!(text.contains("Allocations without handles: 1\n"), "{text}");
        assert!(!text.contains("Duplicate affinities"), "empty kinds are left out: {text}");
        assert!(text.ends_with("Check complete: found 3 problems.\n"), "{text}");
    }
}
