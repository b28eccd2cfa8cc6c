//! isctl: a declarative iSCSI target manager.
//!
//! A storage administrator keeps a TOML model of the host's iSCSI configuration;
//! isctl makes the machine match it. Data flows one way:
//!
//! ```text
//! model (TOML → validated Model)
//!   → state::lower (Model → desired State, backend-neutral)
//!   → plan::diff  (desired vs observed State → ordered, minimal Plan)
//!   → apply       (Plan → Backend operations, undo journal, rollback)
//!   → backend     (lio: configfs writes; userspace: the engine's control socket)
//! ```
//!
//! The userspace engine ([`engine`]) serves the same model where the kernel's LIO
//! target is absent. [`cli`] is the binary edge.

pub mod apply;
pub mod backend;
pub mod cli;
pub mod engine;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod state;
