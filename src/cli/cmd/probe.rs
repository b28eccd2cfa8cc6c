//! `isctl probe PORTAL|iscsi://HOST[:PORT]/IQN[/LUN]`: prove a target works with isctl's
//! own informational initiator (`crate::initiator`): discovery, login, TEST UNIT READY,
//! REPORT LUNS, INQUIRY and VPD pages, READ CAPACITY, MODE SENSE, logout. Never reads or
//! writes data.
//!
//! Exit codes: 0 everything asked for worked; 1 unreachable, or a login or command
//! exchange failed; 2 (with `--model`) the target differs from the model.
//! Secrets come from the environment or a file, never from the command line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use crate::cli::args::{ChapAlgorithm, DigestChoice, ProbeArgs};
use crate::cli::exit;
use crate::cli::resolve::Resolved;
use crate::cli::UsageError;
use crate::engine::iscsi::chap::Algorithm;
use crate::initiator::client::resolve;
use crate::initiator::login::ChapConfig;
use crate::initiator::probe::{
    probe, Credentials, ProbeOptions, ProbeReport, DEFAULT_INITIATOR, DEFAULT_ISID,
};
use crate::initiator::verify;
use crate::model::{AuthMethod, ChapCredentials, Model, Secret};

/// `iscsi://HOST[:PORT]/IQN[/LUN]` or `HOST[:PORT]` → (portal, target, lun).
fn parse_portal(s: &str) -> anyhow::Result<(String, Option<String>, Option<u16>)> {
    let Some(rest) = s.strip_prefix("iscsi://") else {
        return Ok((s.to_string(), None, None));
    };
    // libiscsi-style credentials in the URL would put a secret on the command line.
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.contains('@') {
        return Err(UsageError(
            "credentials in the URL are not accepted: use --chap-user and --chap-secret-env/--chap-secret-file".into(),
        )
        .into());
    }
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return Ok((host.to_string(), None, None));
    }
    let (iqn, lun) = match path.rsplit_once('/') {
        Some((iqn, lun)) => {
            let lun = lun
                .parse::<u16>()
                .map_err(|_| UsageError(format!("bad LUN {lun:?} in {s}")))?;
            (iqn, Some(lun))
        }
        None => (path, None),
    };
    Ok((host.to_string(), Some(iqn.to_string()), lun))
}

fn parse_isid(s: &str) -> anyhow::Result<[u8; 6]> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.len() != 12 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(UsageError(format!("--isid takes 12 hex digits, not {s:?}")).into());
    }
    let mut out = [0u8; 6];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex checked");
    }
    Ok(out)
}

fn secret(
    env: &Option<String>,
    file: &Option<std::path::PathBuf>,
    what: &str,
) -> anyhow::Result<Option<Secret>> {
    if let Some(var) = env {
        let v = std::env::var(var)
            .with_context(|| format!("{what}: environment variable {var} is not set"))?;
        return Ok(Some(Secret::new(v)));
    }
    if let Some(path) = file {
        let v = std::fs::read_to_string(path)
            .with_context(|| format!("{what}: reading {}", path.display()))?;
        return Ok(Some(Secret::new(
            v.trim_end_matches(['\n', '\r']).to_string(),
        )));
    }
    Ok(None)
}

fn algorithms(list: &[ChapAlgorithm]) -> Vec<Algorithm> {
    list.iter()
        .map(|a| match a {
            ChapAlgorithm::Md5 => Algorithm::Md5,
            ChapAlgorithm::Sha1 => Algorithm::Sha1,
            ChapAlgorithm::Sha256 => Algorithm::Sha256,
        })
        .collect()
}

fn chap_from_model(c: &ChapCredentials, mutual: bool, algs: &[Algorithm]) -> ChapConfig {
    ChapConfig {
        user: c.user.clone(),
        secret: c.secret.clone(),
        peer: if mutual {
            c.peer.as_ref().map(|p| (p.user.clone(), p.secret.clone()))
        } else {
            None
        },
        algorithms: algs.to_vec(),
    }
}

pub fn run(r: &Resolved, args: &ProbeArgs) -> anyhow::Result<u8> {
    r.text_or_json("probe")?;
    let (portal, url_target, lun) = parse_portal(&args.portal)?;
    let mut targets = args.targets.clone();
    if let Some(t) = url_target {
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    let algs = algorithms(&args.chap_algorithm);
    let isid = match &args.isid {
        Some(s) => parse_isid(s)?,
        None => DEFAULT_ISID,
    };
    let chap_secret = secret(
        &args.chap_secret_env,
        &args.chap_secret_file,
        "--chap-secret",
    )?;
    let peer_secret = secret(
        &args.peer_secret_env,
        &args.peer_secret_file,
        "--peer-secret",
    )?;
    let chap =
        match (&args.chap_user, chap_secret) {
            (Some(user), Some(secret)) => Some(ChapConfig {
                user: user.clone(),
                secret,
                peer: match (&args.peer_user, peer_secret) {
                    (Some(u), Some(s)) => Some((u.clone(), s)),
                    (None, None) => None,
                    _ => return Err(UsageError(
                        "mutual CHAP needs --peer-user and --peer-secret-env or --peer-secret-file"
                            .into(),
                    )
                    .into()),
                },
                algorithms: algs.clone(),
            }),
            (None, None) if args.peer_user.is_none() => None,
            _ => {
                return Err(UsageError(
                    "CHAP needs --chap-user and --chap-secret-env or --chap-secret-file".into(),
                )
                .into())
            }
        };
    let initiator = args
        .initiator
        .clone()
        .unwrap_or_else(|| DEFAULT_INITIATOR.to_string());
    let model = match &args.model {
        Some(p) => Some(r.load_model(p)?),
        None => None,
    };
    let mut opts = ProbeOptions {
        portal: portal.clone(),
        targets: targets.clone(),
        lun,
        all_portals: args.all_portals,
        isid,
        source: args.source,
        discovery: Credentials {
            initiator: initiator.clone(),
            chap: if args.discovery_chap {
                chap.clone()
            } else {
                None
            },
        },
        normal: Credentials {
            initiator: initiator.clone(),
            chap: chap.clone(),
        },
        per_target: BTreeMap::new(),
        header_digest: args.header_digest == DigestChoice::Crc32c,
        data_digest: args.data_digest == DigestChoice::Crc32c,
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    let portal_addr = resolve(&portal).ok();
    if let (Some(m), Some(addr)) = (&model, portal_addr) {
        from_model(m, addr, args, chap.is_some(), &algs, &mut opts);
    }
    let report = probe(&opts);
    let differences = match (&model, portal_addr) {
        (Some(m), Some(addr)) if report.ok() => {
            let expected = targets.is_empty().then(|| {
                let from = report
                    .discovery
                    .local_address
                    .as_ref()
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                    .map_or(addr.ip(), |a| a.ip());
                verify::targets_at(m, addr, &opts.discovery.initiator, from)
            });
            Some(verify::compare(m, &report, expected.as_deref()))
        }
        // Nothing to compare when the probe itself failed (exit 1 says so).
        _ => None,
    };
    let code = if !report.ok() {
        exit::FAILURE
    } else if differences.as_ref().is_some_and(|d| !d.is_empty()) {
        exit::CHANGES
    } else {
        exit::OK
    };
    let mut out = std::io::stdout().lock();
    if r.json() {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = json!(report.ok());
        v["differences"] = json!(differences);
        v["exit_code"] = json!(code);
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else {
        out.write_all(render_text(&report, differences.as_deref(), code).as_bytes())?;
    }
    Ok(code)
}

/// With `--model`: credentials and initiator names the command line did not give.
fn from_model(
    m: &Model,
    addr: std::net::SocketAddr,
    args: &ProbeArgs,
    have_chap: bool,
    algs: &[Algorithm],
    opts: &mut ProbeOptions,
) {
    // Discovery CHAP from the portal group listening on this address.
    if opts.discovery.chap.is_none() {
        for p in m.portals.values() {
            let listens = p.listen.iter().any(|l| {
                l.port() == addr.port() && (l.ip() == addr.ip() || l.ip().is_unspecified())
            });
            if listens && p.discovery_auth != AuthMethod::None {
                if let Some(c) = p.discovery_auth_group.as_ref().and_then(|g| m.auths.get(g)) {
                    let mutual = p.discovery_auth == AuthMethod::MutualChap;
                    opts.discovery.chap = Some(chap_from_model(c, mutual, algs));
                }
            }
        }
    }
    for t in m.targets.values() {
        let Some(g) = t.groups.first() else { continue };
        let initiator = match (&args.initiator, &g.initiator_group) {
            (None, Some(ig)) => m
                .initiator_groups
                .get(ig)
                .and_then(|ig| ig.initiators.first())
                .map(|n| n.as_str().to_string())
                .unwrap_or_else(|| opts.normal.initiator.clone()),
            _ => opts.normal.initiator.clone(),
        };
        let chap = if have_chap {
            opts.normal.chap.clone()
        } else {
            g.auth
                .as_ref()
                .and_then(|a| m.auths.get(a))
                .map(|c| chap_from_model(c, c.peer.is_some(), algs))
        };
        opts.per_target
            .insert(t.name.as_str().to_string(), Credentials { initiator, chap });
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn render_text(rep: &ProbeReport, differences: Option<&[String]>, code: u8) -> String {
    let mut s = String::new();
    let d = &rep.discovery;
    let _ = writeln!(s, "portal {}", rep.portal);
    match (&d.login, &d.error) {
        (Some(l), _) if l.ok => {
            let _ = writeln!(
                s,
                "discovery as {}: {} target(s)",
                d.initiator,
                d.targets.len()
            );
            for t in &d.targets {
                let addrs: Vec<String> = t
                    .addresses
                    .iter()
                    .map(|a| match a.tag {
                        Some(tag) => format!("{},{tag}", a.address),
                        None => a.address.clone(),
                    })
                    .collect();
                let _ = writeln!(s, "  {}  {}", t.name, addrs.join(" "));
            }
        }
        (Some(l), _) => {
            let _ = writeln!(
                s,
                "discovery as {}: login failed: {} (0x{:04x})",
                d.initiator, l.status_name, l.status
            );
        }
        (None, Some(e)) => {
            let _ = writeln!(s, "discovery: {e}");
        }
        (None, None) => {}
    }
    if let (Some(l), Some(e)) = (&d.login, &d.error) {
        if l.ok {
            let _ = writeln!(s, "discovery: {e}");
        }
    }
    for t in &rep.targets {
        let _ = writeln!(s, "target {} via {} as {}", t.name, t.portal, t.initiator);
        let l = &t.login;
        if l.ok {
            let mut auth = match l.auth {
                "none" => "no authentication".to_string(),
                _ => format!("CHAP {}", l.chap_algorithm.unwrap_or("?")),
            };
            if l.mutual_chap_verified == Some(true) {
                auth.push_str(", mutual CHAP verified");
            }
            let _ = writeln!(s, "  login: success ({auth}), TSIH {}", l.tsih.unwrap_or(0));
            let keys: Vec<String> = l
                .negotiated
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(s, "  negotiated: {}", keys.join(" "));
        } else {
            if l.status != 0 {
                let _ = writeln!(
                    s,
                    "  login failed: {} (status 0x{:04x})",
                    l.status_name, l.status
                );
            } else {
                let _ = writeln!(s, "  login failed: {}", l.status_name);
            }
            // A target's status is already named above; other failures say why.
            if let Some(e) = l.error.as_ref().filter(|_| l.status == 0) {
                let _ = writeln!(s, "    {e}");
            }
            if let Some(r) = &l.redirect {
                let _ = writeln!(s, "    redirected to {r}");
            }
            continue;
        }
        if let Some(luns) = &t.report_luns {
            let ids: Vec<String> = luns.iter().map(u16::to_string).collect();
            let _ = writeln!(s, "  REPORT LUNS: {}", ids.join(", "));
        }
        for lun in &t.luns {
            let _ = writeln!(s, "  LUN {}: {}", lun.lun, lun.state);
            if let Some(sense) = &lun.sense {
                let _ = writeln!(s, "    sense: {sense}");
            }
            if let Some(i) = &lun.inquiry {
                let _ = writeln!(
                    s,
                    "    inquiry: {} (type 0x{:02x}) vendor {:?} product {:?} revision {:?}",
                    i.peripheral_type_name, i.peripheral_type, i.vendor, i.product, i.revision
                );
            }
            if let Some(c) = &lun.capacity {
                let _ = writeln!(
                    s,
                    "    capacity: {} ({} bytes, {} blocks of {}), physical block exponent {}, lbpme {}, lbprz {}",
                    human_bytes(c.bytes),
                    c.bytes,
                    c.capacity.blocks,
                    c.capacity.block_size,
                    c.capacity.physical_block_exponent,
                    yes_no(c.capacity.lbpme),
                    yes_no(c.capacity.lbprz)
                );
            }
            if let Some(wp) = lun.write_protected {
                let _ = writeln!(s, "    write protected: {}", yes_no(wp));
            }
            if let Some(serial) = &lun.serial {
                let _ = writeln!(s, "    serial: {serial}");
            }
            for d in &lun.designators {
                let _ = writeln!(
                    s,
                    "    designator: {} {} {}",
                    d.kind, d.association, d.value
                );
            }
            if let Some(rr) = lun.rotation_rate {
                let what = match rr {
                    0 => "not reported".to_string(),
                    1 => "non-rotating".to_string(),
                    n => format!("{n} rpm"),
                };
                let _ = writeln!(s, "    rotation rate: {what}");
            }
            let pages: Vec<String> = lun.vpd_pages.iter().map(|p| format!("0x{p:02x}")).collect();
            let _ = writeln!(s, "    VPD pages: {}", pages.join(" "));
            for n in &lun.notes {
                let _ = writeln!(s, "    note: {n}");
            }
        }
        if let Some(e) = &t.error {
            let _ = writeln!(s, "  error: {e}");
        }
        let _ = writeln!(s, "  logout: {}", if t.logout { "ok" } else { "failed" });
    }
    if let Some(diffs) = differences {
        if diffs.is_empty() {
            let _ = writeln!(s, "model: matches");
        } else {
            let _ = writeln!(s, "model: {} difference(s)", diffs.len());
            for d in diffs {
                let _ = writeln!(s, "  {d}");
            }
        }
    }
    let _ = writeln!(
        s,
        "result: {}",
        match code {
            0 => "ok",
            2 => "differs from the model",
            _ => "failed",
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_portals() {
        assert_eq!(
            parse_portal("10.0.0.1").unwrap(),
            ("10.0.0.1".into(), None, None)
        );
        assert_eq!(
            parse_portal("iscsi://h:3261/iqn.2026-11.x:t/3").unwrap(),
            ("h:3261".into(), Some("iqn.2026-11.x:t".into()), Some(3))
        );
        assert_eq!(
            parse_portal("iscsi://h/iqn.2026-11.x:t").unwrap(),
            ("h".into(), Some("iqn.2026-11.x:t".into()), None)
        );
        assert!(parse_portal("iscsi://u%p@h/iqn.x:t").is_err());
        assert_eq!(
            parse_isid("400001370000").unwrap(),
            [0x40, 0, 1, 0x37, 0, 0]
        );
        assert!(parse_isid("4000").is_err());
    }
}
