//! The login phase of one connection, target side (RFC 7143 §6, §11.12-11.13).
//!
//! Owns: stage transitions (security → operational → full feature), version checks,
//! the first request's identity (InitiatorName, TargetName, SessionType, ISID, TSIH,
//! CID), authorization through [`Access`], the security stage (AuthMethod, CHAP), the
//! operational stage (through [`Negotiation`]), continued text (C bit), and the status
//! class/detail of a failed login.
//!
//! It does no I/O: [`Login::on_request`] takes a Login Request PDU and returns what to
//! send, so it can be fuzzed and unit-tested. The connection binds the session (TSIH)
//! when [`Step::Complete`] comes back, and sends the final response.

use crate::engine::iscsi::chap::ChapServer;
use crate::engine::iscsi::negotiate::{self, Negotiation, Pairs, Phase, SessionParams};
use crate::engine::iscsi::pdu::{flags, Bhs, Opcode, Pdu};
use crate::model::{AuthMethod, ChapCredentials};

/// Login status (class << 8 | detail), RFC 7143 §11.13.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginStatus(pub u16);

impl LoginStatus {
    pub const SUCCESS: LoginStatus = LoginStatus(0x0000);
    pub const INITIATOR_ERROR: LoginStatus = LoginStatus(0x0200);
    pub const AUTHENTICATION_FAILURE: LoginStatus = LoginStatus(0x0201);
    pub const AUTHORIZATION_FAILURE: LoginStatus = LoginStatus(0x0202);
    pub const NOT_FOUND: LoginStatus = LoginStatus(0x0203);
    pub const UNSUPPORTED_VERSION: LoginStatus = LoginStatus(0x0205);
    pub const TOO_MANY_CONNECTIONS: LoginStatus = LoginStatus(0x0206);
    pub const MISSING_PARAMETER: LoginStatus = LoginStatus(0x0207);
    pub const CANT_INCLUDE_IN_SESSION: LoginStatus = LoginStatus(0x0208);
    pub const SESSION_TYPE_NOT_SUPPORTED: LoginStatus = LoginStatus(0x0209);
    pub const SESSION_DOES_NOT_EXIST: LoginStatus = LoginStatus(0x020a);
    pub const INVALID_DURING_LOGIN: LoginStatus = LoginStatus(0x020b);
    pub const TARGET_ERROR: LoginStatus = LoginStatus(0x0300);
    pub const SERVICE_UNAVAILABLE: LoginStatus = LoginStatus(0x0301);
}

/// What the login may grant: decided by the engine's configuration for this portal
/// and the connecting address.
#[derive(Debug, Clone)]
pub struct Grant {
    /// CHAP credentials and method when the group requires authentication.
    pub auth: Option<(ChapCredentials, AuthMethod)>,
    pub portal_group_tag: u16,
    pub alias: Option<String>,
}

/// The configuration as the login sees it.
pub trait Access {
    /// May `initiator` log in to `target` here? `Err` is the failure status
    /// (not found, authorization failure).
    fn normal(&self, target: &str, initiator: &str) -> Result<Grant, LoginStatus>;
    /// Discovery through this portal.
    fn discovery(&self, initiator: &str) -> Grant;
}

/// Identity and results of a completed login.
#[derive(Debug, Clone)]
pub struct LoginDone {
    pub initiator: String,
    pub initiator_alias: Option<String>,
    /// `None` for a discovery session.
    pub target: Option<String>,
    pub isid: [u8; 6],
    /// TSIH the initiator sent: 0 for a new session, else the session to join.
    pub tsih: u16,
    pub cid: u16,
    pub portal_group_tag: u16,
    pub negotiation: Negotiation,
    /// The initial CmdSN (the first command carries it).
    pub cmd_sn: u32,
    /// StatSN the final response carries.
    pub stat_sn: u32,
    /// The final Login Response, TSIH still to be filled in.
    pub response: Bhs,
    pub response_data: Vec<u8>,
}

/// What to do after a login request.
#[derive(Debug)]
pub enum Step {
    /// Send this response and wait for the next request.
    Reply(Bhs, Vec<u8>),
    /// Login succeeded: bind the session, set TSIH, send `done.response`.
    Complete(Box<LoginDone>),
    /// Send this failure response and close the connection. The reason is for the log.
    Fail(Bhs, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Security = 0,
    Operational = 1,
    FullFeature = 3,
}

/// The largest login text (all continued PDUs of one request) the engine accepts.
const MAX_LOGIN_TEXT: usize = 64 * 1024;
/// Window of commands the target grants (MaxCmdSN - ExpCmdSN + 1).
pub const CMD_WINDOW: u32 = 128;

/// Login state of one connection.
pub struct Login {
    first: Option<FirstRequest>,
    stage: Stage,
    grant: Option<Grant>,
    chap: Option<ChapServer>,
    auth_done: bool,
    auth_method_agreed: bool,
    negotiation: Negotiation,
    stat_sn: u32,
    partial: Vec<u8>,
    initiator_alias: Option<String>,
    sent_first_response: bool,
    /// The TargetName of the first request, even when the login is refused.
    named_target: Option<String>,
}

#[derive(Debug, Clone)]
struct FirstRequest {
    initiator: String,
    target: Option<String>,
    isid: [u8; 6],
    tsih: u16,
    cid: u16,
    cmd_sn: u32,
}

impl Default for Login {
    fn default() -> Self {
        Self::new()
    }
}

impl Login {
    /// The target the initiator named in its first request, once it has sent one
    /// (for counting login outcomes per target).
    pub fn target(&self) -> Option<&str> {
        self.named_target.as_deref()
    }

    pub fn new() -> Login {
        Login {
            first: None,
            stage: Stage::Security,
            grant: None,
            chap: None,
            auth_done: false,
            auth_method_agreed: false,
            negotiation: Negotiation::new(SessionParams::default()),
            stat_sn: 0,
            partial: Vec::new(),
            initiator_alias: None,
            sent_first_response: false,
            named_target: None,
        }
    }

    /// Handle one PDU received during login. `session` gives the fixed session
    /// parameters when the request joins an existing session (TSIH ≠ 0).
    pub fn on_request(
        &mut self,
        pdu: &Pdu,
        access: &dyn Access,
        session: &dyn Fn(u16) -> Option<SessionParams>,
    ) -> Step {
        let bhs = &pdu.bhs;
        if bhs.opcode() != Opcode::LoginRequest {
            return self.fail(
                bhs,
                LoginStatus::INVALID_DURING_LOGIN,
                "not a login request during login".into(),
            );
        }
        // Versions: the engine speaks version 0 (RFC 7143) only.
        let (vmax, vmin) = (bhs.byte2(), bhs.byte3());
        if vmin > 0 || vmax < vmin {
            return self.fail(
                bhs,
                LoginStatus::UNSUPPORTED_VERSION,
                format!("version range {vmin}..{vmax} does not include 0"),
            );
        }
        let transit = bhs.flags() & flags::FINAL != 0;
        let cont = bhs.flags() & flags::CONTINUE != 0;
        let csg = (bhs.flags() >> 2) & 3;
        let nsg = bhs.flags() & 3;
        if transit && cont {
            return self.fail(
                bhs,
                LoginStatus::INITIATOR_ERROR,
                "T and C bits both set".into(),
            );
        }
        if csg == 2 || (transit && (nsg == 2 || nsg <= csg)) {
            return self.fail(
                bhs,
                LoginStatus::INITIATOR_ERROR,
                format!("bad stages CSG={csg} NSG={nsg}"),
            );
        }
        if self.first.is_none() {
            self.stat_sn = bhs.exp_stat_sn();
            if csg == 1 {
                self.stage = Stage::Operational;
            }
        } else {
            let f = self.first.as_ref().expect("checked");
            if bhs.isid() != f.isid || bhs.tsih() != f.tsih || bhs.cid() != f.cid {
                return self.fail(
                    bhs,
                    LoginStatus::INITIATOR_ERROR,
                    "ISID, TSIH or CID changed during login".into(),
                );
            }
        }
        if csg != self.stage as u8 {
            return self.fail(
                bhs,
                LoginStatus::INITIATOR_ERROR,
                format!(
                    "request for stage {csg} while in stage {}",
                    self.stage as u8
                ),
            );
        }

        // Continued text: gather until the last PDU of the request.
        if self.partial.len() + pdu.data.len() > MAX_LOGIN_TEXT {
            return self.fail(
                bhs,
                LoginStatus::INITIATOR_ERROR,
                "login text too long".into(),
            );
        }
        self.partial.extend_from_slice(&pdu.data);
        if cont {
            let resp = self.response(bhs, false, 0);
            return Step::Reply(resp, Vec::new());
        }
        let text = std::mem::take(&mut self.partial);
        let pairs = match negotiate::parse_text(&text) {
            Ok(p) => p,
            Err(e) => return self.fail(bhs, LoginStatus::INITIATOR_ERROR, e.to_string()),
        };

        if self.first.is_none() {
            if let Err(step) = self.identify(bhs, &pairs, access, session) {
                return step;
            }
        }
        let mut answer: Pairs = Vec::new();
        let mut rest: Pairs = Vec::new();
        for (k, v) in pairs {
            match k.as_str() {
                "InitiatorName" | "TargetName" | "SessionType" => {}
                "InitiatorAlias" => self.initiator_alias = Some(v),
                _ => rest.push((k, v)),
            }
        }
        if !self.sent_first_response {
            self.sent_first_response = true;
            let grant = self.grant.as_ref().expect("identified");
            if self.first.as_ref().is_some_and(|f| f.target.is_some()) {
                answer.push((
                    "TargetPortalGroupTag".into(),
                    grant.portal_group_tag.to_string(),
                ));
                if let Some(alias) = &grant.alias {
                    answer.push(("TargetAlias".into(), alias.clone()));
                }
            }
        }

        let (security, operational): (Pairs, Pairs) = rest
            .into_iter()
            .partition(|(k, _)| k == "AuthMethod" || k.starts_with("CHAP_"));

        if self.stage == Stage::Security {
            match self.security(&security) {
                Ok(mut a) => answer.append(&mut a),
                Err(reason) => return self.fail(bhs, LoginStatus::AUTHENTICATION_FAILURE, reason),
            }
        } else if !security.is_empty() {
            return self.fail(
                bhs,
                LoginStatus::INITIATOR_ERROR,
                "security keys outside the security stage".into(),
            );
        }
        if self.stage == Stage::Operational && !self.auth_done && self.auth_required() {
            // The initiator skipped the security stage the target requires.
            return self.fail(
                bhs,
                LoginStatus::AUTHENTICATION_FAILURE,
                "authentication required but the initiator skipped the security stage".into(),
            );
        }
        let phase = match &self.first {
            Some(f) if f.target.is_none() => Phase::DiscoveryLogin,
            Some(f) if f.tsih != 0 => Phase::SecondaryLogin,
            _ => Phase::LeadingLogin,
        };
        if !operational.is_empty() || self.stage == Stage::Operational {
            match self.negotiation.answer(&operational, phase) {
                Ok(mut a) => answer.append(&mut a),
                Err(e) => return self.fail(bhs, LoginStatus::INITIATOR_ERROR, e.to_string()),
            }
        }

        // Transit when the initiator asks and the target is ready.
        let ready = match self.stage {
            // Without authentication to do, a security stage that never named an
            // AuthMethod may still transit (some initiators omit AuthMethod=None).
            Stage::Security => self.auth_done || !self.auth_required(),
            _ => true,
        };
        let data = negotiate::encode_text(&answer);
        if transit && ready {
            let next = if nsg == 3 {
                Stage::FullFeature
            } else {
                Stage::Operational
            };
            if self.stage == Stage::Security && !self.auth_done && self.auth_required() {
                return self.fail(
                    bhs,
                    LoginStatus::AUTHENTICATION_FAILURE,
                    "transit before CHAP completed".into(),
                );
            }
            if next == Stage::FullFeature {
                let first = self.first.clone().expect("identified");
                let stat_sn = self.stat_sn;
                let mut resp = self.response(bhs, true, nsg);
                resp.set_stat_sn(stat_sn);
                return Step::Complete(Box::new(LoginDone {
                    initiator: first.initiator,
                    initiator_alias: self.initiator_alias.clone(),
                    target: first.target,
                    isid: first.isid,
                    tsih: first.tsih,
                    cid: first.cid,
                    portal_group_tag: self.grant.as_ref().map_or(1, |g| g.portal_group_tag),
                    negotiation: self.negotiation.clone(),
                    cmd_sn: first.cmd_sn,
                    stat_sn,
                    response: resp,
                    response_data: data,
                }));
            }
            let resp = self.response(bhs, true, nsg);
            self.stage = next;
            return Step::Reply(resp, data);
        }
        let resp = self.response(bhs, false, 0);
        Step::Reply(resp, data)
    }

    fn auth_required(&self) -> bool {
        self.grant.as_ref().is_some_and(|g| g.auth.is_some())
    }

    /// Read the first request's identity and decide whether this login may go on.
    fn identify(
        &mut self,
        bhs: &Bhs,
        pairs: &Pairs,
        access: &dyn Access,
        session: &dyn Fn(u16) -> Option<SessionParams>,
    ) -> Result<(), Step> {
        let get = |k: &str| pairs.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
        let Some(initiator) = get("InitiatorName") else {
            return Err(self.fail(
                bhs,
                LoginStatus::MISSING_PARAMETER,
                "no InitiatorName".into(),
            ));
        };
        let session_type = get("SessionType").unwrap_or_else(|| "Normal".into());
        let (target, grant) = match session_type.as_str() {
            "Discovery" => (None, access.discovery(&initiator)),
            "Normal" => {
                let Some(target) = get("TargetName") else {
                    return Err(self.fail(
                        bhs,
                        LoginStatus::MISSING_PARAMETER,
                        "no TargetName".into(),
                    ));
                };
                self.named_target = Some(target.clone());
                match access.normal(&target, &initiator) {
                    Ok(g) => (Some(target), g),
                    Err(status) => {
                        let why = if status == LoginStatus::NOT_FOUND {
                            format!("no target {target} on this portal")
                        } else {
                            format!("{initiator} may not log in to {target} from here")
                        };
                        return Err(self.fail(bhs, status, why));
                    }
                }
            }
            other => {
                return Err(self.fail(
                    bhs,
                    LoginStatus::SESSION_TYPE_NOT_SUPPORTED,
                    format!("SessionType={other}"),
                ))
            }
        };
        if bhs.tsih() != 0 {
            match session(bhs.tsih()) {
                Some(params) if target.is_some() => self.negotiation = Negotiation::new(params),
                Some(_) => {
                    return Err(self.fail(
                        bhs,
                        LoginStatus::CANT_INCLUDE_IN_SESSION,
                        "discovery sessions have one connection".into(),
                    ))
                }
                None => {
                    return Err(self.fail(
                        bhs,
                        LoginStatus::SESSION_DOES_NOT_EXIST,
                        format!("no session with TSIH {}", bhs.tsih()),
                    ))
                }
            }
        }
        if let Some((creds, method)) = &grant.auth {
            self.chap = Some(ChapServer::new(creds.clone(), *method));
        }
        self.grant = Some(grant);
        self.first = Some(FirstRequest {
            initiator,
            target,
            isid: bhs.isid(),
            tsih: bhs.tsih(),
            cid: bhs.cid(),
            cmd_sn: bhs.cmd_sn(),
        });
        Ok(())
    }

    /// The security stage: AuthMethod, then CHAP.
    fn security(&mut self, keys: &Pairs) -> Result<Pairs, String> {
        let mut out = Vec::new();
        let get = |k: &str| keys.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
        if let Some(list) = get("AuthMethod") {
            let offered: Vec<&str> = list.split(',').collect();
            let want = if self.auth_required() { "CHAP" } else { "None" };
            if offered.contains(&want) {
                out.push(("AuthMethod".into(), want.into()));
                self.auth_method_agreed = true;
                if want == "None" {
                    self.auth_done = true;
                }
            } else {
                return Err(format!(
                    "initiator offered AuthMethod={list}, the target requires {want}"
                ));
            }
        }
        if let Some(chap) = self.chap.as_mut() {
            if !self.auth_method_agreed {
                if keys.is_empty() {
                    return Ok(out);
                }
                return Err("CHAP keys before AuthMethod".into());
            }
            let lookup = |k: &str| get(k);
            let mut a = chap.step(&lookup).map_err(|e| e.to_string())?;
            out.append(&mut a);
            if chap.done() {
                self.auth_done = true;
            }
        }
        Ok(out)
    }

    fn response(&mut self, req: &Bhs, transit: bool, nsg: u8) -> Bhs {
        let mut r = Bhs::new(Opcode::LoginResponse);
        let csg = self.stage as u8 & 3;
        r.set_flags(if transit {
            flags::FINAL | (csg << 2) | nsg
        } else {
            csg << 2
        });
        r.set_byte2(0); // version-max
        r.set_byte3(0); // version-active
        r.set_isid(req.isid());
        r.set_tsih(req.tsih());
        r.set_itt(req.itt());
        r.set_stat_sn(self.stat_sn);
        self.stat_sn = self.stat_sn.wrapping_add(1);
        r.set_exp_cmd_sn(req.cmd_sn());
        r.set_max_cmd_sn(req.cmd_sn().wrapping_add(CMD_WINDOW - 1));
        r
    }

    fn fail(&mut self, req: &Bhs, status: LoginStatus, reason: String) -> Step {
        let mut r = self.response(req, false, 0);
        r.set_flags(0);
        // Status-Class and Status-Detail: bytes 36 and 37.
        r.set_login_status(status.0);
        Step::Fail(r, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Origin, Secret};

    struct Open;
    impl Access for Open {
        fn normal(&self, target: &str, _: &str) -> Result<Grant, LoginStatus> {
            if target == "iqn.2026-11.test:t" {
                Ok(Grant {
                    auth: None,
                    portal_group_tag: 1,
                    alias: None,
                })
            } else {
                Err(LoginStatus::NOT_FOUND)
            }
        }
        fn discovery(&self, _: &str) -> Grant {
            Grant {
                auth: None,
                portal_group_tag: 1,
                alias: None,
            }
        }
    }

    struct Chap;
    impl Access for Chap {
        fn normal(&self, _: &str, _: &str) -> Result<Grant, LoginStatus> {
            Ok(Grant {
                auth: Some((
                    ChapCredentials {
                        name: "c".into(),
                        user: "u".into(),
                        secret: Secret::new("abcdefghijkl"),
                        peer: None,
                        origin: Origin::default(),
                    },
                    AuthMethod::Chap,
                )),
                portal_group_tag: 1,
                alias: None,
            })
        }
        fn discovery(&self, _: &str) -> Grant {
            self.normal("", "").unwrap()
        }
    }

    fn req(flags_: u8, text: &str) -> Pdu {
        let mut b = Bhs::new(Opcode::LoginRequest);
        b.0[0] |= 0x40;
        b.set_flags(flags_);
        b.set_isid([0x80, 0, 0, 0, 0, 1]);
        b.set_itt(1);
        b.set_cmd_sn(10);
        let data = text.replace(' ', "\0").into_bytes();
        Pdu {
            bhs: b,
            ahs: Vec::new(),
            data,
        }
    }

    fn no_session(_: u16) -> Option<SessionParams> {
        None
    }

    #[test]
    fn straight_to_full_feature_without_auth() {
        let mut l = Login::new();
        let step = l.on_request(
            &req(
                0x80 | 0x03, // T, CSG=0, NSG=3
                "InitiatorName=iqn.x:i TargetName=iqn.2026-11.test:t AuthMethod=None \0",
            ),
            &Open,
            &no_session,
        );
        match step {
            Step::Complete(done) => {
                assert_eq!(done.target.as_deref(), Some("iqn.2026-11.test:t"));
                assert_eq!(done.response.flags() & 0x83, 0x83);
                assert_eq!(done.cmd_sn, 10);
                let text = String::from_utf8(done.response_data).unwrap();
                assert!(text.contains("AuthMethod=None"), "{text}");
                assert!(text.contains("TargetPortalGroupTag=1"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_target_and_missing_name_fail_with_their_status() {
        let status = |s: Step| match s {
            Step::Fail(b, _) => u16::from(b.0[36]) << 8 | u16::from(b.0[37]),
            other => panic!("{other:?}"),
        };
        let mut l = Login::new();
        let s = l.on_request(
            &req(0x87, "InitiatorName=iqn.x:i TargetName=iqn.nope:x \0"),
            &Open,
            &no_session,
        );
        assert_eq!(status(s), 0x0203);
        let mut l = Login::new();
        let s = l.on_request(
            &req(0x87, "TargetName=iqn.2026-11.test:t \0"),
            &Open,
            &no_session,
        );
        assert_eq!(status(s), 0x0207);
        let mut l = Login::new();
        let mut p = req(0x87, "InitiatorName=iqn.x:i \0");
        p.bhs.set_byte3(1);
        assert_eq!(status(l.on_request(&p, &Open, &no_session)), 0x0205);
    }

    #[test]
    fn skipping_required_chap_is_an_authentication_failure() {
        let mut l = Login::new();
        let s = l.on_request(
            &req(
                0x80 | 0x04 | 0x03,
                "InitiatorName=iqn.x:i TargetName=iqn.2026-11.test:t \0",
            ),
            &Chap,
            &no_session,
        );
        match s {
            Step::Fail(b, _) => assert_eq!((b.0[36], b.0[37]), (2, 1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chap_challenge_then_transit_only_after_response() {
        let mut l = Login::new();
        let s = l.on_request(
            &req(
                0,
                "InitiatorName=iqn.x:i TargetName=iqn.2026-11.test:t AuthMethod=CHAP,None \0",
            ),
            &Chap,
            &no_session,
        );
        let Step::Reply(b, d) = s else { panic!() };
        assert_eq!(b.flags() & 0x80, 0);
        assert!(String::from_utf8(d).unwrap().contains("AuthMethod=CHAP"));
        let s = l.on_request(&req(0, "CHAP_A=5 \0"), &Chap, &no_session);
        let Step::Reply(_, d) = s else { panic!() };
        assert!(String::from_utf8(d).unwrap().contains("CHAP_C=0x"));
        // Asking to transit with a wrong response fails the login.
        let s = l.on_request(
            &req(
                0x81,
                "CHAP_N=u CHAP_R=0x00112233445566778899aabbccddeeff \0",
            ),
            &Chap,
            &no_session,
        );
        assert!(matches!(s, Step::Fail(..)));
    }
}
