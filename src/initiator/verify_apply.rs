//! `isctl apply --verify[=strict]`: after an apply, prove with isctl's own initiator that
//! the model works as written, on whichever backend applied it (LIO or the engine).
//!
//! For every target × target group × listen address of its portal group (a wildcard
//! address becomes loopback) the check logs in as an initiator the group admits (its
//! first named initiator, or the probe's name when it admits any name), with the group's
//! CHAP or mutual CHAP and the portal's discovery CHAP from the model, runs the probe's
//! informational commands and compares what the target shows with the model
//! ([`super::verify::compare`]). `strict` adds, per group, a login as a name outside the
//! group (must be refused) and one with a wrong CHAP secret (must fail).
//!
//! Every login uses a fresh ISID (type "random" with random bytes) that no live session
//! uses, so no real host's session is ever reinstated; each check is a normal login and
//! logout.
//!
//! Two halves: [`plan`] (pure: the model and the live sessions → the checks, each to run
//! or skipped with the reason this host cannot make it) and [`run`] (the sockets). The
//! JSON form of [`VerifyReport`] is a stable contract (docs/probe.md, "apply --verify").
//! Does not: print ([`text`] renders, the CLI writes), roll anything back, or read the
//! backend itself (the caller passes the live sessions).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use super::client::Client;
use super::login::{ChapConfig, LoginConfig};
use super::probe::{self, Credentials, LoginReport, LunReport, ProbeOptions, DEFAULT_INITIATOR};
use super::verify;
use super::InitiatorError;
use crate::engine::iscsi::chap::Algorithm;
use crate::model::{AuthMethod, ChapCredentials, Model, Secret};
use crate::state::Session;

/// The name the strict check logs in with to prove that a group refuses outsiders.
pub const OUTSIDER_INITIATOR: &str = "iqn.2026-11.io.isctl:verify-outsider";

/// How much `--verify` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// An admitted initiator logs in and sees what the model says.
    Normal,
    /// Also: a name outside the group is refused, a wrong secret fails.
    Strict,
}

/// What one check proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    /// An initiator the group admits logs in and sees the model's LUNs.
    Admitted,
    /// A name outside the group's initiators is refused.
    Outsider,
    /// The group's CHAP user with a wrong secret is refused.
    WrongSecret,
}

/// Where a check logs in, and as whom.
#[derive(Debug, Clone)]
pub struct Check {
    pub kind: CheckKind,
    pub target: String,
    pub portal_group: String,
    /// The listen address as the model writes it.
    pub listen: SocketAddr,
    /// The address connected to (a wildcard listen address becomes loopback).
    pub address: SocketAddr,
    pub initiator: String,
    pub chap: Option<ChapConfig>,
    pub discovery_chap: Option<ChapConfig>,
    pub isid: [u8; 6],
}

/// A check this host cannot make, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub kind: CheckKind,
    pub target: String,
    pub portal_group: String,
    pub listen: SocketAddr,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub enum Step {
    Run(Box<Check>),
    Skip(Skipped),
}

/// ISIDs for the checks: type "random" (0x80), three random bytes, a counter; never
/// one a live session shows. Sessions whose ISID the backend does not show (LIO demo
/// mode) cannot be avoided by name: the random bytes make a clash a 1 in 2^24 event.
#[derive(Debug, Clone)]
pub struct FreshIsids {
    used: BTreeSet<String>,
    random: [u8; 3],
    next: u16,
}

impl FreshIsids {
    pub fn new(sessions: &[Session], random: [u8; 3]) -> FreshIsids {
        FreshIsids {
            used: sessions
                .iter()
                .filter_map(|s| s.isid.as_ref().map(|i| i.to_ascii_lowercase()))
                .collect(),
            random,
            next: 1,
        }
    }

    pub fn next_isid(&mut self) -> [u8; 6] {
        loop {
            let n = self.next;
            self.next = self.next.wrapping_add(1);
            let isid = [
                0x80,
                self.random[0],
                self.random[1],
                self.random[2],
                (n >> 8) as u8,
                n as u8,
            ];
            if !self.used.contains(&isid_hex(&isid)) {
                return isid;
            }
        }
    }
}

/// 12 lower-case hex digits, as `isctl sessions` shows an ISID.
pub fn isid_hex(isid: &[u8; 6]) -> String {
    isid.iter().map(|b| format!("{b:02x}")).collect()
}

/// The address this host connects to for a listen address: loopback for a wildcard.
pub fn connect_address(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(a) if a.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(a) if a.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

/// CHAP as the model gives it; with `peer` the target must prove itself too.
fn chap_config(c: &ChapCredentials, method: AuthMethod) -> ChapConfig {
    ChapConfig {
        user: c.user.clone(),
        secret: c.secret.clone(),
        peer: (method == AuthMethod::MutualChap)
            .then(|| c.peer.as_ref().map(|p| (p.user.clone(), p.secret.clone())))
            .flatten(),
        algorithms: vec![Algorithm::Sha256, Algorithm::Sha1, Algorithm::Md5],
    }
}

/// A secret that is not `right`: the right one with a suffix (same alphabet, longer).
fn wrong_secret(right: &Secret) -> Secret {
    Secret::new(format!("{}-not-it", right.expose()))
}

/// The checks, in model order: per target, per group, per listen address, the
/// admitted login, then (strict) the outsider and the wrong secret.
pub fn plan(model: &Model, level: Level, isids: &mut FreshIsids) -> Vec<Step> {
    let mut steps = Vec::new();
    for t in model.targets.values() {
        for g in &t.groups {
            let Some(portal) = model.portals.get(&g.portal) else {
                continue;
            };
            let group = g
                .initiator_group
                .as_ref()
                .and_then(|n| model.initiator_groups.get(n));
            let named: Vec<&str> = group
                .map(|ig| ig.initiators.iter().map(|n| n.as_str()).collect())
                .unwrap_or_default();
            let initiator = named.first().copied().unwrap_or(DEFAULT_INITIATOR);
            let creds = g.auth.as_ref().and_then(|a| model.auths.get(a));
            let chap = creds.map(|c| chap_config(c, g.auth_method));
            let discovery_chap = portal
                .discovery_auth_group
                .as_ref()
                .and_then(|a| model.auths.get(a))
                .filter(|_| portal.discovery_auth != AuthMethod::None)
                .map(|c| chap_config(c, portal.discovery_auth));
            for &listen in &portal.listen {
                let address = connect_address(listen);
                let skip = |kind, reason: String| {
                    Step::Skip(Skipped {
                        kind,
                        target: t.name.as_str().to_string(),
                        portal_group: g.portal.clone(),
                        listen,
                        reason,
                    })
                };
                let mut check = |kind, initiator: &str, chap: Option<ChapConfig>| {
                    Step::Run(Box::new(Check {
                        kind,
                        target: t.name.as_str().to_string(),
                        portal_group: g.portal.clone(),
                        listen,
                        address,
                        initiator: initiator.to_string(),
                        chap,
                        discovery_chap: discovery_chap.clone(),
                        isid: isids.next_isid(),
                    }))
                };
                // Each check connects from the address it connects to (loopback, or
                // the portal's own address, both local): a group limited to other
                // networks refuses it.
                if !model.admits(g, initiator, address.ip()) {
                    let nets = group
                        .map(|ig| {
                            ig.networks
                                .iter()
                                .map(|n| n.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default();
                    let why = format!(
                        "initiator group {:?} admits networks {nets} only; this host reaches {address} from {}",
                        g.initiator_group.as_deref().unwrap_or_default(),
                        address.ip()
                    );
                    steps.push(skip(CheckKind::Admitted, why.clone()));
                    if level == Level::Strict {
                        steps.push(skip(CheckKind::Outsider, why.clone()));
                        steps.push(skip(CheckKind::WrongSecret, why));
                    }
                    continue;
                }
                steps.push(check(CheckKind::Admitted, initiator, chap.clone()));
                if level == Level::Normal {
                    continue;
                }
                if named.is_empty() {
                    steps.push(skip(
                        CheckKind::Outsider,
                        "the group admits any initiator name (on LIO: demo mode), so no name is outside it".into(),
                    ));
                } else {
                    let mut outsider = OUTSIDER_INITIATOR.to_string();
                    while named.contains(&outsider.as_str()) {
                        outsider.push('x');
                    }
                    steps.push(check(CheckKind::Outsider, &outsider, chap.clone()));
                }
                match &chap {
                    Some(c) => {
                        let wrong = ChapConfig {
                            secret: wrong_secret(&c.secret),
                            ..c.clone()
                        };
                        steps.push(check(CheckKind::WrongSecret, initiator, Some(wrong)));
                    }
                    None => steps.push(skip(
                        CheckKind::WrongSecret,
                        "the group asks for no CHAP: there is no secret to get wrong".into(),
                    )),
                }
            }
        }
    }
    steps
}

/// `passed`, `failed` or `skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
}

/// One check's result. Serialised as one element of `verify.checks`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub check: CheckKind,
    pub target: String,
    pub portal_group: String,
    /// The listen address as the model writes it.
    pub listen: String,
    /// The address connected to (or that would have been), also the source address.
    pub address: Option<String>,
    pub initiator: Option<String>,
    /// 12 hex digits; absent when skipped.
    pub isid: Option<String>,
    /// `none`, `chap` or `mutual-chap`: what the check logged in with.
    pub auth: &'static str,
    pub outcome: Outcome,
    /// Why it failed or was skipped, one sentence; absent when it passed.
    pub reason: Option<String>,
    /// The login as the probe reports it (status, negotiated keys, mutual CHAP).
    pub login: Option<LoginReport>,
    /// `admitted` only: the LUNs as the probe reports them.
    pub luns: Vec<LunReport>,
    /// `admitted` only: what differs from the model (empty: it matches).
    pub differences: Vec<String>,
}

/// The `verify` section of `apply`'s output.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub level: Level,
    /// No check failed (skipped ones do not count against it).
    pub ok: bool,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Live sessions whose ISIDs the checks avoided.
    pub live_sessions: usize,
    /// Of those, sessions whose ISID the backend does not show (LIO demo mode).
    pub live_sessions_without_isid: usize,
    /// Why no check ran (the live sessions could not be read, so no ISID is known to be
    /// fresh); `None` when the checks ran.
    pub error: Option<String>,
    pub checks: Vec<CheckReport>,
}

impl VerifyReport {
    /// A verify that could not start: it fails, and says why.
    pub fn not_run(level: Level, error: String) -> VerifyReport {
        VerifyReport {
            level,
            ok: false,
            passed: 0,
            failed: 0,
            skipped: 0,
            live_sessions: 0,
            live_sessions_without_isid: 0,
            error: Some(error),
            checks: Vec::new(),
        }
    }
}

fn auth_name(chap: &Option<ChapConfig>) -> &'static str {
    match chap {
        None => "none",
        Some(c) if c.peer.is_some() => "mutual-chap",
        Some(_) => "chap",
    }
}

/// Plan and run every check.
pub fn verify(
    model: &Model,
    sessions: &[Session],
    level: Level,
    timeout: Duration,
) -> VerifyReport {
    let mut random = [0u8; 3];
    super::random_bytes(&mut random);
    let mut isids = FreshIsids::new(sessions, random);
    let steps = plan(model, level, &mut isids);
    let checks: Vec<CheckReport> = steps.iter().map(|s| run(model, s, timeout)).collect();
    let count = |o| checks.iter().filter(|c| c.outcome == o).count();
    VerifyReport {
        level,
        ok: count(Outcome::Failed) == 0,
        passed: count(Outcome::Passed),
        failed: count(Outcome::Failed),
        skipped: count(Outcome::Skipped),
        live_sessions: sessions.len(),
        live_sessions_without_isid: sessions.iter().filter(|s| s.isid.is_none()).count(),
        error: None,
        checks,
    }
}

/// Run one step.
pub fn run(model: &Model, step: &Step, timeout: Duration) -> CheckReport {
    let c = match step {
        Step::Skip(s) => {
            return CheckReport {
                check: s.kind,
                target: s.target.clone(),
                portal_group: s.portal_group.clone(),
                listen: s.listen.to_string(),
                address: Some(connect_address(s.listen).to_string()),
                initiator: None,
                isid: None,
                auth: "none",
                outcome: Outcome::Skipped,
                reason: Some(s.reason.clone()),
                login: None,
                luns: Vec::new(),
                differences: Vec::new(),
            }
        }
        Step::Run(c) => c,
    };
    let mut r = CheckReport {
        check: c.kind,
        target: c.target.clone(),
        portal_group: c.portal_group.clone(),
        listen: c.listen.to_string(),
        address: Some(c.address.to_string()),
        initiator: Some(c.initiator.clone()),
        isid: Some(isid_hex(&c.isid)),
        auth: auth_name(&c.chap),
        outcome: Outcome::Failed,
        reason: None,
        login: None,
        luns: Vec::new(),
        differences: Vec::new(),
    };
    match c.kind {
        CheckKind::Admitted => admitted(model, c, timeout, &mut r),
        CheckKind::Outsider | CheckKind::WrongSecret => refused(c, timeout, &mut r),
    }
    r
}

/// Discovery, login, the informational commands, logout; then the comparison.
fn admitted(model: &Model, c: &Check, timeout: Duration, r: &mut CheckReport) {
    let report = probe::probe(&ProbeOptions {
        portal: c.address.to_string(),
        targets: vec![c.target.clone()],
        lun: None,
        all_portals: false,
        isid: c.isid,
        source: Some(c.address.ip()),
        discovery: Credentials {
            initiator: c.initiator.clone(),
            chap: c.discovery_chap.clone(),
        },
        normal: Credentials {
            initiator: c.initiator.clone(),
            chap: c.chap.clone(),
        },
        per_target: Default::default(),
        header_digest: false,
        data_digest: false,
        timeout,
    });
    let d = &report.discovery;
    let t = report.targets.first();
    r.login = t.map(|t| t.login.clone());
    r.luns = t.map(|t| t.luns.clone()).unwrap_or_default();
    let discovery_problem = match (&d.login, &d.error) {
        _ if !d.connected => Some(format!(
            "unreachable: {}",
            d.error.as_deref().unwrap_or("no connection")
        )),
        (Some(l), _) if !l.ok => Some(format!(
            "discovery login failed: {} (status 0x{:04x})",
            l.status_name, l.status
        )),
        (_, Some(e)) => Some(format!("discovery: {e}")),
        _ if !d.targets.iter().any(|x| x.name == c.target) => {
            Some("discovery (SendTargets) does not list the target".into())
        }
        _ => None,
    };
    let target_problem = match t {
        None => None,
        Some(t) if !t.login.ok => Some(match t.login.status {
            0 => format!(
                "login failed: {}{}",
                t.login.status_name,
                t.login
                    .error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            s => format!("login failed: {} (status 0x{s:04x})", t.login.status_name),
        }),
        Some(t) => match (&t.error, t.logout) {
            (Some(e), _) => Some(e.clone()),
            (None, false) => Some("logout failed".into()),
            _ => None,
        },
    };
    if report.targets.iter().all(|t| t.login.ok) {
        r.differences = verify::compare(model, &report, None);
    }
    let problems: Vec<String> = target_problem
        .into_iter()
        .chain(discovery_problem)
        .chain(
            (!r.differences.is_empty())
                .then(|| format!("{} difference(s) from the model", r.differences.len())),
        )
        .collect();
    if problems.is_empty() {
        r.outcome = Outcome::Passed;
    } else {
        r.reason = Some(problems.join("; "));
    }
}

/// A login that must be refused by the target (status class 2, initiator error).
fn refused(c: &Check, timeout: Duration, r: &mut CheckReport) {
    let expected = match c.kind {
        CheckKind::Outsider => "a name outside the initiator group",
        _ => "a wrong CHAP secret",
    };
    let mut client = match Client::connect(c.address, Some(c.address.ip()), timeout) {
        Ok(cl) => cl,
        Err(e) => {
            r.reason = Some(format!("unreachable: {e}"));
            return;
        }
    };
    let result = client.login(LoginConfig {
        initiator: c.initiator.clone(),
        target: Some(c.target.clone()),
        isid: c.isid,
        chap: c.chap.clone(),
        header_digest: false,
        data_digest: false,
    });
    r.login = Some(probe::login_report(&c.chap, &result));
    match result {
        Ok(_) => {
            let _ = client.logout();
            r.reason = Some(format!("the target admitted {expected}"));
        }
        Err(InitiatorError::LoginFailed { status, .. }) if status >> 8 == 2 => {
            r.outcome = Outcome::Passed;
        }
        Err(InitiatorError::LoginFailed { status, name, .. }) => {
            r.reason = Some(format!(
                "refused {expected}, but with {name} (status 0x{status:04x}), not an initiator error"
            ));
        }
        Err(e) => r.reason = Some(format!("login did not complete: {e}")),
    }
}

/// The "Verify:" section of `apply`'s text output.
pub fn text(v: &VerifyReport) -> String {
    let mut s = String::new();
    let level = match v.level {
        Level::Normal => "",
        Level::Strict => " (strict)",
    };
    let _ = writeln!(
        s,
        "Verify{level}: {} passed, {} failed, {} skipped{}.",
        v.passed,
        v.failed,
        v.skipped,
        if v.live_sessions > 0 {
            format!("; fresh ISIDs beside {} live session(s)", v.live_sessions)
        } else {
            String::new()
        }
    );
    if let Some(e) = &v.error {
        let _ = writeln!(s, "  not run: {e}");
    }
    for c in &v.checks {
        let what = match c.check {
            CheckKind::Admitted => "login",
            CheckKind::Outsider => "outsider refused",
            CheckKind::WrongSecret => "wrong secret refused",
        };
        let mark = match c.outcome {
            Outcome::Passed => "  ok  ",
            Outcome::Failed => "  FAIL",
            Outcome::Skipped => "  skip",
        };
        let via = c.address.as_deref().unwrap_or(&c.listen);
        let _ = write!(
            s,
            "{mark} {what}: {} via {via} (portal {})",
            c.target, c.portal_group
        );
        if let (Some(i), Some(isid)) = (&c.initiator, &c.isid) {
            let _ = write!(s, " as {i}, ISID 0x{isid}, auth {}", c.auth);
        }
        match (&c.outcome, &c.login) {
            (Outcome::Passed, Some(l)) if c.check == CheckKind::Admitted => {
                let _ = write!(s, ": {} LUN(s) as in the model", c.luns.len());
                if l.mutual_chap_verified == Some(true) {
                    let _ = write!(s, ", mutual CHAP verified");
                }
            }
            (Outcome::Passed, Some(l)) => {
                let _ = write!(s, ": {} (status 0x{:04x})", l.status_name, l.status);
            }
            _ => {}
        }
        if let Some(r) = &c.reason {
            let _ = write!(s, ": {r}");
        }
        let _ = writeln!(s);
        for d in &c.differences {
            let _ = writeln!(s, "         {d}");
        }
    }
    if !v.ok {
        let _ = writeln!(
            s,
            "Verify failed; the apply stays in place (nothing was rolled back)."
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.toml");
        std::fs::write(
            &p,
            r#"[global]
basename = "iqn.2026-11.test"
[portal.p]
listen = ["0.0.0.0:3260", "127.0.0.5:3261"]
discovery_auth = "chap"
discovery_auth_group = "disc"
[auth.disc]
user = "d"
secret = "discoverysecret1"
[auth.both]
user = "bob"
secret = "bobsecret1234"
peer_user = "tgt"
peer_secret = "targetsecret12"
[initiator_group.named]
initiators = ["iqn.2026-11.test:a", "iqn.2026-11.test:b"]
[initiator_group.far]
networks = ["10.0.0.0/8"]
[extent.r]
type = "ramdisk"
size = "8MiB"
shared = true
[target.open]
luns = { 0 = "r" }
[[target.open.group]]
portal = "p"
[target.named]
luns = { 0 = "r" }
[[target.named.group]]
portal = "p"
initiator_group = "named"
auth = "both"
auth_method = "mutual-chap"
[target.far]
luns = { 0 = "r" }
[[target.far.group]]
portal = "p"
initiator_group = "far"
"#,
        )
        .unwrap();
        crate::model::load(&p).unwrap().model
    }

    fn session(isid: &str) -> Session {
        Session {
            target: "iqn.2026-11.test:named".into(),
            tpg: 1,
            initiator: "iqn.2026-11.test:a".into(),
            dynamic: false,
            alias: None,
            isid: Some(isid.into()),
            tsih: Some(1),
            session_id: None,
            session_type: None,
            state: None,
            connections: vec![],
            portal_group: None,
            igroups: vec![],
            initiator_comment: None,
            params: None,
        }
    }

    #[test]
    fn isids_are_fresh_and_avoid_live_sessions() {
        let live = [session("80AABBCC0001"), session("80aabbcc0002")];
        let mut ids = FreshIsids::new(&live, [0xaa, 0xbb, 0xcc]);
        assert_eq!(isid_hex(&ids.next_isid()), "80aabbcc0003");
        assert_eq!(isid_hex(&ids.next_isid()), "80aabbcc0004");
    }

    #[test]
    fn wildcards_become_loopback() {
        assert_eq!(
            connect_address("0.0.0.0:3260".parse().unwrap()),
            "127.0.0.1:3260".parse().unwrap()
        );
        assert_eq!(
            connect_address("[::]:3260".parse().unwrap()),
            "[::1]:3260".parse().unwrap()
        );
        assert_eq!(
            connect_address("192.0.2.1:3260".parse().unwrap()),
            "192.0.2.1:3260".parse().unwrap()
        );
    }

    type Row = (CheckKind, String, String, Option<String>, Option<String>);

    fn rows(steps: &[Step]) -> Vec<Row> {
        steps
            .iter()
            .map(|s| match s {
                Step::Run(c) => (
                    c.kind,
                    c.target.rsplit(':').next().unwrap().to_string(),
                    c.address.to_string(),
                    Some(c.initiator.clone()),
                    None,
                ),
                Step::Skip(k) => (
                    k.kind,
                    k.target.rsplit(':').next().unwrap().to_string(),
                    k.listen.to_string(),
                    None,
                    Some(k.reason.clone()),
                ),
            })
            .collect()
    }

    #[test]
    fn normal_level_one_admitted_login_per_target_group_and_address() {
        let m = model();
        let mut ids = FreshIsids::new(&[], [1, 2, 3]);
        let steps = plan(&m, Level::Normal, &mut ids);
        let r = rows(&steps);
        let kinds: Vec<(CheckKind, &str, &str)> = r
            .iter()
            .map(|x| (x.0, x.1.as_str(), x.2.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (CheckKind::Admitted, "far", "0.0.0.0:3260"),
                (CheckKind::Admitted, "far", "127.0.0.5:3261"),
                (CheckKind::Admitted, "named", "127.0.0.1:3260"),
                (CheckKind::Admitted, "named", "127.0.0.5:3261"),
                (CheckKind::Admitted, "open", "127.0.0.1:3260"),
                (CheckKind::Admitted, "open", "127.0.0.5:3261"),
            ]
        );
        // A group admitting other networks only: skipped, and says why.
        assert!(r[0].4.as_deref().unwrap().contains("10.0.0.0/8"), "{r:?}");
        // The group's first named initiator; the probe's name when any name will do.
        assert_eq!(r[2].3.as_deref(), Some("iqn.2026-11.test:a"));
        assert_eq!(r[4].3.as_deref(), Some(DEFAULT_INITIATOR));
        let Step::Run(named) = &steps[2] else {
            panic!()
        };
        let chap = named.chap.as_ref().unwrap();
        assert_eq!(chap.user, "bob");
        assert_eq!(chap.peer.as_ref().unwrap().0, "tgt");
        assert_eq!(named.discovery_chap.as_ref().unwrap().user, "d");
        // Every login its own ISID.
        let isids: BTreeSet<[u8; 6]> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Run(c) => Some(c.isid),
                _ => None,
            })
            .collect();
        assert_eq!(isids.len(), 4);
    }

    #[test]
    fn strict_level_adds_outsider_and_wrong_secret_or_says_why_not() {
        let m = model();
        let mut ids = FreshIsids::new(&[], [1, 2, 3]);
        let steps = plan(&m, Level::Strict, &mut ids);
        let named: Vec<&Step> = steps
            .iter()
            .filter(|s| matches!(s, Step::Run(c) if c.target.ends_with(":named") && c.address.port() == 3260))
            .collect();
        let kinds: Vec<CheckKind> = named
            .iter()
            .map(|s| match s {
                Step::Run(c) => c.kind,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                CheckKind::Admitted,
                CheckKind::Outsider,
                CheckKind::WrongSecret
            ]
        );
        let Step::Run(outsider) = named[1] else {
            unreachable!()
        };
        assert_eq!(outsider.initiator, OUTSIDER_INITIATOR);
        let Step::Run(wrong) = named[2] else {
            unreachable!()
        };
        let (w, right) = (wrong.chap.as_ref().unwrap(), "bobsecret1234");
        assert_eq!(w.user, "bob");
        assert_ne!(w.secret.expose(), right);

        let open: Vec<Row> = rows(&steps)
            .into_iter()
            .filter(|r| r.1 == "open" && r.2.ends_with(":3260"))
            .collect();
        assert_eq!(open.len(), 3);
        assert!(open[1].4.as_deref().unwrap().contains("any initiator name"));
        assert!(open[2].4.as_deref().unwrap().contains("no CHAP"));
    }
}
