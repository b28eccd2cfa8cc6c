//! Byte-exact dumps of the VM's configfs tree (`vmtool dump`, statistics excluded) and
//! their differences: "nothing else changed" in a test means an empty [`TreeDiff`].
//!
//! Dump lines: `D <path>`, `L <path> -> <target>` (resolved, relative to the root),
//! `F <mode> <path> = "<escaped bytes>"`, `F <mode> <path> ! <ERRNO>` (unreadable, e.g. the
//! 0200 `control` files).

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{anyhow, bail, Context, Result};

use super::vm::Vm;
use super::CONFIGFS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir,
    Link(String),
    File { mode: u32, value: FileValue },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileValue {
    Bytes(Vec<u8>),
    Error(String),
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Dir => write!(f, "directory"),
            Entry::Link(t) => write!(f, "-> {t}"),
            Entry::File {
                mode,
                value: FileValue::Bytes(b),
            } => write!(f, "{mode:04o} {:?}", String::from_utf8_lossy(b)),
            Entry::File {
                mode,
                value: FileValue::Error(e),
            } => write!(f, "{mode:04o} ! {e}"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeDump {
    pub entries: BTreeMap<String, Entry>,
}

impl TreeDump {
    pub fn parse(text: &str) -> Result<TreeDump> {
        let mut entries = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let bad = || anyhow!("dump line {}: cannot parse {line:?}", n + 1);
            let (kind, rest) = line.split_once(' ').ok_or_else(bad)?;
            match kind {
                "D" => {
                    let path = rest.split(" ! ").next().unwrap_or(rest);
                    entries.insert(path.to_string(), Entry::Dir);
                }
                "L" => {
                    let (path, target) = rest.split_once(" -> ").ok_or_else(bad)?;
                    entries.insert(path.to_string(), Entry::Link(target.to_string()));
                }
                "F" => {
                    let (mode, rest) = rest.split_once(' ').ok_or_else(bad)?;
                    let mode = u32::from_str_radix(mode, 8).map_err(|_| bad())?;
                    let (path, value) = if let Some((p, v)) = rest.split_once(" = \"") {
                        let v = v.strip_suffix('"').ok_or_else(bad)?;
                        (p, FileValue::Bytes(unescape(v).with_context(bad)?))
                    } else if let Some((p, e)) = rest.split_once(" ! ") {
                        (p, FileValue::Error(e.to_string()))
                    } else {
                        return Err(bad());
                    };
                    entries.insert(path.to_string(), Entry::File { mode, value });
                }
                _ => return Err(bad()),
            }
        }
        Ok(TreeDump { entries })
    }

    pub fn is_dir(&self, path: &str) -> bool {
        matches!(self.entries.get(path), Some(Entry::Dir))
    }

    pub fn link(&self, path: &str) -> Option<&str> {
        match self.entries.get(path) {
            Some(Entry::Link(t)) => Some(t),
            _ => None,
        }
    }

    /// A file's content as text (lossy), or `None` if absent/unreadable.
    pub fn value(&self, path: &str) -> Option<String> {
        match self.entries.get(path) {
            Some(Entry::File {
                value: FileValue::Bytes(b),
                ..
            }) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// A file's content with surrounding whitespace trimmed; panics if absent (test use).
    pub fn attr(&self, path: &str) -> String {
        self.value(path)
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("configfs file {path} is missing or unreadable"))
    }

    /// Names of the direct children of `dir` (directories, links and files).
    pub fn children(&self, dir: &str) -> Vec<String> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.entries
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(str::to_string)
            .collect()
    }

    /// Links found directly inside `dir`.
    pub fn links_in(&self, dir: &str) -> Vec<(String, String)> {
        self.children(dir)
            .into_iter()
            .filter_map(|c| {
                let p = format!("{dir}/{c}");
                self.link(&p).map(|t| (c, t.to_string()))
            })
            .collect()
    }

    /// True for files that show live sessions rather than configuration: an ACL's `info`
    /// and negotiated `param/*`, a TPG's `dynamic_sessions`. They change when an initiator
    /// logs in or out, whatever isctl does, so [`TreeDump::diff`] leaves them out.
    pub fn is_session_state(path: &str) -> bool {
        let mut parts = path.rsplit('/');
        let (Some(last), Some(parent)) = (parts.next(), parts.next()) else {
            return false;
        };
        let grandparent = parts.next().unwrap_or_default();
        let in_acl = |dir: &str| path.contains("/acls/") && !dir.starts_with("lun_");
        last == "dynamic_sessions"
            || (last == "info" && path.contains("/acls/") && in_acl(parent))
            || (parent == "param" && path.contains("/acls/") && in_acl(grandparent))
    }

    /// Differences in configuration (session state excluded: [`TreeDump::is_session_state`]).
    pub fn diff(&self, after: &TreeDump) -> TreeDiff {
        let full = self.diff_all(after);
        full.without(TreeDump::is_session_state)
    }

    /// Every difference, session state included.
    pub fn diff_all(&self, after: &TreeDump) -> TreeDiff {
        let mut diff = TreeDiff::default();
        for (path, before) in &self.entries {
            match after.entries.get(path) {
                None => diff.removed.push((path.clone(), before.clone())),
                Some(a) if a != before => {
                    diff.changed.push((path.clone(), before.clone(), a.clone()))
                }
                _ => {}
            }
        }
        for (path, a) in &after.entries {
            if !self.entries.contains_key(path) {
                diff.added.push((path.clone(), a.clone()));
            }
        }
        diff
    }
}

#[derive(Debug, Clone, Default)]
pub struct TreeDiff {
    pub added: Vec<(String, Entry)>,
    pub removed: Vec<(String, Entry)>,
    pub changed: Vec<(String, Entry, Entry)>,
}

impl TreeDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// The same diff without entries whose path matches `ignore` (e.g. everything under
    /// an object the test deliberately changed).
    pub fn without(&self, ignore: impl Fn(&str) -> bool) -> TreeDiff {
        TreeDiff {
            added: self
                .added
                .iter()
                .filter(|e| !ignore(&e.0))
                .cloned()
                .collect(),
            removed: self
                .removed
                .iter()
                .filter(|e| !ignore(&e.0))
                .cloned()
                .collect(),
            changed: self
                .changed
                .iter()
                .filter(|e| !ignore(&e.0))
                .cloned()
                .collect(),
        }
    }
}

impl fmt::Display for TreeDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "(no differences)");
        }
        for (p, e) in &self.added {
            writeln!(f, "+ {p}  {e}")?;
        }
        for (p, e) in &self.removed {
            writeln!(f, "- {p}  {e}")?;
        }
        for (p, b, a) in &self.changed {
            writeln!(f, "~ {p}  {b}  =>  {a}")?;
        }
        Ok(())
    }
}

/// Dumps the VM's configfs tree (statistics excluded).
pub fn dump(vm: &mut Vm) -> TreeDump {
    let out = vm.sh(&format!("vmtool dump {CONFIGFS}"));
    TreeDump::parse(&out.stdout).unwrap_or_else(|e| panic!("parsing the tree dump: {e:#}"))
}

pub fn unescape(inner: &str) -> Result<Vec<u8>> {
    let bytes = inner.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let esc = *bytes.get(i + 1).ok_or_else(|| anyhow!("dangling \\"))?;
        i += 2;
        match esc {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'0' => out.push(0),
            b'\\' => out.push(b'\\'),
            b'"' => out.push(b'"'),
            b'x' => {
                let hex = inner.get(i..i + 2).ok_or_else(|| anyhow!("short \\x"))?;
                out.push(u8::from_str_radix(hex, 16)?);
                i += 2;
            }
            other => bail!("unknown escape \\{}", other as char),
        }
    }
    Ok(out)
}
