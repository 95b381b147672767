//! One module per CNI verb, and [`run`]: environment + stdin in, one JSON document and an
//! exit status out. [`run_ipam`] is the same for the `tabby-ipam` IPAM plugin binary.

mod add;
mod check;
mod del;
mod gc;
mod ipam_plugin;
pub mod reap;
mod status;
mod version;

use std::future::Future;

use serde_json::Value;

pub use add::add;
pub use check::check;
pub use del::del;
pub use gc::{gc, Scope};
pub use status::status;
pub use version::version;

use crate::ipam::Backend;
use crate::logging;
use crate::spec::{reply_version, Error, LogLevel, NetConf, RawEnv, Request};
use crate::store::Session;

/// What the process prints and how it exits.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The one JSON document for stdout (a result, VERSION answer or error), if any.
    pub stdout: Option<String>,
    pub success: bool,
}

/// The whole life of a plugin process, shared by `tabby` and `tabby-ipam`: reads stdin, runs
/// `run` on the process environment, prints exactly one JSON document on stdout and turns the
/// outcome into the exit status.
pub fn process_main(name: &str, run: fn(&RawEnv, &[u8]) -> Outcome) -> std::process::ExitCode {
    use std::io::{Read, Write};

    let mut stdin = Vec::new();
    // An unreadable stdin is treated as empty: VERSION needs none, and every other verb then
    // fails config decoding (code 6) with a proper error reply.
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("{name}: cannot read stdin: {e}");
        stdin.clear();
    }
    let outcome = run(&RawEnv::from_process(), &stdin);
    if let Some(json) = outcome.stdout {
        let mut out = std::io::stdout().lock();
        // Nothing sensible is left to do if stdout is gone; the exit status still tells.
        let _ = writeln!(out, "{json}").and_then(|()| out.flush());
    }
    if outcome.success {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// Runs one invocation of the `tabby` plugin to completion.
pub fn run(env: &RawEnv, stdin: &[u8]) -> Outcome {
    run_with(env, stdin, dispatch)
}

/// Runs one invocation of the `tabby-ipam` IPAM plugin to completion.
pub fn run_ipam(env: &RawEnv, stdin: &[u8]) -> Outcome {
    run_with(env, stdin, ipam_plugin::dispatch)
}

fn run_with<F, Fut>(env: &RawEnv, stdin: &[u8], dispatch: F) -> Outcome
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Result<Option<Value>, Error>>,
{
    let request = Request::parse(env, stdin);
    let (level, file) = match &request {
        Ok(r) => conf_of(r)
            .map_or((LogLevel::default(), None), |c| (c.log_level, c.log_file_path.as_deref())),
        Err(_) => (LogLevel::default(), None),
    };
    logging::init(level, file);
    let result = request.and_then(|r| {
        // Current-thread: one command, and the cheapest start-up. Waits that can overlap
        // (etcd round trips, the kernel deleting a veth) still do.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Io { what: "start async runtime".into(), source })?;
        let result = rt.block_on(dispatch(r));
        // Nothing is left running; waiting for idle worker threads to be joined would only
        // delay the answer.
        rt.shutdown_background();
        result
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

/// The datastore session a config asks for (`None`: no etcd configured and no in-process
/// IPAM). Nothing connects until a step needs etcd.
fn session_for(conf: &NetConf) -> Result<Option<Session>, Error> {
    Session::for_conf(conf, Backend::is_in_process(conf))
}

async fn dispatch(request: Request) -> Result<Option<Value>, Error> {
    match request {
        Request::Version(v) => Ok(Some(version(v))),
        Request::Add(inv) => {
            let session = session_for(&inv.conf)?;
            let backend = required(Backend::for_conf(&inv.conf, &inv.cni_path, session.as_ref())?)?;
            let result = Box::pin(add(&inv, &backend, session.as_ref())).await?;
            Ok(Some(result.render(inv.conf.cni_version)))
        }
        Request::Check(inv) => {
            let session = session_for(&inv.conf)?;
            let backend = required(Backend::for_conf(&inv.conf, &inv.cni_path, session.as_ref())?)?;
            check(&inv, &backend, session.as_ref()).await.map(|()| None)
        }
        Request::Del(inv) => {
            // DEL still removes the veth when the IPAM plugin cannot be found or the etcd
            // settings are unusable; those errors are reported after that.
            let session = session_for(&inv.conf);
            let backend = Backend::for_conf(
                &inv.conf,
                &inv.cni_path,
                session.as_ref().ok().and_then(Option::as_ref),
            );
            del(&inv, backend, session).await.map(|()| None)
        }
        Request::Gc(m) => {
            let session = session_for(&m.conf)?;
            let backend = Backend::for_conf(&m.conf, &m.cni_path, session.as_ref())?;
            gc(&m, backend.as_ref(), Scope::Attachments).await.map(|()| None)
        }
        Request::Status(m) => {
            let session = session_for(&m.conf)?;
            let backend = Backend::for_conf(&m.conf, &m.cni_path, session.as_ref())?;
            status(&m, backend.as_ref(), session.as_ref()).await.map(|()| None)
        }
    }
}

/// ADD and CHECK need an IPAM backend to get or verify addresses.
fn required(backend: Option<Backend>) -> Result<Backend, Error> {
    backend.ok_or_else(|| {
        Error::config("ipam", "required: tabby needs an IPAM plugin to assign addresses")
    })
}
