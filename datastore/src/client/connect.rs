//! Getting a connection up: TLS material read and checked before dialing, and a TCP probe that
//! tells "nothing listens there" apart from "etcd does not answer".

use std::path::Path;
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Identity, TlsOptions};

use super::config::Endpoint;
use super::{Error, EtcdConfig};

/// Reads the CA and the client identity named in `config` into TLS options.
///
/// Files are read and their PEM framing checked here, so a wrong path or a swapped
/// certificate and key fail with [`Error::Tls`] naming the file, not as a handshake mystery.
pub(super) fn tls_options(config: &EtcdConfig) -> Result<TlsOptions, Error> {
    let mut tls = TlsOptions::new();
    if let Some(ca) = &config.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca, "CERTIFICATE")?));
    }
    if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
        let cert = read_pem(cert, "CERTIFICATE")?;
        let key = read_pem(key, "PRIVATE KEY")?;
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(tls)
}

/// Reads a PEM file and checks it holds a block whose label ends with `label`.
fn read_pem(path: &Path, label: &str) -> Result<Vec<u8>, Error> {
    let tls_error = |reason: String| Error::Tls { path: Some(path.to_path_buf()), reason };
    let pem = std::fs::read(path).map_err(|e| tls_error(format!("cannot read: {e}")))?;
    let text = String::from_utf8_lossy(&pem);
    let framed = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .any(|found| found.ends_with(label));
    if framed {
        Ok(pem)
    } else {
        Err(tls_error(format!("no PEM {label} block found")))
    }
}

/// A client for one endpoint on a plain channel that connects on its first request, for
/// callers that make a handful of requests and exit (the CNI plugin).
///
/// Unlike the balanced channel `etcd_client::Client::connect` builds (where a request to an
/// endpoint that refuses connections waits for the timeout), a plain channel fails the
/// request at once with the connect error: nothing needs probing first, and the first
/// request's connection is the only one made.
pub(super) async fn lazy_member(
    endpoint: &Endpoint,
    connect_timeout: Duration,
    keepalive: Duration,
    tls: Option<TlsOptions>,
) -> Result<etcd_client::Client, etcd_client::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri = format!("{scheme}://{}", endpoint.authority);
    let mut channel = tonic::transport::Endpoint::from_shared(uri)?
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(keepalive)
        .keep_alive_timeout(keepalive);
    if let Some(tls) = tls {
        channel = channel.tls_config(tls)?;
    }
    etcd_client::Client::from_channel(etcd_client::Channel::Tonic(channel.connect_lazy()), None)
        .await
}

/// Opens (and drops) a TCP connection to every endpoint at once. Returns the index of the
/// first endpoint (in configured order) that accepted, else every endpoint's reason.
pub(super) async fn probe_tcp(endpoints: &[Endpoint], deadline: Instant) -> Result<usize, String> {
    let attempts = endpoints.iter().map(|endpoint| async move {
        let connect = tokio::net::TcpStream::connect(endpoint.authority.as_str());
        match tokio::time::timeout_at(deadline.into(), connect).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{}: {e}", endpoint.authority)),
            Err(_) => {
                Err(format!("{}: no TCP connection before the connect timeout", endpoint.authority))
            }
        }
    });
    let results = futures::future::join_all(attempts).await;
    if let Some(first) = results.iter().position(Result::is_ok) {
        return Ok(first);
    }
    Err(results.into_iter().filter_map(Result::err).collect::<Vec<_>>().join("; "))
}
