//! A small synchronous rtnetlink client: one request, wait for its ACK or its dump.
//!
//! Synchronous on purpose: the plugin makes a dozen requests per ADD, each answered in
//! microseconds, and a blocking socket needs no runtime. A socket stays bound to the network
//! namespace it was created in, so [`super::Netns::socket`] makes one per namespace and all
//! requests afterwards run from the caller's thread.

use std::io;

use rtnetlink::packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::Socket;

/// A kernel refusal or a socket failure, with the errno kept for callers that treat some
/// (`ENODEV`, `EEXIST`, `ESRCH`) as expected.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket failed")]
    Socket(#[source] io::Error),
    #[error("kernel refused")]
    Kernel(#[source] io::Error),
    #[error("malformed netlink reply: {0}")]
    Decode(String),
}

impl NetlinkError {
    /// The errno the kernel answered with, if it was a refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// True when the kernel said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
        )
    }
}

/// An `NETLINK_ROUTE` socket bound to the namespace it was created in.
pub struct RouteSocket {
    socket: Socket,
    seq: u32,
}

impl RouteSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<RouteSocket, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        // Strict checking makes the kernel honour the filters in dump requests (oif,
        // protocol, table), so a dump of a busy host table returns only our routes.
        socket.set_netlink_get_strict_chk(true).map_err(NetlinkError::Socket)?;
        Ok(RouteSocket { socket, seq: 0 })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(NetlinkError::Socket)?;
        Ok(self.seq)
    }

    /// Reads replies to `seq` and hands each inner message to `each` until the request is
    /// finished (ACK or DONE).
    fn receive(
        &mut self,
        seq: u32,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> Result<(), NetlinkError> {
        loop {
            let (buf, _) = self.socket.recv_from_full().map_err(NetlinkError::Socket)?;
            let mut offset = 0;
            while offset + 4 <= buf.len() {
                let len = u32::from_ne_bytes([
                    buf[offset],
                    buf[offset + 1],
                    buf[offset + 2],
                    buf[offset + 3],
                ]) as usize;
                if len < 16 || offset + len > buf.len() {
                    return Err(NetlinkError::Decode(format!("bad message length {len}")));
                }
                let msg =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..offset + len])
                        .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue; // a late reply to an earlier request
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(_) => Err(NetlinkError::Kernel(e.to_io())),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::InnerMessage(inner) => each(inner),
                    _ => {}
                }
            }
        }
    }

    /// Sends a change request and waits for the kernel's ACK.
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<(), NetlinkError> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        self.receive(seq, |_| {})
    }

    /// Sends a dump request and collects every reply.
    pub fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut out = Vec::new();
        self.receive(seq, |m| out.push(m))?;
        Ok(out)
    }

    /// The link called `name`, or `None` when there is none.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        // With NLM_F_ACK a get is answered by the object and then an ACK, so receive() can
        // stop on the ACK like for any change request.
        let seq = self.send(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST | NLM_F_ACK)?;
        let mut found = None;
        match self.receive(seq, |m| {
            if let RouteNetlinkMessage::NewLink(link) = m {
                found = Some(link);
            }
        }) {
            Ok(()) => Ok(found),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every address of one family on the link with `index`.
    pub fn addresses(
        &mut self,
        index: u32,
        family: AddressFamily,
    ) -> Result<Vec<AddressMessage>, NetlinkError> {
        let mut req = AddressMessage::default();
        req.header.family = family;
        req.header.index = index;
        let replies = self.dump(RouteNetlinkMessage::GetAddress(req))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => Some(a),
                _ => None,
            })
            .collect())
    }

    /// Routes of one family in the main table, optionally only those out of `oif`.
    pub fn routes(
        &mut self,
        family: AddressFamily,
        oif: Option<u32>,
    ) -> Result<Vec<RouteMessage>, NetlinkError> {
        let mut req = RouteMessage::default();
        req.header.address_family = family;
        req.header.table = rtnetlink::packet_route::route::RouteHeader::RT_TABLE_MAIN;
        if let Some(oif) = oif {
            req.attributes.push(rtnetlink::packet_route::route::RouteAttribute::Oif(oif));
        }
        let replies = self.dump(RouteNetlinkMessage::GetRoute(req))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r)
                    if r.header.table
                        == rtnetlink::packet_route::route::RouteHeader::RT_TABLE_MAIN
                        && oif.is_none_or(|o| route_oif(&r) == Some(o)) =>
                {
                    Some(r)
                }
                _ => None,
            })
            .collect())
    }
}

/// The output interface of a single-path route.
pub fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        rtnetlink::packet_route::route::RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

/// The address (`IFA_ADDRESS`, else `IFA_LOCAL`) of an address message.
pub fn address_of(a: &AddressMessage) -> Option<std::net::IpAddr> {
    a.attributes
        .iter()
        .find_map(|x| match x {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
        .or_else(|| {
            a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            })
        })
}
