//! `isctl plan PATH`: what `apply` would change, like terraform.
//!
//! Also the shared front half of `apply` and `status`: choosing the backend
//! ([`open_backend`]) and model → desired state → observe → diff ([`make_plan`]).
//!
//! Exit codes: 0 (with `--detailed-exitcode`: 0 no changes, 2 changes), 3 invalid
//! model, 4 refused (backend limit, sessions without `--force`, shrinking a file...),
//! 1 other failures.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::apply::Ledger;
use crate::backend::lio::LioBackend;
use crate::backend::sim::Sim;
use crate::backend::{Backend, BackendError, ObserveScope};
use crate::cli::args::{BackendChoice, GlobalArgs, OutputFormat, PlanArgs};
use crate::cli::exit;
use crate::model;
use crate::plan::{self, render, DiffOptions, Plan, PlanRefused};
use crate::state::{self, State};

/// Environment variable naming a JSON file that holds a simulated LIO configfs:
/// the CLI then works on the simulator instead of the kernel (docs/reconcile.md).
pub const SIMULATE_ENV: &str = "ISCTL_SIMULATE";

/// A backend, and the simulator file to save back when simulating.
pub(crate) struct OpenBackend {
    pub backend: Box<dyn Backend>,
    sim: Option<(Arc<Sim>, PathBuf)>,
}

impl OpenBackend {
    /// Save the simulator state (no-op on a real backend).
    pub fn persist(&self) -> anyhow::Result<()> {
        if let Some((sim, file)) = &self.sim {
            sim.save(file)
                .with_context(|| format!("saving the simulated configfs to {}", file.display()))?;
        }
        Ok(())
    }
}

/// Pick the backend from `--backend` and `--configfs-root` (or `ISCTL_SIMULATE`).
pub(crate) fn open_backend(g: &GlobalArgs) -> anyhow::Result<OpenBackend> {
    if let Some(file) = std::env::var_os(SIMULATE_ENV) {
        let file = PathBuf::from(file);
        if g.backend == BackendChoice::Userspace {
            anyhow::bail!(
                "{SIMULATE_ENV} simulates LIO; it cannot be combined with --backend userspace"
            );
        }
        let sim = Arc::new(
            Sim::load(&file, &g.configfs_root)
                .with_context(|| format!("loading the simulated configfs {}", file.display()))?,
        );
        if !g.quiet {
            eprintln!(
                "note: {SIMULATE_ENV} is set: using the simulated LIO configfs in {} (no kernel is touched)",
                file.display()
            );
        }
        let backend = LioBackend::new(&g.configfs_root, sim.clone(), sim.clone());
        return Ok(OpenBackend {
            backend: Box::new(backend),
            sim: Some((sim, file)),
        });
    }
    let userspace = || -> anyhow::Error {
        BackendError::Unavailable {
            reason: "`export` reads LIO's configfs; the userspace engine serves its model file as it is (see `isctl status --backend userspace`)".into(),
            hint: format!(
                "use the kernel target (load it with `modprobe target_core_mod`, configfs at {}), or serve the model directly with `isctl serve`",
                g.configfs_root.display()
            ),
        }
        .into()
    };
    match g.backend {
        BackendChoice::Userspace => Err(userspace()),
        BackendChoice::Lio => Ok(OpenBackend {
            backend: Box::new(LioBackend::real(&g.configfs_root)?),
            sim: None,
        }),
        BackendChoice::Auto => {
            if g.configfs_root.is_dir() {
                Ok(OpenBackend {
                    backend: Box::new(LioBackend::real(&g.configfs_root)?),
                    sim: None,
                })
            } else {
                Err(userspace().context(format!(
                    "--backend auto: LIO's configfs tree {} does not exist, so the userspace backend would be used",
                    g.configfs_root.display()
                )))
            }
        }
    }
}

/// Everything a plan was made from.
pub(crate) struct Planned {
    pub desired: State,
    pub plan: Plan,
    pub ledger: Ledger,
}

/// Load and validate the model (warnings to stderr).
pub(crate) fn load_model(g: &GlobalArgs, path: &Path) -> anyhow::Result<model::Model> {
    let loaded =
        model::load(path).with_context(|| format!("loading the model {}", path.display()))?;
    if !g.quiet {
        for w in &loaded.warnings {
            eprintln!("{w}");
        }
    }
    Ok(loaded.model)
}

/// Model → desired state → observe → diff.
pub(crate) fn make_plan(
    g: &GlobalArgs,
    path: &Path,
    opts: DiffOptions,
    backend: &dyn Backend,
) -> anyhow::Result<Planned> {
    let model = load_model(g, path)?;
    let desired = state::lower(&model)?;
    let observed = backend.observe(ObserveScope::Managed)?;
    let host = backend.host_facts(&desired);
    let ledger = Ledger::load(&g.state_dir, backend.name(), &backend.location())?;
    let mut plan = plan::diff(&desired, &observed, &host, &ledger.objects(), &opts);
    plan.count_operations(|op| backend.operation_count(op));
    Ok(Planned {
        desired,
        plan,
        ledger,
    })
}

pub fn run(g: &GlobalArgs, args: &PlanArgs) -> anyhow::Result<u8> {
    if g.output == OutputFormat::Toml {
        eprintln!("error: `isctl plan` prints text or json (-o text | -o json)");
        return Ok(exit::USAGE);
    }
    if super::engine::selected(g) {
        return super::engine::plan(g, args);
    }
    let open = open_backend(g)?;
    let planned = make_plan(
        g,
        &args.path,
        DiffOptions {
            prune: args.prune,
            force: args.force,
        },
        open.backend.as_ref(),
    )?;
    let plan = &planned.plan;
    let mut out = std::io::stdout().lock();
    match g.output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &render::json(plan))?;
            writeln!(out)?;
            if plan.is_refused() {
                return Ok(exit::REFUSED);
            }
        }
        _ => {
            out.write_all(render::text(plan).as_bytes())?;
            if plan.is_refused() {
                drop(out);
                return Err(PlanRefused {
                    problems: plan.refusals.len(),
                }
                .into());
            }
        }
    }
    Ok(if args.detailed_exitcode && !plan.is_empty() {
        exit::CHANGES
    } else {
        exit::OK
    })
}
