//! tgt-admin's `targets.conf` (Linux SCSI target framework, tgt) → a [`Model`].
//!
//! The file is Config::General syntax as tgt-admin reads it (`-UseApacheInclude`,
//! `-IncludeGlob`, `-MergeDuplicateBlocks`): `key value` lines, `#` comments, `\` line
//! continuations, `include PATTERN`, `<target NAME>` blocks (two blocks with one name
//! are merged) holding options and `<backing-store PATH>` / `<direct-store PATH>`
//! blocks with per-LUN options.
//!
//! What tgt does, reproduced exactly (scripts/tgt-admin, usr/spc.c, usr/iscsi/target.c):
//!
//! * Targets get tids 1, 2, ... in byte order of their names, on a tgtd without
//!   targets; `controller_tid N` sets a target's tid and the next ones count on from it.
//! * In a target, backing stores are added before direct stores, each kind in byte
//!   order of path (a Perl hash, sorted). A store with `lun N` gets N; the others take
//!   the smallest LUN ≥ 1 that no store of the target reserves or already has (LUN 0 is
//!   tgt's controller). A target-level `lun N` applies to every store.
//! * A LUN without `scsi_sn` has the serial `beaf<tid><lun>` (usr/spc.c); the import
//!   writes it as the extent's `serial` so initiators see the same disk.
//! * `write-cache` is on unless `off` (tgt's default): `write_back = true`.
//! * Access: tgtd admits a login when the initiator's address matches an
//!   `initiator-address` **or** its name matches an `initiator-name`; tgt-admin binds
//!   `ALL` addresses when the target has no `initiator-address`, so `initiator-name`
//!   alone restricts nothing.
//! * CHAP accounts are global in tgt: the first password given for a user is the one
//!   tgt uses for every target binding that user.
//!
//! tgt listens on every address, port 3260: the model gets one portal group
//! `default` on `[::]:3260`. Paths under `/dev/` become `block` extents, others `file`
//! extents (sized by the existing file). tgt-admin skips a store that does not exist
//! when it runs; the import assumes every store exists.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::{object_name, origin, portal, secret_problem, serial_problem, unique, Report};
use super::{syntax, ImportError, Imported};
use crate::model::{
    AuthMethod, Backing, ChapCredentials, Extent, InitiatorGroup, IscsiName, Model,
    PeerCredentials, Rpm, Secret, Target, TargetGroup,
};

/// Includes nested deeper than this are refused (an include loop).
const MAX_INCLUDE_DEPTH: usize = 16;

#[derive(Debug, Clone)]
struct Line {
    text: String,
    at: String,
    file: PathBuf,
    line: u32,
}

#[derive(Debug, Clone)]
struct Opt {
    key: String,
    value: String,
    at: String,
}

#[derive(Debug, Clone)]
struct Store {
    path: String,
    direct: bool,
    /// Written as a `<backing-store PATH>` block (not a one-line option).
    block: bool,
    opts: Vec<Opt>,
    at: String,
}

#[derive(Debug, Clone)]
struct TgtTarget {
    name: String,
    at: String,
    file: PathBuf,
    line: u32,
    opts: Vec<Opt>,
    stores: Vec<Store>,
}

/// Import the tgt configuration at `path` (and the files it includes).
pub fn import(path: &Path) -> Result<Imported, ImportError> {
    let mut lines = Vec::new();
    read_lines(path, 0, &mut lines)?;
    let (globals, targets) = parse(&lines)?;
    convert(path, &globals, targets)
}

/// Import tgt configuration text (tests); `include`s are read relative to `file`.
pub fn import_str(file: &Path, text: &str) -> Result<Imported, ImportError> {
    let mut lines = Vec::new();
    split_lines(file, text, 0, &mut lines)?;
    let (globals, targets) = parse(&lines)?;
    convert(file, &globals, targets)
}

fn read_lines(path: &Path, depth: usize, out: &mut Vec<Line>) -> Result<(), ImportError> {
    let text = super::read(path, "tgt configuration file (targets.conf)")?;
    split_lines(path, &text, depth, out)
}

fn strip_comment(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'#') => {
                out.push('#');
                chars.next();
            }
            '#' => break,
            c => out.push(c),
        }
    }
    out.trim().to_string()
}

fn split_lines(
    file: &Path,
    text: &str,
    depth: usize,
    out: &mut Vec<Line>,
) -> Result<(), ImportError> {
    let mut pending: Option<(String, u32)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i as u32 + 1;
        let (mut acc, start) = pending.take().unwrap_or((String::new(), n));
        let raw = raw.trim_end();
        if let Some(cont) = raw.strip_suffix('\\') {
            acc.push_str(cont);
            pending = Some((acc, start));
            continue;
        }
        acc.push_str(raw);
        let text = strip_comment(&acc);
        if text.is_empty() {
            continue;
        }
        let at = format!("{}:{start}", file.display());
        let (key, value) = key_value(&text);
        if key == "include" {
            include(file, &value, &at, depth, out)?;
            continue;
        }
        out.push(Line {
            text,
            at,
            file: file.to_path_buf(),
            line: start,
        });
    }
    Ok(())
}

/// `include PATTERN`: a file, a directory (every file in it), or a glob with `*`/`?`
/// in its last component. Relative patterns are relative to the including file's
/// directory. A glob that matches nothing includes nothing (Config::General does the
/// same with `-IncludeGlob`).
fn include(
    from: &Path,
    pattern: &str,
    at: &str,
    depth: usize,
    out: &mut Vec<Line>,
) -> Result<(), ImportError> {
    if depth >= MAX_INCLUDE_DEPTH {
        return Err(syntax(
            at,
            format!("includes nested more than {MAX_INCLUDE_DEPTH} deep (an include loop?)"),
            "remove the include that includes its own file",
        ));
    }
    let p = Path::new(pattern);
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        from.parent().unwrap_or(Path::new(".")).join(p)
    };
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut files: Vec<PathBuf> = Vec::new();
    if name.contains(['*', '?']) {
        let dir = p.parent().unwrap_or(Path::new("."));
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if glob_match(&name, &n) && !n.starts_with('.') && e.path().is_file() {
                    files.push(e.path());
                }
            }
        }
    } else if p.is_dir() {
        let rd = std::fs::read_dir(&p).map_err(|source| ImportError::Io {
            path: p.clone(),
            source,
            fix: "make the included directory readable".into(),
        })?;
        files.extend(rd.flatten().map(|e| e.path()).filter(|f| f.is_file()));
    } else {
        files.push(p);
    }
    files.sort();
    for f in files {
        read_lines(&f, depth + 1, out).map_err(|e| match e {
            ImportError::Io { path, source, .. } => ImportError::Io {
                path,
                source,
                fix: format!("fix the `include {pattern}` at {at}"),
            },
            e => e,
        })?;
    }
    Ok(())
}

/// Shell-style match of `*` and `?`.
fn glob_match(pat: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pat.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// `key value`, `key = value` or `key=value`.
fn key_value(text: &str) -> (String, String) {
    let end = text
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(text.len());
    let key = text[..end].to_string();
    let rest = text[end..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
    (key, rest.to_string())
}

type Parsed = (Vec<Opt>, BTreeMap<String, TgtTarget>);

fn parse(lines: &[Line]) -> Result<Parsed, ImportError> {
    let mut globals = Vec::new();
    let mut targets: BTreeMap<String, TgtTarget> = BTreeMap::new();
    let mut cur: Option<String> = None;
    let mut store: Option<Store> = None;
    for l in lines {
        let t = l.text.as_str();
        if let Some(close) = t.strip_prefix("</") {
            let tag = close.trim_end_matches('>').trim().to_ascii_lowercase();
            match (tag.as_str(), &cur, store.take()) {
                ("backing-store" | "direct-store", Some(name), Some(s))
                    if (tag == "direct-store") == s.direct =>
                {
                    targets
                        .get_mut(name)
                        .expect("open target")
                        .stores
                        .push(s);
                }
                ("target", Some(_), None) => cur = None,
                _ => {
                    return Err(syntax(
                        &l.at,
                        format!("`{t}` closes no open block"),
                        "close blocks in the order they were opened: </backing-store> or </direct-store> before </target>",
                    ))
                }
            }
            continue;
        }
        if let Some(open) = t.strip_prefix('<') {
            let inner = open.strip_suffix('>').ok_or_else(|| {
                syntax(
                    &l.at,
                    format!("`{t}` is not a block: a `>` is missing"),
                    "write `<target NAME>`",
                )
            })?;
            let (kind, arg) = key_value(inner);
            let kind = kind.to_ascii_lowercase();
            if arg.is_empty() {
                return Err(syntax(
                    &l.at,
                    format!("`<{kind}>` has no name"),
                    format!("write `<{kind} NAME>`"),
                ));
            }
            match (kind.as_str(), &cur, &store) {
                ("target", None, None) => {
                    let e = targets.entry(arg.clone()).or_insert_with(|| TgtTarget {
                        name: arg.clone(),
                        at: l.at.clone(),
                        file: l.file.clone(),
                        line: l.line,
                        opts: Vec::new(),
                        stores: Vec::new(),
                    });
                    cur = Some(e.name.clone());
                }
                ("backing-store" | "direct-store", Some(_), None) => {
                    store = Some(Store {
                        path: arg,
                        direct: kind == "direct-store",
                        block: true,
                        opts: Vec::new(),
                        at: l.at.clone(),
                    })
                }
                _ => {
                    return Err(syntax(
                        &l.at,
                        format!("block `<{kind}>` is not allowed here"),
                        "targets.conf has <target NAME> blocks at the top level and <backing-store PATH> / <direct-store PATH> blocks inside them; close the open block first",
                    ))
                }
            }
            continue;
        }
        let (key, value) = key_value(t);
        let opt = Opt {
            key: key.clone(),
            value: value.clone(),
            at: l.at.clone(),
        };
        match (&cur, &mut store) {
            (_, Some(s)) => s.opts.push(opt),
            (Some(name), None) => {
                let tt = targets.get_mut(name).expect("open target");
                if key == "backing-store" || key == "direct-store" {
                    tt.stores.push(Store {
                        path: value,
                        direct: key == "direct-store",
                        block: false,
                        opts: Vec::new(),
                        at: l.at.clone(),
                    });
                } else {
                    tt.opts.push(opt);
                }
            }
            (None, None) => globals.push(opt),
        }
    }
    if let Some(name) = cur {
        return Err(syntax(
            &targets[&name].at,
            format!("<target {name}> is never closed"),
            "add </target>",
        ));
    }
    Ok((globals, targets))
}

/// Options tgt-admin accepts per LUN (in a store block or for the whole target).
const LUN_OPTIONS_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "vendor_id",
        "the model has no vendor identification (INQUIRY)",
    ),
    (
        "product_id",
        "the model has no product identification (INQUIRY)",
    ),
    ("product_rev", "the model has no product revision (INQUIRY)"),
    (
        "scsi_id",
        "the model has no free-form device identifier (VPD 0x83); only `naa`",
    ),
    (
        "sense_format",
        "the model has no sense format setting (fixed sense is used)",
    ),
    ("removable", "the model has no removable media"),
    ("online", "the model has no offline LUNs"),
    ("path", "the model has no tgt `path` LUN parameter"),
    ("mode_page", "the model has no mode page settings"),
    ("params", "the model has no backing-store parameters"),
    ("bsopts", "the model has no backing-store options"),
    (
        "bsoflags",
        "the model has no open flags for the backing store",
    ),
    (
        "lbppbe",
        "the model has no logical blocks per physical block exponent",
    ),
    ("la_lba", "the model has no lowest aligned LBA"),
    (
        "optimal_xfer_gran",
        "the model has no optimal transfer length granularity",
    ),
    (
        "optimal_xfer_len",
        "the model has no optimal transfer length",
    ),
];

const TARGET_PARAMS: &[&str] = &[
    "MaxRecvDataSegmentLength",
    "MaxXmitDataSegmentLength",
    "HeaderDigest",
    "DataDigest",
    "InitialR2T",
    "MaxOutstandingR2T",
    "ImmediateData",
    "FirstBurstLength",
    "MaxBurstLength",
    "DataPDUInOrder",
    "DataSequenceInOrder",
    "ErrorRecoveryLevel",
    "IFMarker",
    "OFMarker",
    "DefaultTime2Wait",
    "DefaultTime2Retain",
    "OFMarkInt",
    "IFMarkInt",
    "MaxConnections",
];

/// CHAP accounts: user → (password, where first given). tgt keeps the first.
#[derive(Default)]
struct Accounts(BTreeMap<String, (String, String)>);

impl Accounts {
    fn add(&mut self, r: &mut Report, o: &Opt, object: &str) -> Option<String> {
        let mut it = o.value.split(' ');
        let (user, pass) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
        if user.is_empty() || pass.is_empty() {
            r.problem(
                &o.at,
                object,
                format!("`{} {}` needs a user and a password", o.key, o.value),
            );
            return None;
        }
        match self.0.get(user) {
            Some((p, first)) if p != pass => r.problem(
                &o.at,
                object,
                format!(
                    "CHAP user {user:?} was first given another password (at {first}); tgt keeps the first, and so does the import"
                ),
            ),
            Some(_) => {}
            None => {
                self.0
                    .insert(user.to_string(), (pass.to_string(), o.at.clone()));
            }
        }
        Some(user.to_string())
    }
}

fn parse_address(s: &str) -> Option<IpNet> {
    let s = s.trim();
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match prefix {
        Some(p) => p.parse::<u8>().ok().filter(|&l| l <= max)?,
        None => max,
    };
    IpNet::new(ip, len).ok().map(|n| n.trunc())
}

fn convert(
    file: &Path,
    globals: &[Opt],
    targets: BTreeMap<String, TgtTarget>,
) -> Result<Imported, ImportError> {
    let mut r = Report::default();
    let mut m = Model::default();
    let mut accounts = Accounts::default();
    let mut default_driver = "iscsi".to_string();
    let mut discovery: (Option<String>, Option<String>) = (None, None);
    let mut discovery_at = String::new();
    for o in globals {
        match o.key.as_str() {
            "default-driver" => default_driver = o.value.clone(),
            "ignore-errors" | "control-port" => {}
            "incomingdiscoveryuser" => {
                discovery.0 = accounts.add(&mut r, o, "global");
                discovery_at = o.at.clone();
            }
            "outgoingdiscoveryuser" => discovery.1 = accounts.add(&mut r, o, "global"),
            "iSNSServerIP" => m.global.isns_servers.push(o.value.clone()),
            "iSNS" | "iSNSServerPort" | "iSNSAccessControl" => r.problem(
                &o.at,
                "global",
                format!(
                    "`{}`: the model's iSNS support is `global.isns_servers` only (server port and access control are not expressible)",
                    o.key
                ),
            ),
            "backing-store" | "direct-store" | "lun" => {
                return Err(syntax(
                    &o.at,
                    format!("`{}` outside a <target> block", o.key),
                    "move it inside the <target NAME> block it belongs to",
                ))
            }
            k => r.problem(
                &o.at,
                "global",
                format!("unknown tgt-admin option `{k}`; not imported"),
            ),
        }
    }
    let port_origin = origin(file, 1);
    m.portals.insert(
        "default".into(),
        portal(
            "default",
            1,
            vec![SocketAddr::from(([0u16; 8], 3260))],
            port_origin,
        ),
    );

    // tids, in byte order of the names (a sorted Perl hash).
    let mut next_tid: u64 = 0;
    let mut store_owner: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut auth_by_pair: BTreeMap<(String, Option<String>), String> = BTreeMap::new();
    for (name, t) in &targets {
        let object = format!("target {name:?}");
        let get = |k: &'static str| t.opts.iter().filter(move |o| o.key == k);
        if let Some(o) = get("controller_tid").next_back() {
            match o.value.parse::<u64>() {
                Ok(n) => next_tid = n,
                Err(_) => r.problem(
                    &o.at,
                    &object,
                    format!("controller_tid {:?} is not a number", o.value),
                ),
            }
        } else {
            next_tid += 1;
        }
        let tid = next_tid;
        let lname = name.to_ascii_lowercase();
        if lname != *name {
            r.note(
                &t.at,
                &object,
                format!("iSCSI names compare case-insensitively (RFC 3722); written as {lname:?}"),
            );
        }
        let iname = match IscsiName::parse(&lname) {
            Ok(n) => n,
            Err(e) => {
                r.problem(
                    &t.at,
                    &object,
                    format!("{}; the target is not imported ({})", e.problem, e.fix),
                );
                continue;
            }
        };
        let driver = get("driver")
            .next_back()
            .map_or(default_driver.clone(), |o| o.value.clone());
        if driver != "iscsi" {
            r.problem(
                &t.at,
                &object,
                format!("driver {driver:?}: the model serves iSCSI over TCP only"),
            );
        }
        // Target-level options.
        let mut target_level: BTreeMap<&str, &Opt> = BTreeMap::new();
        for o in &t.opts {
            match o.key.as_str() {
                "controller_tid" | "driver" | "allow-in-use" | "initiator-address"
                | "initiator-name" | "incominguser" | "outgoinguser" => {}
                "lun" | "write-cache" | "scsi_sn" | "readonly" | "block-size" | "bs-type"
                | "device-type" => {
                    target_level.insert(o.key.as_str(), o);
                }
                k if LUN_OPTIONS_UNSUPPORTED.iter().any(|(u, _)| *u == k) => {
                    target_level.insert(o.key.as_str(), o);
                }
                k if TARGET_PARAMS.contains(&k) => r.problem(
                    &o.at,
                    &object,
                    format!("`{k} {}`: the model has no per-target iSCSI login parameters (the engine and LIO negotiate their defaults)", o.value),
                ),
                "state" if o.value == "ready" => {}
                "state" => r.problem(
                    &o.at,
                    &object,
                    format!("`state {}`: the model has no offline targets", o.value),
                ),
                k => r.problem(
                    &o.at,
                    &object,
                    format!("unknown tgt-admin target option `{k}`; not imported"),
                ),
            }
        }
        // Stores: dedup per kind, backing before direct, each in byte order of path.
        for direct in [false, true] {
            let kind: Vec<&Store> = t.stores.iter().filter(|s| s.direct == direct).collect();
            if kind.iter().any(|s| s.block) && kind.iter().any(|s| !s.block) {
                let s = kind.iter().find(|s| !s.block).expect("one");
                return Err(syntax(
                    &s.at,
                    format!(
                        "target {name}: one-line `{}` mixed with `<{0} PATH>` blocks; tgt-admin cannot read this either",
                        if direct { "direct-store" } else { "backing-store" }
                    ),
                    "write every store of this target as a block, or every one as a line",
                ));
            }
        }
        let mut stores: BTreeMap<(bool, String), Store> = BTreeMap::new();
        for s in &t.stores {
            stores
                .entry((s.direct, s.path.clone()))
                .and_modify(|e| e.opts.extend(s.opts.iter().cloned()))
                .or_insert_with(|| s.clone());
        }
        fn lun_of(s: &Store) -> Option<&Opt> {
            s.opts.iter().rev().find(|o| o.key == "lun")
        }
        let mut reserved: BTreeSet<u64> = BTreeSet::new();
        for s in stores.values() {
            if let Some(o) = lun_of(s) {
                if let Ok(n) = o.value.parse() {
                    reserved.insert(n);
                }
            }
        }
        let target_lun = target_level.get("lun").copied();
        if let (Some(tl), true) = (target_lun, stores.len() > 1) {
            return Err(syntax(
                &tl.at,
                format!("target {name}: a target-level `lun` with {} stores gives them all one LUN; tgt-admin refuses it", stores.len()),
                "move `lun N` into a <backing-store PATH> block for each store",
            ));
        }
        let mut luns: BTreeMap<u16, String> = BTreeMap::new();
        let mut seen_paths: BTreeSet<String> = BTreeSet::new();
        for s in stores.values() {
            let lobj = format!("{object} store {:?}", s.path);
            if !seen_paths.insert(s.path.clone()) {
                r.problem(
                    &s.at,
                    &lobj,
                    "the path is both a backing-store and a direct-store of this target; tgt-admin skips the second as in use, and so does the import",
                );
                continue;
            }
            // tgt-admin: a per-store `lun`, else the smallest free one; a target-level
            // `lun` overrides both.
            let lun_opt = target_lun.or(lun_of(s));
            let lun: u64 = match lun_opt {
                Some(o) => match o.value.parse() {
                    Ok(n) => n,
                    Err(_) => {
                        r.problem(
                            &o.at,
                            &lobj,
                            format!(
                                "lun {:?} is not a number; the store is not imported",
                                o.value
                            ),
                        );
                        continue;
                    }
                },
                None => {
                    let n = (1..).find(|n| !reserved.contains(n)).expect("a free LUN");
                    reserved.insert(n);
                    n
                }
            };
            if lun == 0 || lun > u64::from(crate::model::limits::MAX_LUN) {
                r.problem(
                    &s.at,
                    &lobj,
                    format!(
                        "LUN {lun}: {}; the store is not imported",
                        if lun == 0 {
                            "LUN 0 is tgt's controller, tgtadm refuses it".to_string()
                        } else {
                            format!(
                                "the model's LUN ids go up to {}",
                                crate::model::limits::MAX_LUN
                            )
                        }
                    ),
                );
                continue;
            }
            let lun = lun as u16;
            if luns.contains_key(&lun) {
                r.problem(&s.at, &lobj, format!("LUN {lun} is taken by another store of this target; tgtadm refuses the second, and so does the import"));
                continue;
            }
            // The value of a LUN option: the store's own, else the target's.
            let opt = |k: &str| -> Option<&Opt> {
                s.opts
                    .iter()
                    .rev()
                    .find(|o| o.key == k)
                    .or_else(|| target_level.get(k).copied())
            };
            for o in &s.opts {
                let k = o.key.as_str();
                let known = matches!(
                    k,
                    "lun"
                        | "write-cache"
                        | "scsi_sn"
                        | "readonly"
                        | "block-size"
                        | "bs-type"
                        | "device-type"
                        | "allow-in-use"
                ) || LUN_OPTIONS_UNSUPPORTED.iter().any(|(u, _)| *u == k);
                if !known {
                    r.problem(
                        &o.at,
                        &lobj,
                        format!("unknown tgt-admin store option `{k}`; not imported"),
                    );
                }
            }
            for (k, why) in LUN_OPTIONS_UNSUPPORTED {
                if let Some(o) = opt(k) {
                    r.problem(&o.at, &lobj, format!("`{k} {}`: {why}", o.value));
                }
            }
            let write_back = match opt("write-cache") {
                None => true,
                Some(o) if o.value == "off" => false,
                Some(o) if o.value == "on" => true,
                Some(o) => {
                    r.problem(&o.at, &lobj, format!("write-cache {:?}: tgt knows on and off; imported as on (tgt's default)", o.value));
                    true
                }
            };
            let readonly = match opt("readonly") {
                None => false,
                Some(o) if o.value == "1" || o.value == "on" || o.value == "yes" => true,
                Some(o) if o.value == "0" || o.value == "off" || o.value == "no" => false,
                Some(o) => {
                    r.problem(
                        &o.at,
                        &lobj,
                        format!(
                            "readonly {:?}: expected 0 or 1; imported as writable",
                            o.value
                        ),
                    );
                    false
                }
            };
            let mut blocksize = 512;
            if let Some(o) = opt("block-size") {
                match o.value.parse::<u32>() {
                    Ok(b) if crate::model::limits::BLOCK_SIZES.contains(&b) => blocksize = b,
                    _ => r.problem(&o.at, &lobj, format!("block-size {:?}: the model takes 512, 1024, 2048 or 4096; imported as 512", o.value)),
                }
            }
            if let Some(o) = opt("bs-type") {
                if !matches!(o.value.as_str(), "rdwr" | "aio") {
                    r.problem(&o.at, &lobj, format!("bs-type {:?}: the model exports files and block devices the way tgt's rdwr and aio do; other backing stores are not expressible", o.value));
                }
            }
            if let Some(o) = opt("device-type") {
                if o.value != "disk" {
                    r.problem(
                        &o.at,
                        &lobj,
                        format!("device-type {:?}: the model exports disks only", o.value),
                    );
                }
            }
            let serial = match opt("scsi_sn") {
                Some(o) => match serial_problem(&o.value) {
                    None => o.value.clone(),
                    Some(p) => {
                        r.problem(
                            &o.at,
                            &lobj,
                            format!("{p}; tgt's default serial is written instead"),
                        );
                        format!("beaf{tid}{lun}")
                    }
                },
                None if s.direct => {
                    r.problem(&s.at, &lobj, "direct-store: tgt-admin copies the disk's own serial, vendor, product and revision (sg_inq) when it runs; the import cannot read them: set `serial` to the disk's serial");
                    format!("beaf{tid}{lun}")
                }
                None => format!("beaf{tid}{lun}"),
            };
            let backing = if s.path.starts_with("/dev/") {
                Backing::Block {
                    device: PathBuf::from(&s.path),
                }
            } else if s.path.starts_with('/') {
                Backing::File {
                    path: PathBuf::from(&s.path),
                    size: None,
                }
            } else {
                r.problem(&s.at, &lobj, format!("{:?} is not an absolute path; the model needs one; the store is not imported", s.path));
                continue;
            };
            let (f, l) = split_at(&s.at);
            let ext = Extent {
                name: String::new(),
                backing,
                blocksize,
                serial,
                naa: None,
                readonly,
                rpm: Rpm::Unknown,
                comment: String::new(),
                enabled: true,
                shared: false,
                write_back,
                model_alias: false,
                origin: origin(Path::new(&f), l),
            };
            let ename = match store_owner.get(&s.path) {
                Some((en, owner)) => {
                    let first = m.extents.get_mut(en).expect("extent");
                    first.shared = true;
                    let same = Extent {
                        name: en.clone(),
                        shared: true,
                        origin: first.origin.clone(),
                        ..ext.clone()
                    };
                    if *first != same {
                        r.problem(&s.at, &lobj, format!("{:?} is also exported by target {owner:?}; the model has one extent per path, with one serial and one set of options: the settings of {owner:?} are kept", s.path));
                    }
                    en.clone()
                }
                None => {
                    let en = unique(&m.extents, &object_name(&s.path));
                    m.extents.insert(
                        en.clone(),
                        Extent {
                            name: en.clone(),
                            ..ext
                        },
                    );
                    store_owner.insert(s.path.clone(), (en.clone(), name.clone()));
                    en
                }
            };
            luns.insert(lun, ename);
        }

        // Access.
        let addresses: Vec<&Opt> = get("initiator-address").collect();
        let names: Vec<&Opt> = get("initiator-name").collect();
        let mut any_address = addresses.is_empty();
        let mut networks = Vec::new();
        for o in &addresses {
            if o.value == "ALL" {
                any_address = true;
                continue;
            }
            match parse_address(&o.value) {
                Some(n) if !networks.contains(&n) => networks.push(n),
                Some(_) => {}
                None => r.problem(
                    &o.at,
                    &object,
                    format!(
                        "initiator-address {:?} is not an IP address or network; not imported",
                        o.value
                    ),
                ),
            }
        }
        let mut initiators = Vec::new();
        for o in &names {
            match IscsiName::parse(&o.value.to_ascii_lowercase()) {
                Ok(n) if !initiators.contains(&n) => initiators.push(n),
                Ok(_) => {}
                Err(e) => r.problem(
                    &o.at,
                    &object,
                    format!("initiator-name: {}; not imported", e.problem),
                ),
            }
        }
        let initiator_group = if any_address {
            if let Some(o) = names.first() {
                r.note(&o.at, &object, "initiator-name restricts nothing here: without initiator-address tgt-admin binds ALL addresses and tgtd admits a login whose address or name matches; imported as open to any initiator, as tgt runs it");
            }
            None
        } else if !initiators.is_empty() {
            r.problem(&names[0].at, &object, "tgtd admits a login whose address matches initiator-address OR whose name matches initiator-name; the model admits only initiators matching both: imported as the networks only (add an initiator group per case by hand if the names must stay)");
            initiators.clear();
            Some(())
        } else {
            Some(())
        };
        let initiator_group = initiator_group.map(|()| {
            let base = object_name(lname.rsplit(':').next().unwrap_or(&lname));
            let gname = unique(&m.initiator_groups, &base);
            m.initiator_groups.insert(
                gname.clone(),
                InitiatorGroup {
                    name: gname.clone(),
                    initiators,
                    networks,
                    comment: String::new(),
                    origin: origin(&t.file, t.line),
                },
            );
            gname
        });

        // CHAP.
        let incoming: Vec<String> = get("incominguser")
            .filter_map(|o| accounts.add(&mut r, o, &object))
            .collect();
        let outgoing: Vec<String> = get("outgoinguser")
            .filter_map(|o| accounts.add(&mut r, o, &object))
            .collect();
        if incoming.len() > 1 {
            let o = get("incominguser").nth(1).expect("two");
            r.problem(&o.at, &object, format!("{} incoming CHAP users: tgt accepts any of them, the model one per target: only {:?} is imported", incoming.len(), incoming[0]));
        }
        if outgoing.len() > 1 {
            let o = get("outgoinguser").nth(1).expect("two");
            r.note(
                &o.at,
                &object,
                format!(
                    "tgt-admin uses the first outgoinguser only ({:?}), and so does the import",
                    outgoing[0]
                ),
            );
        }
        let mut auth = None;
        let mut auth_method = AuthMethod::None;
        match (incoming.first(), outgoing.first()) {
            (Some(i), o) => {
                let key = (i.clone(), o.cloned());
                auth_method = if o.is_some() {
                    AuthMethod::MutualChap
                } else {
                    AuthMethod::Chap
                };
                auth = Some(auth_name(
                    &mut m,
                    &mut auth_by_pair,
                    &accounts,
                    &mut r,
                    key,
                    &object,
                ));
            }
            (None, Some(_)) => {
                let o = get("outgoinguser").next().expect("one");
                r.problem(&o.at, &object, "outgoinguser without incominguser: the model has mutual CHAP only on top of CHAP; not imported");
            }
            (None, None) => {}
        }
        let (tf, tl) = (t.file.clone(), t.line);
        m.targets.insert(
            iname.clone(),
            Target {
                key: iname.as_str().to_string(),
                name: iname,
                alias: None,
                luns,
                groups: vec![TargetGroup {
                    portal: "default".into(),
                    initiator_group,
                    auth,
                    auth_method,
                    chap_optional: false,
                    origin: origin(&tf, tl),
                }],
                origin: origin(&tf, tl),
            },
        );
    }
    if let Some(i) = discovery.0 {
        let key = (i, discovery.1.clone());
        let method = if key.1.is_some() {
            AuthMethod::MutualChap
        } else {
            AuthMethod::Chap
        };
        let name = auth_name(&mut m, &mut auth_by_pair, &accounts, &mut r, key, "global");
        let p = m.portals.get_mut("default").expect("default portal");
        p.discovery_auth = method;
        p.discovery_auth_group = Some(name);
    } else if discovery.1.is_some() {
        r.problem(&discovery_at, "global", "outgoingdiscoveryuser without incomingdiscoveryuser: the model has mutual CHAP only on top of CHAP; not imported");
    }
    let (problems, notes) = r.sorted();
    Ok(Imported {
        model: m,
        problems,
        notes,
    })
}

fn split_at(at: &str) -> (String, u32) {
    match at.rsplit_once(':') {
        Some((f, l)) => (f.to_string(), l.parse().unwrap_or(0)),
        None => (at.to_string(), 0),
    }
}

/// The auth object for (incoming user, outgoing user), created once.
fn auth_name(
    m: &mut Model,
    by_pair: &mut BTreeMap<(String, Option<String>), String>,
    accounts: &Accounts,
    r: &mut Report,
    key: (String, Option<String>),
    object: &str,
) -> String {
    if let Some(n) = by_pair.get(&key) {
        return n.clone();
    }
    let (user, peer) = key.clone();
    let base = match &peer {
        Some(p) => object_name(&format!("{user}-{p}")),
        None => object_name(&user),
    };
    let name = unique(&m.auths, &base);
    let (secret, at) = accounts.0.get(&user).cloned().expect("account added");
    if let Some(p) = secret_problem(&secret) {
        r.problem(&at, object, format!("CHAP user {user:?}: {p}"));
    }
    let peer = peer.map(|pu| {
        let (ps, pat) = accounts.0.get(&pu).cloned().expect("account added");
        if let Some(p) = secret_problem(&ps) {
            r.problem(&pat, object, format!("outgoing CHAP user {pu:?}: {p}"));
        }
        if ps == secret {
            r.problem(&pat, object, format!("outgoing CHAP user {pu:?} has the same secret as {user:?}; the model requires them to differ (RFC 7143 12.1.3)"));
        }
        PeerCredentials {
            user: pu,
            secret: Secret::new(ps),
        }
    });
    let (f, l) = split_at(&at);
    m.auths.insert(
        name.clone(),
        ChapCredentials {
            name: name.clone(),
            user,
            secret: Secret::new(secret),
            peer,
            origin: origin(Path::new(&f), l),
        },
    );
    by_pair.insert(key, name.clone());
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imp(text: &str) -> Imported {
        import_str(Path::new("/nonexistent/targets.conf"), text).expect("imports")
    }

    fn luns(i: &Imported, t: &str) -> Vec<(u16, String)> {
        let t = &i.model.targets[&IscsiName::parse(t).unwrap()];
        t.luns
            .iter()
            .map(|(l, e)| (*l, i.model.extents[e].backing_path()))
            .collect()
    }

    trait PathOf {
        fn backing_path(&self) -> String;
    }
    impl PathOf for Extent {
        fn backing_path(&self) -> String {
            match &self.backing {
                Backing::File { path, .. } => path.display().to_string(),
                Backing::Block { device } => device.display().to_string(),
                Backing::Ramdisk { .. } => "ram".into(),
            }
        }
    }

    #[test]
    fn luns_are_numbered_as_tgt_admin_does() {
        let i = imp("
<target iqn.2008-09.com.example:t4>
    direct-store /dev/sdb
    backing-store /dev/sdc
    direct-store /dev/sdd
    backing-store /dev/sde
</target>
<target iqn.2008-09.com.example:t5>
    <direct-store /dev/sdd>
        lun 1
        scsi_sn D1
    </direct-store>
    <direct-store /dev/sda>
        lun 2
        scsi_sn D2
    </direct-store>
    <backing-store /dev/sdb1>
        scsi_sn SERIAL
    </backing-store>
    <backing-store /dev/sdd1>
        lun 15
    </backing-store>
</target>
<target iqn.2008-09.com.example:t6>
    backing-store /dev/vg/x
    lun 10
</target>
");
        assert_eq!(
            luns(&i, "iqn.2008-09.com.example:t4"),
            vec![
                (1, "/dev/sdc".into()),
                (2, "/dev/sde".into()),
                (3, "/dev/sdb".into()),
                (4, "/dev/sdd".into())
            ]
        );
        assert_eq!(
            luns(&i, "iqn.2008-09.com.example:t5"),
            vec![
                (1, "/dev/sdd".into()),
                (2, "/dev/sda".into()),
                (3, "/dev/sdb1".into()),
                (15, "/dev/sdd1".into())
            ]
        );
        assert_eq!(
            luns(&i, "iqn.2008-09.com.example:t6"),
            vec![(10, "/dev/vg/x".into())]
        );
        // Default serials: beaf<tid><lun>, tids in name order.
        let serial = |p: &str| {
            i.model
                .extents
                .values()
                .find(|e| e.backing_path() == p)
                .unwrap()
                .serial
                .clone()
        };
        assert_eq!(serial("/dev/sdc"), "beaf11");
        assert_eq!(serial("/dev/sdd1"), "beaf215");
        assert_eq!(serial("/dev/sdb1"), "SERIAL");
        assert_eq!(serial("/dev/vg/x"), "beaf310");
        // direct-store without scsi_sn: the disk's serial is unknown.
        assert!(i.problems.iter().any(|p| p.problem.contains("sg_inq")));
    }

    #[test]
    fn controller_tid_moves_the_tid_count() {
        let i = imp("
<target iqn.2001-01.a:a>
  backing-store /dev/a
  controller_tid 7
</target>
<target iqn.2001-01.a:b>
  backing-store /dev/b
</target>
");
        let ser: Vec<_> = i.model.extents.values().map(|e| e.serial.clone()).collect();
        assert_eq!(ser, vec!["beaf71", "beaf81"]);
        assert!(i.problems.is_empty(), "{:?}", i.problems);
    }

    #[test]
    fn access_and_chap() {
        let i = imp("
incomingdiscoveryuser disc discsecret1234
<target iqn.2001-01.a:open>
  backing-store /dev/a
  initiator-name iqn.1994-05.com.redhat:x
  incominguser alice alicesecret12
  outgoinguser tgt tgtsecret1234
</target>
<target iqn.2001-01.a:net>
  backing-store /dev/b
  initiator-address 192.168.100.1
  initiator-address 10.0.0.0/8
  incominguser alice alicesecret12
  incominguser bob bobsecret1234
</target>
");
        let t = |n: &str| &i.model.targets[&IscsiName::parse(n).unwrap()];
        let open = t("iqn.2001-01.a:open");
        assert_eq!(open.groups[0].initiator_group, None);
        assert_eq!(open.groups[0].auth_method, AuthMethod::MutualChap);
        let a = &i.model.auths[open.groups[0].auth.as_ref().unwrap()];
        assert_eq!(
            (a.user.as_str(), a.peer.as_ref().unwrap().user.as_str()),
            ("alice", "tgt")
        );
        let net = t("iqn.2001-01.a:net");
        let g = &i.model.initiator_groups[net.groups[0].initiator_group.as_ref().unwrap()];
        assert_eq!(g.networks.len(), 2);
        assert!(g.initiators.is_empty());
        assert_eq!(
            i.model.auths[net.groups[0].auth.as_ref().unwrap()].user,
            "alice"
        );
        assert_eq!(i.problems.len(), 1, "{:?}", i.problems);
        assert!(i.problems[0].problem.contains("2 incoming CHAP users"));
        assert!(i
            .notes
            .iter()
            .any(|n| n.problem.contains("restricts nothing")));
        assert_eq!(i.model.portals["default"].discovery_auth, AuthMethod::Chap);
    }

    #[test]
    fn unexpressible_options_are_reported() {
        let i = imp("
<target iqn.2001-01.a:a>
  backing-store /dev/a
  vendor_id ACME
  MaxRecvDataSegmentLength 8192
  write-cache off
</target>
");
        let e = i.model.extents.values().next().unwrap();
        assert!(!e.write_back);
        let all: Vec<_> = i.problems.iter().map(|p| p.problem.as_str()).collect();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all[0].contains("vendor_id") || all[1].contains("vendor_id"));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = import_str(
            Path::new("t.conf"),
            "<target iqn.2001-01.a:a>\n  lun 1\n  <bogus x>\n",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("t.conf:3: error:"), "{e}");
        let e = import_str(Path::new("t.conf"), "<target iqn.2001-01.a:a>\n").unwrap_err();
        assert!(e.to_string().contains("never closed"), "{e}");
        let e = import_str(
            Path::new("/nonexistent/t.conf"),
            "include /nonexistent/x.conf\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("include"), "{e}");
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.conf", "a.conf"));
        assert!(!glob_match("*.conf", "a.conf~"));
        assert!(glob_match("a?c*", "abcdef"));
    }
}
