//! The model: TOML files → a validated [`Model`].
//!
//! Owns: reading a file or a directory of `*.toml` files (merged in lexical order of
//! path), the schema (unknown keys are errors), every validation rule of the schema,
//! secrets from `secret`, `secret_file` or `secret_env`, defaults (portal tags, serials).
//! Does not: know any backend. What a backend cannot honour is that backend's error.
//! In: a path. Out: [`Model`] or a list of diagnostics, each naming file, line,
//! column, object, problem and fix.

pub mod names;
pub mod secret;
pub mod types;

pub use names::IscsiName;
pub use secret::Secret;
pub use types::*;
