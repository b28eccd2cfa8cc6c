//! Writing a model back out as TOML (that `model::load` reads again) or as JSON:
//! what `isctl export` prints and the importers write.
//!
//! Owns: the rendering of every model object, and how secrets appear in it
//! ([`SecretsMode`]: referenced through an environment variable, a file, or in
//! clear text only when asked).
//! Does not: read a backend or write files.

use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{AuthMethod, Backing, Model, Rpm};

/// How secrets appear in the exported model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretsMode {
    /// `secret_env = "ISCTL_SECRET_<NAME>"`.
    Env,
    /// `secret_file = "<dir>/<name>.secret"` (files written by the caller).
    Dir(PathBuf),
    /// `secret = "..."` in clear text.
    Show,
}

/// The environment variable an exported auth's secret is read from.
pub fn secret_env_name(auth: &str, peer: bool) -> String {
    let mut s: String = format!("ISCTL_SECRET_{auth}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if peer {
        s.push_str("_PEER");
    }
    s
}

pub fn secret_file_name(dir: &Path, auth: &str, peer: bool) -> PathBuf {
    dir.join(format!(
        "{auth}.{}",
        if peer { "peer_secret" } else { "secret" }
    ))
}

/// A TOML basic string (JSON string escapes are valid TOML escapes).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A TOML key: bare when it can be, quoted otherwise (`.` and `:` must be quoted).
fn key(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        s.to_string()
    } else {
        q(s)
    }
}

fn method(m: AuthMethod) -> &'static str {
    m.as_str()
}

/// Render `m` as TOML. `header` lines become leading comments.
pub fn render_toml(m: &Model, secrets: &SecretsMode, header: &[String]) -> Zeroizing<String> {
    let mut o = Zeroizing::new(String::new());
    for h in header {
        let _ = writeln!(o, "# {h}");
    }
    let g = &m.global;
    if g.basename.is_some() || !g.isns_servers.is_empty() || g.alua {
        let _ = writeln!(o, "\n[global]");
        if let Some(b) = &g.basename {
            let _ = writeln!(o, "basename = {}", q(b));
        }
        if !g.isns_servers.is_empty() {
            let list: Vec<String> = g.isns_servers.iter().map(|s| q(s)).collect();
            let _ = writeln!(o, "isns_servers = [{}]", list.join(", "));
        }
        if g.alua {
            let _ = writeln!(o, "alua = true");
        }
    }
    for (name, p) in &m.portals {
        let _ = writeln!(o, "\n[portal.{}]", key(name));
        let _ = writeln!(o, "tag = {}", p.tag);
        let listen: Vec<String> = p.listen.iter().map(|a| q(&a.to_string())).collect();
        let _ = writeln!(o, "listen = [{}]", listen.join(", "));
        let _ = writeln!(o, "discovery_auth = {}", q(method(p.discovery_auth)));
        if let Some(g) = &p.discovery_auth_group {
            let _ = writeln!(o, "discovery_auth_group = {}", q(g));
        }
        if !p.comment.is_empty() {
            let _ = writeln!(o, "comment = {}", q(&p.comment));
        }
    }
    for (name, g) in &m.initiator_groups {
        let _ = writeln!(o, "\n[initiator_group.{}]", key(name));
        let list: Vec<String> = g.initiators.iter().map(|i| q(i.as_str())).collect();
        let _ = writeln!(o, "initiators = [{}]", list.join(", "));
        if !g.networks.is_empty() {
            let nets: Vec<String> = g.networks.iter().map(|n| q(&n.to_string())).collect();
            let _ = writeln!(o, "networks = [{}]", nets.join(", "));
        }
        if !g.comment.is_empty() {
            let _ = writeln!(o, "comment = {}", q(&g.comment));
        }
    }
    for (name, a) in &m.auths {
        let _ = writeln!(o, "\n[auth.{}]", key(name));
        let _ = writeln!(o, "user = {}", q(&a.user));
        let side = |o: &mut String, prefix: &str, peer: bool, value: &str| match secrets {
            SecretsMode::Env => {
                let _ = writeln!(
                    o,
                    "{prefix}secret_env = {}  # set this variable to the secret: isctl never prints secrets unless asked (see --secrets-dir)",
                    q(&secret_env_name(name, peer))
                );
            }
            SecretsMode::Dir(dir) => {
                let f = secret_file_name(dir, name, peer);
                let _ = writeln!(o, "{prefix}secret_file = {}", q(&f.display().to_string()));
            }
            SecretsMode::Show => {
                let _ = writeln!(o, "{prefix}secret = {}", q(value));
            }
        };
        side(&mut o, "", false, a.secret.expose());
        if let Some(p) = &a.peer {
            let _ = writeln!(o, "peer_user = {}", q(&p.user));
            side(&mut o, "peer_", true, p.secret.expose());
        }
    }
    for (name, e) in &m.extents {
        let _ = writeln!(o, "\n[extent.{}]", key(name));
        let _ = writeln!(o, "type = {}", q(e.backing.type_name()));
        match &e.backing {
            Backing::File { path, size } => {
                let _ = writeln!(o, "path = {}", q(&path.display().to_string()));
                if let Some(s) = size {
                    let _ = writeln!(o, "size = {s}");
                }
            }
            Backing::Block { device } => {
                let _ = writeln!(o, "device = {}", q(&device.display().to_string()));
            }
            Backing::Ramdisk { size } => {
                let _ = writeln!(o, "size = {size}");
            }
        }
        let _ = writeln!(o, "blocksize = {}", e.blocksize);
        let _ = writeln!(o, "serial = {}", q(&e.serial));
        if let Some(n) = &e.naa {
            let _ = writeln!(o, "naa = {}", q(n));
        }
        if e.readonly {
            let _ = writeln!(o, "readonly = true");
        }
        match e.rpm {
            Rpm::Ssd => {
                let _ = writeln!(o, "rpm = \"ssd\"");
            }
            Rpm::Rpm(n) => {
                let _ = writeln!(o, "rpm = {n}");
            }
            Rpm::Unknown => {}
        }
        if e.shared {
            let _ = writeln!(o, "shared = true");
        }
        if !e.enabled {
            let _ = writeln!(o, "enabled = false");
        }
        if !e.comment.is_empty() {
            let _ = writeln!(o, "comment = {}", q(&e.comment));
        }
        if e.write_back {
            let _ = writeln!(o, "write_back = true");
        }
        if e.model_alias {
            let _ = writeln!(o, "model_alias = true");
        }
    }
    for t in m.targets.values() {
        let k = key(&t.key);
        let _ = writeln!(o, "\n[target.{k}]");
        if let Some(a) = &t.alias {
            let _ = writeln!(o, "alias = {}", q(a));
        }
        let luns: Vec<String> = t
            .luns
            .iter()
            .map(|(l, e)| format!("{l} = {}", q(e)))
            .collect();
        let _ = writeln!(o, "luns = {{ {} }}", luns.join(", "));
        for g in &t.groups {
            let _ = writeln!(o, "\n[[target.{k}.group]]");
            let _ = writeln!(o, "portal = {}", q(&g.portal));
            if let Some(ig) = &g.initiator_group {
                let _ = writeln!(o, "initiator_group = {}", q(ig));
            }
            if let Some(a) = &g.auth {
                let _ = writeln!(o, "auth = {}", q(a));
                let _ = writeln!(o, "auth_method = {}", q(method(g.auth_method)));
                if g.chap_optional {
                    let _ = writeln!(o, "chap = \"optional\"");
                }
            }
        }
    }
    o
}

/// The same document as JSON (secrets per `secrets`).
pub fn render_json(m: &Model, secrets: &SecretsMode) -> Value {
    let mut portals = Map::new();
    for (n, p) in &m.portals {
        let mut v = json!({
            "tag": p.tag,
            "listen": p.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "discovery_auth": method(p.discovery_auth),
        });
        if let Some(g) = &p.discovery_auth_group {
            v["discovery_auth_group"] = json!(g);
        }
        portals.insert(n.clone(), v);
    }
    let mut groups = Map::new();
    for (n, g) in &m.initiator_groups {
        groups.insert(
            n.clone(),
            if g.networks.is_empty() {
                json!({ "initiators": g.initiators.iter().map(|i| i.as_str()).collect::<Vec<_>>() })
            } else {
                json!({
                    "initiators": g.initiators.iter().map(|i| i.as_str()).collect::<Vec<_>>(),
                    "networks": g.networks.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                })
            },
        );
    }
    let mut auths = Map::new();
    for (n, a) in &m.auths {
        let mut v = Map::new();
        v.insert("user".into(), json!(a.user));
        let side = |v: &mut Map<String, Value>, prefix: &str, peer: bool, value: &str| match secrets
        {
            SecretsMode::Env => {
                v.insert(
                    format!("{prefix}secret_env"),
                    json!(secret_env_name(n, peer)),
                );
            }
            SecretsMode::Dir(dir) => {
                v.insert(
                    format!("{prefix}secret_file"),
                    json!(secret_file_name(dir, n, peer).display().to_string()),
                );
            }
            SecretsMode::Show => {
                v.insert(format!("{prefix}secret"), json!(value));
            }
        };
        side(&mut v, "", false, a.secret.expose());
        if let Some(p) = &a.peer {
            v.insert("peer_user".into(), json!(p.user));
            side(&mut v, "peer_", true, p.secret.expose());
        }
        auths.insert(n.clone(), Value::Object(v));
    }
    let mut extents = Map::new();
    for (n, e) in &m.extents {
        let mut v =
            json!({ "type": e.backing.type_name(), "blocksize": e.blocksize, "serial": e.serial });
        match &e.backing {
            Backing::File { path, size } => {
                v["path"] = json!(path.display().to_string());
                if let Some(s) = size {
                    v["size"] = json!(s);
                }
            }
            Backing::Block { device } => v["device"] = json!(device.display().to_string()),
            Backing::Ramdisk { size } => v["size"] = json!(size),
        }
        if let Some(naa) = &e.naa {
            v["naa"] = json!(naa);
        }
        if e.readonly {
            v["readonly"] = json!(true);
        }
        if e.rpm == Rpm::Ssd {
            v["rpm"] = json!("ssd");
        }
        if e.shared {
            v["shared"] = json!(true);
        }
        if e.write_back {
            v["write_back"] = json!(true);
        }
        if e.model_alias {
            v["model_alias"] = json!(true);
        }
        extents.insert(n.clone(), v);
    }
    let mut targets = Map::new();
    for t in m.targets.values() {
        let mut v = json!({
            "luns": t.luns.iter().map(|(l, e)| (l.to_string(), json!(e))).collect::<Map<_, _>>(),
            "group": t.groups.iter().map(|g| {
                let mut gv = json!({ "portal": g.portal });
                if let Some(ig) = &g.initiator_group { gv["initiator_group"] = json!(ig); }
                if let Some(a) = &g.auth {
                    gv["auth"] = json!(a);
                    gv["auth_method"] = json!(method(g.auth_method));
                    if g.chap_optional {
                        gv["chap"] = json!("optional");
                    }
                }
                gv
            }).collect::<Vec<_>>(),
        });
        if let Some(a) = &t.alias {
            v["alias"] = json!(a);
        }
        targets.insert(t.key.clone(), v);
    }
    json!({
        "portal": portals,
        "initiator_group": groups,
        "auth": auths,
        "extent": extents,
        "target": targets,
    })
}
