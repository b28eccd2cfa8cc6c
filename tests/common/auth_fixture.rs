//! The CHAP fixture the engine, probe and verify tests share: one portal, a CHAP
//! credential, a mutual-CHAP credential and a one-initiator group, as model text that a
//! test's own targets and extents follow.

pub const BASE: &str = "iqn.2026-11.io.isctl";
pub const ALICE_SECRET: &str = "alicesecret12";
pub const BOB_SECRET: &str = "bobsecret1234";
pub const TARGET_SECRET: &str = "targetsecret12";
/// The one initiator `[initiator_group.only-a]` admits.
pub const NAMED_INITIATOR: &str = "iqn.2026-11.test:a";

/// `[global]`, `[portal.p]` listening on `listen`, `[auth.one]` (alice: CHAP),
/// `[auth.both]` (bob: mutual CHAP, the target answering as `the-target`) and
/// `[initiator_group.only-a]`.
pub fn model_head(listen: &str) -> String {
    format!(
        r#"[global]
basename = "{BASE}"

[portal.p]
listen = ["{listen}"]

[auth.one]
user = "alice"
secret = "{ALICE_SECRET}"

[auth.both]
user = "bob"
secret = "{BOB_SECRET}"
peer_user = "the-target"
peer_secret = "{TARGET_SECRET}"

[initiator_group.only-a]
initiators = ["{NAMED_INITIATOR}"]
"#
    )
}
