//! The connectivity matrix: every (from, to) pair × service measured at once, rendered as a
//! ✓/✗ table, and compared with what the policy says should happen.

use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use super::{probe, symbol, Outcome, Service};
use crate::cluster::Endpoint;

/// What should happen: `true` when traffic from the first endpoint to `service` on the second
/// must get through.
pub type Expect<'a> = dyn Fn(&Endpoint, &Endpoint, Service) -> bool + Sync + 'a;

/// One measured matrix.
#[derive(Debug, Clone)]
pub struct Matrix {
    pairs: Vec<(Endpoint, Endpoint)>,
    services: Vec<Service>,
    /// `outcomes[pair][service]`.
    outcomes: Vec<Vec<Outcome>>,
    took: Duration,
}

/// A cell that differs from the expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub from: String,
    pub to: String,
    pub service: Service,
    pub expected: bool,
    pub got: Outcome,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} → {} {}: expected {}, got {}",
            self.from,
            self.to,
            self.service,
            if self.expected { "✓ (gets through)" } else { "✗ (blocked)" },
            self.got
        )
    }
}

impl Matrix {
    /// Measures every ordered pair of distinct endpoints.
    pub fn measure_all(endpoints: &[Endpoint], services: &[Service]) -> Matrix {
        Matrix::measure(&all_pairs(endpoints), services)
    }

    /// Measures the given pairs, all probes concurrently (a dropped probe costs its timeout,
    /// so a sequential matrix would take minutes).
    pub fn measure(pairs: &[(Endpoint, Endpoint)], services: &[Service]) -> Matrix {
        crate::cancel::check();
        let started = Instant::now();
        let outcomes = std::thread::scope(|scope| {
            let handles: Vec<Vec<_>> = pairs
                .iter()
                .map(|(from, to)| {
                    services
                        .iter()
                        .map(|&service| scope.spawn(move || probe(&from.netns, to.ip, service)))
                        .collect()
                })
                .collect();
            handles
                .into_iter()
                .map(|row| {
                    row.into_iter()
                        .map(|h| {
                            h.join().unwrap_or_else(|_| Outcome::Failed("probe panicked".into()))
                        })
                        .collect()
                })
                .collect()
        });
        Matrix {
            pairs: pairs.to_vec(),
            services: services.to_vec(),
            outcomes,
            took: started.elapsed(),
        }
    }

    /// Measures until the matrix equals the expectation or `timeout` passes; returns the last
    /// matrix either way (`Err` when it still differs).
    pub fn await_expected(
        pairs: &[(Endpoint, Endpoint)],
        services: &[Service],
        expect: &Expect<'_>,
        timeout: Duration,
    ) -> Result<Matrix, Matrix> {
        let deadline = Instant::now() + timeout;
        loop {
            let matrix = Matrix::measure(pairs, services);
            if matrix.mismatches(expect).is_empty() {
                return Ok(matrix);
            }
            if Instant::now() >= deadline {
                return Err(matrix);
            }
            std::thread::sleep(crate::wait::POLL);
        }
    }

    /// Like [`Matrix::await_expected`], but panics on timeout with the table and the list of
    /// cells that differ.
    pub fn assert_eventually(
        what: &str,
        pairs: &[(Endpoint, Endpoint)],
        services: &[Service],
        expect: &Expect<'_>,
        timeout: Duration,
    ) -> Matrix {
        Matrix::await_expected(pairs, services, expect, timeout).unwrap_or_else(|last| {
            panic!(
                "{what}: connectivity still differs from the expectation after {timeout:?}\n{}",
                last.report(expect)
            )
        })
    }

    /// Panics unless this matrix equals the expectation.
    pub fn assert_matches(&self, what: &str, expect: &Expect<'_>) {
        assert!(
            self.mismatches(expect).is_empty(),
            "{what}: connectivity differs from the expectation\n{}",
            self.report(expect)
        );
    }

    /// The outcome of one cell, by endpoint names.
    pub fn outcome(&self, from: &str, to: &str, service: Service) -> Option<&Outcome> {
        let row = self.pairs.iter().position(|(f, t)| f.name == from && t.name == to)?;
        let col = self.services.iter().position(|&s| s == service)?;
        Some(&self.outcomes[row][col])
    }

    /// Every cell, as (from, to, service, outcome).
    pub fn cells(&self) -> impl Iterator<Item = (&Endpoint, &Endpoint, Service, &Outcome)> {
        self.pairs.iter().zip(&self.outcomes).flat_map(move |((from, to), row)| {
            self.services
                .iter()
                .zip(row)
                .map(move |(&service, outcome)| (from, to, service, outcome))
        })
    }

    /// The cells that differ from `expect`.
    pub fn mismatches(&self, expect: &Expect<'_>) -> Vec<Mismatch> {
        self.cells()
            .filter_map(|(from, to, service, got)| {
                let expected = expect(from, to, service);
                (expected != got.passed()).then(|| Mismatch {
                    from: from.name.clone(),
                    to: to.name.clone(),
                    service,
                    expected,
                    got: got.clone(),
                })
            })
            .collect()
    }

    /// How long the measurement took.
    pub fn took(&self) -> Duration {
        self.took
    }

    /// The table plus, when `expect` is given, the list of differing cells.
    pub fn report(&self, expect: &Expect<'_>) -> String {
        let mut out = self.render(Some(expect));
        let mismatches = self.mismatches(expect);
        if !mismatches.is_empty() {
            let _ = writeln!(out, "{} cell(s) differ:", mismatches.len());
            for m in &mismatches {
                let _ = writeln!(out, "  {m}");
            }
        }
        out
    }

    /// The table: one row per pair, one column per service. Without an expectation a cell is
    /// the measured ✓/✗; with one it is `measured/expected`, and `!` marks a difference.
    pub fn render(&self, expect: Option<&Expect<'_>>) -> String {
        let mut header = vec!["from".to_string(), "to".to_string()];
        header.extend(self.services.iter().map(ToString::to_string));
        let rows: Vec<Vec<String>> = self
            .pairs
            .iter()
            .zip(&self.outcomes)
            .map(|((from, to), row)| {
                let mut cells = vec![
                    format!("{} ({})", from.name, from.host),
                    format!("{} ({})", to.name, to.host),
                ];
                cells.extend(self.services.iter().zip(row).map(|(&service, got)| match expect {
                    None => got.symbol().to_string(),
                    Some(expect) => {
                        let want = expect(from, to, service);
                        let flag = if want == got.passed() { "" } else { "!" };
                        format!("{}/{}{flag}", got.symbol(), symbol(want))
                    }
                }));
                cells
            })
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                std::iter::once(&header)
                    .chain(&rows)
                    .map(|r| r[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&rows) {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, &w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        if expect.is_some() {
            let _ = writeln!(out, "(cell = measured/expected; ! = differs)");
        }
        out
    }
}

/// Every ordered pair of distinct endpoints.
pub fn all_pairs(endpoints: &[Endpoint]) -> Vec<(Endpoint, Endpoint)> {
    endpoints
        .iter()
        .flat_map(|from| {
            endpoints
                .iter()
                .filter(move |to| to.name != from.name)
                .map(move |to| (from.clone(), to.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::path::PathBuf;

    fn ep(name: &str, network: &str) -> Endpoint {
        Endpoint {
            name: name.into(),
            network: network.into(),
            host: "host-a".into(),
            ip: Ipv4Addr::LOCALHOST,
            netns: PathBuf::new(),
        }
    }

    fn sample() -> Matrix {
        let (web, db) = (ep("web-a", "web"), ep("db-a", "mysqldb"));
        Matrix {
            pairs: vec![(web.clone(), db.clone()), (db, web)],
            services: vec![Service::Tcp(80), Service::Icmp],
            outcomes: vec![
                vec![Outcome::Connected, Outcome::TimedOut],
                vec![Outcome::TimedOut, Outcome::Refused],
            ],
            took: Duration::ZERO,
        }
    }

    #[test]
    fn mismatches_name_the_cell_and_what_was_seen() {
        let matrix = sample();
        // Expect: only web → db on tcp/80, and db → web on icmp.
        let expect = |from: &Endpoint, _: &Endpoint, service: Service| {
            (from.name == "web-a" && service == Service::Tcp(80))
                || (from.name == "db-a" && service == Service::Icmp)
        };
        let wrong = matrix.mismatches(&expect);
        assert_eq!(wrong.len(), 1, "{wrong:?}");
        assert_eq!(
            wrong[0].to_string(),
            "db-a → web-a icmp: expected ✓ (gets through), got refused (RST)"
        );
        assert_eq!(matrix.outcome("web-a", "db-a", Service::Tcp(80)), Some(&Outcome::Connected));
        assert_eq!(matrix.outcome("web-a", "nobody", Service::Tcp(80)), None);
    }

    #[test]
    fn render_aligns_columns_and_flags_differences() {
        let matrix = sample();
        let plain = matrix.render(None);
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(lines[0], "from            to              tcp/80  icmp");
        assert_eq!(lines[1], "web-a (host-a)  db-a (host-a)   ✓       ✗");
        assert_eq!(lines[2], "db-a (host-a)   web-a (host-a)  ✗       ✗");
        let everything = |_: &Endpoint, _: &Endpoint, _: Service| true;
        let report = matrix.report(&everything);
        assert!(report.contains("✗/✓!"), "{report}");
        assert!(report.contains("3 cell(s) differ"), "{report}");
    }

    #[test]
    fn all_pairs_are_ordered_and_distinct() {
        let eps = [ep("a", "web"), ep("b", "web"), ep("c", "app")];
        let pairs = all_pairs(&eps);
        assert_eq!(pairs.len(), 6);
        assert!(pairs.iter().all(|(f, t)| f.name != t.name));
    }
}
