//! Convergence statistics: percentiles of per-change convergence times and the summary table
//! the scale and chaos tests print.

use std::fmt::Write as _;
use std::time::Duration;

/// One row of the summary: a phase of a run (churn, a checkpoint, a chaos step).
#[derive(Debug, Clone, Default)]
pub struct PhaseReport {
    pub name: String,
    /// Changes whose etcd write succeeded.
    pub changes: usize,
    /// Writes that failed (etcd down); they change nothing and are not timed.
    pub failed_writes: usize,
    /// Convergence time of each successful change that converged (etcd write → every
    /// affected host's table shows it), sorted.
    pub latencies: Vec<Duration>,
    /// Packet probes run at the end of the phase, and how many of them disagreed.
    pub packet_checks: usize,
    pub packet_failures: usize,
    /// Wall time of the phase.
    pub took: Duration,
}

impl PhaseReport {
    /// Successful changes that never showed up on every affected host.
    pub fn unconverged(&self) -> usize {
        self.changes - self.latencies.len()
    }

    /// The `q` quantile (0..=1) of the convergence times, nearest rank.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        quantile(&self.latencies, q)
    }

    pub fn max(&self) -> Option<Duration> {
        self.latencies.last().copied()
    }
}

/// The `q` quantile of sorted `values`, nearest rank; `None` when empty.
pub fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), |d| format!("{:.3}s", d.as_secs_f64()))
}

/// The summary table: one line per phase.
pub fn render(rows: &[PhaseReport]) -> String {
    let header = [
        "phase", "changes", "failed", "unconv", "p50", "p99", "max", "packets", "bad", "took",
        "writes/s",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.changes.to_string(),
                r.failed_writes.to_string(),
                r.unconverged().to_string(),
                secs(r.quantile(0.5)),
                secs(r.quantile(0.99)),
                secs(r.max()),
                r.packet_checks.to_string(),
                r.packet_failures.to_string(),
                format!("{:.1}s", r.took.as_secs_f64()),
                format!(
                    "{:.1}",
                    (r.changes + r.failed_writes) as f64 / r.took.as_secs_f64().max(1e-9)
                ),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(ToString::to_string).collect();
    for row in std::iter::once(&header).chain(&cells) {
        let line: Vec<String> =
            row.iter().zip(&widths).map(|(cell, &w)| format!("{cell:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(quantile(&values, 0.5), Some(ms(50)));
        assert_eq!(quantile(&values, 0.99), Some(ms(99)));
        assert_eq!(quantile(&values, 1.0), Some(ms(100)));
        assert_eq!(quantile(&values[..1], 0.99), Some(ms(1)));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn the_table_counts_unconverged_changes() {
        let row = PhaseReport {
            name: "churn".into(),
            changes: 3,
            latencies: vec![ms(100), ms(250)],
            packet_checks: 8,
            took: Duration::from_secs(2),
            ..PhaseReport::default()
        };
        let table = render(&[row]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("phase  changes  failed  unconv  p50"), "{table}");
        assert!(
            lines[1].starts_with("churn  3        0       1       0.100s  0.250s  0.250s  8"),
            "{table}"
        );
        assert!(lines[1].ends_with("2.0s  1.5"), "{table}");
    }
}
