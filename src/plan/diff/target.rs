//! Targets, and TPGs as a whole.
//!
//! Owns creating, updating and deleting targets, deleting a whole TPG (disable,
//! unmap, unlink, rmdir in reverse dependency order), and the one thing done to an
//! unmanaged TPG: re-making LUN links to a replaced backstore, with their mappings.

use std::collections::BTreeSet;

use crate::state::{portal_dir_name, tpg_object_ids, BackstoreRef, ObjectId, Target, Tpg};

use super::super::op::{Op, TargetAddr, TpgAddr, TpgSnapshot, LINK_NAME};
use super::{attr, Differ, LunPlan};
use crate::plan::Action;

impl Differ<'_> {
    pub(super) fn create_target(&mut self, dt: &Target) {
        self.build(
            &dt.name,
            Op::CreateTarget {
                target: TargetAddr::new(dt.name.clone()),
            },
        );
        self.change(
            Action::Create,
            ObjectId::Target {
                target: dt.name.clone(),
            },
            vec![],
            None,
        );
        for (tag, tpg) in &dt.tpgs {
            self.sync_tpg(&dt.name, tpg, &Tpg::fresh(*tag), true);
        }
    }

    pub(super) fn delete_target(&mut self, ot: &Target, reason: Option<String>) {
        let id = ObjectId::Target {
            target: ot.name.clone(),
        };
        if !self.foreign_inside(&id) {
            return;
        }
        self.change(Action::Delete, id.clone(), vec![], reason);
        self.cuts.push((id, format!("delete target {:?}", ot.name)));
        for (tag, tpg) in &ot.tpgs {
            self.delete_tpg(&ot.name, *tag, tpg, Some("its target is deleted".into()));
        }
        self.teardown(
            &ot.name,
            Op::DeleteTarget {
                target: TargetAddr::new(ot.name.clone()),
            },
        );
    }

    pub(super) fn update_target(&mut self, dt: &Target, ot: &Target) {
        let tags: BTreeSet<u16> = dt.tpgs.keys().chain(ot.tpgs.keys()).copied().collect();
        for tag in tags {
            match (dt.tpgs.get(&tag), ot.tpgs.get(&tag)) {
                (Some(d), None) => self.sync_tpg(&dt.name, d, &Tpg::fresh(tag), true),
                (None, Some(o)) => {
                    let id = ObjectId::Tpg {
                        target: dt.name.clone(),
                        tag,
                    };
                    if self.deletable(&id) {
                        let why = self.why_delete(&id);
                        self.delete_tpg(&dt.name, tag, o, why);
                    } else {
                        self.plan.unmanaged.push(id);
                        self.touch_unmanaged_tpg(&dt.name, tag, o);
                    }
                }
                (Some(d), Some(o)) => self.sync_tpg(&dt.name, d, o, false),
                (None, None) => {}
            }
        }
    }

    pub(super) fn delete_tpg(&mut self, target: &str, tag: u16, o: &Tpg, reason: Option<String>) {
        let id = ObjectId::Tpg {
            target: target.to_string(),
            tag,
        };
        if !self.foreign_inside(&id) {
            return;
        }
        self.cuts
            .push((id.clone(), format!("delete target {target:?} tpg {tag}")));
        for oid in tpg_object_ids(target, tag, o) {
            let r = if oid == id { reason.clone() } else { None };
            self.change(Action::Delete, oid, vec![], r);
        }
        if o.enabled {
            self.teardown(
                target,
                Op::DisableTpg {
                    tpg: TpgAddr::new(target, tag),
                },
            );
        }
        for (init, acl) in &o.acls {
            for (m, ml) in &acl.mapped {
                self.emit_unmap(target, tag, init, *m, ml);
                self.teardown(
                    target,
                    Op::DeleteMappedLun {
                        mapped: TpgAddr::new(target, tag).acl(init).mapped_lun(*m),
                    },
                );
            }
            self.teardown(
                target,
                Op::DeleteAcl {
                    acl: TpgAddr::new(target, tag).acl(init),
                    auth: acl.auth.clone(),
                    authentication: acl.authentication,
                },
            );
        }
        for (l, lun) in &o.luns {
            self.emit_unlink(target, tag, *l, lun);
            self.teardown(
                target,
                Op::DeleteLun {
                    lun: TpgAddr::new(target, tag).lun(*l),
                },
            );
        }
        for (addr, p) in &o.portals {
            self.teardown(
                target,
                Op::DeletePortal {
                    tpg: TpgAddr::new(target, tag),
                    portal: *addr,
                    dir: p.dir.clone().unwrap_or_else(|| portal_dir_name(addr)),
                },
            );
        }
        self.teardown(
            target,
            Op::DeleteTpg {
                tpg: TpgAddr::new(target, tag),
                snapshot: Box::new(TpgSnapshot {
                    alias: o.alias.clone(),
                    authentication: o.authentication,
                    generate_node_acls: o.generate_node_acls,
                    demo_mode_write_protect: o.demo_mode_write_protect,
                    prod_mode_write_protect: o.prod_mode_write_protect,
                    auth: o.auth.clone(),
                }),
            },
        );
    }

    /// An unmanaged TPG (or one in an unmanaged target): left alone, except that LUN
    /// links to a replaced backstore must be redone (with their mappings) or they
    /// would dangle.
    pub(super) fn touch_unmanaged_tpg(&mut self, target: &str, tag: u16, o: &Tpg) {
        let mut lp = LunPlan::default();
        for (l, lun) in &o.luns {
            if let Some(b) = &lun.backstore {
                if self.replaced.contains(&b.name) && lun.link.is_some() {
                    lp.relinked.insert(*l);
                }
            }
        }
        if lp.relinked.is_empty() {
            return;
        }
        for (init, acl) in &o.acls {
            for (m, ml) in &acl.mapped {
                if ml.tpg_lun.is_some_and(|t| lp.relinked.contains(&t)) {
                    self.emit_unmap(target, tag, init, *m, ml);
                }
            }
        }
        for l in &lp.relinked {
            let lun = &o.luns[l];
            self.emit_unlink(target, tag, *l, lun);
        }
        for l in &lp.relinked {
            let lun = &o.luns[l];
            if let Some(b) = &lun.backstore {
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
                self.change(
                    Action::Update,
                    ObjectId::Lun {
                        target: target.to_string(),
                        tag,
                        lun: *l,
                    },
                    vec![attr(
                        "backstore",
                        Some(format!("{:?}", b.name)),
                        Some(format!("{:?} (re-created)", b.name)),
                    )],
                    Some(
                        "not managed, but its backstore is replaced: the link is made again".into(),
                    ),
                );
            }
        }
        for (init, acl) in &o.acls {
            for (m, ml) in &acl.mapped {
                if let Some(t) = ml.tpg_lun.filter(|t| lp.relinked.contains(t)) {
                    self.build(
                        target,
                        Op::MapLun {
                            mapped: TpgAddr::new(target, tag).acl(init).mapped_lun(*m),
                            tpg_lun: t,
                            link: LINK_NAME.to_string(),
                        },
                    );
                    if let Some(wp) = ml.write_protect {
                        self.build(
                            target,
                            Op::SetWriteProtect {
                                mapped: TpgAddr::new(target, tag).acl(init).mapped_lun(*m),
                                value: wp,
                                old: None,
                            },
                        );
                    }
                }
            }
        }
    }
}
