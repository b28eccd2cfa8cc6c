//! The initiator's login phase (RFC 7143 §6, §11.12-13, §12.1.3) as pure code: feed it
//! each Login Response, it says which Login Request to send next, or that the login is
//! complete (with every negotiated key), or why it failed.
//!
//! Security stage: `AuthMethod=None`, or `AuthMethod=CHAP` → `CHAP_A` (our list in our
//! order of preference) → `CHAP_N`/`CHAP_R` (plus `CHAP_I`/`CHAP_C` of our own for mutual
//! CHAP; the target's `CHAP_N`/`CHAP_R` are then checked in constant time). Operational
//! stage: conservative read-only offers (no immediate or unsolicited data; the probe never
//! writes), digests as asked.

use subtle::ConstantTimeEq as _;

use crate::engine::iscsi::chap::{decode_binary, parse_identifier, to_hex, Algorithm};
use crate::engine::iscsi::negotiate::{encode_text, parse_text, Pairs};
use crate::engine::iscsi::pdu::{flags, Bhs, Opcode, Pdu};
use crate::model::Secret;

use super::{InitiatorError, Result};

/// What this side declares it can receive (MaxRecvDataSegmentLength).
pub const INITIATOR_MAX_RECV: u32 = 262_144;

/// CHAP credentials of the initiator, and the target's for mutual CHAP.
#[derive(Debug, Clone)]
pub struct ChapConfig {
    pub user: String,
    pub secret: Secret,
    /// The target's name and secret: we challenge the target and check its answer.
    pub peer: Option<(String, Secret)>,
    /// Algorithms offered, in order of preference.
    pub algorithms: Vec<Algorithm>,
}

/// One login's parameters.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    pub initiator: String,
    /// `None`: a discovery session.
    pub target: Option<String>,
    pub isid: [u8; 6],
    pub chap: Option<ChapConfig>,
    pub header_digest: bool,
    pub data_digest: bool,
}

/// A completed login.
#[derive(Debug, Clone, Default)]
pub struct LoginOutcome {
    pub tsih: u16,
    /// StatSN of the final response, CmdSN window granted.
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    /// Every key the target sent (CHAP keys excepted), in order, the last value winning.
    pub negotiated: Pairs,
    /// CHAP algorithm used, if any.
    pub chap_algorithm: Option<Algorithm>,
    /// `Some(true)`: mutual CHAP asked for and the target's answer checked.
    pub mutual_chap_verified: Option<bool>,
    pub header_digest: bool,
    pub data_digest: bool,
}

impl LoginOutcome {
    pub fn key(&self, k: &str) -> Option<&str> {
        self.negotiated
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

/// The initiator's next move.
#[derive(Debug)]
pub enum Next {
    Send(Pdu),
    Done(Box<LoginOutcome>),
}

#[derive(Debug)]
enum Stage {
    /// AuthMethod sent.
    SecurityStart,
    /// CHAP_A sent.
    ChapAlgorithms,
    /// CHAP_N/CHAP_R sent; for mutual CHAP, our (id, challenge).
    ChapResponded {
        alg: Algorithm,
        mine: Option<(u8, Vec<u8>)>,
    },
    /// Security done, waiting for the target to transit.
    SecurityDone,
    Operational,
}

/// The login state machine of one connection.
pub struct InitiatorLogin {
    cfg: LoginConfig,
    stage: Stage,
    itt: u32,
    cmd_sn: u32,
    exp_stat_sn: u32,
    outcome: LoginOutcome,
    partial: Vec<u8>,
    steps: u32,
}

/// The name of a login status (RFC 7143 §11.13.5).
pub fn status_name(status: u16) -> &'static str {
    match status {
        0x0000 => "success",
        0x0101 => "target moved temporarily",
        0x0102 => "target moved permanently",
        0x0200 => "initiator error",
        0x0201 => "authentication failure",
        0x0202 => "authorization failure (forbidden)",
        0x0203 => "target not found",
        0x0204 => "target removed",
        0x0205 => "unsupported version",
        0x0206 => "too many connections",
        0x0207 => "missing parameter",
        0x0208 => "cannot include in session",
        0x0209 => "session type not supported",
        0x020a => "session does not exist",
        0x020b => "invalid request during login",
        0x0300 => "target error",
        0x0301 => "service unavailable",
        0x0302 => "out of resources",
        s if s >> 8 == 1 => "redirection",
        s if s >> 8 == 2 => "initiator error",
        s if s >> 8 == 3 => "target error",
        _ => "unknown status",
    }
}

const CSG_SECURITY: u8 = 0;
const CSG_OPERATIONAL: u8 = 1;
const FULL_FEATURE: u8 = 3;

impl InitiatorLogin {
    pub fn new(cfg: LoginConfig, itt: u32, cmd_sn: u32) -> InitiatorLogin {
        InitiatorLogin {
            cfg,
            stage: Stage::SecurityStart,
            itt,
            cmd_sn,
            exp_stat_sn: 0,
            outcome: LoginOutcome::default(),
            partial: Vec::new(),
            steps: 0,
        }
    }

    /// The first Login Request.
    pub fn start(&mut self) -> Pdu {
        let mut keys: Pairs = vec![
            ("InitiatorName".into(), self.cfg.initiator.clone()),
            (
                "SessionType".into(),
                if self.cfg.target.is_some() {
                    "Normal"
                } else {
                    "Discovery"
                }
                .into(),
            ),
        ];
        if let Some(t) = &self.cfg.target {
            keys.push(("TargetName".into(), t.clone()));
        }
        if self.cfg.chap.is_some() {
            keys.push(("AuthMethod".into(), "CHAP".into()));
            self.request(CSG_SECURITY, None, &keys)
        } else {
            keys.push(("AuthMethod".into(), "None".into()));
            self.request(CSG_SECURITY, Some(CSG_OPERATIONAL), &keys)
        }
    }

    fn request(&mut self, csg: u8, transit_to: Option<u8>, keys: &[(String, String)]) -> Pdu {
        let mut b = Bhs::new(Opcode::LoginRequest);
        b.0[0] |= 0x40; // immediate
        let f = match transit_to {
            Some(nsg) => flags::FINAL | (csg << 2) | nsg,
            None => csg << 2,
        };
        b.set_flags(f);
        b.set_byte2(0); // VersionMax
        b.set_byte3(0); // VersionMin
        b.set_isid(self.cfg.isid);
        b.set_tsih(0);
        b.set_itt(self.itt);
        b.0[20] = 0; // CID 0
        b.0[21] = 0;
        b.set_cmd_sn(self.cmd_sn);
        b.set_exp_stat_sn(self.exp_stat_sn);
        let data = encode_text(keys);
        b.set_data_segment_len(data.len());
        Pdu {
            bhs: b,
            ahs: Vec::new(),
            data,
        }
    }

    fn operational_keys(&self) -> Pairs {
        let d = |on: bool| if on { "CRC32C" } else { "None" }.to_string();
        let mut k: Pairs = vec![
            ("HeaderDigest".into(), d(self.cfg.header_digest)),
            ("DataDigest".into(), d(self.cfg.data_digest)),
            (
                "MaxRecvDataSegmentLength".into(),
                INITIATOR_MAX_RECV.to_string(),
            ),
            ("DefaultTime2Wait".into(), "0".into()),
            ("DefaultTime2Retain".into(), "0".into()),
        ];
        if self.cfg.target.is_some() {
            for (key, v) in [
                ("MaxConnections", "1"),
                ("InitialR2T", "Yes"),
                ("ImmediateData", "No"),
                ("MaxBurstLength", "262144"),
                ("FirstBurstLength", "65536"),
                ("MaxOutstandingR2T", "1"),
                ("DataPDUInOrder", "Yes"),
                ("DataSequenceInOrder", "Yes"),
                ("ErrorRecoveryLevel", "0"),
            ] {
                k.push((key.into(), v.into()));
            }
        }
        k
    }

    /// Handle one Login Response.
    pub fn on_response(&mut self, pdu: &Pdu) -> Result<Next> {
        let b = &pdu.bhs;
        self.steps += 1;
        if self.steps > 32 {
            return Err(InitiatorError::Protocol(
                "login did not complete in 32 exchanges".into(),
            ));
        }
        match b.opcode() {
            Opcode::LoginResponse => {}
            Opcode::Reject => {
                return Err(InitiatorError::Protocol(format!(
                    "target rejected the login request (reason 0x{:02x})",
                    b.byte2()
                )))
            }
            other => {
                return Err(InitiatorError::Protocol(format!(
                    "expected a Login Response, got {other:?}"
                )))
            }
        }
        let status = b.login_status();
        self.exp_stat_sn = b.stat_sn().wrapping_add(1);
        if status != 0 {
            let redirect = parse_text(&pdu.data).ok().and_then(|p| {
                p.into_iter()
                    .find(|(k, _)| k == "TargetAddress")
                    .map(|(_, v)| v)
            });
            return Err(InitiatorError::LoginFailed {
                status,
                name: status_name(status),
                redirect,
            });
        }
        let f = b.flags();
        let transit = f & flags::FINAL != 0;
        let cont = f & flags::CONTINUE != 0;
        let csg = (f >> 2) & 3;
        let nsg = f & 3;
        self.partial.extend_from_slice(&pdu.data);
        if cont {
            // The target has more text: ask for it with an empty request.
            return Ok(Next::Send(self.request(csg, None, &[])));
        }
        let pairs = parse_text(&std::mem::take(&mut self.partial))?;
        let get = |k: &str| {
            pairs
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        for (k, v) in &pairs {
            if !k.starts_with("CHAP_") {
                self.outcome.negotiated.retain(|(key, _)| key != k);
                self.outcome.negotiated.push((k.clone(), v.clone()));
            }
        }
        if transit && nsg == FULL_FEATURE {
            return self.finish(b);
        }
        match std::mem::replace(&mut self.stage, Stage::SecurityDone) {
            Stage::SecurityStart => {
                if let Some(chap) = &self.cfg.chap {
                    match get("AuthMethod").as_deref() {
                        Some("CHAP") => {}
                        other => {
                            return Err(InitiatorError::Protocol(format!(
                                "asked for CHAP, the target chose AuthMethod={}",
                                other.unwrap_or("(nothing)")
                            )))
                        }
                    }
                    let list = chap
                        .algorithms
                        .iter()
                        .map(|a| (*a as u8).to_string())
                        .collect::<Vec<_>>()
                        .join(",");
                    self.stage = Stage::ChapAlgorithms;
                    return Ok(Next::Send(self.request(
                        CSG_SECURITY,
                        None,
                        &[("CHAP_A".into(), list)],
                    )));
                }
                if transit && nsg == CSG_OPERATIONAL {
                    return Ok(self.operational());
                }
                // The target did not transit yet: ask again.
                self.stage = Stage::SecurityStart;
                Ok(Next::Send(self.request(
                    CSG_SECURITY,
                    Some(CSG_OPERATIONAL),
                    &[],
                )))
            }
            Stage::ChapAlgorithms => {
                let chap = self.cfg.chap.clone().expect("CHAP configured");
                let alg = get("CHAP_A")
                    .and_then(|a| Algorithm::from_number(&a))
                    .filter(|a| chap.algorithms.contains(a))
                    .ok_or_else(|| {
                        InitiatorError::Protocol(format!(
                            "target chose CHAP_A={} which we did not offer",
                            get("CHAP_A").unwrap_or_default()
                        ))
                    })?;
                let id = get("CHAP_I")
                    .and_then(|i| parse_identifier(&i))
                    .ok_or_else(|| InitiatorError::Protocol("missing or bad CHAP_I".into()))?;
                let challenge = get("CHAP_C")
                    .and_then(|c| decode_binary(&c))
                    .ok_or_else(|| InitiatorError::Protocol("missing or bad CHAP_C".into()))?;
                let r = alg.response(id, chap.secret.expose().as_bytes(), &challenge);
                let mut keys: Pairs = vec![
                    ("CHAP_N".into(), chap.user.clone()),
                    ("CHAP_R".into(), to_hex(&r)),
                ];
                let mine = if chap.peer.is_some() {
                    let mut c = vec![0u8; alg.digest_len().max(16) + 1];
                    super::random_bytes(&mut c);
                    let my_id = c.pop().expect("one byte more than the challenge");
                    if bool::from(c.ct_eq(&challenge)) {
                        return Err(InitiatorError::Protocol(
                            "random challenge equals the target's".into(),
                        ));
                    }
                    keys.push(("CHAP_I".into(), my_id.to_string()));
                    keys.push(("CHAP_C".into(), to_hex(&c)));
                    Some((my_id, c))
                } else {
                    None
                };
                self.outcome.chap_algorithm = Some(alg);
                self.stage = Stage::ChapResponded { alg, mine };
                Ok(Next::Send(self.request(
                    CSG_SECURITY,
                    Some(CSG_OPERATIONAL),
                    &keys,
                )))
            }
            Stage::ChapResponded { alg, mine } => {
                self.check_mutual(alg, mine.as_ref(), &get)?;
                if transit && nsg == CSG_OPERATIONAL {
                    return Ok(self.operational());
                }
                self.stage = Stage::SecurityDone;
                Ok(Next::Send(self.request(
                    CSG_SECURITY,
                    Some(CSG_OPERATIONAL),
                    &[],
                )))
            }
            Stage::SecurityDone => {
                if transit && nsg == CSG_OPERATIONAL {
                    return Ok(self.operational());
                }
                Ok(Next::Send(self.request(
                    CSG_SECURITY,
                    Some(CSG_OPERATIONAL),
                    &[],
                )))
            }
            Stage::Operational => {
                // The target has not transited: answer keys it offered that we did not
                // send (accepting its value), and ask again.
                self.stage = Stage::Operational;
                let ours = self.operational_keys();
                let answers: Pairs = pairs
                    .iter()
                    .filter(|(k, _)| {
                        !ours.iter().any(|(o, _)| o == k)
                            && !matches!(
                                k.as_str(),
                                "TargetAlias" | "TargetPortalGroupTag" | "TargetAddress"
                            )
                    })
                    .cloned()
                    .collect();
                Ok(Next::Send(self.request(
                    CSG_OPERATIONAL,
                    Some(FULL_FEATURE),
                    &answers,
                )))
            }
        }
    }

    fn check_mutual(
        &mut self,
        alg: Algorithm,
        mine: Option<&(u8, Vec<u8>)>,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<()> {
        let Some((my_id, my_c)) = mine else {
            return Ok(());
        };
        let (peer_user, peer_secret) = self
            .cfg
            .chap
            .as_ref()
            .and_then(|c| c.peer.clone())
            .expect("mutual CHAP configured");
        let name = get("CHAP_N").ok_or_else(|| {
            InitiatorError::MutualChap("the target did not answer our challenge".into())
        })?;
        let r = get("CHAP_R")
            .and_then(|r| decode_binary(&r))
            .ok_or_else(|| InitiatorError::MutualChap("missing or bad CHAP_R".into()))?;
        let expected = alg.response(*my_id, peer_secret.expose().as_bytes(), my_c);
        let name_ok = bool::from(name.as_bytes().ct_eq(peer_user.as_bytes()));
        let resp_ok = bool::from(r.ct_eq(&expected));
        if !name_ok {
            return Err(InitiatorError::MutualChap(format!(
                "the target answered as {name:?}, expected {peer_user:?}"
            )));
        }
        if !resp_ok {
            return Err(InitiatorError::MutualChap(
                "the target's CHAP_R does not match our challenge (wrong target secret)".into(),
            ));
        }
        self.outcome.mutual_chap_verified = Some(true);
        Ok(())
    }

    fn operational(&mut self) -> Next {
        self.stage = Stage::Operational;
        let keys = self.operational_keys();
        Next::Send(self.request(CSG_OPERATIONAL, Some(FULL_FEATURE), &keys))
    }

    fn finish(&mut self, b: &Bhs) -> Result<Next> {
        if self.cfg.chap.as_ref().is_some_and(|c| c.peer.is_some())
            && self.outcome.mutual_chap_verified != Some(true)
        {
            return Err(InitiatorError::MutualChap(
                "the target ended the login without answering our challenge".into(),
            ));
        }
        let mut out = std::mem::take(&mut self.outcome);
        out.tsih = b.tsih();
        out.stat_sn = b.stat_sn();
        out.exp_cmd_sn = b.exp_cmd_sn();
        out.max_cmd_sn = b.max_cmd_sn();
        out.header_digest = out.key("HeaderDigest") == Some("CRC32C");
        out.data_digest = out.key("DataDigest") == Some("CRC32C");
        Ok(Next::Done(Box::new(out)))
    }
}

#[cfg(test)]
mod tests {
    //! The initiator's login against the engine's target-side login state machine:
    //! both pure, no socket.
    use super::*;
    use crate::engine::iscsi::login::{Access, Grant, Login, LoginStatus, Step};
    use crate::model::{AuthMethod, ChapCredentials, Origin, PeerCredentials};

    struct Target {
        auth: Option<(ChapCredentials, AuthMethod)>,
    }

    impl Access for Target {
        fn normal(&self, target: &str, initiator: &str) -> std::result::Result<Grant, LoginStatus> {
            if target != "iqn.2026-11.test:t" {
                return Err(LoginStatus::NOT_FOUND);
            }
            if initiator == "iqn.2026-11.test:banned" {
                return Err(LoginStatus::AUTHORIZATION_FAILURE);
            }
            Ok(Grant {
                auth: self.auth.clone(),
                portal_group_tag: 7,
                alias: Some("disk".into()),
            })
        }
        fn discovery(&self, _: &str) -> Grant {
            Grant {
                auth: None,
                portal_group_tag: 7,
                alias: None,
            }
        }
    }

    fn creds(mutual: bool) -> ChapCredentials {
        ChapCredentials {
            name: "c".into(),
            user: "alice".into(),
            secret: Secret::new("alicesecret12"),
            peer: mutual.then(|| PeerCredentials {
                user: "the-target".into(),
                secret: Secret::new("targetsecret12"),
            }),
            origin: Origin::default(),
        }
    }

    fn cfg(target: Option<&str>, chap: Option<ChapConfig>) -> LoginConfig {
        LoginConfig {
            initiator: "iqn.2026-11.test:i".into(),
            target: target.map(str::to_string),
            isid: [0x80, 1, 2, 3, 4, 5],
            chap,
            header_digest: true,
            data_digest: false,
        }
    }

    fn chap(secret: &str, peer: Option<&str>, algs: Vec<Algorithm>) -> Option<ChapConfig> {
        Some(ChapConfig {
            user: "alice".into(),
            secret: Secret::new(secret),
            peer: peer.map(|p| ("the-target".to_string(), Secret::new(p))),
            algorithms: algs,
        })
    }

    /// Run the initiator against the engine's login until one of them is done.
    fn drive(cfg: LoginConfig, target: &Target) -> Result<LoginOutcome> {
        let mut i = InitiatorLogin::new(cfg, 1, 1);
        let mut t = Login::new();
        let mut req = i.start();
        for _ in 0..20 {
            assert_eq!(req.bhs.opcode(), Opcode::LoginRequest);
            assert!(req.bhs.immediate());
            let (mut bhs, data) = match t.on_request(&req, target, &|_| None) {
                Step::Reply(b, d) => (b, d),
                Step::Complete(done) => (done.response, done.response_data),
                Step::Fail(b, _) => (b, Vec::new()),
            };
            bhs.set_data_segment_len(data.len());
            let resp = Pdu {
                bhs,
                ahs: Vec::new(),
                data,
            };
            match i.on_response(&resp)? {
                Next::Send(p) => req = p,
                Next::Done(o) => return Ok(*o),
            }
        }
        panic!("login did not finish");
    }

    #[test]
    fn no_authentication_and_every_negotiated_key() {
        let o = drive(
            cfg(Some("iqn.2026-11.test:t"), None),
            &Target { auth: None },
        )
        .unwrap();
        assert_eq!(o.key("AuthMethod"), Some("None"));
        assert_eq!(o.key("TargetPortalGroupTag"), Some("7"));
        assert_eq!(o.key("TargetAlias"), Some("disk"));
        assert_eq!(o.key("HeaderDigest"), Some("CRC32C"));
        assert_eq!(o.key("DataDigest"), Some("None"));
        assert_eq!(o.key("InitialR2T"), Some("Yes"));
        assert!(o.key("MaxRecvDataSegmentLength").is_some());
        assert!(o.header_digest && !o.data_digest);
        assert_eq!(o.chap_algorithm, None);
        assert_eq!(o.mutual_chap_verified, None);
        assert_eq!(
            o.exp_cmd_sn, 1,
            "the first command carries the login's CmdSN"
        );
    }

    #[test]
    fn discovery_session() {
        let o = drive(cfg(None, None), &Target { auth: None }).unwrap();
        assert_eq!(o.key("HeaderDigest"), Some("CRC32C"));
        assert_eq!(
            o.key("InitialR2T"),
            None,
            "session keys are not offered in discovery"
        );
    }

    #[test]
    fn chap_in_our_order_of_preference() {
        let t = Target {
            auth: Some((creds(false), AuthMethod::Chap)),
        };
        for alg in [Algorithm::Md5, Algorithm::Sha1, Algorithm::Sha256] {
            let c = chap("alicesecret12", None, vec![alg, Algorithm::Md5]);
            let o = drive(cfg(Some("iqn.2026-11.test:t"), c), &t).unwrap();
            assert_eq!(o.chap_algorithm, Some(alg));
            assert_eq!(o.mutual_chap_verified, None);
            assert_eq!(o.key("AuthMethod"), Some("CHAP"));
            assert!(o.negotiated.iter().all(|(k, _)| !k.starts_with("CHAP_")));
        }
    }

    #[test]
    fn wrong_secret_is_an_authentication_failure() {
        let t = Target {
            auth: Some((creds(false), AuthMethod::Chap)),
        };
        let c = chap("not-the-secret", None, vec![Algorithm::Sha256]);
        match drive(cfg(Some("iqn.2026-11.test:t"), c), &t) {
            Err(InitiatorError::LoginFailed { status, name, .. }) => {
                assert_eq!((status, name), (0x0201, "authentication failure"));
            }
            other => panic!("{other:?}"),
        }
        // No credentials for a CHAP target: refused too.
        assert!(matches!(
            drive(cfg(Some("iqn.2026-11.test:t"), None), &t),
            Err(InitiatorError::LoginFailed { status: 0x0201, .. })
        ));
    }

    #[test]
    fn mutual_chap_checks_the_targets_answer() {
        let t = Target {
            auth: Some((creds(true), AuthMethod::MutualChap)),
        };
        let c = chap(
            "alicesecret12",
            Some("targetsecret12"),
            vec![Algorithm::Sha1],
        );
        let o = drive(cfg(Some("iqn.2026-11.test:t"), c), &t).unwrap();
        assert_eq!(o.mutual_chap_verified, Some(true));
        let c = chap(
            "alicesecret12",
            Some("wrong-target-secret"),
            vec![Algorithm::Sha1],
        );
        match drive(cfg(Some("iqn.2026-11.test:t"), c), &t) {
            Err(InitiatorError::MutualChap(m)) => assert!(m.contains("wrong target secret"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mutual_chap_without_an_answer_fails() {
        // A target that never answers our challenge: its response transits without
        // CHAP_N/CHAP_R.
        let c = chap("s", Some("p"), vec![Algorithm::Md5]);
        let mut i = InitiatorLogin::new(cfg(Some("iqn.2026-11.test:t"), c), 1, 1);
        let _ = i.start();
        let resp = |flags_: u8, text: &str| {
            let mut b = Bhs::new(Opcode::LoginResponse);
            b.set_flags(flags_);
            let data = text.replace(' ', "\0").into_bytes();
            b.set_data_segment_len(data.len());
            Pdu {
                bhs: b,
                ahs: Vec::new(),
                data,
            }
        };
        assert!(matches!(
            i.on_response(&resp(0, "AuthMethod=CHAP ")).unwrap(),
            Next::Send(_)
        ));
        let Next::Send(p) = i
            .on_response(&resp(
                0,
                "CHAP_A=5 CHAP_I=1 CHAP_C=0x00112233445566778899aabbccddeeff ",
            ))
            .unwrap()
        else {
            panic!()
        };
        let text = String::from_utf8(p.data).unwrap();
        assert!(
            text.contains("CHAP_N=alice") && text.contains("CHAP_C=0x"),
            "{text}"
        );
        assert!(matches!(
            i.on_response(&resp(0x81, "")),
            Err(InitiatorError::MutualChap(_))
        ));
    }

    #[test]
    fn target_not_found_and_forbidden_by_name() {
        let t = Target { auth: None };
        let status = |c: LoginConfig| match drive(c, &t) {
            Err(InitiatorError::LoginFailed { status, name, .. }) => (status, name),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            status(cfg(Some("iqn.2026-11.test:nope"), None)),
            (0x0203, "target not found")
        );
        let mut c = cfg(Some("iqn.2026-11.test:t"), None);
        c.initiator = "iqn.2026-11.test:banned".into();
        assert_eq!(status(c), (0x0202, "authorization failure (forbidden)"));
    }

    #[test]
    fn status_names_by_class() {
        assert_eq!(status_name(0x0101), "target moved temporarily");
        assert_eq!(status_name(0x0206), "too many connections");
        assert_eq!(status_name(0x0301), "service unavailable");
        assert_eq!(status_name(0x02ff), "initiator error");
        assert_eq!(status_name(0x03ff), "target error");
    }

    #[test]
    fn redirect_carries_the_address() {
        let mut i = InitiatorLogin::new(cfg(Some("iqn.2026-11.test:t"), None), 1, 1);
        let _ = i.start();
        let mut b = Bhs::new(Opcode::LoginResponse);
        b.set_login_status(0x0101);
        let data = b"TargetAddress=10.0.0.2:3260,1\0".to_vec();
        b.set_data_segment_len(data.len());
        match i.on_response(&Pdu {
            bhs: b,
            ahs: Vec::new(),
            data,
        }) {
            Err(InitiatorError::LoginFailed {
                status: 0x0101,
                redirect: Some(r),
                ..
            }) => assert_eq!(r, "10.0.0.2:3260,1"),
            other => panic!("{other:?}"),
        }
    }
}
