//! TPG LUNs and their backstore links.
//!
//! Owns unlinking a LUN (remembered, so that a deleted backstore's links can be
//! checked), and what a desired link resolves to after the plan (the backstore's
//! HBA may change; a replaced backstore's links are always redone).

use std::collections::BTreeSet;

use crate::state::{BackstoreRef, ObjectId, Tpg};

use super::super::op::{Op, TpgAddr, LINK_NAME};
use super::{attr, Differ};
use crate::plan::Action;

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
    pub(super) fn emit_unlink(&mut self, target: &str, tag: u16, l: u64, lun: &crate::state::Lun) {
        if let (Some(b), Some(link)) = (&lun.backstore, &lun.link) {
            self.teardown(
                target,
                Op::UnlinkLun {
                    lun: TpgAddr::new(target, tag).lun(l),
                    backstore: b.clone(),
                    link: link.clone(),
                },
            );
            self.unlinked.insert(ObjectId::Lun {
                target: target.to_string(),
                tag,
                lun: l,
            });
        }
    }

    /// The backstore reference a desired LUN resolves to after this plan.
    pub(super) fn desired_ref(&self, b: &BackstoreRef) -> BackstoreRef {
        BackstoreRef {
            name: b.name.clone(),
            hba: self.hba_of.get(&b.name).cloned(),
        }
    }

    /// Is the observed link `have` the same as the desired `want` (after the plan)?
    pub(super) fn link_is_current(&self, want: &BackstoreRef, have: &BackstoreRef) -> bool {
        let want = self.desired_ref(want);
        want.name == have.name
            && (want.hba.is_none() || have.hba.is_none() || want.hba == have.hba)
            && !self.replaced.contains(&want.name)
    }

    /// Decide which TPG LUNs are deleted and which are unlinked and linked again, before
    /// any op is emitted (unmaps must precede unlinks in the teardown lane).
    pub(super) fn plan_luns(&mut self, target: &str, tag: u16, d: &Tpg, o: &Tpg) -> LunPlan {
        let mut lp = LunPlan::default();
        let lun_ids: BTreeSet<u64> = d.luns.keys().chain(o.luns.keys()).copied().collect();
        for l in &lun_ids {
            let lid = ObjectId::Lun {
                target: target.to_string(),
                tag,
                lun: *l,
            };
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
    pub(super) fn teardown_luns(&mut self, target: &str, tag: u16, d: &Tpg, o: &Tpg, lp: &LunPlan) {
        let lun_ids: BTreeSet<u64> = d.luns.keys().chain(o.luns.keys()).copied().collect();
        for l in &lun_ids {
            let Some(ol) = o.luns.get(l) else { continue };
            let lid = ObjectId::Lun {
                target: target.to_string(),
                tag,
                lun: *l,
            };
            if lp.removed.contains(l) {
                let why = self.why_delete(&lid);
                self.cuts.push((lid.clone(), format!("delete LUN {l}")));
                self.change(Action::Delete, lid, vec![], why);
                self.emit_unlink(target, tag, *l, ol);
                self.teardown(
                    target,
                    Op::DeleteLun {
                        lun: TpgAddr::new(target, tag).lun(*l),
                    },
                );
            } else if lp.relinked.contains(l) {
                self.emit_unlink(target, tag, *l, ol);
            }
        }
    }

    /// Build TPG LUNs: create new ones and link them; link again the relinked ones
    /// (unmanaged ones included) and those with no link.
    pub(super) fn build_luns(&mut self, target: &str, tag: u16, d: &Tpg, o: &Tpg, lp: &LunPlan) {
        let lun_ids: BTreeSet<u64> = d.luns.keys().chain(o.luns.keys()).copied().collect();
        for l in &lun_ids {
            let lid = ObjectId::Lun {
                target: target.to_string(),
                tag,
                lun: *l,
            };
            match (d.luns.get(l), o.luns.get(l)) {
                (Some(dl), None) => {
                    self.build(
                        target,
                        Op::CreateLun {
                            lun: TpgAddr::new(target, tag).lun(*l),
                        },
                    );
                    if let Some(b) = &dl.backstore {
                        let r = self.desired_ref(b);
                        self.build(
                            target,
                            Op::LinkLun {
                                lun: TpgAddr::new(target, tag).lun(*l),
                                backstore: r,
                                link: LINK_NAME.to_string(),
                            },
                        );
                        self.change(
                            Action::Create,
                            lid,
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
                            target,
                            Op::LinkLun {
                                lun: TpgAddr::new(target, tag).lun(*l),
                                backstore: r,
                                link: LINK_NAME.to_string(),
                            },
                        );
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
                        let r = self.desired_ref(&BackstoreRef {
                            name: b.name.clone(),
                            hba: None,
                        });
                        self.build(
                            target,
                            Op::LinkLun {
                                lun: TpgAddr::new(target, tag).lun(*l),
                                backstore: r,
                                link: LINK_NAME.to_string(),
                            },
                        );
                        self.change(Action::Update, lid, vec![attr("backstore", Some(format!("{:?}", b.name)), Some(format!("{:?} (re-created)", b.name)))], Some("not managed, but its backstore is replaced: the link is made again".into()));
                    }
                }
                _ => {}
            }
        }
    }
}
