//! `tabby`: the CNI plugin binary. Reads the `CNI_*` environment and the network config on
//! stdin, runs the verb, and prints exactly one JSON document (result or error) on stdout.

#![forbid(unsafe_code)]
use std::io::{Read, Write};
use std::process::ExitCode;

use cni_plugin::cmd;
use cni_plugin::spec::RawEnv;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    // An unreadable stdin is treated as empty: VERSION needs none, and every other verb then
    // fails config decoding (code 6) with a proper error reply.
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("tabby: cannot read stdin: {e}");
        stdin.clear();
    }
    let outcome = cmd::run(&RawEnv::from_process(), &stdin);
    if let Some(json) = outcome.stdout {
        let mut out = std::io::stdout().lock();
        // Nothing sensible is left to do if stdout is gone; the exit status still tells.
        let _ = writeln!(out, "{json}").and_then(|()| out.flush());
    }
    if outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
