//! ACLs, mapped LUNs and their write protection.
//!
//! Owns a TPG's ACLs (teardown and build), an ACL's authentication and CHAP
//! credentials, creating, remapping and deleting mapped LUNs (a mapping whose TPG
//! LUN is re-linked or dead is mapped again, §4.2), and the kernel's default
//! `write_protect` of a new mapping (§3.6).

use std::collections::{BTreeMap, BTreeSet};

use crate::plan::op::{AclAddr, AuthScope, MappedLunAddr, Op, TpgAddr, LINK_NAME};
use crate::plan::Action;
use crate::state::{Acl, BackstoreKind, ChapCreds, MappedLun, Tpg, ACL_DEFAULTED};

use super::{attr, yes_no, Differ, LunPlan};

impl Differ<'_> {
    /// Remove mapping `mapped`'s link to its TPG LUN (if linked), keeping its write
    /// protection for undo.
    pub(super) fn emit_unmap(&mut self, mapped: &MappedLunAddr, ml: &MappedLun) {
        if let (Some(tpg_lun), Some(link)) = (ml.tpg_lun, &ml.link) {
            self.teardown(
                &mapped.acl.tpg.target,
                Op::UnmapLun {
                    mapped: mapped.clone(),
                    tpg_lun,
                    link: link.clone(),
                    write_protect: ml.write_protect,
                },
            );
        }
    }

    /// Map `mapped` to TPG LUN `tpg_lun`, then write `write_protect` when given (a
    /// new mapping that differs from the kernel's default, or a kept mapping whose
    /// LUN is relinked and whose old write protection is known).
    pub(super) fn map_to_tpg_lun(
        &mut self,
        mapped: &MappedLunAddr,
        tpg_lun: u64,
        write_protect: Option<bool>,
    ) {
        let target = &mapped.acl.tpg.target;
        self.build(
            target,
            Op::MapLun {
                mapped: mapped.clone(),
                tpg_lun,
                link: LINK_NAME.to_string(),
            },
        );
        if let Some(wp) = write_protect {
            self.build(
                target,
                Op::SetWriteProtect {
                    mapped: mapped.clone(),
                    value: wp,
                    old: None,
                },
            );
        }
    }

    /// The `write_protect` the kernel gives a new mapping of TPG LUN `tpg_lun`:
    /// 1 if the backstore is a read-only block device or the TPG's
    /// `prod_mode_write_protect` is 1 (docs/configfs.md §3.6).
    fn default_write_protect(&self, d: &Tpg, o: &Tpg, tpg_lun: u64) -> bool {
        let ro_backstore = d
            .luns
            .get(&tpg_lun)
            .and_then(|l| l.backstore.as_ref())
            .and_then(|b| self.d.backstores.get(&b.name))
            .is_some_and(|b| matches!(b.kind, BackstoreKind::Block { readonly: true, .. }));
        ro_backstore || o.prod_mode_write_protect.unwrap_or(false)
    }

    /// Teardown of ACLs: delete undesired managed ones with their mappings; unmap what
    /// kept ACLs must lose or map again.
    pub(super) fn teardown_acls(&mut self, tpg: &TpgAddr, d: &Tpg, o: &Tpg, lp: &LunPlan) {
        let acl_names: BTreeSet<&String> = d.acls.keys().chain(o.acls.keys()).collect();
        for init in acl_names {
            let acl = tpg.acl(init);
            let aid = acl.object();
            match (d.acls.get(init), o.acls.get(init)) {
                (None, Some(oa)) if self.deletable(&aid) => {
                    let why = self.why_delete(&aid);
                    self.cuts
                        .push((aid.clone(), format!("delete ACL {init:?}")));
                    self.change(Action::Delete, aid, vec![], why);
                    for (m, ml) in &oa.mapped {
                        let mapped = acl.mapped_lun(*m);
                        self.change(Action::Delete, mapped.object(), vec![], None);
                        self.emit_unmap(&mapped, ml);
                        self.teardown(&tpg.target, Op::DeleteMappedLun { mapped });
                    }
                    self.teardown(
                        &tpg.target,
                        Op::DeleteAcl {
                            acl,
                            auth: oa.auth.clone(),
                            authentication: oa.authentication,
                        },
                    );
                }
                (None, Some(oa)) => {
                    self.plan.unmanaged.push(aid);
                    self.teardown_mappings(&acl, None, oa, lp);
                }
                (Some(da), Some(oa)) => self.teardown_mappings(&acl, Some(da), oa, lp),
                _ => {}
            }
        }
    }

    /// Teardown of an existing ACL's mappings: removed, remapped, or re-created
    /// because their TPG LUN is relinked or they are dead.
    fn teardown_mappings(&mut self, acl: &AclAddr, da: Option<&Acl>, oa: &Acl, lp: &LunPlan) {
        let init = &acl.initiator;
        for (m, ml) in &oa.mapped {
            let mapped = acl.mapped_lun(*m);
            let mid = mapped.object();
            let points_removed = ml.tpg_lun.is_some_and(|t| lp.removed.contains(&t));
            let want = da.and_then(|a| a.mapped.get(m));
            match want {
                None => {
                    let managed_delete = da.is_some() && self.deletable(&mid);
                    if managed_delete || points_removed {
                        let reason = if managed_delete {
                            self.why_delete(&mid)
                        } else {
                            Some(format!(
                                "maps TPG LUN {} which is deleted",
                                ml.tpg_lun.unwrap_or(0)
                            ))
                        };
                        self.cuts
                            .push((mid.clone(), format!("unmap LUN {m} from {init:?}")));
                        self.change(Action::Delete, mid, vec![], reason);
                        self.emit_unmap(&mapped, ml);
                        self.teardown(&acl.tpg.target, Op::DeleteMappedLun { mapped });
                    } else {
                        if da.is_some() {
                            self.plan.unmanaged.push(mid);
                        }
                        if ml.tpg_lun.is_some_and(|t| lp.relinked.contains(&t)) {
                            self.emit_unmap(&mapped, ml);
                        }
                    }
                }
                Some(dm) => {
                    if ml.link.is_some()
                        && (ml.tpg_lun != dm.tpg_lun
                            || ml.tpg_lun.is_some_and(|t| lp.relinked.contains(&t))
                            || ml.write_protect.is_none())
                    {
                        if ml.tpg_lun != dm.tpg_lun {
                            self.cuts
                                .push((mid.clone(), format!("remap LUN {m} of {init:?}")));
                        }
                        self.emit_unmap(&mapped, ml);
                    }
                }
            }
        }
    }

    /// Build ACLs: create or update desired ones with their mappings; for an unmanaged
    /// ACL, map again its mappings of relinked LUNs.
    pub(super) fn build_acls(&mut self, tpg: &TpgAddr, d: &Tpg, o: &Tpg, lp: &LunPlan) {
        let acl_names: BTreeSet<&String> = d.acls.keys().chain(o.acls.keys()).collect();
        for init in acl_names {
            let acl = tpg.acl(init);
            match (d.acls.get(init), o.acls.get(init)) {
                (Some(da), None) => {
                    let fresh = Acl {
                        auth: Some(ChapCreds::default()),
                        authentication: None,
                        mapped: BTreeMap::new(),
                        attributes: BTreeMap::new(),
                        extra: BTreeMap::new(),
                        origin: None,
                    };
                    self.acl_settings(&acl, da, &fresh, true);
                    self.build_mappings(&acl, da, &fresh, d, o, lp);
                }
                (Some(da), Some(oa)) => {
                    self.acl_settings(&acl, da, oa, false);
                    self.build_mappings(&acl, da, oa, d, o, lp);
                }
                (None, Some(oa)) if !self.deletable(&acl.object()) => {
                    self.rebuild_unmanaged_mappings(&acl, oa, lp);
                }
                _ => {}
            }
        }
    }

    /// For an unmanaged ACL: re-map its mappings whose TPG LUN is relinked.
    fn rebuild_unmanaged_mappings(&mut self, acl: &AclAddr, oa: &Acl, lp: &LunPlan) {
        for (m, ml) in &oa.mapped {
            if let (Some(t), Some(_)) = (ml.tpg_lun, &ml.link) {
                if lp.relinked.contains(&t) {
                    self.map_to_tpg_lun(&acl.mapped_lun(*m), t, ml.write_protect);
                }
            }
        }
    }

    /// An ACL's own settings (`oa` is a fresh ACL when `new`): create it, its
    /// `authentication` attribute and CHAP credentials; records the ACL's change.
    fn acl_settings(&mut self, acl: &AclAddr, da: &Acl, oa: &Acl, new: bool) {
        let mut ops = Vec::new();
        let mut attrs = Vec::new();
        if new {
            ops.push(Op::CreateAcl { acl: acl.clone() });
        }
        if da.authentication != oa.authentication {
            let show = |v: Option<bool>| match v {
                None => "inherit".to_string(),
                Some(b) => b.to_string(),
            };
            attrs.push(attr(
                "authentication",
                Some(show(oa.authentication)),
                Some(show(da.authentication)),
            ));
            ops.push(Op::SetAclAuthentication {
                acl: acl.clone(),
                value: da.authentication,
                old: if new { None } else { Some(oa.authentication) },
            });
        }
        if let Some(want) = &da.auth {
            let scope = AuthScope::Acl(acl.clone());
            let empty = ChapCreds::default();
            let have = if new {
                None
            } else {
                Some(oa.auth.as_ref().unwrap_or(&empty))
            };
            self.auth_diff(scope, want, have, &mut ops, &mut attrs);
        }
        // Defaulted attributes: the desired value (the kernel default unless the desired
        // state names one); anything else on the live ACL is drift, written back in place
        // (docs/reconcile.md, "Drift"). A new ACL starts at the defaults.
        for a in ACL_DEFAULTED {
            let (want, have) = (a.value_in(&da.attributes), a.value_in(&oa.attributes));
            if want == have {
                continue;
            }
            attrs.push(attr(a.path, Some(have.to_string()), Some(want.to_string())));
            ops.push(Op::SetAclAttribute {
                acl: acl.clone(),
                path: a.path,
                value: want.to_string(),
                old: if new { None } else { Some(have.to_string()) },
            });
        }
        if new {
            self.change(Action::Create, acl.object(), attrs, None);
        } else if !attrs.is_empty() {
            self.change(Action::Update, acl.object(), attrs, None);
        }
        for op in ops {
            self.build(&acl.tpg.target, op);
        }
    }

    /// A desired ACL's mappings: create new ones (with their write protection when it
    /// differs from the kernel's default), map again those whose TPG LUN changed, is
    /// relinked or that are dead, update write protection; kept unmanaged mappings of
    /// a relinked LUN are mapped again.
    fn build_mappings(
        &mut self,
        acl: &AclAddr,
        da: &Acl,
        oa: &Acl,
        d: &Tpg,
        o: &Tpg,
        lp: &LunPlan,
    ) {
        let target = acl.tpg.target.as_str();
        let ids: BTreeSet<u64> = da.mapped.keys().chain(oa.mapped.keys()).copied().collect();
        for m in ids {
            let mapped = acl.mapped_lun(m);
            let mid = mapped.object();
            match (da.mapped.get(&m), oa.mapped.get(&m)) {
                (Some(dm), None) => {
                    let Some(t) = dm.tpg_lun else { continue };
                    self.build(
                        target,
                        Op::CreateMappedLun {
                            mapped: mapped.clone(),
                        },
                    );
                    let wp = dm.write_protect.unwrap_or(false);
                    let set_wp = (wp != self.default_write_protect(d, o, t)).then_some(wp);
                    self.map_to_tpg_lun(&mapped, t, set_wp);
                    self.change(
                        Action::Create,
                        mid,
                        vec![
                            attr("lun", None, Some(t.to_string())),
                            attr("write_protect", None, Some(yes_no(wp))),
                        ],
                        None,
                    );
                }
                (Some(dm), Some(om)) => {
                    let Some(t) = dm.tpg_lun else { continue };
                    let wp = dm.write_protect.unwrap_or(false);
                    let remap = om.link.is_none()
                        || om.tpg_lun != dm.tpg_lun
                        || om.tpg_lun.is_some_and(|x| lp.relinked.contains(&x))
                        || om.write_protect.is_none();
                    if remap {
                        let set_wp = (wp != self.default_write_protect(d, o, t)).then_some(wp);
                        self.map_to_tpg_lun(&mapped, t, set_wp);
                        let mut attrs = Vec::new();
                        if om.tpg_lun != dm.tpg_lun {
                            attrs.push(attr(
                                "lun",
                                om.tpg_lun.map(|x| x.to_string()),
                                Some(t.to_string()),
                            ));
                        }
                        if om.write_protect.is_some() && om.write_protect != Some(wp) {
                            attrs.push(attr(
                                "write_protect",
                                om.write_protect.map(yes_no),
                                Some(yes_no(wp)),
                            ));
                        }
                        let reason = if om.tpg_lun != dm.tpg_lun || om.link.is_none() {
                            None
                        } else if om.write_protect.is_none() {
                            Some(
                                "re-mapped: the mapping is dead (its LUN lost its backstore link)"
                                    .to_string(),
                            )
                        } else {
                            Some("re-mapped: its LUN is re-linked".to_string())
                        };
                        self.change(Action::Update, mid, attrs, reason);
                    } else if om.write_protect != Some(wp) {
                        self.build(
                            target,
                            Op::SetWriteProtect {
                                mapped,
                                value: wp,
                                old: om.write_protect,
                            },
                        );
                        self.change(
                            Action::Update,
                            mid,
                            vec![attr(
                                "write_protect",
                                om.write_protect.map(yes_no),
                                Some(yes_no(wp)),
                            )],
                            None,
                        );
                    }
                }
                (None, Some(om)) => {
                    // Unmanaged mapping kept: re-map if its TPG LUN is relinked.
                    let kept = !self.deletable(&mid)
                        && !om.tpg_lun.is_some_and(|t| lp.removed.contains(&t));
                    if kept {
                        if let (Some(t), Some(_)) = (om.tpg_lun, &om.link) {
                            if lp.relinked.contains(&t) {
                                self.map_to_tpg_lun(&mapped, t, om.write_protect);
                            }
                        }
                    }
                }
                (None, None) => {}
            }
        }
    }
}
