//! The model: TOML files → a validated [`Model`].
//!
//! Owns: reading a file or a directory of `*.toml` files (merged in lexical order of
//! path), the schema (unknown keys are errors), every validation rule of the schema,
//! secrets from `secret`, `secret_file` or `secret_env`, defaults (portal tags, serials).
//! Does not: know any backend. What a backend cannot honour is that backend's error.
//! In: a path. Out: [`Model`] or a list of diagnostics, each naming file, line,
//! column, object, problem and fix.
//!
//! ```text
//! load(path) ── load::discover ──> files ── load::parse (toml DeTable, spans) ──>
//!   validate::collect (merge files, duplicates) ── validate::{objects,auth,extent,target}
//!   (each object's keys: schema::Fields) ── validate::cross (references, tags,
//!   addresses, backing paths, shared extents) ──> Loaded { model, warnings } | ModelError
//! ```
//!
//! Every rule reports into one collector and keeps going, so a single run shows every
//! problem (like `ignore::Error::Partial`). Diagnostics never contain a secret.

mod diag;
mod load;
pub mod names;
pub mod net;
pub mod render;
mod schema;
pub mod secret;
pub mod size;
mod suggest;
pub mod types;
mod validate;

use std::path::{Path, PathBuf};

pub use diag::{Diagnostic, ModelError, Severity};
pub use names::IscsiName;
pub use secret::Secret;
pub use types::*;
pub use validate::check_object_name;

/// Rules and defaults other parts may want to quote (documentation, export).
pub mod limits {
    pub use super::validate::MAX_OBJECT_NAME;
    pub const MAX_LUN: u16 = 16383;
    pub const BLOCK_SIZES: [u32; 4] = [512, 1024, 2048, 4096];
    pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 12..=16;
    pub const MAX_SERIAL: usize = 253;
}

/// A valid model, and the warnings found while validating it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub model: Model,
    /// Not errors, but worth showing (a group-readable secret file, say).
    pub warnings: Vec<Diagnostic>,
}

/// Load and validate a model: a file, or a directory whose `*.toml` files (recursively;
/// hidden files and editor backups skipped) are merged in lexical order of path.
///
/// Errors list every problem found, with the warnings, in file and line order.
pub fn load(path: &Path) -> Result<Loaded, ModelError> {
    let mut d = diag::Diags::new();
    let files = load::discover(path, &mut d);
    let sources = load::read_all(files, &mut d);
    finish(sources, d)
}

/// The files [`load`] reads for the model at `path` (the file, or the `*.toml` files
/// of a directory tree, hidden files and editor backups skipped), sorted; empty when
/// the path cannot be read. `isctl watch` digests exactly these.
pub fn files(path: &Path) -> Vec<PathBuf> {
    load::discover(path, &mut diag::Diags::new())
}

/// Names [`load`] never reads in a model directory: hidden files and directories
/// (`.git`, `.x.swp`) and editor backups (`x~`, `#x#`).
pub fn is_skipped_name(name: &str) -> bool {
    load::is_skipped_name(name)
}

/// Load and validate one model file given as text (tests, stdin). `file_name` is used
/// in diagnostics and as the base of relative `secret_file` paths.
pub fn load_str(file_name: &str, text: &str) -> Result<Loaded, ModelError> {
    let src = load::SourceFile::new(PathBuf::from(file_name), text.to_owned());
    finish(vec![src], diag::Diags::new())
}

/// The serial an extent gets when the model gives none (see `docs/model.md`).
pub fn derived_serial(basename: Option<&str>, extent: &str) -> String {
    validate::derived_serial(basename, extent)
}

fn finish(sources: Vec<load::SourceFile>, mut d: diag::Diags) -> Result<Loaded, ModelError> {
    let docs: Vec<_> = sources
        .iter()
        .filter_map(|s| load::parse(s, &mut d).map(|doc| (s, doc)))
        .collect();
    // A file that does not parse leaves the model incomplete: checking references
    // against it would only add misleading errors.
    if d.has_errors() {
        return Err(ModelError {
            diagnostics: d.into_sorted(),
        });
    }
    let model = validate::build(&docs, &mut d);
    if d.has_errors() {
        return Err(ModelError {
            diagnostics: d.into_sorted(),
        });
    }
    Ok(Loaded {
        model,
        warnings: d.into_sorted(),
    })
}

#[cfg(test)]
mod tests;
