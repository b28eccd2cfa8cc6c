//! Syncing one TPG: make an observed (or fresh) TPG match the desired one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::state::{portal_dir_name, Acl, BackstoreRef, ChapCreds, ObjectId, Tpg};

use super::super::op::{AuthScope, Op, TpgSetting, LINK_NAME};
use super::{attr, yes_no, Differ, LunPlan};
use crate::plan::{Action, AttrChange};

impl Differ<'_> {
    /// Make TPG `o` (observed, or `Tpg::fresh` when `new`) match `d`.
    pub(super) fn sync_tpg(&mut self, target: &str, d: &Tpg, o: &Tpg, new: bool) {
        let tag = d.tag;
        let tpg_id = ObjectId::Tpg {
            target: target.to_string(),
            tag,
        };
        let mut build_ops: Vec<Op> = Vec::new();
        if new {
            build_ops.push(Op::CreateTpg {
                target: target.to_string(),
                tag,
            });
        }

        // --- TPG settings
        let mut attrs = Vec::new();
        let set =
            |value: TpgSetting, old: TpgSetting, ops: &mut Vec<Op>, attrs: &mut Vec<AttrChange>| {
                attrs.push(attr(
                    value.name(),
                    if new { None } else { Some(old.value_string()) },
                    Some(value.value_string()),
                ));
                ops.push(Op::SetTpg {
                    target: target.to_string(),
                    tag,
                    value,
                    old: if new { None } else { Some(old) },
                });
            };
        if d.alias != o.alias {
            set(
                TpgSetting::Alias(d.alias.clone()),
                TpgSetting::Alias(o.alias.clone()),
                &mut build_ops,
                &mut attrs,
            );
        }
        if d.authentication != o.authentication {
            set(
                TpgSetting::Authentication(d.authentication),
                TpgSetting::Authentication(o.authentication),
                &mut build_ops,
                &mut attrs,
            );
        }
        if d.generate_node_acls != o.generate_node_acls {
            set(
                TpgSetting::GenerateNodeAcls(d.generate_node_acls),
                TpgSetting::GenerateNodeAcls(o.generate_node_acls),
                &mut build_ops,
                &mut attrs,
            );
        }
        if let Some(v) = d.demo_mode_write_protect {
            if o.demo_mode_write_protect != Some(v) {
                set(
                    TpgSetting::DemoModeWriteProtect(v),
                    TpgSetting::DemoModeWriteProtect(o.demo_mode_write_protect.unwrap_or(true)),
                    &mut build_ops,
                    &mut attrs,
                );
            }
        }
        if let Some(want) = &d.auth {
            let scope = AuthScope::Tpg {
                target: target.to_string(),
                tag,
            };
            let empty = ChapCreds::default();
            let have = if new {
                None
            } else {
                Some(o.auth.as_ref().unwrap_or(&empty))
            };
            self.auth_diff(scope, want, have, &mut build_ops, &mut attrs);
        }
        if new {
            // Show the whole object on creation, not only what differs from defaults.
            for (n, v) in [
                ("alias", format!("{:?}", d.alias)),
                ("authentication", yes_no(d.authentication)),
                ("generate_node_acls", yes_no(d.generate_node_acls)),
            ] {
                if !attrs.iter().any(|a| a.name == n) {
                    attrs.push(attr(n, None, Some(v)));
                }
            }
            self.change(Action::Create, tpg_id.clone(), attrs, None);
        } else if !attrs.is_empty() || (d.enabled && !o.enabled) {
            if d.enabled && !o.enabled {
                attrs.push(attr("enabled", Some("false".into()), Some("true".into())));
            }
            self.change(Action::Update, tpg_id.clone(), attrs, None);
        }

        // --- LUN decisions
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

        // --- teardown: ACLs and mappings first, then LUNs, then portals
        let acl_names: BTreeSet<&String> = d.acls.keys().chain(o.acls.keys()).collect();
        for init in &acl_names {
            let aid = ObjectId::Acl {
                target: target.to_string(),
                tag,
                initiator: (*init).clone(),
            };
            match (d.acls.get(*init), o.acls.get(*init)) {
                (None, Some(oa)) if self.deletable(&aid) => {
                    let why = self.why_delete(&aid);
                    self.cuts
                        .push((aid.clone(), format!("delete ACL {init:?}")));
                    self.change(Action::Delete, aid.clone(), vec![], why);
                    for (m, ml) in &oa.mapped {
                        self.change(
                            Action::Delete,
                            ObjectId::MappedLun {
                                target: target.to_string(),
                                tag,
                                initiator: (*init).clone(),
                                lun: *m,
                            },
                            vec![],
                            None,
                        );
                        self.emit_unmap(target, tag, init, *m, ml);
                        self.teardown(
                            target,
                            Op::DeleteMappedLun {
                                target: target.to_string(),
                                tag,
                                initiator: (*init).clone(),
                                lun: *m,
                            },
                        );
                    }
                    self.teardown(
                        target,
                        Op::DeleteAcl {
                            target: target.to_string(),
                            tag,
                            initiator: (*init).clone(),
                            auth: oa.auth.clone(),
                            authentication: oa.authentication,
                        },
                    );
                }
                (None, Some(oa)) => {
                    self.plan.unmanaged.push(aid);
                    self.teardown_mappings(target, tag, init, None, oa, &lp);
                }
                (Some(da), Some(oa)) => {
                    self.teardown_mappings(target, tag, init, Some(da), oa, &lp)
                }
                _ => {}
            }
        }
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
                        target: target.to_string(),
                        tag,
                        lun: *l,
                    },
                );
            } else if lp.relinked.contains(l) {
                self.emit_unlink(target, tag, *l, ol);
            }
        }
        let portals: BTreeSet<SocketAddr> =
            d.portals.keys().chain(o.portals.keys()).copied().collect();
        for addr in &portals {
            let pid = ObjectId::Portal {
                target: target.to_string(),
                tag,
                portal: *addr,
            };
            if let (None, Some(op)) = (d.portals.get(addr), o.portals.get(addr)) {
                if self.deletable(&pid) {
                    let why = self.why_delete(&pid);
                    self.change(Action::Delete, pid, vec![], why);
                    self.teardown(
                        target,
                        Op::DeletePortal {
                            target: target.to_string(),
                            tag,
                            portal: *addr,
                            dir: op.dir.clone().unwrap_or_else(|| portal_dir_name(addr)),
                        },
                    );
                } else {
                    self.plan.unmanaged.push(pid);
                }
            }
        }

        // --- build: settings, LUNs, portals, ACLs, mappings, enable
        for op in build_ops {
            self.build(target, op);
        }
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
                            target: target.to_string(),
                            tag,
                            lun: *l,
                        },
                    );
                    if let Some(b) = &dl.backstore {
                        let r = self.desired_ref(b);
                        self.build(
                            target,
                            Op::LinkLun {
                                target: target.to_string(),
                                tag,
                                lun: *l,
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
                                target: target.to_string(),
                                tag,
                                lun: *l,
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
                                target: target.to_string(),
                                tag,
                                lun: *l,
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
        for addr in &portals {
            if let (Some(_), None) = (d.portals.get(addr), o.portals.get(addr)) {
                let pid = ObjectId::Portal {
                    target: target.to_string(),
                    tag,
                    portal: *addr,
                };
                self.check_portal_conflict(target, tag, addr, &pid);
                self.build(
                    target,
                    Op::CreatePortal {
                        target: target.to_string(),
                        tag,
                        portal: *addr,
                        dir: portal_dir_name(addr),
                    },
                );
                self.change(Action::Create, pid, vec![], None);
            }
        }
        for init in &acl_names {
            match (d.acls.get(*init), o.acls.get(*init)) {
                (Some(da), None) => {
                    let fresh = Acl {
                        auth: Some(ChapCreds::default()),
                        authentication: None,
                        mapped: BTreeMap::new(),
                        extra: BTreeMap::new(),
                        origin: None,
                    };
                    self.build_acl(target, tag, init, da, &fresh, true, d, o, &lp);
                }
                (Some(da), Some(oa)) => self.build_acl(target, tag, init, da, oa, false, d, o, &lp),
                (None, Some(oa))
                    if !self.deletable(&ObjectId::Acl {
                        target: target.to_string(),
                        tag,
                        initiator: (*init).clone(),
                    }) =>
                {
                    self.rebuild_unmanaged_mappings(target, tag, init, None, oa, &lp);
                }
                _ => {}
            }
        }
        if d.enabled && !o.enabled {
            self.build(
                target,
                Op::EnableTpg {
                    target: target.to_string(),
                    tag,
                },
            );
        }
    }
}
