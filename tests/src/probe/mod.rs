//! Connectivity checks with real packets: TCP connects with an echo round trip, ICMP echo,
//! UDP datagrams from a chosen source address, and the servers that answer them.
//!
//! A TCP probe tells "refused" (a RST: the packet arrived but nothing listened) from "timed
//! out" (dropped on the way): every workload runs an echo server on the probed ports, so a
//! policy verdict shows up as connected versus timed out, and a refusal points at the harness.

mod matrix;
mod server;

pub use matrix::{all_pairs, Expect, Matrix, Mismatch};
pub use server::{EchoServer, UdpSink};

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::netns::{in_netns, nsenter};

/// How long a probe waits for a connection or an echo reply.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What is probed on the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// A TCP connect to the port plus one echo round trip.
    Tcp(u16),
    /// One ICMP echo request (type 8).
    Icmp,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Service::Tcp(port) => write!(f, "tcp/{port}"),
            Service::Icmp => f.write_str("icmp"),
        }
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// TCP: connected and the echo came back. ICMP: an echo reply came back.
    Connected,
    /// TCP: the destination answered with a RST (nothing listening there).
    Refused,
    /// No answer in time: dropped somewhere.
    TimedOut,
    /// An ICMP unreachable came back (no route, or a reject).
    Unreachable,
    /// Anything else, with what was seen.
    Failed(String),
}

impl Outcome {
    /// Whether the traffic got through.
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Connected)
    }

    /// `✓` when the traffic got through, `✗` otherwise.
    pub fn symbol(&self) -> &'static str {
        symbol(self.passed())
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Connected => f.write_str("connected"),
            Outcome::Refused => f.write_str("refused (RST)"),
            Outcome::TimedOut => f.write_str("timed out"),
            Outcome::Unreachable => f.write_str("unreachable"),
            Outcome::Failed(what) => write!(f, "failed: {what}"),
        }
    }
}

/// `✓` for allowed, `✗` for not.
pub fn symbol(allowed: bool) -> &'static str {
    if allowed {
        "✓"
    } else {
        "✗"
    }
}

/// Probes `service` on `dst` from the namespace at `src_netns`.
pub fn probe(src_netns: &Path, dst: Ipv4Addr, service: Service) -> Outcome {
    match service {
        Service::Tcp(port) => tcp(src_netns, SocketAddrV4::new(dst, port), PROBE_TIMEOUT),
        Service::Icmp => ping(src_netns, dst, PROBE_TIMEOUT),
    }
}

/// TCP connect from the namespace at `src_netns` to `dst`, then one echo round trip.
pub fn tcp(src_netns: &Path, dst: SocketAddrV4, timeout: Duration) -> Outcome {
    match EchoClient::connect(src_netns, dst, timeout) {
        Ok(mut client) => match client.roundtrip(timeout) {
            Ok(()) => Outcome::Connected,
            Err(e) => Outcome::Failed(format!("connected, but the echo did not come back: {e}")),
        },
        Err(e) => classify(&e),
    }
}

/// Maps a connect error onto an [`Outcome`].
fn classify(e: &io::Error) -> Outcome {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Outcome::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Outcome::TimedOut,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => Outcome::Unreachable,
        _ => Outcome::Failed(e.to_string()),
    }
}

/// One ICMP echo request from the namespace at `src_netns` (busybox `ping -c1 -W<s>`).
pub fn ping(src_netns: &Path, dst: Ipv4Addr, timeout: Duration) -> Outcome {
    let wait = timeout.as_secs().max(1).to_string();
    let ran = crate::process::run(
        nsenter(src_netns, "busybox").args(["ping", "-c1", "-W", &wait, &dst.to_string()]),
        None,
        timeout + Duration::from_secs(3),
    );
    if ran.success() {
        return Outcome::Connected;
    }
    let said = format!("{}{}", ran.stdout, ran.stderr);
    if said.contains("1 packets received") {
        Outcome::Failed(format!("ping received a reply but failed: {}", ran.describe()))
    } else if said.contains("nreachable") {
        Outcome::Unreachable
    } else if said.contains("0 packets received") {
        Outcome::TimedOut
    } else {
        Outcome::Failed(ran.describe())
    }
}

/// A TCP connection to an [`EchoServer`] that can be checked again later: the "established
/// connection survives" probe.
#[derive(Debug)]
pub struct EchoClient {
    stream: TcpStream,
    peer: SocketAddrV4,
}

/// Makes every echo payload unique, so a late reply to an earlier round trip never counts.
static NONCE: AtomicU64 = AtomicU64::new(0);

impl EchoClient {
    /// Connects from the namespace at `src_netns` to `dst` within `timeout`.
    pub fn connect(src_netns: &Path, dst: SocketAddrV4, timeout: Duration) -> io::Result<Self> {
        let stream = in_netns(src_netns, || TcpStream::connect_timeout(&dst.into(), timeout))??;
        stream.set_nodelay(true)?;
        Ok(EchoClient { stream, peer: dst })
    }

    /// Sends a line and waits up to `timeout` for the same line to come back.
    pub fn roundtrip(&mut self, timeout: Duration) -> io::Result<()> {
        let line = format!("tabby-probe {}\n", NONCE.fetch_add(1, Ordering::Relaxed));
        self.stream.set_write_timeout(Some(timeout))?;
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.write_all(line.as_bytes())?;
        let mut back = vec![0; line.len()];
        self.stream.read_exact(&mut back)?;
        if back == line.as_bytes() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "echo from {} came back as {:?}, sent {line:?}",
                self.peer,
                String::from_utf8_lossy(&back)
            )))
        }
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }
}

/// Sends `payload` as one UDP datagram from the namespace at `src_netns` to `dst`, from source
/// address `from` (which must be configured on an interface there) or the kernel's choice.
pub fn send_udp(
    src_netns: &Path,
    from: Option<Ipv4Addr>,
    dst: SocketAddrV4,
    payload: &[u8],
) -> io::Result<()> {
    let socket = in_netns(src_netns, || {
        UdpSocket::bind(SocketAddrV4::new(from.unwrap_or(Ipv4Addr::UNSPECIFIED), 0))
    })??;
    socket.send_to(payload, dst)?;
    Ok(())
}
