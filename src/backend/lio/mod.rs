//! The LIO backend: the kernel's iSCSI target, driven through configfs.
//!
//! Owns: every configfs path ([`paths`]), reading the tree into a state
//! ([`observe`]), expanding plan ops into configfs syscalls and running them
//! ([`exec`]), the [`ConfigFs`] seam (real syscalls in [`fs`], the simulator in
//! `backend::sim`) and the host side of backing files ([`host`]).
//! Does not: decide, order or roll back (plan, apply).
//! In: a configfs root, ops. Out: observed state and sessions, executed syscalls,
//! errors naming the op, the configfs path and the errno.

pub mod exec;
pub mod fs;
pub mod host;
pub mod observe;
pub mod paths;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::plan::Op;
use crate::state::{BackstoreKind, HostFacts, Observed, State};

use super::{Backend, BackendError, ObserveScope, OpError, OpExecutor};

pub use fs::{ConfigFs, DirEntry, EntryKind, RealConfigFs};
pub use host::{Host, RealHost};
pub use paths::Paths;

use exec::Syscall;

/// The LIO backend over some [`ConfigFs`] and [`Host`].
pub struct LioBackend {
    fs: Arc<dyn ConfigFs>,
    host: Arc<dyn Host>,
    paths: Paths,
    performed: AtomicU64,
}

impl LioBackend {
    /// The backend over any configfs implementation (the simulator in tests).
    pub fn new(root: &Path, fs: Arc<dyn ConfigFs>, host: Arc<dyn Host>) -> LioBackend {
        LioBackend {
            fs,
            host,
            paths: Paths::new(root),
            performed: AtomicU64::new(0),
        }
    }

    /// The backend over the real configfs at `root`; a clear error when the tree is
    /// not there (module not loaded, configfs not mounted).
    pub fn real(root: &Path) -> Result<LioBackend, BackendError> {
        if !root.is_dir() {
            return Err(BackendError::Unavailable {
                reason: format!("the LIO configfs tree {} does not exist", root.display()),
                hint: "load the kernel target (`modprobe target_core_mod`, and mount configfs on /sys/kernel/config if needed), point --configfs-root at it, or use --backend userspace".into(),
            });
        }
        Ok(LioBackend::new(
            root,
            Arc::new(RealConfigFs),
            Arc::new(RealHost::default()),
        ))
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    fn run(&self, op: &Op, tolerant: bool) -> Result<(), OpError> {
        let fail = |syscall: Option<&'static str>, path: Option<String>, e: &io::Error| OpError {
            op: op.to_string(),
            syscall,
            path,
            errno: e.raw_os_error(),
            message: if e.raw_os_error().is_some() {
                String::new()
            } else {
                e.to_string()
            },
        };
        match op {
            Op::CreateBackingFile { path, size, .. } => {
                return match self.host.create_sparse(path, *size) {
                    Ok(()) => Ok(()),
                    Err(e) if tolerant && e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                    Err(e) => Err(fail(Some("create"), Some(path.display().to_string()), &e)),
                };
            }
            Op::GrowBackingFile { path, to, .. } => {
                return self
                    .host
                    .grow(path, *to)
                    .map_err(|e| fail(Some("truncate"), Some(path.display().to_string()), &e));
            }
            _ => {}
        }
        let calls = exec::expand(&self.paths, op);
        for (n, call) in calls.iter().enumerate() {
            let number = self.performed.fetch_add(1, Ordering::Relaxed) + 1;
            kill_point(number);
            let r = match &call {
                Syscall::Mkdir(p) => self.fs.mkdir(p),
                Syscall::Rmdir(p) => self.fs.rmdir(p),
                Syscall::Write(p, v) => self.fs.write(p, v),
                Syscall::Symlink { target, link } => self.fs.symlink(target, link),
                Syscall::Unlink(p) => self.fs.unlink(p),
            };
            if let Err(e) = r {
                let errno = e.raw_os_error();
                // Undo steps survive a half-done forward step: what is already gone
                // or already there is fine (kube's finalizer contract).
                let ok = tolerant
                    && match &call {
                        Syscall::Mkdir(_) | Syscall::Symlink { .. } => errno == Some(libc::EEXIST),
                        Syscall::Rmdir(_) | Syscall::Unlink(_) => errno == Some(libc::ENOENT),
                        // enable=1 on an enabled object → EEXIST (§2.1).
                        Syscall::Write(p, _) => {
                            errno == Some(libc::EEXIST) && p.ends_with("enable")
                        }
                    };
                if ok {
                    continue;
                }
                if n > 0 && !tolerant {
                    self.undo_partial(op, &calls[..n]);
                }
                return Err(fail(
                    Some(call.name()),
                    Some(self.paths.relative(call.path())),
                    &e,
                ));
            }
        }
        Ok(())
    }
}

impl LioBackend {
    /// A compound op failed after some of its syscalls: undo those, so that a
    /// failed op leaves nothing behind and rollback only has to undo whole ops.
    fn undo_partial(&self, op: &Op, done: &[Syscall]) {
        match op {
            Op::CreateBackstore { .. } => {
                for call in done.iter().rev() {
                    if let Syscall::Mkdir(p) = call {
                        self.performed.fetch_add(1, Ordering::Relaxed);
                        let _ = self.fs.rmdir(p);
                    }
                }
            }
            Op::DeleteBackstore { backstore, hba, .. } => {
                // The object is gone but its HBA could not be removed: bring the
                // object back (in the HBA that is still there).
                let back = Op::DeleteBackstore {
                    backstore: backstore.clone(),
                    hba: hba.clone(),
                    delete_hba: false,
                };
                for inv in back.inverse() {
                    let _ = self.run(&inv, true);
                }
            }
            _ => {}
        }
    }
}

impl OpExecutor for LioBackend {
    fn execute(&self, op: &Op) -> Result<(), OpError> {
        self.run(op, false)
    }
    fn execute_tolerant(&self, op: &Op) -> Result<(), OpError> {
        self.run(op, true)
    }
}

impl Backend for LioBackend {
    fn name(&self) -> &'static str {
        "lio"
    }

    fn location(&self) -> String {
        self.paths.root().display().to_string()
    }

    fn observe(&self, scope: ObserveScope) -> Result<Observed, BackendError> {
        if !self.fs.exists(self.paths.root()) {
            return Err(BackendError::Unavailable {
                reason: format!(
                    "the LIO configfs tree {} does not exist",
                    self.paths.root().display()
                ),
                hint: "load the kernel target (`modprobe target_core_mod`), or use --backend userspace"
                    .into(),
            });
        }
        observe::Observer {
            fs: self.fs.as_ref(),
            paths: &self.paths,
            scope,
        }
        .observe()
    }

    fn host_facts(&self, desired: &State) -> HostFacts {
        let mut facts = HostFacts::default();
        for b in desired.backstores.values() {
            match &b.kind {
                BackstoreKind::File { path, .. } => {
                    facts.files.insert(path.clone(), self.host.file_fact(path));
                }
                BackstoreKind::Block { device, .. } => {
                    facts
                        .devices
                        .insert(device.clone(), self.host.device_fact(device));
                }
                _ => {}
            }
        }
        facts
    }

    fn operation_count(&self, op: &Op) -> u64 {
        exec::syscall_count(op)
    }

    fn executor(&self) -> &dyn OpExecutor {
        self
    }

    fn operations_performed(&self) -> u64 {
        self.performed.load(Ordering::Relaxed)
    }
}

/// Fault injection for the real-kernel crash tests: with
/// `ISCTL_KILL_BEFORE_CONFIGFS_CALL=N` in its environment, the process SIGKILLs itself
/// right before its Nth configfs write of a run, so a test interrupts an apply at an exact
/// point however fast the machine is (polling configfs from outside cannot: an apply
/// writes in bursts). A SIGKILL, not an exit, so nothing of isctl's own runs after it.
fn kill_point(call_number: u64) {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        std::env::var("ISCTL_KILL_BEFORE_CONFIGFS_CALL")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if *at == Some(call_number) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::apply::{self, ApplyOptions, Ledger};
    use crate::backend::sim::Sim;
    use crate::backend::ObserveScope;
    use crate::plan::{self, DiffOptions};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reconcile")
            .join(name)
    }

    /// Plans toward `model_path` (or nothing), checks every op's count, applies it.
    fn plan_check_apply(
        backend: &LioBackend,
        ledger: &mut Ledger,
        model_path: Option<&Path>,
        seen: &mut BTreeMap<&'static str, u64>,
    ) {
        let model = match model_path {
            Some(p) => crate::model::load(p).expect("fixture model").model,
            None => {
                crate::model::load_str("empty.toml", "")
                    .expect("empty model")
                    .model
            }
        };
        let desired = crate::state::lower(&model).expect("lowering");
        let observed = backend.observe(ObserveScope::Managed).expect("observe");
        let host = backend.host_facts(&desired);
        let opts = DiffOptions {
            prune: false,
            force: true,
        };
        let p = plan::diff(&desired, &observed, &host, &ledger.objects(), &opts);
        assert!(!p.is_refused(), "{:#?}", p.refusals);
        for planned in &p.ops {
            let expanded = exec::expand(&backend.paths, &planned.op).len() as u64;
            assert_eq!(
                exec::syscall_count(&planned.op),
                expanded,
                "syscall_count disagrees with expand for {}",
                planned.op
            );
            *seen.entry(planned.op.name()).or_default() += expanded;
        }
        apply::apply(&p, backend, ledger, &ApplyOptions { workers: 1 })
            .expect("apply into the simulator");
    }

    /// The cheap count planning uses equals the syscalls the executor makes, for every
    /// op of a create, an update with replacements, and a destroy.
    #[test]
    fn syscall_count_matches_the_expanded_syscalls() {
        let sim = std::sync::Arc::new(Sim::new(&Sim::default_root()));
        sim.add_host_dir(Path::new("/srv/iscsi"));
        sim.add_block_device(Path::new("/dev/ram0"), 512, false);
        sim.add_block_device(Path::new("/dev/ram1"), 512, false);
        let backend = LioBackend::new(&Sim::default_root(), sim.clone(), sim.clone());
        let state_dir = tempfile::tempdir().expect("tempdir");
        let mut ledger =
            Ledger::load(state_dir.path(), backend.name(), &backend.location()).expect("ledger");
        let mut seen = BTreeMap::new();
        plan_check_apply(
            &backend,
            &mut ledger,
            Some(&fixture("complete.toml")),
            &mut seen,
        );
        plan_check_apply(
            &backend,
            &mut ledger,
            Some(&fixture("complete-v2.toml")),
            &mut seen,
        );
        plan_check_apply(&backend, &mut ledger, None, &mut seen);
        let kinds: BTreeSet<&str> = seen.keys().copied().collect();
        // Every kind whose count is not a plain 1, and most of the rest.
        for must in [
            "create_backstore",
            "delete_backstore",
            "create_backing_file",
        ] {
            assert!(
                kinds.contains(must),
                "no {must} op was exercised: {kinds:?}"
            );
        }
        assert!(
            kinds.len() >= 20,
            "only {} op kinds exercised: {kinds:?}",
            kinds.len()
        );
    }
}
