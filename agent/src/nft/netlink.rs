//! The nfnetlink socket (safe code over `nix`): sends one batch as one `sendmsg`, so the
//! kernel runs it as one transaction, collects the kernel's per-message errors, and reads the
//! ruleset generation (`NFT_MSG_GETGEN`) used to notice writes by others.
//!
//! Messages in a batch carry no `NLM_F_ACK`: the kernel reports every failing message anyway,
//! and acknowledging thousands of successes would only fill the receive buffer. Success is
//! the acknowledgement of the batch-end message (kernels from 6.10 on) or, on older kernels,
//! the absence of errors once the synchronous batch processing has returned.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, getsockname, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags,
    NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use super::sys::{enable_netlink_option, NetlinkOption};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;

/// Receive buffer: room for the errors of a badly failing batch (each error is ~40 bytes with
/// `NETLINK_CAP_ACK`, but the kernel charges a whole skb for it).
const RCVBUF: usize = 8 << 20;

/// How long to wait for the kernel's answer to a request or a batch end. Batches are
/// processed synchronously inside `sendmsg`, so the answer is normally already queued.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Sequence numbers of our own requests, far above those of batches (which start at 1), so a
/// stray answer can never be mistaken for the other kind.
const REQUEST_SEQ_BASE: u32 = 0x8000_0000;

/// Where the messages of a prepared batch sit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    /// Sequence number of the first object message (after batch begin).
    pub first_seq: u32,
    /// Number of object messages.
    pub count: usize,
    /// Sequence number of the batch end, when the kernel will acknowledge it.
    pub end_ack_seq: Option<u32>,
}

/// One error the kernel reported for a message of a batch.
#[derive(Debug, Clone)]
pub(crate) struct KernelError {
    pub seq: u32,
    pub errno: Errno,
    pub message: Option<String>,
}

/// Why a batch did not (verifiably) commit.
#[derive(Debug)]
pub(crate) enum SendError {
    Io(&'static str, io::Error),
    /// The kernel refused the batch; nothing of it was applied.
    Rejected(Vec<KernelError>),
    /// The outcome is not known (answers lost or late).
    Unknown(String),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink message inside a datagram.
struct Msg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// Splits a datagram into messages; stops at the first malformed header.
fn messages(buf: &[u8]) -> impl Iterator<Item = Msg<'_>> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off + NLMSG_HDRLEN > buf.len() {
            return None;
        }
        let len = u32_at(buf, off) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return None;
        }
        let msg = Msg {
            ty: u16_at(buf, off + 4),
            flags: u16_at(buf, off + 6),
            seq: u32_at(buf, off + 8),
            payload: &buf[off + NLMSG_HDRLEN..off + len],
        };
        off += align4(len);
        Some(msg)
    })
}

/// Clears `NLM_F_ACK` on every object message of a finalized batch (see the module doc) and
/// records where the messages are.
pub(crate) fn prepare_batch(bytes: &mut [u8]) -> Result<Layout, String> {
    let mut off = 0;
    let mut first_seq = None;
    let mut count = 0usize;
    let mut end_ack_seq = None;
    let mut saw_begin = false;
    let mut saw_end = false;
    while off < bytes.len() {
        if off + NLMSG_HDRLEN > bytes.len() {
            return Err(format!("truncated message header at byte {off}"));
        }
        let len = u32_at(bytes, off) as usize;
        if len < NLMSG_HDRLEN || off + len > bytes.len() {
            return Err(format!("bad message length {len} at byte {off}"));
        }
        let ty = u16_at(bytes, off + 4);
        let flags = u16_at(bytes, off + 6);
        let seq = u32_at(bytes, off + 8);
        match ty {
            NFNL_MSG_BATCH_BEGIN => saw_begin = true,
            NFNL_MSG_BATCH_END => {
                saw_end = true;
                if flags & NLM_F_ACK != 0 {
                    end_ack_seq = Some(seq);
                }
            }
            _ => {
                let first = *first_seq.get_or_insert(seq);
                if seq != first.wrapping_add(count as u32) {
                    return Err(format!("message {count} has sequence {seq}, not consecutive"));
                }
                bytes[off + 6..off + 8].copy_from_slice(&(flags & !NLM_F_ACK).to_ne_bytes());
                count += 1;
            }
        }
        off += align4(len);
    }
    if !saw_begin || !saw_end {
        return Err("batch lacks its begin or end message".into());
    }
    Ok(Layout { first_seq: first_seq.unwrap_or(0), count, end_ack_seq })
}

/// Parses an `NLMSG_ERROR` payload: the error code and the kernel's extended-ack message.
fn parse_error(msg: &Msg<'_>) -> Option<(i32, Option<String>)> {
    let p = msg.payload;
    if p.len() < 4 + NLMSG_HDRLEN {
        return None;
    }
    let code = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
    let mut text = None;
    if msg.flags & NLM_F_ACK_TLVS != 0 {
        let echoed = if msg.flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            align4(u32_at(p, 4) as usize)
        };
        let mut off = 4 + echoed;
        while off + 4 <= p.len() {
            let len = u16_at(p, off) as usize;
            let ty = u16_at(p, off + 2) & 0x3fff;
            if len < 4 || off + len > p.len() {
                break;
            }
            if ty == NLMSGERR_ATTR_MSG {
                let raw = &p[off + 4..off + len];
                let raw = raw.split(|b| *b == 0).next().unwrap_or(raw);
                text = Some(String::from_utf8_lossy(raw).into_owned());
            }
            off += align4(len);
        }
    }
    Some((code, text))
}

/// A `NETLINK_NETFILTER` socket in the network namespace of the thread that opened it.
pub(crate) struct NfSocket {
    fd: OwnedFd,
    buf: Vec<u8>,
    next_request_seq: u32,
    sndbuf: usize,
}

impl NfSocket {
    pub fn open() -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &NetlinkAddr::new(0, 0))?;
        let _: NetlinkAddr = getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd))?;
        // Forcing buffer sizes needs CAP_NET_ADMIN, which programming nftables needs anyway;
        // fall back to the capped option if it is refused.
        if setsockopt(&fd, sockopt::RcvBufForce, &RCVBUF).is_err() {
            setsockopt(&fd, sockopt::RcvBuf, &RCVBUF)?;
        }
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::new(ANSWER_TIMEOUT.as_secs() as i64, 0),
        )?;
        enable_netlink_option(fd.as_fd(), NetlinkOption::CapAck)?;
        // Extended acks only improve error messages; old kernels lack them.
        let _ = enable_netlink_option(fd.as_fd(), NetlinkOption::ExtAck);
        Ok(Self { fd, buf: vec![0; 256 * 1024], next_request_seq: REQUEST_SEQ_BASE, sndbuf: 0 })
    }

    fn recv(&mut self, wait: bool) -> Result<usize, Errno> {
        let flags = if wait { MsgFlags::empty() } else { MsgFlags::MSG_DONTWAIT };
        loop {
            match recv(std::os::fd::AsRawFd::as_raw_fd(&self.fd), &mut self.buf, flags) {
                Err(Errno::EINTR) => {}
                other => return other,
            }
        }
    }

    /// Sends a prepared batch and waits for its outcome.
    pub fn send_batch(&mut self, bytes: &[u8], layout: &Layout) -> Result<(), SendError> {
        // A netlink datagram must fit the send buffer; the whole batch must be one datagram
        // or the kernel sees a batch without its end and aborts it.
        let want = bytes.len() + 64 * 1024;
        if want > self.sndbuf {
            if setsockopt(&self.fd, sockopt::SndBufForce, &want).is_err() {
                setsockopt(&self.fd, sockopt::SndBuf, &want)
                    .map_err(|e| SendError::Io("set send buffer", e.into()))?;
            }
            self.sndbuf = want;
        }
        let sent = send(std::os::fd::AsRawFd::as_raw_fd(&self.fd), bytes, MsgFlags::empty())
            .map_err(|e| SendError::Io("send batch", e.into()))?;
        if sent != bytes.len() {
            return Err(SendError::Unknown(format!("sent {sent} of {} batch bytes", bytes.len())));
        }
        let mut errors = Vec::new();
        let mut done = false;
        while !done {
            // A refused batch gets no end acknowledgement; its errors were all queued before
            // `send` returned, so once one is seen just drain what is there.
            let wait = layout.end_ack_seq.is_some() && errors.is_empty();
            let n = match self.recv(wait) {
                Ok(n) => n,
                Err(Errno::EAGAIN) if !wait => break,
                Err(Errno::EAGAIN) => {
                    return Err(SendError::Unknown(format!(
                        "no answer to the batch end within {ANSWER_TIMEOUT:?}"
                    )));
                }
                Err(Errno::ENOBUFS) => {
                    return Err(SendError::Unknown(
                        "kernel answers overflowed the receive buffer".into(),
                    ));
                }
                Err(e) => return Err(SendError::Io("receive batch answers", e.into())),
            };
            for msg in messages(&self.buf[..n]) {
                if msg.ty != NLMSG_ERROR {
                    continue;
                }
                let Some((code, text)) = parse_error(&msg) else {
                    continue;
                };
                // Errors of batch begin and end count too; answers to our own requests
                // (generation reads) never arrive here because those are read to the end.
                if code != 0 && msg.seq < REQUEST_SEQ_BASE {
                    errors.push(KernelError {
                        seq: msg.seq,
                        errno: Errno::from_raw(-code),
                        message: text,
                    });
                }
                if Some(msg.seq) == layout.end_ack_seq {
                    done = true;
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SendError::Rejected(errors))
        }
    }

    /// The current nftables ruleset generation of this namespace; every committed
    /// transaction, by anyone, increments it by one.
    pub fn generation(&mut self) -> io::Result<u32> {
        let seq = self.next_request_seq;
        self.next_request_seq = self.next_request_seq.wrapping_add(1) | REQUEST_SEQ_BASE;
        let mut req = [0u8; NLMSG_HDRLEN + 4];
        req[0..4].copy_from_slice(&((NLMSG_HDRLEN + 4) as u32).to_ne_bytes());
        req[4..6].copy_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
        req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        req[8..12].copy_from_slice(&seq.to_ne_bytes());
        // nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id 0.
        send(std::os::fd::AsRawFd::as_raw_fd(&self.fd), &req, MsgFlags::empty())?;
        loop {
            let n = self.recv(true).map_err(io::Error::from)?;
            for msg in messages(&self.buf[..n]) {
                if msg.seq != seq {
                    continue;
                }
                if msg.ty == NLMSG_ERROR {
                    if let Some((code, _)) = parse_error(&msg) {
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                    }
                    continue;
                }
                if msg.ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
                    return gen_id(msg.payload).ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, "generation reply lacks an id")
                    });
                }
            }
        }
    }
}

/// `NFTA_GEN_ID` from a `NFT_MSG_NEWGEN` payload (after the 4-byte nfgenmsg).
fn gen_id(payload: &[u8]) -> Option<u32> {
    let mut off = 4;
    while off + 4 <= payload.len() {
        let len = u16_at(payload, off) as usize;
        let ty = u16_at(payload, off + 2) & 0x3fff;
        if len < 4 || off + len > payload.len() {
            return None;
        }
        if ty == NFTA_GEN_ID && len >= 8 {
            let v = &payload[off + 4..off + 8];
            return Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
        }
        off += align4(len);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut v = Vec::new();
        v.extend_from_slice(&(len as u32).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    #[test]
    fn prepare_clears_acks_of_object_messages_only() {
        let mut batch = header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST | NLM_F_ACK, 1, &[0; 4]);
        batch.extend(header(0x0a06, NLM_F_REQUEST | NLM_F_ACK, 2, &[0; 8]));
        batch.extend(header(0x0a06, NLM_F_REQUEST | NLM_F_ACK, 3, &[0; 5]));
        batch.extend(header(NFNL_MSG_BATCH_END, NLM_F_REQUEST | NLM_F_ACK, 4, &[0; 4]));
        let layout = prepare_batch(&mut batch).expect("well formed");
        assert_eq!(layout.first_seq, 2);
        assert_eq!(layout.count, 2);
        assert_eq!(layout.end_ack_seq, Some(4));
        let flags: Vec<u16> = messages(&batch).map(|m| m.flags & NLM_F_ACK).collect();
        assert_eq!(flags, vec![NLM_F_ACK, 0, 0, NLM_F_ACK]);
    }

    #[test]
    fn prepare_rejects_truncated_batches() {
        let mut batch = header(NFNL_MSG_BATCH_BEGIN, 0, 0, &[0; 4]);
        batch.extend(header(0x0a06, 0, 1, &[0; 8]));
        batch.truncate(batch.len() - 4);
        assert!(prepare_batch(&mut batch).is_err());
        let mut no_end = header(NFNL_MSG_BATCH_BEGIN, 0, 0, &[0; 4]);
        assert!(prepare_batch(&mut no_end).is_err());
    }

    #[test]
    fn errors_carry_code_and_extended_message() {
        let mut payload = (-22i32).to_ne_bytes().to_vec();
        payload.extend(header(0x0a06, 0, 7, &[]));
        let text = b"unknown chain\0";
        payload.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        let buf = header(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 7, &payload);
        let msg = messages(&buf).next().expect("one message");
        let (code, text) = parse_error(&msg).expect("an error");
        assert_eq!(code, -22);
        assert_eq!(text.as_deref(), Some("unknown chain"));
    }

    #[test]
    fn generation_id_is_big_endian() {
        let mut payload = vec![0u8; 4];
        payload.extend_from_slice(&8u16.to_ne_bytes());
        payload.extend_from_slice(&NFTA_GEN_ID.to_ne_bytes());
        payload.extend_from_slice(&42u32.to_be_bytes());
        assert_eq!(gen_id(&payload), Some(42));
        assert_eq!(gen_id(&payload[..6]), None);
    }
}
