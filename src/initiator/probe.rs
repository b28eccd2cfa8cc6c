//! The probe: SendTargets discovery, then for each target a normal login, the
//! informational commands on every LUN, and a logout. The [`ProbeReport`] it returns is
//! serialised as-is by `isctl probe -o json`: its field names are a stable contract
//! (docs/probe.md).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use super::client::{resolve, Client, DiscoveredTarget};
use super::login::{status_name, ChapConfig, LoginConfig, LoginOutcome};
use super::scsi::{self, Capacity, Designator, Inquiry};
use super::InitiatorError;
use crate::engine::iscsi::chap::Algorithm;

/// Default initiator name of the probe.
pub const DEFAULT_INITIATOR: &str = "iqn.2026-11.io.isctl:probe";
/// Default ISID: type "random" (0x80) with "isc" and a qualifier of 1.
pub const DEFAULT_ISID: [u8; 6] = [0x80, 0x69, 0x73, 0x63, 0x00, 0x01];

/// Who logs in to a target, and with which credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub initiator: String,
    pub chap: Option<ChapConfig>,
}

/// What to probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// `host[:port]` of the portal to discover through.
    pub portal: String,
    /// Targets to log in to; empty: every discovered target.
    pub targets: Vec<String>,
    /// Query this LUN only (REPORT LUNS still runs); `None`: every reported LUN.
    pub lun: Option<u16>,
    /// Log in through every address discovery advertises (else the portal only).
    pub all_portals: bool,
    pub isid: [u8; 6],
    pub source: Option<IpAddr>,
    /// The discovery session's initiator and CHAP.
    pub discovery: Credentials,
    /// Default credentials for the targets; `per_target` overrides by target name.
    pub normal: Credentials,
    pub per_target: BTreeMap<String, Credentials>,
    pub header_digest: bool,
    pub data_digest: bool,
    pub timeout: Duration,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// The portal as resolved (`ip:port`), or as given when it did not resolve.
    pub portal: String,
    /// The targets named on the command line (empty: every discovered target).
    pub requested: Vec<String>,
    pub discovery: DiscoveryReport,
    pub targets: Vec<TargetReport>,
}

impl ProbeReport {
    /// Everything asked for worked: discovery (unless targets were named and it
    /// failed only at login), every login, every command exchange, every logout.
    pub fn ok(&self) -> bool {
        let discovery_ok =
            self.discovery.login.as_ref().is_some_and(|l| l.ok) && self.discovery.error.is_none();
        self.discovery.connected
            && (discovery_ok || !self.requested.is_empty())
            && self.targets.iter().all(|t| t.ok())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DiscoveryReport {
    /// The TCP connection to the portal succeeded.
    pub connected: bool,
    /// The local `ip:port` the discovery connection came from.
    pub local_address: Option<String>,
    pub initiator: String,
    pub login: Option<LoginReport>,
    pub error: Option<String>,
    pub targets: Vec<DiscoveredTarget>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoginReport {
    pub ok: bool,
    /// Status-Class and Status-Detail as one number (0 = success).
    pub status: u16,
    pub status_name: String,
    /// `none`, `chap` or `mutual-chap`.
    pub auth: &'static str,
    /// `md5`, `sha1` or `sha256` when CHAP ran.
    pub chap_algorithm: Option<&'static str>,
    /// `true`: the target's answer to our challenge was checked; `false`: it was
    /// wrong or missing; absent without mutual CHAP.
    pub mutual_chap_verified: Option<bool>,
    /// Redirection address (status class 1).
    pub redirect: Option<String>,
    pub tsih: Option<u16>,
    /// Every key the target answered or declared (CHAP keys excepted).
    pub negotiated: BTreeMap<String, String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub name: String,
    /// The address logged in to.
    pub portal: String,
    pub initiator: String,
    pub login: LoginReport,
    /// The LUN ids REPORT LUNS returned.
    pub report_luns: Option<Vec<u16>>,
    pub luns: Vec<LunReport>,
    pub logout: bool,
    /// A transport error after login (connection lost, protocol error).
    pub error: Option<String>,
}

impl TargetReport {
    pub fn ok(&self) -> bool {
        self.login.ok && self.error.is_none() && self.logout
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LunReport {
    pub lun: u16,
    /// TEST UNIT READY's outcome: `ready`, `ready-after-unit-attention`, `not-ready`,
    /// `reservation-conflict`, `busy`, `check-condition`, `status-0xNN`.
    pub state: String,
    /// Sense of a TEST UNIT READY that did not end `ready`.
    pub sense: Option<String>,
    pub inquiry: Option<Inquiry>,
    pub vpd_pages: Vec<u8>,
    pub serial: Option<String>,
    pub designators: Vec<Designator>,
    /// VPD 0xB1: 0 not reported, 1 non-rotating (SSD), else revolutions per minute.
    pub rotation_rate: Option<u16>,
    pub capacity: Option<CapacityReport>,
    pub write_protected: Option<bool>,
    /// A command that did not succeed, with why (not fatal: the probe carries on).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CapacityReport {
    #[serde(flatten)]
    pub capacity: Capacity,
    pub bytes: u64,
    /// `read-capacity-16` or `read-capacity-10`.
    pub command: &'static str,
}

pub fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Md5 => "md5",
        Algorithm::Sha1 => "sha1",
        Algorithm::Sha256 => "sha256",
    }
}

fn auth_kind(chap: &Option<ChapConfig>) -> &'static str {
    match chap {
        None => "none",
        Some(c) if c.peer.is_some() => "mutual-chap",
        Some(_) => "chap",
    }
}

pub(crate) fn login_report(
    chap: &Option<ChapConfig>,
    r: &Result<LoginOutcome, InitiatorError>,
) -> LoginReport {
    let auth = auth_kind(chap);
    match r {
        Ok(o) => LoginReport {
            ok: true,
            status: 0,
            status_name: status_name(0).into(),
            auth,
            chap_algorithm: o.chap_algorithm.map(algorithm_name),
            mutual_chap_verified: o.mutual_chap_verified,
            redirect: None,
            tsih: Some(o.tsih),
            negotiated: o.negotiated.iter().cloned().collect(),
            error: None,
        },
        Err(e) => {
            let (status, name, redirect) = match e {
                InitiatorError::LoginFailed {
                    status,
                    name,
                    redirect,
                } => (*status, name.to_string(), redirect.clone()),
                InitiatorError::MutualChap(_) => (0, "mutual CHAP failed".into(), None),
                _ => (0, "login not completed".into(), None),
            };
            LoginReport {
                ok: false,
                status,
                status_name: name,
                auth,
                chap_algorithm: None,
                mutual_chap_verified: matches!(e, InitiatorError::MutualChap(_)).then_some(false),
                redirect,
                tsih: None,
                negotiated: BTreeMap::new(),
                error: Some(e.to_string()),
            }
        }
    }
}

/// Run the probe. Errors are recorded in the report, never returned: a probe always
/// has something to say.
pub fn probe(opts: &ProbeOptions) -> ProbeReport {
    let mut report = ProbeReport {
        portal: opts.portal.clone(),
        requested: opts.targets.clone(),
        discovery: DiscoveryReport {
            connected: false,
            local_address: None,
            initiator: opts.discovery.initiator.clone(),
            login: None,
            error: None,
            targets: Vec::new(),
        },
        targets: Vec::new(),
    };
    let portal = match resolve(&opts.portal) {
        Ok(a) => a,
        Err(e) => {
            report.discovery.error = Some(e.to_string());
            return report;
        }
    };
    report.portal = portal.to_string();
    match discover(opts, portal, &mut report.discovery) {
        Ok(()) => {}
        Err(e) => report.discovery.error = Some(e.to_string()),
    }
    if !report.discovery.connected {
        return report;
    }
    let names: Vec<String> = if opts.targets.is_empty() {
        report
            .discovery
            .targets
            .iter()
            .map(|t| t.name.clone())
            .collect()
    } else {
        opts.targets.clone()
    };
    for name in names {
        let mut addrs = vec![portal];
        if opts.all_portals {
            if let Some(t) = report.discovery.targets.iter().find(|t| t.name == name) {
                for a in &t.addresses {
                    if let Ok(sa) = resolve(&a.address) {
                        if !addrs.contains(&sa) {
                            addrs.push(sa);
                        }
                    }
                }
            }
        }
        let creds = opts.per_target.get(&name).unwrap_or(&opts.normal);
        for addr in addrs {
            report.targets.push(probe_target(opts, &name, creds, addr));
        }
    }
    report
}

fn discover(
    opts: &ProbeOptions,
    portal: SocketAddr,
    rep: &mut DiscoveryReport,
) -> super::Result<()> {
    let mut c = Client::connect(portal, opts.source, opts.timeout)?;
    rep.connected = true;
    rep.local_address = Some(c.local.to_string());
    let chap = opts.discovery.chap.clone();
    let r = c.login(LoginConfig {
        initiator: opts.discovery.initiator.clone(),
        target: None,
        isid: opts.isid,
        chap: chap.clone(),
        header_digest: opts.header_digest,
        data_digest: opts.data_digest,
    });
    rep.login = Some(login_report(&chap, &r));
    r?;
    rep.targets = c.send_targets("All")?;
    c.logout()?;
    Ok(())
}

fn probe_target(
    opts: &ProbeOptions,
    name: &str,
    creds: &Credentials,
    addr: SocketAddr,
) -> TargetReport {
    let mut t = TargetReport {
        name: name.to_string(),
        portal: addr.to_string(),
        initiator: creds.initiator.clone(),
        login: login_report(
            &creds.chap,
            &Err(InitiatorError::Protocol("not attempted".into())),
        ),
        report_luns: None,
        luns: Vec::new(),
        logout: false,
        error: None,
    };
    let mut c = match Client::connect(addr, opts.source, opts.timeout) {
        Ok(c) => c,
        Err(e) => {
            t.login.error = Some(e.to_string());
            t.login.status_name = "unreachable".into();
            return t;
        }
    };
    let r = c.login(LoginConfig {
        initiator: creds.initiator.clone(),
        target: Some(name.to_string()),
        isid: opts.isid,
        chap: creds.chap.clone(),
        header_digest: opts.header_digest,
        data_digest: opts.data_digest,
    });
    t.login = login_report(&creds.chap, &r);
    if r.is_err() {
        return t;
    }
    if let Err(e) = query(&mut c, &mut t, opts.lun) {
        t.error = Some(e.to_string());
        return t;
    }
    match c.logout() {
        Ok(()) => t.logout = true,
        Err(e) => t.error = Some(format!("logout: {e}")),
    }
    t
}

/// One command, retried once after a unit attention.
fn ask(
    c: &mut Client,
    lun: u16,
    cdb: &[u8],
    alloc: u32,
) -> super::Result<super::client::ScsiReply> {
    let r = c.command_in(lun, cdb, alloc)?;
    if r.status == scsi::CHECK_CONDITION && r.sense.is_some_and(|s| s.key == scsi::UNIT_ATTENTION) {
        return c.command_in(lun, cdb, alloc);
    }
    Ok(r)
}

fn failed(what: &str, r: &super::client::ScsiReply) -> String {
    match r.sense {
        Some(s) => format!("{what}: {} ({s})", scsi::status_name(r.status)),
        None => format!("{what}: {}", scsi::status_name(r.status)),
    }
}

fn query(c: &mut Client, t: &mut TargetReport, only: Option<u16>) -> super::Result<()> {
    let r = ask(c, 0, &scsi::report_luns(16384), 16384)?;
    let luns = if r.status == scsi::GOOD {
        let l = scsi::parse_report_luns(&r.data);
        t.report_luns = Some(l.clone());
        l
    } else {
        vec![only.unwrap_or(0)]
    };
    for lun in luns {
        if only.is_some_and(|o| o != lun) {
            continue;
        }
        t.luns.push(query_lun(c, lun)?);
    }
    if let Some(o) = only {
        if t.luns.is_empty() {
            // The LUN asked for does not exist: that is a failure of what was asked.
            t.error = Some(format!("LUN {o} is not reported by the target"));
        }
    }
    Ok(())
}

fn query_lun(c: &mut Client, lun: u16) -> super::Result<LunReport> {
    let mut l = LunReport {
        lun,
        state: String::new(),
        sense: None,
        inquiry: None,
        vpd_pages: Vec::new(),
        serial: None,
        designators: Vec::new(),
        rotation_rate: None,
        capacity: None,
        write_protected: None,
        notes: Vec::new(),
    };
    // TEST UNIT READY, once more after a unit attention.
    let tur = scsi::test_unit_ready();
    let mut r = c.command_in(lun, &tur, 0)?;
    let mut after_ua = false;
    if r.status == scsi::CHECK_CONDITION && r.sense.is_some_and(|s| s.key == scsi::UNIT_ATTENTION) {
        after_ua = true;
        r = c.command_in(lun, &tur, 0)?;
    }
    l.state = match (r.status, r.sense) {
        (scsi::GOOD, _) if after_ua => "ready-after-unit-attention".into(),
        (scsi::GOOD, _) => "ready".into(),
        (scsi::RESERVATION_CONFLICT, _) => "reservation-conflict".into(),
        (scsi::BUSY, _) => "busy".into(),
        (scsi::CHECK_CONDITION, Some(s)) if s.key == scsi::NOT_READY => "not-ready".into(),
        (scsi::CHECK_CONDITION, _) => "check-condition".into(),
        (s, _) => format!("status-0x{s:02x}"),
    };
    if r.status != scsi::GOOD {
        l.sense = r.sense.map(|s| s.to_string());
    }

    let r = ask(c, lun, &scsi::inquiry(None, 96), 96)?;
    if r.status == scsi::GOOD {
        l.inquiry = scsi::parse_inquiry(&r.data);
    } else {
        l.notes.push(failed("INQUIRY", &r));
    }
    let vpd = |c: &mut Client, page: u8| -> super::Result<Option<Vec<u8>>> {
        let r = ask(c, lun, &scsi::inquiry(Some(page), 1024), 1024)?;
        Ok((r.status == scsi::GOOD).then_some(r.data))
    };
    match vpd(c, 0x00)? {
        Some(d) => l.vpd_pages = scsi::parse_supported_pages(&d).unwrap_or_default(),
        None => l.notes.push("VPD page 0x00 not supported".into()),
    }
    let has = |p: u8| l.vpd_pages.contains(&p);
    let (h80, h83, hb1) = (has(0x80), has(0x83), has(0xb1));
    if h80 {
        l.serial = vpd(c, 0x80)?.and_then(|d| scsi::parse_serial(&d));
    }
    if h83 {
        l.designators = vpd(c, 0x83)?
            .and_then(|d| scsi::parse_designators(&d))
            .unwrap_or_default();
    }
    if hb1 {
        l.rotation_rate = vpd(c, 0xb1)?.and_then(|d| scsi::parse_rotation_rate(&d));
    }

    let r = ask(c, lun, &scsi::read_capacity16(32), 32)?;
    if r.status == scsi::GOOD {
        l.capacity = scsi::parse_read_capacity16(&r.data).map(|cap| CapacityReport {
            bytes: cap.bytes(),
            capacity: cap,
            command: "read-capacity-16",
        });
    } else if r.status == scsi::RESERVATION_CONFLICT {
        l.notes.push(failed("READ CAPACITY(16)", &r));
    } else {
        let r10 = ask(c, lun, &scsi::read_capacity10(), 8)?;
        if r10.status == scsi::GOOD {
            l.capacity = scsi::parse_read_capacity10(&r10.data).map(|cap| CapacityReport {
                bytes: cap.bytes(),
                capacity: cap,
                command: "read-capacity-10",
            });
        } else {
            l.notes.push(failed("READ CAPACITY(10)", &r10));
        }
    }

    let r = ask(c, lun, &scsi::mode_sense6(255), 255)?;
    if r.status == scsi::GOOD {
        l.write_protected = scsi::parse_mode_sense6_wp(&r.data);
    } else {
        let r10 = ask(c, lun, &scsi::mode_sense10(1024), 1024)?;
        if r10.status == scsi::GOOD {
            l.write_protected = scsi::parse_mode_sense10_wp(&r10.data);
        } else {
            l.notes.push(failed("MODE SENSE", &r10));
        }
    }
    Ok(l)
}
