//! The ledger: which live objects isctl manages, per backend location, kept as
//! JSON in `<state-dir>/ledger.json` (mode 0600, written atomically: temp file,
//! fsync, rename). It does the job of ctld's `ctld_name` tags and kube's owner
//! references: objects neither desired nor in the ledger are left alone.

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

    /// The managed objects.
    pub fn objects(&self) -> BTreeSet<ObjectId> {
        self.file
            .managed
            .get(&self.key)
            .cloned()
            .unwrap_or_default()
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
        for id in self.objects() {
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
        std::fs::write(l.path(), "{").unwrap();
        assert!(matches!(
            Ledger::load(&sd, "lio", "/a"),
            Err(LedgerError::Parse { .. })
        ));
    }
}
