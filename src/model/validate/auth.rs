//! `[auth.*]`: CHAP credentials, with secrets read from the model, a file or the
//! environment. No message here ever contains a secret: they name the key, the file
//! or the variable, and the secret's length at most.

use std::path::{Path, PathBuf};

use crate::model::diag::Diags;
use crate::model::schema::{Fields, Val};
use crate::model::secret::Secret;
use crate::model::types::{ChapCredentials, Origin, PeerCredentials};

use super::{check_text, Entry};

/// CHAP secret length accepted, in characters (what Microsoft's initiator accepts;
/// LIO and open-iscsi accept these lengths too).
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 12..=16;
/// Longest CHAP user name, in bytes (LIO's auth attribute limit).
pub const MAX_USER: usize = 255;

/// The three ways of giving a secret, for the initiator's (`secret…`) and the
/// target's (`peer_secret…`) side.
const KEYS: [[&str; 3]; 2] = [
    ["secret", "secret_file", "secret_env"],
    ["peer_secret", "peer_secret_file", "peer_secret_env"],
];

/// A secret and where it came from.
struct Found {
    secret: Secret,
    at: Origin,
    key_at: Origin,
    /// "`secret`", "the secret in file \"…\"", "environment variable X": for messages.
    source: String,
}

pub(crate) fn auth(e: &Entry<'_, '_>, d: &mut Diags) -> Option<ChapCredentials> {
    let mut f = Fields::new(
        e.src,
        e.table,
        format!("auth.{}", e.name),
        e.at.clone(),
        "an auth section",
    );
    let errors_before = d.error_count();
    let user = f.string(d, "user");
    let secret = read_secret(&mut f, d, 0);
    let peer_user = f.string(d, "peer_user");
    let peer_secret = read_secret(&mut f, d, 1);

    match &user {
        None if !f.has("user") => f.missing(
            d,
            "user",
            "add user = \"<the CHAP name the initiator sends>\"",
        ),
        Some(u) => check_user(d, &f, "user", u),
        None => {}
    }
    if secret.is_none() && !KEYS[0].iter().any(|k| f.has(k)) {
        f.missing(
            d,
            "secret",
            "add one of secret = \"…\" (12 to 16 characters), secret_file = \"/path\" or secret_env = \"VARIABLE\"",
        );
    }
    match (&peer_user, &peer_secret) {
        (Some(u), Some(_)) => check_user(d, &f, "peer_user", u),
        (Some(u), None) if !KEYS[1].iter().any(|k| f.has(k)) => d.error(
            &u.key_at,
            &f.object,
            "`peer_user` is set but no peer secret: mutual CHAP needs both",
            "add one of peer_secret, peer_secret_file or peer_secret_env, or remove peer_user",
        ),
        (None, Some(p)) if !f.has("peer_user") => d.error(
            &p.key_at,
            &f.object,
            "a peer secret is set but no `peer_user`: mutual CHAP needs both",
            "add peer_user = \"<the CHAP name the target answers with>\", or remove the peer secret",
        ),
        _ => {}
    }
    if let (Some(s), Some(p)) = (&secret, &peer_secret) {
        if s.secret == p.secret {
            d.error(
                &p.at,
                &f.object,
                format!("the peer secret ({}) is the same as the secret ({})", p.source, s.source),
                "use a different secret for each direction of mutual CHAP (RFC 7143 §12.1.3 requires it)",
            );
        }
    }
    f.finish(d);
    if d.error_count() != errors_before {
        return None;
    }
    Some(ChapCredentials {
        name: e.name.to_owned(),
        user: user?.v,
        secret: secret?.secret,
        peer: match (peer_user, peer_secret) {
            (Some(u), Some(s)) => Some(PeerCredentials {
                user: u.v,
                secret: s.secret,
            }),
            _ => None,
        },
        origin: e.at.clone(),
    })
}

fn check_user(d: &mut Diags, f: &Fields<'_, '_>, key: &str, u: &Val<String>) {
    if u.v.is_empty() {
        d.error(
            &u.at,
            &f.object,
            format!("`{key}` is empty"),
            format!("give `{key}` a name"),
        );
    } else {
        check_text(d, f, key, u, MAX_USER);
    }
}

/// Exactly one of `secret`, `secret_file`, `secret_env` (side 0) or their `peer_`
/// forms (side 1). Reports every problem; `None` when absent or invalid.
fn read_secret(f: &mut Fields<'_, '_>, d: &mut Diags, side: usize) -> Option<Found> {
    let [inline_key, file_key, env_key] = KEYS[side];
    let inline = f.string(d, inline_key);
    let file = f.string(d, file_key);
    let env = f.string(d, env_key);
    let given: Vec<&Val<String>> = [&inline, &file, &env].into_iter().flatten().collect();
    if given.len() > 1 {
        let names: Vec<&str> = KEYS[side]
            .iter()
            .zip([&inline, &file, &env])
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect();
        d.error(
            &given[1].key_at,
            &f.object,
            format!(
                "`{}` are {} set; give exactly one",
                names.join("` and `"),
                if names.len() == 2 { "both" } else { "all" }
            ),
            format!("keep one of {inline_key}, {file_key} or {env_key}"),
        );
        return None;
    }
    let found = if let Some(v) = inline {
        Found {
            secret: Secret::new(v.v.clone()),
            source: format!("`{inline_key}`"),
            at: v.at,
            key_at: v.key_at,
        }
    } else if let Some(v) = file {
        let path = resolve_relative(&f.src.dir(), Path::new(&v.v));
        let secret = read_secret_file(d, f, file_key, &v, &path)?;
        Found {
            secret,
            source: format!("the secret in file {:?}", path.display().to_string()),
            at: v.at,
            key_at: v.key_at,
        }
    } else if let Some(v) = env {
        let secret = read_secret_env(d, f, env_key, &v)?;
        Found {
            secret,
            source: format!("environment variable {}", v.v),
            at: v.at,
            key_at: v.key_at,
        }
    } else {
        return None;
    };
    check_secret(d, f, &found)?;
    Some(found)
}

/// Relative `secret_file` paths are relative to the model file that names them, so a
/// model directory can carry its secrets beside it wherever it is checked out.
fn resolve_relative(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn read_secret_file(
    d: &mut Diags,
    f: &Fields<'_, '_>,
    key: &str,
    v: &Val<String>,
    path: &Path,
) -> Option<Secret> {
    if v.v.is_empty() {
        d.error(
            &v.at,
            &f.object,
            format!("`{key}` is empty"),
            "give the path of the file that holds the secret",
        );
        return None;
    }
    let shown = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            d.error(
                &v.at,
                &f.object,
                format!("cannot read {key} {shown:?}: {e}"),
                "create the file (mode 0600) with the secret on one line, or correct the path",
            );
            return None;
        }
    };
    let Ok(mut text) = String::from_utf8(bytes) else {
        d.error(
            &v.at,
            &f.object,
            format!("{key} {shown:?} is not UTF-8 text"),
            "write the secret as text on one line",
        );
        return None;
    };
    // Exactly one trailing line break (what `echo` and editors add) is not part of
    // the secret; anything else is.
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    warn_if_readable(d, f, key, v, path, &shown);
    Some(Secret::new(text))
}

#[cfg(unix)]
fn warn_if_readable(
    d: &mut Diags,
    f: &Fields<'_, '_>,
    key: &str,
    v: &Val<String>,
    path: &Path,
    shown: &str,
) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o044 != 0 {
            let who = match (mode & 0o040 != 0, mode & 0o004 != 0) {
                (true, true) => "its group and by everyone",
                (true, false) => "its group",
                _ => "everyone",
            };
            d.warn(
                &v.at,
                &f.object,
                format!("{key} {shown:?} is readable by {who} (mode {mode:04o})"),
                format!("chmod 600 {shown}"),
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable(
    _: &mut Diags,
    _: &Fields<'_, '_>,
    _: &str,
    _: &Val<String>,
    _: &Path,
    _: &str,
) {
}

fn read_secret_env(
    d: &mut Diags,
    f: &Fields<'_, '_>,
    key: &str,
    v: &Val<String>,
) -> Option<Secret> {
    let name = &v.v;
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        d.error(
            &v.at,
            &f.object,
            format!("`{key}` = {name:?} is not an environment variable name"),
            "give the name of the variable, e.g. secret_env = \"ISCTL_CHAP1_SECRET\"",
        );
        return None;
    }
    match std::env::var(name) {
        Ok(s) if s.is_empty() => {
            d.error(
                &v.at,
                &f.object,
                format!("environment variable {name} is empty"),
                format!("set {name} to the secret before running isctl"),
            );
            None
        }
        Ok(s) => Some(Secret::new(s)),
        Err(std::env::VarError::NotPresent) => {
            d.error(
                &v.at,
                &f.object,
                format!("environment variable {name} is not set"),
                format!(
                    "export {name}=<secret> before running isctl (or use {} / a secret file)",
                    key.trim_end_matches("_env")
                ),
            );
            None
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            d.error(
                &v.at,
                &f.object,
                format!("environment variable {name} is not valid UTF-8"),
                format!("set {name} to a text secret"),
            );
            None
        }
    }
}

/// Length 12..=16 characters, no control characters. Messages give the length only.
fn check_secret(d: &mut Diags, f: &Fields<'_, '_>, found: &Found) -> Option<()> {
    let n = found.secret.char_len();
    if !SECRET_LEN.contains(&n) {
        d.error(
            &found.at,
            &f.object,
            format!(
                "{} is {n} character{} long; CHAP secrets must be {} to {} characters",
                found.source,
                if n == 1 { "" } else { "s" },
                SECRET_LEN.start(),
                SECRET_LEN.end()
            ),
            format!(
                "use a secret of {} to {} characters (the range Microsoft's initiator accepts)",
                SECRET_LEN.start(),
                SECRET_LEN.end()
            ),
        );
        return None;
    }
    if found.secret.expose().chars().any(char::is_control) {
        d.error(
            &found.at,
            &f.object,
            format!(
                "{} contains a control character (a line break or tab, say)",
                found.source
            ),
            "use printable characters only",
        );
        return None;
    }
    Some(())
}
