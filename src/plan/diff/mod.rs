//! The diff: desired × observed → [`Plan`]. Pure.
//!
//! Object by object (backstores, discovery auth, targets → TPGs → portals, LUNs,
//! ACLs → mapped LUNs), attribute by attribute, only managed attributes, and only
//! what differs from the observed value (or, for an object this plan creates, from
//! the kernel's default right after creation — lio-configfs.md §2.4/§3.3), so a
//! no-op apply writes nothing.
//!
//! Order (lio-configfs.md §4): teardown first (TPG disable, unmap, unlink, rmdir in
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

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::state::{
    portal_dir_name, portals_conflict, tpg_object_ids, Acl, AuthField, AuthValue, Backstore,
    BackstoreKind, BackstoreRef, ChapCreds, DeviceFact, FileFact, HostFacts, MappedLun, ObjectId,
    Observed, Session, State, Target, Tpg, DEFAULT_COMPANY_ID,
};

use super::op::{AuthScope, BackstoreSetting, Lane, Op, Phase, TpgSetting, TpgSnapshot, LINK_NAME};
use super::{Action, AttrChange, Change, Plan, PlannedOp, Refusal, SessionCut};

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

/// Per-TPG decisions about LUNs, made before ops are emitted (unmaps must precede
/// unlinks in the teardown lane).
#[derive(Default)]
struct LunPlan {
    /// Deleted TPG LUNs.
    removed: BTreeSet<u64>,
    /// Unlinked in teardown and linked again in the targets phase.
    relinked: BTreeSet<u64>,
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
            ObjectId::DiscoveryAuth => None,
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
                            self.touch_unmanaged_tpg(name, *tag, tpg);
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

    // ------------------------------------------------------------------ backstores

    fn alloc_hba(&mut self, plugin: &str) -> String {
        let mut n = 0u64;
        while self.used_hba_numbers.contains(&n) {
            n += 1;
        }
        self.used_hba_numbers.insert(n);
        format!("{plugin}_{n}")
    }

    /// Resolve a file extent's size from the model, the file and the live object;
    /// emit host ops into the backstore's lane. `None` when refused.
    fn resolve_file(
        &mut self,
        name: &str,
        path: &std::path::Path,
        model_size: Option<u64>,
        live_size: Option<u64>,
    ) -> Option<u64> {
        let id = ObjectId::Backstore {
            name: name.to_string(),
        };
        let lane = Lane::Backstore(name.to_string());
        let fact = self.host.files.get(path).cloned();
        match fact {
            Some(FileFact::Missing { parent_exists }) => {
                if !parent_exists {
                    let parent = path
                        .parent()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    self.refuse(
                        "backing_file",
                        Some(id),
                        format!(
                            "backing file {} does not exist and its directory {parent} does not exist either",
                            path.display()
                        ),
                        format!("create {parent}, or correct the path"),
                    );
                    return None;
                }
                let Some(size) = model_size.or(live_size) else {
                    self.refuse(
                        "backing_file",
                        Some(id),
                        format!(
                            "backing file {} does not exist and the model gives no size",
                            path.display()
                        ),
                        "add `size` to the extent so that isctl can create the file".to_string(),
                    );
                    return None;
                };
                self.emit(
                    Phase::Backstores,
                    lane,
                    Op::CreateBackingFile {
                        backstore: name.to_string(),
                        path: path.to_path_buf(),
                        size,
                    },
                );
                Some(size)
            }
            Some(FileFact::Regular { size: file_size }) => {
                let want = match model_size {
                    Some(s) => s,
                    // No size in the model: the file's size, but never less than what
                    // initiators already see.
                    None => file_size.max(live_size.unwrap_or(0)),
                };
                if want == 0 {
                    self.refuse(
                        "backing_file",
                        Some(id),
                        format!(
                            "backing file {} is empty and the model gives no size",
                            path.display()
                        ),
                        "add `size` to the extent".to_string(),
                    );
                    return None;
                }
                if want < file_size {
                    self.refuse(
                        "shrink",
                        Some(id),
                        format!(
                            "the model's size {want} is smaller than backing file {} ({file_size} bytes); isctl never shrinks a backing file",
                            path.display()
                        ),
                        format!("set size to at least {file_size}, or remove `size` to use the file's size"),
                    );
                    return None;
                }
                if let Some(live) = live_size {
                    if want < live {
                        self.refuse(
                            "shrink",
                            Some(id),
                            format!(
                                "the model's size {want} is smaller than the LUN's current capacity {live}; shrinking a LUN under its initiators loses their data"
                            ),
                            format!("set size to at least {live}"),
                        );
                        return None;
                    }
                }
                if want > file_size {
                    self.emit(
                        Phase::Backstores,
                        lane,
                        Op::GrowBackingFile {
                            backstore: name.to_string(),
                            path: path.to_path_buf(),
                            from: file_size,
                            to: want,
                        },
                    );
                }
                Some(want)
            }
            Some(FileFact::NotRegular { what }) => {
                self.refuse(
                    "backing_file",
                    Some(id),
                    format!("{} is {what}, not a regular file", path.display()),
                    "use type = \"block\" for block devices, or correct the path".to_string(),
                );
                None
            }
            Some(FileFact::Unknown { error }) => {
                self.refuse(
                    "backing_file",
                    Some(id),
                    format!("cannot inspect backing file {}: {error}", path.display()),
                    "check the path and permissions".to_string(),
                );
                None
            }
            None => {
                self.refuse(
                    "backing_file",
                    Some(id),
                    format!(
                        "no facts about backing file {} were gathered",
                        path.display()
                    ),
                    "this is a bug in the backend's host inspection".to_string(),
                );
                None
            }
        }
    }

    /// The kernel's value of `block_size` / `is_nonrot` right after enable (§2.4);
    /// `None` when it depends on a device isctl could not inspect.
    fn defaults_after_enable(&self, kind: &BackstoreKind) -> (Option<u32>, Option<bool>) {
        match kind {
            BackstoreKind::File { .. } => (Some(512), Some(false)),
            BackstoreKind::Ramdisk { .. } => (Some(512), Some(true)),
            BackstoreKind::Block { device, .. } => match self.host.devices.get(device) {
                Some(DeviceFact::Block {
                    logical_block_size,
                    rotational,
                }) => (*logical_block_size, rotational.map(|r| !r)),
                _ => (None, None),
            },
            BackstoreKind::Other { .. } => (None, None),
        }
    }

    fn check_device(&mut self, name: &str, kind: &BackstoreKind) -> bool {
        if let BackstoreKind::Block { device, .. } = kind {
            let id = ObjectId::Backstore {
                name: name.to_string(),
            };
            match self.host.devices.get(device) {
                Some(DeviceFact::Block { .. }) => {}
                Some(DeviceFact::Missing) | None => {
                    self.refuse(
                        "device",
                        Some(id),
                        format!("block device {} does not exist", device.display()),
                        "correct the device path".to_string(),
                    );
                    return false;
                }
                Some(DeviceFact::NotBlock { what }) => {
                    self.refuse(
                        "device",
                        Some(id),
                        format!("{} is {what}, not a block device", device.display()),
                        "use type = \"file\" for regular files, or correct the path".to_string(),
                    );
                    return false;
                }
            }
        }
        true
    }

    /// Ops creating `db` in `hba` (host ops already emitted), plus its settings that
    /// differ from the kernel's defaults after enable.
    fn emit_create_backstore(
        &mut self,
        db: &Backstore,
        kind: BackstoreKind,
        hba: &str,
        create_hba: bool,
    ) {
        let lane = Lane::Backstore(db.name.clone());
        let (bs_default, nonrot_default) = self.defaults_after_enable(&kind);
        self.emit(
            Phase::Backstores,
            lane.clone(),
            Op::CreateBackstore {
                name: db.name.clone(),
                hba: hba.to_string(),
                create_hba,
                kind,
            },
        );
        let mut settings = Vec::new();
        // The kernel does not generate a serial (§2.3): always written.
        if !db.serial.is_empty() {
            settings.push(BackstoreSetting::Serial(db.serial.clone()));
        }
        if db.company_id != DEFAULT_COMPANY_ID {
            settings.push(BackstoreSetting::CompanyId(db.company_id));
        }
        if bs_default != Some(db.block_size) {
            settings.push(BackstoreSetting::BlockSize(db.block_size));
        }
        if let Some(n) = db.nonrotational {
            if nonrot_default != Some(n) {
                settings.push(BackstoreSetting::Nonrotational(n));
            }
        }
        for value in settings {
            self.emit(
                Phase::Backstores,
                lane.clone(),
                Op::SetBackstore {
                    name: db.name.clone(),
                    hba: hba.to_string(),
                    value,
                    old: None,
                },
            );
        }
    }

    fn backstore_attrs(db: &Backstore, kind: &BackstoreKind) -> Vec<AttrChange> {
        let mut a = vec![attr("type", None, Some(kind.type_name().to_string()))];
        match kind {
            BackstoreKind::File {
                path,
                size,
                write_back,
            } => {
                a.push(attr(
                    "path",
                    None,
                    Some(format!("{:?}", path.display().to_string())),
                ));
                a.push(attr("size", None, size.map(|s| s.to_string())));
                if *write_back {
                    a.push(attr("write_back", None, Some("true".to_string())));
                }
            }
            BackstoreKind::Block { device, readonly } => {
                a.push(attr(
                    "device",
                    None,
                    Some(format!("{:?}", device.display().to_string())),
                ));
                a.push(attr("readonly", None, Some(yes_no(*readonly))));
            }
            BackstoreKind::Ramdisk { size } => a.push(attr("size", None, Some(size.to_string()))),
            BackstoreKind::Other { plugin } => a.push(attr("plugin", None, Some(plugin.clone()))),
        }
        a.push(attr("block_size", None, Some(db.block_size.to_string())));
        a.push(attr("serial", None, Some(format!("{:?}", db.serial))));
        if db.company_id != DEFAULT_COMPANY_ID {
            a.push(attr(
                "company_id",
                None,
                Some(format!("0x{:06x}", db.company_id)),
            ));
        }
        if let Some(n) = db.nonrotational {
            a.push(attr("nonrotational", None, Some(yes_no(n))));
        }
        a
    }

    fn backstores(&mut self) {
        let names: BTreeSet<&String> = self
            .d
            .backstores
            .keys()
            .chain(self.o.backstores.keys())
            .collect();
        for name in names {
            match (self.d.backstores.get(name), self.o.backstores.get(name)) {
                (Some(db), None) => self.create_backstore(db),
                (None, Some(ob)) => {
                    let id = ObjectId::Backstore { name: name.clone() };
                    if self.deletable(&id) {
                        let why = self.why_delete(&id);
                        self.delete_backstore(ob, why);
                    } else {
                        self.plan.unmanaged.push(id);
                    }
                }
                (Some(db), Some(ob)) => self.update_backstore(db, ob),
                (None, None) => {}
            }
        }
        let shadowed = self.o.shadowed_backstores.clone();
        for sb in &shadowed {
            let hba = sb.hba.clone().unwrap_or_default();
            if self.opts.prune {
                self.delete_backstore(
                    sb,
                    Some(format!(
                        "a second backstore named {:?} (in {hba}); deleted because of --prune",
                        sb.name
                    )),
                );
            } else {
                self.plan.warnings.push(format!(
                    "backstore {:?} in {hba} has the same name as another backstore; isctl leaves it alone (--prune deletes it)",
                    sb.name
                ));
            }
        }
    }

    fn resolved_kind(
        &mut self,
        db: &Backstore,
        live: Option<&BackstoreKind>,
    ) -> Option<BackstoreKind> {
        match &db.kind {
            BackstoreKind::File {
                path,
                size,
                write_back,
            } => {
                let live_size = match live {
                    Some(BackstoreKind::File {
                        path: lp, size: ls, ..
                    }) if lp == path => *ls,
                    _ => None,
                };
                let s = self.resolve_file(&db.name, path, *size, live_size)?;
                self.resolved_sizes.insert(db.name.clone(), s);
                Some(BackstoreKind::File {
                    path: path.clone(),
                    size: Some(s),
                    write_back: *write_back,
                })
            }
            other => {
                if !self.check_device(&db.name, other) {
                    return None;
                }
                Some(other.clone())
            }
        }
    }

    fn create_backstore(&mut self, db: &Backstore) {
        let Some(kind) = self.resolved_kind(db, None) else {
            return;
        };
        let hba = self.alloc_hba(kind.plugin());
        self.hba_of.insert(db.name.clone(), hba.clone());
        let attrs = Self::backstore_attrs(db, &kind);
        self.emit_create_backstore(db, kind.clone(), &hba, true);
        self.change(
            Action::Create,
            ObjectId::Backstore {
                name: db.name.clone(),
            },
            attrs,
            None,
        );
        if let BackstoreKind::File {
            path,
            size: Some(s),
            ..
        } = &kind
        {
            if matches!(self.host.files.get(path), Some(FileFact::Missing { .. })) {
                self.note_last(format!(
                    "backing file {} will be created sparse ({s} bytes)",
                    path.display()
                ));
            }
        }
    }

    fn delete_backstore(&mut self, ob: &Backstore, reason: Option<String>) {
        let hba = ob.hba.clone().unwrap_or_default();
        let delete_hba = self.o.hbas.get(&hba).copied().unwrap_or(1) <= 1;
        self.emit(
            Phase::Backstores,
            Lane::Backstore(ob.name.clone()),
            Op::DeleteBackstore {
                backstore: Box::new(ob.clone()),
                hba: hba.clone(),
                delete_hba,
            },
        );
        self.deleted_backstores.push((ob.name.clone(), hba));
        self.change(
            Action::Delete,
            ObjectId::Backstore {
                name: ob.name.clone(),
            },
            vec![],
            reason,
        );
        if let BackstoreKind::File { path, .. } = &ob.kind {
            self.note_last(format!("backing file {} is kept", path.display()));
        }
    }

    fn update_backstore(&mut self, db: &Backstore, ob: &Backstore) {
        let id = ObjectId::Backstore {
            name: db.name.clone(),
        };
        let Some(kind) = self.resolved_kind(db, Some(&ob.kind)) else {
            // Refused; keep the live object's HBA so that LUN links stay coherent.
            if let Some(h) = &ob.hba {
                self.hba_of.insert(db.name.clone(), h.clone());
            }
            return;
        };
        let ohba = ob.hba.clone().unwrap_or_default();
        let links = self.links_to(&ob.name, ob.hba.as_deref());
        let mut replace: Vec<String> = Vec::new();
        let mut attrs: Vec<AttrChange> = Vec::new();
        let mut settings: Vec<(BackstoreSetting, BackstoreSetting)> = Vec::new();

        if !ob.configured {
            replace.push("the live object was never enabled".to_string());
        }
        match (&kind, &ob.kind) {
            (
                BackstoreKind::File {
                    path: p1,
                    size: s1,
                    write_back: w1,
                },
                BackstoreKind::File {
                    path: p2,
                    size: s2,
                    write_back: w2,
                },
            ) => {
                if w1 != w2 {
                    // fd_buffered_io is read when the object is enabled and there is no
                    // disable (§2.1, §2.2): only a new object changes it.
                    let mut a = attr("write_back", Some(w2.to_string()), Some(w1.to_string()));
                    a.forces_replacement = true;
                    attrs.push(a);
                    replace.push("write-back caching is fixed when LIO enables the object".into());
                }
                if p1 != p2 {
                    let mut a = attr(
                        "path",
                        Some(format!("{:?}", p2.display().to_string())),
                        Some(format!("{:?}", p1.display().to_string())),
                    );
                    a.forces_replacement = true;
                    attrs.push(a);
                    replace.push("the backing path changed".into());
                } else if s1 != s2 {
                    attrs.push(attr(
                        "size",
                        s2.map(|s| s.to_string()),
                        s1.map(|s| s.to_string()),
                    ));
                    if let (Some(new), Some(old)) = (s1, s2) {
                        settings.push((
                            BackstoreSetting::FileSize(*new),
                            BackstoreSetting::FileSize(*old),
                        ));
                    } else if let Some(new) = s1 {
                        settings.push((
                            BackstoreSetting::FileSize(*new),
                            BackstoreSetting::FileSize(0),
                        ));
                    }
                }
            }
            (
                BackstoreKind::Block {
                    device: d1,
                    readonly: r1,
                },
                BackstoreKind::Block {
                    device: d2,
                    readonly: r2,
                },
            ) => {
                if d1 != d2 {
                    let mut a = attr(
                        "device",
                        Some(format!("{:?}", d2.display().to_string())),
                        Some(format!("{:?}", d1.display().to_string())),
                    );
                    a.forces_replacement = true;
                    attrs.push(a);
                    replace.push("the device changed".into());
                }
                if r1 != r2 {
                    let mut a = attr("readonly", Some(yes_no(*r2)), Some(yes_no(*r1)));
                    a.forces_replacement = true;
                    attrs.push(a);
                    replace.push("readonly is fixed when a block backstore is enabled".into());
                }
            }
            (BackstoreKind::Ramdisk { size: s1 }, BackstoreKind::Ramdisk { size: s2 }) => {
                if s1 != s2 {
                    let mut a = attr("size", Some(s2.to_string()), Some(s1.to_string()));
                    a.forces_replacement = true;
                    attrs.push(a);
                    replace.push("a ramdisk's size is fixed when it is enabled".into());
                }
            }
            (new, old) => {
                let mut a = attr(
                    "type",
                    Some(old.type_name().to_string()),
                    Some(new.type_name().to_string()),
                );
                a.forces_replacement = true;
                attrs.push(a);
                replace.push("the extent type changed".into());
            }
        }
        // Identity and geometry: frozen while any LUN links the object (§2.1, §2.4).
        let frozen = !links.is_empty();
        let frozen_change = |name: &str,
                             old: String,
                             new: String,
                             set: (BackstoreSetting, BackstoreSetting),
                             attrs: &mut Vec<AttrChange>,
                             settings: &mut Vec<(BackstoreSetting, BackstoreSetting)>,
                             replace: &mut Vec<String>| {
            let mut a = attr(name, Some(old), Some(new));
            if frozen {
                a.forces_replacement = true;
                replace.push(format!(
                    "{name} cannot change while {} LUN(s) link the backstore",
                    links.len()
                ));
            } else {
                settings.push(set);
            }
            attrs.push(a);
        };
        if db.serial != ob.serial {
            frozen_change(
                "serial",
                format!("{:?}", ob.serial),
                format!("{:?}", db.serial),
                (
                    BackstoreSetting::Serial(db.serial.clone()),
                    BackstoreSetting::Serial(ob.serial.clone()),
                ),
                &mut attrs,
                &mut settings,
                &mut replace,
            );
        }
        if db.company_id != ob.company_id {
            frozen_change(
                "company_id",
                format!("0x{:06x}", ob.company_id),
                format!("0x{:06x}", db.company_id),
                (
                    BackstoreSetting::CompanyId(db.company_id),
                    BackstoreSetting::CompanyId(ob.company_id),
                ),
                &mut attrs,
                &mut settings,
                &mut replace,
            );
        }
        if db.block_size != ob.block_size {
            frozen_change(
                "block_size",
                ob.block_size.to_string(),
                db.block_size.to_string(),
                (
                    BackstoreSetting::BlockSize(db.block_size),
                    BackstoreSetting::BlockSize(ob.block_size),
                ),
                &mut attrs,
                &mut settings,
                &mut replace,
            );
        }
        if let Some(n) = db.nonrotational {
            if ob.nonrotational != Some(n) {
                attrs.push(attr(
                    "nonrotational",
                    ob.nonrotational.map(yes_no),
                    Some(yes_no(n)),
                ));
                settings.push((
                    BackstoreSetting::Nonrotational(n),
                    BackstoreSetting::Nonrotational(ob.nonrotational.unwrap_or(false)),
                ));
            }
        }

        if !replace.is_empty() {
            let same_plugin = kind.plugin() == ob.kind.plugin() && ob.hba.is_some();
            let (hba, delete_hba, create_hba) = if same_plugin {
                (ohba.clone(), false, false)
            } else {
                let sole = self.o.hbas.get(&ohba).copied().unwrap_or(1) <= 1;
                (
                    self.alloc_hba(kind.plugin()),
                    sole && ob.hba.is_some(),
                    true,
                )
            };
            self.hba_of.insert(db.name.clone(), hba.clone());
            // Drop the settings computed for an in-place update; the create emits
            // what differs from the defaults.
            let _ = settings;
            self.emit(
                Phase::Backstores,
                Lane::Backstore(db.name.clone()),
                Op::DeleteBackstore {
                    backstore: Box::new(ob.clone()),
                    hba: ohba.clone(),
                    delete_hba,
                },
            );
            self.emit_create_backstore(db, kind, &hba, create_hba);
            self.replaced.insert(db.name.clone());
            self.deleted_backstores.push((ob.name.clone(), ohba));
            for l in &links {
                self.cuts
                    .push((l.clone(), format!("replace backstore {:?}", db.name)));
            }
            let mut reason = replace.join("; ");
            if !links.is_empty() {
                reason.push_str(&format!(
                    "; its {} LUN link(s) and their mappings are re-created",
                    links.len()
                ));
            }
            self.change(Action::Replace, id, attrs, Some(reason));
            return;
        }
        self.hba_of.insert(db.name.clone(), ohba.clone());
        if settings.is_empty() {
            return;
        }
        for (value, old) in settings {
            self.emit(
                Phase::Backstores,
                Lane::Backstore(db.name.clone()),
                Op::SetBackstore {
                    name: db.name.clone(),
                    hba: ohba.clone(),
                    value,
                    old: Some(old),
                },
            );
        }
        self.change(Action::Update, id, attrs, None);
        if let BackstoreKind::File {
            path,
            size: Some(s),
            ..
        } = &kind
        {
            if let Some(FileFact::Regular { size: fs }) = self.host.files.get(path) {
                if s > fs {
                    self.note_last(format!(
                        "backing file {} grows from {fs} to {s} bytes",
                        path.display()
                    ));
                }
            }
        }
    }

    // ------------------------------------------------------------------ fabric

    fn fabric(&mut self) {
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
    fn auth_diff(
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

    // ------------------------------------------------------------------ targets

    fn create_target(&mut self, dt: &Target) {
        self.build(
            &dt.name,
            Op::CreateTarget {
                target: dt.name.clone(),
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

    fn delete_target(&mut self, ot: &Target, reason: Option<String>) {
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
                target: ot.name.clone(),
            },
        );
    }

    /// False (and a refusal) when something isctl does not understand sits inside
    /// `id`, so that its deletion would fail with ENOTEMPTY.
    fn foreign_inside(&mut self, id: &ObjectId) -> bool {
        let inside: Vec<String> = self
            .o
            .foreign
            .iter()
            .filter(|f| f.parent.as_ref().is_some_and(|p| p.is_within(id)))
            .map(|f| format!("{} ({})", f.path, f.what))
            .collect();
        if inside.is_empty() {
            return true;
        }
        self.refuse(
            "blocked",
            Some(id.clone()),
            format!(
                "cannot delete it: it contains {}, which isctl does not manage",
                inside.join(", ")
            ),
            "remove those entries by hand first".to_string(),
        );
        false
    }

    fn update_target(&mut self, dt: &Target, ot: &Target) {
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

    fn delete_tpg(&mut self, target: &str, tag: u16, o: &Tpg, reason: Option<String>) {
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
                    target: target.to_string(),
                    tag,
                },
            );
        }
        for (init, acl) in &o.acls {
            for (m, ml) in &acl.mapped {
                self.emit_unmap(target, tag, init, *m, ml);
                self.teardown(
                    target,
                    Op::DeleteMappedLun {
                        target: target.to_string(),
                        tag,
                        initiator: init.clone(),
                        lun: *m,
                    },
                );
            }
            self.teardown(
                target,
                Op::DeleteAcl {
                    target: target.to_string(),
                    tag,
                    initiator: init.clone(),
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
                    target: target.to_string(),
                    tag,
                    lun: *l,
                },
            );
        }
        for (addr, p) in &o.portals {
            self.teardown(
                target,
                Op::DeletePortal {
                    target: target.to_string(),
                    tag,
                    portal: *addr,
                    dir: p.dir.clone().unwrap_or_else(|| portal_dir_name(addr)),
                },
            );
        }
        self.teardown(
            target,
            Op::DeleteTpg {
                target: target.to_string(),
                tag,
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

    fn emit_unmap(&mut self, target: &str, tag: u16, init: &str, m: u64, ml: &MappedLun) {
        if let (Some(tpg_lun), Some(link)) = (ml.tpg_lun, &ml.link) {
            self.teardown(
                target,
                Op::UnmapLun {
                    target: target.to_string(),
                    tag,
                    initiator: init.to_string(),
                    lun: m,
                    tpg_lun,
                    link: link.clone(),
                    write_protect: ml.write_protect,
                },
            );
        }
    }

    fn emit_unlink(&mut self, target: &str, tag: u16, l: u64, lun: &crate::state::Lun) {
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

    /// An unmanaged TPG (or one in an unmanaged target): left alone, except that LUN
    /// links to a replaced backstore must be redone (with their mappings) or they
    /// would dangle.
    fn touch_unmanaged_tpg(&mut self, target: &str, tag: u16, o: &Tpg) {
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
                        target: target.to_string(),
                        tag,
                        lun: *l,
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
                            target: target.to_string(),
                            tag,
                            initiator: init.clone(),
                            lun: *m,
                            tpg_lun: t,
                            link: LINK_NAME.to_string(),
                        },
                    );
                    if let Some(wp) = ml.write_protect {
                        self.build(
                            target,
                            Op::SetWriteProtect {
                                target: target.to_string(),
                                tag,
                                initiator: init.clone(),
                                lun: *m,
                                value: wp,
                                old: None,
                            },
                        );
                    }
                }
            }
        }
    }

    /// The `write_protect` the kernel gives a new mapping of TPG LUN `tpg_lun`:
    /// 1 if the backstore is a read-only block device or the TPG's
    /// `prod_mode_write_protect` is 1 (lio-configfs.md §3.6).
    fn default_write_protect(&self, d: &Tpg, o: &Tpg, tpg_lun: u64) -> bool {
        let ro_backstore = d
            .luns
            .get(&tpg_lun)
            .and_then(|l| l.backstore.as_ref())
            .and_then(|b| self.d.backstores.get(&b.name))
            .is_some_and(|b| matches!(b.kind, BackstoreKind::Block { readonly: true, .. }));
        ro_backstore || o.prod_mode_write_protect.unwrap_or(false)
    }

    /// Make TPG `o` (observed, or `Tpg::fresh` when `new`) match `d`.
    fn sync_tpg(&mut self, target: &str, d: &Tpg, o: &Tpg, new: bool) {
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

    /// Teardown of an existing ACL's mappings: removed, remapped, or re-created
    /// because their TPG LUN is relinked or they are dead.
    fn teardown_mappings(
        &mut self,
        target: &str,
        tag: u16,
        init: &str,
        da: Option<&Acl>,
        oa: &Acl,
        lp: &LunPlan,
    ) {
        for (m, ml) in &oa.mapped {
            let mid = ObjectId::MappedLun {
                target: target.to_string(),
                tag,
                initiator: init.to_string(),
                lun: *m,
            };
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
                        self.emit_unmap(target, tag, init, *m, ml);
                        self.teardown(
                            target,
                            Op::DeleteMappedLun {
                                target: target.to_string(),
                                tag,
                                initiator: init.to_string(),
                                lun: *m,
                            },
                        );
                    } else {
                        if da.is_some() {
                            self.plan.unmanaged.push(mid);
                        }
                        if ml.tpg_lun.is_some_and(|t| lp.relinked.contains(&t)) {
                            self.emit_unmap(target, tag, init, *m, ml);
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
                        self.emit_unmap(target, tag, init, *m, ml);
                    }
                }
            }
        }
    }

    /// For an unmanaged ACL: re-map its mappings whose TPG LUN is relinked.
    fn rebuild_unmanaged_mappings(
        &mut self,
        target: &str,
        tag: u16,
        init: &str,
        _da: Option<&Acl>,
        oa: &Acl,
        lp: &LunPlan,
    ) {
        for (m, ml) in &oa.mapped {
            if let (Some(t), Some(_)) = (ml.tpg_lun, &ml.link) {
                if lp.relinked.contains(&t) {
                    self.build(
                        target,
                        Op::MapLun {
                            target: target.to_string(),
                            tag,
                            initiator: init.to_string(),
                            lun: *m,
                            tpg_lun: t,
                            link: LINK_NAME.to_string(),
                        },
                    );
                    if let Some(wp) = ml.write_protect {
                        self.build(
                            target,
                            Op::SetWriteProtect {
                                target: target.to_string(),
                                tag,
                                initiator: init.to_string(),
                                lun: *m,
                                value: wp,
                                old: None,
                            },
                        );
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn build_acl(
        &mut self,
        target: &str,
        tag: u16,
        init: &str,
        da: &Acl,
        oa: &Acl,
        new: bool,
        d: &Tpg,
        o: &Tpg,
        lp: &LunPlan,
    ) {
        let aid = ObjectId::Acl {
            target: target.to_string(),
            tag,
            initiator: init.to_string(),
        };
        let mut ops = Vec::new();
        let mut attrs = Vec::new();
        if new {
            ops.push(Op::CreateAcl {
                target: target.to_string(),
                tag,
                initiator: init.to_string(),
            });
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
                target: target.to_string(),
                tag,
                initiator: init.to_string(),
                value: da.authentication,
                old: if new { None } else { Some(oa.authentication) },
            });
        }
        if let Some(want) = &da.auth {
            let scope = AuthScope::Acl {
                target: target.to_string(),
                tag,
                initiator: init.to_string(),
            };
            let empty = ChapCreds::default();
            let have = if new {
                None
            } else {
                Some(oa.auth.as_ref().unwrap_or(&empty))
            };
            self.auth_diff(scope, want, have, &mut ops, &mut attrs);
        }
        if new {
            self.change(Action::Create, aid, attrs, None);
        } else if !attrs.is_empty() {
            self.change(Action::Update, aid, attrs, None);
        }
        for op in ops {
            self.build(target, op);
        }
        // Mappings.
        let ids: BTreeSet<u64> = da.mapped.keys().chain(oa.mapped.keys()).copied().collect();
        for m in ids {
            let mid = ObjectId::MappedLun {
                target: target.to_string(),
                tag,
                initiator: init.to_string(),
                lun: m,
            };
            match (da.mapped.get(&m), oa.mapped.get(&m)) {
                (Some(dm), None) => {
                    let Some(t) = dm.tpg_lun else { continue };
                    self.build(
                        target,
                        Op::CreateMappedLun {
                            target: target.to_string(),
                            tag,
                            initiator: init.to_string(),
                            lun: m,
                        },
                    );
                    self.build(
                        target,
                        Op::MapLun {
                            target: target.to_string(),
                            tag,
                            initiator: init.to_string(),
                            lun: m,
                            tpg_lun: t,
                            link: LINK_NAME.to_string(),
                        },
                    );
                    let wp = dm.write_protect.unwrap_or(false);
                    if wp != self.default_write_protect(d, o, t) {
                        self.build(
                            target,
                            Op::SetWriteProtect {
                                target: target.to_string(),
                                tag,
                                initiator: init.to_string(),
                                lun: m,
                                value: wp,
                                old: None,
                            },
                        );
                    }
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
                        self.build(
                            target,
                            Op::MapLun {
                                target: target.to_string(),
                                tag,
                                initiator: init.to_string(),
                                lun: m,
                                tpg_lun: t,
                                link: LINK_NAME.to_string(),
                            },
                        );
                        if wp != self.default_write_protect(d, o, t) {
                            self.build(
                                target,
                                Op::SetWriteProtect {
                                    target: target.to_string(),
                                    tag,
                                    initiator: init.to_string(),
                                    lun: m,
                                    value: wp,
                                    old: None,
                                },
                            );
                        }
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
                                target: target.to_string(),
                                tag,
                                initiator: init.to_string(),
                                lun: m,
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
                                self.build(
                                    target,
                                    Op::MapLun {
                                        target: target.to_string(),
                                        tag,
                                        initiator: init.to_string(),
                                        lun: m,
                                        tpg_lun: t,
                                        link: LINK_NAME.to_string(),
                                    },
                                );
                                if let Some(wp) = om.write_protect {
                                    self.build(
                                        target,
                                        Op::SetWriteProtect {
                                            target: target.to_string(),
                                            tag,
                                            initiator: init.to_string(),
                                            lun: m,
                                            value: wp,
                                            old: None,
                                        },
                                    );
                                }
                            }
                        }
                    }
                }
                (None, None) => {}
            }
        }
    }

    /// A new portal must not collide with a portal of another TPG of the same
    /// target that stays (the kernel refuses with EINVAL, §3.2).
    fn check_portal_conflict(&mut self, target: &str, tag: u16, addr: &SocketAddr, pid: &ObjectId) {
        let Some(ot) = self.o.targets.get(target) else {
            return;
        };
        for (otag, otpg) in &ot.tpgs {
            for oaddr in otpg.portals.keys() {
                if (*otag == tag && oaddr == addr) || !portals_conflict(addr, oaddr) {
                    continue;
                }
                let oid = ObjectId::Portal {
                    target: target.to_string(),
                    tag: *otag,
                    portal: *oaddr,
                };
                let going = self
                    .plan
                    .changes
                    .iter()
                    .any(|c| c.action == Action::Delete && oid.is_within(&c.object));
                if !going {
                    self.refuse(
                        "portal_conflict",
                        Some(pid.clone()),
                        format!("portal {addr} cannot be added: {oid} is the same listener to LIO and is not managed by isctl"),
                        "remove that portal by hand or run with --prune".to_string(),
                    );
                }
            }
        }
    }

    // ------------------------------------------------------------------ checks

    fn check_backstore_links(&mut self) {
        let deleted = self.deleted_backstores.clone();
        for (name, hba) in deleted {
            for l in self.links_to(&name, Some(&hba)) {
                if !self.unlinked.contains(&l) {
                    self.refuse(
                        "blocked",
                        Some(ObjectId::Backstore { name: name.clone() }),
                        format!(
                            "cannot delete or replace it: {l} links it and is not managed by isctl"
                        ),
                        "remove that LUN by hand, or run with --prune".to_string(),
                    );
                }
            }
        }
    }

    fn foreign_warnings(&mut self) {
        for f in &self.o.foreign {
            self.plan.warnings.push(format!(
                "{}: {} (not managed by isctl, left alone)",
                f.path, f.what
            ));
        }
    }

    // ------------------------------------------------------------------ finish

    fn session_affected(&self, s: &Session, obj: &ObjectId) -> bool {
        match obj {
            ObjectId::Target { target } => &s.target == target,
            ObjectId::Tpg { target, tag } => &s.target == target && s.tpg == *tag,
            ObjectId::Acl {
                target,
                tag,
                initiator,
            }
            | ObjectId::MappedLun {
                target,
                tag,
                initiator,
                ..
            } => &s.target == target && s.tpg == *tag && &s.initiator == initiator && !s.dynamic,
            ObjectId::Lun { target, tag, lun } => {
                if &s.target != target || s.tpg != *tag {
                    return false;
                }
                if s.dynamic {
                    return true;
                }
                self.o
                    .targets
                    .get(target)
                    .and_then(|t| t.tpgs.get(tag))
                    .and_then(|tpg| tpg.acls.get(&s.initiator))
                    .is_some_and(|a| a.mapped.values().any(|m| m.tpg_lun == Some(*lun)))
            }
            ObjectId::Backstore { .. } | ObjectId::Portal { .. } | ObjectId::DiscoveryAuth => false,
        }
    }

    fn finish(mut self) -> Plan {
        // Sessions the plan would cut.
        let mut seen: BTreeSet<(String, u16, String, Option<String>, String)> = BTreeSet::new();
        let cuts = std::mem::take(&mut self.cuts);
        for (obj, by) in &cuts {
            for s in self.sessions {
                if self.session_affected(s, obj) {
                    let key = (
                        s.target.clone(),
                        s.tpg,
                        s.initiator.clone(),
                        s.isid.clone(),
                        by.clone(),
                    );
                    if seen.insert(key) {
                        self.plan.sessions_cut.push(SessionCut {
                            session: s.clone(),
                            by: by.clone(),
                        });
                    }
                }
            }
        }
        if !self.plan.sessions_cut.is_empty() && !self.opts.force {
            let list: Vec<String> = self
                .plan
                .sessions_cut
                .iter()
                .map(|c| format!("{} [{}]", c.session.describe(), c.by))
                .collect();
            self.refuse(
                "sessions",
                None,
                format!(
                    "the plan would cut {} logged-in session(s): {}",
                    list.len(),
                    list.join("; ")
                ),
                "log the initiators out first, or pass --force to cut them".to_string(),
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Lun, Portal};
    use std::path::PathBuf;

    const T: &str = "iqn.2026-01.com.example:t";
    const I: &str = "iqn.1994-05.com.example:i";

    fn backstore(name: &str, size: u64) -> Backstore {
        Backstore {
            name: name.into(),
            kind: BackstoreKind::Ramdisk { size },
            block_size: 512,
            serial: format!("serial-{name}"),
            company_id: DEFAULT_COMPANY_ID,
            nonrotational: None,
            hba: None,
            configured: true,
            extra: BTreeMap::new(),
            origin: None,
        }
    }

    /// One target, one ACL-mode TPG, LUN 0 → `b0`, one ACL mapping it.
    fn desired() -> State {
        let mut s = State::default();
        s.backstores.insert("b0".into(), backstore("b0", 1 << 20));
        let mut tpg = Tpg::fresh(1);
        tpg.enabled = true;
        tpg.authentication = false;
        tpg.auth = None;
        tpg.demo_mode_write_protect = None;
        tpg.prod_mode_write_protect = None;
        tpg.portals
            .insert("[::]:3260".parse().unwrap(), Portal::default());
        tpg.luns.insert(
            0,
            Lun {
                backstore: Some(BackstoreRef {
                    name: "b0".into(),
                    hba: None,
                }),
                link: None,
            },
        );
        tpg.acls.insert(
            I.into(),
            Acl {
                auth: Some(ChapCreds::default()),
                authentication: None,
                mapped: [(
                    0,
                    MappedLun {
                        tpg_lun: Some(0),
                        write_protect: Some(false),
                        link: None,
                    },
                )]
                .into(),
                extra: BTreeMap::new(),
                origin: None,
            },
        );
        s.targets.insert(
            T.into(),
            Target {
                name: T.into(),
                tpgs: [(1, tpg)].into(),
                origin: None,
            },
        );
        s.fabric = true;
        s
    }

    /// What the kernel shows after `desired()` was applied by isctl.
    fn applied() -> State {
        let mut s = desired();
        s.hbas.insert("rd_mcp_0".into(), 1);
        let b = s.backstores.get_mut("b0").unwrap();
        b.hba = Some("rd_mcp_0".into());
        b.nonrotational = Some(true);
        let tpg = s.targets.get_mut(T).unwrap().tpgs.get_mut(&1).unwrap();
        tpg.auth = Some(ChapCreds::default());
        tpg.demo_mode_write_protect = Some(true);
        tpg.prod_mode_write_protect = Some(false);
        for p in tpg.portals.values_mut() {
            p.dir = Some("[::0]:3260".into()); // as targetcli spells it
        }
        let lun = tpg.luns.get_mut(&0).unwrap();
        lun.backstore.as_mut().unwrap().hba = Some("rd_mcp_0".into());
        lun.link = Some("a1b2c3d4e5".into());
        tpg.acls
            .get_mut(I)
            .unwrap()
            .mapped
            .get_mut(&0)
            .unwrap()
            .link = Some("x".into());
        s
    }

    fn observed(s: State) -> Observed {
        Observed {
            state: s,
            sessions: vec![],
        }
    }

    fn plan(d: &State, o: &State, managed: &BTreeSet<ObjectId>, opts: DiffOptions) -> Plan {
        diff(
            d,
            &observed(o.clone()),
            &HostFacts::default(),
            managed,
            &opts,
        )
    }

    fn names(p: &Plan) -> Vec<&'static str> {
        p.ops.iter().map(|o| o.op.name()).collect()
    }

    #[test]
    fn creation_follows_the_kernel_order_and_skips_defaults() {
        let p = plan(
            &desired(),
            &State::default(),
            &BTreeSet::new(),
            DiffOptions::default(),
        );
        assert!(!p.is_refused(), "{:?}", p.refusals);
        assert_eq!(
            names(&p),
            vec![
                "create_backstore",
                "set_backstore", // serial only: block_size 512 and rd's is_nonrot are defaults
                "create_fabric",
                "create_target",
                "create_tpg",
                "set_tpg", // authentication=0 (the kernel default is 1)
                "create_lun",
                "link_lun",
                "create_portal",
                "create_acl",
                "create_mapped_lun",
                "map_lun",
                "enable_tpg",
            ]
        );
        assert!(
            matches!(&p.ops[0].op, Op::CreateBackstore { hba, create_hba: true, .. } if hba == "rd_mcp_0")
        );
        assert_eq!(p.ops[0].phase, Phase::Backstores);
        assert_eq!(p.ops.last().unwrap().phase, Phase::Targets);
        assert_eq!(p.summary().add, 7);
    }

    #[test]
    fn applied_state_plans_nothing_even_with_kernel_spellings() {
        let p = plan(
            &desired(),
            &applied(),
            &BTreeSet::new(),
            DiffOptions::default(),
        );
        assert!(p.is_empty(), "{:#?}", p.changes);
    }

    #[test]
    fn deletion_is_the_reverse_order() {
        let managed: BTreeSet<ObjectId> = desired().object_ids().into_iter().collect();
        let p = plan(
            &State::default(),
            &applied(),
            &managed,
            DiffOptions::default(),
        );
        assert_eq!(
            names(&p),
            vec![
                "disable_tpg",
                "unmap_lun",
                "delete_mapped_lun",
                "delete_acl",
                "unlink_lun",
                "delete_lun",
                "delete_portal",
                "delete_tpg",
                "delete_target",
                "delete_backstore",
            ]
        );
        assert!(matches!(&p.ops[6].op, Op::DeletePortal { dir, .. } if dir == "[::0]:3260"));
        assert!(matches!(
            &p.ops[9].op,
            Op::DeleteBackstore {
                delete_hba: true,
                ..
            }
        ));
        assert_eq!(p.summary().destroy, 7);
    }

    #[test]
    fn unmanaged_objects_stay_unless_pruned() {
        let p = plan(
            &State::default(),
            &applied(),
            &BTreeSet::new(),
            DiffOptions::default(),
        );
        assert!(p.is_empty());
        assert_eq!(
            p.unmanaged,
            vec![
                ObjectId::Backstore { name: "b0".into() },
                ObjectId::Target { target: T.into() }
            ]
        );
        let p = plan(
            &State::default(),
            &applied(),
            &BTreeSet::new(),
            DiffOptions {
                prune: true,
                force: false,
            },
        );
        assert_eq!(p.ops.len(), 10);
        assert!(p
            .changes
            .iter()
            .any(|c| c.reason.as_deref().is_some_and(|r| r.contains("--prune"))));
    }

    #[test]
    fn frozen_attribute_on_a_linked_backstore_forces_replacement() {
        let mut d = desired();
        d.backstores.get_mut("b0").unwrap().block_size = 4096;
        let p = plan(&d, &applied(), &BTreeSet::new(), DiffOptions::default());
        let c = p
            .changes
            .iter()
            .find(|c| c.object == ObjectId::Backstore { name: "b0".into() })
            .unwrap();
        assert_eq!(c.action, Action::Replace);
        assert!(c
            .attributes
            .iter()
            .any(|a| a.name == "block_size" && a.forces_replacement));
        assert_eq!(
            names(&p),
            vec![
                "unmap_lun",
                "unlink_lun",
                "delete_backstore",
                "create_backstore",
                "set_backstore",
                "set_backstore",
                "link_lun",
                "map_lun",
            ]
        );
        // Same HBA, kept.
        assert!(matches!(
            &p.ops[2].op,
            Op::DeleteBackstore {
                delete_hba: false,
                ..
            }
        ));
        assert!(
            matches!(&p.ops[3].op, Op::CreateBackstore { create_hba: false, hba, .. } if hba == "rd_mcp_0")
        );
        assert_eq!(p.summary().add, 1);
        assert_eq!(p.summary().destroy, 1);
    }

    #[test]
    fn frozen_attribute_on_an_unlinked_backstore_is_one_write() {
        let mut d = desired();
        d.targets.clear();
        d.backstores.get_mut("b0").unwrap().serial = "new".into();
        let mut o = applied();
        o.targets.clear();
        let p = plan(&d, &o, &BTreeSet::new(), DiffOptions::default());
        assert_eq!(names(&p), vec!["set_backstore"]);
        assert_eq!(p.summary().change, 1);
    }

    #[test]
    fn a_dead_mapping_is_recreated() {
        let mut o = applied();
        let tpg = o.targets.get_mut(T).unwrap().tpgs.get_mut(&1).unwrap();
        tpg.acls
            .get_mut(I)
            .unwrap()
            .mapped
            .get_mut(&0)
            .unwrap()
            .write_protect = None;
        let p = plan(&desired(), &o, &BTreeSet::new(), DiffOptions::default());
        assert_eq!(names(&p), vec!["unmap_lun", "map_lun"]);
        assert_eq!(p.ops[0].phase, Phase::Teardown);
    }

    #[test]
    fn sessions_make_a_cut_a_refusal_unless_forced() {
        let managed: BTreeSet<ObjectId> = desired().object_ids().into_iter().collect();
        let mut d = desired();
        d.targets
            .get_mut(T)
            .unwrap()
            .tpgs
            .get_mut(&1)
            .unwrap()
            .acls
            .clear();
        let s = Session {
            target: T.into(),
            tpg: 1,
            initiator: I.into(),
            dynamic: false,
            alias: None,
            isid: Some("804c37c50000".into()),
            tsih: Some(3),
            session_id: Some(3),
            session_type: Some("Normal".into()),
            state: None,
            connections: vec![],
        };
        let o = Observed {
            state: applied(),
            sessions: vec![s],
        };
        let p = diff(
            &d,
            &o,
            &HostFacts::default(),
            &managed,
            &DiffOptions::default(),
        );
        assert!(p.is_refused());
        assert!(
            p.refusals[0]
                .problem
                .contains("ISID 0x804c37c50000, TSIH 3"),
            "{}",
            p.refusals[0].problem
        );
        let p = diff(
            &d,
            &o,
            &HostFacts::default(),
            &managed,
            &DiffOptions {
                force: true,
                prune: false,
            },
        );
        assert!(!p.is_refused());
        assert_eq!(p.sessions_cut.len(), 1);
    }

    #[test]
    fn backing_files_are_created_grown_never_shrunk() {
        let file = |size: Option<u64>| {
            let mut s = State::default();
            let mut b = backstore("f", 0);
            b.kind = BackstoreKind::File {
                path: PathBuf::from("/srv/f.img"),
                size,
                write_back: false,
            };
            s.backstores.insert("f".into(), b);
            s
        };
        let facts = |f: FileFact| HostFacts {
            files: [(PathBuf::from("/srv/f.img"), f)].into(),
            devices: BTreeMap::new(),
        };
        let run = |d: &State, h: &HostFacts| {
            diff(
                d,
                &Observed::default(),
                h,
                &BTreeSet::new(),
                &DiffOptions::default(),
            )
        };
        let p = run(
            &file(Some(1 << 20)),
            &facts(FileFact::Missing {
                parent_exists: true,
            }),
        );
        assert!(matches!(&p.ops[0].op, Op::CreateBackingFile { size, .. } if *size == 1 << 20));
        let p = run(
            &file(None),
            &facts(FileFact::Missing {
                parent_exists: true,
            }),
        );
        assert_eq!(p.refusals[0].kind, "backing_file");
        let p = run(
            &file(Some(1)),
            &facts(FileFact::Missing {
                parent_exists: false,
            }),
        );
        assert!(p.refusals[0].problem.contains("directory"));
        let p = run(
            &file(Some(1 << 20)),
            &facts(FileFact::Regular { size: 2 << 20 }),
        );
        assert_eq!(p.refusals[0].kind, "shrink");
        let p = run(
            &file(Some(4 << 20)),
            &facts(FileFact::Regular { size: 2 << 20 }),
        );
        assert!(
            matches!(&p.ops[0].op, Op::GrowBackingFile { from, to, .. } if *from == 2 << 20 && *to == 4 << 20)
        );
        let p = run(&file(None), &facts(FileFact::Regular { size: 0 }));
        assert!(
            p.refusals[0].problem.contains("is empty"),
            "{:?}",
            p.refusals
        );
        let p = run(&file(None), &facts(FileFact::Regular { size: 3 << 20 }));
        assert!(
            matches!(&p.ops[0].op, Op::CreateBackstore { kind: BackstoreKind::File { size: Some(s), .. }, .. } if *s == 3 << 20)
        );
    }

    #[test]
    fn hba_numbers_are_the_smallest_free_across_plugins() {
        let mut d = State::default();
        for n in ["a", "b"] {
            d.backstores.insert(n.into(), backstore(n, 4096));
        }
        let mut o = State::default();
        o.hbas.insert("fileio_0".into(), 1);
        o.hbas.insert("iblock_2".into(), 0);
        let p = plan(&d, &o, &BTreeSet::new(), DiffOptions::default());
        let hbas: Vec<String> = p
            .ops
            .iter()
            .filter_map(|o| match &o.op {
                Op::CreateBackstore { hba, .. } => Some(hba.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(hbas, vec!["rd_mcp_1", "rd_mcp_3"]);
    }

    #[test]
    fn a_conflicting_unmanaged_portal_is_refused() {
        let mut o = applied();
        let tpg = o.targets.get_mut(T).unwrap().tpgs.get_mut(&1).unwrap();
        tpg.portals.clear();
        tpg.portals.insert(
            "0.0.0.0:3260".parse().unwrap(),
            Portal {
                dir: Some("0.0.0.0:3260".into()),
            },
        );
        let p = plan(&desired(), &o, &BTreeSet::new(), DiffOptions::default());
        assert_eq!(p.refusals[0].kind, "portal_conflict", "{:?}", p.refusals);
        let p = plan(
            &desired(),
            &o,
            &BTreeSet::new(),
            DiffOptions {
                prune: true,
                force: false,
            },
        );
        assert!(!p.is_refused());
        assert_eq!(names(&p), vec!["delete_portal", "create_portal"]);
    }
}
