//! What a backend reports besides the configuration itself: logged-in sessions and
//! facts about the host's backing files and devices. The planner needs both (to
//! refuse cutting sessions, to create/grow files and never shrink them) and stays
//! pure because the backend gathers them beforehand.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::State;

/// One observation of a backend.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    pub state: State,
    pub sessions: Vec<Session>,
}

/// A logged-in iSCSI session as the backend shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Session {
    pub target: String,
    pub tpg: u16,
    pub initiator: String,
    /// Admitted by demo mode (no ACL); LIO then shows only the initiator name.
    pub dynamic: bool,
    pub alias: Option<String>,
    /// `0x80 4c 37 c5 00 00` as 12 hex digits (`804c37c50000`).
    pub isid: Option<String>,
    pub tsih: Option<u16>,
    /// LIO's session id.
    pub session_id: Option<u32>,
    /// `Normal` or `Discovery`.
    pub session_type: Option<String>,
    /// `TARG_SESS_STATE_LOGGED_IN`, ...
    pub state: Option<String>,
    pub connections: Vec<Connection>,
    /// The model's name of the portal group (`[portal.NAME]`), where known.
    #[serde(default)]
    pub portal_group: Option<String>,
    /// The initiator groups that admit this initiator on this target (the engine;
    /// LIO's configfs has no notion of them).
    #[serde(default)]
    pub igroups: Vec<String>,
    /// The comment of the (first) initiator group that admitted it.
    #[serde(default)]
    pub initiator_comment: Option<String>,
    /// The session-wide negotiated parameters, where the backend shows them.
    #[serde(default)]
    pub params: Option<SessionParameters>,
}

/// Session-wide negotiated login parameters (RFC 7143 §13), as ONTAP's
/// `vserver iscsi session parameter show` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SessionParameters {
    pub max_connections: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
}

impl Session {
    /// `initiator (ISID x, TSIH n)` for messages.
    pub fn describe(&self) -> String {
        let mut s = format!("{} on {} tpg {}", self.initiator, self.target, self.tpg);
        match (&self.isid, self.tsih) {
            (Some(i), Some(t)) => s.push_str(&format!(" (ISID 0x{i}, TSIH {t})")),
            _ if self.dynamic => s.push_str(" (demo-mode session)"),
            _ => {}
        }
        s
    }
}

/// One connection of a session.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Connection {
    pub cid: u16,
    pub state: String,
    /// The initiator's address as LIO prints it (IPv6 without brackets).
    pub address: String,
    pub transport: String,
    /// The target-side address (`ip:port`) the connection came in on, where the
    /// backend shows it (the engine does; LIO's `info` does not).
    #[serde(default)]
    pub local_address: Option<String>,
    /// Negotiated digests, where the backend shows them (the engine).
    #[serde(default)]
    pub header_digest: Option<bool>,
    #[serde(default)]
    pub data_digest: Option<bool>,
    /// The initiator's TCP port, where the backend shows it (the engine).
    #[serde(default)]
    pub port: Option<u16>,
    /// `none`, `chap` or `mutual_chap`, where the backend knows it.
    #[serde(default)]
    pub authentication: Option<String>,
    /// MaxRecvDataSegmentLength the initiator declared (what the target may send).
    #[serde(default)]
    pub max_recv_data_segment_length: Option<u32>,
}

/// Facts about backing files and devices the desired state names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostFacts {
    pub files: BTreeMap<PathBuf, FileFact>,
    pub devices: BTreeMap<PathBuf, DeviceFact>,
}

/// What is at a file extent's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileFact {
    Missing {
        parent_exists: bool,
    },
    Regular {
        size: u64,
    },
    /// Something else (a directory, a device...), described.
    NotRegular {
        what: String,
    },
    /// Could not be inspected (permission...), with the error.
    Unknown {
        error: String,
    },
}

/// What is at a block extent's device path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceFact {
    Missing,
    Block {
        /// Logical block size (the kernel's default `block_size` after enable).
        logical_block_size: Option<u32>,
        /// The queue says rotational (the default `is_nonrot` is its negation).
        rotational: Option<bool>,
    },
    NotBlock {
        what: String,
    },
}
