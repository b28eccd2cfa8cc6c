//! Text keys and operational parameter negotiation (RFC 7143 §6, §13).
//!
//! Owns: the `key=value\0` text format, the target's offers, the result functions of
//! every key (list, Boolean AND/OR, numerical min/max, declarative), the answers for
//! unknown (`NotUnderstood`), malformed (`Reject`) and out-of-place (`Irrelevant`) keys,
//! and the negotiated [`SessionParams`] / [`ConnParams`].
//! Does not: authenticate (see `chap`) or decide login stages (see `login`).

use std::fmt::Write as _;

/// Pairs in the order they came. Duplicate detection is the caller's (it depends on
/// whether the PDU continues a text sequence).
pub type Pairs = Vec<(String, String)>;

/// Why a text segment was refused as a whole (a protocol error, not a key answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("text segment is not key=value pairs: {0}")]
    Malformed(String),
    #[error("key {0} sent twice in one negotiation")]
    Duplicate(String),
}

/// Parse a text data segment. Trailing padding NULs are tolerated.
pub fn parse_text(data: &[u8]) -> Result<Pairs, TextError> {
    let mut out = Vec::new();
    for item in data.split(|&b| b == 0) {
        if item.is_empty() {
            continue;
        }
        let s = std::str::from_utf8(item)
            .map_err(|_| TextError::Malformed("key or value is not UTF-8".into()))?;
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| TextError::Malformed(format!("no '=' in {:?}", truncate(s))))?;
        if k.is_empty() || k.len() > 63 || !k.bytes().all(is_key_char) {
            return Err(TextError::Malformed(format!(
                "bad key name {:?}",
                truncate(k)
            )));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._-+@".contains(&b)
}

/// Encode pairs as a text data segment.
pub fn encode_text(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Session-wide operational parameters (leading connection; RFC 7143 §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionParams {
    pub max_connections: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u16,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
}

impl Default for SessionParams {
    /// The RFC's defaults: what holds for a key nobody negotiated.
    fn default() -> Self {
        SessionParams {
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }
}

/// Per-connection parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnParams {
    pub header_digest: bool,
    pub data_digest: bool,
    /// The initiator's MaxRecvDataSegmentLength: the largest data segment we may send.
    pub send_limit: u32,
    /// Ours: the largest data segment we accept.
    pub recv_limit: u32,
}

impl Default for ConnParams {
    fn default() -> Self {
        ConnParams {
            header_digest: false,
            data_digest: false,
            send_limit: 8192,
            recv_limit: TARGET_MAX_RECV,
        }
    }
}

/// What the target offers (and so the bounds of what it accepts). These bound the
/// memory of a connection: a data segment is at most `TARGET_MAX_RECV`, a burst at most
/// `TARGET_MAX_BURST`.
pub const TARGET_MAX_RECV: u32 = 262_144;
pub const TARGET_MAX_BURST: u32 = 1_048_576;
pub const TARGET_FIRST_BURST: u32 = 262_144;
pub const TARGET_MAX_CONNECTIONS: u16 = 8;
pub const TARGET_MAX_OUTSTANDING_R2T: u16 = 16;

/// Where a negotiation happens: it decides which keys are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Login operational stage of the leading connection of a normal session.
    LeadingLogin,
    /// Login of a further connection of an existing session: session keys are fixed.
    SecondaryLogin,
    /// Login of a discovery session: only the few keys discovery needs.
    DiscoveryLogin,
    /// Full feature phase (Text Request).
    FullFeature,
}

/// Negotiation state of one connection's login (or text exchange).
#[derive(Debug, Clone)]
pub struct Negotiation {
    pub session: SessionParams,
    pub conn: ConnParams,
    /// Keys already negotiated in this login (a key may be negotiated once).
    seen: Vec<String>,
    /// Whether we have declared our MaxRecvDataSegmentLength yet.
    declared_mrdsl: bool,
}

impl Negotiation {
    pub fn new(session: SessionParams) -> Negotiation {
        Negotiation {
            session,
            conn: ConnParams::default(),
            seen: Vec::new(),
            declared_mrdsl: false,
        }
    }

    /// Answer the operational keys in `pairs`; keys the caller handles itself (names,
    /// SessionType, security keys) must already be removed. Returns the answer pairs.
    pub fn answer(&mut self, pairs: &[(String, String)], phase: Phase) -> Result<Pairs, TextError> {
        let mut out: Pairs = Vec::new();
        for (k, v) in pairs {
            if phase != Phase::FullFeature {
                if self.seen.iter().any(|s| s == k) {
                    return Err(TextError::Duplicate(k.clone()));
                }
                self.seen.push(k.clone());
            }
            if let Some(answer) = self.answer_one(k, v, phase) {
                out.push((k.clone(), answer));
            }
        }
        // Declare our receive limit once so that the initiator may send large segments
        // (its default assumption is 8192).
        if !self.declared_mrdsl && phase != Phase::FullFeature {
            self.declared_mrdsl = true;
            out.push((
                "MaxRecvDataSegmentLength".into(),
                self.conn.recv_limit.to_string(),
            ));
        }
        Ok(out)
    }

    /// The answer to one key, `None` for a declaration that needs none.
    fn answer_one(&mut self, key: &str, value: &str, phase: Phase) -> Option<String> {
        let session_key_allowed = matches!(phase, Phase::LeadingLogin);
        let before = self.session;
        let s = &mut self.session;
        match key {
            "HeaderDigest" | "DataDigest" => {
                let Some(pick) = pick_digest(value) else {
                    return Some("Reject".into());
                };
                if phase == Phase::FullFeature {
                    return Some("Reject".into());
                }
                let crc = pick == "CRC32C";
                if key == "HeaderDigest" {
                    self.conn.header_digest = crc;
                } else {
                    self.conn.data_digest = crc;
                }
                Some(pick.into())
            }
            "MaxRecvDataSegmentLength" => {
                match parse_number(value, 512, 16_777_215) {
                    Some(n) => self.conn.send_limit = n as u32,
                    None => return Some("Reject".into()),
                }
                None
            }
            "MaxConnections" => session_numeric(
                session_key_allowed,
                value,
                1,
                65535,
                |n| {
                    s.max_connections = (n as u16).min(TARGET_MAX_CONNECTIONS);
                    s.max_connections.to_string()
                },
                before.max_connections,
            ),
            "InitialR2T" => session_bool(session_key_allowed, value, s.initial_r2t, |b| {
                // OR: we are happy without R2T for the first burst.
                s.initial_r2t = b;
                b
            }),
            "ImmediateData" => session_bool(session_key_allowed, value, s.immediate_data, |b| {
                // AND: we accept immediate data.
                s.immediate_data = b;
                b
            }),
            "MaxBurstLength" => session_numeric(
                session_key_allowed,
                value,
                512,
                16_777_215,
                |n| {
                    s.max_burst_length = (n as u32).min(TARGET_MAX_BURST);
                    s.first_burst_length = s.first_burst_length.min(s.max_burst_length);
                    s.max_burst_length.to_string()
                },
                before.max_burst_length,
            ),
            "FirstBurstLength" => session_numeric(
                session_key_allowed,
                value,
                512,
                16_777_215,
                |n| {
                    s.first_burst_length =
                        (n as u32).min(TARGET_FIRST_BURST).min(s.max_burst_length);
                    s.first_burst_length.to_string()
                },
                before.first_burst_length,
            ),
            "DefaultTime2Wait" => session_numeric(
                session_key_allowed,
                value,
                0,
                3600,
                |n| {
                    // Max function: at least our 2 s.
                    s.default_time2wait = (n as u16).max(2);
                    s.default_time2wait.to_string()
                },
                before.default_time2wait,
            ),
            "DefaultTime2Retain" => session_numeric(
                session_key_allowed,
                value,
                0,
                3600,
                |n| {
                    // Min function; at ErrorRecoveryLevel 0 nothing is retained anyway.
                    s.default_time2retain = (n as u16).min(20);
                    s.default_time2retain.to_string()
                },
                before.default_time2retain,
            ),
            "MaxOutstandingR2T" => session_numeric(
                session_key_allowed,
                value,
                1,
                65535,
                |n| {
                    s.max_outstanding_r2t = (n as u16).min(TARGET_MAX_OUTSTANDING_R2T);
                    s.max_outstanding_r2t.to_string()
                },
                before.max_outstanding_r2t,
            ),
            "DataPDUInOrder" => session_bool(session_key_allowed, value, true, |_| {
                // OR with our Yes: the engine wants data in order.
                s.data_pdu_in_order = true;
                true
            }),
            "DataSequenceInOrder" => session_bool(session_key_allowed, value, true, |_| {
                s.data_sequence_in_order = true;
                true
            }),
            "ErrorRecoveryLevel" => session_numeric(
                session_key_allowed,
                value,
                0,
                2,
                |_| {
                    // Min with ours: the engine recovers by reconnecting (level 0).
                    s.error_recovery_level = 0;
                    "0".into()
                },
                before.error_recovery_level,
            ),
            // Markers are obsolete (RFC 7143 §13.25); answering No (AND) keeps old
            // initiators that still offer them happy.
            "OFMarker" | "IFMarker" => match value {
                "Yes" | "No" => Some("No".into()),
                _ => Some("Reject".into()),
            },
            "OFMarkInt" | "IFMarkInt" => Some("Irrelevant".into()),
            // Keys only a target may send.
            "TargetAlias" | "TargetAddress" | "TargetPortalGroupTag" => Some("Irrelevant".into()),
            // Declarations needing no answer once the caller has used them.
            "InitiatorAlias" => None,
            _ if key.starts_with("X-") || key.starts_with("X#") => Some("NotUnderstood".into()),
            _ => Some("NotUnderstood".into()),
        }
    }
}

/// A session-wide numeric key: negotiated on the leading connection, otherwise the
/// fixed value is the answer ("Irrelevant" would make some initiators fail).
fn session_numeric(
    allowed: bool,
    value: &str,
    min: u64,
    max: u64,
    set: impl FnOnce(u64) -> String,
    current: impl ToString,
) -> Option<String> {
    if !allowed {
        return Some(current.to_string());
    }
    match parse_number(value, min, max) {
        Some(n) => Some(set(n)),
        None => Some("Reject".into()),
    }
}

fn session_bool(
    allowed: bool,
    value: &str,
    current: bool,
    set: impl FnOnce(bool) -> bool,
) -> Option<String> {
    if !allowed {
        return Some(yes_no(current).into());
    }
    match value {
        "Yes" => Some(yes_no(set(true)).into()),
        "No" => Some(yes_no(set(false)).into()),
        _ => Some("Reject".into()),
    }
}

pub fn yes_no(b: bool) -> &'static str {
    if b {
        "Yes"
    } else {
        "No"
    }
}

/// The first digest of the initiator's list the engine supports.
fn pick_digest(list: &str) -> Option<&'static str> {
    for item in list.split(',') {
        match item {
            "None" => return Some("None"),
            "CRC32C" => return Some("CRC32C"),
            _ => {}
        }
    }
    None
}

/// A numerical value (decimal, or hex `0x...`) within `min..=max`.
pub fn parse_number(v: &str, min: u64, max: u64) -> Option<u64> {
    let n = if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()?
    } else {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 20 {
            return None;
        }
        v.parse().ok()?
    };
    (min..=max).contains(&n).then_some(n)
}

/// Render pairs for a log line, with CHAP values hidden.
pub fn describe(pairs: &[(String, String)]) -> String {
    let mut s = String::new();
    for (k, v) in pairs {
        if !s.is_empty() {
            s.push(' ');
        }
        if k.starts_with("CHAP_R") || k.starts_with("CHAP_C") {
            let _ = write!(s, "{k}=(sensitive)");
        } else {
            let _ = write!(s, "{k}={v}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Pairs {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn get<'a>(p: &'a Pairs, k: &str) -> Option<&'a str> {
        p.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn text_round_trip_and_errors() {
        let p = pairs(&[("A", "1"), ("B", "x=y")]);
        assert_eq!(parse_text(&encode_text(&p)).unwrap(), p);
        assert!(parse_text(b"novalue\0").is_err());
        assert!(parse_text(b"=1\0").is_err());
        assert_eq!(parse_text(b"A=1\0\0\0").unwrap().len(), 1);
    }

    #[test]
    fn result_functions() {
        let mut n = Negotiation::new(SessionParams::default());
        let out = n
            .answer(
                &pairs(&[
                    ("HeaderDigest", "CRC32C,None"),
                    ("DataDigest", "None"),
                    ("InitialR2T", "No"),
                    ("ImmediateData", "Yes"),
                    ("MaxBurstLength", "16776192"),
                    ("FirstBurstLength", "262144"),
                    ("MaxRecvDataSegmentLength", "65536"),
                    ("ErrorRecoveryLevel", "2"),
                    ("DefaultTime2Wait", "0"),
                    ("X-com.example.Key", "1"),
                    ("MaxConnections", "0"),
                ]),
                Phase::LeadingLogin,
            )
            .unwrap();
        assert_eq!(get(&out, "HeaderDigest"), Some("CRC32C"));
        assert_eq!(get(&out, "InitialR2T"), Some("No"));
        assert_eq!(get(&out, "MaxBurstLength"), Some("1048576"));
        assert_eq!(get(&out, "ErrorRecoveryLevel"), Some("0"));
        assert_eq!(get(&out, "DefaultTime2Wait"), Some("2"));
        assert_eq!(get(&out, "X-com.example.Key"), Some("NotUnderstood"));
        assert_eq!(get(&out, "MaxConnections"), Some("Reject"));
        assert_eq!(get(&out, "MaxRecvDataSegmentLength"), Some("262144"));
        assert!(n.conn.header_digest && !n.conn.data_digest);
        assert_eq!(n.conn.send_limit, 65536);
        assert!(!n.session.initial_r2t);
        assert!(n
            .answer(&pairs(&[("InitialR2T", "Yes")]), Phase::LeadingLogin)
            .is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("0x10", 0, 100), Some(16));
        assert_eq!(parse_number("511", 512, 1000), None);
        assert_eq!(parse_number("-1", 0, 10), None);
        assert_eq!(parse_number("99999999999999999999999", 0, u64::MAX), None);
    }
}
