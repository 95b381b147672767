//! tabbyctl, the operator's tool: resources in and out of etcd (`apply`, `create`, `replace`,
//! `get`, `delete`), the Calico v1 profile commands, `node status` and `endpoint ls`.
//!
//! Inputs are parsed and validated completely before anything is written; writes are single
//! etcd transactions guarded by compare-and-swap. The binary (`src/main.rs`) only maps
//! [`run`]'s result to an exit status.

#![forbid(unsafe_code)]

pub mod cli;
pub mod cmd;
pub mod error;
pub mod input;
pub mod output;
pub mod store;
pub mod v1;

use std::future::Future;
use std::io::Read;

use clap::CommandFactory;

use crate::cli::{Cli, Command, EndpointCommand, EtcdArgs, NodeCommand};
use crate::cmd::apply::WriteMode;
pub use crate::error::CtlError;
use crate::output::emit;
use crate::store::{parse_kind, Store};
use crate::v1::{EditOp, ProfileCommand};

/// Runs one parsed command line to completion, printing its output.
pub fn run(cli: Cli) -> Result<(), CtlError> {
    let etcd = cli.etcd;
    match cli.command {
        Command::Completion { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tabbyctl", &mut buf);
            emit(&String::from_utf8_lossy(&buf))
        }
        Command::Man => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut buf)
                .map_err(|e| CtlError::Output(e.to_string()))?;
            emit(&String::from_utf8_lossy(&buf))
        }
        Command::Version => emit(&format!("tabbyctl {}\n", env!("CARGO_PKG_VERSION"))),
        Command::Apply(args) => write(&etcd, WriteMode::Apply, &args),
        Command::Create(args) => write(&etcd, WriteMode::Create, &args),
        Command::Replace(args) => write(&etcd, WriteMode::Replace, &args),
        Command::Get(args) => {
            parse_kind(&args.kind)?;
            let shown = block_on(async {
                let store = Store::connect(&etcd).await?;
                cmd::get::run(&store, &args).await
            })?;
            emit(&shown.text)?;
            report_bad(&shown.bad)
        }
        Command::Delete(args) => {
            let docs = if let Some(file) = &args.file {
                Some(input::read_documents(file, &args.namespace, false)?)
            } else {
                parse_kind(args.kind.as_deref().unwrap_or_default())?;
                None
            };
            let text = block_on(async {
                let store = Store::connect(&etcd).await?;
                if let Some(docs) = &docs {
                    cmd::delete::documents(&store, docs).await
                } else {
                    let kind = args.kind.as_deref().unwrap_or_default();
                    let name = args.name.as_deref().unwrap_or_default();
                    cmd::delete::by_name(&store, kind, name, &args.namespace).await
                }
            })?;
            emit(&text)
        }
        Command::Profile(args) => {
            // Global flags after the v1 words land in the words (they are a trailing list).
            let (words, etcd) = take_etcd_flags(&args.args, etcd)?;
            let mut command = v1::parse_command(&words)?;
            if let ProfileCommand::RuleUpdate { name } = &command {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).map_err(|e| CtlError::Read {
                    path: "<stdin>".into(),
                    reason: e.to_string(),
                })?;
                let rules = v1::parse_rules_json(&text)?;
                command = ProfileCommand::Edit {
                    name: name.clone(),
                    op: Box::new(EditOp::RuleUpdate(rules)),
                };
            }
            let text = block_on(async {
                let store = Store::connect(&etcd).await?;
                cmd::profile::run(&store, command).await
            })?;
            emit(&text)
        }
        Command::Node { command: NodeCommand::Status { output, bird_socket, birdc } } => {
            let bird = cmd::node::Bird { socket: bird_socket, birdc };
            let text = block_on(async {
                let store = Store::connect(&etcd).await?;
                cmd::node::status(&store, output, &bird).await
            })?;
            emit(&text)
        }
        Command::Endpoint { command: EndpointCommand::Ls { node, output } } => {
            let listed = block_on(async {
                let store = Store::connect(&etcd).await?;
                cmd::endpoint::ls(&store, node.as_deref(), output).await
            })?;
            emit(&listed.text)?;
            report_bad(&listed.bad)
        }
    }
}

fn write(etcd: &EtcdArgs, mode: WriteMode, args: &cli::WriteArgs) -> Result<(), CtlError> {
    let docs = input::read_documents(&args.file, &args.namespace, true)?;
    let text = block_on(async {
        let store = Store::connect(etcd).await?;
        cmd::apply::write(&store, mode, &docs).await
    })?;
    emit(&text)
}

/// Moves `--etcd-…` flags out of the free-form profile words into the etcd settings.
fn take_etcd_flags(
    words: &[String],
    mut etcd: EtcdArgs,
) -> Result<(Vec<String>, EtcdArgs), CtlError> {
    const FLAGS: [&str; 5] = [
        "--etcd-endpoints",
        "--etcd-ca-cert-file",
        "--etcd-cert-file",
        "--etcd-key-file",
        "--etcd-prefix",
    ];
    let mut rest = Vec::with_capacity(words.len());
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_owned())),
            None => (word.as_str(), None),
        };
        if !FLAGS.contains(&flag) {
            rest.push(word.clone());
            continue;
        }
        let value = match inline {
            Some(value) => value,
            None => iter
                .next()
                .cloned()
                .ok_or_else(|| CtlError::Usage(format!("{flag} needs a value")))?,
        };
        match flag {
            "--etcd-endpoints" => etcd.etcd_endpoints = Some(value),
            "--etcd-ca-cert-file" => etcd.etcd_ca_cert_file = Some(value.into()),
            "--etcd-cert-file" => etcd.etcd_cert_file = Some(value.into()),
            "--etcd-key-file" => etcd.etcd_key_file = Some(value.into()),
            _ => etcd.etcd_prefix = value,
        }
    }
    Ok((rest, etcd))
}

/// Stored records that did not decode were left out of a listing: say so, and fail.
fn report_bad(bad: &[String]) -> Result<(), CtlError> {
    if bad.is_empty() {
        Ok(())
    } else {
        Err(CtlError::Invalid(format!("some stored records were skipped:\n{}", bad.join("\n"))))
    }
}

/// Runs `future` on a single-threaded runtime: tabbyctl does one thing at a time.
fn block_on<T>(future: impl Future<Output = Result<T, CtlError>>) -> Result<T, CtlError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::Output(format!("cannot start the async runtime: {e}")))?
        .block_on(future)
}
