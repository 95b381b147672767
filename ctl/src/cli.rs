//! The command line, declared once for parsing, shell completions and the man page.

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

use crate::output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "tabbyctl",
    version,
    about = "Manage tabby's Calico-compatible resources in etcd",
    long_about = "Manage tabby's Calico-compatible resources in etcd: IP pools, profiles, \
                  policies and nodes (apply, create, replace, get, delete), the Calico v1 \
                  profile commands, node status and workload endpoints.\n\n\
                  Exit status: 0 on success, 1 on an error (invalid input, not found, \
                  conflict, etcd unreachable), 2 on a usage error."
)]
pub struct Cli {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(subcommand)]
    pub command: Command,
}

pub use datastore::cli::EtcdArgs;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update resources from a file (YAML or JSON, one or many documents)
    Apply(WriteArgs),
    /// Create resources from a file; fails if any already exists
    Create(WriteArgs),
    /// Replace existing resources from a file; fails if any is missing or changed since read
    Replace(WriteArgs),
    /// Show resources
    Get(GetArgs),
    /// Delete resources by kind and name, or those named in a file
    Delete(DeleteArgs),
    /// The Calico v1 profile commands (profile add, tags, rules)
    #[command(after_long_help = crate::v1::USAGE)]
    Profile(ProfileArgs),
    /// Node commands
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Workload endpoint commands
    Endpoint {
        #[command(subcommand)]
        command: EndpointCommand,
    },
    /// Print a shell completion script
    Completion {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff)
    Man,
    /// Print tabbyctl's version
    Version,
}

#[derive(Debug, Clone, Args)]
pub struct WriteArgs {
    /// File to read, or - for stdin
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: String,
    /// Namespace for namespaced resources that name none
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Resource kind (ippool, profile, globalnetworkpolicy, networkpolicy, workloadendpoint,
    /// node, bgppeer, bgpconfiguration, or their short forms)
    pub kind: String,
    /// One resource's name; all resources of the kind when omitted
    pub name: Option<String>,
    /// Namespace, for namespaced kinds
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Every namespace, for namespaced kinds
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// Resource kind
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub kind: Option<String>,
    /// Resource name
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub name: Option<String>,
    /// Delete the resources named in this file (- for stdin)
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<String>,
    /// Namespace, for namespaced kinds
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, Clone, Args)]
pub struct ProfileArgs {
    /// The v1 command: show | add NAME | remove NAME | NAME tag … | NAME rule …
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Every node: agent heartbeat, address, blocks, endpoints (and BGP)
    Status {
        /// Output format
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
        /// The local BIRD's control socket: its BGP sessions are shown when it answers
        #[arg(long, value_name = "FILE", default_value = "/run/bird/bird.ctl")]
        bird_socket: std::path::PathBuf,
        /// The birdc program
        #[arg(long, value_name = "PROGRAM", default_value = "birdc")]
        birdc: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// List workload endpoints
    Ls {
        /// Only endpoints on this node
        #[arg(long)]
        node: Option<String>,
        /// Output format
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
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
}
