//! Backstores (storage objects) and their HBAs.
//!
//! Owns creating, updating, replacing and deleting storage objects: HBA numbering,
//! the settings written after enable (§2.3, §2.4), and the rule that identity and
//! geometry are frozen while a LUN links the object, so that such a change replaces
//! it (its LUN links are redone by the target side, see `lun`).

use std::collections::BTreeSet;

use crate::plan::op::{BackstoreSetting, Lane, Op, Phase};
use crate::plan::{Action, AttrChange};
use crate::state::{
    Backstore, BackstoreKind, FileFact, ObjectId, DEFAULT_COMPANY_ID, POLICY_ATTRIBUTES,
};

use super::{attr, yes_no, Differ};

impl Differ<'_> {
    fn alloc_hba(&mut self, plugin: &str) -> String {
        let mut n = 0u64;
        while self.used_hba_numbers.contains(&n) {
            n += 1;
        }
        self.used_hba_numbers.insert(n);
        format!("{plugin}_{n}")
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
        // Before any LUN links it: some policy attributes are frozen from then on.
        for a in POLICY_ATTRIBUTES {
            if let Some(v) = db.attributes.get(a.name) {
                settings.push(BackstoreSetting::Attribute(a.name, v.clone()));
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
        for (name, v) in &db.attributes {
            a.push(attr(&format!("attrib/{name}"), None, Some(v.clone())));
        }
        a
    }

    pub(super) fn backstores(&mut self) {
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
        // Policy attributes: the model's value, or the kernel default for those it does
        // not name; anything else on the live object is drift (docs/reconcile.md).
        for a in POLICY_ATTRIBUTES {
            let want = db.attributes.get(a.name).map_or(a.default, String::as_str);
            let have = ob.attributes.get(a.name).map_or(a.default, String::as_str);
            if want == have {
                continue;
            }
            let set = (
                BackstoreSetting::Attribute(a.name, want.to_string()),
                BackstoreSetting::Attribute(a.name, have.to_string()),
            );
            let name = format!("attrib/{}", a.name);
            if a.frozen_while_linked {
                frozen_change(
                    &name,
                    have.to_string(),
                    want.to_string(),
                    set,
                    &mut attrs,
                    &mut settings,
                    &mut replace,
                );
            } else {
                attrs.push(attr(&name, Some(have.to_string()), Some(want.to_string())));
                settings.push(set);
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
}
