//! From merged TOML tables to a validated [`Model`]: one builder per kind of object
//! (its own keys and values), then the rules that span objects (references, unique
//! tags, addresses, backing paths, extents shared between targets).
//!
//! Every builder reports into the same [`Diags`] and keeps going, so one run shows
//! every problem of a model. An object whose own definition is broken is left out of
//! the model, but its name still counts as defined, so that references to it do not
//! add a second, misleading error.

mod auth;
mod collect;
mod cross;
pub(crate) mod extent;
mod objects;
mod target;

use std::collections::{BTreeMap, BTreeSet};

use toml::de::DeTable;
use toml::Spanned;

use super::diag::Diags;
use super::load::SourceFile;
use super::names::IscsiName;
use super::schema::{Fields, Val};
use super::suggest::closest;
use super::types::{AuthMethod, Model, Origin};

pub(crate) use collect::Entry;

/// Longest object name (portal, initiator group, auth, extent), in characters.
pub const MAX_OBJECT_NAME: usize = 64;

/// Build and validate the model of these parsed files.
pub(crate) fn build(docs: &[(&SourceFile, Spanned<DeTable<'_>>)], d: &mut Diags) -> Model {
    let all = collect::collect(docs, d);
    let defined = Defined {
        portals: names(&all.portals, "portal", d),
        initiator_groups: names(&all.initiator_groups, "initiator_group", d),
        auths: names(&all.auths, "auth", d),
        extents: names(&all.extents, "extent", d),
    };

    let (global, basename) = objects::global(all.global.as_ref(), d);
    let mut portals: Vec<_> = all.portals.iter().map(|e| objects::portal(e, d)).collect();
    let mut model = Model {
        global,
        ..Model::default()
    };
    for e in &all.initiator_groups {
        if let Some(g) = objects::initiator_group(e, d) {
            model.initiator_groups.insert(g.name.clone(), g);
        }
    }
    for e in &all.auths {
        if let Some(a) = auth::auth(e, d) {
            model.auths.insert(a.name.clone(), a);
        }
    }
    let extents: Vec<_> = all
        .extents
        .iter()
        .map(|e| extent::extent(e, basename.value(), d))
        .collect();
    let targets: Vec<_> = all
        .targets
        .iter()
        .map(|e| target::target(e, &basename, d))
        .collect();

    cross::portals(&mut portals, &model.auths, &defined, d);
    cross::backing_paths(&extents, d);
    cross::targets(&targets, &model.auths, &defined, d);
    cross::lun_mappings(&targets, &extents, &defined, d);

    model.portals = portals
        .into_iter()
        .filter(|p| p.ok)
        .map(|p| (p.pg.name.clone(), p.pg))
        .collect();
    model.extents = extents
        .into_iter()
        .filter_map(|x| x.extent)
        .map(|x| (x.name.clone(), x))
        .collect();
    // Two keys can make one full name ("t0" with a basename, and the full IQN).
    let mut by_name: BTreeMap<IscsiName, (String, Origin)> = BTreeMap::new();
    let mut order: Vec<_> = targets.into_iter().collect();
    order.sort_by(|a, b| a.origin.cmp(&b.origin));
    for t in order {
        if let Some(name) = &t.name {
            if let Some((key, at)) = by_name.get(name) {
                d.error(
                    &t.origin,
                    &t.object(),
                    format!(
                        "target name {:?} is also the name of target {key:?} ({at})",
                        name.as_str()
                    ),
                    "give every target a different name",
                );
                continue;
            }
            by_name.insert(name.clone(), (t.key.clone(), t.origin.clone()));
        }
        if let Some(target) = t.into_target() {
            model.targets.insert(target.name.clone(), target);
        }
    }
    model
}

/// The names defined for each kind (valid or not), for resolving references.
pub(crate) struct Defined {
    pub portals: BTreeSet<String>,
    pub initiator_groups: BTreeSet<String>,
    pub auths: BTreeSet<String>,
    pub extents: BTreeSet<String>,
}

/// Check the syntax of each object name and return them all.
fn names(entries: &[Entry<'_, '_>], kind: &str, d: &mut Diags) -> BTreeSet<String> {
    for e in entries {
        if let Err((problem, fix)) = check_object_name(e.name) {
            d.error(&e.at, &format!("{kind}.{}", e.name), problem, fix);
        }
    }
    entries.iter().map(|e| e.name.to_owned()).collect()
}

/// Object names: letters, digits, `-`, `_`, `.`, 1 to 64 characters. They become
/// directory names on LIO (backstores) and appear in commands.
pub fn check_object_name(name: &str) -> Result<(), (String, String)> {
    if name.is_empty() {
        return Err(("the name is empty".into(), "give the object a name".into()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        let suggestion: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        return Err((
            format!(
                "the name contains {c:?}; names may contain only letters, digits, '-', '_' and '.'"
            ),
            format!("rename it, e.g. {suggestion:?}"),
        ));
    }
    let n = name.chars().count();
    if n > MAX_OBJECT_NAME {
        return Err((
            format!("the name is {n} characters long; the limit is {MAX_OBJECT_NAME}"),
            "use a shorter name".into(),
        ));
    }
    Ok(())
}

/// Basename of `[global]`, as far as targets named without a prefix are concerned.
pub(crate) enum Basename {
    Absent,
    /// Given but invalid (already reported): targets that need it are not checked.
    Invalid(String),
    Valid(String),
}

impl Basename {
    pub fn value(&self) -> Option<&str> {
        match self {
            Basename::Absent => None,
            Basename::Invalid(s) | Basename::Valid(s) => Some(s),
        }
    }
}

/// A value that must be one of a few words; reports the error (with a suggestion).
pub(crate) fn one_of<'w>(
    d: &mut Diags,
    f: &Fields<'_, '_>,
    key: &str,
    val: &Val<String>,
    allowed: &[&'w str],
) -> Option<&'w str> {
    if let Some(w) = allowed.iter().find(|w| **w == val.v) {
        return Some(w);
    }
    let list = allowed.join(", ");
    let problem = match closest(&val.v, allowed.iter().copied()) {
        Some(near) => format!(
            "`{key}` = {:?} is not one of {list}; did you mean {near:?}?",
            val.v
        ),
        None => format!("`{key}` = {:?} is not one of {list}", val.v),
    };
    d.error(&val.at, &f.object, problem, format!("use one of: {list}"));
    None
}

/// `none | chap | mutual-chap`.
pub(crate) fn auth_method(
    d: &mut Diags,
    f: &Fields<'_, '_>,
    key: &str,
    val: &Val<String>,
) -> Option<AuthMethod> {
    match one_of(d, f, key, val, &["none", "chap", "mutual-chap"])? {
        "none" => Some(AuthMethod::None),
        "chap" => Some(AuthMethod::Chap),
        _ => Some(AuthMethod::MutualChap),
    }
}

/// A free-text value (user, alias, comment) must not hold control characters: they
/// would corrupt a configfs write or an iSCSI text key.
pub(crate) fn check_text(
    d: &mut Diags,
    f: &Fields<'_, '_>,
    key: &str,
    val: &Val<String>,
    max_bytes: usize,
) -> bool {
    if val.v.chars().any(char::is_control) {
        d.error(
            &val.at,
            &f.object,
            format!("`{key}` contains a control character (a line break or tab, say)"),
            format!("write `{key}` on one line, without control characters"),
        );
        return false;
    }
    if val.v.len() > max_bytes {
        d.error(
            &val.at,
            &f.object,
            format!(
                "`{key}` is {} bytes long; the limit is {max_bytes}",
                val.v.len()
            ),
            format!("shorten `{key}`"),
        );
        return false;
    }
    true
}

/// Report a reference to an object that is not defined; true when it resolves.
pub(crate) fn resolve(
    d: &mut Diags,
    object: &str,
    at: &Origin,
    kind: &str,
    name: &str,
    defined: &BTreeSet<String>,
) -> bool {
    if defined.contains(name) {
        return true;
    }
    let what = match kind {
        "portal" => "portal group",
        "initiator_group" => "initiator group",
        "auth" => "auth",
        _ => kind,
    };
    let problem = match closest(name, defined.iter().map(String::as_str)) {
        Some(near) => format!("{what} {name:?} is not defined; did you mean {near:?}?"),
        None => format!("{what} {name:?} is not defined"),
    };
    let fix = if defined.is_empty() {
        format!("define it: [{kind}.{name}]")
    } else {
        // A large model must not turn one message into a page: name a few.
        const SHOWN: usize = 8;
        let list: Vec<&str> = defined.iter().take(SHOWN).map(String::as_str).collect();
        let more = match defined.len().saturating_sub(SHOWN) {
            0 => String::new(),
            n => format!(", … ({n} more)"),
        };
        format!(
            "define [{kind}.{name}] or use a defined one: {}{more}",
            list.join(", ")
        )
    };
    d.error(at, object, problem, fix);
    false
}

pub(crate) use extent::derived_serial;
