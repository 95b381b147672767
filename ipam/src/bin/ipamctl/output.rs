//! What ipamctl prints: aligned tables, JSON, percentages, and progress on stderr (only when
//! stderr is a terminal, so scripts and tests see clean output).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::Instant;

use serde::Serialize;

use crate::error::CliError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Rows under upper-case headers, each column as wide as its widest cell.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table; numeric columns are named in `right` and aligned right.
    pub fn new(headers: &[&str], right: &[usize]) -> Self {
        let align = (0..headers.len())
            .map(|i| if right.contains(&i) { Align::Right } else { Align::Left })
            .collect();
        Table {
            headers: headers.iter().map(|h| (*h).to_string()).collect(),
            align,
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows, without the header.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The table with three spaces between columns, `indent` before each line, and no
    /// trailing blanks.
    pub fn render_indented(&self, indent: &str) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::from(indent);
            for (i, cell) in row.iter().enumerate() {
                let width = widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().count());
                let right = self.align.get(i) == Some(&Align::Right);
                if right {
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    if !right {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    line.push_str("   ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn render(&self) -> String {
        self.render_indented("")
    }
}

/// `n (p%)`, the way `calicoctl ipam show` prints usage.
pub fn with_percent(n: u128, total: u128) -> String {
    format!("{n} ({})", percent(n, total))
}

/// `p%` rounded to the nearest integer; `0%` of nothing.
pub fn percent(n: u128, total: u128) -> String {
    if total == 0 {
        return "0%".into();
    }
    // Integer arithmetic, scaled down first where 200 * n would overflow (v6 pools).
    let (mut n, mut total) = (n, total);
    while n > u128::MAX / 200 {
        n >>= 8;
        total >>= 8;
    }
    let scaled = n * 200 / total.max(1);
    format!("{}%", scaled.div_ceil(2).min(100))
}

pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, CliError> {
    let mut s = serde_json::to_string_pretty(value).map_err(|e| CliError::Output(e.to_string()))?;
    s.push('\n');
    Ok(s)
}

/// Writes to stdout. A closed pipe (`ipamctl show | head`) is not an error.
pub fn emit(text: &str) -> Result<(), CliError> {
    datastore::cli::emit_stdout(text).map_err(|e| CliError::Output(e.to_string()))
}

/// Progress of a long scan, on stderr, shown only when stderr is a terminal.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    start: Instant,
    open: bool,
}

impl Progress {
    pub fn new() -> Self {
        Progress { enabled: std::io::stderr().is_terminal(), start: Instant::now(), open: false }
    }

    /// Starts a step: `what…` on one line, replaced by [`Progress::done`].
    pub fn step(&mut self, what: &str) {
        if self.enabled {
            self.finish_line();
            Self::write(&format!("{what}\u{2026}"));
            self.open = true;
        }
    }

    /// Ends the current step with a result and the time since the command started.
    pub fn done(&mut self, result: &str) {
        if self.enabled {
            let mut line = String::new();
            let _ = writeln!(line, " {result} ({:.1?})", self.start.elapsed());
            Self::write(&line);
            self.open = false;
        }
    }

    fn finish_line(&mut self) {
        if self.open {
            Self::write("\n");
            self.open = false;
        }
    }

    fn write(text: &str) {
        let mut err = std::io::stderr().lock();
        // Progress is decoration: a closed stderr must not fail the command.
        let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.enabled {
            self.finish_line();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_text_left_and_numbers_right() {
        let mut t = Table::new(&["POOL", "TOTAL", "NOTE"], &[1]);
        t.push(vec!["default-pool".into(), "65536".into(), String::new()]);
        t.push(vec!["p".into(), "64".into(), "x".into()]);
        assert_eq!(
            t.render(),
            "POOL           TOTAL   NOTE\ndefault-pool   65536\np                 64   x\n"
        );
        assert_eq!(t.render_indented("  ").lines().next(), Some("  POOL           TOTAL   NOTE"));
    }

    #[test]
    fn percentages_round_and_survive_huge_totals() {
        assert_eq!(with_percent(5, 65536), "5 (0%)");
        assert_eq!(with_percent(65531, 65536), "65531 (100%)");
        assert_eq!(percent(5, 64), "8%");
        assert_eq!(percent(59, 64), "92%");
        assert_eq!(percent(1, 0), "0%");
        assert_eq!(percent(u128::MAX / 2, u128::MAX), "50%");
    }
}
