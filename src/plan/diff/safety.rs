//! The safety rules: what makes a plan refused, or warned about.
//!
//! Owns the refusals for deleting something that holds entries isctl does not
//! manage, a new portal colliding with one that stays (§3.2), deleting a backstore
//! an unmanaged LUN still links, and the sessions the plan's changes would cut
//! (`cut_sessions`: refused unless `--force`); and warnings about foreign entries.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::plan::op::TpgAddr;
use crate::plan::{Action, SessionCut};
use crate::state::{portals_conflict, ObjectId, Session};

use super::Differ;

impl Differ<'_> {
    /// False (and a refusal) when something isctl does not understand sits inside
    /// `id`, so that its deletion would fail with ENOTEMPTY.
    pub(super) fn foreign_inside(&mut self, id: &ObjectId) -> bool {
        let inside: Vec<String> = self
            .o
            .foreign
            .iter()
            .filter(|f| f.parent.as_ref().is_some_and(|p| p.is_within(id)))
            .map(|f| format!("{} ({})", f.path, f.what))
            .collect();
        if inside.is_empty() {
            return true;
        }
        self.refuse(
            "blocked",
            Some(id.clone()),
            format!(
                "cannot delete it: it contains {}, which isctl does not manage",
                inside.join(", ")
            ),
            "remove those entries by hand first".to_string(),
        );
        false
    }

    /// A new portal must not collide with a portal of another TPG of the same
    /// target that stays (the kernel refuses with EINVAL, §3.2).
    pub(super) fn check_portal_conflict(&mut self, tpg: &TpgAddr, addr: &SocketAddr) {
        let Some(ot) = self.o.targets.get(&tpg.target) else {
            return;
        };
        let pid = tpg.portal_object(*addr);
        for (otag, otpg) in &ot.tpgs {
            for oaddr in otpg.portals.keys() {
                if (*otag == tpg.tag && oaddr == addr) || !portals_conflict(addr, oaddr) {
                    continue;
                }
                let oid = TpgAddr::new(&tpg.target, *otag).portal_object(*oaddr);
                let going = self
                    .plan
                    .changes
                    .iter()
                    .any(|c| c.action == Action::Delete && oid.is_within(&c.object));
                if !going {
                    self.refuse(
                        "portal_conflict",
                        Some(pid.clone()),
                        format!("portal {addr} cannot be added: {oid} is the same listener to LIO and is not managed by isctl"),
                        "remove that portal by hand or run with --prune".to_string(),
                    );
                }
            }
        }
    }

    pub(super) fn check_backstore_links(&mut self) {
        let deleted = self.deleted_backstores.clone();
        for (name, hba) in deleted {
            for l in self.links_to(&name, Some(&hba)) {
                if !self.unlinked.contains(&l) {
                    self.refuse(
                        "blocked",
                        Some(ObjectId::Backstore { name: name.clone() }),
                        format!(
                            "cannot delete or replace it: {l} links it and is not managed by isctl"
                        ),
                        "remove that LUN by hand, or run with --prune".to_string(),
                    );
                }
            }
        }
    }

    pub(super) fn foreign_warnings(&mut self) {
        for f in &self.o.foreign {
            self.plan.warnings.push(format!(
                "{}: {} (not managed by isctl, left alone)",
                f.path, f.what
            ));
        }
    }

    fn session_affected(&self, s: &Session, obj: &ObjectId) -> bool {
        match obj {
            ObjectId::Target { target } => &s.target == target,
            ObjectId::Tpg { target, tag } => &s.target == target && s.tpg == *tag,
            ObjectId::Acl {
                target,
                tag,
                initiator,
            }
            | ObjectId::MappedLun {
                target,
                tag,
                initiator,
                ..
            } => &s.target == target && s.tpg == *tag && &s.initiator == initiator && !s.dynamic,
            ObjectId::Lun { target, tag, lun } => {
                if &s.target != target || s.tpg != *tag {
                    return false;
                }
                if s.dynamic {
                    return true;
                }
                self.o
                    .targets
                    .get(target)
                    .and_then(|t| t.tpgs.get(tag))
                    .and_then(|tpg| tpg.acls.get(&s.initiator))
                    .is_some_and(|a| a.mapped.values().any(|m| m.tpg_lun == Some(*lun)))
            }
            ObjectId::Backstore { .. }
            | ObjectId::Portal { .. }
            | ObjectId::DiscoveryAuth
            | ObjectId::PortalGroup { .. } => false,
        }
    }

    /// The sessions the recorded cuts would end, once each per (session, change);
    /// a refusal unless `force`.
    pub(super) fn cut_sessions(&mut self) {
        let mut seen: BTreeSet<(String, u16, String, Option<String>, String)> = BTreeSet::new();
        let cuts = std::mem::take(&mut self.cuts);
        for (obj, by) in &cuts {
            for s in self.sessions {
                if self.session_affected(s, obj) {
                    let key = (
                        s.target.clone(),
                        s.tpg,
                        s.initiator.clone(),
                        s.isid.clone(),
                        by.clone(),
                    );
                    if seen.insert(key) {
                        self.plan.sessions_cut.push(SessionCut {
                            session: s.clone(),
                            by: by.clone(),
                        });
                    }
                }
            }
        }
        // The same refusal, in the same words, as the userspace engine's plans.
        self.plan.refuse_session_cuts();
    }
}
