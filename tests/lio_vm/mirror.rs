//! The simulator as a mirror of the VM: the same models applied to
//! `isctl::backend::sim::Sim` through the library, and its tree dumped in `vmtool dump`'s
//! form, so that a test can require the kernel and the simulator to end in the same
//! configfs tree after the same applies. Every difference is a simulator bug (the kernel
//! is the reference) and names the file and both values.
//!
//! The mirror's host is the VM's: the model's file directories exist, `/dev/ram0` ..
//! `/dev/ram3` are 512-byte-sector, non-rotational RAM disks (brd), 1:0 .. 1:3.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Result};

use isctl::apply::{self, ApplyOptions, Ledger};
use isctl::backend::lio::{ConfigFs, EntryKind, LioBackend};
use isctl::backend::sim::Sim;
use isctl::backend::{Backend, ObserveScope};
use isctl::model::{Backing, Model};
use isctl::plan::{self, DiffOptions};
use isctl::state;

use super::transcript::errno_name;
use super::tree::{Entry, FileValue, TreeDiff, TreeDump};

pub struct SimMirror {
    pub sim: Arc<Sim>,
    backend: LioBackend,
    state_dir: tempfile::TempDir,
}

impl SimMirror {
    /// A simulated host like the test VM running `kernel_release`.
    pub fn new(kernel_release: &str) -> SimMirror {
        let sim = Arc::new(Sim::new(&Sim::default_root()));
        sim.set_kernel_release(kernel_release);
        for n in 0..4 {
            sim.add_block_device(Path::new(&format!("/dev/ram{n}")), 512, false);
        }
        let backend = LioBackend::new(&Sim::default_root(), sim.clone(), sim.clone());
        SimMirror {
            sim,
            backend,
            state_dir: tempfile::tempdir().expect("a temporary state directory"),
        }
    }

    /// The directories the model's file extents live in (the VM test creates them too).
    pub fn prepare_for(&self, model: &Model) {
        for extent in model.extents.values() {
            if let Backing::File { path, .. } = &extent.backing {
                if let Some(parent) = path.parent() {
                    self.sim.add_host_dir(parent);
                }
            }
        }
    }

    /// Plans and applies `model` like `isctl apply --auto-approve [--force] [--prune]`.
    pub fn apply(&self, model: &Model, opts: &DiffOptions) -> Result<u64> {
        self.prepare_for(model);
        let desired = state::lower(model).map_err(|e| anyhow!("lowering the model: {e}"))?;
        let observed = self
            .backend
            .observe(ObserveScope::Managed)
            .map_err(|e| anyhow!("observing the simulator: {e}"))?;
        let host = self.backend.host_facts(&desired);
        let mut ledger = Ledger::load(
            self.state_dir.path(),
            self.backend.name(),
            &self.backend.location(),
        )
        .map_err(|e| anyhow!("ledger: {e}"))?;
        let mut p = plan::diff(&desired, &observed, &host, &ledger.objects(), opts);
        p.count_operations(|op| self.backend.operation_count(op));
        if p.is_refused() {
            return Err(anyhow!(
                "the simulator's plan is refused: {:#?}",
                p.refusals
            ));
        }
        let applied = apply::apply(&p, &self.backend, &mut ledger, &ApplyOptions::default())
            .map_err(|e| anyhow!("apply into the simulator failed: {e}"))?;
        Ok(applied.operations)
    }

    /// The simulator's tree in `vmtool dump`'s form (statistics excluded).
    pub fn dump(&self) -> TreeDump {
        let mut dump = TreeDump::default();
        self.walk(self.sim.root(), "", &mut dump);
        dump
    }

    fn walk(&self, root: &Path, rel: &str, out: &mut TreeDump) {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let Ok(entries) = self.sim.read_dir(&dir) else {
            return;
        };
        for e in entries {
            let child = if rel.is_empty() {
                e.name.clone()
            } else {
                format!("{rel}/{}", e.name)
            };
            let path = root.join(&child);
            match e.kind {
                EntryKind::Symlink => {
                    let target = self
                        .sim
                        .read_link(&path)
                        .map(|t| resolve_link(&child, &t.to_string_lossy()))
                        .unwrap_or_else(|e| format!("! {}", errno_name(&e)));
                    out.entries.insert(child, Entry::Link(target));
                }
                EntryKind::Dir => {
                    if e.name == "statistics" || e.name == "fabric_statistics" {
                        continue;
                    }
                    out.entries.insert(child.clone(), Entry::Dir);
                    self.walk(root, &child, out);
                }
                EntryKind::File => {
                    let mode = self.sim.mode(&path).unwrap_or(0);
                    let value = match self.sim.read(&path) {
                        Ok(b) => FileValue::Bytes(b),
                        Err(e) => FileValue::Error(errno_name(&e)),
                    };
                    out.entries.insert(child, Entry::File { mode, value });
                }
            }
        }
    }
}

/// A link's text (relative, climbing to the configfs mount: `../../target/core/x/y`)
/// resolved against the link's directory, relative to the configfs root.
fn resolve_link(link_rel: &str, text: &str) -> String {
    // The link's directory, as components below the mount (`target/...`).
    let mut parts: Vec<&str> = std::iter::once("target")
        .chain(link_rel.split('/'))
        .collect();
    parts.pop();
    for c in text.split('/') {
        match c {
            ".." => {
                parts.pop();
            }
            "." | "" => {}
            c => parts.push(c),
        }
    }
    match parts.split_first() {
        Some((&"target", rest)) => rest.join("/"),
        _ => format!("/{}", parts.join("/")),
    }
}

/// Values that legitimately differ between two runs of the same apply, whoever runs it:
/// HBA creation order under concurrent lanes (`hba_info`'s global index), the order of
/// `default_lu_gp/members` (enable order) and of a storage object's
/// `alua/default_tg_pt_gp/members` (LUN link order). Normalised on both sides before comparing.
pub fn normalise(dump: &TreeDump) -> TreeDump {
    let mut out = dump.clone();
    for (path, entry) in out.entries.iter_mut() {
        let Entry::File {
            value: FileValue::Bytes(bytes),
            ..
        } = entry
        else {
            continue;
        };
        let text = String::from_utf8_lossy(bytes).into_owned();
        if path.ends_with("/hba_info") {
            if let Some(rest) = text.strip_prefix("HBA Index: ") {
                let tail = rest.split_once(' ').map_or("", |(_, t)| t);
                *bytes = format!("HBA Index: N {tail}").into_bytes();
            }
        } else if path.ends_with("lu_gps/default_lu_gp/members") {
            let lines: BTreeSet<&str> = text.lines().collect();
            *bytes = lines
                .into_iter()
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                .into_bytes();
        } else if path.ends_with("/alua/default_tg_pt_gp/members") {
            // "<lun path>\n\0" per exporting LUN, in link order.
            let entries: BTreeSet<&str> = text.split_terminator('\0').collect();
            *bytes = entries
                .into_iter()
                .map(|l| format!("{l}\0"))
                .collect::<String>()
                .into_bytes();
        }
    }
    out
}

/// Differences between the kernel's tree and the simulator's, after normalising both
/// ([`normalise`]); session state is excluded ([`TreeDump::is_session_state`]).
pub fn compare(kernel: &TreeDump, sim: &TreeDump) -> TreeDiff {
    normalise(kernel).diff(&normalise(sim))
}

/// `text` with every number (decimal or `0x` hex, and the ISID's six hex bytes) replaced
/// by `#`, for comparing session state whose numbers depend on the run.
pub fn mask_numbers(text: &str) -> String {
    // "ISID: 0x80 4c 37 ab 01 00  TSIH": bytes such as "ab" have no digit to key on.
    let text: String = text
        .lines()
        .map(|line| match (line.find("ISID: "), line.find("  TSIH")) {
            (Some(a), Some(b)) if a < b => format!("{}ISID: #{}\n", &line[..a], &line[b..]),
            _ => format!("{line}\n"),
        })
        .collect();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            if c == '0' && chars.peek() == Some(&'x') {
                chars.next();
            }
            while chars.peek().is_some_and(|d| d.is_ascii_hexdigit()) {
                chars.next();
            }
            out.push('#');
        } else {
            out.push(c);
        }
    }
    out
}
