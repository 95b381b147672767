//! One module per CNI verb, and [`run`]: environment + stdin in, one JSON document and an
//! exit status out.

mod add;
mod check;
mod del;
mod gc;
mod status;
mod version;

use serde_json::Value;

pub use add::add;
pub use check::check;
pub use del::del;
pub use gc::gc;
pub use status::status;
pub use version::version;

use crate::ipam::Delegate;
use crate::logging;
use crate::spec::{reply_version, Error, LogLevel, NetConf, RawEnv, Request};

/// What the process prints and how it exits.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The one JSON document for stdout (a result, VERSION answer or error), if any.
    pub stdout: Option<String>,
    pub success: bool,
}

/// Runs one CNI invocation to completion.
pub fn run(env: &RawEnv, stdin: &[u8]) -> Outcome {
    let request = Request::parse(env, stdin);
    let (level, file) = match &request {
        Ok(r) => conf_of(r)
            .map_or((LogLevel::default(), None), |c| (c.log_level, c.log_file_path.as_deref())),
        Err(_) => (LogLevel::default(), None),
    };
    logging::init(level, file);
    let result = request.and_then(|r| {
        // Current-thread: one command, no parallelism to gain, and the cheapest start-up.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Io { what: "start async runtime".into(), source })?;
        rt.block_on(dispatch(r))
    });
    match result {
        Ok(stdout) => Outcome { stdout: stdout.map(|v| v.to_string()), success: true },
        Err(e) => {
            tracing::error!(code = e.code(), error = %e, "CNI request failed");
            let reply = e.to_reply(reply_version(stdin));
            Outcome { stdout: serde_json::to_string(&reply).ok(), success: false }
        }
    }
}

fn conf_of(r: &Request) -> Option<&NetConf> {
    match r {
        Request::Add(i) | Request::Check(i) => Some(&i.conf),
        Request::Del(i) => Some(&i.conf),
        Request::Gc(m) | Request::Status(m) => Some(&m.conf),
        Request::Version(_) => None,
    }
}

async fn dispatch(request: Request) -> Result<Option<Value>, Error> {
    match request {
        Request::Version(v) => Ok(Some(version(v))),
        Request::Add(inv) => {
            let mut ipam = delegate_for(&inv.conf, &inv.cni_path)?;
            let result = add(&inv, &mut ipam).await?;
            Ok(Some(result.render(inv.conf.cni_version)))
        }
        Request::Check(inv) => {
            let mut ipam = delegate_for(&inv.conf, &inv.cni_path)?;
            check(&inv, &mut ipam).await.map(|()| None)
        }
        Request::Del(inv) => {
            // DEL still removes the veth when the IPAM plugin cannot be found; the error for
            // the IPAM part is reported after that.
            let ipam = inv.conf.ipam.as_ref().map(|c| Delegate::find(c, &inv.cni_path)).transpose();
            del(&inv, ipam).await.map(|()| None)
        }
        Request::Gc(m) => {
            let mut ipam =
                m.conf.ipam.as_ref().map(|c| Delegate::find(c, &m.cni_path)).transpose()?;
            gc(&m, ipam.as_mut()).await.map(|()| None)
        }
        Request::Status(m) => {
            let mut ipam =
                m.conf.ipam.as_ref().map(|c| Delegate::find(c, &m.cni_path)).transpose()?;
            status(&m, ipam.as_mut()).await.map(|()| None)
        }
    }
}

/// The IPAM backend for ADD and CHECK. Phase 1: always a delegate plugin from `CNI_PATH`
/// (the in-process allocator is selected here once it exists).
fn delegate_for(conf: &NetConf, cni_path: &[std::path::PathBuf]) -> Result<Delegate, Error> {
    let ipam = conf.ipam.as_ref().ok_or_else(|| {
        Error::config("ipam", "required: tabby needs an IPAM plugin to assign addresses")
    })?;
    Delegate::find(ipam, cni_path)
}
