//! The ledger: which live objects isctl manages, per backend location, kept as
//! JSON in `<state-dir>/ledger.json` (mode 0600, written atomically: temp file,
//! fsync, rename, fsync of the directory). It does the job of ctld's `ctld_name`
//! tags and kube's owner references: objects neither desired nor in the ledger are
//! left alone.
//!
//! It is also the intent journal of a running apply: before the first write, the
//! objects the plan may create or change are recorded as an [`Intent`]; a successful
//! or rolled-back apply clears it. An apply that dies in between (SIGKILL, OOM, power
//! loss) leaves it behind, and then those objects count as managed
//! ([`Ledger::objects`]): the next apply simply converges — a model that keeps them
//! adopts them, a model without them deletes them — instead of leaving orphans that
//! only `--prune` (which also removes objects isctl never created) would remove.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::ObjectId;

/// Current file format.
pub const LEDGER_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    #[error("reading the ledger {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the ledger {path} is not valid ({message}); fix or move it aside (isctl then treats every live object as unmanaged)")]
    Parse { path: PathBuf, message: String },
    #[error("writing the ledger {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LedgerFile {
    version: u32,
    /// `<backend>:<location>` (e.g. `lio:/sys/kernel/config/target`) → objects.
    managed: BTreeMap<String, BTreeSet<ObjectId>>,
    /// `<backend>:<location>` → the managed attribute values the last apply left
    /// (never secrets), for `status` to spot drift without the model.
    #[serde(default)]
    applied: BTreeMap<String, Vec<AppliedObject>>,
    /// `<backend>:<location>` → the apply under way (or interrupted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    intents: BTreeMap<String, Intent>,
}

/// What an apply was about to do, recorded before its first write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// When it started (seconds since the epoch).
    pub started_unix: u64,
    /// The isctl process that wrote it.
    pub pid: u32,
    /// Operations in its plan.
    pub operations: usize,
    /// Every object its operations create, change or delete.
    pub objects: BTreeSet<ObjectId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AppliedObject {
    object: ObjectId,
    attributes: BTreeMap<String, String>,
}

/// The managed objects of one backend location.
#[derive(Debug, Clone)]
pub struct Ledger {
    path: PathBuf,
    key: String,
    file: LedgerFile,
}

/// Create the state directory (0700) if it does not exist.
pub fn ensure_state_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl Ledger {
    /// Load the ledger of `backend`/`location` (empty if there is none yet).
    pub fn load(state_dir: &Path, backend: &str, location: &str) -> Result<Ledger, LedgerError> {
        let path = state_dir.join("ledger.json");
        let file = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: LedgerFile =
                    serde_json::from_slice(&bytes).map_err(|e| LedgerError::Parse {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                if f.version != LEDGER_VERSION {
                    return Err(LedgerError::Parse {
                        path,
                        message: format!("format version {} is not {LEDGER_VERSION}", f.version),
                    });
                }
                f
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LedgerFile {
                version: LEDGER_VERSION,
                ..LedgerFile::default()
            },
            Err(source) => return Err(LedgerError::Read { path, source }),
        };
        Ok(Ledger {
            path,
            key: format!("{backend}:{location}"),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The managed objects: those recorded by the last apply, and those an
    /// interrupted apply may have created.
    pub fn objects(&self) -> BTreeSet<ObjectId> {
        let mut all = self.recorded();
        if let Some(i) = self.interrupted() {
            all.extend(i.objects.iter().cloned());
        }
        all
    }

    /// The objects the last finished apply recorded.
    fn recorded(&self) -> BTreeSet<ObjectId> {
        self.file
            .managed
            .get(&self.key)
            .cloned()
            .unwrap_or_default()
    }

    /// The apply recorded as under way: one that was interrupted, unless another
    /// isctl runs it right now (the apply lock tells which).
    pub fn interrupted(&self) -> Option<&Intent> {
        self.file.intents.get(&self.key)
    }

    /// Record, durably, what an apply is about to do (before its first write).
    pub fn begin(
        &mut self,
        objects: BTreeSet<ObjectId>,
        operations: usize,
    ) -> Result<(), LedgerError> {
        // An earlier interrupted apply's objects stay managed until this one ends.
        let mut objects = objects;
        if let Some(old) = self.file.intents.get(&self.key) {
            objects.extend(old.objects.iter().cloned());
        }
        let started_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.file.intents.insert(
            self.key.clone(),
            Intent {
                started_unix,
                pid: std::process::id(),
                operations,
                objects,
            },
        );
        self.save()
    }

    /// The apply ended (applied, or rolled back): its intent is settled by the
    /// objects recorded with [`Ledger::set_objects`]. Saved by the next `save`.
    pub fn end(&mut self) {
        self.file.intents.remove(&self.key);
    }

    pub fn set_objects(&mut self, objects: BTreeSet<ObjectId>) {
        if objects.is_empty() {
            self.file.managed.remove(&self.key);
        } else {
            self.file.managed.insert(self.key.clone(), objects);
        }
    }

    /// The attribute values recorded by the last apply.
    pub fn applied(&self) -> BTreeMap<ObjectId, BTreeMap<String, String>> {
        self.file
            .applied
            .get(&self.key)
            .map(|v| {
                v.iter()
                    .map(|a| (a.object.clone(), a.attributes.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn set_applied(&mut self, applied: BTreeMap<ObjectId, BTreeMap<String, String>>) {
        if applied.is_empty() {
            self.file.applied.remove(&self.key);
        } else {
            self.file.applied.insert(
                self.key.clone(),
                applied
                    .into_iter()
                    .map(|(object, attributes)| AppliedObject { object, attributes })
                    .collect(),
            );
        }
    }

    /// Write atomically with mode 0600.
    pub fn save(&self) -> Result<(), LedgerError> {
        let err = |source| LedgerError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            ensure_state_dir(dir).map_err(err)?;
        }
        let json = serde_json::to_vec_pretty(&self.file)
            .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(&json).map_err(err)?;
        f.write_all(b"\n").map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        // The rename itself must survive a power loss: the intent is written so
        // that a crash right after it is recoverable.
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err)?;
        }
        Ok(())
    }
}

/// How the live state differs from what isctl manages and last applied.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Drift {
    /// Managed objects that are gone.
    pub missing: Vec<ObjectId>,
    /// Managed attributes whose live value differs from the last apply's.
    pub changed: Vec<ChangedAttribute>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedAttribute {
    pub object: ObjectId,
    pub attribute: String,
    pub applied: String,
    pub live: String,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.changed.is_empty()
    }
}

impl Ledger {
    /// Compare the ledger (objects and last-applied values) with a live state.
    pub fn drift(&self, live: &crate::state::State) -> Drift {
        let now = crate::state::managed_attributes(live);
        let mut d = Drift::default();
        let applied = self.applied();
        // An interrupted apply's objects may never have been created: not drift.
        for id in self.recorded() {
            let Some(live_attrs) = now.get(&id) else {
                d.missing.push(id);
                continue;
            };
            if let Some(want) = applied.get(&id) {
                for (k, v) in want {
                    let l = live_attrs.get(k).cloned().unwrap_or_default();
                    if &l != v {
                        d.changed.push(ChangedAttribute {
                            object: id.clone(),
                            attribute: k.clone(),
                            applied: v.clone(),
                            live: l,
                        });
                    }
                }
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trips_per_location_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("state");
        let mut l = Ledger::load(&sd, "lio", "/a").unwrap();
        assert!(l.objects().is_empty());
        l.set_objects([ObjectId::Backstore { name: "x".into() }].into());
        l.save().unwrap();
        let mode = std::fs::metadata(l.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let l2 = Ledger::load(&sd, "lio", "/a").unwrap();
        assert_eq!(l2.objects().len(), 1);
        assert!(Ledger::load(&sd, "lio", "/b").unwrap().objects().is_empty());
        // An apply under way: its objects are managed until it ends.
        let t = ObjectId::Target {
            target: "iqn.2026-11.io.isctl:t".into(),
        };
        l.begin([t.clone()].into(), 3).unwrap();
        let l3 = Ledger::load(&sd, "lio", "/a").unwrap();
        assert_eq!(l3.interrupted().map(|i| i.operations), Some(3));
        assert!(l3.objects().contains(&t));
        assert!(l3.drift(&crate::state::State::default()).missing.len() == 1);
        l.end();
        l.save().unwrap();
        assert!(Ledger::load(&sd, "lio", "/a")
            .unwrap()
            .interrupted()
            .is_none());
        std::fs::write(l.path(), "{").unwrap();
        assert!(matches!(
            Ledger::load(&sd, "lio", "/a"),
            Err(LedgerError::Parse { .. })
        ));
    }
}
