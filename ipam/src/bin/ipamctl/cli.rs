//! ipamctl's command line, declared once with clap: usage errors exit 2 before anything runs.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "ipamctl",
    version,
    about = "Inspect, check and repair tabby's IP address management in etcd",
    long_about = "Inspect, check and repair tabby's IP address management in etcd: IP pools, \
                  per-host blocks, handles and affinities, stored as Calico stores them.\n\n\
                  Exit status: 0 on success, 1 on an error (or when `check` finds problems), \
                  2 on a usage error."
)]
pub struct Cli {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Output format
    #[arg(short = 'o', long, value_enum, global = true, default_value_t = Format::Table)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

pub use datastore::cli::EtcdArgs;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal
    #[default]
    Table,
    /// One JSON document
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage IP pools
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// Usage per pool (default), per block, of one address, of one host, or borrowed addresses
    Show(ShowArgs),
    /// Release an address or every address of a handle
    Release(ReleaseArgs),
    /// Cross-check blocks, handles, affinities and workload endpoints (exit 1 on problems)
    Check,
    /// Repair what `check` proves wrong: leaked addresses, stray handles and affinities
    Gc(GcArgs),
    /// Show or change the IPAM configuration
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Create a pool
    Add(PoolAddArgs),
    /// List pools
    Ls,
    /// Delete a pool (refused while it has allocations, unless --force)
    Rm {
        name: String,
        /// Delete even though addresses of the pool are still allocated
        #[arg(long)]
        force: bool,
    },
    /// Stop handing out new addresses from a pool (allocated ones stay)
    Disable { name: String },
    /// Hand out addresses from a disabled pool again
    Enable { name: String },
}

#[derive(Debug, Clone, Args)]
pub struct PoolAddArgs {
    /// Pool name (a DNS-1123 subdomain)
    pub name: String,
    /// Pool CIDR, strictly masked: 10.65.0.0/16, fd00:65::/64
    pub cidr: String,
    /// Block prefix length: 20-32 for IPv4 (default 26), 116-128 for IPv6 (default 122)
    #[arg(long, value_name = "N")]
    pub block_size: Option<u16>,
    /// IPIP encapsulation towards other hosts
    #[arg(long, value_enum, value_name = "MODE")]
    pub ipip_mode: Option<IpipMode>,
    /// Masquerade traffic from the pool to destinations outside every pool
    #[arg(long)]
    pub nat_outgoing: bool,
    /// Nodes the pool serves (Calico selector), default all()
    #[arg(long, value_name = "SELECTOR")]
    pub node_selector: Option<String>,
    /// Create the pool disabled
    #[arg(long)]
    pub disabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IpipMode {
    Never,
    Always,
    #[value(name = "CrossSubnet", alias = "cross-subnet")]
    CrossSubnet,
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("view").args(["blocks", "ip", "host", "show_borrowed"])))]
pub struct ShowArgs {
    /// One row per block: affinity, addresses in use and free, borrowed count
    #[arg(long, visible_alias = "show-blocks")]
    pub blocks: bool,
    /// Who holds this address (handle and attributes)
    #[arg(long, value_name = "ADDRESS")]
    pub ip: Option<String>,
    /// The blocks and allocations of one host
    #[arg(long, value_name = "NODE")]
    pub host: Option<String>,
    /// Addresses allocated from blocks affine to another host
    #[arg(long)]
    pub show_borrowed: bool,
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("what").args(["ip", "handle"]).required(true).multiple(true)))]
pub struct ReleaseArgs {
    /// The address to release (with --handle: only if that handle holds it)
    #[arg(long, value_name = "ADDRESS")]
    pub ip: Option<String>,
    /// The handle whose addresses to release (with --ip: the expected holder)
    #[arg(long, value_name = "HANDLE")]
    pub handle: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct GcArgs {
    /// Allocations younger than this are never released (humantime: 90s, 10m, 1h)
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    pub grace: String,
    /// Report what would be done; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// This host's node name, whose allocations are also checked against live network
    /// namespaces [default: as the CNI plugin resolves it: TABBY_NODENAME,
    /// /var/lib/tabby/nodename, the hostname]
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Where this host's network namespaces live: a container is alive while
    /// DIR/<containerID> (a netns file) or DIR/<containerID>/ns (Mesos) exists. Repeatable
    /// [default: /var/run/netns and /var/run/mesos/isolators/network/cni]
    #[arg(long, value_name = "DIR")]
    pub netns_dir: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the IPAM configuration in force
    Show,
    /// Change the IPAM configuration
    #[command(group(ArgGroup::new("change").args(["strict_affinity", "max_blocks_per_host"]).required(true).multiple(true)))]
    Set {
        /// Never borrow from other hosts' blocks
        #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
        strict_affinity: Option<bool>,
        /// Blocks a host may claim (0: the default of 20); needs strict affinity
        #[arg(long, value_name = "N")]
        max_blocks_per_host: Option<u32>,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn show_views_are_exclusive_and_release_needs_a_target() {
        assert!(Cli::try_parse_from(["ipamctl", "show", "--blocks", "--host", "n"]).is_err());
        assert!(Cli::try_parse_from(["ipamctl", "release"]).is_err());
        assert!(Cli::try_parse_from(["ipamctl", "release", "--ip", "10.0.0.1"]).is_ok());
        assert!(Cli::try_parse_from(["ipamctl", "config", "set"]).is_err());
        let cli = Cli::try_parse_from([
            "ipamctl",
            "config",
            "set",
            "--strict-affinity",
            "true",
            "-o",
            "json",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.output, Format::Json);
    }
}
