//! `ipamctl pool add|ls|rm|disable|enable`: pools are validated here (CIDR, block size,
//! selector) before etcd is contacted, and the library refuses overlaps at write time.

use datastore::model::{EncapMode, IpPool, IpPoolSpec, Resource};
use ipam::admin;
use ipam::{IpamError, Pool};
use ipnet::IpNet;
use serde_json::json;

use super::{Ctx, Status};
use crate::cli::{Format, IpipMode, PoolAddArgs};
use crate::error::CliError;
use crate::output::{emit, to_json, Table};

/// The pool resource `pool add` would write, validated as the allocator will read it.
pub fn parse_add(args: &PoolAddArgs) -> Result<IpPool, CliError> {
    let cidr: IpNet = args.cidr.trim().parse().map_err(|e| {
        CliError::invalid(
            "CIDR",
            &args.cidr,
            format!("{e}; expected a network such as 10.65.0.0/16 or fd00:65::/64"),
        )
    })?;
    let block_size = match args.block_size {
        None => None,
        Some(n) => Some(u8::try_from(n).map_err(|_| {
            CliError::invalid("--block-size", n.to_string(), block_size_range(cidr))
        })?),
    };
    let mut spec = IpPoolSpec::new(cidr);
    spec.block_size = block_size;
    spec.ipip_mode = args.ipip_mode.map(|m| match m {
        IpipMode::Never => EncapMode::Never,
        IpipMode::Always => EncapMode::Always,
        IpipMode::CrossSubnet => EncapMode::CrossSubnet,
    });
    spec.nat_outgoing = args.nat_outgoing;
    spec.node_selector.clone_from(&args.node_selector);
    spec.disabled = args.disabled;
    let resource = Resource::new(args.name.clone(), spec);
    Pool::from_resource(&resource).map_err(|e| invalid_pool(e, args))?;
    Ok(resource)
}

fn block_size_range(cidr: IpNet) -> String {
    match cidr {
        IpNet::V4(_) => "out of range for an IPv4 pool: expected 20-32".into(),
        IpNet::V6(_) => "out of range for an IPv6 pool: expected 116-128".into(),
    }
}

/// Names the command-line argument behind the pool field the validator refused.
fn invalid_pool(e: IpamError, args: &PoolAddArgs) -> CliError {
    let IpamError::InvalidPool { field, reason, .. } = e else {
        return CliError::Ipam(e);
    };
    let reason = reason.strip_prefix(&format!("{field}: ")).unwrap_or(&reason).to_string();
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let (arg, value) = match field.as_str() {
        "spec.cidr" => ("CIDR", args.cidr.clone()),
        "spec.blockSize" => {
            ("--block-size", args.block_size.map(|n| n.to_string()).unwrap_or_default())
        }
        "spec.nodeSelector" => ("--node-selector", opt(&args.node_selector)),
        "spec.ipipMode" => {
            ("--ipip-mode", format!("{:?}", args.ipip_mode.unwrap_or(IpipMode::Never)))
        }
        "metadata.name" => ("NAME", args.name.clone()),
        _ => ("pool", format!("{} ({field})", args.name)),
    };
    CliError::invalid(arg, value, reason)
}

pub async fn add(ctx: &Ctx, resource: &IpPool) -> Result<Status, CliError> {
    let pool = admin::create_pool(&ctx.client, &ctx.keys, resource).await?;
    match ctx.format {
        Format::Json => emit(&to_json(resource)?)?,
        Format::Table => emit(&format!(
            "Created IP pool {} ({}, /{} blocks{})\n",
            pool.name,
            pool.cidr,
            pool.block_size,
            if pool.disabled { ", disabled" } else { "" }
        ))?,
    }
    Ok(Status::Clean)
}

pub async fn ls(ctx: &Ctx) -> Result<Status, CliError> {
    let (pools, invalid) = admin::list_pools(&ctx.client, &ctx.keys).await?;
    for (key, reason) in &invalid {
        tracing::warn!(%key, %reason, "invalid IP pool record");
    }
    if ctx.format == Format::Json {
        let items: Vec<&IpPool> = pools.iter().map(|p| &p.resource).collect();
        emit(&to_json(&items)?)?;
        return Ok(Status::Clean);
    }
    let mut table =
        Table::new(&["NAME", "CIDR", "BLOCK SIZE", "IPIP", "NAT", "DISABLED", "SELECTOR"], &[2]);
    for s in &pools {
        let p = &s.pool;
        table.push(vec![
            p.name.clone(),
            p.cidr.to_string(),
            p.block_size.to_string(),
            format!("{:?}", p.ipip_mode),
            p.nat_outgoing.to_string(),
            p.disabled.to_string(),
            s.resource.spec.effective_node_selector().to_string(),
        ]);
    }
    emit(&table.render())?;
    for (key, reason) in &invalid {
        eprintln!("warning: {key} is not a valid IP pool: {reason}");
    }
    Ok(Status::Clean)
}

pub async fn rm(ctx: &Ctx, name: &str, force: bool) -> Result<Status, CliError> {
    let report =
        admin::delete_pool(&ctx.client, &ctx.keys, name, force).await.map_err(|e| match e {
            IpamError::PoolInUse { .. } => CliError::Refused(format!(
                "{e}; release them first, or use --force (blocks holding addresses then stay, \
                 outside any pool, until released)"
            )),
            other => CliError::Ipam(other),
        })?;
    match ctx.format {
        Format::Json => {
            let doc = json!({"deleted": name, "blocks_deleted": report.blocks_deleted});
            emit(&to_json(&doc)?)?;
        }
        Format::Table => emit(&format!(
            "Deleted IP pool {name} ({} empty blocks removed)\n",
            report.blocks_deleted.len()
        ))?,
    }
    Ok(Status::Clean)
}

pub async fn set_disabled(ctx: &Ctx, name: &str, disabled: bool) -> Result<Status, CliError> {
    let pool = admin::set_pool_disabled(&ctx.client, &ctx.keys, name, disabled).await?;
    let state = if pool.disabled { "disabled" } else { "enabled" };
    match ctx.format {
        Format::Json => {
            emit(&to_json(
                &json!({"name": pool.name, "cidr": pool.cidr, "disabled": pool.disabled}),
            )?)?;
        }
        Format::Table => emit(&format!("IP pool {name} ({}) {state}\n", pool.cidr))?,
    }
    Ok(Status::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cidr: &str, block: Option<u16>) -> PoolAddArgs {
        PoolAddArgs {
            name: "p".into(),
            cidr: cidr.into(),
            block_size: block,
            ipip_mode: None,
            nat_outgoing: false,
            node_selector: None,
            disabled: false,
        }
    }

    fn arg_of(r: Result<IpPool, CliError>) -> &'static str {
        match r {
            Err(CliError::InvalidArg { arg, .. }) => arg,
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn bad_pools_name_the_argument() {
        assert_eq!(arg_of(parse_add(&args("10.0.0.0/33", None))), "CIDR");
        assert_eq!(arg_of(parse_add(&args("banana", None))), "CIDR");
        assert_eq!(arg_of(parse_add(&args("10.0.0.1/16", None))), "CIDR");
        assert_eq!(arg_of(parse_add(&args("10.0.0.0/16", Some(19)))), "--block-size");
        assert_eq!(arg_of(parse_add(&args("10.0.0.0/16", Some(300)))), "--block-size");
        assert_eq!(arg_of(parse_add(&args("fd00::/64", Some(64)))), "--block-size");
        let mut bad_sel = args("10.0.0.0/16", None);
        bad_sel.node_selector = Some("a ==".into());
        assert_eq!(arg_of(parse_add(&bad_sel)), "--node-selector");
        let mut bad_name = args("10.0.0.0/16", None);
        bad_name.name = "Not A Name".into();
        assert_eq!(arg_of(parse_add(&bad_name)), "NAME");
        let err = parse_add(&args("10.0.0.0/16", Some(19))).unwrap_err().to_string();
        assert!(err.contains("expected 20-32") && !err.contains("spec.blockSize: spec"), "{err}");
    }

    #[test]
    fn good_pool_keeps_every_flag() {
        let mut a = args("10.65.0.0/16", Some(24));
        a.ipip_mode = Some(IpipMode::CrossSubnet);
        a.nat_outgoing = true;
        a.node_selector = Some("rack == 'a'".into());
        a.disabled = true;
        let r = parse_add(&a).unwrap();
        assert_eq!(r.spec.block_size, Some(24));
        assert_eq!(r.spec.ipip_mode, Some(EncapMode::CrossSubnet));
        assert!(r.spec.nat_outgoing && r.spec.disabled);
        assert_eq!(r.spec.node_selector.as_deref(), Some("rack == 'a'"));
    }
}
