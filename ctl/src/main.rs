//! `tabbyctl`: parses the command line (usage errors exit 2), runs it, and maps errors to
//! exit status 1 with the message on stderr.

#![forbid(unsafe_code)]
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("TABBY_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    let cli = ctl::cli::Cli::parse();
    match ctl::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let hint = if e.is_retryable() { "\n(this may succeed if retried)" } else { "" };
            // Nothing more can be done if stderr is closed too.
            let _ = writeln!(std::io::stderr(), "error: {e}{hint}");
            ExitCode::from(e.exit_code())
        }
    }
}
