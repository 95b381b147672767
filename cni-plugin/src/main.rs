//! `tabby`: the CNI plugin binary. Reads the `CNI_*` environment and the network config on
//! stdin, runs the verb, and prints exactly one JSON document (result or error) on stdout.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if let Some(code) = cni_plugin::cmd::reap::reap_main(&args) {
        return code;
    }
    cni_plugin::cmd::reap::enable();
    cni_plugin::cmd::process_main("tabby", cni_plugin::cmd::run)
}
