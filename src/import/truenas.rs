//! TrueNAS middleware query outputs → a [`Model`].
//!
//! Input: the JSON results of `iscsi.global.config`, `iscsi.portal.query`,
//! `iscsi.initiator.query`, `iscsi.auth.query`, `iscsi.target.query`,
//! `iscsi.extent.query` and `iscsi.targetextent.query` (`midclt call ...`), either as
//! one file per query in a directory (named by the query, with or without `.json`) or
//! as one JSON object holding them keyed by the query name. Field names are those of
//! the middleware's API models (src/middlewared/middlewared/api/v25_04_0/iscsi_*.py);
//! the portal fields of older releases (`discovery_authmethod`,
//! `discovery_authgroup`) are read too.
//!
//! Ids become names: portal groups `portal-<tag>`, initiator groups `initiators-<id>`,
//! auths after their user, extents after their TrueNAS name. Targets are named
//! `<basename>:<name>` unless their name is a full iSCSI name (what TrueNAS does).
//! A target group's `auth` is an auth *tag*: every credential with that tag may log
//! in on TrueNAS; the model keeps one (the lowest id) and reports the others.
//! `DISK` extents (`zvol/<pool>/<vol>`) become block extents on `/dev/zvol/...`;
//! `FILE` extents file extents with `filesize` bytes (0: the file's size).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{object_name, origin, portal, secret_problem, serial_problem, unique, Report};
use super::{syntax, ImportError, Imported};
use crate::model::net::parse_network;
use crate::model::{
    limits, AuthMethod, Backing, ChapCredentials, Extent, InitiatorGroup, IscsiName, Model,
    PeerCredentials, Rpm, Secret, Target, TargetGroup,
};

/// The queries read, in the order they are converted.
pub const QUERIES: [&str; 7] = [
    "iscsi.global.config",
    "iscsi.portal.query",
    "iscsi.initiator.query",
    "iscsi.auth.query",
    "iscsi.target.query",
    "iscsi.extent.query",
    "iscsi.targetextent.query",
];

/// The documents read: query name → (value, file it came from).
pub type Docs = BTreeMap<String, (Value, PathBuf)>;

/// Where each object starts: query name → id → line in its file.
pub type Lines = BTreeMap<String, BTreeMap<i64, u32>>;

/// How a family of JSON documents is named and saved: TrueNAS's middleware queries,
/// or FreeNAS's v1 REST resources.
pub(super) struct DocNames<'a> {
    /// `query` or `resource`, for messages.
    pub kind: &'a str,
    /// The names accepted (a file `<name>.json` or `<name>`, or a key of one document).
    pub names: &'a [&'a str],
    /// How to save a document unchanged (the fix for one that is not JSON).
    pub save_hint: &'a str,
}

const TRUENAS_DOCS: DocNames<'static> = DocNames {
    kind: "query",
    names: &QUERIES,
    save_hint: "save the output of `midclt call <query>` unchanged",
};

/// Read a directory of per-query files or one combined file.
pub fn read_docs(path: &Path) -> Result<(Docs, Lines), ImportError> {
    read_named(path, &TRUENAS_DOCS)
}

/// Read a directory with one file per name, or one JSON object keyed by name; and
/// where each object (by its `id`) starts in its file.
pub(super) fn read_named(path: &Path, family: &DocNames) -> Result<(Docs, Lines), ImportError> {
    let (kind, names) = (family.kind, family.names);
    let mut docs = Docs::new();
    let mut lines = Lines::new();
    if path.is_dir() {
        for n in names {
            for name in [format!("{n}.json"), n.to_string()] {
                let f = path.join(&name);
                if f.is_file() {
                    let (v, text) = parse_json(&f, family.save_hint)?;
                    lines.insert(
                        n.to_string(),
                        super::json_id_lines(&text)
                            .into_iter()
                            .map(|((_, id), l)| (id, l))
                            .collect(),
                    );
                    docs.insert(n.to_string(), (v, f));
                    break;
                }
            }
        }
        if docs.is_empty() {
            return Err(ImportError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
                fix: format!(
                    "put one file per {kind} in the directory, named {}.json, {}.json, ...",
                    names[0], names[1]
                ),
            });
        }
        return Ok((docs, lines));
    }
    let (v, text) = parse_json(path, family.save_hint)?;
    for ((section, id), l) in super::json_id_lines(&text) {
        lines.entry(section).or_default().insert(id, l);
    }
    let Value::Object(map) = v else {
        return Err(syntax(
            path.display().to_string(),
            format!("the document is not a JSON object keyed by {kind} name"),
            format!(
                "write {{\"{}\": ..., \"{}\": ..., ...}} ({})",
                names[0],
                names[1],
                names.join(", ")
            ),
        ));
    };
    for (k, v) in map {
        if !names.contains(&k.as_str()) {
            return Err(syntax(
                path.display().to_string(),
                format!("unknown key {k:?}"),
                format!("use the {kind} names: {}", names.join(", ")),
            ));
        }
        docs.insert(k, (v, path.to_path_buf()));
    }
    Ok((docs, lines))
}

fn parse_json(f: &Path, save_hint: &str) -> Result<(Value, String), ImportError> {
    let text = super::read(f, "JSON file")?;
    let v = serde_json::from_str(&text).map_err(|e| {
        syntax(
            format!("{}:{}", f.display(), e.line()),
            format!("not JSON: {e}"),
            save_hint,
        )
    })?;
    Ok((v, text))
}

/// Import TrueNAS query outputs from `path` (a directory or one combined file).
pub fn import(path: &Path) -> Result<Imported, ImportError> {
    let (docs, lines) = read_docs(path)?;
    convert_with_lines(&docs, &lines)
}

fn s<'v>(v: &'v Value, k: &str) -> &'v str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}
fn int(v: &Value, k: &str) -> Option<i64> {
    v.get(k).and_then(Value::as_i64)
}
fn boolean(v: &Value, k: &str) -> Option<bool> {
    v.get(k).and_then(Value::as_bool)
}

fn list<'d>(docs: &'d Docs, q: &str, r: &mut Report) -> (Vec<&'d Value>, String) {
    match docs.get(q) {
        Some((Value::Array(a), f)) => (a.iter().collect(), f.display().to_string()),
        Some((_, f)) => {
            r.problem(
                &f.display().to_string(),
                q,
                "not a JSON array (a query returns a list); ignored",
            );
            (Vec::new(), f.display().to_string())
        }
        None => (Vec::new(), String::new()),
    }
}

/// Convert the documents.
pub fn convert(docs: &Docs) -> Result<Imported, ImportError> {
    convert_with_lines(docs, &Lines::new())
}

/// Convert the documents; findings about an object give the line it starts on when
/// `lines` knows it.
pub fn convert_with_lines(docs: &Docs, lines: &Lines) -> Result<Imported, ImportError> {
    let at = |file: &str, q: &str, id: i64| -> String {
        match lines.get(q).and_then(|m| m.get(&id)) {
            Some(l) => format!("{file}:{l}"),
            None => file.to_string(),
        }
    };
    let mut r = Report::default();
    let mut m = Model::default();
    for q in QUERIES {
        if !docs.contains_key(q) && q != "iscsi.global.config" {
            r.note("", q, "not given: imported as empty");
        }
    }
    // Global.
    let (global, gfile) = match docs.get("iscsi.global.config") {
        Some((v, f)) => (v.clone(), f.display().to_string()),
        None => (Value::Null, String::new()),
    };
    let basename = match s(&global, "basename") {
        "" => "iqn.2005-10.org.freenas.ctl".to_string(),
        b => b.to_string(),
    };
    if let Some(list) = global.get("isns_servers").and_then(Value::as_array) {
        m.global.isns_servers = list
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
    }
    m.global.alua = boolean(&global, "alua").unwrap_or(false);
    if let Some(t) = int(&global, "pool_avail_threshold") {
        r.problem(
            &gfile,
            "iscsi.global.config",
            format!("pool_avail_threshold {t}%: the model has no pool space alerts"),
        );
    }
    if boolean(&global, "iser") == Some(true) {
        r.problem(
            &gfile,
            "iscsi.global.config",
            "iser: the model has no iSER (iSCSI over RDMA)",
        );
    }

    // Auths, grouped by tag; discovery auth (newer releases) per credential.
    let (auths, afile) = list(docs, "iscsi.auth.query", &mut r);
    let mut by_tag: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
    for a in &auths {
        by_tag
            .entry(int(a, "tag").unwrap_or(0))
            .or_default()
            .push(a);
    }
    let mut auth_by_tag: BTreeMap<i64, (String, bool)> = BTreeMap::new();
    let mut auth_by_id: BTreeMap<i64, (String, bool)> = BTreeMap::new();
    let mut discovery: Vec<(String, AuthMethod)> = Vec::new();
    for (tag, mut creds) in by_tag {
        creds.sort_by_key(|a| int(a, "id"));
        for (i, a) in creds.iter().enumerate() {
            let afile = at(&afile, "iscsi.auth.query", int(a, "id").unwrap_or(0));
            let user = s(a, "user").to_string();
            let object = format!(
                "auth id {} (tag {tag}, user {user:?})",
                int(a, "id").unwrap_or(0)
            );
            let secret = s(a, "secret").to_string();
            if secret.is_empty() || secret == "********" {
                r.problem(&afile, &object, "the secret is not in the query output (redacted); set it in the secret file or variable");
            } else if let Some(p) = secret_problem(&secret) {
                r.problem(&afile, &object, p);
            }
            let peer = match s(a, "peeruser") {
                "" => None,
                pu => {
                    let ps = s(a, "peersecret").to_string();
                    if let Some(p) = secret_problem(&ps) {
                        r.problem(&afile, &object, format!("peer: {p}"));
                    }
                    if ps == secret {
                        r.problem(&afile, &object, "peersecret equals secret; the model requires them to differ (RFC 7143 12.1.3)");
                    }
                    Some(PeerCredentials {
                        user: pu.to_string(),
                        secret: Secret::new(ps),
                    })
                }
            };
            let has_peer = peer.is_some();
            let name = unique(&m.auths, &object_name(&user));
            m.auths.insert(
                name.clone(),
                ChapCredentials {
                    name: name.clone(),
                    user: user.clone(),
                    secret: Secret::new(secret),
                    peer,
                    origin: origin(Path::new(&afile), 0),
                },
            );
            auth_by_id.insert(int(a, "id").unwrap_or(0), (name.clone(), has_peer));
            if i == 0 {
                auth_by_tag.insert(tag, (name.clone(), has_peer));
            }
            match s(a, "discovery_auth") {
                "" | "NONE" => {}
                "CHAP" => discovery.push((name.clone(), AuthMethod::Chap)),
                "CHAP_MUTUAL" => discovery.push((name.clone(), AuthMethod::MutualChap)),
                o => r.problem(
                    &afile,
                    &object,
                    format!("discovery_auth {o:?} is not NONE, CHAP or CHAP_MUTUAL; ignored"),
                ),
            }
        }
        if creds.len() > 1 {
            r.problem(&afile, &format!("auth tag {tag}"), format!("{} credentials share the tag: TrueNAS accepts any of them, the model one per target group: only user {:?} (lowest id) is used by targets", creds.len(), s(creds[0], "user")));
        }
    }
    if discovery.len() > 1 {
        r.problem(&afile, "iscsi.auth.query", format!("{} credentials have discovery_auth: the model has one discovery credential per portal group: {:?} is used", discovery.len(), discovery[0].0));
    }

    // Portals.
    let (portals, pfile) = list(docs, "iscsi.portal.query", &mut r);
    let mut portal_by_id: BTreeMap<i64, String> = BTreeMap::new();
    for p in &portals {
        let tag = int(p, "tag").unwrap_or(0);
        let object = format!("portal id {} (tag {tag})", int(p, "id").unwrap_or(0));
        let pfile = at(&pfile, "iscsi.portal.query", int(p, "id").unwrap_or(0));
        let Ok(tag16) = u16::try_from(tag) else {
            r.problem(&pfile, &object, "the tag is not 1 to 65535; not imported");
            continue;
        };
        if tag16 == 0 {
            r.problem(&pfile, &object, "the tag is not 1 to 65535; not imported");
            continue;
        }
        let mut listen = Vec::new();
        for l in p
            .get("listen")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = s(l, "ip");
            let port = int(l, "port")
                .or_else(|| int(&global, "listen_port"))
                .unwrap_or(3260);
            match (ip.parse::<std::net::IpAddr>(), u16::try_from(port)) {
                (Ok(a), Ok(port)) if port > 0 => {
                    let sa = SocketAddr::new(a, port);
                    if !listen.contains(&sa) {
                        listen.push(sa);
                    }
                }
                _ => r.problem(
                    &pfile,
                    &object,
                    format!("listen {ip:?} port {port} is not an address and port; not imported"),
                ),
            }
        }
        // 0.0.0.0:P beside [::]:P: one dual-stack portal in the model.
        let v6w: Vec<u16> = listen
            .iter()
            .filter(|a| a.is_ipv6() && a.ip().is_unspecified())
            .map(|a| a.port())
            .collect();
        listen.retain(|a| !(a.is_ipv4() && a.ip().is_unspecified() && v6w.contains(&a.port())));
        let name = unique(&m.portals, &format!("portal-{tag}"));
        let mut pg = portal(&name, tag16, listen, origin(Path::new(&pfile), 0));
        pg.comment = s(p, "comment").to_string();
        // Older releases: discovery auth per portal.
        match (s(p, "discovery_authmethod"), int(p, "discovery_authgroup")) {
            ("" | "NONE", _) => {}
            (meth, Some(g)) => match auth_by_tag.get(&g) {
                Some((a, _)) => {
                    pg.discovery_auth = if meth == "CHAP_MUTUAL" {
                        AuthMethod::MutualChap
                    } else {
                        AuthMethod::Chap
                    };
                    pg.discovery_auth_group = Some(a.clone());
                }
                None => r.problem(
                    &pfile,
                    &object,
                    format!("discovery_authgroup {g} names no auth tag; not imported"),
                ),
            },
            (meth, None) => r.problem(
                &pfile,
                &object,
                format!("discovery_authmethod {meth} without discovery_authgroup; not imported"),
            ),
        }
        if let (None, Some((a, meth))) = (&pg.discovery_auth_group, discovery.first()) {
            pg.discovery_auth = *meth;
            pg.discovery_auth_group = Some(a.clone());
        }
        portal_by_id.insert(int(p, "id").unwrap_or(0), name.clone());
        m.portals.insert(name, pg);
    }

    // Initiator groups.
    let (inits, ifile) = list(docs, "iscsi.initiator.query", &mut r);
    let mut init_by_id: BTreeMap<i64, &Value> = BTreeMap::new();
    for i in &inits {
        init_by_id.insert(int(i, "id").unwrap_or(0), i);
    }
    let mut ig_cache: BTreeMap<(i64, Vec<String>), Option<String>> = BTreeMap::new();

    // Extents.
    let (extents, efile) = list(docs, "iscsi.extent.query", &mut r);
    let mut extent_by_id: BTreeMap<i64, String> = BTreeMap::new();
    for e in &extents {
        let id = int(e, "id").unwrap_or(0);
        let ename = s(e, "name");
        let object = format!("extent id {id} ({ename:?})");
        let efile = at(&efile, "iscsi.extent.query", id);
        let blocksize = match int(e, "blocksize").unwrap_or(512) {
            b @ (512 | 1024 | 2048 | 4096) => b as u32,
            b => {
                r.problem(
                    &efile,
                    &object,
                    format!("blocksize {b}: the model takes 512, 1024, 2048 or 4096; not imported"),
                );
                continue;
            }
        };
        let backing = match s(e, "type") {
            "DISK" => {
                let d = s(e, "disk");
                let dev = if d.starts_with('/') {
                    d.to_string()
                } else {
                    format!("/dev/{d}")
                };
                Backing::Block {
                    device: PathBuf::from(dev),
                }
            }
            "FILE" => {
                let size = match int(e, "filesize").unwrap_or(0) {
                    0 => None,
                    n if n > 0 => Some(n as u64),
                    n => {
                        r.problem(
                            &efile,
                            &object,
                            format!("filesize {n} is negative; imported without a size"),
                        );
                        None
                    }
                };
                if let Some(n) = size {
                    if n % u64::from(blocksize) != 0 {
                        r.problem(&efile, &object, format!("filesize {n} bytes is not a multiple of the block size {blocksize}; the model needs whole blocks"));
                    }
                }
                Backing::File {
                    path: PathBuf::from(s(e, "path")),
                    size,
                }
            }
            t => {
                r.problem(
                    &efile,
                    &object,
                    format!("type {t:?}: the model has DISK and FILE extents; not imported"),
                );
                continue;
            }
        };
        let serial = match s(e, "serial") {
            "" => {
                r.problem(&efile, &object, "no serial in the query output; the model derives one: set `serial` to keep what initiators see");
                String::new()
            }
            v => match serial_problem(v) {
                None => v.to_string(),
                Some(p) => {
                    r.problem(&efile, &object, p);
                    String::new()
                }
            },
        };
        let rpm = match s(e, "rpm") {
            "SSD" => Rpm::Ssd,
            "" | "UNKNOWN" => Rpm::Unknown,
            n => match n.parse::<u16>() {
                Ok(v @ (5400 | 7200 | 10000 | 15000)) => Rpm::Rpm(v),
                _ => {
                    r.problem(&efile, &object, format!("rpm {n:?} is not SSD, UNKNOWN, 5400, 7200, 10000 or 15000; imported as unknown"));
                    Rpm::Unknown
                }
            },
        };
        let naa = match s(e, "naa") {
            "" => None,
            n if (n.len() == 18 || n.len() == 34)
                && n.starts_with("0x")
                && n[2..].bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Some(n.to_ascii_lowercase())
            }
            n => {
                r.problem(
                    &efile,
                    &object,
                    format!("naa {n:?} is not 0x + 16 or 32 hex digits; not imported"),
                );
                None
            }
        };
        if boolean(e, "pblocksize") == Some(true) {
            r.problem(&efile, &object, "pblocksize (physical block size reporting disabled): the model has no physical block size setting");
        }
        if let Some(t) = int(e, "avail_threshold") {
            r.problem(
                &efile,
                &object,
                format!("avail_threshold {t}%: the model has no space alerts"),
            );
        }
        if boolean(e, "insecure_tpc") == Some(false) {
            r.problem(
                &efile,
                &object,
                "insecure_tpc false: the model has no third-party copy restriction",
            );
        }
        if boolean(e, "xen") == Some(true) {
            r.problem(
                &efile,
                &object,
                "xen: the model has no Xen initiator compatibility mode",
            );
        }
        let name = unique(&m.extents, &object_name(ename));
        let serial = if serial.is_empty() {
            crate::model::derived_serial(None, &name)
        } else {
            serial
        };
        m.extents.insert(
            name.clone(),
            Extent {
                name: name.clone(),
                backing,
                blocksize,
                serial,
                naa,
                readonly: boolean(e, "ro").unwrap_or(false),
                rpm,
                comment: s(e, "comment").to_string(),
                enabled: boolean(e, "enabled").unwrap_or(true),
                shared: false,
                write_back: false,
                model_alias: false,
                origin: origin(Path::new(&efile), 0),
            },
        );
        extent_by_id.insert(id, name);
    }

    // LUN maps.
    let (maps, mfile) = list(docs, "iscsi.targetextent.query", &mut r);
    let mut luns_of: BTreeMap<i64, BTreeMap<u16, String>> = BTreeMap::new();
    let mut users: BTreeMap<String, usize> = BTreeMap::new();
    for x in &maps {
        let object = format!("targetextent id {}", int(x, "id").unwrap_or(0));
        let mfile = at(
            &mfile,
            "iscsi.targetextent.query",
            int(x, "id").unwrap_or(0),
        );
        let (Some(t), Some(e)) = (int(x, "target"), int(x, "extent")) else {
            r.problem(&mfile, &object, "no target or extent id; not imported");
            continue;
        };
        let Some(en) = extent_by_id.get(&e) else {
            r.problem(
                &mfile,
                &object,
                format!(
                    "extent {e} is not in iscsi.extent.query (or was not imported); not imported"
                ),
            );
            continue;
        };
        let lun = int(x, "lunid").unwrap_or(0);
        if !(0..=i64::from(limits::MAX_LUN)).contains(&lun) {
            r.problem(
                &mfile,
                &object,
                format!(
                    "lunid {lun}: the model's LUN ids are 0 to {}; not imported",
                    limits::MAX_LUN
                ),
            );
            continue;
        }
        let map = luns_of.entry(t).or_default();
        if map.values().any(|v| v == en) {
            r.problem(&mfile, &object, format!("extent {en:?} is mapped twice in one target; the model maps an extent once per target: not imported"));
            continue;
        }
        map.insert(lun as u16, en.clone());
        *users.entry(en.clone()).or_default() += 1;
    }
    for (en, n) in users {
        if n > 1 {
            if let Some(e) = m.extents.get_mut(&en) {
                e.shared = true;
            }
        }
    }

    // Targets.
    let (targets, tfile) = list(docs, "iscsi.target.query", &mut r);
    for t in &targets {
        let id = int(t, "id").unwrap_or(0);
        let tname = s(t, "name");
        let object = format!("target id {id} ({tname:?})");
        let tfile = at(&tfile, "iscsi.target.query", id);
        let full = if IscsiName::has_type_prefix(tname) {
            tname.to_string()
        } else {
            format!("{basename}:{tname}")
        };
        let name = match IscsiName::parse(&full.to_ascii_lowercase()) {
            Ok(n) => n,
            Err(e) => {
                r.problem(&tfile, &object, format!("{}; not imported", e.problem));
                continue;
            }
        };
        match s(t, "mode") {
            "" | "ISCSI" => {}
            mode => r.problem(
                &tfile,
                &object,
                format!("mode {mode}: the model has iSCSI only, not Fibre Channel"),
            ),
        }
        let nets: Vec<String> = t
            .get("auth_networks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        let mut groups = Vec::new();
        for g in t
            .get("groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(pn) = int(g, "portal").and_then(|p| portal_by_id.get(&p)) else {
                r.problem(
                    &tfile,
                    &object,
                    format!(
                        "group portal {:?} is not in iscsi.portal.query; not imported",
                        g.get("portal")
                    ),
                );
                continue;
            };
            let ini = int(g, "initiator");
            let key = (ini.unwrap_or(-1), nets.clone());
            let ig = match ig_cache.get(&key) {
                Some(v) => v.clone(),
                None => {
                    let v = initiator_group(
                        &mut m,
                        &mut r,
                        &at(&ifile, "iscsi.initiator.query", ini.unwrap_or(-1)),
                        &object,
                        ini.map(|i| (i, init_by_id.get(&i).copied())),
                        &nets,
                    );
                    ig_cache.insert(key, v.clone());
                    v
                }
            };
            let meth = s(g, "authmethod");
            let (auth, method) = match (meth, int(g, "auth")) {
                ("" | "NONE", _) => (None, AuthMethod::None),
                (m2, Some(tag)) => {
                    match auth_by_tag.get(&tag) {
                        Some((a, has_peer)) => {
                            let method = if m2 == "CHAP_MUTUAL" {
                                AuthMethod::MutualChap
                            } else {
                                AuthMethod::Chap
                            };
                            if method == AuthMethod::MutualChap && !has_peer {
                                r.problem(&tfile, &object, format!("CHAP_MUTUAL with auth tag {tag}, which has no peer user; imported as CHAP"));
                                (Some(a.clone()), AuthMethod::Chap)
                            } else {
                                (Some(a.clone()), method)
                            }
                        }
                        None => {
                            r.problem(&tfile, &object, format!("auth tag {tag} is not in iscsi.auth.query; imported without CHAP"));
                            (None, AuthMethod::None)
                        }
                    }
                }
                (m2, None) => {
                    r.problem(
                        &tfile,
                        &object,
                        format!("authmethod {m2} without an auth tag; imported without CHAP"),
                    );
                    (None, AuthMethod::None)
                }
            };
            if groups.iter().any(|x: &TargetGroup| x.portal == *pn) {
                r.problem(&tfile, &object, format!("portal {pn:?} is in two groups of the target; the model takes one: the first is kept"));
                continue;
            }
            groups.push(TargetGroup {
                portal: pn.clone(),
                initiator_group: ig,
                auth,
                auth_method: method,
                chap_optional: false,
                origin: origin(Path::new(&tfile), 0),
            });
        }
        if groups.is_empty() {
            r.problem(
                &tfile,
                &object,
                "reachable through no portal group; not imported",
            );
            continue;
        }
        let alias = t
            .get("alias")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
            .map(String::from);
        m.targets.insert(
            name.clone(),
            Target {
                key: name.as_str().to_string(),
                name,
                alias,
                luns: luns_of.remove(&id).unwrap_or_default(),
                groups,
                origin: origin(Path::new(&tfile), 0),
            },
        );
    }
    for (t, _) in luns_of {
        r.problem(&mfile, &format!("target id {t}"), "LUNs mapped to a target that is not in iscsi.target.query (or was not imported); not imported");
    }
    let (problems, notes) = r.sorted();
    Ok(Imported {
        model: m,
        problems,
        notes,
    })
}

/// The initiator group for a TrueNAS initiator object and a target's networks.
fn initiator_group(
    m: &mut Model,
    r: &mut Report,
    ifile: &str,
    object: &str,
    ini: Option<(i64, Option<&Value>)>,
    nets: &[String],
) -> Option<String> {
    let mut initiators = Vec::new();
    let mut ini_nets: Vec<String> = Vec::new();
    let mut comment = String::new();
    let mut base = String::new();
    match ini {
        None => {}
        Some((id, None)) => r.problem(
            ifile,
            object,
            format!("initiator {id} is not in iscsi.initiator.query; imported as any initiator"),
        ),
        Some((id, Some(v))) => {
            base = format!("initiators-{id}");
            comment = s(v, "comment").to_string();
            for n in v
                .get("initiators")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if n == "ALL" {
                    continue;
                }
                match IscsiName::parse(&n.to_ascii_lowercase()) {
                    Ok(i) if !initiators.contains(&i) => initiators.push(i),
                    Ok(_) => {}
                    Err(e) => r.problem(
                        ifile,
                        &format!("initiator id {id}"),
                        format!("{}; not imported", e.problem),
                    ),
                }
            }
            // Older releases (and FreeNAS): networks on the initiator group, ANDed
            // with the names as ctld and the model do.
            ini_nets.extend(
                v.get("auth_network")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter(|n| *n != "ALL")
                    .map(String::from),
            );
        }
    }
    let mut networks = Vec::new();
    for n in ini_nets.iter().chain(nets) {
        match parse_network(n) {
            Ok((net, _)) if !networks.contains(&net) => networks.push(net),
            Ok(_) => {}
            Err(e) => r.problem(
                ifile,
                object,
                format!("auth_networks: {}; not imported", e.problem),
            ),
        }
    }
    if initiators.is_empty() && networks.is_empty() {
        return None;
    }
    if !nets.is_empty() {
        let short = object_name(object.rsplit(':').next().unwrap_or(object));
        base = if base.is_empty() {
            format!("{short}-networks")
        } else {
            format!("{base}-{short}")
        };
    }
    let name = unique(&m.initiator_groups, &object_name(&base));
    m.initiator_groups.insert(
        name.clone(),
        InitiatorGroup {
            name: name.clone(),
            initiators,
            networks,
            comment,
            origin: origin(Path::new(ifile), 0),
        },
    );
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn docs(v: Value) -> Docs {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), (v.clone(), PathBuf::from(format!("{k}.json")))))
            .collect()
    }

    #[test]
    fn ids_become_names_and_luns_map() {
        let d = docs(json!({
            "iscsi.global.config": {"id": 1, "basename": "iqn.2005-10.org.freenas.ctl", "isns_servers": [], "listen_port": 3260, "alua": false},
            "iscsi.portal.query": [{"id": 1, "tag": 1, "comment": "lan", "listen": [{"ip": "0.0.0.0", "port": 3260}, {"ip": "::", "port": 3260}]}],
            "iscsi.initiator.query": [{"id": 2, "initiators": ["iqn.1998-01.com.vmware:esx1"], "comment": "esx"}],
            "iscsi.auth.query": [{"id": 1, "tag": 5, "user": "esx", "secret": "esxsecret1234", "peeruser": "nas", "peersecret": "nassecret1234", "discovery_auth": "NONE"}],
            "iscsi.target.query": [{"id": 3, "name": "vm", "alias": null, "mode": "ISCSI", "auth_networks": ["10.0.0.0/8"],
                "groups": [{"portal": 1, "initiator": 2, "authmethod": "CHAP_MUTUAL", "auth": 5}], "rel_tgt_id": 1}],
            "iscsi.extent.query": [{"id": 7, "name": "vm disk", "type": "DISK", "disk": "zvol/tank/vm", "serial": "08002789a1b2c3", "path": "zvol/tank/vm",
                "filesize": 0, "blocksize": 4096, "pblocksize": false, "avail_threshold": null, "comment": "", "insecure_tpc": true, "xen": false,
                "rpm": "SSD", "ro": false, "enabled": true, "naa": "0x6589cfc000000aa1bb2cc3dd4ee5ff60"}],
            "iscsi.targetextent.query": [{"id": 1, "target": 3, "lunid": 0, "extent": 7}]
        }));
        let i = convert(&d).unwrap();
        assert!(i.problems.is_empty(), "{:#?}", i.problems);
        let m = &i.model;
        let t = &m.targets[&IscsiName::parse("iqn.2005-10.org.freenas.ctl:vm").unwrap()];
        assert_eq!(t.luns[&0], "vm-disk");
        let e = &m.extents["vm-disk"];
        assert_eq!(
            e.backing,
            Backing::Block {
                device: "/dev/zvol/tank/vm".into()
            }
        );
        assert_eq!(
            (e.blocksize, e.serial.as_str(), e.rpm),
            (4096, "08002789a1b2c3", Rpm::Ssd)
        );
        let g = &t.groups[0];
        assert_eq!(
            (g.portal.as_str(), g.auth.as_deref(), g.auth_method),
            ("portal-1", Some("esx"), AuthMethod::MutualChap)
        );
        let ig = &m.initiator_groups[g.initiator_group.as_ref().unwrap()];
        assert_eq!((ig.initiators.len(), ig.networks.len()), (1, 1));
        assert_eq!(m.portals["portal-1"].listen.len(), 1);
    }

    #[test]
    fn what_the_model_lacks_is_reported() {
        let d = docs(json!({
            "iscsi.auth.query": [
                {"id": 1, "tag": 1, "user": "a", "secret": "asecret123456"},
                {"id": 2, "tag": 1, "user": "b", "secret": "bsecret123456"}],
            "iscsi.extent.query": [{"id": 1, "name": "f", "type": "FILE", "path": "/mnt/tank/f.img", "filesize": 1000, "blocksize": 512,
                "serial": "x", "xen": true, "pblocksize": true}],
            "iscsi.target.query": [{"id": 1, "name": "t", "mode": "BOTH", "groups": []}]
        }));
        let i = convert(&d).unwrap();
        let p: Vec<&str> = i.problems.iter().map(|p| p.problem.as_str()).collect();
        for want in [
            "2 credentials share the tag",
            "multiple of the block size",
            "xen",
            "pblocksize",
            "Fibre Channel",
            "no portal group",
        ] {
            assert!(p.iter().any(|x| x.contains(want)), "{want}: {p:#?}");
        }
    }
}
