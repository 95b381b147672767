//! `ipamctl config show|set`: the IPAM configuration singleton (strict affinity, block cap),
//! validated with Calico's rules before it is written.

use datastore::model::ipam::IpamConfig;
use ipam::admin;
use ipam::IpamError;
use serde_json::json;

use super::{Ctx, Status};
use crate::cli::Format;
use crate::error::CliError;
use crate::output::{emit, to_json, Table};

/// The fields `config set` changes; `None` keeps the stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub strict_affinity: Option<bool>,
    pub max_blocks_per_host: Option<u32>,
}

pub async fn show(ctx: &Ctx) -> Result<Status, CliError> {
    let config = admin::get_config(&ctx.client, &ctx.keys).await?;
    emit(&render(&config, ctx.format)?)?;
    Ok(Status::Clean)
}

pub async fn set(ctx: &Ctx, change: &Change) -> Result<Status, CliError> {
    let mut config = admin::get_config(&ctx.client, &ctx.keys).await?;
    if let Some(strict) = change.strict_affinity {
        config.strict_affinity = strict;
    }
    if let Some(max) = change.max_blocks_per_host {
        config.max_blocks_per_host = max;
    }
    admin::set_config(&ctx.client, &ctx.keys, &config).await.map_err(|e| match e {
        IpamError::InvalidRequest { field, reason } => {
            let (arg, value) = match field.as_str() {
                "maxBlocksPerHost" => {
                    ("--max-blocks-per-host", config.max_blocks_per_host.to_string())
                }
                _ => ("--strict-affinity", config.strict_affinity.to_string()),
            };
            let reason = reason.strip_prefix(&format!("{field}: ")).unwrap_or(&reason).to_string();
            CliError::invalid(arg, value, reason)
        }
        other => CliError::Ipam(other),
    })?;
    emit(&render(&config, ctx.format)?)?;
    Ok(Status::Clean)
}

fn render(config: &IpamConfig, format: Format) -> Result<String, CliError> {
    if format == Format::Json {
        return to_json(&json!({
            "strict_affinity": config.strict_affinity,
            "auto_allocate_blocks": config.auto_allocate_blocks,
            "maxBlocksPerHost": config.max_blocks_per_host,
            "effectiveMaxBlocksPerHost": config.effective_max_blocks_per_host(),
        }));
    }
    let mut t = Table::new(&["PROPERTY", "VALUE"], &[]);
    t.push(vec!["StrictAffinity".into(), config.strict_affinity.to_string()]);
    t.push(vec!["AutoAllocateBlocks".into(), config.auto_allocate_blocks.to_string()]);
    let max = if config.max_blocks_per_host == 0 {
        format!("{} (default)", config.effective_max_blocks_per_host())
    } else {
        config.max_blocks_per_host.to_string()
    };
    t.push(vec!["MaxBlocksPerHost".into(), max]);
    Ok(t.render())
}
