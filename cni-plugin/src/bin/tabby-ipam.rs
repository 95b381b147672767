//! `tabby-ipam`: the CNI IPAM plugin other plugins delegate to (`"ipam": {"type":
//! "tabby-ipam"}`), over the same etcd allocator `tabby` runs in-process.

#![forbid(unsafe_code)]
use std::io::{Read, Write};
use std::process::ExitCode;

use cni_plugin::cmd;
use cni_plugin::spec::RawEnv;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("tabby-ipam: cannot read stdin: {e}");
        stdin.clear();
    }
    let outcome = cmd::run_ipam(&RawEnv::from_process(), &stdin);
    if let Some(json) = outcome.stdout {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{json}").and_then(|()| out.flush());
    }
    if outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
