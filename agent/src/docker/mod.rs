//! Docker's libnetwork remote network driver and IPAM driver, served by the agent on two
//! unix sockets (legacy plugin discovery): `<socket_dir>/<name>.sock` and
//! `<socket_dir>/<name>-ipam.sock`.
//!
//! Requests are parsed into validated types ([`protocol`]) before anything is done; the
//! kernel and etcd steps are the CNI plugin's own ([`cni_plugin::dataplane`],
//! [`cni_plugin::store`]) and the addresses come from the same block allocator ([`ipam`]).
//!
//! Docker's flow: `RequestPool` (the subnet must be a tabby pool or inside one) →
//! `CreateNetwork` (the network's profile when `-o network=` names it) → `RequestAddress` →
//! `CreateEndpoint` (at a network's first, its name from the Docker Engine API and its
//! profile; veth with both ends on the host, host route, workload endpoint) → `Join` (Docker
//! moves and renames the non-`cali` end into the sandbox and sets the address and routes we
//! return) → `Leave` → `DeleteEndpoint` (veth, route and endpoint removed) →
//! `ReleaseAddress`.

mod engine;
mod handlers;
mod ipam_driver;
pub mod protocol;
mod server;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datastore::client::Client;
use datastore::keys::KeyLayout;
use ipam::{Allocator, AllocatorOptions};
use tokio::sync::watch;

pub use engine::{Engine, EngineError, NetworkInfo, ENGINE_TIMEOUT};
pub use handlers::{Driver, DriverError, Reply};
pub use protocol::{Invalid, CONTENT_TYPE};
pub use state::Networks;

use crate::config::DockerSettings;

/// Bound on one request's etcd work; Docker's own plugin timeout is longer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Failure to serve the plugin at all (the sockets cannot be made).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the Docker plugin directory {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error("cannot listen on the Docker plugin socket {}: {source}", path.display())]
    Bind { path: PathBuf, source: std::io::Error },
    #[error("Docker driver: {0}")]
    Allocator(#[from] ipam::IpamError),
}

impl ServeError {
    /// Whether trying again can help (the directory may appear, another process may let go).
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Which socket a request came in on: each answers only its own driver's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Network,
    Ipam,
}

/// The two socket paths of a driver named `name` in `dir`.
pub fn socket_paths(dir: &Path, name: &str) -> [(Role, PathBuf); 2] {
    [
        (Role::Network, dir.join(format!("{name}.sock"))),
        (Role::Ipam, dir.join(format!("{name}-ipam.sock"))),
    ]
}

/// Where the driver keeps the networks it was told about, next to the node name file so it
/// survives agent restarts (Docker does not repeat `CreateNetwork` after one).
pub fn state_path(nodename_file: &Path) -> PathBuf {
    nodename_file
        .parent()
        .unwrap_or_else(|| Path::new("/var/lib/tabby"))
        .join("docker-networks.json")
}

/// Serves both drivers until `shutdown` turns true; removes the sockets when it returns or
/// is dropped (aborted).
pub async fn serve(
    settings: DockerSettings,
    client: Client,
    keys: KeyLayout,
    node: String,
    state_file: PathBuf,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let opts = AllocatorOptions {
        lock_timeout: REQUEST_TIMEOUT,
        timeout: REQUEST_TIMEOUT,
        ..AllocatorOptions::default()
    };
    let allocator = Allocator::new(client.clone(), keys.clone(), node.clone(), opts)?;
    let engine = Engine::new(settings.engine_socket.clone(), ENGINE_TIMEOUT);
    let networks = Networks::load(state_file);
    let driver = Arc::new(Driver::new(client, keys, node, allocator, networks, engine));
    server::run(&settings.socket_dir, &settings.driver_name, driver, shutdown).await
}

#[cfg(test)]
mod tests;
