//! `tabby-ipam`: the CNI IPAM plugin other plugins delegate to (`"ipam": {"type":
//! "tabby-ipam"}`), over the same etcd allocator `tabby` runs in-process.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    cni_plugin::cmd::process_main("tabby-ipam", cni_plugin::cmd::run_ipam)
}
