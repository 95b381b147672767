//! `ipamctl`: parses the command line (usage errors exit 2), runs the command on a small
//! runtime, and maps the outcome to an exit status: 0 done, 1 error or problems found.

#![forbid(unsafe_code)]
mod cli;
mod cmd;
mod error;
mod output;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("TABBY_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    let cli = cli::Cli::parse();
    match run(cli) {
        Ok(cmd::Status::Clean) => ExitCode::SUCCESS,
        Ok(cmd::Status::Problems) => ExitCode::from(1),
        Err(e) => {
            let retryable =
                e.downcast_ref::<error::CliError>().is_some_and(error::CliError::is_retryable);
            let retry = if retryable { "\n(this may succeed if retried)" } else { "" };
            // Each layer's message already includes its cause; `{:#}` would repeat it.
            // Nothing more can be done if stderr is closed too.
            let _ = writeln!(std::io::stderr(), "error: {e}{retry}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<cmd::Status> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(cmd::run(cli))?)
}
