//! The resolve stage (ripgrep's "high args"): what the user typed ([`GlobalArgs`]),
//! turned once into what the verbs act on: the backend ([`Host`]), the output
//! format, the state directory, the engine's socket. Verbs never look at
//! `--backend`, `ISCTL_SIMULATE` or the configfs root themselves.
//!
//! Backend choice: `--backend lio` (or `ISCTL_SIMULATE`, which simulates LIO),
//! `--backend userspace`, or `auto`: LIO when its configfs tree exists, else the
//! userspace engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::backend::lio::LioBackend;
use crate::backend::sim::Sim;
use crate::backend::userspace::UserspaceBackend;
use crate::backend::BackendError;
use crate::cli::args::{BackendChoice, GlobalArgs, OutputFormat};
use crate::model;
use crate::reconcile::{Host, LioHost};

/// Environment variable naming a JSON file that holds a simulated LIO configfs:
/// the CLI then works on the simulator instead of the kernel (docs/reconcile.md).
pub const SIMULATE_ENV: &str = "ISCTL_SIMULATE";

/// Which backend the command line chose, before anything is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Chosen {
    Lio,
    /// LIO on the simulated configfs saved in this file.
    Simulated(PathBuf),
    /// The userspace engine; the string says why when it was chosen automatically.
    Userspace(String),
}

/// Everything the verbs need from the global options, decided once.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub output: OutputFormat,
    pub quiet: bool,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    configfs_root: PathBuf,
    chosen: Chosen,
}

impl Resolved {
    pub fn new(g: &GlobalArgs) -> anyhow::Result<Resolved> {
        let simulate = std::env::var_os(SIMULATE_ENV).map(PathBuf::from);
        let chosen = match (g.backend, simulate) {
            (BackendChoice::Userspace, Some(_)) => anyhow::bail!(
                "{SIMULATE_ENV} simulates LIO; it cannot be combined with --backend userspace"
            ),
            (_, Some(file)) => Chosen::Simulated(file),
            (BackendChoice::Lio, None) => Chosen::Lio,
            (BackendChoice::Userspace, None) => Chosen::Userspace(String::new()),
            (BackendChoice::Auto, None) if g.configfs_root.is_dir() => Chosen::Lio,
            (BackendChoice::Auto, None) => Chosen::Userspace(format!(
                "; without LIO's configfs at {} the backend is the userspace engine",
                g.configfs_root.display()
            )),
        };
        Ok(Resolved {
            output: g.output,
            quiet: g.quiet,
            state_dir: g.state_dir.clone(),
            socket: g.socket.clone(),
            configfs_root: g.configfs_root.clone(),
            chosen,
        })
    }

    /// The backend to act on.
    pub fn host(&self) -> anyhow::Result<Host> {
        match &self.chosen {
            Chosen::Simulated(file) => {
                let sim = Arc::new(Sim::load(file, &self.configfs_root).with_context(|| {
                    format!("loading the simulated configfs {}", file.display())
                })?);
                if !self.quiet {
                    eprintln!(
                        "note: {SIMULATE_ENV} is set: using the simulated LIO configfs in {} (no kernel is touched)",
                        file.display()
                    );
                }
                let backend = LioBackend::new(&self.configfs_root, sim.clone(), sim.clone());
                Ok(Host::Lio(LioHost::simulated(
                    Box::new(backend),
                    &self.state_dir,
                    sim,
                    file.clone(),
                )))
            }
            Chosen::Lio => Ok(Host::Lio(LioHost::new(
                Box::new(LioBackend::real(&self.configfs_root)?),
                &self.state_dir,
            ))),
            Chosen::Userspace(why) => Ok(Host::Engine(UserspaceBackend::new(&self.socket, why))),
        }
    }

    /// Where `sessions`, `stats` and the exporter read sessions and counters: the
    /// chosen backend, and for LIO the configfs statistics under the root.
    pub fn observe_source(&self) -> anyhow::Result<Box<dyn crate::observe::Source>> {
        Ok(Box::new(HostSource {
            host: self.host()?,
            configfs_root: self.configfs_root.clone(),
        }))
    }

    /// True when the chosen backend is LIO (the kernel's or the simulated configfs).
    pub fn is_lio(&self) -> bool {
        !matches!(self.chosen, Chosen::Userspace(_))
    }

    /// The LIO backend, for the verbs only LIO has (`export`).
    pub fn lio_host(&self, verb: &str) -> anyhow::Result<LioHost> {
        match self.host()? {
            Host::Lio(l) => Ok(l),
            Host::Engine(_) => Err(BackendError::Unavailable {
                reason: format!(
                    "`{verb}` reads LIO's configfs; the userspace engine serves its model file as it is (see `isctl status --backend userspace`)"
                ),
                hint: format!(
                    "use the kernel target (load it with `modprobe target_core_mod`, configfs at {}), or serve the model directly with `isctl serve`",
                    self.configfs_root.display()
                ),
            }
            .into()),
        }
    }

    /// Refuse `-o toml` for a verb that prints text or JSON.
    pub fn text_or_json(&self, verb: &str) -> anyhow::Result<()> {
        if self.output == OutputFormat::Toml {
            return Err(crate::cli::UsageError(format!(
                "`isctl {verb}` prints text or json (-o text | -o json)"
            ))
            .into());
        }
        Ok(())
    }

    /// Worker threads for the executor (`ISCTL_WORKERS`, default `DEFAULT_WORKERS`).
    pub fn workers(&self) -> usize {
        std::env::var("ISCTL_WORKERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(crate::apply::DEFAULT_WORKERS)
    }

    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }

    /// Load and validate the model (warnings to stderr unless `--quiet`).
    pub fn load_model(&self, path: &Path) -> anyhow::Result<model::Model> {
        let loaded =
            model::load(path).with_context(|| format!("loading the model {}", path.display()))?;
        if !self.quiet {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
        }
        Ok(loaded.model)
    }
}

/// The chosen backend as a source of sessions and statistics.
struct HostSource {
    host: Host,
    configfs_root: PathBuf,
}

impl crate::observe::Source for HostSource {
    fn sessions(&self) -> anyhow::Result<Vec<crate::state::Session>> {
        Ok(self.host.sessions()?)
    }

    fn statistics(&self) -> anyhow::Result<crate::observe::stats::Statistics> {
        match &self.host {
            Host::Lio(_) => Ok(crate::observe::lio_stats::read(&self.configfs_root)),
            Host::Engine(e) => Ok(e.statistics()?),
        }
    }
}
