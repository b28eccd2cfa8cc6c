//! The diff: desired × observed → [`Plan`]. Pure.
//!
//! Object by object (backstores, discovery auth, targets → TPGs → portals, LUNs,
//! ACLs → mapped LUNs), attribute by attribute, only managed attributes, and only
//! what differs from the observed value (or, for an object this plan creates, from
//! the kernel's default right after creation — docs/configfs.md §2.4/§3.3), so a
//! no-op apply writes nothing.
//!
//! Order (docs/configfs.md §4): teardown first (TPG disable, unmap, unlink, rmdir in
//! reverse dependency order), then backstores (control → enable → serial/attributes,
//! before any LUN links them), then the fabric, then targets (TPG, attributes, LUNs,
//! portals, ACLs and their mappings, enable last). A backstore whose frozen
//! attributes change while linked is replaced: its LUN links are removed in the
//! teardown phase and made again in the targets phase, with every mapping of those
//! LUNs re-created (§4.2: re-linking does not revive them).
//!
//! Safety: objects neither desired nor managed are left alone and listed, unless
//! `prune`; changes that cut logged-in sessions are refused unless `force`;
//! backing files are created or grown, never shrunk.
//!
//! Layout, by object family (each is an `impl Differ` block over the shared state
//! defined here):
//! - this file: the entry point [`diff`], [`DiffOptions`], the `Differ` state and
//!   its bookkeeping (lanes, changes, refusals), the walk over targets, assembling
//!   the [`Plan`], and [`sort_key`], the display order;
//! - `host`: facts about backing files and block devices (sizes, refusals);
//! - `backstore`: storage objects and their HBAs (create, update, replace, delete);
//! - `discovery`: the iSCSI fabric, discovery auth, and CHAP credential diffs;
//! - `target`: targets, whole-TPG deletion, unmanaged TPGs;
//! - `tpg`: syncing one TPG (its schedule, settings, portals, enable);
//! - `lun`: TPG LUNs and their backstore links;
//! - `acl`: ACLs, mapped LUNs and their write protection;
//! - `safety`: the rules that refuse a plan or warn (objects isctl does not
//!   manage, portal conflicts, dangling links, sessions a plan would cut).
//!
//! Section numbers (§) refer to docs/configfs.md.

use std::collections::{BTreeMap, BTreeSet};

use crate::state::{HostFacts, ObjectId, Observed, Session, State};

use super::op::{Lane, Op, Phase, TpgAddr};
use super::{Action, AttrChange, Change, Plan, PlannedOp, Refusal};

mod acl;
mod backstore;
mod discovery;
mod host;
mod lun;
mod safety;
mod target;
#[cfg(test)]
mod tests;
mod tpg;

use lun::LunPlan;

/// Switches of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiffOptions {
    /// Also delete live objects that are neither desired nor managed.
    pub prune: bool,
    /// Allow changes that cut logged-in sessions.
    pub force: bool,
}

/// Compute the plan that makes `observed` match `desired`.
///
/// `managed` is the ledger's set of objects isctl manages; `host` holds facts about
/// the backing files and devices `desired` names.
pub fn diff(
    desired: &State,
    observed: &Observed,
    host: &HostFacts,
    managed: &BTreeSet<ObjectId>,
    opts: &DiffOptions,
) -> Plan {
    let mut d = Differ {
        d: desired,
        o: &observed.state,
        sessions: &observed.sessions,
        host,
        managed,
        opts: *opts,
        plan: Plan {
            force: opts.force,
            prune: opts.prune,
            ..Plan::default()
        },
        lanes: BTreeMap::new(),
        cuts: Vec::new(),
        replaced: BTreeSet::new(),
        deleted_backstores: Vec::new(),
        unlinked: BTreeSet::new(),
        hba_of: BTreeMap::new(),
        used_hba_numbers: BTreeSet::new(),
        resolved_sizes: BTreeMap::new(),
        link_index: BTreeMap::new(),
    };
    d.run();
    d.finish()
}

struct Differ<'a> {
    d: &'a State,
    o: &'a State,
    sessions: &'a [Session],
    host: &'a HostFacts,
    managed: &'a BTreeSet<ObjectId>,
    opts: DiffOptions,
    plan: Plan,
    lanes: BTreeMap<(Phase, Lane), Vec<Op>>,
    /// Objects whose change cuts the sessions that use them, with the change.
    cuts: Vec<(ObjectId, String)>,
    /// Backstores deleted and created again: every LUN link to them is redone.
    replaced: BTreeSet<String>,
    /// Backstores deleted (name, HBA): no link may remain.
    deleted_backstores: Vec<(String, String)>,
    /// TPG LUNs whose backstore link this plan removes.
    unlinked: BTreeSet<ObjectId>,
    /// The HBA each desired backstore lives in after the plan.
    hba_of: BTreeMap<String, String>,
    used_hba_numbers: BTreeSet<u64>,
    /// File extents' sizes as resolved against the host (model size or file size).
    resolved_sizes: BTreeMap<String, u64>,
    /// Observed LUN links by backstore name: (HBA, LUN).
    link_index: BTreeMap<String, Vec<(Option<String>, ObjectId)>>,
}

fn attr(name: &str, old: Option<String>, new: Option<String>) -> AttrChange {
    AttrChange {
        name: name.to_string(),
        old,
        new,
        sensitive: false,
        forces_replacement: false,
    }
}

fn yes_no(b: bool) -> String {
    b.to_string()
}

impl<'a> Differ<'a> {
    fn emit(&mut self, phase: Phase, lane: Lane, op: Op) {
        self.lanes.entry((phase, lane)).or_default().push(op);
    }

    fn teardown(&mut self, target: &str, op: Op) {
        self.emit(Phase::Teardown, Lane::Target(target.to_string()), op);
    }

    fn build(&mut self, target: &str, op: Op) {
        self.emit(Phase::Targets, Lane::Target(target.to_string()), op);
    }

    fn change(
        &mut self,
        action: Action,
        object: ObjectId,
        attributes: Vec<AttrChange>,
        reason: Option<String>,
    ) {
        self.plan.changes.push(Change {
            action,
            address: object.to_string(),
            object,
            attributes,
            reason,
            notes: Vec::new(),
        });
    }

    fn note_last(&mut self, note: String) {
        if let Some(c) = self.plan.changes.last_mut() {
            c.notes.push(note);
        }
    }

    fn refuse(
        &mut self,
        kind: &'static str,
        object: Option<ObjectId>,
        problem: String,
        fix: String,
    ) {
        let origin = object.as_ref().and_then(|o| self.origin_of(o));
        self.plan.refusals.push(Refusal {
            kind,
            object,
            origin,
            problem,
            fix,
        });
    }

    fn origin_of(&self, id: &ObjectId) -> Option<crate::model::Origin> {
        match id {
            ObjectId::Backstore { name } => self.d.backstores.get(name)?.origin.clone(),
            ObjectId::Target { target } => self.d.targets.get(target)?.origin.clone(),
            ObjectId::Tpg { target, tag }
            | ObjectId::Portal { target, tag, .. }
            | ObjectId::Lun { target, tag, .. }
            | ObjectId::Acl { target, tag, .. }
            | ObjectId::MappedLun { target, tag, .. } => {
                self.d.targets.get(target)?.tpgs.get(tag)?.origin.clone()
            }
            ObjectId::DiscoveryAuth | ObjectId::PortalGroup { .. } => None,
        }
    }

    /// May this observed, undesired object be deleted?
    fn deletable(&self, id: &ObjectId) -> bool {
        self.opts.prune || self.managed.contains(id)
    }

    fn why_delete(&self, id: &ObjectId) -> Option<String> {
        if self.managed.contains(id) {
            None
        } else {
            Some("not managed by isctl; deleted because of --prune".to_string())
        }
    }

    /// The observed LUNs linking backstore `name` (in `hba`, or any HBA).
    fn links_to(&self, name: &str, hba: Option<&str>) -> Vec<ObjectId> {
        self.link_index
            .get(name)
            .map(|v| {
                v.iter()
                    .filter(|(h, _)| hba.is_none() || h.as_deref() == hba)
                    .map(|(_, id)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn run(&mut self) {
        for (tname, t) in &self.o.targets {
            for (tag, tpg) in &t.tpgs {
                for (l, lun) in &tpg.luns {
                    if let Some(b) = &lun.backstore {
                        self.link_index.entry(b.name.clone()).or_default().push((
                            b.hba.clone(),
                            ObjectId::Lun {
                                target: tname.clone(),
                                tag: *tag,
                                lun: *l,
                            },
                        ));
                    }
                }
            }
        }
        for name in self.o.hbas.keys() {
            if let Some((_, n)) = name.rsplit_once('_') {
                if let Ok(n) = n.parse::<u64>() {
                    self.used_hba_numbers.insert(n);
                }
            }
        }
        self.backstores();
        self.fabric();
        let names: BTreeSet<&String> = self.d.targets.keys().chain(self.o.targets.keys()).collect();
        for name in names {
            match (self.d.targets.get(name), self.o.targets.get(name)) {
                (Some(dt), None) => self.create_target(dt),
                (None, Some(ot)) => {
                    let id = ObjectId::Target {
                        target: name.clone(),
                    };
                    if self.deletable(&id) {
                        let why = self.why_delete(&id);
                        self.delete_target(ot, why);
                    } else {
                        self.plan.unmanaged.push(id);
                        for (tag, tpg) in &ot.tpgs {
                            self.touch_unmanaged_tpg(&TpgAddr::new(name, *tag), tpg);
                        }
                    }
                }
                (Some(dt), Some(ot)) => self.update_target(dt, ot),
                (None, None) => {}
            }
        }
        self.check_backstore_links();
        self.foreign_warnings();
    }

    fn finish(mut self) -> Plan {
        self.cut_sessions();
        // Ops in schedule order.
        for ((phase, lane), ops) in std::mem::take(&mut self.lanes) {
            for op in ops {
                self.plan.ops.push(PlannedOp {
                    phase,
                    lane: lane.clone(),
                    op,
                    backend_operations: 0,
                });
            }
        }
        self.plan
            .changes
            .sort_by_cached_key(|c| (sort_key(&c.object), c.action));
        self.plan.unmanaged.sort_by_cached_key(sort_key);
        self.plan.unmanaged.dedup();
        self.plan.ledger_after = self.d.object_ids().into_iter().collect();
        let mut attrs = crate::state::managed_attributes(self.d);
        for (name, size) in &self.resolved_sizes {
            if let Some(a) = attrs.get_mut(&ObjectId::Backstore { name: name.clone() }) {
                a.insert("size".into(), size.to_string());
            }
        }
        self.plan.applied_attributes = attrs;
        self.plan
    }
}

/// Display order: backstores, discovery, then each target with its objects nested.
pub fn sort_key(id: &ObjectId) -> (u8, String, u16, u8, String, u64) {
    match id {
        ObjectId::Backstore { name } => (0, name.clone(), 0, 0, String::new(), 0),
        ObjectId::DiscoveryAuth => (1, String::new(), 0, 0, String::new(), 0),
        ObjectId::PortalGroup { name } => (1, name.clone(), 0, 0, String::new(), 0),
        ObjectId::Target { target } => (2, target.clone(), 0, 0, String::new(), 0),
        ObjectId::Tpg { target, tag } => (2, target.clone(), *tag, 1, String::new(), 0),
        ObjectId::Portal {
            target,
            tag,
            portal,
        } => (2, target.clone(), *tag, 2, portal.to_string(), 0),
        ObjectId::Lun { target, tag, lun } => (2, target.clone(), *tag, 3, String::new(), *lun),
        ObjectId::Acl {
            target,
            tag,
            initiator,
        } => (2, target.clone(), *tag, 4, initiator.clone(), 0),
        ObjectId::MappedLun {
            target,
            tag,
            initiator,
            lun,
        } => (2, target.clone(), *tag, 4, initiator.clone(), lun + 1),
    }
}
