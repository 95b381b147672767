//! `tabby`: the CNI plugin binary. Reads the `CNI_*` environment and the network config on
//! stdin, runs the verb, and prints exactly one JSON document (result or error) on stdout.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    cni_plugin::cmd::process_main("tabby", cni_plugin::cmd::run)
}
