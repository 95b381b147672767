//! `tabby-agent`: load the configuration, set up logging and signals, run the agent.
//!
//! Exit codes: 0 stopped on request (or `--once` programmed the dataplane), 1 the agent
//! failed, 2 the configuration is invalid.

#![forbid(unsafe_code)]
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use agent::config::{self, Cli, Inputs};
use agent::daemon::{self, Mode};

/// How long `--once` may take to connect, sync and program.
const ONCE_TIMEOUT: Duration = Duration::from_mins(1);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let once = cli.once;
    let loaded = match config::load(&Inputs::from_process(cli)) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("tabby-agent: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // Validated by `load`, so this cannot fail; fall back to `info` all the same.
    let filter = tracing_subscriber::EnvFilter::try_new(&loaded.config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, not for journald or a log file.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        file = ?loaded.file,
        node = %loaded.config.nodename,
        node_from = %loaded.config.nodename_source,
        "tabby-agent starting"
    );
    let mode = if once { Mode::Once { timeout: ONCE_TIMEOUT } } else { Mode::Daemon };
    match run(loaded.config, mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tabby-agent: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(config: config::AgentConfig, mode: Mode) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tabby-agent")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
            let _ = stop_tx.send(true);
        });
        let dataplanes =
            agent::dataplane::configured(&config).context("cannot set up the dataplane")?;
        // On its own task: a reconcile's synchronous applies may then block their thread
        // without stalling the runtime.
        tokio::spawn(daemon::run(config, mode, dataplanes, stop_rx))
            .await
            .context("the agent task panicked")?
            .context("the agent stopped")
    })
}
