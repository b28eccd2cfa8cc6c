//! isctl's own iSCSI initiator, informational only: `isctl probe` and `apply --verify`
//! use it to prove that a target works, the way Windows' informational
//! login session does: discover, log in, ask, log out, never touch data.
//!
//! Owns:
//! * `login`: the initiator's login state machine as pure code (login responses in, login
//!   requests out), security stage with CHAP and mutual CHAP (the target's answer is
//!   checked against our own challenge, hashing shared with the engine's
//!   [`crate::engine::iscsi::chap`]), operational stage, login status names (RFC 7143
//!   §11.13.5);
//! * `scsi`: building the CDBs of the informational commands (TEST UNIT READY, REPORT
//!   LUNS, INQUIRY and VPD pages, READ CAPACITY(16/10), MODE SENSE(6/10)) and parsing
//!   their answers and sense data (pure, tested on byte fixtures);
//! * `client`: a thin blocking socket client (std `TcpStream` with timeouts): login,
//!   SendTargets, SCSI commands with Data-In, NOP-In answers, logout;
//! * `probe`: the probe itself (what to ask, in which order) and its report, which is
//!   the JSON contract of `isctl probe -o json` (docs/probe.md);
//! * `verify`: comparing a report with a model;
//! * `verify_apply`: the checks of `isctl apply --verify[=strict]` (which logins to
//!   make after an apply, with fresh ISIDs, and their report).
//!
//! Does not: write, read blocks, reserve, UNMAP or MODE SELECT (no command that changes
//! or reads the medium is ever built here); print (the CLI renders the report).
//! Reuses the engine's PDU codec and digests (`pdu`) and text keys (`negotiate`).

pub mod client;
pub mod login;
pub mod probe;
pub mod scsi;
pub mod verify;
pub mod verify_apply;

use crate::engine::iscsi::negotiate::TextError;
use crate::engine::iscsi::pdu::ReadError;

/// Why the initiator could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum InitiatorError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("reading a PDU: {0}")]
    Read(#[from] ReadError),
    #[error("bad text keys from the target: {0}")]
    Text(#[from] TextError),
    /// The target answered the login with a non-zero status.
    #[error("login failed: {name} (status 0x{status:04x}){}", redirect.as_ref().map(|r| format!(", redirected to {r}")).unwrap_or_default())]
    LoginFailed {
        status: u16,
        name: &'static str,
        redirect: Option<String>,
    },
    /// Mutual CHAP: the target's answer to our challenge is wrong or missing.
    #[error("mutual CHAP failed: {0}")]
    MutualChap(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

pub type Result<T> = std::result::Result<T, InitiatorError>;

/// Random bytes (mutual CHAP challenges, `apply --verify`'s ISIDs) that never wait for
/// the kernel's entropy pool: its CSPRNG once seeded (`GRND_NONBLOCK`), else its best
/// effort (`GRND_INSECURE`, Linux 5.6+). A freshly booted host without a hardware RNG
/// (a TCG VM such as the LIO test bed) can block getrandom(2) for minutes, and a check
/// right after boot must not hang on that.
pub(crate) fn random_bytes(buf: &mut [u8]) {
    #[cfg(target_os = "linux")]
    for flags in [libc::GRND_NONBLOCK, libc::GRND_INSECURE] {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), flags) };
        if usize::try_from(n).is_ok_and(|n| n == buf.len()) {
            return;
        }
    }
    use rand::RngCore as _;
    rand::rng().fill_bytes(buf);
}
