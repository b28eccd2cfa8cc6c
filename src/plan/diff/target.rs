//! Targets, and TPGs as a whole.
//!
//! Owns creating, updating and deleting targets, deleting a whole TPG (disable,
//! unmap, unlink, rmdir in reverse dependency order), and the one thing done to an
//! unmanaged TPG: re-making LUN links to a replaced backstore, with their mappings.

use std::collections::BTreeSet;

use crate::plan::op::{Op, TargetAddr, TpgAddr, TpgSnapshot};
use crate::plan::Action;
use crate::state::{portal_dir_name, tpg_object_ids, Target, Tpg};

use super::{Differ, LunPlan};

impl Differ<'_> {
    pub(super) fn create_target(&mut self, dt: &Target) {
        let target = TargetAddr::new(&dt.name);
        let id = target.object();
        self.build(&dt.name, Op::CreateTarget { target });
        self.change(Action::Create, id, vec![], None);
        for (tag, tpg) in &dt.tpgs {
            self.sync_tpg(&dt.name, tpg, &Tpg::fresh(*tag), true);
        }
    }

    pub(super) fn delete_target(&mut self, ot: &Target, reason: Option<String>) {
        let target = TargetAddr::new(&ot.name);
        let id = target.object();
        if !self.foreign_inside(&id) {
            return;
        }
        self.change(Action::Delete, id.clone(), vec![], reason);
        self.cuts.push((id, format!("delete target {:?}", ot.name)));
        for (tag, tpg) in &ot.tpgs {
            let addr = TpgAddr::new(&ot.name, *tag);
            self.delete_tpg(&addr, tpg, Some("its target is deleted".into()));
        }
        self.teardown(&ot.name, Op::DeleteTarget { target });
    }

    pub(super) fn update_target(&mut self, dt: &Target, ot: &Target) {
        let tags: BTreeSet<u16> = dt.tpgs.keys().chain(ot.tpgs.keys()).copied().collect();
        for tag in tags {
            match (dt.tpgs.get(&tag), ot.tpgs.get(&tag)) {
                (Some(d), None) => self.sync_tpg(&dt.name, d, &Tpg::fresh(tag), true),
                (None, Some(o)) => {
                    let tpg = TpgAddr::new(&dt.name, tag);
                    let id = tpg.object();
                    if self.deletable(&id) {
                        let why = self.why_delete(&id);
                        self.delete_tpg(&tpg, o, why);
                    } else {
                        self.plan.unmanaged.push(id);
                        self.touch_unmanaged_tpg(&tpg, o);
                    }
                }
                (Some(d), Some(o)) => self.sync_tpg(&dt.name, d, o, false),
                (None, None) => {}
            }
        }
    }

    fn delete_tpg(&mut self, tpg: &TpgAddr, o: &Tpg, reason: Option<String>) {
        let id = tpg.object();
        if !self.foreign_inside(&id) {
            return;
        }
        let target = tpg.target.as_str();
        self.cuts.push((id.clone(), format!("delete {tpg}")));
        for oid in tpg_object_ids(target, tpg.tag, o) {
            let r = if oid == id { reason.clone() } else { None };
            self.change(Action::Delete, oid, vec![], r);
        }
        if o.enabled {
            self.teardown(target, Op::DisableTpg { tpg: tpg.clone() });
        }
        for (init, acl) in &o.acls {
            let addr = tpg.acl(init);
            for (m, ml) in &acl.mapped {
                let mapped = addr.mapped_lun(*m);
                self.emit_unmap(&mapped, ml);
                self.teardown(target, Op::DeleteMappedLun { mapped });
            }
            self.teardown(
                target,
                Op::DeleteAcl {
                    acl: addr,
                    auth: acl.auth.clone(),
                    authentication: acl.authentication,
                },
            );
        }
        for (l, ol) in &o.luns {
            let lun = tpg.lun(*l);
            self.emit_unlink(&lun, ol);
            self.teardown(target, Op::DeleteLun { lun });
        }
        for (addr, p) in &o.portals {
            self.teardown(
                target,
                Op::DeletePortal {
                    tpg: tpg.clone(),
                    portal: *addr,
                    dir: p.dir.clone().unwrap_or_else(|| portal_dir_name(addr)),
                },
            );
        }
        self.teardown(
            target,
            Op::DeleteTpg {
                tpg: tpg.clone(),
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
    pub(super) fn touch_unmanaged_tpg(&mut self, tpg: &TpgAddr, o: &Tpg) {
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
                    self.emit_unmap(&tpg.acl(init).mapped_lun(*m), ml);
                }
            }
        }
        for l in &lp.relinked {
            self.emit_unlink(&tpg.lun(*l), &o.luns[l]);
        }
        for l in &lp.relinked {
            if let Some(b) = &o.luns[l].backstore {
                self.relink_unmanaged_lun(&tpg.lun(*l), &b.name);
            }
        }
        for (init, acl) in &o.acls {
            for (m, ml) in &acl.mapped {
                if let Some(t) = ml.tpg_lun.filter(|t| lp.relinked.contains(t)) {
                    self.map_to_tpg_lun(&tpg.acl(init).mapped_lun(*m), t, ml.write_protect);
                }
            }
        }
    }
}
