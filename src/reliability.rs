//! The reliability table: one row per scenario run (what ran, under which faults, how many
//! samples the appliances recorded and the cloud holds, what was lost or duplicated, how long
//! the cloud took to catch up), written by the scenario tests and turned into
//! `RELIABILITY.md` by `vigil reliability-table` (`just reliability`).
//!
//! Rows travel as tab-separated lines in a file named by [`ROWS_ENV`], appended by each test
//! as it finishes, so tests in several binaries (and threads) add to one file. This module only
//! formats and parses; the tests measure, and assert `lost == 0` and `duplicated == 0`
//! themselves before they write a row.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// The environment variable naming the file rows are appended to. Unset: rows are only
/// printed to stderr (a plain `cargo test`).
pub const ROWS_ENV: &str = "VIGIL_RELIABILITY_OUT";

/// Fields of a row, in file and table order.
pub const COLUMNS: [&str; 8] = [
    "scenario",
    "load",
    "faults",
    "samples recorded",
    "samples in the cloud",
    "lost",
    "duplicated",
    "time to converge",
];

/// One scenario run.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What ran, e.g. `6-hour outage of one site (short)`.
    pub scenario: String,
    /// The load: rooms, sessions, simulated time, sample rates.
    pub load: String,
    /// The faults injected.
    pub faults: String,
    /// Samples the appliances recorded (committed to their SQLite files), all channels.
    pub recorded: u64,
    /// Of those, samples the cloud holds, counted once each.
    pub in_cloud: u64,
    /// Recorded samples the cloud does not hold.
    pub lost: u64,
    /// Samples the cloud holds more often than the appliance recorded them.
    pub duplicated: u64,
    /// Wall time from the repair (or the end of the faults) until the cloud held everything,
    /// seconds.
    pub converge_s: f64,
}

/// A row that could not be read back.
#[derive(Debug)]
pub struct RowError {
    /// The offending line.
    pub line: String,
    /// What is wrong with it.
    pub problem: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reliability row {:?}: {}", self.line, self.problem)
    }
}

impl std::error::Error for RowError {}

impl Row {
    /// The row as one tab-separated line (tabs and newlines in text fields become spaces).
    pub fn to_line(&self) -> String {
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.3}",
            clean(&self.scenario),
            clean(&self.load),
            clean(&self.faults),
            self.recorded,
            self.in_cloud,
            self.lost,
            self.duplicated,
            self.converge_s
        )
    }

    /// Parses [`Row::to_line`].
    pub fn from_line(line: &str) -> Result<Row, RowError> {
        let err = |problem: String| RowError {
            line: line.to_owned(),
            problem,
        };
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != COLUMNS.len() {
            return Err(err(format!(
                "has {} fields, expected {}",
                fields.len(),
                COLUMNS.len()
            )));
        }
        let int = |i: usize| {
            fields[i]
                .parse::<u64>()
                .map_err(|e| err(format!("field `{}`: {e}", COLUMNS[i])))
        };
        let converge_s = fields[7]
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| err(format!("field `{}` is not a duration", COLUMNS[7])))?;
        Ok(Row {
            scenario: fields[0].to_owned(),
            load: fields[1].to_owned(),
            faults: fields[2].to_owned(),
            recorded: int(3)?,
            in_cloud: int(4)?,
            lost: int(5)?,
            duplicated: int(6)?,
            converge_s,
        })
    }

    /// Prints the row to stderr and appends it to the file named by [`ROWS_ENV`], if set.
    /// One `write` per line with `O_APPEND`, so concurrent tests don't interleave.
    pub fn record(&self) {
        let line = self.to_line();
        eprintln!("reliability: {line}");
        let Some(path) = std::env::var_os(ROWS_ENV) else {
            return;
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", Path::new(&path).display()));
        file.write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("cannot append to {}: {e}", Path::new(&path).display()));
    }
}

/// Reads every row of a rows file; blank lines are skipped.
pub fn read_rows(text: &str) -> Result<Vec<Row>, RowError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(Row::from_line)
        .collect()
}

/// `RELIABILITY.md`: an introduction, the table, the totals, and how it was produced.
/// `produced` is a free-text line saying when, where and from which commit.
pub fn render(rows: &[Row], produced: &str) -> String {
    let mut out = String::new();
    out.push_str("# Reliability\n\n");
    out.push_str(
        "What \"nothing lost\" (DESIGN.md) means in figures. Each row is one run of a scenario \
         test in `tests/`: real `vigil-edge` and `vigil-cloud` processes, real QUIC with mutual \
         TLS on loopback, real SQLite files, faults from the relay (`vigil::relay`) or from \
         signals. *Recorded* counts every sample the appliances committed to their databases; \
         *in the cloud* counts those the cloud's API holds; *lost* are recorded samples the \
         cloud lacks and *duplicated* samples it holds twice, both from per-channel counts and \
         order-independent checksums compared between the appliance's and the cloud's APIs. \
         *Time to converge* is wall time from the end of the faults until the cloud held \
         everything (a figure, not a test: tests never assert wall-clock times).\n\n",
    );
    out.push_str(
        "Produced by one command, `just reliability` (short versions, as CI runs them); \
         `just soak` runs the long versions. Every test asserts lost = 0 and duplicated = 0; \
         the scenarios without a SIGKILL also assert that the appliances dropped no measured \
         sample, so there *recorded* is everything the monitors measured (around a SIGKILL, \
         samples not yet committed were never recorded). The table is written only when every \
         test passed.\n\n",
    );
    let _ = writeln!(out, "| {} |", COLUMNS.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(COLUMNS.len()));
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} s |",
            r.scenario,
            r.load,
            r.faults,
            group(r.recorded),
            group(r.in_cloud),
            r.lost,
            r.duplicated,
            r.converge_s
        );
    }
    let recorded: u64 = rows.iter().map(|r| r.recorded).sum();
    let lost: u64 = rows.iter().map(|r| r.lost).sum();
    let duplicated: u64 = rows.iter().map(|r| r.duplicated).sum();
    let _ = writeln!(
        out,
        "\nAll runs: {} recorded (samples, and audit entries where a row says so), {lost} lost, \
         {duplicated} duplicated.\n",
        group(recorded)
    );
    let _ = writeln!(out, "{produced}");
    out
}

/// `1234567` as `1,234,567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            scenario: "flapping link".into(),
            load: "1 room, 12 min".into(),
            faults: "5 s up\t5 s down".into(),
            recorded: 1_234_567,
            in_cloud: 1_234_567,
            lost: 0,
            duplicated: 0,
            converge_s: 1.25,
        }
    }

    #[test]
    fn rows_round_trip_through_their_line() {
        let r = row();
        let back = Row::from_line(&r.to_line()).unwrap();
        assert_eq!(back.faults, "5 s up 5 s down", "tabs can't split a field");
        assert_eq!(
            Row {
                faults: r.faults.replace('\t', " "),
                ..r
            },
            back
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let cases = [
            ("a\tb", "has 2 fields"),
            ("a\tb\tc\tx\t1\t0\t0\t1.0", "samples recorded"),
            ("a\tb\tc\t1\t1\t0\t0\t-1", "time to converge"),
            ("a\tb\tc\t1\t1\t0\t0\tNaN", "time to converge"),
        ];
        for (line, expected) in cases {
            let e = Row::from_line(line).unwrap_err().to_string();
            assert!(e.contains(expected), "{line:?}: {e}");
        }
    }

    #[test]
    fn the_table_has_a_row_per_run_and_totals() {
        let text = render(&[row(), row()], "produced here");
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].contains("| 1,234,567 | 1,234,567 | 0 | 0 | 1.2 s |"));
        assert!(text.contains(
            "All runs: 2,469,134 recorded (samples, and audit entries where a row says so), 0 \
             lost, 0 duplicated."
        ));
        assert!(text.ends_with("produced here\n"));
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1,000");
    }
}
