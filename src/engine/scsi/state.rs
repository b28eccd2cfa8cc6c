//! Per-LU state of the command layer: unit attentions, reservations, mode parameters.
//!
//! It hangs off the `LogicalUnit` (its attachment slot), so every target that maps a
//! shared LU sees the same reservations and raises unit attentions for the same set of
//! I_T nexuses. One mutex guards it; no I/O happens while it is held.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, RwLock};

use super::mode::ModeParams;
use super::pr::PrState;
use super::sense::Asc;
use super::xcopy::CopyResults;
use super::Nexus;

/// An I_T nexus as SPC-4 names it: initiator port and target port. Reservations and
/// unit attentions are keyed by it; a reconnect with the same ISID is the same nexus.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ItNexus {
    /// `<initiator name>,i,0x<isid>`.
    pub initiator_port: String,
    /// The initiator name alone (for TransportIDs without ISID).
    pub initiator_name: String,
    pub isid: [u8; 6],
    /// `<target name>,t,0x<tpgt>`.
    pub target_port: String,
    /// Relative target port identifier (the TPGT).
    pub rel_port: u16,
}

impl ItNexus {
    pub fn of(nexus: &Nexus) -> Self {
        ItNexus {
            initiator_port: nexus.initiator_port_name(),
            initiator_name: nexus.initiator_name.clone(),
            isid: nexus.isid,
            target_port: nexus.target_port_name(),
            rel_port: nexus.tpgt,
        }
    }
}

/// Everything the command layer remembers about one LU.
#[derive(Default)]
pub(crate) struct LuState {
    /// Data writes take this shared; COMPARE AND WRITE (and other read-modify-write
    /// commands) take it exclusive, so their compare and write are one atomic step
    /// against every other write to the LU, whichever target it comes through.
    pub io: RwLock<()>,
    inner: Mutex<LuInner>,
}

#[derive(Default)]
pub(crate) struct LuInner {
    /// Nexuses that have sent a command to this LU and not gone away: the ones a
    /// "for every I_T nexus" unit attention goes to.
    pub known: HashSet<ItNexus>,
    /// Pending unit attentions per nexus, oldest first.
    pub ua: HashMap<ItNexus, VecDeque<Asc>>,
    /// SPC-2 RESERVE(6)/(10) holder.
    pub reserve2: Option<ItNexus>,
    pub pr: PrState,
    pub mode: ModeParams,
    /// Held EXTENDED COPY results.
    pub copy: CopyResults,
    /// Nexuses that sent PREVENT MEDIUM REMOVAL (kept for symmetry; the LU is not
    /// removable, so it prevents nothing).
    pub prevent: HashSet<ItNexus>,
}

impl LuState {
    /// Lock the state. A poisoned lock (a panic elsewhere while holding it) still
    /// yields the data: every update below leaves it consistent at each step.
    pub fn lock(&self) -> MutexGuard<'_, LuInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LuInner {
    /// Queue a unit attention for one nexus (once: a repeat of a pending one is dropped).
    pub fn raise_ua(&mut self, it: &ItNexus, asc: Asc) {
        let q = self.ua.entry(it.clone()).or_default();
        if !q.contains(&asc) {
            q.push_back(asc);
        }
    }

    /// Queue a unit attention for every known nexus except `except`.
    pub fn raise_ua_all(&mut self, asc: Asc, except: Option<&ItNexus>) {
        let targets: Vec<ItNexus> = self
            .known
            .iter()
            .filter(|n| Some(*n) != except)
            .cloned()
            .collect();
        for it in targets {
            self.raise_ua(&it, asc);
        }
    }

    /// Take the oldest pending unit attention of a nexus.
    pub fn take_ua(&mut self, it: &ItNexus) -> Option<Asc> {
        let q = self.ua.get_mut(it)?;
        let asc = q.pop_front();
        if q.is_empty() {
            self.ua.remove(it);
        }
        asc
    }

    /// Drop a specific pending unit attention (REPORT LUNS clears "reported LUNs
    /// data has changed").
    pub fn clear_ua(&mut self, it: &ItNexus, asc: Asc) {
        if let Some(q) = self.ua.get_mut(it) {
            q.retain(|a| *a != asc);
            if q.is_empty() {
                self.ua.remove(it);
            }
        }
    }

    /// The nexus is gone: what SPC says does not survive it goes.
    pub fn nexus_lost(&mut self, it: &ItNexus) {
        self.known.remove(it);
        self.ua.remove(it);
        self.prevent.remove(it);
        self.copy.nexus_lost(it);
        if self.reserve2.as_ref() == Some(it) {
            self.reserve2 = None;
        }
    }

    /// LOGICAL UNIT RESET or a target reset (SAM-5 §6.6, SPC-4 §5.13.1): SPC-2
    /// reservations are released, persistent ones survive; every nexus gets a reset
    /// unit attention.
    pub fn reset(&mut self) {
        self.reserve2 = None;
        self.prevent.clear();
        self.raise_ua_all(Asc::POWER_ON_RESET, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn it(n: u8) -> ItNexus {
        ItNexus::of(&Nexus {
            id: n as u64,
            initiator_name: format!("iqn.2000-01.test:i{n}"),
            isid: [0x80, 0, 0, 0, 0, n],
            target_name: "iqn.2000-01.test:t".into(),
            tpgt: 1,
        })
    }

    #[test]
    fn unit_attentions_queue_once_per_nexus_in_order() {
        let mut s = LuInner::default();
        s.known.insert(it(1));
        s.known.insert(it(2));
        s.raise_ua_all(Asc::MODE_PARAMETERS_CHANGED, Some(&it(1)));
        s.raise_ua(&it(2), Asc::MODE_PARAMETERS_CHANGED);
        s.raise_ua(&it(2), Asc::RESERVATIONS_PREEMPTED);
        assert_eq!(s.take_ua(&it(1)), None);
        assert_eq!(s.take_ua(&it(2)), Some(Asc::MODE_PARAMETERS_CHANGED));
        assert_eq!(s.take_ua(&it(2)), Some(Asc::RESERVATIONS_PREEMPTED));
        assert_eq!(s.take_ua(&it(2)), None);
    }

    #[test]
    fn nexus_loss_releases_spc2_reservation_and_uas() {
        let mut s = LuInner::default();
        s.known.insert(it(1));
        s.reserve2 = Some(it(1));
        s.raise_ua(&it(1), Asc::POWER_ON_RESET);
        s.nexus_lost(&it(1));
        assert!(s.reserve2.is_none());
        assert!(s.ua.is_empty());
        assert!(s.known.is_empty());
    }

    #[test]
    fn reset_reaches_every_known_nexus() {
        let mut s = LuInner::default();
        s.known.insert(it(1));
        s.known.insert(it(2));
        s.reserve2 = Some(it(2));
        s.reset();
        assert!(s.reserve2.is_none());
        assert_eq!(s.take_ua(&it(1)), Some(Asc::POWER_ON_RESET));
        assert_eq!(s.take_ua(&it(2)), Some(Asc::POWER_ON_RESET));
    }
}
