//! The IPIP device: `tunl0`, brought up (and created when the kernel has not made it) before
//! the first route through it is written.
//!
//! With the `ipip` module loaded the kernel gives every network namespace a fallback `tunl0`
//! that decapsulates IPIP from any source and encapsulates towards the gateway of an
//! `onlink` route through it; the agent only has to set it up. A kernel built without IPIP
//! has no such device and refuses to make one: routes through it then fail with an error
//! that says so.

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{LinkIpIp, LinkUnspec};

use super::RouteError;

/// The IPIP device's name (the kernel's fallback device).
pub const TUNNEL_DEVICE: &str = "tunl0";

/// The index of `tunl0`, set up; created first when it does not exist.
pub async fn ensure_tunnel(handle: &rtnetlink::Handle) -> Result<u32, RouteError> {
    let link = if let Some(link) = find(handle).await? {
        link
    } else {
        create(handle).await?;
        tracing::info!(device = TUNNEL_DEVICE, "created the IPIP device");
        find(handle).await?.ok_or_else(|| RouteError::Netlink {
            op: format!("find {TUNNEL_DEVICE}"),
            errno: Some(libc::ENODEV),
            reason: "created, but not found".into(),
        })?
    };
    let index = link.header.index;
    if !link.header.flags.contains(LinkFlags::Up) {
        let up = LinkUnspec::new_with_index(index).up().build();
        handle
            .link()
            .set(up)
            .execute()
            .await
            .map_err(|e| RouteError::from_rtnetlink(format!("set {TUNNEL_DEVICE} up"), &e))?;
        tracing::info!(device = TUNNEL_DEVICE, "IPIP device up");
    }
    Ok(index)
}

/// Creates `tunl0`; the error says so when the kernel has no IPIP at all.
async fn create(handle: &rtnetlink::Handle) -> Result<(), RouteError> {
    let add = LinkIpIp::new(TUNNEL_DEVICE).build();
    handle.link().add(add).execute().await.map_err(|e| {
        match RouteError::from_rtnetlink(format!("create {TUNNEL_DEVICE}"), &e) {
            RouteError::Netlink { op, errno: Some(libc::EOPNOTSUPP), .. } => RouteError::Netlink {
                op,
                errno: Some(libc::EOPNOTSUPP),
                reason: "this kernel has no IPIP support (CONFIG_NET_IPIP)".into(),
            },
            other => other,
        }
    })
}

async fn find(handle: &rtnetlink::Handle) -> Result<Option<LinkMessage>, RouteError> {
    let links: Vec<LinkMessage> = match handle
        .link()
        .get()
        .match_name(TUNNEL_DEVICE.to_string())
        .execute()
        .try_collect()
        .await
    {
        Ok(links) => links,
        Err(rtnetlink::Error::NetlinkError(msg)) if msg.raw_code().abs() == libc::ENODEV => {
            return Ok(None)
        }
        Err(e) => return Err(RouteError::from_rtnetlink(format!("find {TUNNEL_DEVICE}"), &e)),
    };
    Ok(links.into_iter().find(|l| {
        l.attributes.iter().any(|a| matches!(a, LinkAttribute::IfName(n) if n == TUNNEL_DEVICE))
    }))
}
