//! The iSCSI fabric directory, discovery auth, and CHAP credential diffs.
//!
//! Owns creating the fabric, discovery enforcement and credentials (credentials are
//! written before enforcement is turned on), and [`Differ::auth_diff`], the
//! field-by-field CHAP comparison that TPG and ACL auth use too.

use crate::plan::op::{AuthScope, Lane, Op, Phase};
use crate::plan::{Action, AttrChange};
use crate::state::{AuthField, AuthValue, ChapCreds, ObjectId};

use super::{attr, yes_no, Differ};

impl Differ<'_> {
    pub(super) fn fabric(&mut self) {
        if self.d.fabric && !self.o.fabric {
            self.emit(Phase::Fabric, Lane::Fabric, Op::CreateFabric);
        }
        let Some(dd) = &self.d.discovery else {
            return;
        };
        let od = self.o.discovery.clone().unwrap_or_default();
        let mut attrs = Vec::new();
        let mut ops = Vec::new();
        let turn_on = dd.enforce && !od.enforce;
        if dd.enforce != od.enforce && !turn_on {
            ops.push(Op::SetDiscoveryEnforce {
                value: dd.enforce,
                old: od.enforce,
            });
        }
        if dd.enforce {
            self.auth_diff(
                AuthScope::Discovery,
                &dd.creds,
                Some(&od.creds),
                &mut ops,
                &mut attrs,
            );
        }
        if turn_on {
            // Credentials first, then enforcement: never a window where discovery
            // demands CHAP with no credentials.
            ops.push(Op::SetDiscoveryEnforce {
                value: true,
                old: false,
            });
        }
        if dd.enforce != od.enforce {
            attrs.insert(
                0,
                attr(
                    "enforce",
                    Some(yes_no(od.enforce)),
                    Some(yes_no(dd.enforce)),
                ),
            );
        }
        if ops.is_empty() {
            return;
        }
        for op in ops {
            self.emit(Phase::Fabric, Lane::Fabric, op);
        }
        let action = if self.o.discovery.is_some() {
            Action::Update
        } else {
            Action::Create
        };
        self.change(action, ObjectId::DiscoveryAuth, attrs, None);
    }

    /// Compare CHAP credentials field by field; push `SetAuth` ops and attribute
    /// changes. `old` `None`: a new object (defaults are empty).
    pub(super) fn auth_diff(
        &self,
        scope: AuthScope,
        want: &ChapCreds,
        have: Option<&ChapCreds>,
        ops: &mut Vec<Op>,
        attrs: &mut Vec<AttrChange>,
    ) {
        let empty = ChapCreds::default();
        let cur = have.unwrap_or(&empty);
        for field in AuthField::ALL {
            let w = want.get(field);
            let c = cur.get(field);
            if w == c {
                continue;
            }
            let render = |v: &AuthValue| -> Option<String> {
                if v.is_empty() {
                    None
                } else {
                    Some(v.to_string())
                }
            };
            attrs.push(AttrChange {
                name: format!("chap_{}", field.file()),
                old: if have.is_some() { render(&c) } else { None },
                new: render(&w),
                sensitive: field.is_secret(),
                forces_replacement: false,
            });
            ops.push(Op::SetAuth {
                scope: scope.clone(),
                field,
                value: w,
                old: have.map(|_| c),
            });
        }
    }
}
