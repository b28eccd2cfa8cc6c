//! Export: an observed [`State`] → a [`Model`] that lowers back to the same state,
//! and a precise list of everything the model cannot express.
//!
//! Adopting a host must be lossless: what the model cannot say (an ACL mapping LUN 3
//! to TPG LUN 5, two storage objects with one name, different CHAP per ACL of one
//! TPG, one tag with different portals in two targets, a disabled TPG, ...) is never dropped silently; each becomes an [`ExportProblem`].
//! Names are derived deterministically: portal groups `portal-<tag>`, initiator
//! groups `initiators-<n>`, CHAP credentials `chap-<n>`, discovery `discovery`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::Serialize;

use crate::model::{
    AuthMethod, Backing, ChapCredentials, Extent, InitiatorGroup, IscsiName, Model, Origin,
    PeerCredentials, PortalGroup, Rpm, Target as ModelTarget, TargetGroup,
};

use super::{
    lio_naa, BackstoreKind, ChapCreds, State, Tpg, DEFAULT_COMPANY_ID, DEFAULT_TARGET_ALIAS,
};

/// Something live that the exported model does not carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportProblem {
    /// The live object (`backstore "x"`, `target "iqn..." tpg 1`, a configfs path).
    pub object: String,
    pub problem: String,
}

/// The result of an export.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub model: Model,
    pub problems: Vec<ExportProblem>,
}

impl Exported {
    pub fn lossless(&self) -> bool {
        self.problems.is_empty()
    }
}

const LUN_MAX: u64 = 16383;

struct Exporter<'a> {
    s: &'a State,
    model: Model,
    problems: Vec<ExportProblem>,
    groups: BTreeMap<Vec<String>, String>,
    auths: Vec<(ChapCreds, String)>,
    /// tag → (listen set, portal name, first target using it).
    portals: BTreeMap<u16, (Vec<SocketAddr>, String, String)>,
}

fn origin() -> Origin {
    Origin::default()
}

impl Exporter<'_> {
    fn problem(&mut self, object: impl Into<String>, problem: impl Into<String>) {
        self.problems.push(ExportProblem {
            object: object.into(),
            problem: problem.into(),
        });
    }

    fn auth_name(&mut self, creds: &ChapCreds, prefix: &str) -> String {
        if let Some((_, n)) = self.auths.iter().find(|(c, _)| c == creds) {
            return n.clone();
        }
        let name = if prefix == "discovery" {
            "discovery".to_string()
        } else {
            let n = self.auths.iter().filter(|(_, n)| n != "discovery").count();
            format!("{prefix}-{}", n + 1)
        };
        self.auths.push((creds.clone(), name.clone()));
        self.model.auths.insert(
            name.clone(),
            ChapCredentials {
                name: name.clone(),
                user: creds.userid.clone(),
                secret: creds.password.clone(),
                peer: (!creds.userid_mutual.is_empty()).then(|| PeerCredentials {
                    user: creds.userid_mutual.clone(),
                    secret: creds.password_mutual.clone(),
                }),
                origin: origin(),
            },
        );
        name
    }

    /// The auth method and credentials a set of LIO creds expresses, and whether CHAP
    /// is optional; `None` (and a problem) when the model cannot say it.
    fn chap(
        &mut self,
        obj: &str,
        required: bool,
        creds: &ChapCreds,
        prefix: &str,
    ) -> Option<(AuthMethod, Option<String>, bool)> {
        let mutual = !creds.userid_mutual.is_empty() || !creds.password_mutual.expose().is_empty();
        let one_way = !creds.userid.is_empty() || !creds.password.expose().is_empty();
        if !required && !one_way && !mutual {
            return Some((AuthMethod::None, None, false));
        }
        // Credentials without `authentication = 1`: used when the initiator offers CHAP
        // (what targetcli leaves after `set auth` on an ACL), the model's
        // `chap = "optional"`.
        let optional = !required;
        if creds.userid.is_empty() || creds.password.expose().is_empty() {
            self.problem(obj, "CHAP is required but no user name or secret is set: no initiator can log in, which the model cannot express");
            return None;
        }
        if mutual && (creds.userid_mutual.is_empty() || creds.password_mutual.expose().is_empty()) {
            self.problem(obj, "only one of userid_mutual / password_mutual is set");
            return None;
        }
        for (what, secret) in [
            ("secret", &creds.password),
            ("mutual secret", &creds.password_mutual),
        ] {
            let n = secret.char_len();
            if (what == "secret" || mutual) && !crate::model::limits::SECRET_LEN.contains(&n) {
                self.problem(obj, format!("the CHAP {what} is {n} characters long; the model accepts 12 to 16 (what Microsoft's initiator accepts)"));
                return None;
            }
        }
        if mutual && creds.password == creds.password_mutual {
            self.problem(obj, "the CHAP secret and the mutual secret are the same, which the model refuses (RFC 7143 §12.1.3)");
            return None;
        }
        let name = self.auth_name(creds, prefix);
        Some((
            if mutual {
                AuthMethod::MutualChap
            } else {
                AuthMethod::Chap
            },
            Some(name),
            optional,
        ))
    }
}

/// Export `s` (an observation, best made with the full scope).
pub fn to_model(s: &State) -> Exported {
    let mut x = Exporter {
        s,
        model: Model::default(),
        problems: Vec::new(),
        groups: BTreeMap::new(),
        auths: Vec::new(),
        portals: BTreeMap::new(),
    };
    for f in &s.foreign {
        x.problem(
            f.path.clone(),
            format!("{} is not expressible in the model", f.what),
        );
    }
    for b in &s.shadowed_backstores {
        x.problem(
            format!("backstore {:?} in {}", b.name, b.hba.as_deref().unwrap_or("?")),
            "a second storage object with the same name in another HBA; the model names extents uniquely",
        );
    }
    extents(&mut x);
    discovery(&mut x);
    targets(&mut x);
    let Exporter {
        model, problems, ..
    } = x;
    Exported { model, problems }
}

/// How each backstore is presented: write protection seen through every mapping
/// (or demo-mode switch) and the targets that use it.
fn views(s: &State) -> BTreeMap<String, (BTreeSet<bool>, BTreeSet<String>)> {
    let mut v: BTreeMap<String, (BTreeSet<bool>, BTreeSet<String>)> = BTreeMap::new();
    for (tname, t) in &s.targets {
        for tpg in t.tpgs.values() {
            for (l, lun) in &tpg.luns {
                let Some(b) = &lun.backstore else { continue };
                let e = v.entry(b.name.clone()).or_default();
                e.1.insert(tname.clone());
                if tpg.generate_node_acls {
                    if let Some(d) = tpg.demo_mode_write_protect {
                        e.0.insert(d);
                    }
                }
                for acl in tpg.acls.values() {
                    for m in acl.mapped.values() {
                        if m.tpg_lun == Some(*l) {
                            if let Some(wp) = m.write_protect {
                                e.0.insert(wp);
                            }
                        }
                    }
                }
            }
        }
    }
    v
}

fn extents(x: &mut Exporter<'_>) {
    let views = views(x.s);
    for (name, b) in &x.s.backstores {
        let obj = format!("backstore {name:?}");
        if let Err((problem, _)) = crate::model::check_object_name(name) {
            x.problem(
                &obj,
                format!("its name is not a valid extent name: {problem}"),
            );
            continue;
        }
        if !b.configured {
            x.problem(
                &obj,
                "the storage object is not enabled (half configured); the model has no such state",
            );
            continue;
        }
        let (ro_views, users) = views.get(name).cloned().unwrap_or_default();
        let readonly = match ro_views.len() {
            0 => matches!(b.kind, BackstoreKind::Block { readonly: true, .. }),
            1 => ro_views.contains(&true),
            _ => {
                x.problem(&obj, "it is write-protected for some initiators and writable for others; the model has one `readonly` per extent");
                false
            }
        };
        let backing = match &b.kind {
            BackstoreKind::File { path, size, .. } => Backing::File {
                path: path.clone(),
                size: *size,
            },
            BackstoreKind::Block {
                device,
                readonly: dev_ro,
            } => {
                if *dev_ro != readonly {
                    x.problem(&obj, "the block device is opened read-only but its LUNs are mapped writable (or the reverse)");
                }
                Backing::Block {
                    device: device.clone(),
                }
            }
            BackstoreKind::Ramdisk { size } => Backing::Ramdisk { size: *size },
            BackstoreKind::Other { plugin } => {
                x.problem(
                    &obj,
                    format!("{plugin} storage objects have no extent type in the model"),
                );
                continue;
            }
        };
        let mut model_alias = false;
        for (k, v) in &b.attributes {
            if k == "emulate_model_alias" && v == "1" {
                // targetcli sets it on every object it creates: the model's `model_alias`.
                model_alias = true;
                continue;
            }
            x.problem(
                &obj,
                format!("attrib/{k} = {v} (differs from the kernel default; the model has no key for it)"),
            );
        }
        for (k, v) in &b.extra {
            x.problem(
                &obj,
                format!("{k} = {v} (differs from the kernel default; the model has no key for it)"),
            );
        }
        if b.serial.is_empty() {
            x.problem(&obj, "it has no unit serial; the model always sets one (a plan would write one, and a linked object cannot take it)");
        }
        let naa = (b.company_id != DEFAULT_COMPANY_ID)
            .then(|| format!("0x{}", lio_naa(b.company_id, &b.serial)));
        x.model.extents.insert(
            name.clone(),
            Extent {
                name: name.clone(),
                backing,
                blocksize: b.block_size,
                serial: b.serial.clone(),
                naa,
                readonly,
                rpm: if b.nonrotational == Some(true) {
                    Rpm::Ssd
                } else {
                    Rpm::Unknown
                },
                comment: String::new(),
                enabled: true,
                shared: users.len() > 1,
                write_back: matches!(
                    b.kind,
                    BackstoreKind::File {
                        write_back: true,
                        ..
                    }
                ),
                model_alias,
                origin: origin(),
            },
        );
    }
}

fn discovery(x: &mut Exporter<'_>) {
    if let Some(d) = &x.s.discovery {
        if !d.enforce && !d.creds.is_empty() {
            x.problem(
                "discovery_auth",
                "discovery CHAP credentials are set but not enforced; the model can say \"no discovery auth\" or \"discovery auth required\"",
            );
        }
    }
}

fn targets(x: &mut Exporter<'_>) {
    let (disc_method, disc_group) = match x.s.discovery.clone() {
        Some(d) if d.enforce => match x.chap("discovery_auth", true, &d.creds, "discovery") {
            Some((m, name, _)) => (m, name),
            None => (AuthMethod::None, None),
        },
        _ => (AuthMethod::None, None),
    };
    let state = x.s;
    for (tname, t) in &state.targets {
        let tobj = format!("target {tname:?}");
        let name = match IscsiName::parse(tname) {
            Ok(n) => n,
            Err(e) => {
                x.problem(
                    &tobj,
                    format!("its name is not a valid iSCSI name for the model: {e}"),
                );
                continue;
            }
        };
        if t.tpgs.is_empty() {
            x.problem(
                &tobj,
                "it has no portal group; a model target needs at least one",
            );
            continue;
        }
        // One alias and one LUN map for the whole target.
        let aliases: BTreeSet<&String> = t.tpgs.values().map(|g| &g.alias).collect();
        if aliases.len() > 1 {
            x.problem(
                &tobj,
                "its portal groups have different aliases; the model has one alias per target",
            );
        }
        let alias = aliases
            .into_iter()
            .next()
            .filter(|a| *a != DEFAULT_TARGET_ALIAS)
            .cloned();
        let lun_maps: BTreeSet<Vec<(u64, Option<String>)>> = t
            .tpgs
            .values()
            .map(|g| {
                g.luns
                    .iter()
                    .map(|(l, lun)| (*l, lun.backstore.as_ref().map(|b| b.name.clone())))
                    .collect()
            })
            .collect();
        if lun_maps.len() > 1 {
            x.problem(
                &tobj,
                "its portal groups present different LUNs; the model has one LUN map per target",
            );
        }
        let mut luns = BTreeMap::new();
        if let Some(first) = t.tpgs.values().next() {
            for (l, lun) in &first.luns {
                let lobj = format!("{tobj} tpg {} lun {l}", first.tag);
                let Some(b) = &lun.backstore else {
                    x.problem(&lobj, "the LUN has no backstore link");
                    continue;
                };
                if *l > LUN_MAX {
                    x.problem(
                        &lobj,
                        format!("LUN {l} is above the model's limit {LUN_MAX}"),
                    );
                    continue;
                }
                let primary = state.backstores.get(&b.name);
                if primary.is_none_or(|p| p.hba != b.hba && b.hba.is_some()) {
                    x.problem(
                        &lobj,
                        format!(
                            "it links a storage object {:?} in {} that the model cannot name",
                            b.name,
                            b.hba.as_deref().unwrap_or("?")
                        ),
                    );
                    continue;
                }
                if !x.model.extents.contains_key(&b.name) {
                    // Its extent could not be exported (reported there).
                    continue;
                }
                luns.insert(*l as u16, b.name.clone());
            }
        }
        let mut groups = Vec::new();
        for (tag, tpg) in &t.tpgs {
            if let Some(g) = tpg_group(x, tname, *tag, tpg, disc_method, disc_group.as_deref()) {
                groups.push(g);
            }
        }
        if groups.is_empty() {
            continue;
        }
        x.model.targets.insert(
            name.clone(),
            ModelTarget {
                key: tname.clone(),
                name,
                alias,
                luns,
                groups,
                origin: origin(),
            },
        );
    }
}

fn tpg_group(
    x: &mut Exporter<'_>,
    tname: &str,
    tag: u16,
    tpg: &Tpg,
    disc_method: AuthMethod,
    disc_group: Option<&str>,
) -> Option<TargetGroup> {
    let gobj = format!("target {tname:?} tpg {tag}");
    let mut ok = true;
    if !tpg.enabled {
        x.problem(
            &gobj,
            "the portal group is disabled; every portal group of a model is enabled",
        );
        ok = false;
    }
    for (k, v) in tpg.attributes.iter().chain(&tpg.extra) {
        x.problem(
            &gobj,
            format!("{k} = {v} (differs from the kernel default; the model has no key for it)"),
        );
    }
    // Portal group by tag: one listen set per tag across the whole model.
    let listen: Vec<SocketAddr> = tpg.portals.keys().copied().collect();
    if listen.is_empty() {
        x.problem(
            &gobj,
            "the portal group has no portal (np); a model portal group listens somewhere",
        );
        ok = false;
    }
    let portal = match x.portals.get(&tag).cloned() {
        Some((l, n, first)) => {
            if l != listen {
                x.problem(&gobj, format!("tag {tag} is also used by target {first:?} with different portals; a model tag has one listen list"));
                ok = false;
            }
            n
        }
        None => {
            let n = format!("portal-{tag}");
            x.portals
                .insert(tag, (listen.clone(), n.clone(), tname.to_string()));
            x.model.portals.insert(
                n.clone(),
                PortalGroup {
                    name: n.clone(),
                    tag,
                    listen,
                    discovery_auth: disc_method,
                    discovery_auth_group: disc_group.map(str::to_string),
                    comment: String::new(),
                    origin: origin(),
                },
            );
            n
        }
    };
    let creds_empty = ChapCreds::default();
    let (initiator_group, auth_method, auth, chap_optional) = if tpg.generate_node_acls {
        if !tpg.acls.is_empty() {
            x.problem(&gobj, "demo mode (generate_node_acls = 1) with explicit ACLs as well; the model has either an initiator list or \"anyone\"");
            ok = false;
        }
        let creds = tpg.auth.clone().unwrap_or_default();
        let (m, a, o) = x.chap(&gobj, tpg.authentication, &creds, "chap")?;
        (None, m, a, o)
    } else {
        if tpg.acls.is_empty() {
            x.problem(&gobj, "no ACL and no demo mode: no initiator may log in, which the model cannot express (an empty initiator list means anyone)");
            return None;
        }
        let mut initiators = Vec::new();
        let mut creds_seen: BTreeSet<String> = BTreeSet::new();
        let mut first_creds: Option<ChapCreds> = None;
        for (init, acl) in &tpg.acls {
            let aobj = format!("{gobj} acl {init:?}");
            match IscsiName::parse(init) {
                Ok(n) => initiators.push(n),
                Err(e) => {
                    x.problem(
                        &aobj,
                        format!("the initiator name is not valid for the model: {e}"),
                    );
                    ok = false;
                }
            }
            if acl.authentication.is_some() {
                x.problem(&aobj, "the ACL overrides the TPG's authentication setting; the model has one auth method per group");
                ok = false;
            }
            for (k, v) in acl.attributes.iter().chain(&acl.extra) {
                x.problem(&aobj, format!("{k} = {v} (the model has no key for it)"));
            }
            // Every TPG LUN mapped at its own number, nothing else.
            let want: BTreeSet<u64> = tpg.luns.keys().copied().collect();
            let have: BTreeSet<u64> = acl.mapped.keys().copied().collect();
            if want != have {
                x.problem(&aobj, format!("it maps LUNs {have:?} but the TPG has {want:?}; a model ACL sees every LUN of its target"));
                ok = false;
            }
            for (m, ml) in &acl.mapped {
                match ml.tpg_lun {
                    Some(t) if t == *m => {}
                    Some(t) => {
                        x.problem(&aobj, format!("mapped LUN {m} points at TPG LUN {t}; the model maps every LUN at its own number"));
                        ok = false;
                    }
                    None => {
                        x.problem(&aobj, format!("mapped LUN {m} has no link"));
                        ok = false;
                    }
                }
                if ml.link.is_some() && ml.write_protect.is_none() {
                    x.problem(
                        &aobj,
                        format!("mapped LUN {m} is dead (its TPG LUN lost its backstore link)"),
                    );
                    ok = false;
                }
            }
            let c = acl.auth.clone().unwrap_or_default();
            match &first_creds {
                None => first_creds = Some(c.clone()),
                Some(f) if *f != c => {
                    creds_seen.insert(init.clone());
                }
                _ => {}
            }
        }
        if !creds_seen.is_empty() {
            x.problem(&gobj, format!("its ACLs have different CHAP credentials ({} differ from the first); the model has one auth per group", creds_seen.into_iter().collect::<Vec<_>>().join(", ")));
            ok = false;
        }
        let creds = first_creds.unwrap_or(creds_empty);
        let (m, a, o) = x.chap(&gobj, tpg.authentication, &creds, "chap")?;
        let mut key: Vec<String> = initiators.iter().map(|n| n.as_str().to_string()).collect();
        key.sort();
        let gname = match x.groups.get(&key) {
            Some(n) => n.clone(),
            None => {
                let n = format!("initiators-{}", x.groups.len() + 1);
                x.groups.insert(key, n.clone());
                x.model.initiator_groups.insert(
                    n.clone(),
                    InitiatorGroup {
                        name: n.clone(),
                        initiators,
                        networks: vec![],
                        comment: String::new(),
                        origin: origin(),
                    },
                );
                n
            }
        };
        (Some(gname), m, a, o)
    };
    ok.then(|| TargetGroup {
        portal,
        initiator_group,
        auth,
        auth_method,
        chap_optional,
        origin: origin(),
    })
}
