//! `[target.*]`: a target's name, alias, LUN map and groups, on their own. References
//! to portals, initiator groups, auths and extents are resolved in `cross.rs`.

use std::collections::BTreeMap;

use toml::de::DeValue;

use crate::model::diag::Diags;
use crate::model::names::IscsiName;
use crate::model::schema::{type_name, Fields};
use crate::model::types::{AuthMethod, Origin, Target, TargetGroup};

use super::{auth_method, check_text, Basename, Entry};

/// Highest LUN id (LIO's limit: `lun_0` … `lun_16383`).
pub const MAX_LUN: u16 = 16383;
/// Longest target alias, in bytes (iSCSI text values are bounded; LIO keeps 255).
pub const MAX_ALIAS: usize = 255;

/// Positions of one group's references.
pub(crate) struct GroupAt {
    pub portal: Origin,
    pub initiator_group: Option<Origin>,
    pub auth: Option<Origin>,
    /// `auth_method`'s value, or the group's header when it is defaulted.
    pub method: Origin,
}

/// A target as far as it could be read; cross-checks look at its LUNs and groups
/// even when it has errors.
pub(crate) struct TargetDraft {
    /// The TOML key.
    pub key: String,
    /// The full name, when it is valid.
    pub name: Option<IscsiName>,
    pub alias: Option<String>,
    pub luns: BTreeMap<u16, String>,
    /// Position of each LUN's extent name.
    pub lun_at: BTreeMap<u16, Origin>,
    /// The groups without errors of their own.
    pub groups: Vec<TargetGroup>,
    /// Parallel to `groups`.
    pub groups_at: Vec<GroupAt>,
    pub origin: Origin,
    /// No error in the definition.
    pub ok: bool,
}

impl TargetDraft {
    pub fn object(&self) -> String {
        format!("target.{}", self.key)
    }

    /// The validated target (`None` if the definition had errors).
    pub fn into_target(self) -> Option<Target> {
        if !self.ok {
            return None;
        }
        Some(Target {
            key: self.key,
            name: self.name?,
            alias: self.alias,
            luns: self.luns,
            groups: self.groups,
            origin: self.origin,
        })
    }
}

/// The full iSCSI name of a target key: the key itself when it has a type prefix,
/// else `<basename>:<key>`.
fn full_name(e: &Entry<'_, '_>, basename: &Basename, d: &mut Diags) -> Option<IscsiName> {
    let object = format!("target.{}", e.name);
    let full = if IscsiName::has_type_prefix(e.name) {
        e.name.to_owned()
    } else {
        match basename {
            Basename::Valid(b) => format!("{b}:{}", e.name),
            Basename::Invalid(_) => return None, // reported at the basename
            Basename::Absent => {
                d.error(
                    &e.at,
                    &object,
                    "the name has no iqn., eui. or naa. prefix, and [global] has no `basename` to put before it",
                    format!(
                        "set basename in [global] (e.g. basename = \"iqn.2005-10.org.example.ctl\" makes this target \"iqn.2005-10.org.example.ctl:{}\"), or name the target by its full IQN",
                        e.name
                    ),
                );
                return None;
            }
        }
    };
    match IscsiName::parse(&full) {
        Ok(n) => Some(n),
        Err(err) => {
            let problem = if full == e.name {
                format!("target name: {}", err.problem)
            } else {
                format!(
                    "the target's full name {full:?} is not valid: {}",
                    err.problem
                )
            };
            d.error(&e.at, &object, problem, err.fix);
            None
        }
    }
}

pub(crate) fn target(e: &Entry<'_, '_>, basename: &Basename, d: &mut Diags) -> TargetDraft {
    let mut f = Fields::new(
        e.src,
        e.table,
        format!("target.{}", e.name),
        e.at.clone(),
        "a target",
    );
    let errors_before = d.error_count();
    let name = full_name(e, basename, d);

    let alias = f
        .string(d, "alias")
        .and_then(|a| check_text(d, &f, "alias", &a, MAX_ALIAS).then_some(a.v));

    let mut luns = BTreeMap::new();
    let mut lun_at = BTreeMap::new();
    if let Some(table) = f.table(d, "luns") {
        let mut written: BTreeMap<u16, (String, Origin)> = BTreeMap::new();
        for (k, v) in table.v.iter() {
            let key: &str = k.get_ref();
            let key_at = f.origin(k.span());
            let val_at = f.origin(v.span());
            let id = match parse_lun_id(key) {
                Ok(id) => id,
                Err(problem) => {
                    d.error(
                        &key_at,
                        &f.object,
                        problem,
                        format!("use LUN ids 0 to {MAX_LUN} as keys, e.g. luns = {{ 0 = \"lun0\", 1 = \"db\" }}"),
                    );
                    continue;
                }
            };
            if let Some((first, first_at)) = written.get(&id) {
                d.error(
                    &key_at,
                    &f.object,
                    format!(
                        "LUN id {id} is given twice (as `{first}` at {first_at} and as `{key}`)"
                    ),
                    "give every LUN of a target a different id",
                );
                continue;
            }
            written.insert(id, (key.to_owned(), key_at));
            match v.get_ref() {
                DeValue::String(s) => {
                    luns.insert(id, s.to_string());
                    lun_at.insert(id, val_at);
                }
                other => d.error(
                    &val_at,
                    &f.object,
                    format!(
                        "LUN {id} must name an extent (a string), found {}",
                        type_name(other)
                    ),
                    format!("write luns = {{ {key} = \"<extent name>\" }}"),
                ),
            }
        }
    }

    let mut groups = Vec::new();
    let mut groups_at = Vec::new();
    match f.raw("group") {
        None => d.error(
            &e.at,
            &f.object,
            "the target has no group: it is reachable through no portal",
            format!(
                "add a group: [[target.{}.group]] with portal = \"<name of a [portal.*]>\"",
                quote_key(e.name)
            ),
        ),
        Some((v, at, _)) => {
            match v.get_ref() {
                DeValue::Array(items) if items.is_empty() => d.error(
                    &at,
                    &f.object,
                    "`group` is empty: the target is reachable through no portal",
                    "add at least one group with portal = \"<name of a [portal.*]>\"",
                ),
                DeValue::Array(items) => {
                    for item in items.iter() {
                        let item_at = f.origin(item.span());
                        let DeValue::Table(t) = item.get_ref() else {
                            d.error(
                            &item_at,
                            &f.object,
                            format!("each `group` must be a table, found {}", type_name(item.get_ref())),
                            format!("write each group as [[target.{}.group]] with its keys below it", quote_key(e.name)),
                        );
                            continue;
                        };
                        let mut g =
                            Fields::new(f.src, t, f.object.clone(), item_at, "a target group");
                        if let Some((group, at)) = target_group(&mut g, d) {
                            groups.push(group);
                            groups_at.push(at);
                        }
                        g.finish(d);
                    }
                }
                other => d.error(
                    &at,
                    &f.object,
                    format!(
                        "`group` must be a list of tables, found {}",
                        type_name(other)
                    ),
                    format!(
                        "write each group as [[target.{}.group]] (double brackets)",
                        quote_key(e.name)
                    ),
                ),
            }
        }
    }
    f.finish(d);
    TargetDraft {
        key: e.name.to_owned(),
        name,
        alias,
        luns,
        lun_at,
        groups,
        groups_at,
        origin: e.at.clone(),
        ok: d.error_count() == errors_before,
    }
}

/// A key as it would be written in a table header: bare when it can be.
fn quote_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        k.to_owned()
    } else {
        format!("{k:?}")
    }
}

/// LUN ids are TOML keys, so strings: decimal digits, 0..=16383.
fn parse_lun_id(key: &str) -> Result<u16, String> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("LUN id `{key}` is not a number"));
    }
    match key.parse::<u32>() {
        Ok(n) if n <= u32::from(MAX_LUN) => Ok(n as u16),
        _ => Err(format!("LUN id {key} is above {MAX_LUN}")),
    }
}

/// One `[[target.*.group]]`, with its own keys checked; `None` without a portal.
fn target_group(g: &mut Fields<'_, '_>, d: &mut Diags) -> Option<(TargetGroup, GroupAt)> {
    let portal = g.string(d, "portal");
    if portal.is_none() && !g.has("portal") {
        g.missing(
            d,
            "portal",
            "add portal = \"<name of a [portal.*]>\" to the group",
        );
    }
    let ig = g.string(d, "initiator_group");
    let auth = g.string(d, "auth");
    let method = g.string(d, "auth_method");
    let explicit = method
        .as_ref()
        .and_then(|m| auth_method(d, g, "auth_method", m));
    let resolved = match (explicit, &auth, &method) {
        (Some(AuthMethod::None), Some(a), _) => {
            d.error(
                &a.key_at,
                &g.object,
                format!("auth_method = \"none\" but auth = {:?} is set", a.v),
                "remove `auth`, or set auth_method = \"chap\" (or \"mutual-chap\")",
            );
            None
        }
        (Some(m @ (AuthMethod::Chap | AuthMethod::MutualChap)), None, Some(mv)) => {
            d.error(
                &mv.at,
                &g.object,
                format!("auth_method = {:?} needs `auth`", m.as_str()),
                "add auth = \"<name of an [auth.*] section>\" to the group, or set auth_method = \"none\"",
            );
            None
        }
        (Some(m), _, _) => Some(m),
        (None, _, Some(_)) => None, // invalid value, reported
        (None, Some(_), None) => Some(AuthMethod::Chap),
        (None, None, None) => Some(AuthMethod::None),
    };
    let chap_optional = match g.string(d, "chap") {
        Some(c) if c.v == "optional" || c.v == "required" => {
            if resolved == Some(AuthMethod::None) {
                d.error(
                    &c.at,
                    &g.object,
                    format!(
                        "chap = {:?} but the group has no CHAP (auth_method = \"none\", no `auth`)",
                        c.v
                    ),
                    "remove `chap`, or give the group auth = \"<name of an [auth.*] section>\"",
                );
            }
            c.v == "optional"
        }
        Some(c) => {
            d.error(
                &c.at,
                &g.object,
                format!("chap = {:?} is not a CHAP policy", c.v),
                "use chap = \"required\" (the default) or chap = \"optional\"",
            );
            false
        }
        None => false,
    };
    // A group with errors is still returned (its target is invalid anyway: the errors
    // are counted), so that its references are checked too.
    let portal = portal?;
    let at = GroupAt {
        portal: portal.at.clone(),
        initiator_group: ig.as_ref().map(|v| v.at.clone()),
        auth: auth.as_ref().map(|v| v.at.clone()),
        method: method
            .as_ref()
            .map_or_else(|| g.at.clone(), |m| m.at.clone()),
    };
    Some((
        TargetGroup {
            portal: portal.v,
            initiator_group: ig.map(|v| v.v),
            auth: auth.map(|v| v.v),
            auth_method: resolved.unwrap_or_default(),
            chap_optional,
            origin: g.at.clone(),
        },
        at,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_ids() {
        assert_eq!(parse_lun_id("0"), Ok(0));
        assert_eq!(parse_lun_id("16383"), Ok(16383));
        assert_eq!(parse_lun_id("00"), Ok(0));
        assert!(parse_lun_id("16384").is_err());
        assert!(parse_lun_id("-1").is_err());
        assert!(parse_lun_id("a").is_err());
        assert!(parse_lun_id("99999999999").is_err());
    }
}
