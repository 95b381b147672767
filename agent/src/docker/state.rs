//! What the driver must remember between Docker's calls: each network's name and subnet
//! (Docker sends the subnet and any `-o network=` only at `CreateNetwork`; the name it shows
//! is asked for at the first endpoint), kept in a small JSON file so an agent restart does
//! not orphan its networks, and the gateway addresses answered without allocation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::protocol::ObjectId;

/// One Docker network as the driver knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// The network's name, which is also its profile.
    pub name: String,
    pub subnet: Ipv4Net,
    /// `name` is only the id-based fallback: Docker's name for the network is still to be
    /// asked for (at the first endpoint, once Docker knows the network). Records written
    /// before this field existed were named for good.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub provisional: bool,
}

/// The networks of this host, and the gateway answers given.
#[derive(Debug)]
pub struct Networks {
    path: PathBuf,
    records: Mutex<BTreeMap<ObjectId, NetworkRecord>>,
    /// `(pool, address)` pairs answered to a gateway request: never allocated, so their
    /// release must not free an address a container may hold.
    gateways: Mutex<BTreeSet<(Ipv4Net, Ipv4Addr)>>,
}

impl Networks {
    /// Reads the state file; a missing or unreadable one starts empty (with a warning for
    /// the latter: networks made before must then be recreated).
    pub fn load(path: PathBuf) -> Networks {
        let networks = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable Docker network state");
                BTreeMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read Docker network state");
                BTreeMap::new()
            }
        };
        Networks { path, records: Mutex::new(networks), gateways: Mutex::new(BTreeSet::new()) }
    }

    pub fn get(&self, id: &ObjectId) -> Option<NetworkRecord> {
        self.lock().get(id).cloned()
    }

    /// Records a network; fails (and records nothing) if the state cannot be saved.
    pub fn insert(&self, id: ObjectId, record: NetworkRecord) -> std::io::Result<()> {
        let mut map = self.lock();
        let previous = map.insert(id.clone(), record);
        if let Err(e) = self.save(&map) {
            match previous {
                Some(p) => map.insert(id, p),
                None => map.remove(&id),
            };
            return Err(e);
        }
        Ok(())
    }

    /// Forgets a network; `false` if it was unknown.
    pub fn remove(&self, id: &ObjectId) -> std::io::Result<bool> {
        let mut map = self.lock();
        let removed = map.remove(id).is_some();
        if removed {
            self.save(&map)?;
        }
        Ok(removed)
    }

    pub fn add_gateway(&self, pool: Ipv4Net, ip: Ipv4Addr) {
        self.gateways.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert((pool, ip));
    }

    /// Whether `(pool, ip)` was a gateway answer (and forgets it).
    pub fn take_gateway(&self, pool: Ipv4Net, ip: Ipv4Addr) -> bool {
        self.gateways.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&(pool, ip))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ObjectId, NetworkRecord>> {
        self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Write to a temporary file, then rename: a crash never leaves half a file.
    fn save(&self, map: &BTreeMap<ObjectId, NetworkRecord>) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(map).map_err(std::io::Error::other)?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &self.path)
    }
}
