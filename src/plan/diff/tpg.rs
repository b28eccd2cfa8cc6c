//! Syncing one TPG: make an observed (or fresh) TPG match the desired one.
//!
//! Owns the schedule of a TPG's sync (`sync_tpg`), the TPG's own settings
//! (attributes, `TargetAlias`, CHAP credentials), its portals, and enabling it
//! last. LUNs are `lun`'s, ACLs and mappings `acl`'s.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::plan::op::{AuthScope, Op, TpgAddr, TpgSetting};
use crate::plan::{Action, AttrChange};
use crate::state::{portal_dir_name, ChapCreds, Tpg, TPG_DEFAULTED};

use super::{attr, yes_no, Differ};

impl Differ<'_> {
    /// Make TPG `o` (observed, or `Tpg::fresh` when `new`) match `d`: teardown of
    /// ACLs and mappings, then LUNs, then portals; then the build of settings, LUNs,
    /// portals, ACLs and mappings, and enable last.
    pub(super) fn sync_tpg(&mut self, target: &str, d: &Tpg, o: &Tpg, new: bool) {
        let tpg = TpgAddr::new(target, d.tag);
        let settings = self.tpg_settings(&tpg, d, o, new);
        let lp = self.plan_luns(&tpg, d, o);

        self.teardown_acls(&tpg, d, o, &lp);
        self.teardown_luns(&tpg, o, &lp);
        self.teardown_portals(&tpg, d, o);

        for op in settings {
            self.build(target, op);
        }
        self.build_luns(&tpg, d, o, &lp);
        self.build_portals(&tpg, d, o);
        self.build_acls(&tpg, d, o, &lp);
        if d.enabled && !o.enabled {
            self.build(target, Op::EnableTpg { tpg });
        }
    }

    /// The TPG's own settings: attributes, `TargetAlias`, CHAP credentials; records the
    /// TPG's change and returns its build ops (`CreateTpg` first when `new`).
    fn tpg_settings(&mut self, tpg: &TpgAddr, d: &Tpg, o: &Tpg, new: bool) -> Vec<Op> {
        let mut build_ops: Vec<Op> = Vec::new();
        if new {
            build_ops.push(Op::CreateTpg { tpg: tpg.clone() });
        }

        let mut attrs = Vec::new();
        let set =
            |value: TpgSetting, old: TpgSetting, ops: &mut Vec<Op>, attrs: &mut Vec<AttrChange>| {
                attrs.push(attr(
                    value.name(),
                    if new { None } else { Some(old.value_string()) },
                    Some(value.value_string()),
                ));
                ops.push(Op::SetTpg {
                    tpg: tpg.clone(),
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
            let scope = AuthScope::Tpg(tpg.clone());
            let empty = ChapCreds::default();
            let have = if new {
                None
            } else {
                Some(o.auth.as_ref().unwrap_or(&empty))
            };
            self.auth_diff(scope, want, have, &mut build_ops, &mut attrs);
        }
        // Defaulted attributes and parameters: the desired value (the kernel default
        // unless the desired state names one); anything else on the live TPG is drift,
        // written back in place (docs/reconcile.md, "Drift"). A new TPG starts at the
        // defaults (`Tpg::fresh`).
        for a in TPG_DEFAULTED {
            let (want, have) = (a.value_in(&d.attributes), a.value_in(&o.attributes));
            if want != have {
                set(
                    TpgSetting::Attribute(a.path, want.to_string()),
                    TpgSetting::Attribute(a.path, have.to_string()),
                    &mut build_ops,
                    &mut attrs,
                );
            }
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
            self.change(Action::Create, tpg.object(), attrs, None);
        } else if !attrs.is_empty() || (d.enabled && !o.enabled) {
            if d.enabled && !o.enabled {
                attrs.push(attr("enabled", Some("false".into()), Some("true".into())));
            }
            self.change(Action::Update, tpg.object(), attrs, None);
        }
        build_ops
    }

    /// Teardown of portals: delete the undesired managed ones.
    fn teardown_portals(&mut self, tpg: &TpgAddr, d: &Tpg, o: &Tpg) {
        let portals: BTreeSet<SocketAddr> =
            d.portals.keys().chain(o.portals.keys()).copied().collect();
        for addr in &portals {
            let pid = tpg.portal_object(*addr);
            if let (None, Some(op)) = (d.portals.get(addr), o.portals.get(addr)) {
                if self.deletable(&pid) {
                    let why = self.why_delete(&pid);
                    self.change(Action::Delete, pid, vec![], why);
                    self.teardown(
                        &tpg.target,
                        Op::DeletePortal {
                            tpg: tpg.clone(),
                            portal: *addr,
                            dir: op.dir.clone().unwrap_or_else(|| portal_dir_name(addr)),
                        },
                    );
                } else {
                    self.plan.unmanaged.push(pid);
                }
            }
        }
    }

    /// Build portals: create the missing ones, refused if they collide with a portal
    /// that stays.
    fn build_portals(&mut self, tpg: &TpgAddr, d: &Tpg, o: &Tpg) {
        let portals: BTreeSet<SocketAddr> =
            d.portals.keys().chain(o.portals.keys()).copied().collect();
        for addr in &portals {
            if let (Some(_), None) = (d.portals.get(addr), o.portals.get(addr)) {
                let pid = tpg.portal_object(*addr);
                self.check_portal_conflict(tpg, addr);
                self.build(
                    &tpg.target,
                    Op::CreatePortal {
                        tpg: tpg.clone(),
                        portal: *addr,
                        dir: portal_dir_name(addr),
                    },
                );
                self.change(Action::Create, pid, vec![], None);
            }
        }
    }
}
