//! `ipamctl release`: frees one address (optionally only if a given handle holds it) or
//! every address of a handle. Idempotent: releasing what is free succeeds and says so.

use std::net::IpAddr;

use ipam::{Allocator, AllocatorOptions, ReleaseOutcome, ReleaseRequest};
use serde_json::json;

use super::{parse_ip, Ctx, Status};
use crate::cli::{Format, ReleaseArgs};
use crate::error::CliError;
use crate::output::{emit, to_json};

/// What to release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One address; with a handle, only while that handle holds it.
    Ip { ip: IpAddr, handle: Option<String> },
    /// Every address of a handle.
    Handle(String),
}

pub fn parse(args: &ReleaseArgs) -> Result<Target, CliError> {
    let handle = match &args.handle {
        None => None,
        Some(h) => {
            if h.is_empty() || h.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(CliError::invalid(
                    "--handle",
                    h,
                    "a handle id is one word: <network>.<containerid>.<ifname>",
                ));
            }
            Some(h.clone())
        }
    };
    match (&args.ip, handle) {
        (Some(ip), handle) => Ok(Target::Ip { ip: parse_ip("--ip", ip)?, handle }),
        (None, Some(handle)) => Ok(Target::Handle(handle)),
        // clap requires one of them; keep the message in case it is called otherwise.
        (None, None) => Err(CliError::invalid("--ip/--handle", "", "give an address or a handle")),
    }
}

pub async fn run(ctx: &Ctx, target: &Target) -> Result<Status, CliError> {
    // An operator's tool on any machine: no host lock, and the node name is never written.
    let opts = AllocatorOptions { lock_file: None, ..AllocatorOptions::default() };
    let allocator = Allocator::new(ctx.client.clone(), ctx.keys.clone(), "ipamctl", opts)?;
    match target {
        Target::Handle(handle) => {
            let freed = allocator.release_by_handle(handle).await?;
            let text = match ctx.format {
                Format::Json => to_json(&json!({"handle": handle, "released": freed}))?,
                Format::Table if freed.is_empty() => {
                    format!("Handle {handle} holds no addresses; nothing to release\n")
                }
                Format::Table => {
                    let list: Vec<String> = freed.iter().map(ToString::to_string).collect();
                    format!("Released {} (handle {handle})\n", list.join(", "))
                }
            };
            emit(&text)?;
        }
        Target::Ip { ip, handle } => {
            let req = ReleaseRequest { ip: *ip, handle: handle.clone(), sequence: None };
            let outcome = allocator.release_ips(&[req]).await?.into_iter().next();
            let text = match outcome {
                Some(ReleaseOutcome::Released { handle: held }) => match ctx.format {
                    Format::Json => to_json(&json!({"ip": ip, "released": true, "handle": held}))?,
                    Format::Table => format!(
                        "Released {ip}{}\n",
                        held.map(|h| format!(" (handle {h})")).unwrap_or_default()
                    ),
                },
                Some(ReleaseOutcome::NotAllocated) | None => match ctx.format {
                    Format::Json => to_json(&json!({"ip": ip, "released": false, "handle": null}))?,
                    Format::Table => format!("{ip} is not assigned; nothing to release\n"),
                },
                Some(ReleaseOutcome::HandleMismatch { actual }) => {
                    return Err(CliError::Refused(format!(
                        "{ip} is held by handle {}, not {}; not released",
                        actual.as_deref().unwrap_or("<none>"),
                        handle.as_deref().unwrap_or("<none>")
                    )));
                }
                Some(ReleaseOutcome::SequenceMismatch { actual }) => {
                    return Err(CliError::Refused(format!(
                        "{ip} was re-assigned meanwhile (sequence {actual}); not released"
                    )));
                }
            };
            emit(&text)?;
        }
    }
    Ok(Status::Clean)
}
