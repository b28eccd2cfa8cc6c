//! Reading a model from disk: one file, or every `*.toml` file of a directory tree in
//! lexical order of path, each parsed with spans so that every later message can point
//! at the exact key or value.
//!
//! Parsing uses `toml::de::DeTable`, the toml crate's span-carrying document tree: it
//! keeps the byte span of every key *and* every value (serde's `Spanned` gives value
//! spans only, and `deny_unknown_fields` stops at the first unknown key without saying
//! where it is). Walking the tree by hand (see `schema.rs`) lets validation report every
//! problem of a model in one run.

use std::path::{Component, Path, PathBuf};

use toml::de::DeTable;
use toml::Spanned;

use super::diag::Diags;
use super::types::Origin;

/// One model file's text, with what is needed to turn byte offsets into line:column.
pub(crate) struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: PathBuf, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        SourceFile {
            path,
            text,
            line_starts,
        }
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub fn origin(&self, offset: usize) -> Origin {
        let offset = offset.min(self.text.len());
        let line_index = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let line_start = self.line_starts.get(line_index).copied().unwrap_or(0);
        let column = self
            .text
            .get(line_start..offset)
            .map_or(offset - line_start, |s| s.chars().count());
        Origin {
            file: self.path.clone(),
            line: u32::try_from(line_index + 1).unwrap_or(u32::MAX),
            column: u32::try_from(column + 1).unwrap_or(u32::MAX),
        }
    }

    /// Where the file itself is (line 0: the message concerns the whole file).
    pub fn whole(&self) -> Origin {
        whole_file(&self.path)
    }

    /// The directory relative paths in this file are resolved against.
    pub fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

pub(crate) fn whole_file(path: &Path) -> Origin {
    Origin {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
    }
}

/// Parse one file. A syntax error becomes a diagnostic built from the parser's message
/// and span only: the parser's own rendering quotes the source line, which could hold
/// a CHAP secret.
pub(crate) fn parse<'s>(src: &'s SourceFile, d: &mut Diags) -> Option<Spanned<DeTable<'s>>> {
    match DeTable::parse(&src.text) {
        Ok(doc) => Some(doc),
        Err(e) => {
            let at = e
                .span()
                .map_or_else(|| src.whole(), |s| src.origin(s.start));
            let mut problem = format!("TOML syntax error: {}", e.message().trim_end());
            if e.message().starts_with("duplicate key") {
                // The span is the repeated key itself (never a value): safe to name.
                if let Some(key) = e.span().and_then(|s| src.text.get(s)) {
                    problem = format!("TOML syntax error: key `{key}` is defined twice");
                }
            }
            d.error(
                &at,
                "",
                problem,
                "fix the TOML syntax at this position (see https://toml.io)",
            );
            None
        }
    }
}

/// The model files under `path`: the file itself, or for a directory every `*.toml`
/// file below it (recursively, symbolic links followed), skipping hidden files and
/// directories and editor backups, sorted by path (component by component).
pub(crate) fn discover(path: &Path, d: &mut Diags) -> Vec<PathBuf> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            d.error(
                &whole_file(path),
                "",
                format!("cannot read the model: {e}"),
                "give the path of a model file or of a directory of *.toml files",
            );
            return Vec::new();
        }
    };
    if !meta.is_dir() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(path)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !is_skipped_name(&e.file_name().to_string_lossy()));
    for entry in walker {
        match entry {
            Ok(e) => {
                let name = e.file_name().to_string_lossy();
                if e.file_type().is_file() && name.ends_with(".toml") {
                    files.push(e.into_path());
                }
            }
            Err(e) => {
                let at = whole_file(e.path().unwrap_or(path));
                d.error(
                    &at,
                    "",
                    format!("cannot read the model directory: {e}"),
                    "fix the permissions or remove the broken entry",
                );
            }
        }
    }
    files.sort();
    if files.is_empty() && !d.has_errors() {
        d.error(
            &whole_file(path),
            "",
            "the directory holds no *.toml file",
            "put the model in files ending in .toml, or give the path of a model file",
        );
    }
    files
}

/// Hidden files and directories (`.git`, `.#x`, `.x.swp`) and editor backups
/// (`x~`, `#x#`) are never part of a model.
pub(crate) fn is_skipped_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || (name.starts_with('#') && name.ends_with('#'))
        || name.ends_with(".swp")
        || name.ends_with(".swo")
}

/// Read every file; unreadable ones become diagnostics.
pub(crate) fn read_all(paths: Vec<PathBuf>, d: &mut Diags) -> Vec<SourceFile> {
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => out.push(SourceFile::new(path, text)),
                Err(_) => d.error(
                    &whole_file(&path),
                    "",
                    "the file is not valid UTF-8",
                    "save the model as UTF-8 text",
                ),
            },
            Err(e) => d.error(
                &whole_file(&path),
                "",
                format!("cannot read the file: {e}"),
                "fix the path or the file's permissions",
            ),
        }
    }
    out
}

/// `path` with `.` components, repeated and trailing slashes removed, and `..` applied
/// to the components before it: two spellings of one path compare equal.
pub(crate) fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let s = SourceFile::new("a.toml".into(), "ab\ncdé\n\nx".into());
        let at = |o| {
            let o = s.origin(o);
            (o.line, o.column)
        };
        assert_eq!(at(0), (1, 1));
        assert_eq!(at(1), (1, 2));
        assert_eq!(at(3), (2, 1));
        assert_eq!(at(7), (2, 4)); // after the two-byte é: column counts characters
        assert_eq!(at(9), (4, 1));
        assert_eq!(at(10_000), (4, 2));
    }

    #[test]
    fn skips_hidden_files_and_backups() {
        for n in [
            ".#a.toml",
            "a.toml~",
            "#a.toml#",
            ".a.toml.swp",
            ".git",
            ".hidden.toml",
        ] {
            assert!(is_skipped_name(n), "{n}");
        }
        for n in ["a.toml", "00-common.toml", "target#1.toml"] {
            assert!(!is_skipped_name(n), "{n}");
        }
    }

    #[test]
    fn directory_files_in_lexical_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("b")).unwrap();
        std::fs::create_dir_all(p.join(".git")).unwrap();
        for f in [
            "b/x.toml",
            "a.toml",
            "b-c.toml",
            "a.toml~",
            "#a.toml#",
            ".#b.toml",
            ".git/c.toml",
            "notes.txt",
        ] {
            std::fs::write(p.join(f), "").unwrap();
        }
        let mut d = Diags::new();
        let files = discover(p, &mut d);
        let rel: Vec<_> = files
            .iter()
            .map(|f| f.strip_prefix(p).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(rel, ["a.toml", "b/x.toml", "b-c.toml"]);
        assert!(!d.has_errors());
    }

    #[test]
    fn empty_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Diags::new();
        assert!(discover(dir.path(), &mut d).is_empty());
        assert!(d.has_errors());
    }

    #[test]
    fn syntax_error_never_quotes_the_source() {
        let s = SourceFile::new(
            "a.toml".into(),
            "[auth.a]\nsecret = \"verysecret12345\nuser = 1\n".into(),
        );
        let mut d = Diags::new();
        assert!(parse(&s, &mut d).is_none());
        let all = d.into_sorted();
        assert_eq!(all.len(), 1);
        assert!(!all[0].to_string().contains("verysecret"), "{}", all[0]);
        assert_eq!(all[0].line, 2);
    }

    #[test]
    fn lexical_normalisation() {
        assert_eq!(
            normalize_lexically(Path::new("/srv//iscsi/./a/../b.img")),
            PathBuf::from("/srv/iscsi/b.img")
        );
    }
}
