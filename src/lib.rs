//! isctl: a declarative iSCSI target manager.
//!
//! A storage administrator keeps a TOML model of the host's iSCSI configuration;
//! isctl makes the machine match it. Data flows one way:
//!
//! ```text
//! model (TOML → validated Model)
//!   → state::lower (Model → desired State, in LIO's shape)
//!   → plan::diff  (desired vs observed State → ordered, minimal Plan)
//!   → apply       (Plan → Backend operations, undo journal, rollback)
//!   → backend     (lio: configfs writes)
//! ```
//!
//! The userspace engine ([`engine`]) serves the same model where the kernel's LIO
//! target is absent. It is planned in the same [`plan::Plan`] type: the engine
//! diffs the model it serves against the new one (`plan::served`) and applies it as
//! a whole; `backend::userspace` reaches it over its control socket. [`reconcile`]
//! is the one reconciler the commands use for either backend. [`cli`] is the binary
//! edge.

pub mod apply;
pub mod backend;
pub mod cli;
pub mod engine;
pub mod import;
pub mod initiator;
pub mod model;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod state;
pub mod watch;
