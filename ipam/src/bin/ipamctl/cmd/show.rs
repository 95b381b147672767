//! `ipamctl show`: usage per pool (as `calicoctl ipam show`), per block, of one address, of
//! one host, and the borrowed addresses. Read-only: one listing of pools and one of blocks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use datastore::keys::IpFamily;
use ipam::admin;
use ipam::allocator::attr;
use ipam::query::{self, BlockUsage, Usage};
use ipam::store::{decode_block, StoredBlock};
use ipam::Pool;
use ipnet::IpNet;
use serde::Serialize;
use serde_json::json;

use super::{parse_ip, Ctx, Status};
use crate::cli::{Format, ShowArgs};
use crate::error::CliError;
use crate::output::{emit, to_json, with_percent, Table};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Pools,
    Blocks,
    Ip(IpAddr),
    Host(String),
    Borrowed,
}

pub fn parse(args: &ShowArgs) -> Result<View, CliError> {
    if let Some(ip) = &args.ip {
        return Ok(View::Ip(parse_ip("--ip", ip)?));
    }
    if let Some(host) = &args.host {
        let host = host.trim();
        if host.is_empty() || host.contains('/') {
            return Err(CliError::invalid("--host", host, "expected a node name"));
        }
        return Ok(View::Host(host.to_string()));
    }
    Ok(if args.blocks {
        View::Blocks
    } else if args.show_borrowed {
        View::Borrowed
    } else {
        View::Pools
    })
}

pub async fn run(ctx: &mut Ctx, view: &View) -> Result<Status, CliError> {
    if let View::Ip(ip) = view {
        return show_ip(ctx, *ip).await;
    }
    let (pools, blocks) = load(ctx).await?;
    let usage = query::summarise(&pools, &blocks);
    for c in &usage.corrupt {
        eprintln!(
            "warning: block {} is corrupt ({}); its addresses are not counted",
            c.key, c.reason
        );
    }
    let text = match (view, ctx.format) {
        (View::Pools, Format::Json) => {
            to_json(&json!({"pools": usage.pools, "corrupt": usage.corrupt}))?
        }
        (View::Pools, Format::Table) => pools_table(&usage),
        (View::Blocks, Format::Json) => {
            to_json(&json!({"blocks": usage.blocks, "corrupt": usage.corrupt}))?
        }
        (View::Blocks, Format::Table) => blocks_table(usage.blocks.iter()).render(),
        (View::Host(host), format) => host_view(host, &usage, &blocks, format)?,
        (View::Borrowed, format) => borrowed_view(&usage, format)?,
        (View::Ip(_), _) => String::new(),
    };
    emit(&text)?;
    Ok(Status::Clean)
}

/// Every valid pool and every block of both families (corrupt blocks kept, for warnings).
async fn load(ctx: &mut Ctx) -> Result<(Vec<Pool>, Vec<StoredBlock>), CliError> {
    ctx.progress.step("Listing IP pools");
    let (stored, invalid) = admin::list_pools(&ctx.client, &ctx.keys).await?;
    ctx.progress.done(&format!("{} pools", stored.len()));
    for (key, reason) in invalid {
        eprintln!("warning: {key} is not a valid IP pool: {reason}");
    }
    let mut blocks = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        ctx.progress.step(&format!("Listing {family} blocks"));
        let listing = ctx.client.list(&ctx.keys.blocks_prefix(family)).await?;
        let before = blocks.len();
        blocks.extend(listing.kvs.iter().filter_map(|kv| decode_block(&ctx.keys, kv)));
        ctx.progress.done(&format!("{} blocks", blocks.len() - before));
    }
    // Key order puts 10.0.100.0 before 10.0.2.0; operators read addresses in numeric order.
    blocks.sort_by_key(|b| b.cidr);
    Ok((stored.into_iter().map(|s| s.pool).collect(), blocks))
}

fn pools_table(usage: &Usage) -> String {
    let mut t = Table::new(
        &["POOL", "CIDR", "STATE", "BLOCKS", "IPS TOTAL", "IPS IN USE", "IPS FREE"],
        &[3, 4, 5, 6],
    );
    for p in &usage.pools {
        t.push(vec![
            p.name.clone(),
            p.cidr.to_string(),
            if p.disabled { "disabled" } else { "enabled" }.into(),
            p.blocks.to_string(),
            p.total.to_string(),
            with_percent(u128::from(p.in_use), p.total),
            with_percent(p.free, p.total),
        ]);
    }
    let mut out = t.render();
    let outside: Vec<&BlockUsage> = usage.blocks.iter().filter(|b| b.pool.is_none()).collect();
    if !outside.is_empty() {
        let in_use: u64 = outside.iter().map(|b| b.in_use).sum();
        let _ = writeln!(out, "\n{} blocks lie outside every pool, with {in_use} addresses in use (see `show --blocks`)",
            outside.len());
    }
    out
}

fn blocks_table<'a>(blocks: impl Iterator<Item = &'a BlockUsage>) -> Table {
    let mut t = Table::new(
        &["BLOCK", "POOL", "AFFINITY", "IPS TOTAL", "IPS IN USE", "IPS FREE", "BORROWED"],
        &[3, 4, 5, 6],
    );
    for b in blocks {
        let total = u128::from(b.total);
        t.push(vec![
            b.cidr.to_string(),
            b.pool.clone().unwrap_or_else(|| "-".into()),
            b.host.as_ref().map_or_else(|| "-".into(), |h| format!("host:{h}")),
            b.total.to_string(),
            with_percent(u128::from(b.in_use), total),
            with_percent(u128::from(b.free), total),
            b.borrowed.len().to_string(),
        ]);
    }
    t
}

/// One allocation, for `show --host`.
#[derive(Debug, Serialize)]
struct HostAllocation {
    ip: IpAddr,
    block: IpNet,
    handle: Option<String>,
    container_id: Option<String>,
    /// The block is affine to another host (or none).
    borrowed: bool,
}

fn host_view(
    host: &str,
    usage: &Usage,
    blocks: &[StoredBlock],
    format: Format,
) -> Result<String, CliError> {
    let affine: Vec<&BlockUsage> = usage.host_blocks(host).collect();
    let mut allocations = Vec::new();
    for sb in blocks {
        let Ok(block) = &sb.block else { continue };
        for a in block.allocations() {
            if a.attrs.get(attr::NODE).map(String::as_str) != Some(host) {
                continue;
            }
            allocations.push(HostAllocation {
                ip: a.ip,
                block: sb.cidr,
                container_id: a.attrs.get(attr::CONTAINER_ID).cloned(),
                handle: a.handle,
                borrowed: !block.is_affine_to(host),
            });
        }
    }
    if format == Format::Json {
        return to_json(&json!({"host": host, "blocks": affine, "allocations": allocations}));
    }
    let mut out = format!("Blocks affine to {host}: {}\n", affine.len());
    if !affine.is_empty() {
        out.push_str(&blocks_table(affine.iter().copied()).render_indented("  "));
    }
    let _ = writeln!(out, "\nAddresses allocated to {host}: {}", allocations.len());
    if !allocations.is_empty() {
        let mut t = Table::new(&["IP", "BLOCK", "HANDLE", "CONTAINER", "BORROWED"], &[]);
        for a in &allocations {
            t.push(vec![
                a.ip.to_string(),
                a.block.to_string(),
                a.handle.clone().unwrap_or_else(|| "-".into()),
                a.container_id.clone().unwrap_or_else(|| "-".into()),
                if a.borrowed { "yes" } else { "no" }.into(),
            ]);
        }
        out.push_str(&t.render_indented("  "));
    }
    Ok(out)
}

fn borrowed_view(usage: &Usage, format: Format) -> Result<String, CliError> {
    #[derive(Serialize)]
    struct Row<'a> {
        ip: IpAddr,
        borrowing_node: Option<&'a str>,
        block: IpNet,
        block_owner: Option<&'a str>,
        handle: Option<&'a str>,
    }
    let rows: Vec<Row<'_>> = usage
        .blocks
        .iter()
        .flat_map(|b| {
            b.borrowed.iter().map(move |x| Row {
                ip: x.ip,
                borrowing_node: x.node.as_deref(),
                block: b.cidr,
                block_owner: b.host.as_deref(),
                handle: x.handle.as_deref(),
            })
        })
        .collect();
    if format == Format::Json {
        return to_json(&rows);
    }
    let mut t = Table::new(&["IP", "BORROWING NODE", "BLOCK", "BLOCK OWNER", "HANDLE"], &[]);
    for r in &rows {
        let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
        t.push(vec![
            r.ip.to_string(),
            dash(r.borrowing_node),
            r.block.to_string(),
            dash(r.block_owner),
            dash(r.handle),
        ]);
    }
    Ok(t.render())
}

async fn show_ip(ctx: &Ctx, ip: IpAddr) -> Result<Status, CliError> {
    let (pools, _) = admin::list_pools(&ctx.client, &ctx.keys).await?;
    let pool = pools.iter().find(|p| p.pool.contains(ip)).map(|p| p.pool.name.clone());
    let found = query::get_assignment(&ctx.client, &ctx.keys, ip).await?;
    let Some(a) = found else {
        let text = match ctx.format {
            Format::Json => to_json(&json!({"ip": ip, "assigned": false, "pool": pool}))?,
            Format::Table => match &pool {
                Some(_) => format!("{ip} is not assigned\n"),
                None => format!("{ip} is not assigned (it is not inside any IP pool)\n"),
            },
        };
        emit(&text)?;
        return Ok(Status::Clean);
    };
    let node = a.allocation.attrs.get(attr::NODE).cloned();
    let borrowed = node.is_some() && node != a.block_host;
    if ctx.format == Format::Json {
        emit(&to_json(&json!({
            "ip": ip,
            "assigned": true,
            "pool": pool,
            "handle": a.allocation.handle,
            "block": a.block,
            "block_host": a.block_host,
            "borrowed": borrowed,
            "sequence": a.allocation.sequence,
            "attributes": a.allocation.attrs,
        }))?)?;
        return Ok(Status::Clean);
    }
    let mut fields: BTreeMap<usize, (&str, String)> = BTreeMap::new();
    fields.insert(0, ("Handle", a.allocation.handle.clone().unwrap_or_else(|| "<none>".into())));
    let owner = a.block_host.as_deref().map_or_else(|| "no host".into(), |h| format!("host {h}"));
    fields.insert(1, ("Block", format!("{} (affine to {owner})", a.block)));
    fields.insert(2, ("Pool", pool.unwrap_or_else(|| "<none: outside every pool>".into())));
    fields.insert(3, ("Borrowed", if borrowed { "yes" } else { "no" }.into()));
    if let Some(seq) = a.allocation.sequence {
        fields.insert(4, ("Sequence", seq.to_string()));
    }
    let width = fields.values().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = format!("{ip} is assigned\n");
    for (k, v) in fields.values() {
        let _ = writeln!(out, "{:<width$} {v}", format!("{k}:"));
    }
    out.push_str("Attributes:\n");
    let mut t = Table::new(&["KEY", "VALUE"], &[]);
    for (k, v) in &a.allocation.attrs {
        t.push(vec![k.clone(), v.clone()]);
    }
    out.push_str(&t.render_indented("  "));
    emit(&out)?;
    Ok(Status::Clean)
}
