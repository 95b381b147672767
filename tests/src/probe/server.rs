//! The answering side of the probes: a TCP echo server on several ports and a UDP sink that
//! records who sent what, both living in a workload's (or host's) namespace.
//!
//! Their sockets hold a reference to the namespace, which keeps it (and its links) alive past
//! `ip netns del`; both stop and close every socket when dropped, before the namespace goes.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::in_netns;

/// How often blocked loops look at the stop flag.
const TICK: Duration = Duration::from_millis(50);

/// A TCP echo server on `0.0.0.0:<port>` for each port, in one namespace.
#[derive(Debug)]
pub struct EchoServer {
    ports: Vec<u16>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl EchoServer {
    /// Binds every port in the namespace at `netns` and starts answering.
    pub fn start(netns: &Path, ports: &[u16]) -> io::Result<EchoServer> {
        let listeners = in_netns(netns, || {
            ports
                .iter()
                .map(|&port| {
                    let listener =
                        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).map_err(
                            |e| io::Error::new(e.kind(), format!("bind port {port}: {e}")),
                        )?;
                    listener.set_nonblocking(true)?;
                    Ok(listener)
                })
                .collect::<io::Result<Vec<_>>>()
        })??;
        let server = EchoServer {
            ports: ports.to_vec(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Arc::new(Mutex::new(Vec::new())),
        };
        for listener in listeners {
            let stop = Arc::clone(&server.stop);
            let threads = Arc::clone(&server.threads);
            let handle = std::thread::spawn(move || accept_loop(&listener, &stop, &threads));
            server.threads.lock().unwrap_or_else(PoisonError::into_inner).push(handle);
        }
        Ok(server)
    }

    /// The ports it answers on.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Closes every listener and connection and waits for the threads.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        loop {
            let handles: Vec<_> =
                self.threads.lock().unwrap_or_else(PoisonError::into_inner).drain(..).collect();
            if handles.is_empty() {
                return;
            }
            for handle in handles {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: &TcpListener,
    stop: &Arc<AtomicBool>,
    threads: &Mutex<Vec<JoinHandle<()>>>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let stop = Arc::clone(stop);
                let handle = std::thread::spawn(move || echo(stream, &stop));
                let mut threads = threads.lock().unwrap_or_else(PoisonError::into_inner);
                // Probes open many short connections; forget the threads that are done.
                threads.retain(|t| !t.is_finished());
                threads.push(handle);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("echo server: accept failed: {e}");
                std::thread::sleep(TICK);
            }
        }
    }
}

fn echo(mut stream: TcpStream, stop: &AtomicBool) {
    if stream.set_nonblocking(false).and_then(|()| stream.set_read_timeout(Some(TICK))).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

/// A UDP socket on `0.0.0.0:<port>` in one namespace that reports the datagrams it receives.
#[derive(Debug)]
pub struct UdpSink {
    socket: UdpSocket,
    /// Where senders reach it: the namespace's address and the port.
    addr: SocketAddrV4,
}

/// Makes every datagram of [`UdpSink::delivery`] unique.
static DATAGRAM: AtomicU64 = AtomicU64::new(0);

impl UdpSink {
    /// Binds `port` in the namespace at `netns`, which others reach at `ip`.
    pub fn bind(netns: &Path, ip: Ipv4Addr, port: u16) -> io::Result<UdpSink> {
        let socket =
            in_netns(netns, || UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)))??;
        Ok(UdpSink { socket, addr: SocketAddrV4::new(ip, port) })
    }

    /// Sends up to three datagrams, one second apart, from the namespace at `src` with source
    /// address `from` (which must be on an interface there; `None`: the kernel's choice), and
    /// returns the source address the sink saw, or `None` if nothing arrived.
    pub fn delivery(&self, src: &Path, from: Option<Ipv4Addr>) -> io::Result<Option<Ipv4Addr>> {
        for _ in 0..3 {
            let payload = format!("datagram {}", DATAGRAM.fetch_add(1, Ordering::Relaxed));
            super::send_udp(src, from, self.addr, payload.as_bytes())?;
            match self.wait_for(payload.as_bytes(), Duration::from_secs(1))? {
                Some(SocketAddr::V4(seen)) => return Ok(Some(*seen.ip())),
                Some(other) => {
                    return Err(io::Error::other(format!(
                        "datagram from a non-IPv4 source {other}"
                    )))
                }
                None => {}
            }
        }
        Ok(None)
    }

    /// Waits up to `timeout` for a datagram whose payload is `payload`; returns its source
    /// address, or `None` if none came. Other datagrams are read and discarded.
    pub fn wait_for(&self, payload: &[u8], timeout: Duration) -> io::Result<Option<SocketAddr>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket.set_read_timeout(Some(left))?;
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) if &buf[..n] == payload => return Ok(Some(from)),
                Ok(_) => {}
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
