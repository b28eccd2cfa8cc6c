//! The running configuration: the model as the engine serves it (opened logical
//! units, SCSI targets with their LUN maps, portal groups), the access decisions
//! that follow from it, and the difference between it and a new model (what a
//! reload or `isctl apply --backend userspace` changes, and whom it disturbs).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::engine::iscsi::login::{Access, Grant, LoginStatus};
use crate::engine::iscsi::negotiate::Pairs;
use crate::engine::lu::{self, LogicalUnit, LuError};
use crate::engine::scsi::ScsiTarget;
use crate::model::{Extent, Model, PortalGroup, TargetGroup};

/// One iSCSI target as served.
#[derive(Debug)]
pub struct TargetRt {
    pub name: String,
    pub alias: Option<String>,
    pub groups: Vec<TargetGroup>,
    /// LUN → extent name (enabled extents only).
    pub luns: BTreeMap<u16, String>,
    pub scsi: Arc<ScsiTarget>,
}

/// The configuration in force.
#[derive(Debug)]
pub struct Config {
    pub model: Model,
    pub source: PathBuf,
    pub targets: BTreeMap<String, TargetRt>,
    /// Extent name → opened LU, with the definition it was opened from.
    pub lus: BTreeMap<String, (Extent, Arc<LogicalUnit>)>,
}

/// An extent definition without what does not change the served LU (where it was
/// written, its comment), to tell whether a reload must reopen it.
fn essence(e: &Extent) -> Extent {
    let mut e = e.clone();
    e.origin = Default::default();
    e.comment.clear();
    e
}

impl Config {
    /// Build a configuration for `model`, reusing LUs and SCSI targets of `old` that
    /// the model keeps as they are (sessions on them are not disturbed).
    /// Nothing of `old` is changed here; see [`Config::commit_luns`].
    pub fn build(model: Model, source: PathBuf, old: Option<&Config>) -> Result<Config, LuError> {
        let mut lus = BTreeMap::new();
        for (name, extent) in &model.extents {
            if !extent.enabled {
                continue;
            }
            let reuse = old
                .and_then(|o| o.lus.get(name))
                .filter(|(e, _)| essence(e) == essence(extent))
                .map(|(_, lu)| lu.clone());
            let lu = match reuse {
                Some(lu) => lu,
                None => lu::open_extent(extent)?,
            };
            lus.insert(name.clone(), (extent.clone(), lu));
        }
        let mut targets = BTreeMap::new();
        for target in model.targets.values() {
            let name = target.name.as_str().to_string();
            let luns: BTreeMap<u16, String> = target
                .luns
                .iter()
                .filter(|(_, e)| lus.contains_key(*e))
                .map(|(l, e)| (*l, e.clone()))
                .collect();
            let scsi = match old.and_then(|o| o.targets.get(&name)) {
                Some(t) => t.scsi.clone(),
                None => Arc::new(ScsiTarget::new(lun_map(&luns, &lus))),
            };
            targets.insert(
                name.clone(),
                TargetRt {
                    name,
                    alias: target.alias.clone(),
                    groups: target.groups.clone(),
                    luns,
                    scsi,
                },
            );
        }
        Ok(Config {
            model,
            source,
            targets,
            lus,
        })
    }

    /// Point reused SCSI targets at their new LUN maps (after the new configuration
    /// is known to be complete). Targets whose map is unchanged are left alone, so
    /// their initiators see no unit attention.
    pub fn commit_luns(&self) {
        for t in self.targets.values() {
            let want = lun_map(&t.luns, &self.lus);
            let have = t.scsi.luns();
            let same = want.len() == have.len()
                && want
                    .iter()
                    .zip(have.iter())
                    .all(|((a, x), (b, y))| a == b && Arc::ptr_eq(x, y));
            if !same {
                t.scsi.set_luns(want);
            }
        }
    }

    /// Every address to listen on, with its portal group.
    pub fn listen_addresses(&self) -> BTreeMap<SocketAddr, String> {
        let mut out = BTreeMap::new();
        for p in self.model.portals.values() {
            for a in &p.listen {
                out.insert(*a, p.name.clone());
            }
        }
        out
    }

    pub fn portal_for(&self, listen: SocketAddr) -> Option<&PortalGroup> {
        self.model
            .portals
            .values()
            .find(|p| p.listen.contains(&listen))
    }

    /// Does the group admit this initiator from this address?
    pub fn admits(&self, group: &TargetGroup, initiator: &str, ip: IpAddr) -> bool {
        admits_in(&self.model, group, initiator, ip)
    }

    /// The group through which `initiator` at `ip` may reach `target` on portal `portal`.
    pub fn group_for<'a>(
        &self,
        target: &'a TargetRt,
        portal: &str,
        initiator: &str,
        ip: IpAddr,
    ) -> Result<&'a TargetGroup, LoginStatus> {
        let mut on_portal = target
            .groups
            .iter()
            .filter(|g| g.portal == portal)
            .peekable();
        if on_portal.peek().is_none() {
            return Err(LoginStatus::NOT_FOUND);
        }
        on_portal
            .find(|g| self.admits(g, initiator, ip))
            .ok_or(LoginStatus::AUTHORIZATION_FAILURE)
    }

    fn grant(&self, group: &TargetGroup, tag: u16, alias: Option<String>) -> Grant {
        Grant {
            auth: group
                .auth
                .as_ref()
                .and_then(|a| self.model.auths.get(a))
                .map(|c| (c.clone(), group.auth_method)),
            portal_group_tag: tag,
            alias,
        }
    }

    /// SendTargets: each target the initiator may log in to, with the addresses and
    /// tags of every portal group it may use. A wildcard listen address is answered
    /// with the address the initiator reached us on.
    pub fn send_targets(
        &self,
        local: SocketAddr,
        initiator: &str,
        ip: IpAddr,
        which: Option<&str>,
    ) -> Pairs {
        let mut out = Vec::new();
        for t in self.targets.values() {
            if which.is_some_and(|w| w != t.name) {
                continue;
            }
            let mut addrs = Vec::new();
            for g in &t.groups {
                if !self.admits(g, initiator, ip) {
                    continue;
                }
                let Some(p) = self.model.portals.get(&g.portal) else {
                    continue;
                };
                for a in &p.listen {
                    let host = if a.ip().is_unspecified() {
                        canonical(local.ip())
                    } else {
                        a.ip()
                    };
                    let host = match host {
                        IpAddr::V4(v4) => v4.to_string(),
                        IpAddr::V6(v6) => format!("[{v6}]"),
                    };
                    let entry = format!("{host}:{},{}", a.port(), p.tag);
                    if !addrs.contains(&entry) {
                        addrs.push(entry);
                    }
                }
            }
            if addrs.is_empty() {
                continue;
            }
            out.push(("TargetName".to_string(), t.name.clone()));
            out.extend(addrs.into_iter().map(|a| ("TargetAddress".to_string(), a)));
        }
        out
    }

    /// The login policy for a connection.
    pub fn access(self: &Arc<Self>, listen: SocketAddr, peer: SocketAddr) -> PortalAccess {
        PortalAccess {
            config: self.clone(),
            listen,
            peer,
        }
    }
}

fn lun_map(
    luns: &BTreeMap<u16, String>,
    lus: &BTreeMap<String, (Extent, Arc<LogicalUnit>)>,
) -> BTreeMap<u64, Arc<LogicalUnit>> {
    luns.iter()
        .filter_map(|(l, e)| lus.get(e).map(|(_, lu)| (u64::from(*l), lu.clone())))
        .collect()
}

/// IPv4-mapped IPv6 addresses (from a dual-stack listener) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// [`Access`] for one connection.
pub struct PortalAccess {
    config: Arc<Config>,
    listen: SocketAddr,
    peer: SocketAddr,
}

impl Access for PortalAccess {
    fn normal(&self, target: &str, initiator: &str) -> Result<Grant, LoginStatus> {
        let c = &self.config;
        let t = c.targets.get(target).ok_or(LoginStatus::NOT_FOUND)?;
        let p = c.portal_for(self.listen).ok_or(LoginStatus::NOT_FOUND)?;
        let g = c.group_for(t, &p.name, initiator, self.peer.ip())?;
        Ok(c.grant(g, p.tag, t.alias.clone()))
    }

    fn discovery(&self, _initiator: &str) -> Grant {
        let c = &self.config;
        let portal = c.portal_for(self.listen);
        Grant {
            auth: portal.and_then(|p| {
                p.discovery_auth_group
                    .as_ref()
                    .and_then(|a| c.model.auths.get(a))
                    .map(|cr| (cr.clone(), p.discovery_auth))
            }),
            portal_group_tag: portal.map_or(1, |p| p.tag),
            alias: None,
        }
    }
}

/// One line of a reload plan.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    /// `+` add, `-` remove, `~` change.
    pub action: String,
    /// portal | extent | target | lun | access
    pub kind: String,
    pub name: String,
    pub detail: String,
    /// Sessions this change would cut or disturb (their TSIHs).
    pub disturbs: Vec<u16>,
}

/// A live session as the diff needs it.
pub struct LiveSession {
    pub tsih: u16,
    pub target: Option<String>,
    pub initiator: String,
    pub ip: IpAddr,
    pub listen: Vec<SocketAddr>,
}

/// What changes between the configuration in force and `new`, and which sessions
/// each change would cut.
pub fn diff(old: &Config, new: &Model, sessions: &[LiveSession]) -> Vec<Change> {
    let mut out = Vec::new();
    let ch = |action: &str, kind: &str, name: &str, detail: String, disturbs: Vec<u16>| Change {
        action: action.into(),
        kind: kind.into(),
        name: name.into(),
        detail,
        disturbs,
    };
    let old_listen = old.listen_addresses();
    let new_listen: BTreeMap<SocketAddr, String> = new
        .portals
        .values()
        .flat_map(|p| p.listen.iter().map(|a| (*a, p.name.clone())))
        .collect();
    for (a, p) in &new_listen {
        if !old_listen.contains_key(a) {
            out.push(ch("+", "portal", p, format!("listen on {a}"), vec![]));
        }
    }
    for (a, p) in &old_listen {
        if !new_listen.contains_key(a) {
            let cut = sessions
                .iter()
                .filter(|s| s.listen.contains(a))
                .map(|s| s.tsih)
                .collect();
            out.push(ch("-", "portal", p, format!("stop listening on {a}"), cut));
        }
    }
    for (name, e) in &new.extents {
        match old.lus.get(name) {
            None if e.enabled => out.push(ch("+", "extent", name, describe_extent(e), vec![])),
            Some((oe, _)) if !e.enabled => out.push(ch(
                "-",
                "extent",
                name,
                format!("disabled (was {})", describe_extent(oe)),
                vec![],
            )),
            Some((oe, _)) if essence(oe) != essence(e) => out.push(ch(
                "~",
                "extent",
                name,
                format!("{} → {}", describe_extent(oe), describe_extent(e)),
                vec![],
            )),
            _ => {}
        }
    }
    for name in old.lus.keys() {
        if !new.extents.contains_key(name) {
            out.push(ch(
                "-",
                "extent",
                name,
                "no longer served (backing file kept)".into(),
                vec![],
            ));
        }
    }
    let on_target = |t: &str| -> Vec<u16> {
        sessions
            .iter()
            .filter(|s| s.target.as_deref() == Some(t))
            .map(|s| s.tsih)
            .collect()
    };
    let new_targets: BTreeMap<String, &crate::model::Target> = new
        .targets
        .values()
        .map(|t| (t.name.as_str().to_string(), t))
        .collect();
    for (name, t) in &new_targets {
        let Some(ot) = old.targets.get(name) else {
            let luns: Vec<String> = t.luns.iter().map(|(l, e)| format!("{l}={e}")).collect();
            out.push(ch(
                "+",
                "target",
                name,
                format!("LUNs {}", luns.join(", ")),
                vec![],
            ));
            continue;
        };
        let enabled = |e: &String| new.extents.get(e).is_some_and(|x| x.enabled);
        let new_luns: BTreeMap<u16, String> = t
            .luns
            .iter()
            .filter(|(_, e)| enabled(e))
            .map(|(l, e)| (*l, e.clone()))
            .collect();
        let all: BTreeSet<u16> = new_luns.keys().chain(ot.luns.keys()).copied().collect();
        for l in all {
            match (ot.luns.get(&l), new_luns.get(&l)) {
                (None, Some(e)) => out.push(ch(
                    "+",
                    "lun",
                    &format!("{name}/{l}"),
                    format!("extent {e}"),
                    vec![],
                )),
                (Some(e), None) => out.push(ch(
                    "-",
                    "lun",
                    &format!("{name}/{l}"),
                    format!("extent {e}"),
                    on_target(name),
                )),
                (Some(a), Some(b)) if a != b => out.push(ch(
                    "~",
                    "lun",
                    &format!("{name}/{l}"),
                    format!("extent {a} → {b}"),
                    on_target(name),
                )),
                _ => {}
            }
        }
        if ot.alias != t.alias {
            out.push(ch(
                "~",
                "target",
                name,
                format!("alias {:?} → {:?}", ot.alias, t.alias),
                vec![],
            ));
        }
        if ot.groups.iter().map(strip_group).collect::<Vec<_>>()
            != t.groups.iter().map(strip_group).collect::<Vec<_>>()
        {
            out.push(ch(
                "~",
                "access",
                name,
                "portal groups, initiator groups or CHAP changed".into(),
                vec![],
            ));
        }
    }
    for name in old.targets.keys() {
        if !new_targets.contains_key(name) {
            out.push(ch("-", "target", name, "removed".into(), on_target(name)));
        }
    }
    // Sessions the new access rules would no longer admit.
    for s in sessions {
        let Some(tname) = &s.target else { continue };
        let Some(t) = new_targets.get(tname) else {
            continue;
        };
        let admitted = t.groups.iter().any(|g| {
            new.portals
                .get(&g.portal)
                .is_some_and(|p| s.listen.iter().any(|a| p.listen.contains(a)))
                && admits_in(new, g, &s.initiator, s.ip)
        });
        if !admitted {
            out.push(ch(
                "-",
                "session",
                &format!("{tname} tsih {}", s.tsih),
                format!("{} is no longer admitted", s.initiator),
                vec![s.tsih],
            ));
        }
    }
    out
}

fn strip_group(
    g: &TargetGroup,
) -> (
    String,
    Option<String>,
    Option<String>,
    crate::model::AuthMethod,
) {
    (
        g.portal.clone(),
        g.initiator_group.clone(),
        g.auth.clone(),
        g.auth_method,
    )
}

/// Does `group` of `model` admit this initiator from this address? (Shared by the
/// running configuration and by the diff against a model not yet applied.)
fn admits_in(model: &Model, group: &TargetGroup, initiator: &str, ip: IpAddr) -> bool {
    let Some(ig) = &group.initiator_group else {
        return true;
    };
    let Some(ig) = model.initiator_groups.get(ig) else {
        return false;
    };
    let ip = canonical(ip);
    (ig.any_initiator() || ig.initiators.iter().any(|n| n.as_str() == initiator))
        && (ig.any_network() || ig.networks.iter().any(|n| n.contains(&ip)))
}

fn describe_extent(e: &Extent) -> String {
    use crate::model::Backing;
    let ro = if e.readonly { ", read-only" } else { "" };
    match &e.backing {
        Backing::File {
            path,
            size: Some(size),
        } => format!("file {} ({size} bytes{ro})", path.display()),
        Backing::File { path, size: None } => format!("file {}{ro}", path.display()),
        Backing::Block { device } => format!("block {}{ro}", device.display()),
        Backing::Ramdisk { size } => format!("ramdisk ({size} bytes{ro})"),
    }
}
