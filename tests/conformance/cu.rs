//! Parser for the output of libiscsi's `iscsi-test-cu` (CUnit "basic" mode, run with
//! `-V` so that skip messages are printed).
//!
//! libiscsi reports a skipped test as a CUnit pass (it calls `CU_PASS` after logging
//! `[SKIPPED]`), so CUnit's own summary overstates passes. Each test is classified:
//!
//! * FAIL: CUnit printed `FAILED` for it.
//! * SKIP: it passed, but printed `[SKIPPED]` before its main checks ran (fewer than
//!   three `[OK]` lines before the first `[SKIPPED]`).
//! * PASS*: it passed and printed `[SKIPPED]` only after at least three `[OK]` checks:
//!   the main checks ran and only a trailing cross-check was skipped. Counted as a pass.
//! * PASS: it passed without `[SKIPPED]`.
//! * INCOMPLETE: no result was printed (the tool hung or died in that test).

use std::collections::BTreeMap;
use std::fmt;

/// Number of `[OK]` checks before a `[SKIPPED]` that make a pass a PASS*.
const PARTIAL_MIN_OK: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Pass,
    PartialPass,
    Skip,
    Fail,
    Incomplete,
}

impl Outcome {
    pub fn is_pass(self) -> bool {
        matches!(self, Outcome::Pass | Outcome::PartialPass)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "PASS",
            Outcome::PartialPass => "PASS*",
            Outcome::Skip => "SKIP",
            Outcome::Fail => "FAIL",
            Outcome::Incomplete => "INCOMPLETE",
        })
    }
}

/// One test's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    /// The CUnit suite, which is the conformance "family" (e.g. `Read10`).
    pub suite: String,
    pub test: String,
    pub outcome: Outcome,
    /// The `[SKIPPED]` or `[FAILED]` lines (trimmed), for the report.
    pub messages: Vec<String>,
}

impl TestResult {
    /// `Suite.Test`, the key used in expected.toml.
    pub fn key(&self) -> String {
        format!("{}.{}", self.suite, self.test)
    }
}

/// Parse a whole run's output.
pub fn parse(output: &str) -> Vec<TestResult> {
    let body = match output.find("\nRun Summary:") {
        Some(at) => &output[..at],
        None => output,
    };
    let mut results = Vec::new();
    // Split into suites at lines "Suite: NAME".
    let mut suites: Vec<(String, &str)> = Vec::new();
    let mut starts: Vec<(usize, usize, String)> = Vec::new();
    let mut pos = 0;
    for line in body.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("Suite: ") {
            let name = rest.split_whitespace().next().unwrap_or("").to_string();
            starts.push((pos, pos + line.len(), name));
        }
        pos += line.len();
    }
    for (i, (_, content_start, name)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(body.len(), |s| s.0);
        suites.push((name.clone(), &body[*content_start..end]));
    }
    for (suite, text) in suites {
        parse_suite(&suite, text, &mut results);
    }
    results
}

fn parse_suite(suite: &str, text: &str, out: &mut Vec<TestResult>) {
    // Test headers: lines starting "  Test: NAME ...".
    let mut heads: Vec<(usize, usize, String)> = Vec::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("  Test: ") {
            if let Some(dots) = rest.find(" ...") {
                let name = rest[..dots].trim().to_string();
                let after = pos + "  Test: ".len() + dots + " ...".len();
                heads.push((pos, after, name));
            }
        }
        pos += line.len();
    }
    for (i, (_, after, name)) in heads.iter().enumerate() {
        let end = heads.get(i + 1).map_or(text.len(), |h| h.0);
        let chunk = &text[*after..end];
        out.push(classify(suite, name, chunk));
    }
}

/// The position of the CUnit verdict ("passed" / "FAILED" at the start of the chunk
/// or of a line), and which one it is.
fn verdict(chunk: &str) -> Option<(usize, bool)> {
    let mut pos = 0;
    for line in chunk.split_inclusive('\n') {
        let word = line.split_whitespace().next().unwrap_or("");
        let starts_at_line = line.starts_with(word) && !word.is_empty();
        if starts_at_line && (word == "passed" || word == "FAILED") {
            return Some((pos, word == "passed"));
        }
        pos += line.len();
    }
    None
}

fn classify(suite: &str, test: &str, chunk: &str) -> TestResult {
    let make = |outcome, messages| TestResult {
        suite: suite.to_string(),
        test: test.to_string(),
        outcome,
        messages,
    };
    let Some((at, passed)) = verdict(chunk) else {
        let tail: String = chunk.trim().chars().rev().take(300).collect();
        return make(
            Outcome::Incomplete,
            vec![tail.chars().rev().collect::<String>()],
        );
    };
    let before = &chunk[..at];
    let lines: Vec<&str> = before
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let skipped: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("[SKIPPED]"))
        .map(|l| l.to_string())
        .collect();
    if !passed {
        let failed = lines
            .iter()
            .filter(|l| l.contains("[FAILED]") || l.contains("did not contain"))
            .map(|l| l.to_string())
            .collect();
        return make(Outcome::Fail, failed);
    }
    if skipped.is_empty() {
        return make(Outcome::Pass, Vec::new());
    }
    let first_skip = before.find("[SKIPPED]").unwrap_or(before.len());
    let oks = before[..first_skip].matches("[OK]").count();
    let outcome = if oks >= PARTIAL_MIN_OK {
        Outcome::PartialPass
    } else {
        Outcome::Skip
    };
    make(outcome, skipped)
}

/// Per-family counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub pass: usize,
    pub partial: usize,
    pub fail: usize,
    pub skip: usize,
    pub incomplete: usize,
}

impl Counts {
    pub fn total(&self) -> usize {
        self.pass + self.fail + self.skip + self.incomplete
    }
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Pass => self.pass += 1,
            Outcome::PartialPass => {
                self.pass += 1;
                self.partial += 1;
            }
            Outcome::Skip => self.skip += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Incomplete => self.incomplete += 1,
        }
    }
}

/// Counts per family, in first-seen order, plus the total.
pub fn tally(results: &[TestResult]) -> (Vec<(String, Counts)>, Counts) {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, Counts> = BTreeMap::new();
    let mut total = Counts::default();
    for r in results {
        if !by.contains_key(&r.suite) {
            order.push(r.suite.clone());
        }
        by.entry(r.suite.clone()).or_default().add(r.outcome);
        total.add(r.outcome);
    }
    let rows = order
        .into_iter()
        .map(|f| {
            let c = by[&f];
            (f, c)
        })
        .collect();
    (rows, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Suite: Read10
  Test: Simple ...
[OK] READ10 returned SUCCESS.
passed
  Test: DpoFua ...
[OK] a
[OK] b
[OK] c
[SKIPPED] READ10 is not in REPORT_SUPPORTED_OPCODES
passed
  Test: Residuals ...
[SKIPPED] This READ10 test is only supported for iSCSI backends
passed
Suite: Verify10
  Test: Mismatch ...
[FAILED] VERIFY10 should have failed with MISCOMPARE
FAILED
    1. test_verify10_mismatch.c:70  - ret == 0
  Test: Flags ...passed
  Test: Hang ...
Send VERIFY10
Run Summary:    Type  Total    Ran Passed Failed Inactive
";

    #[test]
    fn classifies_pass_partial_skip_fail_incomplete() {
        let r = parse(SAMPLE);
        let got: Vec<(String, Outcome)> = r.iter().map(|t| (t.key(), t.outcome)).collect();
        assert_eq!(
            got,
            vec![
                ("Read10.Simple".into(), Outcome::Pass),
                ("Read10.DpoFua".into(), Outcome::PartialPass),
                ("Read10.Residuals".into(), Outcome::Skip),
                ("Verify10.Mismatch".into(), Outcome::Fail),
                ("Verify10.Flags".into(), Outcome::Pass),
                ("Verify10.Hang".into(), Outcome::Incomplete),
            ]
        );
        assert_eq!(
            r[3].messages,
            vec!["[FAILED] VERIFY10 should have failed with MISCOMPARE"]
        );
    }

    #[test]
    fn tallies_per_family_in_order() {
        let (rows, total) = tally(&parse(SAMPLE));
        assert_eq!(rows[0].0, "Read10");
        assert_eq!(
            rows[0].1,
            Counts {
                pass: 2,
                partial: 1,
                skip: 1,
                ..Counts::default()
            }
        );
        assert_eq!(rows[1].1.fail, 1);
        assert_eq!(rows[1].1.incomplete, 1);
        assert_eq!(total.total(), 6);
    }

    #[test]
    fn empty_output_has_no_results() {
        assert!(parse("").is_empty());
        assert!(parse("garbage\nRun Summary:\n").is_empty());
    }
}
