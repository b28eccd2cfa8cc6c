//! Host facts: backing files and block devices the desired backstores name.
//!
//! Owns resolving a file extent's size (model size, file size, what initiators
//! already see), the host ops that create or grow a backing file, the kernel's
//! defaults that depend on the device, and the refusals about files and devices
//! (missing, not regular, not a block device, shrinking).

use crate::plan::op::{Lane, Op, Phase};
use crate::state::{Backstore, BackstoreKind, DeviceFact, FileFact, ObjectId};

use super::Differ;

impl Differ<'_> {
    /// Resolve a file extent's size from the model, the file and the live object;
    /// emit host ops into the backstore's lane. `None` when refused.
    fn resolve_file(
        &mut self,
        name: &str,
        path: &std::path::Path,
        model_size: Option<u64>,
        live_size: Option<u64>,
    ) -> Option<u64> {
        let id = ObjectId::Backstore {
            name: name.to_string(),
        };
        let lane = Lane::Backstore(name.to_string());
        let fact = self.host.files.get(path).cloned();
        match fact {
            Some(FileFact::Missing { parent_exists }) => {
                if !parent_exists {
                    let parent = path
                        .parent()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    self.refuse(
                        "backing_file",
                        Some(id),
                        format!(
                            "backing file {} does not exist and its directory {parent} does not exist either",
                            path.display()
                        ),
                        format!("create {parent}, or correct the path"),
                    );
                    return None;
                }
                let Some(size) = model_size.or(live_size) else {
                    self.refuse(
                        "backing_file",
                        Some(id),
                        format!(
                            "backing file {} does not exist and the model gives no size",
                            path.display()
                        ),
                        "add `size` to the extent so that isctl can create the file".to_string(),
                    );
                    return None;
                };
                self.emit(
                    Phase::Backstores,
                    lane,
                    Op::CreateBackingFile {
                        backstore: name.to_string(),
                        path: path.to_path_buf(),
                        size,
                    },
                );
                Some(size)
            }
            Some(FileFact::Regular { size: file_size }) => {
                let want = match model_size {
                    Some(s) => s,
                    // No size in the model: the file's size, but never less than what
                    // initiators already see.
                    None => file_size.max(live_size.unwrap_or(0)),
                };
                if want == 0 {
                    self.refuse(
                        "backing_file",
                        Some(id),
                        format!(
                            "backing file {} is empty and the model gives no size",
                            path.display()
                        ),
                        "add `size` to the extent".to_string(),
                    );
                    return None;
                }
                if want < file_size {
                    self.refuse(
                        "shrink",
                        Some(id),
                        format!(
                            "the model's size {want} is smaller than backing file {} ({file_size} bytes); isctl never shrinks a backing file",
                            path.display()
                        ),
                        format!("set size to at least {file_size}, or remove `size` to use the file's size"),
                    );
                    return None;
                }
                if let Some(live) = live_size {
                    if want < live {
                        self.refuse(
                            "shrink",
                            Some(id),
                            format!(
                                "the model's size {want} is smaller than the LUN's current capacity {live}; shrinking a LUN under its initiators loses their data"
                            ),
                            format!("set size to at least {live}"),
                        );
                        return None;
                    }
                }
                if want > file_size {
                    self.emit(
                        Phase::Backstores,
                        lane,
                        Op::GrowBackingFile {
                            backstore: name.to_string(),
                            path: path.to_path_buf(),
                            from: file_size,
                            to: want,
                        },
                    );
                }
                Some(want)
            }
            Some(FileFact::NotRegular { what }) => {
                self.refuse(
                    "backing_file",
                    Some(id),
                    format!("{} is {what}, not a regular file", path.display()),
                    "use type = \"block\" for block devices, or correct the path".to_string(),
                );
                None
            }
            Some(FileFact::Unknown { error }) => {
                self.refuse(
                    "backing_file",
                    Some(id),
                    format!("cannot inspect backing file {}: {error}", path.display()),
                    "check the path and permissions".to_string(),
                );
                None
            }
            None => {
                self.refuse(
                    "backing_file",
                    Some(id),
                    format!(
                        "no facts about backing file {} were gathered",
                        path.display()
                    ),
                    "this is a bug in the backend's host inspection".to_string(),
                );
                None
            }
        }
    }

    /// The kernel's value of `block_size` / `is_nonrot` right after enable (§2.4);
    /// `None` when it depends on a device isctl could not inspect.
    pub(super) fn defaults_after_enable(
        &self,
        kind: &BackstoreKind,
    ) -> (Option<u32>, Option<bool>) {
        match kind {
            BackstoreKind::File { .. } => (Some(512), Some(false)),
            BackstoreKind::Ramdisk { .. } => (Some(512), Some(true)),
            BackstoreKind::Block { device, .. } => match self.host.devices.get(device) {
                Some(DeviceFact::Block {
                    logical_block_size,
                    rotational,
                }) => (*logical_block_size, rotational.map(|r| !r)),
                _ => (None, None),
            },
            BackstoreKind::Other { .. } => (None, None),
        }
    }

    fn check_device(&mut self, name: &str, kind: &BackstoreKind) -> bool {
        if let BackstoreKind::Block { device, .. } = kind {
            let id = ObjectId::Backstore {
                name: name.to_string(),
            };
            match self.host.devices.get(device) {
                Some(DeviceFact::Block { .. }) => {}
                Some(DeviceFact::Missing) | None => {
                    self.refuse(
                        "device",
                        Some(id),
                        format!("block device {} does not exist", device.display()),
                        "correct the device path".to_string(),
                    );
                    return false;
                }
                Some(DeviceFact::NotBlock { what }) => {
                    self.refuse(
                        "device",
                        Some(id),
                        format!("{} is {what}, not a block device", device.display()),
                        "use type = \"file\" for regular files, or correct the path".to_string(),
                    );
                    return false;
                }
            }
        }
        true
    }

    pub(super) fn resolved_kind(
        &mut self,
        db: &Backstore,
        live: Option<&BackstoreKind>,
    ) -> Option<BackstoreKind> {
        match &db.kind {
            BackstoreKind::File {
                path,
                size,
                write_back,
            } => {
                let live_size = match live {
                    Some(BackstoreKind::File {
                        path: lp, size: ls, ..
                    }) if lp == path => *ls,
                    _ => None,
                };
                let s = self.resolve_file(&db.name, path, *size, live_size)?;
                self.resolved_sizes.insert(db.name.clone(), s);
                Some(BackstoreKind::File {
                    path: path.clone(),
                    size: Some(s),
                    write_back: *write_back,
                })
            }
            other => {
                if !self.check_device(&db.name, other) {
                    return None;
                }
                Some(other.clone())
            }
        }
    }
}
