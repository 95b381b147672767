//! The agent's Prometheus metrics, kept in atomics and rendered in the text exposition format
//! for `/metrics`. A dozen series do not justify a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the apply latency buckets: 1 ms to 10 s.
const APPLY_BUCKETS: [f64; 13] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters by label values.
#[derive(Debug, Default)]
pub struct CounterVec<const N: usize>(Mutex<BTreeMap<[&'static str; N], u64>>);

impl<const N: usize> CounterVec<N> {
    pub fn inc(&self, labels: [&'static str; N]) {
        *lock(&self.0).entry(labels).or_insert(0) += 1;
    }

    pub fn get(&self, labels: [&'static str; N]) -> u64 {
        lock(&self.0).get(&labels).copied().unwrap_or(0)
    }
}

#[derive(Debug, Default)]
struct HistogramData {
    /// Per bucket (not cumulative); the last slot counts what exceeds every bound.
    counts: [u64; APPLY_BUCKETS.len() + 1],
    sum: f64,
}

/// The apply latency distribution.
#[derive(Debug, Default)]
pub struct Histogram(Mutex<HistogramData>);

impl Histogram {
    pub fn observe(&self, value: Duration) {
        let secs = value.as_secs_f64();
        let mut data = lock(&self.0);
        let slot = APPLY_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(APPLY_BUCKETS.len());
        data.counts[slot] += 1;
        data.sum += secs;
    }

    pub fn count(&self) -> u64 {
        lock(&self.0).counts.iter().sum()
    }
}

/// Every metric the agent exports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub apply_seconds: Histogram,
    pub endpoints_local: Gauge,
    pub endpoints_total: Gauge,
    pub routes: Gauge,
    pub nft_chains: Gauge,
    pub nft_rules: Gauge,
    pub nft_sets: Gauge,
    pub nft_set_elements: Gauge,
    pub reconciles: Counter,
    pub resyncs: Counter,
    /// By component: `routes`, `dataplane`, `watch`, `status`, `node`.
    pub errors: CounterVec<1>,
    /// By source (`resources`, `ipam`) and type (`snapshot`, `put`, `delete`).
    pub watch_events: CounterVec<2>,
    pub etcd_up: Gauge,
    pub in_sync: Gauge,
    pub invalid_resources: Gauge,
    pub model_generation: Gauge,
}

impl Metrics {
    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_histogram(&mut out);
        let gauges: [(&str, &str, &Gauge); 9] = [
            (
                "tabby_agent_routes",
                "Routes the agent programs (protocol 112, blackhole and via).",
                &self.routes,
            ),
            ("tabby_agent_nft_chains", "Chains in the agent's nftables table.", &self.nft_chains),
            ("tabby_agent_nft_rules", "Rules in the agent's nftables table.", &self.nft_rules),
            (
                "tabby_agent_nft_sets",
                "Sets and maps in the agent's nftables table.",
                &self.nft_sets,
            ),
            (
                "tabby_agent_nft_set_elements",
                "Elements over all sets and maps.",
                &self.nft_set_elements,
            ),
            ("tabby_agent_etcd_up", "1 when etcd answered the last request.", &self.etcd_up),
            ("tabby_agent_in_sync", "1 once every watched prefix has been listed.", &self.in_sync),
            (
                "tabby_agent_invalid_resources",
                "Values in etcd ignored as invalid.",
                &self.invalid_resources,
            ),
            (
                "tabby_agent_model_generation",
                "Changes applied to the cluster model.",
                &self.model_generation,
            ),
        ];
        for (name, help, gauge) in gauges {
            header(&mut out, name, help, "gauge");
            let _ = writeln!(out, "{name} {}", gauge.get());
        }
        header(
            &mut out,
            "tabby_agent_endpoints",
            "Workload endpoints, on this host and in all.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "tabby_agent_endpoints{{scope=\"local\"}} {}",
            self.endpoints_local.get()
        );
        let _ = writeln!(
            out,
            "tabby_agent_endpoints{{scope=\"total\"}} {}",
            self.endpoints_total.get()
        );

        for (name, help, counter) in [
            ("tabby_agent_reconciles_total", "Reconciles run.", &self.reconciles),
            (
                "tabby_agent_resyncs_total",
                "Full resyncs run (the first apply after start is one).",
                &self.resyncs,
            ),
        ] {
            header(&mut out, name, help, "counter");
            let _ = writeln!(out, "{name} {}", counter.get());
        }
        header(&mut out, "tabby_agent_errors_total", "Failures, by component.", "counter");
        for ([component], n) in lock(&self.errors.0).iter() {
            let _ = writeln!(out, "tabby_agent_errors_total{{component=\"{component}\"}} {n}");
        }
        header(
            &mut out,
            "tabby_agent_watch_events_total",
            "etcd watch events, by prefix and type.",
            "counter",
        );
        for ([source, kind], n) in lock(&self.watch_events.0).iter() {
            let _ = writeln!(
                out,
                "tabby_agent_watch_events_total{{source=\"{source}\",type=\"{kind}\"}} {n}"
            );
        }
        out
    }

    fn render_histogram(&self, out: &mut String) {
        let name = "tabby_agent_apply_duration_seconds";
        header(out, name, "Duration of one reconcile: plan, diff and apply.", "histogram");
        let data = lock(&self.apply_seconds.0);
        let mut cumulative = 0;
        for (bound, count) in APPLY_BUCKETS.iter().zip(data.counts.iter()) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let total: u64 = data.counts.iter().sum();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum {}", data.sum);
        let _ = writeln!(out, "{name}_count {total}");
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.apply_seconds.observe(Duration::from_millis(3));
        m.apply_seconds.observe(Duration::from_secs(30));
        m.endpoints_local.set(2);
        m.errors.inc(["routes"]);
        m.watch_events.inc(["ipam", "put"]);
        m.reconciles.inc();
        let text = m.render();
        assert!(
            text.contains("tabby_agent_apply_duration_seconds_bucket{le=\"0.0025\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("tabby_agent_apply_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("tabby_agent_apply_duration_seconds_bucket{le=\"10\"} 1\n"));
        assert!(text.contains("tabby_agent_apply_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("tabby_agent_apply_duration_seconds_count 2\n"));
        assert!(text.contains("tabby_agent_endpoints{scope=\"local\"} 2\n"));
        assert!(text.contains("tabby_agent_errors_total{component=\"routes\"} 1\n"));
        assert!(text.contains("tabby_agent_watch_events_total{source=\"ipam\",type=\"put\"} 1\n"));
        assert!(text.contains("tabby_agent_reconciles_total 1\n"));
        // Every sample line belongs to a declared family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {family} ")), "{line}");
        }
    }
}
