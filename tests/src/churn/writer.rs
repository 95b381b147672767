//! Writes to a cluster's etcd from this process at a high rate: one thread that lives in the
//! fabric namespace (where etcd listens) and drives the datastore client, fed over a channel.
//! `etcdctl` costs a process per write, far too slow for 100 changes a second.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use datastore::client::{Client, EtcdConfig};
use nix::sched::CloneFlags;

/// How long one write may take; an etcd that is down fails writes this fast.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

struct Job {
    key: String,
    value: Vec<u8>,
    reply: mpsc::Sender<Result<i64, String>>,
}

/// A blocking etcd writer; see the module docs.
#[derive(Debug)]
pub struct EtcdWriter {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl EtcdWriter {
    /// Starts the writer thread in the namespace at `netns`, talking to `endpoint`. It
    /// connects on the first write and again after a failure, so it outlives etcd restarts.
    pub fn start(netns: &Path, endpoint: &str) -> io::Result<EtcdWriter> {
        let ns = File::open(netns)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", netns.display())))?;
        let mut config = EtcdConfig::new(vec![endpoint.to_string()]);
        config.connect_timeout = WRITE_TIMEOUT;
        config.request_timeout = WRITE_TIMEOUT;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new().name("etcd-writer".into()).spawn(move || {
            // Threads the runtime starts from here inherit the namespace.
            let entered = nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| io::Error::other(format!("setns into the fabric: {e}")))
                .and_then(|()| tokio::runtime::Builder::new_current_thread().enable_all().build());
            let runtime = match entered {
                Ok(runtime) => {
                    let _ = ready_tx.send(Ok(()));
                    runtime
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut client: Option<Client> = None;
            while let Ok(job) = queue.recv() {
                let result = runtime.block_on(async {
                    if client.is_none() {
                        client = Some(Client::connect(&config).await.map_err(|e| e.to_string())?);
                    }
                    let Some(connected) = client.as_ref() else {
                        return Err("no etcd client".to_string());
                    };
                    connected.put(&job.key, job.value, None).await.map_err(|e| e.to_string())
                });
                if result.is_err() {
                    client = None;
                }
                let _ = job.reply.send(result);
            }
        })?;
        ready_rx.recv().map_err(|_| io::Error::other("the etcd writer thread died"))??;
        Ok(EtcdWriter { jobs: Some(jobs), thread: Some(thread) })
    }

    /// Stores `value` at `key`; returns etcd's revision after the write, or what failed.
    pub fn put(&self, key: &str, value: Vec<u8>) -> Result<i64, String> {
        let (reply, answer) = mpsc::channel();
        let job = Job { key: key.to_string(), value, reply };
        self.jobs
            .as_ref()
            .ok_or("the etcd writer is stopped")?
            .send(job)
            .map_err(|_| "the etcd writer thread is gone".to_string())?;
        answer.recv().map_err(|_| "the etcd writer thread died mid-write".to_string())?
    }
}

impl Drop for EtcdWriter {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
