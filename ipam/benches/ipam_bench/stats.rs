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
        testkit::bench::percentile(&self.times, q * 100.0)
    }

    pub fn p50(&self) -> String {
        ms(self.quantile(0.50))
    }

    pub fn p99(&self) -> String {
        ms(self.quantile(0.99))
    }

    /// Mean round trips per operation (0 when none were counted).
    pub fn mean_trips(&self) -> f64 {
        if self.trips.is_empty() {
            return 0.0;
        }
        self.trips.iter().sum::<u64>() as f64 / self.trips.len() as f64
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

pub use testkit::bench::Md;
