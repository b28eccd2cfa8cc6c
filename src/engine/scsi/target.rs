//! [`ScsiTarget`]: one target's LUN map and the dispatcher that runs a command.
//!
//! Order of checks for a command (SAM-5 §5.14, SPC-4 §5.13):
//! 1. the LUN: INQUIRY, REPORT LUNS and REQUEST SENSE work without one; anything else
//!    gets LOGICAL UNIT NOT SUPPORTED;
//! 2. a pending unit attention (except for INQUIRY, REPORT LUNS, REQUEST SENSE);
//! 3. the opcode / service action, the CDB length and the CONTROL byte;
//! 4. SPC-2 and persistent reservations;
//! 5. write protection (read-only extent or the control page's SWP);
//! 6. the handler.
//!
//! The residual is worked out here and only here (RFC 7143 §11.4.5): from the bytes
//! the CDB asks to move and the expected data transfer length.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use super::cdb::{op, Bytes};
use super::command::{self, Done, Exec, Fail, Flow};
use super::sense::{Asc, Sense, SenseKey};
use super::state::{ItNexus, LuState};
use super::{
    pr, spc, Command, DataDirection, Nexus, Residual, Response, ScsiService, Status, TmfFunction,
    TmfResponse,
};
use crate::engine::lu::LogicalUnit;

/// The parts of a target a handler may need (REPORT LUNS, VPD 0x83).
pub(crate) struct TargetView {
    pub luns: BTreeMap<u64, Arc<LogicalUnit>>,
}

/// A SCSI target device: the LUN map of one iSCSI target. Shared by all its sessions.
pub struct ScsiTarget {
    view: RwLock<Arc<TargetView>>,
    /// Nexuses that have sent this target a command and not gone away.
    nexuses: Mutex<HashSet<ItNexus>>,
}

impl std::fmt::Debug for ScsiTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let luns: Vec<u64> = self.view().luns.keys().copied().collect();
        f.debug_struct("ScsiTarget").field("luns", &luns).finish()
    }
}

impl ScsiTarget {
    pub fn new(luns: BTreeMap<u64, Arc<LogicalUnit>>) -> Self {
        ScsiTarget {
            view: RwLock::new(Arc::new(TargetView { luns })),
            nexuses: Mutex::new(HashSet::new()),
        }
    }

    /// Replace the LUN map (live reconfiguration). Every nexus that knows this target
    /// gets REPORTED LUNS DATA HAS CHANGED on each LU of the new map.
    pub fn set_luns(&self, luns: BTreeMap<u64, Arc<LogicalUnit>>) {
        let view = Arc::new(TargetView { luns });
        let old = {
            let mut w = self.view.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *w, view.clone())
        };
        let nexuses: Vec<ItNexus> = self.lock_nexuses().iter().cloned().collect();
        // An LU this target no longer maps: its I_T_L nexuses through this target are
        // gone (their SPC-2 reservations and unit attentions with them); the LU may
        // live on behind other targets.
        for lu in old.luns.values() {
            if view.luns.values().any(|l| Arc::ptr_eq(l, lu)) {
                continue;
            }
            if let Some(state) = lu_state(lu) {
                let mut s = state.lock();
                for it in &nexuses {
                    s.nexus_lost(it);
                }
            }
        }
        for lu in view.luns.values() {
            if let Some(state) = lu_state(lu) {
                let mut s = state.lock();
                for it in &nexuses {
                    s.raise_ua(it, Asc::REPORTED_LUNS_DATA_HAS_CHANGED);
                }
            }
        }
    }

    /// The LU mapped at `lun`, if any (the transport runs its commands on its workers).
    pub fn lu(&self, lun: u64) -> Option<Arc<LogicalUnit>> {
        self.view().luns.get(&lun).cloned()
    }

    /// The LUN map in force.
    pub fn luns(&self) -> BTreeMap<u64, Arc<LogicalUnit>> {
        self.view().luns.clone()
    }

    fn view(&self) -> Arc<TargetView> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn lock_nexuses(&self) -> std::sync::MutexGuard<'_, HashSet<ItNexus>> {
        self.nexuses.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The command layer's state of an LU.
pub(crate) fn lu_state(lu: &LogicalUnit) -> Option<&LuState> {
    lu.attachment::<LuState>()
}

impl ScsiTarget {
    /// The response of `cmd` when it ran but the sync that was to make its writes
    /// durable failed (`lu::deferring_durability`): CHECK CONDITION, MEDIUM ERROR /
    /// WRITE ERROR, in the LU's sense format.
    pub fn durability_failed(&self, cmd: &Command<'_>) -> Response {
        let view = self.view();
        let d_sense = view
            .luns
            .get(&cmd.lun)
            .and_then(|lu| lu_state(lu))
            .is_some_and(|s| s.lock().mode.d_sense);
        let flow = command::lookup(cmd.cdb).map_or(Flow::None, |spec| spec.flow);
        let sense = super::sbc::durability_failed(Bytes(cmd.cdb));
        finish(cmd, flow, None, Err(Fail::Check(sense)), d_sense)
    }
}

impl ScsiService for ScsiTarget {
    fn execute(&self, nexus: &Nexus, cmd: &Command<'_>) -> Response {
        let it = ItNexus::of(nexus);
        let view = self.view();
        self.lock_nexuses().insert(it.clone());
        let opcode = cmd.cdb.first().copied();
        let Some(lu) = view.luns.get(&cmd.lun) else {
            return no_lu(&view, &it, nexus, cmd);
        };
        let Some(state) = lu_state(lu) else {
            return finish(
                cmd,
                Flow::None,
                None,
                Err(Fail::Check(Sense::new(
                    SenseKey::HARDWARE_ERROR,
                    Asc::INTERNAL_TARGET_FAILURE,
                ))),
                false,
            );
        };

        // Unit attention and admission checks, under the LU state lock.
        let admitted = {
            let mut s = state.lock();
            s.known.insert(it.clone());
            let d_sense = s.mode.d_sense;
            let ua_exempt = matches!(
                opcode,
                Some(op::INQUIRY) | Some(op::REPORT_LUNS) | Some(op::REQUEST_SENSE)
            );
            if !ua_exempt {
                if let Some(asc) = s.take_ua(&it) {
                    drop(s);
                    return finish(
                        cmd,
                        Flow::None,
                        None,
                        Err(Fail::Check(Sense::unit_attention(asc))),
                        d_sense,
                    );
                }
            }
            admit(cmd, &it, lu, &s)
        };
        let spec = match admitted {
            Ok(spec) => spec,
            Err((flow, fail)) => {
                let d_sense = state.lock().mode.d_sense;
                return finish(cmd, flow, None, Err(fail), d_sense);
            }
        };
        if spec.opcode == op::REPORT_LUNS {
            // REPORT LUNS clears "reported LUNs data has changed" for this nexus on
            // every LU of the target.
            for other in view.luns.values() {
                if let Some(st) = lu_state(other) {
                    st.lock().clear_ua(&it, Asc::REPORTED_LUNS_DATA_HAS_CHANGED);
                }
            }
        }

        let mut exec = Exec {
            cdb: Bytes(cmd.cdb),
            cmd,
            nexus,
            it: &it,
            lu,
            state,
            target: &view,
            nominal: None,
        };
        let outcome = (spec.handler)(&mut exec);
        if let Err(fail) = &outcome {
            tracing::debug!(command = spec.name, lun = cmd.lun, ?fail, "command failed");
        }
        let nominal = exec.nominal;
        let d_sense = state.lock().mode.d_sense;
        finish(cmd, spec.flow, nominal, outcome, d_sense)
    }

    fn task_management(&self, nexus: &Nexus, function: TmfFunction, lun: u64) -> TmfResponse {
        let view = self.view();
        let it = ItNexus::of(nexus);
        match function {
            // Commands run to completion inside `execute`: nothing here is in flight,
            // so there is nothing for the SCSI layer to abort.
            TmfFunction::AbortTask { .. }
            | TmfFunction::AbortTaskSet
            | TmfFunction::ClearTaskSet => {
                if view.luns.contains_key(&lun) {
                    TmfResponse::FunctionComplete
                } else {
                    TmfResponse::LunDoesNotExist
                }
            }
            TmfFunction::ClearAca => TmfResponse::NotSupported,
            TmfFunction::LogicalUnitReset => match view.luns.get(&lun) {
                Some(lu) => {
                    if let Some(state) = lu_state(lu) {
                        let mut s = state.lock();
                        s.known.insert(it);
                        s.reset();
                    }
                    TmfResponse::FunctionComplete
                }
                None => TmfResponse::LunDoesNotExist,
            },
            TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset => {
                for lu in view.luns.values() {
                    if let Some(state) = lu_state(lu) {
                        let mut s = state.lock();
                        s.known.insert(it.clone());
                        s.reset();
                    }
                }
                TmfResponse::FunctionComplete
            }
        }
    }

    fn nexus_closed(&self, nexus: &Nexus) {
        let it = ItNexus::of(nexus);
        self.lock_nexuses().remove(&it);
        for lu in self.view().luns.values() {
            if let Some(state) = lu_state(lu) {
                state.lock().nexus_lost(&it);
            }
        }
    }
}

type Admitted = Result<&'static command::Spec, (Flow, Fail)>;

/// Steps 3-5 of the module doc: decode and admission checks that need the LU state.
fn admit(cmd: &Command<'_>, it: &ItNexus, lu: &LogicalUnit, s: &super::state::LuInner) -> Admitted {
    let spec = command::lookup(cmd.cdb).map_err(|e| (Flow::None, Fail::Check(e)))?;
    let flow = spec.flow;
    let len = spec.cdb_len();
    if cmd.cdb.len() < len {
        return Err((flow, Fail::Check(Sense::invalid_cdb(0, None))));
    }
    // CONTROL byte: NACA (bit 2) and LINK (bit 0) are not supported.
    let control = cmd.cdb[len - 1];
    if control & 0x04 != 0 {
        return Err((
            flow,
            Fail::Check(Sense::invalid_cdb(len as u16 - 1, Some(2))),
        ));
    }
    if control & 0x01 != 0 {
        return Err((
            flow,
            Fail::Check(Sense::invalid_cdb(len as u16 - 1, Some(0))),
        ));
    }
    if let Some(holder) = &s.reserve2 {
        // SPC-3 §5.6.1: while an SPC-2 reservation is held, PERSISTENT RESERVE IN/OUT
        // conflict whoever sends them; other commands from non-holders conflict unless
        // SPC-2 allows them.
        let persistent = matches!(
            spec.opcode,
            op::PERSISTENT_RESERVE_IN | op::PERSISTENT_RESERVE_OUT
        );
        if persistent || (holder != it && !spec.spc2_allowed) {
            return Err((flow, Fail::Conflict));
        }
    }
    if pr::conflicts(&s.pr, it, spec) {
        return Err((flow, Fail::Conflict));
    }
    if spec.writes_medium && (lu.readonly() || s.mode.swp) {
        return Err((flow, Fail::Check(Sense::write_protected())));
    }
    Ok(spec)
}

/// A command for a LUN the target does not map (SPC-4 §4.6.4 / SAM-5 §5.14.3).
fn no_lu(view: &TargetView, it: &ItNexus, nexus: &Nexus, cmd: &Command<'_>) -> Response {
    let cdb = Bytes(cmd.cdb);
    let outcome = match cdb.u8(0) {
        op::INQUIRY => spc::inquiry_no_lu(cdb),
        op::REPORT_LUNS => spc::report_luns_for(view, cdb),
        op::REQUEST_SENSE => {
            spc::request_sense_data(cdb, &Sense::illegal(Asc::LOGICAL_UNIT_NOT_SUPPORTED))
        }
        _ => Err(Fail::Check(Sense::illegal(Asc::LOGICAL_UNIT_NOT_SUPPORTED))),
    };
    let _ = (it, nexus);
    let flow = match cdb.u8(0) {
        op::INQUIRY | op::REPORT_LUNS | op::REQUEST_SENSE => Flow::In,
        _ => Flow::None,
    };
    finish(cmd, flow, None, outcome, false)
}

/// Build the Response: status, sense, Data-In cut to what the initiator expects, and
/// the residual.
fn finish(
    cmd: &Command<'_>,
    flow: Flow,
    nominal: Option<u64>,
    outcome: Result<Done, Fail>,
    d_sense: bool,
) -> Response {
    let reads = matches!(
        cmd.direction,
        DataDirection::Read | DataDirection::Bidirectional
    );
    let writes = matches!(
        cmd.direction,
        DataDirection::Write | DataDirection::Bidirectional
    );
    let expected = u64::from(cmd.expected_len);
    // What the initiator's buffer allows in this command's direction.
    let capacity = match flow {
        Flow::In if reads => expected,
        Flow::Out if writes => expected,
        Flow::None => expected,
        _ => 0,
    };
    match outcome {
        Ok(done) => {
            let produced = done.data.len() as u64;
            let nominal = match flow {
                Flow::In => nominal.unwrap_or(produced),
                Flow::Out => nominal.unwrap_or(0),
                Flow::None => 0,
            };
            let mut data_in = done.data;
            if flow == Flow::In {
                data_in.truncate(capacity.min(produced) as usize);
            } else {
                data_in.clear();
            }
            Response {
                status: done.status,
                sense: Vec::new(),
                data_in,
                residual: residual(nominal, capacity, expected),
            }
        }
        Err(fail) => {
            let nominal = nominal.unwrap_or(0);
            let (status, sense) = match fail {
                Fail::Check(s) => (Status::CHECK_CONDITION, s.encode(d_sense)),
                Fail::Conflict => (Status::RESERVATION_CONFLICT, Vec::new()),
            };
            Response {
                status,
                sense,
                data_in: Vec::new(),
                residual: residual(nominal, capacity, expected),
            }
        }
    }
}

/// RFC 7143 §11.4.5.1: underflow when the command moved less than expected, overflow
/// when it wanted more than the initiator's buffer allowed.
fn residual(nominal: u64, capacity: u64, expected: u64) -> Residual {
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    if nominal > capacity {
        Residual::Overflow(clamp(nominal - capacity))
    } else if expected > nominal {
        Residual::Underflow(clamp(expected - nominal))
    } else {
        Residual::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residual_rules() {
        assert_eq!(residual(512, 512, 512), Residual::None);
        assert_eq!(residual(512, 0, 0), Residual::Overflow(512));
        assert_eq!(residual(512, 200, 200), Residual::Overflow(312));
        assert_eq!(residual(512, 10000, 10000), Residual::Underflow(9488));
        assert_eq!(residual(0, 8, 8), Residual::Underflow(8));
        // Direction mismatch: nothing can move, the whole transfer overflows.
        assert_eq!(residual(512, 0, 512), Residual::Overflow(512));
    }
}
