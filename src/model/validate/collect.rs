//! Merging the files of a model: every object, by kind and name, with the file and
//! position it was defined at. The same object in two files, and `[global]` in two
//! files, are errors naming both places.

use std::collections::BTreeMap;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::model::diag::Diags;
use crate::model::load::SourceFile;
use crate::model::schema::type_name;
use crate::model::suggest::closest;
use crate::model::types::Origin;

/// One object definition: `[extent.lun0]` in some file.
pub(crate) struct Entry<'a, 'i> {
    pub src: &'a SourceFile,
    /// The name as written (the TOML key).
    pub name: &'a str,
    /// Where the name is written.
    pub at: Origin,
    pub table: &'a DeTable<'i>,
}

/// Every object of the model, merged across files, in file then name order.
#[derive(Default)]
pub(crate) struct Collected<'a, 'i> {
    pub global: Option<Entry<'a, 'i>>,
    pub portals: Vec<Entry<'a, 'i>>,
    pub initiator_groups: Vec<Entry<'a, 'i>>,
    pub auths: Vec<Entry<'a, 'i>>,
    pub extents: Vec<Entry<'a, 'i>>,
    pub targets: Vec<Entry<'a, 'i>>,
}

pub(crate) const KINDS: [&str; 6] = [
    "global",
    "portal",
    "initiator_group",
    "auth",
    "extent",
    "target",
];

/// How one object of each kind is called in messages.
fn describe(kind: &str) -> &'static str {
    match kind {
        "portal" => "portal group",
        "initiator_group" => "initiator group",
        "auth" => "CHAP credential set",
        "extent" => "extent",
        _ => "target",
    }
}

pub(crate) fn collect<'a, 'i>(
    docs: &'a [(&'a SourceFile, Spanned<DeTable<'i>>)],
    d: &mut Diags,
) -> Collected<'a, 'i> {
    let mut out = Collected::default();
    // kind → name → first definition, to report duplicates across files.
    let mut seen: BTreeMap<(&str, &str), Origin> = BTreeMap::new();
    for (src, doc) in docs {
        for (k, v) in doc.get_ref().iter() {
            let kind: &str = k.get_ref();
            let key_at = src.origin(k.span().start);
            if !KINDS.contains(&kind) {
                let problem = match closest(kind, KINDS) {
                    Some(near) => format!("unknown section `{kind}`; did you mean `{near}`?"),
                    None => format!("unknown section `{kind}`"),
                };
                d.error(
                    &key_at,
                    "",
                    problem,
                    "a model has only [global], [portal.*], [initiator_group.*], [auth.*], [extent.*] and [target.*]",
                );
                continue;
            }
            let DeValue::Table(objects) = v.get_ref() else {
                d.error(
                    &key_at,
                    "",
                    format!("`{kind}` must be a table, found {}", type_name(v.get_ref())),
                    if kind == "global" {
                        "write [global] and its keys below it".to_owned()
                    } else {
                        format!("define each {} as a [{kind}.<name>] table", describe(kind))
                    },
                );
                continue;
            };
            if kind == "global" {
                match &out.global {
                    Some(first) => d.error(
                        &key_at,
                        "global",
                        format!("[global] is also defined at {}", first.at),
                        "keep a single [global] section, in one file of the model",
                    ),
                    None => {
                        out.global = Some(Entry {
                            src,
                            name: "global",
                            at: key_at,
                            table: objects,
                        })
                    }
                }
                continue;
            }
            for (name_key, obj) in objects.iter() {
                let name: &str = name_key.get_ref();
                let at = src.origin(name_key.span().start);
                let object = format!("{kind}.{name}");
                let DeValue::Table(table) = obj.get_ref() else {
                    d.error(
                        &at,
                        "",
                        format!(
                            "`{kind}.{name}` must be a table (a {}), found {}",
                            describe(kind),
                            type_name(obj.get_ref())
                        ),
                        format!(
                            "define each {} as a table: [{kind}.<name>] with its keys below it",
                            describe(kind)
                        ),
                    );
                    continue;
                };
                if let Some(first) = seen.get(&(kind, name)) {
                    d.error(
                        &at,
                        &object,
                        format!("{} {name:?} is also defined at {first}", describe(kind)),
                        "define each object once: remove one definition or rename it",
                    );
                    continue;
                }
                seen.insert((kind, name), at.clone());
                let entry = Entry {
                    src,
                    name,
                    at,
                    table,
                };
                match kind {
                    "portal" => out.portals.push(entry),
                    "initiator_group" => out.initiator_groups.push(entry),
                    "auth" => out.auths.push(entry),
                    "extent" => out.extents.push(entry),
                    _ => out.targets.push(entry),
                }
            }
        }
    }
    out
}
