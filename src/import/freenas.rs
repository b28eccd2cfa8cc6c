//! FreeNAS v1 REST API responses (`/api/v1.0/services/iscsi/...`) → a [`Model`](crate::model::Model).
//!
//! Input: the GET responses for `globalconfiguration`, `portal`,
//! `authorizedinitiator`, `authcredential`, `target`, `targetgroup`, `extent` and
//! `targettoextent`, one file per resource in a directory (named by the resource, with
//! or without `.json`) or one JSON object keyed by resource name.
//!
//! Each resource is translated into the shape of its TrueNAS middleware successor
//! (field prefixes dropped, strings turned into the typed values FreeNAS meant) and
//! converted by [`super::truenas::convert`], so both importers name and check objects
//! the same way. The translations:
//!
//! * `"ALL"` in `iscsi_target_initiator_initiators` / `..._auth_network`: anyone;
//!   other values are lists separated by spaces or line breaks.
//! * `iscsi_target_portal_ips`: `"ip:port"` strings (`"[v6]:port"`).
//! * `iscsi_target_authtype` / `iscsi_target_portal_discoveryauthmethod`: `"None"`,
//!   `"CHAP"`, `"CHAP Mutual"`; `"Auto"` (ctld infers: CHAP when the group has
//!   credentials, mutual when they have a peer user).
//! * `iscsi_target_extent_type`: `"File"` (a file), `"Disk"` / `"ZVOL"` (a device:
//!   `zvol/tank/x` is `/dev/zvol/tank/x`).
//! * `iscsi_target_extent_filesize`: `"0"` (the file's size) or a number with an
//!   optional unit, which FreeNAS wrote into ctl.conf as `size` for ctld's
//!   expand_number(3): `K`, `M`, `G`, `T`, `P`, `E` with or without a trailing `B`
//!   are powers of 1024 (`"10MB"` = 10485760 bytes), which is also how iXsystems'
//!   FreeNAS 9 → 10 migration converted it (`SIZE_LOOKUP`: KB/MB/GB/TB × 1024ⁿ).
//! * `iscsi_lunid` `null`: the lowest LUN id the target does not use yet, in order of
//!   mapping id.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::truenas::{convert_with_lines, read_named, DocNames, Docs, Lines};
use super::{ImportError, Imported, Report};

/// The resources read.
pub const RESOURCES: [&str; 8] = [
    "globalconfiguration",
    "portal",
    "authorizedinitiator",
    "authcredential",
    "target",
    "targetgroup",
    "extent",
    "targettoextent",
];

/// The TrueNAS query each resource becomes (`targetgroup` is folded into targets).
const QUERY_OF: [(&str, &str); 7] = [
    ("iscsi.global.config", "globalconfiguration"),
    ("iscsi.portal.query", "portal"),
    ("iscsi.initiator.query", "authorizedinitiator"),
    ("iscsi.auth.query", "authcredential"),
    ("iscsi.target.query", "target"),
    ("iscsi.extent.query", "extent"),
    ("iscsi.targetextent.query", "targettoextent"),
];

/// Import FreeNAS v1 responses from `path` (a directory or one combined file).
pub fn import(path: &Path) -> Result<Imported, ImportError> {
    // Documents and lines by resource (ids are kept by the translation).
    let (raw, by_res) = read_named(
        path,
        &DocNames {
            kind: "resource",
            names: &RESOURCES,
            save_hint: "save the API response body unchanged",
        },
    )?;
    let mut r = Report::default();
    let docs = translate(&raw, &by_res, &mut r)?;
    let lines: Lines = QUERY_OF
        .iter()
        .filter_map(|(q, res)| Some((q.to_string(), by_res.get(*res)?.clone())))
        .collect();
    let mut imported = convert_with_lines(&docs, &lines)?;
    let (mut problems, mut notes) = r.sorted();
    problems.append(&mut imported.problems);
    notes.append(&mut imported.notes);
    // Findings name the TrueNAS query a resource was translated into; name the file.
    for f in problems.iter_mut().chain(notes.iter_mut()) {
        for (q, res) in QUERY_OF {
            let fake = format!("{q}.json");
            if let Some(rest) = f.at.strip_prefix(&fake) {
                let real = raw
                    .get(res)
                    .map(|(_, p)| p.display().to_string())
                    .unwrap_or_default();
                f.at = format!("{real}{rest}");
            } else if f.at.is_empty() && f.object == q {
                f.at = raw
                    .get(res)
                    .map(|(_, p)| p.display().to_string())
                    .unwrap_or_default();
            }
            if f.object == q {
                f.object = res.to_string();
            }
        }
    }
    imported.problems = problems;
    imported.notes = notes;
    Ok(imported)
}

fn st<'v>(v: &'v Value, k: &str) -> &'v str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// `"ALL"` or a list separated by spaces, commas or line breaks.
fn words(v: &Value, k: &str) -> Vec<String> {
    match v.get(k) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        Some(Value::String(s)) => s
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty() && *w != "ALL")
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

fn method(s: &str) -> Option<&'static str> {
    match s {
        "" | "None" | "NONE" => Some("NONE"),
        "CHAP" => Some("CHAP"),
        "CHAP Mutual" | "CHAP_MUTUAL" => Some("CHAP_MUTUAL"),
        _ => None,
    }
}

/// A FreeNAS size string in bytes (see the module doc); `None` when unreadable.
pub fn filesize(s: &str) -> Option<u64> {
    let s = s.trim();
    let t = s.strip_suffix(['B', 'b']).unwrap_or(s);
    let (num, shift) = match t.chars().last()? {
        c if c.is_ascii_digit() => (t, 0),
        c => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                'P' => 50,
                'E' => 60,
                _ => return None,
            };
            (&t[..t.len() - 1], shift)
        }
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

fn arr<'a>(raw: &'a BTreeMap<String, (Value, PathBuf)>, k: &str, r: &mut Report) -> Vec<&'a Value> {
    match raw.get(k) {
        Some((Value::Array(a), _)) => a.iter().collect(),
        Some((Value::Object(o), _)) if o.contains_key("objects") => {
            // A tastypie list envelope: {"meta": ..., "objects": [...]}.
            o["objects"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default()
        }
        Some((_, f)) => {
            r.problem(
                &f.display().to_string(),
                k,
                "not a JSON array of objects; ignored",
            );
            Vec::new()
        }
        None => Vec::new(),
    }
}

fn translate(
    raw: &BTreeMap<String, (Value, PathBuf)>,
    lines: &Lines,
    r: &mut Report,
) -> Result<Docs, ImportError> {
    let file = |k: &str| {
        raw.get(k)
            .map(|(_, p)| p.display().to_string())
            .unwrap_or_default()
    };
    // `file:line` of the object with `id` in resource `k`, or the file.
    let locate = |k: &str, id: &Value| -> String {
        match id.as_i64().and_then(|id| lines.get(k)?.get(&id)) {
            Some(l) => format!("{}:{l}", file(k)),
            None => file(k),
        }
    };
    let mut docs = Docs::new();
    let fake = |q: &str| PathBuf::from(format!("{q}.json"));

    // Global.
    if let Some((g, _)) = raw.get("globalconfiguration") {
        let g = match g {
            Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
            v => v.clone(),
        };
        let mut o = Map::new();
        o.insert("basename".into(), json!(st(&g, "iscsi_basename")));
        o.insert(
            "isns_servers".into(),
            json!(words(&g, "iscsi_isns_servers")),
        );
        if let Some(t) = g.get("iscsi_pool_avail_threshold").filter(|v| !v.is_null()) {
            o.insert("pool_avail_threshold".into(), t.clone());
        }
        o.insert(
            "alua".into(),
            json!(g
                .get("iscsi_alua")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
        );
        docs.insert(
            "iscsi.global.config".into(),
            (Value::Object(o), fake("iscsi.global.config")),
        );
    }

    // Portals.
    let mut out = Vec::new();
    for p in arr(raw, "portal", r) {
        let id = p.get("id").cloned().unwrap_or(Value::Null);
        let mut listen = Vec::new();
        for ip in words(p, "iscsi_target_portal_ips") {
            let (host, port) = match ip.rsplit_once(':') {
                Some((h, port)) if !h.is_empty() && (h.ends_with(']') || !h.contains(':')) => {
                    (h, port.parse::<u64>().ok())
                }
                _ => (ip.as_str(), Some(3260)),
            };
            listen.push(json!({"ip": host.trim_start_matches('[').trim_end_matches(']'), "port": port.unwrap_or(3260)}));
        }
        let dm = st(p, "iscsi_target_portal_discoveryauthmethod");
        let dm = match (dm, method(dm)) {
            ("Auto", _) => "CHAP",
            (_, Some(m)) => m,
            (o, None) => {
                r.problem(&locate("portal", &id), &format!("portal id {id}"), format!("discovery auth method {o:?} is not None, Auto, CHAP or CHAP Mutual; imported as None"));
                "NONE"
            }
        };
        let dg = p
            .get("iscsi_target_portal_discoveryauthgroup")
            .cloned()
            .unwrap_or(Value::Null);
        let dm = if dg.is_null() { "NONE" } else { dm };
        out.push(json!({
            "id": id,
            "tag": p.get("iscsi_target_portal_tag").cloned().unwrap_or(Value::Null),
            "comment": st(p, "iscsi_target_portal_comment"),
            "listen": listen,
            "discovery_authmethod": dm,
            "discovery_authgroup": dg,
        }));
    }
    docs.insert(
        "iscsi.portal.query".into(),
        (Value::Array(out), fake("iscsi.portal.query")),
    );

    // Initiator groups.
    let mut out = Vec::new();
    for i in arr(raw, "authorizedinitiator", r) {
        out.push(json!({
            "id": i.get("id").cloned().unwrap_or(Value::Null),
            "initiators": words(i, "iscsi_target_initiator_initiators"),
            "auth_network": words(i, "iscsi_target_initiator_auth_network"),
            "comment": st(i, "iscsi_target_initiator_comment"),
        }));
    }
    docs.insert(
        "iscsi.initiator.query".into(),
        (Value::Array(out), fake("iscsi.initiator.query")),
    );

    // Credentials; which tags have a peer (for "Auto").
    let mut out = Vec::new();
    let mut tag_peer: BTreeMap<i64, bool> = BTreeMap::new();
    for a in arr(raw, "authcredential", r) {
        let tag = a
            .get("iscsi_target_auth_tag")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let peer = st(a, "iscsi_target_auth_peeruser");
        tag_peer.entry(tag).or_insert(!peer.is_empty());
        out.push(json!({
            "id": a.get("id").cloned().unwrap_or(Value::Null),
            "tag": tag,
            "user": st(a, "iscsi_target_auth_user"),
            "secret": st(a, "iscsi_target_auth_secret"),
            "peeruser": peer,
            "peersecret": st(a, "iscsi_target_auth_peersecret"),
        }));
    }
    docs.insert(
        "iscsi.auth.query".into(),
        (Value::Array(out), fake("iscsi.auth.query")),
    );

    // Targets with their groups.
    let groups = arr(raw, "targetgroup", r);
    let mut out = Vec::new();
    for t in arr(raw, "target", r) {
        let id = t.get("id").and_then(Value::as_i64).unwrap_or(0);
        let object = format!("target id {id}");
        let mut tg = Vec::new();
        for g in groups
            .iter()
            .filter(|g| g.get("iscsi_target").and_then(Value::as_i64) == Some(id))
        {
            let auth = g.get("iscsi_target_authgroup").and_then(Value::as_i64);
            let at = st(g, "iscsi_target_authtype");
            let m = match (at, method(at), auth) {
                ("Auto", _, Some(tag)) => {
                    if tag_peer.get(&tag).copied().unwrap_or(false) {
                        "CHAP_MUTUAL"
                    } else {
                        "CHAP"
                    }
                }
                ("Auto", _, None) => "NONE",
                (_, Some(m), _) => m,
                (o, None, _) => {
                    r.problem(&locate("targetgroup", g.get("id").unwrap_or(&Value::Null)), &object, format!("auth type {o:?} is not None, Auto, CHAP or CHAP Mutual; imported as None"));
                    "NONE"
                }
            };
            match st(g, "iscsi_target_initialdigest") {
                "" | "Auto" => {}
                d => r.problem(&locate("targetgroup", g.get("id").unwrap_or(&Value::Null)), &object, format!("initial digest {d:?}: the model negotiates digests, it does not force them")),
            }
            tg.push(json!({
                "portal": g.get("iscsi_target_portalgroup").cloned().unwrap_or(Value::Null),
                "initiator": g.get("iscsi_target_initiatorgroup").cloned().unwrap_or(Value::Null),
                "authmethod": m,
                "auth": auth,
            }));
        }
        let mode = match st(t, "iscsi_target_mode") {
            "" | "iscsi" => "ISCSI",
            "fc" => "FC",
            _ => "BOTH",
        };
        out.push(json!({
            "id": id,
            "name": st(t, "iscsi_target_name"),
            "alias": t.get("iscsi_target_alias").cloned().unwrap_or(Value::Null),
            "mode": mode,
            "groups": tg,
            "auth_networks": [],
        }));
    }
    docs.insert(
        "iscsi.target.query".into(),
        (Value::Array(out), fake("iscsi.target.query")),
    );

    // Extents.
    let mut out = Vec::new();
    for e in arr(raw, "extent", r) {
        let id = e.get("id").cloned().unwrap_or(Value::Null);
        let object = format!("extent id {id}");
        let path = st(e, "iscsi_target_extent_path");
        let (ty, disk, path) = match st(e, "iscsi_target_extent_type") {
            "File" => ("FILE", Value::Null, json!(path)),
            "Disk" | "ZVOL" => {
                let d = path.strip_prefix("/dev/").unwrap_or(path);
                let d = if d.is_empty() {
                    st(e, "iscsi_target_extent_disk")
                } else {
                    d
                };
                ("DISK", json!(d), json!(path))
            }
            o => (o, Value::Null, json!(path)),
        };
        let size = match e.get("iscsi_target_extent_filesize") {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            Some(Value::String(s)) => match filesize(s) {
                Some(n) => n,
                None => {
                    r.problem(&locate("extent", &id), &object, format!("filesize {s:?} is not a number with an optional K/M/G/T/P/E unit; imported without a size"));
                    0
                }
            },
            _ => 0,
        };
        let rpm = match st(e, "iscsi_target_extent_rpm") {
            "Unknown" | "" => "UNKNOWN".to_string(),
            o => o.to_ascii_uppercase(),
        };
        let mut o = json!({
            "id": id,
            "name": st(e, "iscsi_target_extent_name"),
            "type": ty,
            "disk": disk,
            "path": path,
            "filesize": size,
            "blocksize": e.get("iscsi_target_extent_blocksize").cloned().unwrap_or(json!(512)),
            "serial": st(e, "iscsi_target_extent_serial"),
            "naa": st(e, "iscsi_target_extent_naa"),
            "rpm": rpm,
            "ro": e.get("iscsi_target_extent_ro").cloned().unwrap_or(json!(false)),
            "comment": st(e, "iscsi_target_extent_comment"),
            "pblocksize": e.get("iscsi_target_extent_pblocksize").cloned().unwrap_or(json!(false)),
            "insecure_tpc": e.get("iscsi_target_extent_insecure_tpc").cloned().unwrap_or(json!(true)),
            "xen": e.get("iscsi_target_extent_xen").cloned().unwrap_or(json!(false)),
        });
        if let Some(t) = e
            .get("iscsi_target_extent_avail_threshold")
            .filter(|v| !v.is_null())
        {
            o["avail_threshold"] = t.clone();
        }
        if e.get("iscsi_target_extent_legacy").and_then(Value::as_bool) == Some(true) {
            r.problem(&locate("extent", &id), &object, "legacy (istgt-compatible identification): the model has no legacy mode; serial and naa are kept");
        }
        out.push(o);
    }
    docs.insert(
        "iscsi.extent.query".into(),
        (Value::Array(out), fake("iscsi.extent.query")),
    );

    // LUN maps; a null lunid takes the lowest free id of its target.
    let mut maps: Vec<&Value> = arr(raw, "targettoextent", r);
    maps.sort_by_key(|m| m.get("id").and_then(Value::as_i64));
    let mut used: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for m in &maps {
        if let (Some(t), Some(l)) = (
            m.get("iscsi_target").and_then(Value::as_i64),
            m.get("iscsi_lunid").and_then(Value::as_i64),
        ) {
            used.entry(t).or_default().insert(l);
        }
    }
    let mut out = Vec::new();
    for m in maps {
        let t = m.get("iscsi_target").and_then(Value::as_i64).unwrap_or(0);
        let lun = match m
            .get("iscsi_lunid")
            .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
        {
            Some(l) => l,
            None => {
                let set = used.entry(t).or_default();
                let l = (0..).find(|l| !set.contains(l)).expect("a free LUN");
                set.insert(l);
                r.note(
                    &locate("targettoextent", m.get("id").unwrap_or(&Value::Null)),
                    &format!(
                        "targettoextent id {}",
                        m.get("id").cloned().unwrap_or(Value::Null)
                    ),
                    format!("no lunid: the lowest free id of the target, {l}, is used"),
                );
                l
            }
        };
        out.push(json!({
            "id": m.get("id").cloned().unwrap_or(Value::Null),
            "target": t,
            "extent": m.get("iscsi_extent").cloned().unwrap_or(Value::Null),
            "lunid": lun,
        }));
    }
    docs.insert(
        "iscsi.targetextent.query".into(),
        (Value::Array(out), fake("iscsi.targetextent.query")),
    );
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary_as_ctld_read_them() {
        assert_eq!(filesize("10MB"), Some(10 << 20));
        assert_eq!(filesize("10M"), Some(10 << 20));
        assert_eq!(filesize("1GB"), Some(1 << 30));
        assert_eq!(filesize("0"), Some(0));
        assert_eq!(filesize("512"), Some(512));
        assert_eq!(filesize("1.5GB"), None);
        assert_eq!(filesize("10 XB"), None);
    }

    #[test]
    fn lists_and_all() {
        let v = json!({"a": "ALL", "b": "iqn.1998-01.com.vmware:a iqn.1998-01.com.vmware:b\niqn.1998-01.com.vmware:c"});
        assert!(words(&v, "a").is_empty());
        assert_eq!(words(&v, "b").len(), 3);
    }
}
