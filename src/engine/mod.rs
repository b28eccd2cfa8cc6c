//! The userspace iSCSI target engine: serves a [`crate::model::Model`] where LIO is absent.
//!
//! Owns: the iSCSI protocol (RFC 7143) and the SCSI command set (SPC-4/SBC-3) that the
//! engine speaks, the logical units' storage, and the `isctl serve` runtime.
//!
//! Two layers, one seam:
//! * the transport ([`iscsi`]: `pdu`, `negotiate`, `login`, `chap`, `session`, `conn`) turns bytes
//!   on a TCP connection into SCSI commands and task-management requests, and back;
//! * the SCSI layer ([`scsi`], with storage in `lu`) executes a command for an I_T nexus
//!   and answers status, sense and data. It knows nothing of PDUs.
//!
//! The seam is [`scsi::ScsiService`]: the transport gathers a command's Data-Out
//! (immediate, unsolicited, R2T-solicited) into one buffer, calls
//! [`scsi::ScsiService::execute`], and sends the returned data as Data-In PDUs followed
//! by (or folded into) the SCSI Response.
//!
//! Portability: nothing here uses a Linux-only interface; platform calls (hole
//! punching, block-device size) sit behind `cfg` with a portable fallback.
//! * the runtime ([`server`]) serves a model: listeners, live reconfiguration,
//!   shutdown, the control socket.
//!
//! The engine never imports `backend` or `cli`.

pub mod api;
pub mod iscsi;
pub mod lu;
pub mod scsi;
pub mod server;
pub mod stats;
