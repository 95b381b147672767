//! Network namespace handles, and running a short piece of work inside one.
//!
//! Work inside another namespace runs on a fresh thread that `setns`es and then exits, so
//! the caller's thread never changes namespace and a failure cannot leave it in the wrong
//! one. Netlink sockets opened there stay bound to that namespace after the thread ends.
//! The one exception, [`Netns::open_with_socket`], is for the start of an ADD, where a
//! thread's start and exit would cost more than all the rest of opening the socket.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};

use super::netlink::RouteSocket;
use super::Error;

/// A network namespace: the caller's own, or one opened from a path (a bind mount such as
/// `/var/run/netns/x`, or `/proc/<pid>/ns/net`).
pub struct Netns {
    /// `None` for the caller's namespace: work runs inline, no thread needed.
    file: Option<File>,
    path: PathBuf,
    /// A socket opened together with the handle, handed out by the first [`Netns::socket`].
    ready: Mutex<Option<RouteSocket>>,
}

impl std::fmt::Debug for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netns").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Netns {
    /// The namespace of the calling thread (the "host" for the plugin).
    pub fn current() -> Netns {
        Netns {
            file: None,
            path: PathBuf::from("/proc/thread-self/ns/net"),
            ready: Mutex::new(None),
        }
    }

    /// Opens the namespace at `path`. [`Error::NetnsMissing`] when there is nothing at the
    /// path, [`Error::NotANetns`] when it is not a network namespace.
    pub fn open(path: &Path) -> Result<Netns, Error> {
        let file = File::open(path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                Error::NetnsMissing { path: path.to_owned() }
            } else {
                Error::NetnsOpen { path: path.to_owned(), source }
            }
        })?;
        // Both a netns bind mount and /proc/<pid>/ns/net open onto nsfs; anything else (a
        // plain file, a directory) would make setns fail later with a vaguer EINVAL.
        let fs = fstatfs(&file)
            .map_err(|e| Error::NetnsOpen { path: path.to_owned(), source: e.into() })?
            .filesystem_type();
        if fs != NSFS_MAGIC {
            return Err(Error::NotANetns { path: path.to_owned() });
        }
        Ok(Netns { file: Some(file), path: path.to_owned(), ready: Mutex::new(None) })
    }

    /// [`Netns::open`], plus a netlink socket in the namespace for the first
    /// [`Netns::socket`], opened by entering the namespace on the calling thread and
    /// leaving it at once.
    ///
    /// Only for a caller that does nothing else on this thread meanwhile and gives up on
    /// [`Error::NetnsReturn`]: the thread is then still in the other namespace, and
    /// anything it did next for the host would happen in the container.
    pub fn open_with_socket(path: &Path) -> Result<Netns, Error> {
        let netns = Netns::open(path)?;
        let Some(file) = &netns.file else { return Ok(netns) };
        let home_path = Path::new("/proc/thread-self/ns/net");
        let home = File::open(home_path)
            .map_err(|source| Error::NetnsOpen { path: home_path.to_owned(), source })?;
        setns(file, CloneFlags::CLONE_NEWNET)
            .map_err(|errno| Error::NetnsEnter { path: path.to_owned(), source: errno.into() })?;
        let opened = RouteSocket::open();
        setns(&home, CloneFlags::CLONE_NEWNET)
            .map_err(|errno| Error::NetnsReturn { path: path.to_owned(), source: errno.into() })?;
        *netns.ready() = Some(opened.map_err(netns.socket_error())?);
        Ok(netns)
    }

    /// The path this handle was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace file, for `IFLA_NET_NS_FD`; `None` for the caller's own namespace.
    pub(crate) fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// Runs `work` inside the namespace and returns its result.
    pub fn run<T, F>(&self, work: F) -> Result<T, Error>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let Some(file) = &self.file else {
            return Ok(work());
        };
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("tabby-netns".into())
                .spawn_scoped(scope, move || setns(file, CloneFlags::CLONE_NEWNET).map(|()| work()))
                .map_err(|source| Error::NetnsOpen { path: self.path.clone(), source })?;
            match handle.join() {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(errno)) => {
                    Err(Error::NetnsEnter { path: self.path.clone(), source: errno.into() })
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// A netlink route socket bound to this namespace.
    pub(crate) fn socket(&self) -> Result<RouteSocket, Error> {
        let ready = self.ready().take();
        match ready {
            Some(socket) => Ok(socket),
            None => self.run(RouteSocket::open)?.map_err(self.socket_error()),
        }
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, Option<RouteSocket>> {
        // The slot holds a socket or nothing: a panic elsewhere cannot leave it half-set.
        self.ready.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn socket_error(&self) -> impl FnOnce(super::NetlinkError) -> Error + '_ {
        |source| Error::Netlink {
            op: format!("open netlink socket in {}", self.path.display()),
            source,
        }
    }
}
