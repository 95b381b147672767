//! `ipamctl gc`: releases what `check` proves leaked (no workload endpoint, older than the
//! grace period, and on this node no network namespace), and repairs handle and affinity
//! records. `--dry-run` reports the same decisions and writes nothing.
//!
//! A container on this node counts as alive while one of the documented netns locations
//! names it: `/var/run/netns/<containerID>` (named namespaces, `ip netns`) and
//! `/var/run/mesos/isolators/network/cni/<containerID>/ns` (Mesos UCR's CNI isolator).
//! Runtimes that name namespaces otherwise (podman's `cni-<uuid>`, Docker's sandbox ids)
//! are protected by their workload endpoints, not by this check.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipam::gc::{GcOptions, GcReport};
use ipam::nodename::{self, NodenameInputs};

use super::{Ctx, Status};
use crate::cli::{Format, GcArgs};
use crate::error::CliError;
use crate::output::{emit, to_json, Table};

/// Named network namespaces (`ip netns add`): `<dir>/<containerID>` is the netns file.
pub const NETNS_DIR: &str = "/var/run/netns";
/// Mesos UCR's CNI isolator: `<dir>/<containerID>/ns` is the container's netns.
pub const MESOS_CNI_DIR: &str = "/var/run/mesos/isolators/network/cni";

/// A validated `gc` command line.
#[derive(Debug, Clone)]
pub struct Plan {
    pub grace: Duration,
    pub dry_run: bool,
    /// The node whose allocations are checked against local netns (`None`: no node known).
    pub node: Option<String>,
    pub netns_dirs: Vec<PathBuf>,
}

pub fn parse(args: &GcArgs) -> Result<Plan, CliError> {
    let grace = humantime::parse_duration(args.grace.trim()).map_err(|e| {
        CliError::invalid("--grace", &args.grace, format!("{e}; e.g. 90s, 10m, 1h"))
    })?;
    let node = match &args.node {
        Some(n) => {
            let n = n.trim();
            if n.is_empty() || n.contains('/') || n.chars().any(char::is_whitespace) {
                return Err(CliError::invalid("--node", n, "expected a node name"));
            }
            Some(n.to_string())
        }
        None => match nodename::resolve(&NodenameInputs::default()) {
            Ok((name, source)) => {
                tracing::info!(node = %name, ?source, "gc checks this node's network namespaces");
                Some(name)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no node name: no allocation is protected by a local netns");
                None
            }
        },
    };
    let netns_dirs = if args.netns_dir.is_empty() {
        vec![PathBuf::from(NETNS_DIR), PathBuf::from(MESOS_CNI_DIR)]
    } else {
        args.netns_dir.clone()
    };
    Ok(Plan { grace, dry_run: args.dry_run, node, netns_dirs })
}

/// Whether a network namespace for `container_id` exists in one of `dirs`.
pub fn netns_alive(dirs: &[PathBuf], container_id: &str) -> bool {
    // A container id is a path segment here: anything else cannot name a namespace.
    if container_id.is_empty()
        || container_id == "."
        || container_id == ".."
        || container_id.contains('/')
        || container_id.contains('\0')
    {
        return false;
    }
    dirs.iter().any(|dir| alive_in(dir, container_id))
}

fn alive_in(dir: &Path, container_id: &str) -> bool {
    let path = dir.join(container_id);
    match std::fs::metadata(&path) {
        // Mesos keeps a directory per container; its `ns` file is the namespace.
        Ok(meta) if meta.is_dir() => path.join("ns").exists(),
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            // Unreadable is not proof of death: keep the allocation.
            tracing::warn!(path = %path.display(), error = %e, "cannot stat netns; treating the container as alive");
            true
        }
    }
}

pub async fn run(ctx: &mut Ctx, plan: &Plan) -> Result<Status, CliError> {
    let dirs = plan.netns_dirs.clone();
    let alive = move |cid: &str| netns_alive(&dirs, cid);
    let opts = GcOptions {
        grace: plan.grace,
        dry_run: plan.dry_run,
        this_node: plan.node.clone(),
        netns_alive: &alive,
        now: SystemTime::now(),
    };
    ctx.progress.step(if plan.dry_run {
        "Reading IPAM state and deciding what to repair"
    } else {
        "Reading IPAM state and repairing"
    });
    let report = ipam::gc::gc(&ctx.client, &ctx.keys, &opts).await?;
    ctx.progress.done(&format!(
        "{} problems found, {} addresses {}",
        report.before.problems(),
        report.released.len(),
        if plan.dry_run { "to release" } else { "released" }
    ));
    let text = match ctx.format {
        Format::Json => to_json(&report)?,
        Format::Table => render(&report, plan),
    };
    emit(&text)?;
    Ok(Status::Clean)
}

fn render(r: &GcReport, plan: &Plan) -> String {
    let would = |done: &'static str, planned: &'static str| if r.dry_run { planned } else { done };
    let mut out = format!(
        "{}: grace period {}, local node {}; {} problems found by check.\n",
        if r.dry_run { "gc dry run (nothing changed)" } else { "gc" },
        humantime::format_duration(plan.grace),
        plan.node.as_deref().unwrap_or("<none>"),
        r.before.problems(),
    );
    let ips = |v: &[IpAddr]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    let lists: [(&str, Vec<String>); 8] = [
        (would("Released addresses", "Addresses to release"), ips(&r.released)),
        (would("Handles deleted", "Handles to delete"), r.handles_deleted.clone()),
        (would("Handles rewritten", "Handles to rewrite"), r.handles_fixed.clone()),
        (would("Affinities deleted", "Affinities to delete"), r.affinities_deleted.clone()),
        (would("Affinities confirmed", "Affinities to confirm"), r.affinities_confirmed.clone()),
        (would("Affinities restored", "Affinities to restore"), r.affinities_restored.clone()),
        (
            would("Blocks of deleted nodes deleted", "Blocks of deleted nodes to delete"),
            r.blocks_deleted.iter().map(ToString::to_string).collect(),
        ),
        (
            would("Blocks of deleted nodes unaffined", "Blocks of deleted nodes to unaffine"),
            r.blocks_unaffined.iter().map(ToString::to_string).collect(),
        ),
    ];
    let mut acted = false;
    for (title, items) in lists {
        if items.is_empty() {
            continue;
        }
        acted = true;
        let _ = writeln!(out, "\n{title}: {}", items.len());
        for item in items {
            let _ = writeln!(out, "  {item}");
        }
    }
    if !r.kept.is_empty() {
        let _ = writeln!(out, "\nLeaked-looking addresses kept: {}", r.kept.len());
        let mut t = Table::new(&["IP", "HANDLE", "REASON"], &[]);
        for k in &r.kept {
            t.push(vec![
                k.ip.to_string(),
                k.handle.clone().unwrap_or_else(|| "-".into()),
                k.reason.clone(),
            ]);
        }
        out.push_str(&t.render_indented("  "));
    }
    if r.skipped_conflicts > 0 {
        let _ = writeln!(
            out,
            "\n{} repairs lost a race with a concurrent change; run gc again",
            r.skipped_conflicts
        );
    }
    if !acted && r.kept.is_empty() {
        out.push_str("\nNothing to repair.\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_sources_are_files_or_mesos_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let netns = dir.path().join("netns");
        let mesos = dir.path().join("mesos");
        std::fs::create_dir_all(mesos.join("with-ns")).unwrap();
        std::fs::create_dir_all(mesos.join("without-ns")).unwrap();
        std::fs::create_dir_all(&netns).unwrap();
        std::fs::write(mesos.join("with-ns/ns"), b"").unwrap();
        std::fs::write(netns.join("named"), b"").unwrap();
        let dirs = vec![netns, mesos];
        assert!(netns_alive(&dirs, "named"));
        assert!(netns_alive(&dirs, "with-ns"));
        assert!(!netns_alive(&dirs, "without-ns"));
        assert!(!netns_alive(&dirs, "gone"));
        for hostile in ["", ".", "..", "../netns/named", "a/b"] {
            assert!(!netns_alive(&dirs, hostile), "{hostile:?}");
        }
    }

    #[test]
    fn grace_and_node_are_validated() {
        let args = |grace: &str, node: Option<&str>| GcArgs {
            grace: grace.into(),
            dry_run: false,
            node: node.map(str::to_string),
            netns_dir: Vec::new(),
        };
        let plan = parse(&args("90s", Some("n1"))).unwrap();
        assert_eq!(plan.grace, Duration::from_secs(90));
        assert_eq!(plan.node.as_deref(), Some("n1"));
        assert_eq!(plan.netns_dirs.len(), 2);
        assert!(matches!(
            parse(&args("ten minutes", Some("n1"))),
            Err(CliError::InvalidArg { arg: "--grace", .. })
        ));
        assert!(matches!(
            parse(&args("1m", Some("a/b"))),
            Err(CliError::InvalidArg { arg: "--node", .. })
        ));
    }
}
