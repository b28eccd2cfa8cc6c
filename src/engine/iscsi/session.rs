//! Sessions: identity (ISID, TSIH, initiator and target names), the CmdSN window
//! shared by a session's connections, the registry that finds a session for a new
//! connection (MC/S) or reinstates it (same initiator port), and the one place that
//! ends a session and tells the SCSI layer its nexus is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::engine::iscsi::login::CMD_WINDOW;
use crate::engine::iscsi::negotiate::{ConnParams, SessionParams};
use crate::engine::iscsi::pdu::{sn_le, sn_lt};
use crate::engine::scsi::{Nexus, ScsiService, ScsiTarget};

/// Where a non-immediate command's CmdSN falls (RFC 7143 §3.2.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdSnCheck {
    /// In the window and new: deliver.
    Deliver,
    /// Outside the window, or already seen: ignore silently.
    Ignore,
}

/// The command window of a session.
#[derive(Debug)]
pub struct CmdWindow {
    exp_cmd_sn: u32,
    /// CmdSNs received ahead of ExpCmdSN (gaps fill in from other connections).
    ahead: BTreeSet<u32>,
}

impl CmdWindow {
    pub fn new(initial: u32) -> CmdWindow {
        CmdWindow {
            exp_cmd_sn: initial,
            ahead: BTreeSet::new(),
        }
    }

    pub fn exp_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn
    }

    pub fn max_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.wrapping_add(CMD_WINDOW - 1)
    }

    /// Account for a non-immediate PDU's CmdSN.
    pub fn check(&mut self, cmd_sn: u32) -> CmdSnCheck {
        if sn_lt(cmd_sn, self.exp_cmd_sn) || sn_lt(self.max_cmd_sn(), cmd_sn) {
            return CmdSnCheck::Ignore;
        }
        if cmd_sn == self.exp_cmd_sn {
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
            while self.ahead.remove(&self.exp_cmd_sn) {
                self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
            }
            CmdSnCheck::Deliver
        } else if self.ahead.insert(cmd_sn) {
            CmdSnCheck::Deliver
        } else {
            CmdSnCheck::Ignore
        }
    }

    /// ABORT TASK for a task never received (RFC 7143 §11.5.1): a RefCmdSN inside the
    /// window that has not arrived is considered received (a gap the initiator gave
    /// up on). True when that happened.
    pub fn absorb_missing(&mut self, sn: u32) -> bool {
        let in_window = sn_le(self.exp_cmd_sn, sn) && sn_le(sn, self.max_cmd_sn());
        in_window && !self.ahead.contains(&sn) && self.check(sn) == CmdSnCheck::Deliver
    }
}

/// One connection as the session and the registry see it.
#[derive(Debug)]
pub struct ConnEntry {
    pub cid: u16,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The listening address it came in on (a portal of the model).
    pub listen: SocketAddr,
    pub params: ConnParams,
    /// A handle on the socket to close the connection from elsewhere.
    pub stream: TcpStream,
}

/// What a session is for. One enum rather than a target name and a SCSI side that
/// would both have to be `None` (or both `Some`) together.
#[derive(Debug)]
pub enum SessionKind {
    /// SendTargets only: no target, no LUNs, no nexus (RFC 7143 §4.3).
    Discovery,
    /// Logged in to `target`: SCSI commands go to `scsi` on this session's `nexus`.
    Normal {
        target: String,
        /// The target's LUN map.
        scsi: Arc<ScsiTarget>,
        nexus: Nexus,
    },
}

/// What a session's connections share.
#[derive(Debug)]
pub struct Session {
    pub tsih: u16,
    pub initiator: String,
    pub initiator_alias: Option<String>,
    pub isid: [u8; 6],
    pub kind: SessionKind,
    pub portal_group_tag: u16,
    pub params: SessionParams,
    pub window: Mutex<CmdWindow>,
    pub conns: Mutex<Vec<ConnEntry>>,
    pub started: SystemTime,
}

impl Session {
    /// The target a normal session is logged in to; `None` for discovery.
    pub fn target_name(&self) -> Option<&str> {
        match &self.kind {
            SessionKind::Discovery => None,
            SessionKind::Normal { target, .. } => Some(target),
        }
    }

    pub fn window(&self) -> MutexGuard<'_, CmdWindow> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn conns(&self) -> MutexGuard<'_, Vec<ConnEntry>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Close every connection of the session (the connection threads see EOF).
    pub fn shutdown_all(&self) {
        for c in self.conns().iter() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }

    /// Close one connection by CID. False when there is none.
    pub fn shutdown_conn(&self, cid: u16) -> bool {
        match self.conns().iter().find(|c| c.cid == cid) {
            Some(c) => {
                let _ = c.stream.shutdown(Shutdown::Both);
                true
            }
            None => false,
        }
    }
}

/// All sessions of the engine.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    sessions: BTreeMap<u16, Arc<Session>>,
    last_tsih: u16,
    next_nexus: u64,
}

/// Why a connection could not join a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    NoSession,
    TooManyConnections,
    Mismatch,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, tsih: u16) -> Option<Arc<Session>> {
        self.lock().sessions.get(&tsih).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.lock().sessions.values().cloned().collect()
    }

    pub fn next_nexus_id(&self) -> u64 {
        let mut g = self.lock();
        g.next_nexus += 1;
        g.next_nexus
    }

    /// Register a new session, reinstating (closing) any session of the same
    /// initiator port (initiator name + ISID) to the same target (RFC 7143 §6.3.5).
    /// Returns the session with its TSIH assigned.
    pub fn create(&self, build: impl FnOnce(u16) -> Session) -> Arc<Session> {
        let mut g = self.lock();
        let mut tsih = g.last_tsih;
        loop {
            tsih = tsih.wrapping_add(1);
            if tsih != 0 && !g.sessions.contains_key(&tsih) {
                break;
            }
        }
        g.last_tsih = tsih;
        let session = Arc::new(build(tsih));
        let old: Vec<u16> = g
            .sessions
            .values()
            .filter(|s| {
                s.initiator == session.initiator
                    && s.isid == session.isid
                    && s.target_name() == session.target_name()
            })
            .map(|s| s.tsih)
            .collect();
        for t in old {
            if let Some(s) = g.sessions.remove(&t) {
                tracing::info!(tsih = t, initiator = %s.initiator, "session reinstated: closing the old one");
                end(&s);
            }
        }
        g.sessions.insert(tsih, session.clone());
        session
    }

    /// Add a connection to an existing session (MC/S). The caller checked names.
    pub fn join(
        &self,
        tsih: u16,
        initiator: &str,
        isid: [u8; 6],
        entry: ConnEntry,
    ) -> Result<Arc<Session>, JoinError> {
        let g = self.lock();
        let s = g.sessions.get(&tsih).ok_or(JoinError::NoSession)?;
        if s.initiator != initiator || s.isid != isid {
            return Err(JoinError::Mismatch);
        }
        let mut conns = s.conns();
        // A login with the CID of a live connection reinstates that connection.
        if let Some(pos) = conns.iter().position(|c| c.cid == entry.cid) {
            let old = conns.remove(pos);
            let _ = old.stream.shutdown(Shutdown::Both);
        }
        if conns.len() >= usize::from(s.params.max_connections) {
            return Err(JoinError::TooManyConnections);
        }
        conns.push(entry);
        drop(conns);
        Ok(s.clone())
    }

    /// A connection ended. The session ends with its last connection.
    pub fn connection_closed(&self, session: &Arc<Session>, cid: u16, stream_id: SocketAddr) {
        let mut g = self.lock();
        let now_empty = {
            let mut conns = session.conns();
            conns.retain(|c| !(c.cid == cid && c.peer == stream_id));
            conns.is_empty()
        };
        if now_empty {
            if let Some(s) = g.sessions.get(&session.tsih) {
                if Arc::ptr_eq(s, session) {
                    g.sessions.remove(&session.tsih);
                    end(session);
                }
            }
        }
    }

    /// End a whole session now (logout with reason "close session", a reload that
    /// removed its target). Its connections are shut down.
    pub fn remove(&self, session: &Arc<Session>) {
        let mut g = self.lock();
        let registered = g
            .sessions
            .get(&session.tsih)
            .is_some_and(|s| Arc::ptr_eq(s, session));
        if registered {
            g.sessions.remove(&session.tsih);
            end(session);
        } else {
            // Already ended elsewhere: still make sure its sockets are closed.
            session.shutdown_all();
        }
    }
}

/// The SCSI layer learns the nexus is gone: exactly once per session, here.
fn end(session: &Session) {
    session.shutdown_all();
    if let SessionKind::Normal { scsi, nexus, .. } = &session.kind {
        scsi.nexus_closed(nexus);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accepts_in_order_and_gaps_and_ignores_outside() {
        let mut w = CmdWindow::new(10);
        assert_eq!(w.check(10), CmdSnCheck::Deliver);
        assert_eq!(w.exp_cmd_sn(), 11);
        assert_eq!(w.check(9), CmdSnCheck::Ignore);
        assert_eq!(w.check(13), CmdSnCheck::Deliver);
        assert_eq!(w.check(13), CmdSnCheck::Ignore);
        assert_eq!(w.exp_cmd_sn(), 11);
        assert_eq!(w.check(11), CmdSnCheck::Deliver);
        assert_eq!(w.check(12), CmdSnCheck::Deliver);
        assert_eq!(w.exp_cmd_sn(), 14);
        assert_eq!(w.check(14 + CMD_WINDOW), CmdSnCheck::Ignore);
        // A RefCmdSN that never arrived is absorbed once; a completed one is not.
        assert!(w.absorb_missing(15));
        assert!(!w.absorb_missing(15));
        assert!(!w.absorb_missing(12));
    }

    #[test]
    fn window_wraps() {
        let mut w = CmdWindow::new(u32::MAX);
        assert_eq!(w.check(u32::MAX), CmdSnCheck::Deliver);
        assert_eq!(w.exp_cmd_sn(), 0);
        assert_eq!(w.check(0), CmdSnCheck::Deliver);
    }
}
