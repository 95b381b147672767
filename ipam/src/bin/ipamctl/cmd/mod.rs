//! The commands: every argument is parsed into a validated action before etcd is contacted,
//! then the action runs against one connection and prints its result.

mod check;
mod config;
mod gc;
mod pool;
mod release;
mod show;

use datastore::client::Client;
use datastore::keys::KeyLayout;

use crate::cli::{Cli, Command, ConfigCommand, Format, PoolCommand};
use crate::error::CliError;
use crate::output::Progress;

/// How a command that ran to its end went: `Problems` exits 1 without being an error
/// (`check` found something).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Clean,
    Problems,
}

/// What every command runs with.
#[derive(Debug)]
pub struct Ctx {
    pub client: Client,
    pub keys: KeyLayout,
    pub format: Format,
    pub progress: Progress,
}

/// A command line, validated.
enum Action {
    PoolAdd(Box<datastore::model::IpPool>),
    PoolLs,
    PoolRm { name: String, force: bool },
    PoolSetDisabled { name: String, disabled: bool },
    Show(show::View),
    Release(release::Target),
    Check,
    Gc(gc::Plan),
    ConfigShow,
    ConfigSet(config::Change),
}

impl Action {
    fn parse(command: Command) -> Result<Action, CliError> {
        Ok(match command {
            Command::Pool { command } => match command {
                PoolCommand::Add(args) => Action::PoolAdd(Box::new(pool::parse_add(&args)?)),
                PoolCommand::Ls => Action::PoolLs,
                PoolCommand::Rm { name, force } => Action::PoolRm { name, force },
                PoolCommand::Disable { name } => Action::PoolSetDisabled { name, disabled: true },
                PoolCommand::Enable { name } => Action::PoolSetDisabled { name, disabled: false },
            },
            Command::Show(args) => Action::Show(show::parse(&args)?),
            Command::Release(args) => Action::Release(release::parse(&args)?),
            Command::Check => Action::Check,
            Command::Gc(args) => Action::Gc(gc::parse(&args)?),
            Command::Config { command } => match command {
                ConfigCommand::Show => Action::ConfigShow,
                ConfigCommand::Set { strict_affinity, max_blocks_per_host } => {
                    Action::ConfigSet(config::Change { strict_affinity, max_blocks_per_host })
                }
            },
        })
    }
}

/// Runs one command line to its end.
pub async fn run(cli: Cli) -> Result<Status, CliError> {
    let action = Action::parse(cli.command)?;
    let invalid = |e: datastore::cli::EtcdArgsError| CliError::invalid(e.flag, e.value, e.reason);
    let config = cli.etcd.config().map_err(invalid)?;
    let keys = cli.etcd.key_layout().map_err(invalid)?;
    let client = Client::connect(&config).await?;
    let mut ctx = Ctx { client, keys, format: cli.output, progress: Progress::new() };
    match action {
        Action::PoolAdd(resource) => pool::add(&ctx, &resource).await,
        Action::PoolLs => pool::ls(&ctx).await,
        Action::PoolRm { name, force } => pool::rm(&ctx, &name, force).await,
        Action::PoolSetDisabled { name, disabled } => {
            pool::set_disabled(&ctx, &name, disabled).await
        }
        Action::Show(view) => show::run(&mut ctx, &view).await,
        Action::Release(target) => release::run(&ctx, &target).await,
        Action::Check => check::run(&mut ctx).await,
        Action::Gc(plan) => gc::run(&mut ctx, &plan).await,
        Action::ConfigShow => config::show(&ctx).await,
        Action::ConfigSet(change) => config::set(&ctx, &change).await,
    }
}

/// Parses an address given on the command line; `arg` names the flag in the error.
pub fn parse_ip(arg: &'static str, text: &str) -> Result<std::net::IpAddr, CliError> {
    let trimmed = text.trim();
    trimmed.parse().map_err(|_| {
        let hint = if trimmed.contains('/') {
            "expected a single address, not a CIDR"
        } else {
            "expected an IPv4 (10.65.0.1) or IPv6 (fd00::1) address"
        };
        CliError::invalid(arg, text, hint)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_prefixes_are_checked_before_etcd() {
        assert!(parse_ip("--ip", "10.0.0.1").is_ok());
        assert!(parse_ip("--ip", "fd00::1").is_ok());
        let err = parse_ip("--ip", "10.0.0.300").unwrap_err().to_string();
        assert!(err.contains("--ip") && err.contains("10.0.0.300"), "{err}");
        let err = parse_ip("--ip", "10.0.0.0/24").unwrap_err().to_string();
        assert!(err.contains("not a CIDR"), "{err}");
    }
}
