//! The running configuration: the model as the engine serves it (opened logical
//! units, SCSI targets with their LUN maps, portal groups) and the access decisions
//! that follow from it. What a new model changes, and whom it disturbs, is the
//! plan's business (`plan::served`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

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
        self.model.admits(group, initiator, ip)
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
