//! Importers: another iSCSI target's configuration → an isctl [`Model`], and a
//! precise list of everything that model cannot express.
//!
//! Owns: one pure parser per source format (`tgt`: tgt-admin's `targets.conf`;
//! `ctld`: FreeBSD ctld's `ctl.conf`; `truenas`: TrueNAS middleware query outputs;
//! `freenas`: FreeNAS v1 REST responses, translated to the TrueNAS shape), the
//! deterministic naming of the objects they create, and the [`Finding`]s they report.
//! Does not: write files, render TOML (the CLI renders the returned [`Model`] with
//! [`crate::model::render::render_toml`]) or touch any backend. The only I/O is
//! reading the input file and the files it includes.
//!
//! In: a path. Out: [`Imported`] (a model, problems, notes) or an [`ImportError`]
//! (an input that cannot be read or parsed), naming file and line and a fix.
//!
//! Like `isctl export`, an import is lossless or loud: a source setting the model
//! cannot carry is a [`Finding`] in `problems` (the CLI then exits 4); `notes` are
//! things worth knowing that lose nothing (a name lowered to lower case).
pub mod ctld;
pub mod freenas;
pub mod tgt;
pub mod truenas;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::model::{check_object_name, limits, Model, Origin, PortalGroup};

/// Something found in the source, at a place in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// `file:line` of the source setting.
    pub at: String,
    /// The source object (`target "iqn..."`, `lun 1`, `global`).
    pub object: String,
    pub problem: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.at.is_empty() {
            write!(f, "{}: ", self.at)?;
        }
        write!(f, "{}: {}", self.object, self.problem)
    }
}

/// The result of an import.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    pub model: Model,
    /// Source settings the model cannot express (exit 4).
    pub problems: Vec<Finding>,
    /// Worth knowing, nothing lost.
    pub notes: Vec<Finding>,
}

/// An input that cannot be imported at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: {source}\n  fix: {fix}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
        fix: String,
    },
    #[error("{at}: error: {problem}\n  fix: {fix}")]
    Syntax {
        at: String,
        problem: String,
        fix: String,
    },
}

pub(crate) fn read(path: &Path, what: &str) -> Result<String, ImportError> {
    std::fs::read_to_string(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
        fix: format!("give the path of a readable {what}"),
    })
}

pub(crate) fn syntax(
    at: impl Into<String>,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ImportError {
    ImportError::Syntax {
        at: at.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Collects findings.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub problems: Vec<Finding>,
    pub notes: Vec<Finding>,
}

impl Report {
    pub fn problem(&mut self, at: &str, object: &str, problem: impl Into<String>) {
        self.problems.push(Finding {
            at: at.to_string(),
            object: object.to_string(),
            problem: problem.into(),
        });
    }
    /// Findings in file and line order (stable: one line's findings keep their order).
    pub fn sorted(mut self) -> (Vec<Finding>, Vec<Finding>) {
        let key = |f: &Finding| -> (String, u64) {
            match f.at.rsplit_once(':') {
                Some((file, line)) => (file.to_string(), line.parse().unwrap_or(0)),
                None => (f.at.clone(), 0),
            }
        };
        self.problems.sort_by_key(key);
        self.notes.sort_by_key(key);
        (self.problems, self.notes)
    }
    pub fn note(&mut self, at: &str, object: &str, note: impl Into<String>) {
        self.notes.push(Finding {
            at: at.to_string(),
            object: object.to_string(),
            problem: note.into(),
        });
    }
}

/// A valid object name made from `raw`: characters outside `A-Za-z0-9-_.` become
/// `-`, runs of `-` and leading/trailing `-` are dropped, at most 64 characters.
pub(crate) fn object_name(raw: &str) -> String {
    let mut s = String::new();
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '_' | '.') {
            c
        } else {
            '-'
        };
        if c == '-' && (s.is_empty() || s.ends_with('-')) {
            continue;
        }
        s.push(c);
    }
    while s.ends_with('-') {
        s.pop();
    }
    if s.is_empty() {
        s.push('x');
    }
    if s.len() > limits::MAX_OBJECT_NAME {
        // Keep the end (the distinctive part of a path), stay deterministic.
        s = s[s.len() - limits::MAX_OBJECT_NAME..]
            .trim_start_matches('-')
            .to_string();
    }
    debug_assert!(check_object_name(&s).is_ok(), "{s}");
    s
}

/// `base`, or `base-2`, `base-3`, ... : the first not in `taken`.
pub(crate) fn unique<V>(taken: &BTreeMap<String, V>, base: &str) -> String {
    if !taken.contains_key(base) {
        return base.to_string();
    }
    (2..)
        .map(|n| {
            let suffix = format!("-{n}");
            let keep = limits::MAX_OBJECT_NAME.saturating_sub(suffix.len());
            format!("{}{suffix}", &base[..base.len().min(keep)])
        })
        .find(|n| !taken.contains_key(n))
        .expect("some suffix is free")
}

/// Where an object was found, as an [`Origin`] (column 1).
pub(crate) fn origin(file: &Path, line: u32) -> Origin {
    Origin {
        file: file.to_path_buf(),
        line,
        column: 1,
    }
}

/// The model split for a directory layout (`config/gitops/`): `("00-common", …)` with
/// the portal groups, initiator groups, auths and the extents several targets map,
/// then one `(file stem, …)` per target with the target and the extents only it maps.
/// Stems are the part of the target name after its last `:`, made a valid object name
/// and unique. Loaded together, the parts are the whole model again.
pub fn split(m: &Model) -> Vec<(String, Model)> {
    let mut users: BTreeMap<&str, usize> = BTreeMap::new();
    for t in m.targets.values() {
        for e in t.luns.values().collect::<std::collections::BTreeSet<_>>() {
            *users.entry(e.as_str()).or_default() += 1;
        }
    }
    let common = Model {
        global: m.global.clone(),
        portals: m.portals.clone(),
        initiator_groups: m.initiator_groups.clone(),
        auths: m.auths.clone(),
        extents: m
            .extents
            .iter()
            .filter(|(n, _)| users.get(n.as_str()).copied().unwrap_or(0) != 1)
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect(),
        targets: BTreeMap::new(),
    };
    let mut stems: BTreeMap<String, ()> = BTreeMap::new();
    stems.insert("00-common".into(), ());
    let mut out = vec![("00-common".to_string(), common)];
    for (name, t) in &m.targets {
        let stem = unique(
            &stems,
            &object_name(t.key.rsplit(':').next().unwrap_or(&t.key)),
        );
        stems.insert(stem.clone(), ());
        let mut part = Model::default();
        for e in t.luns.values() {
            if users.get(e.as_str()) == Some(&1) {
                if let Some(x) = m.extents.get(e) {
                    part.extents.insert(e.clone(), x.clone());
                }
            }
        }
        part.targets.insert(name.clone(), t.clone());
        out.push((stem, part));
    }
    out
}

/// Where objects with an `"id"` start in a JSON document of query outputs: (section,
/// id) → line, `section` being the top-level key holding the list (`""` when the
/// document is the list itself). Only ids of the list's own objects count.
pub(crate) fn json_id_lines(text: &str) -> BTreeMap<(String, i64), u32> {
    let mut out = BTreeMap::new();
    let b = text.as_bytes();
    let (mut i, mut line, mut depth) = (0usize, 1u32, 0usize);
    let mut top_object = None::<bool>;
    let mut section = String::new();
    while i < b.len() {
        match b[i] {
            b'\n' => line += 1,
            b'{' | b'[' => {
                if top_object.is_none() {
                    top_object = Some(b[i] == b'{');
                }
                depth += 1;
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                let key = &text[start..i.min(text.len())];
                let mut j = i + 1;
                while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                    j += 1;
                }
                if j < b.len() && b[j] == b':' {
                    let object_depth = if top_object == Some(true) { 3 } else { 2 };
                    if depth == 1 && top_object == Some(true) {
                        section = key.to_string();
                    } else if key == "id" && depth == object_depth {
                        let rest = text[j + 1..].trim_start();
                        let n: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_digit() || *c == '-')
                            .collect();
                        if let Ok(id) = n.parse::<i64>() {
                            out.entry((section.clone(), id)).or_insert(line);
                        }
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// A portal group listening on `listen`, tag `tag`, no discovery authentication.
pub(crate) fn portal(name: &str, tag: u16, listen: Vec<SocketAddr>, at: Origin) -> PortalGroup {
    PortalGroup {
        name: name.to_string(),
        tag,
        listen,
        discovery_auth: crate::model::AuthMethod::None,
        discovery_auth_group: None,
        comment: String::new(),
        origin: at,
    }
}

/// Why a CHAP secret cannot go into the model as it is, if it cannot.
pub(crate) fn secret_problem(secret: &str) -> Option<String> {
    let n = secret.chars().count();
    if !limits::SECRET_LEN.contains(&n) {
        return Some(format!(
            "the CHAP secret is {n} characters long; the model takes {} to {} (set a new secret on the initiators and in the secret file or variable)",
            limits::SECRET_LEN.start(),
            limits::SECRET_LEN.end()
        ));
    }
    if secret.chars().any(char::is_control) {
        return Some("the CHAP secret contains control characters; the model refuses them".into());
    }
    None
}

/// Why a T10 serial cannot go into the model as it is, if it cannot.
pub(crate) fn serial_problem(serial: &str) -> Option<String> {
    if serial.is_empty() || serial.len() > limits::MAX_SERIAL {
        return Some(format!(
            "serial {serial:?} is {} bytes; the model takes 1 to {}",
            serial.len(),
            limits::MAX_SERIAL
        ));
    }
    if !serial.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(format!(
            "serial {serial:?} has spaces or non-printable characters; the model takes printable ASCII without spaces"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_valid_and_deterministic() {
        assert_eq!(object_name("/dev/LVM/somedevice"), "dev-LVM-somedevice");
        assert_eq!(object_name("/srv/iscsi/a b.img"), "srv-iscsi-a-b.img");
        assert_eq!(object_name("///"), "x");
        let long = format!("/{}", "a/".repeat(60));
        let n = object_name(&long);
        assert!(n.len() <= 64 && check_object_name(&n).is_ok());
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), ());
        assert_eq!(unique(&m, "a"), "a-2");
        assert_eq!(unique(&m, "b"), "b");
    }

    #[test]
    fn split_puts_shared_extents_in_the_common_file() {
        let text = r#"
[portal.default]
listen = ["[::]:3260"]
[extent.a]
type = "ramdisk"
size = "1MiB"
[extent.s]
type = "ramdisk"
size = "1MiB"
shared = true
[target."iqn.2024-01.com.example:x"]
luns = { 0 = "a", 1 = "s" }
[[target."iqn.2024-01.com.example:x".group]]
portal = "default"
[target."iqn.2024-01.com.example:y"]
luns = { 0 = "s" }
[[target."iqn.2024-01.com.example:y".group]]
portal = "default"
"#;
        let m = crate::model::load_str("m.toml", text).unwrap().model;
        let parts = split(&m);
        let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["00-common", "x", "y"]);
        assert_eq!(parts[0].1.extents.keys().collect::<Vec<_>>(), ["s"]);
        assert_eq!(parts[1].1.extents.keys().collect::<Vec<_>>(), ["a"]);
        assert!(parts[2].1.extents.is_empty());
        assert_eq!(parts[0].1.portals.len(), 1);
    }

    #[test]
    fn json_ids_are_located() {
        let list = "[\n {\"id\": 1,\n  \"x\": {\"id\": 9}},\n {\n  \"id\": 2}\n]";
        let l = json_id_lines(list);
        assert_eq!(l.get(&(String::new(), 1)), Some(&2));
        assert_eq!(l.get(&(String::new(), 2)), Some(&5));
        assert_eq!(l.get(&(String::new(), 9)), None);
        let obj = "{\"a.q\": [\n {\"id\": 3}],\n \"b.q\": [\n\n {\"id\": 3}]}";
        let l = json_id_lines(obj);
        assert_eq!(l.get(&("a.q".to_string(), 3)), Some(&2));
        assert_eq!(l.get(&("b.q".to_string(), 3)), Some(&5));
    }

    #[test]
    fn secrets_and_serials_are_checked_as_the_model_does() {
        assert!(secret_problem("secretpass12").is_none());
        assert!(secret_problem("short").unwrap().contains("5 characters"));
        assert!(serial_problem("beaf11").is_none());
        assert!(serial_problem("a b").is_some());
    }
}
