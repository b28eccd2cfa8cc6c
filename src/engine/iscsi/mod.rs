//! The iSCSI transport of the engine (RFC 7143), target side.
//!
//! Owns: PDU framing and digests (`pdu`), text keys and operational negotiation
//! (`negotiate`), CHAP (`chap`), the login phase (`login`), sessions and their CmdSN
//! window (`session`), the full feature phase of a connection without I/O
//! (`fullfeature`), and the socket of a connection (`conn`).
//! Does not: execute SCSI commands (it hands them to [`crate::engine::scsi`]) or know
//! the model (the server gives it an [`conn::Engine`] that answers access questions).
//!
//! In → out: a TCP connection → `conn::serve_connection` → `login::Login` until the
//! full feature phase → per PDU: CmdSN window check, then SCSI command (with its
//! Data-Out gathered) → `ScsiService::execute` → Data-In / SCSI Response; NOP, TMF,
//! Text and Logout are answered in `fullfeature`; `conn` reads and writes the socket.
//!
//! The engine negotiates ErrorRecoveryLevel 0: a connection with a broken header
//! digest is dropped and the initiator recovers by logging in again.

pub mod chap;
pub mod conn;
pub mod fullfeature;
#[doc(hidden)]
pub mod fuzzing;
pub mod login;
pub mod negotiate;
pub mod pdu;
pub mod session;

use std::net::SocketAddr;

/// The listening address a connection came in on; the server maps it to a portal
/// group of the model at login time (so a reload that renames a portal keeps working).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Portal {
    pub listen: SocketAddr,
}
