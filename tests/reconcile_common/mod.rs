//! Shared helpers of the reconcile integration tests: a simulated LIO host
//! (configfs + backing files + block devices) and the observe → diff → apply loop.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use isctl::apply::{self, Applied, ApplyError, ApplyOptions, Ledger};
use isctl::backend::lio::LioBackend;
use isctl::backend::sim::Sim;
use isctl::backend::{Backend, ObserveScope};
use isctl::model::{self, Model};
use isctl::plan::{self, DiffOptions, Plan};
use isctl::state::{self, ObjectId, Observed, State};

/// The reconcile fixtures directory.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reconcile")
        .join(name)
}

pub fn load(path: &Path) -> Model {
    match model::load(path) {
        Ok(l) => l.model,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

pub fn load_str(text: &str) -> Model {
    match model::load_str("test.toml", text) {
        Ok(l) => l.model,
        Err(e) => panic!("{e}"),
    }
}

/// A simulated host: configfs at the default root, `/srv/iscsi` exists, `/dev/ram0`
/// is a 512-byte-sector non-rotational block device.
pub struct Host {
    pub sim: Arc<Sim>,
    pub backend: LioBackend,
    pub state_dir: tempfile::TempDir,
}

impl Host {
    pub fn new() -> Host {
        let sim = Arc::new(Sim::new(&Sim::default_root()));
        sim.add_host_dir(Path::new("/srv/iscsi"));
        sim.add_block_device(Path::new("/dev/ram0"), 512, false);
        sim.add_block_device(Path::new("/dev/ram1"), 512, false);
        let backend = LioBackend::new(&Sim::default_root(), sim.clone(), sim.clone());
        Host {
            sim,
            backend,
            state_dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// An identical, independent host: the simulator snapshotted through its JSON
    /// persistence, the ledger copied.
    pub fn fork(&self) -> Host {
        let file = self.state_dir.path().join("fork-sim.json");
        self.sim.save(&file).expect("save");
        let sim = Arc::new(Sim::load(&file, &Sim::default_root()).expect("load"));
        let backend = LioBackend::new(&Sim::default_root(), sim.clone(), sim.clone());
        let state_dir = tempfile::tempdir().expect("tempdir");
        let ledger = self.state_dir.path().join("ledger.json");
        if ledger.exists() {
            std::fs::copy(&ledger, state_dir.path().join("ledger.json")).expect("copy ledger");
        }
        Host {
            sim,
            backend,
            state_dir,
        }
    }

    pub fn observe(&self) -> Observed {
        self.backend
            .observe(ObserveScope::Managed)
            .expect("observe")
    }

    pub fn observe_full(&self) -> Observed {
        self.backend.observe(ObserveScope::Full).expect("observe")
    }

    pub fn ledger(&self) -> Ledger {
        Ledger::load(
            self.state_dir.path(),
            self.backend.name(),
            &self.backend.location(),
        )
        .expect("ledger")
    }

    pub fn managed(&self) -> BTreeSet<ObjectId> {
        self.ledger().objects()
    }

    /// Lower, observe, diff (with op counts).
    pub fn plan(&self, m: &Model, opts: DiffOptions) -> (State, Plan) {
        let desired = state::lower(m).unwrap_or_else(|e| panic!("{e}"));
        self.plan_state(&desired, opts)
    }

    pub fn plan_state(&self, desired: &State, opts: DiffOptions) -> (State, Plan) {
        let observed = self.observe();
        let host = self.backend.host_facts(desired);
        let mut p = plan::diff(desired, &observed, &host, &self.managed(), &opts);
        p.count_operations(|op| self.backend.operation_count(op));
        (desired.clone(), p)
    }

    pub fn apply_plan(&self, p: &Plan) -> Result<Applied, ApplyError> {
        let mut ledger = self.ledger();
        apply::apply(p, &self.backend, &mut ledger, &ApplyOptions::default())
    }

    /// Plan and apply; panics on refusal or failure.
    pub fn converge(&self, m: &Model, opts: DiffOptions) -> Applied {
        let (_, p) = self.plan(m, opts);
        assert!(!p.is_refused(), "refused: {:#?}", p.refusals);
        self.apply_plan(&p).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The complete fixture model.
pub fn complete() -> Model {
    load(&fixture("complete.toml"))
}

pub fn no_opts() -> DiffOptions {
    DiffOptions::default()
}
