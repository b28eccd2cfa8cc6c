//! Entry points for fuzzing the parts of the transport that read network input
//! without a socket: the PDU decoder, the text-key parser and negotiation, and the
//! login state machine. `fuzz/` (cargo fuzz, nightly) drives them with libFuzzer;
//! the unit tests below drive them with seeded random and mutated inputs on stable,
//! so every `cargo test` run exercises them too.
//!
//! The only property checked is the one the engine promises: no panic, no hang and
//! bounded memory on any input.

use crate::engine::iscsi::login::{Access, Grant, Login, LoginStatus, Step};
use crate::engine::iscsi::negotiate::{parse_text, Negotiation, Phase, SessionParams};
use crate::engine::iscsi::pdu::{read_pdu, Digests};
use crate::model::{AuthMethod, ChapCredentials, Origin, PeerCredentials, Secret};

/// Decode PDUs from `data` until it runs out, with each digest setting.
pub fn pdu_decoder(data: &[u8]) {
    for (header, dd) in [(false, false), (true, true)] {
        let mut r = data;
        let digests = Digests { header, data: dd };
        while read_pdu(&mut r, digests, 8192).is_ok() {}
    }
}

/// Parse text and negotiate it in every phase.
pub fn negotiation(data: &[u8]) {
    if let Ok(pairs) = parse_text(data) {
        for phase in [
            Phase::LeadingLogin,
            Phase::SecondaryLogin,
            Phase::DiscoveryLogin,
            Phase::FullFeature,
        ] {
            let _ = Negotiation::new(SessionParams::default()).answer(&pairs, phase);
        }
    }
}

struct FuzzAccess {
    chap: Option<AuthMethod>,
}

impl Access for FuzzAccess {
    fn normal(&self, target: &str, _initiator: &str) -> Result<Grant, LoginStatus> {
        if target.len() % 3 == 0 {
            return Err(LoginStatus::NOT_FOUND);
        }
        Ok(self.discovery(""))
    }
    fn discovery(&self, _initiator: &str) -> Grant {
        Grant {
            auth: self.chap.map(|m| {
                (
                    ChapCredentials {
                        name: "fuzz".into(),
                        user: "user".into(),
                        secret: Secret::new("fuzzsecret1234"),
                        peer: Some(PeerCredentials {
                            user: "target".into(),
                            secret: Secret::new("targetsecret12"),
                        }),
                        origin: Origin::default(),
                    },
                    m,
                )
            }),
            portal_group_tag: 1,
            alias: Some("fuzz".into()),
        }
    }
}

/// Feed the PDUs in `data` to a login (the first byte picks the auth policy).
pub fn login(data: &[u8]) {
    let Some((&policy, mut rest)) = data.split_first() else {
        return;
    };
    let access = FuzzAccess {
        chap: match policy % 3 {
            0 => None,
            1 => Some(AuthMethod::Chap),
            _ => Some(AuthMethod::MutualChap),
        },
    };
    let mut login = Login::new();
    let session = |tsih: u16| (tsih % 2 == 0).then(SessionParams::default);
    // A login never takes more than a few dozen PDUs; bound the loop anyway.
    for _ in 0..64 {
        let Ok(pdu) = read_pdu(&mut rest, Digests::default(), 8192) else {
            return;
        };
        match login.on_request(&pdu, &access, &session) {
            Step::Reply(..) => {}
            Step::Complete(_) | Step::Fail(..) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::iscsi::pdu::{Bhs, Opcode};
    use rand::{Rng, RngCore, SeedableRng};

    /// A plausible login exchange as a byte stream, for mutation.
    fn login_seed() -> Vec<u8> {
        let mut out = vec![1u8];
        let texts = [
            "InitiatorName=iqn.2026-11.test:i\0TargetName=iqn.2026-11.test:tt\0SessionType=Normal\0AuthMethod=CHAP,None\0",
            "CHAP_A=5,7\0",
            "CHAP_N=user\0CHAP_R=0x00112233445566778899aabbccddeeff\0CHAP_I=3\0CHAP_C=0x0102030405060708090a0b0c0d0e0f10\0",
            "HeaderDigest=CRC32C,None\0MaxRecvDataSegmentLength=65536\0InitialR2T=No\0ImmediateData=Yes\0MaxBurstLength=262144\0",
        ];
        for (i, t) in texts.iter().enumerate() {
            let mut b = Bhs::new(Opcode::LoginRequest);
            b.0[0] |= 0x40;
            b.set_flags(if i == 3 {
                0x87
            } else if i == 2 {
                0x81
            } else {
                0x00
            });
            b.set_isid([0x80, 0, 0, 0, 0, 1]);
            b.set_data_segment_len(t.len());
            out.extend_from_slice(&b.0);
            out.extend_from_slice(t.as_bytes());
            out.resize(out.len().div_ceil(4) * 4 + 1, 0);
            out.pop();
        }
        out
    }

    #[test]
    fn random_and_mutated_inputs_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x0001_5c71);
        let seed = login_seed();
        for round in 0..20_000 {
            let input: Vec<u8> = if round % 2 == 0 {
                let mut m = seed.clone();
                for _ in 0..rng.random_range(1..8) {
                    let i = rng.random_range(0..m.len());
                    match rng.random_range(0..3) {
                        0 => m[i] = rng.random(),
                        1 => m.truncate(i.max(1)),
                        _ => m.insert(i, rng.random()),
                    }
                }
                m
            } else {
                let mut m = vec![0u8; rng.random_range(0..600)];
                rng.fill_bytes(&mut m);
                m
            };
            pdu_decoder(&input);
            negotiation(&input);
            login(&input);
        }
        // The unmutated seed goes through CHAP to a failure (the response is wrong).
        login(&seed);
    }
}
