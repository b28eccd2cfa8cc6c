//! The plan for the userspace engine: the model it serves against a new model.
//!
//! Owns: [`diff_served`], which says in the plan vocabulary of the LIO path
//! ([`Change`], [`SessionCut`], [`Refusal`]) what replacing the engine's model
//! changes and which logged-in sessions that cuts or disturbs.
//! Does not: any I/O, or applying. The engine (`engine::server`) calls this for a
//! reload, a `plan` or an `apply` over its control socket, and carries the result
//! out as a whole (it opens the new configuration in full, then swaps it in).
//!
//! Why a second diff at all: the engine serves the model itself, so its "state" is
//! the model (portal groups, extents, targets with their LUN maps and access rules),
//! not LIO's configfs objects; lowering to LIO's shape would refuse what the engine
//! can do (initiator networks, per-portal discovery CHAP). What the two share is
//! everything a person and a script see: the plan type, its rendering, the refusal
//! to cut sessions and its wording ([`Plan::refuse_session_cuts`]).
//!
//! Objects: a portal group is [`ObjectId::PortalGroup`], an extent is a
//! [`ObjectId::Backstore`] (the storage object behind LUNs, as on LIO), a target is
//! [`ObjectId::Target`] whose LUN map and access groups are its attributes (the
//! engine maps LUNs per target, not per portal group).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use crate::model::{AuthMethod, Backing, Extent, Model, PortalGroup, Target};
use crate::state::{ObjectId, Session};

use super::{Action, AttrChange, Change, Plan, Refusal, SessionCut};

/// A logged-in session of the engine, as the diff needs it.
#[derive(Debug, Clone)]
pub struct ServedSession {
    /// The session as plans print it.
    pub session: Session,
    pub tsih: u16,
    /// `None`: a discovery session.
    pub target: Option<String>,
    /// The initiator's address (of its first connection).
    pub ip: IpAddr,
    /// The listening addresses its connections came in on.
    pub listen: Vec<SocketAddr>,
}

/// The plan, and which sessions applying it closes (with `force`): those whose
/// target is removed, whose listening address goes away, or whose initiator the new
/// access rules no longer admit. Sessions under a changed LUN are disturbed (listed
/// in the plan, refused without `force`) but stay logged in.
#[derive(Debug, Clone, Default)]
pub struct ServedPlan {
    pub plan: Plan,
    pub closes: BTreeSet<u16>,
}

/// What replacing the served model `old` by `new` changes, with `sessions` logged in.
pub fn diff_served(
    old: &Model,
    new: &Model,
    sessions: &[ServedSession],
    force: bool,
) -> ServedPlan {
    let mut d = Differ {
        sessions,
        out: ServedPlan::default(),
    };
    d.out.plan.force = force;
    d.out.plan.applied_as_whole = true;
    d.portal_groups(old, new);
    d.extents(old, new);
    d.targets(old, new);
    d.admissions(new);
    let mut out = d.out;
    out.plan.refuse_session_cuts();
    out.plan.refusals.extend(engine_limits(new));
    out
}

/// What a model asks for that the engine does not do: refused, never ignored
/// (a key isctl accepts takes effect or is refused, on every backend).
pub fn engine_limits(model: &Model) -> Vec<Refusal> {
    let g = &model.global;
    let mut out = Vec::new();
    if !g.isns_servers.is_empty() {
        out.push(Refusal {
            kind: "unsupported",
            object: None,
            origin: g.origin.clone(),
            problem:
                "[global] isns_servers: the userspace engine does not register with iSNS servers"
                    .into(),
            fix: "remove isns_servers (initiators then find targets by SendTargets discovery)"
                .into(),
        });
    }
    if g.alua {
        out.push(Refusal {
            kind: "unsupported",
            object: None,
            origin: g.origin.clone(),
            problem: "[global] alua = true: the userspace engine reports one target port group, always active/optimized, and has no ALUA states to manage".into(),
            fix: "set alua = false".into(),
        });
    }
    for e in model.extents.values().filter(|e| e.model_alias) {
        out.push(Refusal {
            kind: "unsupported",
            object: Some(ObjectId::Backstore { name: e.name.clone() }),
            origin: Some(e.origin.clone()),
            problem: format!("extent {:?}: model_alias = true: the userspace engine reports its own INQUIRY product identification, not the extent's name", e.name),
            fix: "remove model_alias (initiators then see the engine's product id), or use the LIO backend".into(),
        });
    }
    for t in model.targets.values() {
        for g in t.groups.iter().filter(|g| g.chap_optional) {
            out.push(Refusal {
                kind: "unsupported",
                object: Some(ObjectId::Target { target: t.key.clone() }),
                origin: Some(g.origin.clone()),
                problem: format!("target {:?}, group on portal {:?}: chap = \"optional\": the userspace engine requires CHAP whenever a group has credentials", t.key, g.portal),
                fix: "remove chap = \"optional\" (CHAP is then required), or use the LIO backend".into(),
            });
        }
    }
    out
}

struct Differ<'a> {
    sessions: &'a [ServedSession],
    out: ServedPlan,
}

/// Attribute name → rendered value, compared to make [`AttrChange`]s.
type Attrs = BTreeMap<String, String>;

fn changes_between(old: &Attrs, new: &Attrs, replace_on: &[&str]) -> Vec<AttrChange> {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter(|n| old.get(*n) != new.get(*n))
        .map(|n| AttrChange {
            name: n.clone(),
            old: old.get(n).cloned(),
            new: new.get(n).cloned(),
            sensitive: false,
            forces_replacement: replace_on.contains(&n.as_str()),
        })
        .collect()
}

fn created(attrs: &Attrs) -> Vec<AttrChange> {
    changes_between(&Attrs::new(), attrs, &[])
}

fn method(m: AuthMethod) -> &'static str {
    match m {
        AuthMethod::None => "none",
        AuthMethod::Chap => "chap",
        AuthMethod::MutualChap => "mutual_chap",
    }
}

fn portal_attrs(p: &PortalGroup) -> Attrs {
    let listen: Vec<String> = p.listen.iter().map(|a| a.to_string()).collect();
    let mut a = Attrs::new();
    a.insert("tag".into(), p.tag.to_string());
    a.insert("listen".into(), listen.join(", "));
    a.insert("discovery_auth".into(), method(p.discovery_auth).into());
    if let Some(g) = &p.discovery_auth_group {
        a.insert("discovery_auth_group".into(), g.clone());
    }
    a
}

/// Every property of an extent that the served logical unit depends on (a change of
/// any of them reopens it).
fn extent_attrs(e: &Extent) -> Attrs {
    let mut a = Attrs::new();
    match &e.backing {
        Backing::File { path, size } => {
            a.insert("type".into(), "file".into());
            a.insert("path".into(), path.display().to_string());
            if let Some(s) = size {
                a.insert("size".into(), s.to_string());
            }
        }
        Backing::Block { device } => {
            a.insert("type".into(), "block".into());
            a.insert("path".into(), device.display().to_string());
        }
        Backing::Ramdisk { size } => {
            a.insert("type".into(), "ramdisk".into());
            a.insert("size".into(), size.to_string());
        }
    }
    a.insert("blocksize".into(), e.blocksize.to_string());
    a.insert("serial".into(), e.serial.clone());
    if let Some(n) = &e.naa {
        a.insert("naa".into(), n.clone());
    }
    a.insert("readonly".into(), e.readonly.to_string());
    a.insert("rpm".into(), format!("{:?}", e.rpm));
    a.insert("write_back".into(), e.write_back.to_string());
    a.insert("shared".into(), e.shared.to_string());
    a
}

/// The LUN map as served: only LUNs whose extent exists and is enabled.
fn served_luns(model: &Model, t: &Target) -> BTreeMap<u16, String> {
    t.luns
        .iter()
        .filter(|(_, e)| model.extents.get(*e).is_some_and(|x| x.enabled))
        .map(|(l, e)| (*l, e.clone()))
        .collect()
}

fn served_extents(model: &Model) -> BTreeMap<&String, &Extent> {
    model.extents.iter().filter(|(_, e)| e.enabled).collect()
}

fn target_attrs(model: &Model, t: &Target) -> Attrs {
    let mut a = Attrs::new();
    if let Some(alias) = &t.alias {
        a.insert("alias".into(), alias.clone());
    }
    for (lun, extent) in served_luns(model, t) {
        a.insert(format!("lun {lun}"), extent);
    }
    for (i, g) in t.groups.iter().enumerate() {
        let mut v = format!("portal {}", g.portal);
        if let Some(ig) = &g.initiator_group {
            v.push_str(&format!(", initiator_group {ig}"));
        }
        if let Some(auth) = &g.auth {
            v.push_str(&format!(", auth {auth} ({})", method(g.auth_method)));
        }
        a.insert(format!("group {}", i + 1), v);
    }
    a
}

fn target_id(name: &str) -> ObjectId {
    ObjectId::Target {
        target: name.to_string(),
    }
}

impl Differ<'_> {
    fn change(&mut self, action: Action, object: ObjectId, attributes: Vec<AttrChange>) -> usize {
        self.out.plan.changes.push(Change {
            action,
            address: object.to_string(),
            object,
            attributes,
            reason: None,
            notes: Vec::new(),
        });
        self.out.plan.changes.len() - 1
    }

    /// Record that `by` cuts (`close`) or disturbs the sessions `pick` selects.
    fn affect(&mut self, by: &str, close: bool, pick: impl Fn(&ServedSession) -> bool) {
        for s in self.sessions.iter().filter(|s| pick(s)) {
            if close {
                self.out.closes.insert(s.tsih);
            }
            let already = self
                .out
                .plan
                .sessions_cut
                .iter()
                .any(|c| c.session == s.session && c.by == by);
            if !already {
                self.out.plan.sessions_cut.push(SessionCut {
                    session: s.session.clone(),
                    by: by.to_string(),
                });
            }
        }
    }

    fn portal_groups(&mut self, old: &Model, new: &Model) {
        let new_listen: BTreeSet<SocketAddr> = new
            .portals
            .values()
            .flat_map(|p| p.listen.iter().copied())
            .collect();
        let names: BTreeSet<&String> = old.portals.keys().chain(new.portals.keys()).collect();
        for name in names {
            let id = ObjectId::PortalGroup { name: name.clone() };
            let (before, after) = (old.portals.get(name), new.portals.get(name));
            let action = match (before, after) {
                (None, Some(p)) => {
                    self.change(Action::Create, id, created(&portal_attrs(p)));
                    continue;
                }
                (Some(_), None) => Action::Delete,
                (Some(a), Some(b)) if portal_attrs(a) != portal_attrs(b) => Action::Update,
                _ => continue,
            };
            let attrs = match (before, after) {
                (Some(a), Some(b)) => changes_between(&portal_attrs(a), &portal_attrs(b), &[]),
                _ => Vec::new(),
            };
            let address = id.to_string();
            self.change(action, id, attrs);
            // Only an address no portal group listens on any more closes its
            // listener (an address moved to another group keeps it).
            let gone: Vec<SocketAddr> = before
                .map(|p| p.listen.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|a| !new_listen.contains(a))
                .collect();
            if !gone.is_empty() {
                self.affect(&address, true, |s| {
                    s.listen.iter().any(|a| gone.contains(a))
                });
            }
        }
    }

    fn extents(&mut self, old: &Model, new: &Model) {
        let (before, after) = (served_extents(old), served_extents(new));
        let names: BTreeSet<&String> = before.keys().chain(after.keys()).copied().collect();
        for name in names {
            let id = ObjectId::Backstore { name: name.clone() };
            match (before.get(name), after.get(name)) {
                (None, Some(e)) => {
                    self.change(Action::Create, id, created(&extent_attrs(e)));
                }
                (Some(_), None) => {
                    let i = self.change(Action::Delete, id, Vec::new());
                    let why = if new.extents.contains_key(name) {
                        "disabled in the model; the backing file is kept"
                    } else {
                        "no longer served; the backing file is kept"
                    };
                    self.out.plan.changes[i].notes.push(why.into());
                }
                (Some(a), Some(b)) => {
                    let attrs = changes_between(&extent_attrs(a), &extent_attrs(b), &[]);
                    if attrs.is_empty() {
                        continue;
                    }
                    let attrs = attrs
                        .into_iter()
                        .map(|mut c| {
                            c.forces_replacement = true;
                            c
                        })
                        .collect();
                    let address = id.to_string();
                    let i = self.change(Action::Replace, id, attrs);
                    self.out.plan.changes[i].reason =
                        Some("the logical unit is reopened with the new definition".into());
                    // Every target that maps it sees another logical unit.
                    let users: BTreeSet<String> = old
                        .targets
                        .values()
                        .filter(|t| served_luns(old, t).values().any(|e| e == name))
                        .map(|t| t.name.as_str().to_string())
                        .collect();
                    self.affect(&format!("replace {address}"), false, |s| {
                        s.target.as_ref().is_some_and(|t| users.contains(t))
                    });
                }
                (None, None) => {}
            }
        }
    }

    fn targets(&mut self, old: &Model, new: &Model) {
        let by_name = |m: &Model| -> BTreeMap<String, Target> {
            m.targets
                .values()
                .map(|t| (t.name.as_str().to_string(), t.clone()))
                .collect()
        };
        let (before, after) = (by_name(old), by_name(new));
        let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        for name in names {
            let id = target_id(name);
            let on_target = |s: &ServedSession| s.target.as_deref() == Some(name.as_str());
            match (before.get(name), after.get(name)) {
                (None, Some(t)) => {
                    self.change(Action::Create, id, created(&target_attrs(new, t)));
                }
                (Some(_), None) => {
                    let address = id.to_string();
                    self.change(Action::Delete, id, Vec::new());
                    self.affect(&format!("delete {address}"), true, on_target);
                }
                (Some(a), Some(b)) => {
                    let attrs = changes_between(&target_attrs(old, a), &target_attrs(new, b), &[]);
                    if attrs.is_empty() {
                        continue;
                    }
                    let address = id.to_string();
                    let luns_changed: Vec<String> = attrs
                        .iter()
                        .filter(|c| c.name.starts_with("lun ") && c.old.is_some())
                        .map(|c| c.name.clone())
                        .collect();
                    self.change(Action::Update, id, attrs);
                    // A LUN removed or pointed elsewhere changes what the logged-in
                    // initiators see under a LUN they may be using.
                    for lun in luns_changed {
                        self.affect(&format!("{address} {lun}"), false, on_target);
                    }
                }
                (None, None) => {}
            }
        }
    }

    /// Sessions of targets that stay, which the new access rules no longer admit
    /// (their initiator group, its networks, or the portal group they came in through
    /// changed).
    fn admissions(&mut self, new: &Model) {
        for s in self.sessions {
            let Some(tname) = &s.target else { continue };
            let Some(t) = new.targets.values().find(|t| t.name.as_str() == tname) else {
                continue;
            };
            let admitted = t.groups.iter().any(|g| {
                new.portals
                    .get(&g.portal)
                    .is_some_and(|p| s.listen.iter().any(|a| p.listen.contains(a)))
                    && new.admits(g, &s.session.initiator, s.ip)
            });
            if !admitted {
                let by = format!(
                    "{}: {} is no longer admitted",
                    target_id(tname),
                    s.session.initiator
                );
                self.affect(&by, true, |x| x.tsih == s.tsih);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::load_str;

    const BASE: &str = r#"
[global]
basename = "iqn.2026-11.io.isctl"
[portal.p]
listen = ["127.0.0.1:3260"]
[initiator_group.hosts]
initiators = ["iqn.1994-05.com.redhat:a"]
[extent.r0]
type = "ramdisk"
size = "4MiB"
[extent.r1]
type = "ramdisk"
size = "4MiB"
[target.t]
luns = { 0 = "r0", 1 = "r1" }
[[target.t.group]]
portal = "p"
initiator_group = "hosts"
"#;

    fn model(text: &str) -> Model {
        load_str("m.toml", text).expect("valid model").model
    }

    fn session(tsih: u16, initiator: &str) -> ServedSession {
        ServedSession {
            session: Session {
                target: "iqn.2026-11.io.isctl:t".into(),
                tpg: 1,
                initiator: initiator.into(),
                tsih: Some(tsih),
                isid: Some("400001370000".into()),
                ..Session::default()
            },
            tsih,
            target: Some("iqn.2026-11.io.isctl:t".into()),
            ip: "127.0.0.1".parse().unwrap(),
            listen: vec!["127.0.0.1:3260".parse().unwrap()],
        }
    }

    #[test]
    fn refuses_isns_and_alua_instead_of_ignoring_them() {
        let m = model(BASE);
        let with = model(&BASE.replace(
            "basename = \"iqn.2026-11.io.isctl\"",
            "basename = \"iqn.2026-11.io.isctl\"\nisns_servers = [\"192.0.2.5\"]\nalua = true",
        ));
        let p = diff_served(&m, &with, &[], true);
        let kinds: Vec<&str> = p.plan.refusals.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, ["unsupported", "unsupported"]);
        assert!(
            p.plan.refusals[0].to_string().starts_with("m.toml:"),
            "{}",
            p.plan.refusals[0]
        );
        assert!(engine_limits(&m).is_empty());
    }

    #[test]
    fn refuses_lio_only_model_alias_and_optional_chap() {
        let with = model(&format!(
            "{}auth = \"a\"\nchap = \"optional\"\n[auth.a]\nuser = \"u\"\nsecret = \"initiator2Target\"\n",
            BASE.replace("size = \"4MiB\"\n[extent.r1]", "size = \"4MiB\"\nmodel_alias = true\n[extent.r1]")
        ));
        let refusals = engine_limits(&with);
        let text: Vec<String> = refusals.iter().map(|r| r.to_string()).collect();
        assert_eq!(refusals.len(), 2, "{text:#?}");
        assert!(
            text[0].contains("extent \"r0\"") && text[0].contains("model_alias"),
            "{text:#?}"
        );
        assert!(text[1].contains("chap = \"optional\""), "{text:#?}");
        assert!(refusals
            .iter()
            .all(|r| r.kind == "unsupported" && r.origin.is_some()));
    }

    #[test]
    fn the_same_model_plans_nothing() {
        let m = model(BASE);
        let p = diff_served(&m, &m, &[session(1, "iqn.1994-05.com.redhat:a")], false);
        assert!(p.plan.is_empty() && !p.plan.is_refused() && p.closes.is_empty());
    }

    #[test]
    fn refuses_to_remove_a_target_under_a_session_and_closes_it_when_forced() {
        let old = model(BASE);
        let new = model(
            &BASE
                .replace("[target.t]", "[target.u]")
                .replace("target.t.group", "target.u.group"),
        );
        let live = [session(7, "iqn.1994-05.com.redhat:a")];
        let p = diff_served(&old, &new, &live, false);
        assert!(p.plan.is_refused());
        assert_eq!(p.plan.refusals[0].kind, "sessions");
        assert!(p.plan.refusals[0]
            .problem
            .contains("would cut 1 logged-in session(s)"));
        let deleted: Vec<_> = p
            .plan
            .changes
            .iter()
            .filter(|c| c.action == Action::Delete)
            .collect();
        assert_eq!(deleted[0].address, "target \"iqn.2026-11.io.isctl:t\"");
        let forced = diff_served(&old, &new, &live, true);
        assert!(!forced.plan.is_refused());
        assert_eq!(forced.closes, BTreeSet::from([7]));
    }

    #[test]
    fn a_lun_removed_under_a_session_disturbs_it_without_closing_it() {
        let old = model(BASE);
        let new =
            model(&BASE.replace("luns = { 0 = \"r0\", 1 = \"r1\" }", "luns = { 0 = \"r0\" }"));
        let p = diff_served(&old, &new, &[session(2, "iqn.1994-05.com.redhat:a")], true);
        assert_eq!(p.plan.sessions_cut.len(), 1);
        assert!(
            p.plan.sessions_cut[0].by.ends_with("lun 1"),
            "{:?}",
            p.plan.sessions_cut
        );
        assert!(p.closes.is_empty());
        let upd = &p
            .plan
            .changes
            .iter()
            .find(|c| c.action == Action::Update)
            .unwrap();
        assert_eq!(upd.attributes[0].name, "lun 1");
        assert_eq!(upd.attributes[0].old.as_deref(), Some("r1"));
        assert_eq!(upd.attributes[0].new, None);
    }

    #[test]
    fn an_initiator_no_longer_admitted_is_cut() {
        let old = model(BASE);
        let new = model(&BASE.replace("com.redhat:a\"]", "com.redhat:b\"]"));
        let live = [session(3, "iqn.1994-05.com.redhat:a")];
        let p = diff_served(&old, &new, &live, false);
        assert!(p.plan.is_refused());
        assert!(p.plan.sessions_cut[0].by.contains("no longer admitted"));
        assert_eq!(
            diff_served(&old, &new, &live, true).closes,
            BTreeSet::from([3])
        );
    }

    #[test]
    fn a_changed_extent_is_replaced_and_a_new_listener_created() {
        let old = model(BASE);
        let new = model(
            &BASE
                .replace(
                    "[extent.r1]\ntype = \"ramdisk\"\nsize = \"4MiB\"",
                    "[extent.r1]\ntype = \"ramdisk\"\nsize = \"8MiB\"",
                )
                .replace(
                    "listen = [\"127.0.0.1:3260\"]",
                    "listen = [\"127.0.0.1:3260\", \"127.0.0.1:3261\"]",
                ),
        );
        let p = diff_served(&old, &new, &[], false);
        let kinds: Vec<(Action, &str)> = p
            .plan
            .changes
            .iter()
            .map(|c| (c.action, c.object.kind()))
            .collect();
        assert_eq!(
            kinds,
            [
                (Action::Update, "portal_group"),
                (Action::Replace, "backstore")
            ]
        );
        assert!(p.plan.changes[1]
            .attributes
            .iter()
            .all(|a| a.forces_replacement));
        assert_eq!(p.plan.summary().add, 1);
    }
}
