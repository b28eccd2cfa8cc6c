//! `<state-dir>/watch.json`: what the watcher's last apply did, for `isctl status`
//! and for people. Written atomically (temporary file, fsync, rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::Summary;

/// The file name under the state directory.
pub const FILE_NAME: &str = "watch.json";

/// What became of one attempt to make the live state match the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    NoChanges,
    Refused,
    InvalidModel,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::NoChanges => "no_changes",
            Outcome::Refused => "refused",
            Outcome::InvalidModel => "invalid_model",
            Outcome::Failed => "failed",
        }
    }
}

/// The record of the last attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastApply {
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// The model path watched.
    pub model: PathBuf,
    /// Digest of the model files (see `watch::digest`).
    pub digest: String,
    /// `start`, `change`, `sighup`, `digest` (the periodic check), `repair` (drift).
    pub trigger: String,
    pub outcome: Outcome,
    /// The plan's counts, when a plan was made.
    pub summary: Option<Summary>,
    /// The plan's change lines (`+ target "iqn..."`).
    pub changes: Vec<String>,
    /// The refusal or error text.
    pub message: Option<String>,
    /// Attempts since this watcher started (1 for the first).
    pub attempts: u64,
}

impl LastApply {
    /// One line: `applied at 2026-12-03T10:00:00Z (change; 1 added, 0 changed, 0
    /// destroyed)`, then the first line of the refusal or error.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} at {} ({}",
            self.outcome.as_str(),
            utc(self.time),
            self.trigger
        );
        if let Some(x) = self.summary {
            s.push_str(&format!(
                "; {} added, {} changed, {} destroyed",
                x.add, x.change, x.destroy
            ));
        }
        s.push(')');
        if let Some(m) = self.message.as_deref().and_then(|m| m.lines().next()) {
            s.push_str(": ");
            s.push_str(m);
        }
        s
    }
}

/// Unix seconds as an RFC 3339 UTC time (days to civil date: H. Hinnant's algorithm).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}")]
pub struct StateError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// Write the record atomically.
pub fn save(state_dir: &Path, last: &LastApply) -> Result<(), StateError> {
    let file = path(state_dir);
    let err = |source| StateError {
        path: file.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(err)?;
    let tmp = state_dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let text = serde_json::to_string_pretty(last).map_err(|e| err(e.into()))?;
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, &file).map_err(err)?;
    Ok(())
}

/// The last record, if a watcher ever wrote one (and it parses).
pub fn load(state_dir: &Path) -> Option<LastApply> {
    let text = std::fs::read_to_string(path(state_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_796_273_709), "2026-12-03T04:55:09Z");
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let last = LastApply {
            time: 1,
            model: "/etc/isctl".into(),
            digest: "ab".into(),
            trigger: "start".into(),
            outcome: Outcome::Refused,
            summary: None,
            changes: vec!["- target \"t\"".into()],
            message: Some("sessions".into()),
            attempts: 1,
        };
        save(dir.path(), &last).unwrap();
        assert_eq!(load(dir.path()), Some(last));
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert!(text.contains("\"outcome\": \"refused\""), "{text}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
