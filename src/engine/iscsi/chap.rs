//! CHAP authentication of the security stage (RFC 7143 §12.1.3, RFC 1994), target side.
//!
//! Owns: the algorithm choice (MD5, SHA-1, SHA-256 as CHAP_A 5, 6, 7), a fresh random
//! identifier and challenge per login, verification of the initiator's response in
//! constant time, the target's answer for mutual CHAP, and reflection protection (an
//! initiator may not hand the target's own challenge back to it).
//! Secrets only pass through [`crate::model::Secret`]; nothing here logs them.

use rand::RngCore as _;
use subtle::ConstantTimeEq as _;

use crate::model::{AuthMethod, ChapCredentials};

/// CHAP hash algorithms (the CHAP_A numbers of the IANA PPP registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5 = 5,
    Sha1 = 6,
    Sha256 = 7,
}

impl Algorithm {
    pub fn from_number(n: &str) -> Option<Algorithm> {
        match n.trim() {
            "5" => Some(Algorithm::Md5),
            "6" => Some(Algorithm::Sha1),
            "7" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
        }
    }

    /// H(identifier || secret || challenge).
    pub fn response(self, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
        fn run<D: md5::Digest>(id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
            let mut h = D::new();
            h.update([id]);
            h.update(secret);
            h.update(challenge);
            h.finalize().to_vec()
        }
        match self {
            Algorithm::Md5 => run::<md5::Md5>(id, secret, challenge),
            Algorithm::Sha1 => run::<sha1::Sha1>(id, secret, challenge),
            Algorithm::Sha256 => run::<sha2::Sha256>(id, secret, challenge),
        }
    }
}

/// Why authentication failed (the login then fails with status 0x0201). The reason
/// goes to the log; the initiator only learns "authentication failure".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no CHAP algorithm in common (initiator offered {0:?})")]
    NoAlgorithm(String),
    #[error("expected {0} from the initiator")]
    Missing(&'static str),
    #[error("CHAP name {0:?} is not the configured user")]
    WrongUser(String),
    #[error("CHAP response does not match (wrong secret)")]
    WrongResponse,
    #[error("malformed CHAP value for {0}")]
    Malformed(&'static str),
    #[error("mutual CHAP required but the initiator sent no challenge")]
    MutualRequired,
    #[error("initiator asked for mutual CHAP but no peer credentials are configured")]
    NoPeerCredentials,
    #[error("initiator reflected the target's challenge")]
    Reflection,
    #[error("initiator challenge shorter than 16 bytes or longer than 1024")]
    WeakChallenge,
}

#[derive(Debug)]
enum Stage {
    /// Waiting for CHAP_A.
    Start,
    /// Challenge sent; waiting for CHAP_N / CHAP_R.
    Challenged {
        alg: Algorithm,
        id: u8,
        challenge: Vec<u8>,
    },
    Done,
}

/// One CHAP exchange, target side.
#[derive(Debug)]
pub struct ChapServer {
    creds: ChapCredentials,
    mutual_required: bool,
    stage: Stage,
}

impl ChapServer {
    pub fn new(creds: ChapCredentials, method: AuthMethod) -> ChapServer {
        ChapServer {
            creds,
            mutual_required: method == AuthMethod::MutualChap,
            stage: Stage::Start,
        }
    }

    pub fn done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    /// Feed the CHAP keys of one login request; returns the keys to answer with.
    /// `Ok(empty)` with `done()` false means "still waiting" (e.g. an empty PDU).
    pub fn step(
        &mut self,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, AuthFailure> {
        match &self.stage {
            Stage::Start => {
                let Some(list) = get("CHAP_A") else {
                    return Ok(Vec::new());
                };
                let alg = list
                    .split(',')
                    .find_map(Algorithm::from_number)
                    .ok_or_else(|| AuthFailure::NoAlgorithm(list.clone()))?;
                let mut rng = rand::rng();
                let id = (rng.next_u32() & 0xff) as u8;
                let mut challenge = vec![0u8; alg.digest_len().max(16)];
                rng.fill_bytes(&mut challenge);
                let out = vec![
                    ("CHAP_A".to_string(), (alg as u8).to_string()),
                    ("CHAP_I".to_string(), id.to_string()),
                    ("CHAP_C".to_string(), to_hex(&challenge)),
                ];
                self.stage = Stage::Challenged { alg, id, challenge };
                Ok(out)
            }
            Stage::Challenged { alg, id, challenge } => {
                let (alg, id) = (*alg, *id);
                let name = get("CHAP_N").ok_or(AuthFailure::Missing("CHAP_N"))?;
                let response = get("CHAP_R").ok_or(AuthFailure::Missing("CHAP_R"))?;
                let response = decode_binary(&response).ok_or(AuthFailure::Malformed("CHAP_R"))?;
                // Compare name and response in constant time, and both before deciding,
                // so that timing tells nothing about which one was wrong.
                let expected = alg.response(id, self.creds.secret.expose().as_bytes(), challenge);
                let name_ok = name.as_bytes().ct_eq(self.creds.user.as_bytes());
                let resp_ok = response.ct_eq(&expected);
                if !bool::from(name_ok) {
                    return Err(AuthFailure::WrongUser(name));
                }
                if !bool::from(resp_ok) {
                    return Err(AuthFailure::WrongResponse);
                }
                let their_i = get("CHAP_I");
                let their_c = get("CHAP_C");
                let out = match (their_i, their_c) {
                    (Some(i), Some(c)) => {
                        let peer = self
                            .creds
                            .peer
                            .as_ref()
                            .ok_or(AuthFailure::NoPeerCredentials)?;
                        let i = parse_identifier(&i).ok_or(AuthFailure::Malformed("CHAP_I"))?;
                        let c = decode_binary(&c).ok_or(AuthFailure::Malformed("CHAP_C"))?;
                        if c.len() < 16 || c.len() > 1024 {
                            return Err(AuthFailure::WeakChallenge);
                        }
                        if bool::from(c.ct_eq(challenge)) {
                            return Err(AuthFailure::Reflection);
                        }
                        let r = alg.response(i, peer.secret.expose().as_bytes(), &c);
                        vec![
                            ("CHAP_N".to_string(), peer.user.clone()),
                            ("CHAP_R".to_string(), to_hex(&r)),
                        ]
                    }
                    (None, None) if self.mutual_required => {
                        return Err(AuthFailure::MutualRequired)
                    }
                    (None, None) => Vec::new(),
                    (None, Some(_)) => return Err(AuthFailure::Missing("CHAP_I")),
                    (Some(_), None) => return Err(AuthFailure::Missing("CHAP_C")),
                };
                self.stage = Stage::Done;
                Ok(out)
            }
            Stage::Done => Ok(Vec::new()),
        }
    }
}

pub fn parse_identifier(s: &str) -> Option<u8> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u8::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

pub fn to_hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + b.len() * 2);
    s.push_str("0x");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// A binary value: `0x` hex or `0b` base64 (RFC 7143 §6.1).
pub fn decode_binary(s: &str) -> Option<Vec<u8>> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        let h = h.as_bytes();
        // An odd count means a leading zero nibble was dropped.
        let mut out = Vec::with_capacity(h.len() / 2 + 1);
        let mut i = 0;
        if h.len() % 2 == 1 {
            out.push(hex_val(h[0])?);
            i = 1;
        }
        while i < h.len() {
            out.push(hex_val(h[i])? << 4 | hex_val(h[i + 1])?);
            i += 2;
        }
        (!out.is_empty()).then_some(out)
    } else if let Some(b) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        decode_base64(b)
    } else {
        None
    }
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Origin, PeerCredentials, Secret};

    fn creds(peer: bool) -> ChapCredentials {
        ChapCredentials {
            name: "a".into(),
            user: "alice".into(),
            secret: Secret::new("initiatorsecret1"),
            peer: peer.then(|| PeerCredentials {
                user: "target".into(),
                secret: Secret::new("targetsecret123"),
            }),
            origin: Origin::default(),
        }
    }

    fn lookup(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(x, _)| *x == k).map(|(_, v)| v.clone())
    }

    fn challenge(s: &mut ChapServer, alg: &str) -> (Algorithm, u8, Vec<u8>) {
        let out = s.step(&lookup(vec![("CHAP_A", alg.into())])).unwrap();
        let alg = Algorithm::from_number(&out[0].1).unwrap();
        let id: u8 = out[1].1.parse().unwrap();
        (alg, id, decode_binary(&out[2].1).unwrap())
    }

    #[test]
    fn one_way_chap_with_each_algorithm() {
        for list in ["5", "7,5", "6"] {
            let mut s = ChapServer::new(creds(false), AuthMethod::Chap);
            let (alg, id, c) = challenge(&mut s, list);
            let r = alg.response(id, b"initiatorsecret1", &c);
            let out = s
                .step(&lookup(vec![
                    ("CHAP_N", "alice".into()),
                    ("CHAP_R", to_hex(&r)),
                ]))
                .unwrap();
            assert!(out.is_empty() && s.done());
        }
    }

    #[test]
    fn wrong_secret_and_wrong_user_fail() {
        let mut s = ChapServer::new(creds(false), AuthMethod::Chap);
        let (alg, id, c) = challenge(&mut s, "5");
        let r = alg.response(id, b"wrongsecret12345", &c);
        assert_eq!(
            s.step(&lookup(vec![
                ("CHAP_N", "alice".into()),
                ("CHAP_R", to_hex(&r))
            ])),
            Err(AuthFailure::WrongResponse)
        );
        let mut s = ChapServer::new(creds(false), AuthMethod::Chap);
        let (alg, id, c) = challenge(&mut s, "5");
        let r = alg.response(id, b"initiatorsecret1", &c);
        assert!(matches!(
            s.step(&lookup(vec![
                ("CHAP_N", "bob".into()),
                ("CHAP_R", to_hex(&r))
            ])),
            Err(AuthFailure::WrongUser(_))
        ));
    }

    #[test]
    fn mutual_chap_answers_and_refuses_reflection() {
        let mut s = ChapServer::new(creds(true), AuthMethod::MutualChap);
        let (alg, id, c) = challenge(&mut s, "5");
        let r = alg.response(id, b"initiatorsecret1", &c);
        let mine = vec![7u8; 16];
        let out = s
            .step(&lookup(vec![
                ("CHAP_N", "alice".into()),
                ("CHAP_R", to_hex(&r)),
                ("CHAP_I", "9".into()),
                ("CHAP_C", to_hex(&mine)),
            ]))
            .unwrap();
        assert_eq!(out[0].1, "target");
        assert_eq!(
            decode_binary(&out[1].1).unwrap(),
            alg.response(9, b"targetsecret123", &mine)
        );

        let mut s = ChapServer::new(creds(true), AuthMethod::MutualChap);
        let (alg, id, c) = challenge(&mut s, "5");
        let r = alg.response(id, b"initiatorsecret1", &c);
        assert_eq!(
            s.step(&lookup(vec![
                ("CHAP_N", "alice".into()),
                ("CHAP_R", to_hex(&r)),
                ("CHAP_I", id.to_string()),
                ("CHAP_C", to_hex(&c)),
            ])),
            Err(AuthFailure::Reflection)
        );
        let mut s = ChapServer::new(creds(true), AuthMethod::MutualChap);
        let (alg, id, c) = challenge(&mut s, "5");
        let r = alg.response(id, b"initiatorsecret1", &c);
        assert_eq!(
            s.step(&lookup(vec![
                ("CHAP_N", "alice".into()),
                ("CHAP_R", to_hex(&r))
            ])),
            Err(AuthFailure::MutualRequired)
        );
    }

    #[test]
    fn binary_encodings() {
        assert_eq!(decode_binary("0x0a0B"), Some(vec![10, 11]));
        assert_eq!(decode_binary("0xa0b"), Some(vec![10, 11]));
        assert_eq!(decode_binary("0bAQID"), Some(vec![1, 2, 3]));
        assert_eq!(decode_binary("12"), None);
        assert_eq!(decode_binary("0x"), None);
    }
}
