//! A minimal Docker Engine API client: `GET /networks/<id>` over Docker's unix socket, for
//! the name Docker shows for a network (libnetwork never tells its drivers), as Calico's
//! libnetwork plugin looked it up.

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::HOST;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::UnixStream;

use super::protocol::ObjectId;

/// Bound on one lookup, well inside the plugin call's own [`super::REQUEST_TIMEOUT`].
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest inspect answer read; it lists the network's containers, a few hundred bytes each.
pub const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// A lookup that gave no usable name; every message names the socket or the network.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot connect to the Docker Engine API at {}: {source}", socket.display())]
    Connect { socket: PathBuf, source: std::io::Error },
    #[error("Docker Engine API at {}, network {network}: {source}", socket.display())]
    Http { socket: PathBuf, network: ObjectId, source: hyper::Error },
    #[error("Docker Engine API at {} gave no answer about network {network} within {after:?}", socket.display())]
    Timeout { socket: PathBuf, network: ObjectId, after: Duration },
    #[error("Docker Engine API at {} answered {status} for network {network}: {message}", socket.display())]
    Status { socket: PathBuf, network: ObjectId, status: u16, message: String },
    #[error("Docker's answer about network {network} is malformed: {reason}")]
    Malformed { network: ObjectId, reason: String },
    #[error(
        "Docker network {network} is named {name:?}, which cannot name a tabby profile: \
         {reason}; recreate it with -o network=<profile name>"
    )]
    InvalidName { network: ObjectId, name: String, reason: String },
}

impl EngineError {
    /// Whether asking again may help: Docker may come back; its answer will not change.
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Connect { .. }
            | EngineError::Http { .. }
            | EngineError::Timeout { .. } => true,
            EngineError::Status { status, .. } => *status >= 500,
            EngineError::Malformed { .. } | EngineError::InvalidName { .. } => false,
        }
    }
}

/// What the driver needs of a Docker network, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Docker's name for the network, valid as a profile name.
    pub name: String,
}

#[derive(Debug, Deserialize)]
struct RawNetwork {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Name")]
    name: String,
}

#[derive(Debug, Default, Deserialize)]
struct RawErrorAnswer {
    #[serde(default)]
    message: String,
}

/// Parses an inspect answer for `network`: it must be that network (Docker also resolves
/// names and id prefixes), and its name must be able to name a profile.
pub fn parse_network(network: &ObjectId, body: &[u8]) -> Result<NetworkInfo, EngineError> {
    let malformed = |reason: String| EngineError::Malformed { network: network.clone(), reason };
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw: RawNetwork = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| malformed(format!("{}: {}", e.path(), e.inner())))?;
    if !raw.id.eq_ignore_ascii_case(network.as_str()) {
        return Err(malformed(format!("it describes network {:?} instead", raw.id)));
    }
    super::handlers::check_profile_name(&raw.name).map_err(|e| EngineError::InvalidName {
        network: network.clone(),
        name: raw.name.clone(),
        reason: e.to_string(),
    })?;
    Ok(NetworkInfo { name: raw.name })
}

/// The Docker Engine API behind one unix socket.
#[derive(Debug, Clone)]
pub struct Engine {
    socket: PathBuf,
    timeout: Duration,
}

impl Engine {
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Engine {
        Engine { socket: socket.into(), timeout }
    }

    /// `GET /networks/<id>`: the network's name, within the timeout.
    pub async fn network(&self, network: &ObjectId) -> Result<NetworkInfo, EngineError> {
        let (status, body) =
            tokio::time::timeout(self.timeout, self.get(network)).await.unwrap_or_else(|_| {
                Err(EngineError::Timeout {
                    socket: self.socket.clone(),
                    network: network.clone(),
                    after: self.timeout,
                })
            })?;
        if status != StatusCode::OK {
            let message = serde_json::from_slice::<RawErrorAnswer>(&body)
                .map(|a| a.message)
                .unwrap_or_default();
            let message = if message.is_empty() {
                String::from_utf8_lossy(&body).trim().chars().take(200).collect()
            } else {
                message
            };
            return Err(EngineError::Status {
                socket: self.socket.clone(),
                network: network.clone(),
                status: status.as_u16(),
                message,
            });
        }
        parse_network(network, &body)
    }

    /// One HTTP/1 exchange on a fresh connection: the status and the whole body.
    async fn get(&self, network: &ObjectId) -> Result<(StatusCode, Bytes), EngineError> {
        let http = |source| EngineError::Http {
            socket: self.socket.clone(),
            network: network.clone(),
            source,
        };
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| EngineError::Connect { socket: self.socket.clone(), source })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
        let request = Request::get(format!("/networks/{network}"))
            // HTTP/1.1 needs a Host; Docker ignores its value on a unix socket.
            .header(HOST, "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|e| EngineError::Malformed {
                network: network.clone(),
                reason: format!("cannot build the request: {e}"),
            })?;
        // The sender moves into the exchange: dropping it when the answer is read lets the
        // connection, driven alongside, close.
        let exchange = async move {
            let response = sender.send_request(request).await.map_err(http)?;
            let status = response.status();
            let body =
                Limited::new(response.into_body(), MAX_ANSWER).collect().await.map_err(|e| {
                    EngineError::Malformed {
                        network: network.clone(),
                        reason: format!("cannot read the answer (at most {MAX_ANSWER} bytes): {e}"),
                    }
                })?;
            drop(sender);
            Ok((status, body.to_bytes()))
        };
        let (answer, ended) = tokio::join!(exchange, conn);
        if let Err(e) = ended {
            tracing::debug!(socket = %self.socket.display(), error = %e, "Docker Engine API connection ended with an error");
        }
        answer
    }
}

#[cfg(test)]
mod tests;
