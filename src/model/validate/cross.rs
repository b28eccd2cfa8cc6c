//! Rules that span objects: references resolve, portal group tags are unique and
//! assigned, no address is listened on twice, one backing path per extent, an extent
//! is mapped by one target unless shared, mutual CHAP has a peer.
//!
//! Objects are visited in the order they are written (file, line), so that a conflict
//! is reported at the later definition and names the earlier one.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::model::diag::Diags;
use crate::model::load::normalize_lexically;
use crate::model::types::{AuthMethod, Backing, ChapCredentials, Origin};

use super::extent::ExtentDraft;
use super::objects::PortalDraft;
use super::target::TargetDraft;
use super::{resolve, Defined};

/// Tags, addresses and discovery auth of the portal groups. Assigns default tags:
/// explicit tags are reserved first, then each portal group without one gets the
/// smallest unused tag, in order of portal group name.
pub(crate) fn portals(
    portals: &mut [PortalDraft],
    auths: &BTreeMap<String, ChapCredentials>,
    defined: &Defined,
    d: &mut Diags,
) {
    portals.sort_by(|a, b| a.pg.origin.cmp(&b.pg.origin));
    let mut used: BTreeMap<u16, (String, Origin)> = BTreeMap::new();
    for p in portals.iter_mut() {
        let Some(tag) = &p.tag else { continue };
        let object = format!("portal.{}", p.pg.name);
        if let Some((other, at)) = used.get(&tag.v) {
            d.error(
                &tag.at,
                &object,
                format!(
                    "tag {} is also the tag of portal group {other:?} ({at})",
                    tag.v
                ),
                "give every portal group a different tag, or leave `tag` out to have one assigned",
            );
        } else {
            used.insert(tag.v, (p.pg.name.clone(), tag.at.clone()));
        }
        p.pg.tag = tag.v;
    }
    let mut by_name: Vec<&mut PortalDraft> =
        portals.iter_mut().filter(|p| p.tag.is_none()).collect();
    by_name.sort_by(|a, b| a.pg.name.cmp(&b.pg.name));
    let mut next: u32 = 1;
    for p in by_name {
        while next <= u32::from(u16::MAX) && used.contains_key(&(next as u16)) {
            next += 1;
        }
        match u16::try_from(next) {
            Ok(tag) => {
                p.pg.tag = tag;
                used.insert(tag, (p.pg.name.clone(), p.pg.origin.clone()));
            }
            Err(_) => d.error(
                &p.pg.origin,
                &format!("portal.{}", p.pg.name),
                "no portal group tag is left to assign (all of 1..=65535 are used)",
                "use fewer portal groups",
            ),
        }
    }

    listen_conflicts(portals, d);

    for p in portals.iter() {
        let object = format!("portal.{}", p.pg.name);
        let Some(group) = &p.pg.discovery_auth_group else {
            continue;
        };
        let at = p.group_at.clone().unwrap_or_else(|| p.pg.origin.clone());
        if !resolve(d, &object, &at, "auth", group, &defined.auths) {
            continue;
        }
        if p.pg.discovery_auth == AuthMethod::MutualChap {
            if let Some(a) = auths.get(group) {
                if a.peer.is_none() {
                    d.error(
                        p.method_at.as_ref().unwrap_or(&at),
                        &object,
                        format!("discovery_auth = \"mutual-chap\" needs auth {group:?} to have peer_user and a peer secret"),
                        format!("add peer_user and peer_secret (or peer_secret_file / peer_secret_env) to [auth.{group}], or use discovery_auth = \"chap\""),
                    );
                }
            }
        }
    }
}

/// No address:port in two portal groups (or twice in one); `0.0.0.0:P` never with
/// `[::]:P`, because on LIO an IPv6 wildcard listener also takes IPv4.
fn listen_conflicts(portals: &[PortalDraft], d: &mut Diags) {
    let mut seen: BTreeMap<SocketAddr, (String, Origin)> = BTreeMap::new();
    for p in portals {
        let object = format!("portal.{}", p.pg.name);
        for (addr, at) in p.pg.listen.iter().zip(&p.listen_at) {
            if let Some((other, other_at)) = seen.get(addr) {
                if *other != p.pg.name {
                    d.error(
                        at,
                        &object,
                        format!("listen address {addr} is also listed by portal group {other:?} ({other_at})"),
                        "list each address:port in one portal group only; a target reachable through both would need it twice",
                    );
                }
                continue;
            }
            if let Some((wild, other, other_at)) = covered_by(&seen, addr) {
                let place = if other == p.pg.name {
                    format!("this portal group, at {other_at}")
                } else {
                    format!("portal group {other:?}, at {other_at}")
                };
                d.error(
                    at,
                    &object,
                    format!(
                        "listen address {addr} overlaps {wild} ({place}): the wildcard listens on every {} address on port {}, so the kernel cannot bind both",
                        if wild.is_ipv6() { "IPv4 and IPv6" } else { "IPv4" },
                        addr.port()
                    ),
                    "use another port for one of them, or replace the wildcard by specific addresses",
                );
                continue;
            }
            if let Some(twin) = wildcard_twin(addr) {
                if let Some((other, other_at)) = seen.get(&twin) {
                    let (v4, v6) = if addr.is_ipv4() {
                        (*addr, twin)
                    } else {
                        (twin, *addr)
                    };
                    let place = if *other == p.pg.name {
                        format!("also in this portal group, at {other_at}")
                    } else {
                        format!("in portal group {other:?}, at {other_at}")
                    };
                    d.error(
                        at,
                        &object,
                        format!(
                            "{v4} and {v6} ({place}) are one portal on LIO: \"{v6}\" alone listens on every IPv4 and IPv6 address"
                        ),
                        format!("remove \"{v4}\" and keep \"{v6}\" (dual-stack), or listen on specific addresses"),
                    );
                    continue;
                }
            }
            seen.insert(*addr, (p.pg.name.clone(), at.clone()));
        }
    }
}

/// An address already listed that overlaps `addr` on the same port: one of the two
/// is a wildcard that takes the other. `[::]:P` takes every address on LIO
/// (dual-stack); `0.0.0.0:P` every IPv4 address. Returns the wildcard and where the
/// earlier address was listed. The pair `0.0.0.0:P` / `[::]:P` has its own message.
fn covered_by<'s>(
    seen: &'s BTreeMap<SocketAddr, (String, Origin)>,
    addr: &SocketAddr,
) -> Option<(SocketAddr, &'s str, &'s Origin)> {
    let takes = |wild: &SocketAddr, other: &SocketAddr| {
        wild.port() == other.port()
            && wild.ip().is_unspecified()
            && !other.ip().is_unspecified()
            && (wild.is_ipv6() || other.is_ipv4())
    };
    seen.iter().find_map(|(other, (name, at))| {
        if takes(other, addr) {
            Some((*other, name.as_str(), at))
        } else if takes(addr, other) {
            Some((*addr, name.as_str(), at))
        } else {
            None
        }
    })
}

/// `0.0.0.0:P` ↔ `[::]:P`.
fn wildcard_twin(addr: &SocketAddr) -> Option<SocketAddr> {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => Some(SocketAddr::new(
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            addr.port(),
        )),
        IpAddr::V6(ip) if ip.is_unspecified() => Some(SocketAddr::new(
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            addr.port(),
        )),
        _ => None,
    }
}

/// The path an extent's data really lives at: the canonical path when it exists (so
/// symbolic links to one device are caught), else the path normalised lexically.
fn identity(path: &std::path::Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| normalize_lexically(path))
}

/// One backing file or device per extent.
pub(crate) fn backing_paths(extents: &[ExtentDraft], d: &mut Diags) {
    let mut order: Vec<&ExtentDraft> = extents.iter().collect();
    order.sort_by(|a, b| a.origin.cmp(&b.origin));
    let mut seen: BTreeMap<PathBuf, (&str, &Origin)> = BTreeMap::new();
    for x in order {
        let path = match &x.backing {
            Some(Backing::File { path, .. }) => path,
            Some(Backing::Block { device }) => device,
            Some(Backing::Ramdisk { .. }) | None => continue,
        };
        let id = identity(path);
        if let Some((other, at)) = seen.get(&id) {
            d.error(
                &x.backing_at,
                &format!("extent.{}", x.name),
                format!(
                    "{:?} is also the backing of extent {other:?} ({at})",
                    path.display().to_string()
                ),
                "give each extent its own file or device; to export one disk through several targets, map the same extent with shared = true",
            );
        } else {
            seen.insert(id, (&x.name, &x.backing_at));
        }
    }
}

/// Each target group's references, one group per portal, mutual CHAP with a peer.
pub(crate) fn targets(
    targets: &[TargetDraft],
    auths: &BTreeMap<String, ChapCredentials>,
    defined: &Defined,
    d: &mut Diags,
) {
    for t in targets {
        let object = t.object();
        let mut portals_seen: BTreeMap<&str, &Origin> = BTreeMap::new();
        for (g, at) in t.groups.iter().zip(&t.groups_at) {
            if resolve(
                d,
                &object,
                &at.portal,
                "portal",
                &g.portal,
                &defined.portals,
            ) {
                if let Some(first) = portals_seen.get(g.portal.as_str()) {
                    d.error(
                        &at.portal,
                        &object,
                        format!("portal group {:?} is used by two groups of this target (also at {first})", g.portal),
                        "merge the two groups: a target has one group per portal group",
                    );
                } else {
                    portals_seen.insert(&g.portal, &at.portal);
                }
            }
            if let (Some(ig), Some(ig_at)) = (&g.initiator_group, &at.initiator_group) {
                resolve(
                    d,
                    &object,
                    ig_at,
                    "initiator_group",
                    ig,
                    &defined.initiator_groups,
                );
            }
            if let (Some(a), Some(a_at)) = (&g.auth, &at.auth) {
                if resolve(d, &object, a_at, "auth", a, &defined.auths)
                    && g.auth_method == AuthMethod::MutualChap
                {
                    if let Some(creds) = auths.get(a) {
                        if creds.peer.is_none() {
                            d.error(
                                &at.method,
                                &object,
                                format!("auth_method = \"mutual-chap\" needs auth {a:?} to have peer_user and a peer secret"),
                                format!("add peer_user and peer_secret (or peer_secret_file / peer_secret_env) to [auth.{a}], or use auth_method = \"chap\""),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Every LUN names a defined extent; an extent is mapped once per target and by one
/// target only unless it is `shared`.
pub(crate) fn lun_mappings(
    targets: &[TargetDraft],
    extents: &[ExtentDraft],
    defined: &Defined,
    d: &mut Diags,
) {
    let by_name: BTreeMap<&str, &ExtentDraft> =
        extents.iter().map(|x| (x.name.as_str(), x)).collect();
    let mut order: Vec<&TargetDraft> = targets.iter().collect();
    order.sort_by(|a, b| a.origin.cmp(&b.origin));
    // extent → (target key, LUN id, position) of its first mapping.
    let mut mapped: BTreeMap<&str, (&str, u16, &Origin)> = BTreeMap::new();
    for t in order {
        let object = t.object();
        let mut in_this: BTreeMap<&str, u16> = BTreeMap::new();
        for (id, extent) in &t.luns {
            let Some(at) = t.lun_at.get(id) else { continue };
            if !resolve(d, &object, at, "extent", extent, &defined.extents) {
                continue;
            }
            if let Some(first) = in_this.get(extent.as_str()) {
                d.error(
                    at,
                    &object,
                    format!("extent {extent:?} is mapped twice by this target (as LUN {first} and LUN {id})"),
                    "map each extent once per target",
                );
                continue;
            }
            in_this.insert(extent, *id);
            let Some(x) = by_name.get(extent.as_str()) else {
                continue;
            };
            match mapped.get(extent.as_str()) {
                Some((other, other_id, other_at)) if !x.shared => d.error(
                    at,
                    &object,
                    format!("extent {extent:?} is already mapped by target {other:?} as LUN {other_id} ({other_at})"),
                    format!(
                        "map it from one target only, or set shared = true in [extent.{extent}] if the targets are meant to share the disk (a cluster file system, say)"
                    ),
                ),
                Some(_) => {}
                None => {
                    mapped.insert(extent, (&t.key, *id, at));
                }
            }
        }
    }
}
