//! `isctl export [-o toml|json] [--secrets-dir DIR | --show-secrets]`: the live
//! configuration as a model, to adopt an existing host.
//!
//! Lossless or loud: everything the model cannot express is listed on stderr and
//! the exit code is 4 (REFUSED). As a self-check the exported text is loaded back
//! (with the secrets filled in, in memory only), lowered and planned against the
//! live state: any difference is reported as a problem too.
//!
//! Secrets are never printed unless `--show-secrets`: by default each is referenced
//! as `secret_env = "ISCTL_SECRET_<NAME>"`; `--secrets-dir DIR` writes them to files
//! (mode 0600) and references them with `secret_file`.

use std::fmt::Write as _;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use crate::backend::{Backend, ObserveScope};
use crate::cli::args::{ExportArgs, GlobalArgs, OutputFormat};
use crate::cli::exit;
use crate::model::{self, AuthMethod, Backing, Model, Rpm};
use crate::plan::{self, DiffOptions};
use crate::state::export::{to_model, ExportProblem};
use crate::state::{self, Observed};

use super::plan::open_backend;

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

fn secret_file_name(dir: &Path, auth: &str, peer: bool) -> PathBuf {
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
    for (name, p) in &m.portals {
        let _ = writeln!(o, "\n[portal.{}]", key(name));
        let _ = writeln!(o, "tag = {}", p.tag);
        let listen: Vec<String> = p.listen.iter().map(|a| q(&a.to_string())).collect();
        let _ = writeln!(o, "listen = [{}]", listen.join(", "));
        let _ = writeln!(o, "discovery_auth = {}", q(method(p.discovery_auth)));
        if let Some(g) = &p.discovery_auth_group {
            let _ = writeln!(o, "discovery_auth_group = {}", q(g));
        }
    }
    for (name, g) in &m.initiator_groups {
        let _ = writeln!(o, "\n[initiator_group.{}]", key(name));
        let list: Vec<String> = g.initiators.iter().map(|i| q(i.as_str())).collect();
        let _ = writeln!(o, "initiators = [{}]", list.join(", "));
    }
    for (name, a) in &m.auths {
        let _ = writeln!(o, "\n[auth.{}]", key(name));
        let _ = writeln!(o, "user = {}", q(&a.user));
        let side = |o: &mut String, prefix: &str, peer: bool, value: &str| match secrets {
            SecretsMode::Env => {
                let _ = writeln!(
                    o,
                    "{prefix}secret_env = {}  # set this variable to the secret: isctl export never prints secrets (see --secrets-dir, --show-secrets)",
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
        if e.rpm == Rpm::Ssd {
            let _ = writeln!(o, "rpm = \"ssd\"");
        }
        if e.shared {
            let _ = writeln!(o, "shared = true");
        }
        if e.write_back {
            let _ = writeln!(o, "write_back = true");
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
            json!({ "initiators": g.initiators.iter().map(|i| i.as_str()).collect::<Vec<_>>() }),
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

/// Load the exported model back (secrets inline, in memory), lower it and plan it
/// against what was observed: anything but "no changes" is a problem.
pub fn self_check(m: &Model, observed: &Observed, backend: &dyn Backend) -> Vec<ExportProblem> {
    let mut problems = Vec::new();
    let text = render_toml(m, &SecretsMode::Show, &[]);
    let loaded = match model::load_str("exported.toml", &text) {
        Ok(l) => l.model,
        Err(e) => {
            for d in e.errors() {
                problems.push(ExportProblem {
                    object: d.object_display(),
                    problem: format!("the exported model does not load: {}", d.problem),
                });
            }
            return problems;
        }
    };
    let desired = match state::lower(&loaded) {
        Ok(d) => d,
        Err(e) => {
            for x in e.0 {
                problems.push(ExportProblem {
                    object: x.object,
                    problem: format!("the exported model cannot be applied to LIO: {}", x.problem),
                });
            }
            return problems;
        }
    };
    let host = backend.host_facts(&desired);
    let p = plan::diff(
        &desired,
        observed,
        &host,
        &Default::default(),
        &DiffOptions::default(),
    );
    for c in &p.changes {
        problems.push(ExportProblem {
            object: c.address.clone(),
            problem: format!(
                "self-check: planning the exported model would {:?} it{}",
                c.action,
                c.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )
            .to_lowercase(),
        });
    }
    for r in &p.refusals {
        problems.push(ExportProblem {
            object: r.object.as_ref().map(|o| o.to_string()).unwrap_or_default(),
            problem: format!("self-check: {}", r.problem),
        });
    }
    problems
}

fn write_secret_files(m: &Model, dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    for (name, a) in &m.auths {
        let mut items = vec![(false, a.secret.expose())];
        if let Some(p) = &a.peer {
            items.push((true, p.secret.expose()));
        }
        for (peer, value) in items {
            let path = secret_file_name(dir, name, peer);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            f.write_all(value.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

pub fn run(g: &GlobalArgs, args: &ExportArgs) -> anyhow::Result<u8> {
    let open = open_backend(g)?;
    let backend = open.backend.as_ref();
    let observed = backend.observe(ObserveScope::Full)?;
    let exported = to_model(&observed.state);
    let mut problems = exported.problems.clone();
    if problems.is_empty() {
        problems.extend(self_check(&exported.model, &observed, backend));
    }
    let secrets = if args.show_secrets {
        SecretsMode::Show
    } else if let Some(dir) = &args.secrets_dir {
        let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        write_secret_files(&exported.model, &abs)?;
        SecretsMode::Dir(abs)
    } else {
        SecretsMode::Env
    };
    let mut out = std::io::stdout().lock();
    if g.output == OutputFormat::Json {
        let doc = json!({
            "model": render_json(&exported.model, &secrets),
            "lossless": problems.is_empty(),
            "problems": problems,
            "source": { "backend": backend.name(), "location": backend.location() },
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        let mut header = vec![
            format!(
                "Exported by isctl {} from the {} target at {}.",
                env!("CARGO_PKG_VERSION"),
                backend.name(),
                backend.location()
            ),
            "`isctl plan` on this file reports no changes on this host.".to_string(),
        ];
        if !problems.is_empty() {
            header = vec![
                format!("INCOMPLETE EXPORT from {}: {} live setting(s) cannot be expressed in the model (listed on stderr and below).", backend.location(), problems.len()),
                "Applying this file would change or leave out what is listed:".to_string(),
            ];
            header.extend(
                problems
                    .iter()
                    .map(|p| format!("  - {}: {}", p.object, p.problem)),
            );
        }
        let text = render_toml(&exported.model, &secrets, &header);
        out.write_all(text.as_bytes())?;
    }
    drop(out);
    if problems.is_empty() {
        return Ok(exit::OK);
    }
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "error: the export is not lossless: {} live setting(s) cannot be expressed in the model:",
        problems.len()
    )?;
    for p in &problems {
        writeln!(err, "  {}: {}", p.object, p.problem)?;
    }
    Ok(exit::REFUSED)
}
