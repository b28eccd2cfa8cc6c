//! TPG LUNs and their backstore links.
//!
//! Owns a TPG's LUN decisions (`LunPlan`: which LUNs are deleted, which are
//! unlinked and linked again because their backstore is replaced or moved), their
//! teardown and build, unlinking (remembered, so that a deleted backstore's links
//! can be checked), re-linking an unmanaged LUN, and what a desired link resolves
//! to after the plan (the backstore's HBA may change).

use std::collections::BTreeSet;

use crate::plan::op::{LunAddr, Op, TpgAddr, LINK_NAME};
use crate::plan::Action;
use crate::state::{BackstoreRef, Lun, Tpg};

use super::{attr, Differ};

/// Per-TPG decisions about LUNs, made before ops are emitted (unmaps must precede
/// unlinks in the teardown lane).
#[derive(Default)]
pub(super) struct LunPlan {
    /// Deleted TPG LUNs.
    pub(super) removed: BTreeSet<u64>,
    /// Unlinked in teardown and linked again in the targets phase.
    pub(super) relinked: BTreeSet<u64>,
}

impl Differ<'_> {
    /// Unlink TPG LUN `lun` from its backstore (if linked), remembering it so that
    /// deleting the backstore is not blocked by this link.
    pub(super) fn emit_unlink(&mut self, lun: &LunAddr, ol: &Lun) {
        if let (Some(b), Some(link)) = (&ol.backstore, &ol.link) {
            self.teardown(
                &lun.tpg.target,
                Op::UnlinkLun {
                    lun: lun.clone(),
                    backstore: b.clone(),
                    link: link.clone(),
                },
            );
            self.unlinked.insert(lun.object());
        }
    }

    /// Link again an unmanaged LUN whose backstore `name` is replaced.
    pub(super) fn relink_unmanaged_lun(&mut self, lun: &LunAddr, name: &str) {
        let r = self.desired_ref(&BackstoreRef {
            name: name.to_string(),
            hba: None,
        });
        self.build(
            &lun.tpg.target,
            Op::LinkLun {
                lun: lun.clone(),
                backstore: r,
                link: LINK_NAME.to_string(),
            },
        );
        self.change(
            Action::Update,
            lun.object(),
            vec![attr(
                "backstore",
                Some(format!("{name:?}")),
                Some(format!("{name:?} (re-created)")),
            )],
            Some("not managed, but its backstore is replaced: the link is made again".into()),
        );
    }

    /// The backstore reference a desired LUN resolves to after this plan.
    fn desired_ref(&self, b: &BackstoreRef) -> BackstoreRef {
        BackstoreRef {
            name: b.name.clone(),
            hba: self.hba_of.get(&b.name).cloned(),
        }
    }

    /// Is the observed link `have` the same as the desired `want` (after the plan)?
    fn link_is_current(&self, want: &BackstoreRef, have: &BackstoreRef) -> bool {
        let want = self.desired_ref(want);
        want.name == have.name
            && (want.hba.is_none() || have.hba.is_none() || want.hba == have.hba)
            && !self.replaced.contains(&want.name)
    }

    /// Decide which TPG LUNs are deleted and which are unlinked and linked again, before
    /// any op is emitted (unmaps must precede unlinks in the teardown lane).
    pub(super) fn plan_luns(&mut self, tpg: &TpgAddr, d: &Tpg, o: &Tpg) -> LunPlan {
        let mut lp = LunPlan::default();
        let lun_ids: BTreeSet<u64> = d.luns.keys().chain(o.luns.keys()).copied().collect();
        for l in &lun_ids {
            let lid = tpg.lun(*l).object();
            match (d.luns.get(l), o.luns.get(l)) {
                (None, Some(ol)) => {
                    if self.deletable(&lid) {
                        lp.removed.insert(*l);
                    } else {
                        self.plan.unmanaged.push(lid);
                        if ol.link.is_some()
                            && ol
                                .backstore
                                .as_ref()
                                .is_some_and(|b| self.replaced.contains(&b.name))
                        {
                            lp.relinked.insert(*l);
                        }
                    }
                }
                (Some(dl), Some(ol)) => {
                    if let (Some(want), Some(have), Some(_)) =
                        (&dl.backstore, &ol.backstore, &ol.link)
                    {
                        if !self.link_is_current(want, have) {
                            lp.relinked.insert(*l);
                        }
                    }
                }
                _ => {}
            }
        }
        lp
    }

    /// Teardown of TPG LUNs: delete the removed ones, unlink the relinked ones.
    pub(super) fn teardown_luns(&mut self, tpg: &TpgAddr, o: &Tpg, lp: &LunPlan) {
        for (l, ol) in &o.luns {
            let lun = tpg.lun(*l);
            if lp.removed.contains(l) {
                let lid = lun.object();
                let why = self.why_delete(&lid);
                self.cuts.push((lid.clone(), format!("delete LUN {l}")));
                self.change(Action::Delete, lid, vec![], why);
                self.emit_unlink(&lun, ol);
                self.teardown(&tpg.target, Op::DeleteLun { lun });
            } else if lp.relinked.contains(l) {
                self.emit_unlink(&lun, ol);
            }
        }
    }

    /// Build TPG LUNs: create new ones and link them; link again the relinked ones
    /// (unmanaged ones included) and those with no link.
    pub(super) fn build_luns(&mut self, tpg: &TpgAddr, d: &Tpg, o: &Tpg, lp: &LunPlan) {
        let lun_ids: BTreeSet<u64> = d.luns.keys().chain(o.luns.keys()).copied().collect();
        for l in &lun_ids {
            let lun = tpg.lun(*l);
            match (d.luns.get(l), o.luns.get(l)) {
                (Some(dl), None) => {
                    self.build(&tpg.target, Op::CreateLun { lun: lun.clone() });
                    if let Some(b) = &dl.backstore {
                        let r = self.desired_ref(b);
                        self.build(
                            &tpg.target,
                            Op::LinkLun {
                                lun: lun.clone(),
                                backstore: r,
                                link: LINK_NAME.to_string(),
                            },
                        );
                        self.change(
                            Action::Create,
                            lun.object(),
                            vec![attr("backstore", None, Some(format!("{:?}", b.name)))],
                            None,
                        );
                    }
                }
                (Some(dl), Some(ol)) => {
                    let Some(b) = &dl.backstore else { continue };
                    if ol.link.is_none() || ol.backstore.is_none() || lp.relinked.contains(l) {
                        let r = self.desired_ref(b);
                        self.build(
                            &tpg.target,
                            Op::LinkLun {
                                lun: lun.clone(),
                                backstore: r,
                                link: LINK_NAME.to_string(),
                            },
                        );
                        let lid = lun.object();
                        let old = ol.backstore.as_ref().map(|x| format!("{:?}", x.name));
                        let (new, reason) =
                            if ol.backstore.as_ref().is_some_and(|x| x.name == b.name) {
                                (
                                    format!("{:?} (re-created)", b.name),
                                    Some("its backstore is replaced".to_string()),
                                )
                            } else {
                                if ol.backstore.is_some() {
                                    self.cuts.push((lid.clone(), format!("remap LUN {l}")));
                                }
                                (format!("{:?}", b.name), None)
                            };
                        self.change(
                            Action::Update,
                            lid,
                            vec![attr("backstore", old, Some(new))],
                            reason,
                        );
                    }
                }
                (None, Some(ol)) if lp.relinked.contains(l) => {
                    if let Some(b) = &ol.backstore {
                        self.relink_unmanaged_lun(&lun, &b.name);
                    }
                }
                _ => {}
            }
        }
    }
}
