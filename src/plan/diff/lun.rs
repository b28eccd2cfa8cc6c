//! TPG LUNs and their backstore links.
//!
//! Owns unlinking a LUN (remembered, so that a deleted backstore's links can be
//! checked), and what a desired link resolves to after the plan (the backstore's
//! HBA may change; a replaced backstore's links are always redone).

use crate::state::{BackstoreRef, ObjectId};

use super::super::op::Op;
use super::Differ;

impl Differ<'_> {
    pub(super) fn emit_unlink(&mut self, target: &str, tag: u16, l: u64, lun: &crate::state::Lun) {
        if let (Some(b), Some(link)) = (&lun.backstore, &lun.link) {
            self.teardown(
                target,
                Op::UnlinkLun {
                    target: target.to_string(),
                    tag,
                    lun: l,
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
}
