//! What every tabby benchmark shares: nearest-rank percentiles, padded Markdown tables, the
//! `--quick` / `--flag value` command line, and the figures handed to `scripts/bench`.
//!
//! A benchmark prints its Markdown on stdout (progress on stderr). When `scripts/bench` runs
//! it, [`METRICS_ENV`] names a file to which [`metric`] appends one `name<TAB>value` line per
//! figure; the report generator reads those lines for the targets table and the plots, so
//! the prose tables and the checked numbers come from the same run.

use std::io::Write as _;
use std::time::Duration;

/// Environment variable naming the file that [`metric`] appends to.
pub const METRICS_ENV: &str = "TABBY_BENCH_METRICS";

/// The `p`th percentile (0..=100) of `samples` by nearest rank; zero when there are none.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank within a sample count"
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `samples` (nearest rank).
pub fn median(samples: &[Duration]) -> Duration {
    percentile(samples, 50.0)
}

/// Milliseconds as a float, for metrics and ratios.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Records one figure for `scripts/bench` (a no-op unless [`METRICS_ENV`] is set). Names are
/// dotted, lower case, with the unit last: `agent.cold_start_ms.10000`.
pub fn metric(name: &str, value: f64) {
    let Some(path) = std::env::var_os(METRICS_ENV) else {
        return;
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{name}\t{value}"));
    if let Err(e) = written {
        eprintln!("bench: cannot append metric {name} to {}: {e}", path.to_string_lossy());
    }
}

/// Whether `--<name>` was given on the command line.
pub fn flag(name: &str) -> bool {
    let wanted = format!("--{name}");
    std::env::args().skip(1).any(|a| a == wanted)
}

/// The value after `--<name>` (or in `--<name>=value`), parsed; `default` when absent.
/// Panics with the flag's name when the value does not parse: a benchmark run with a typo
/// must not silently measure something else.
pub fn value<T: std::str::FromStr>(name: &str, default: T) -> T {
    let wanted = format!("--{name}");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let raw = args.iter().enumerate().find_map(|(i, a)| {
        if *a == wanted {
            Some(args.get(i + 1).cloned().unwrap_or_default())
        } else {
            a.strip_prefix(&wanted).and_then(|rest| rest.strip_prefix('=')).map(str::to_string)
        }
    });
    match raw {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|_| panic!("{wanted} needs a value, got {v:?}")),
    }
}

/// A Markdown table with padded columns (readable as text too); `right` columns are numeric.
#[derive(Debug)]
pub struct Md {
    headers: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Md {
    pub fn new(headers: &[&str], right: &[usize]) -> Self {
        Md {
            headers: headers.iter().map(|h| (*h).to_string()).collect(),
            right: (0..headers.len()).map(|i| right.contains(&i)).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count()).max(3);
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let w = widths.get(i).copied().unwrap_or(0);
                    if self.right.get(i).copied().unwrap_or(false) {
                        format!("{c:>w$}")
                    } else {
                        format!("{c:<w$}")
                    }
                })
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = line(&self.headers);
        let rule: Vec<String> = widths
            .iter()
            .zip(&self.right)
            .map(|(w, r)| if *r { format!("{}:", "-".repeat(w - 1)) } else { "-".repeat(*w) })
            .collect();
        out.push_str(&line(&rule));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&samples, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn tables_pad_and_align() {
        let mut t = Md::new(&["name", "n"], &[1]);
        t.row(vec!["a".into(), "1234".into()]);
        assert_eq!(t.render(), "| name |    n |\n| ---- | ---: |\n| a    | 1234 |\n");
    }
}
