//! Latency samples, percentiles and Markdown tables for the benchmark's report.

use std::time::Duration;

/// Latencies and etcd round trips of repeated operations.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    times: Vec<Duration>,
    trips: Vec<u64>,
}

impl Samples {
    pub fn push(&mut self, took: Duration, trips: u64) {
        self.times.push(took);
        self.trips.push(trips);
    }

    pub fn extend(&mut self, other: &Samples) {
        self.times.extend_from_slice(&other.times);
        self.trips.extend_from_slice(&other.trips);
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// The `q`-quantile (0..=1) by nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.times.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    pub fn p50(&self) -> String {
        ms(self.quantile(0.50))
    }

    pub fn p99(&self) -> String {
        ms(self.quantile(0.99))
    }

    /// Round trips per operation: the value when constant, else mean and range.
    pub fn trips(&self) -> String {
        let (Some(min), Some(max)) = (self.trips.iter().min(), self.trips.iter().max()) else {
            return "-".into();
        };
        if min == max {
            return min.to_string();
        }
        let mean = self.trips.iter().sum::<u64>() as f64 / self.trips.len() as f64;
        format!("{mean:.2} ({min}-{max})")
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
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
