//! Persistent reservations (SPC-4 §5.13, §6.15, §6.16): registrations keyed by I_T
//! nexus, one reservation of any of the six types, the generation counter, the
//! conflict rules for other commands, and the unit attentions that tell other
//! registrants what happened.
//!
//! APTPL is accepted and reported, but the state lives in memory only: it does not
//! survive a restart of the engine (documented in docs/scsi.md).

use super::cdb::{Bytes, PutBe};
use super::command::{Access, Done, Exec, Fail, Outcome, Spec};
use super::sense::{Asc, Sense};
use super::state::{ItNexus, LuInner};

/// Reservation types (SPC-4 table 175).
pub(crate) mod kind {
    pub const WRITE_EXCLUSIVE: u8 = 0x1;
    pub const EXCLUSIVE_ACCESS: u8 = 0x3;
    pub const WRITE_EXCLUSIVE_RO: u8 = 0x5;
    pub const EXCLUSIVE_ACCESS_RO: u8 = 0x6;
    pub const WRITE_EXCLUSIVE_AR: u8 = 0x7;
    pub const EXCLUSIVE_ACCESS_AR: u8 = 0x8;

    pub fn valid(t: u8) -> bool {
        matches!(t, 0x1 | 0x3 | 0x5 | 0x6 | 0x7 | 0x8)
    }
    /// Every registrant is a holder.
    pub fn all_registrants(t: u8) -> bool {
        matches!(t, WRITE_EXCLUSIVE_AR | EXCLUSIVE_ACCESS_AR)
    }
    /// Registrants (not only the holder) may access the medium.
    pub fn registrants_allowed(t: u8) -> bool {
        matches!(
            t,
            WRITE_EXCLUSIVE_RO | EXCLUSIVE_ACCESS_RO | WRITE_EXCLUSIVE_AR | EXCLUSIVE_ACCESS_AR
        )
    }
    /// Write Exclusive family: reads stay open to everyone.
    pub fn write_exclusive(t: u8) -> bool {
        matches!(t, WRITE_EXCLUSIVE | WRITE_EXCLUSIVE_RO | WRITE_EXCLUSIVE_AR)
    }
}

/// Service actions of PERSISTENT RESERVE OUT.
mod sa {
    pub const REGISTER: u8 = 0x00;
    pub const RESERVE: u8 = 0x01;
    pub const RELEASE: u8 = 0x02;
    pub const CLEAR: u8 = 0x03;
    pub const PREEMPT: u8 = 0x04;
    pub const PREEMPT_AND_ABORT: u8 = 0x05;
    pub const REGISTER_AND_IGNORE: u8 = 0x06;
    pub const REGISTER_AND_MOVE: u8 = 0x07;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Registration {
    pub it: ItNexus,
    pub key: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reservation {
    /// The holder; for the all-registrants types, the nexus that reserved (every
    /// registrant holds it).
    pub holder: ItNexus,
    pub kind: u8,
}

/// Persistent reservation state of one LU.
#[derive(Debug, Default, Clone)]
pub(crate) struct PrState {
    pub generation: u32,
    /// In registration order.
    pub registrations: Vec<Registration>,
    pub reservation: Option<Reservation>,
    /// Activate Persist Through Power Loss, as last set by a registration.
    pub aptpl: bool,
}

impl PrState {
    pub fn key_of(&self, it: &ItNexus) -> Option<u64> {
        self.registrations
            .iter()
            .find(|r| &r.it == it)
            .map(|r| r.key)
    }

    fn is_holder(&self, it: &ItNexus) -> bool {
        match &self.reservation {
            None => false,
            Some(r) if kind::all_registrants(r.kind) => self.key_of(it).is_some(),
            Some(r) => &r.holder == it,
        }
    }

    fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    fn unregister(&mut self, it: &ItNexus) {
        self.registrations.retain(|r| &r.it != it);
    }
}

/// SPC-4 §5.13.1: may `it` run `spec` while another nexus holds a reservation?
pub(crate) fn conflicts(pr: &PrState, it: &ItNexus, spec: &Spec) -> bool {
    let Some(res) = &pr.reservation else {
        return false;
    };
    if pr.is_holder(it) {
        return false;
    }
    let registered = pr.key_of(it).is_some();
    match spec.access {
        Access::Always | Access::PrOut => false,
        // RESERVE/RELEASE while a persistent reservation exists: conflict (SPC-4
        // §5.13.3), decided in their handlers too.
        Access::Reserve2 => true,
        Access::Read => {
            !(kind::write_exclusive(res.kind)
                || (registered && kind::registrants_allowed(res.kind)))
        }
        Access::Write => !(registered && kind::registrants_allowed(res.kind)),
    }
}

/// PERSISTENT RESERVE IN.
pub(crate) fn persistent_reserve_in(x: &mut Exec<'_>) -> Outcome {
    let action = x.cdb.u8(1) & 0x1f;
    let alloc = usize::from(x.cdb.be16(7));
    let s = x.state.lock();
    let pr = &s.pr;
    let mut d = Vec::new();
    match action {
        0x00 => {
            // READ KEYS
            d.put32(pr.generation);
            d.put32((pr.registrations.len() * 8) as u32);
            for r in &pr.registrations {
                d.put64(r.key);
            }
        }
        0x01 => {
            // READ RESERVATION
            d.put32(pr.generation);
            match &pr.reservation {
                None => d.put32(0),
                Some(r) => {
                    d.put32(16);
                    let key = if kind::all_registrants(r.kind) {
                        0
                    } else {
                        pr.key_of(&r.holder).unwrap_or(0)
                    };
                    d.put64(key);
                    d.put32(0);
                    d.push(0);
                    d.push(r.kind & 0x0f); // scope 0 (LU)
                    d.put16(0);
                }
            }
        }
        0x02 => {
            // REPORT CAPABILITIES: length 8; CRH = 0 (RESERVE/RELEASE conflict while
            // persistent reservations are in use), ATP_C = 0, SIP_C = 0, PTPL_C = 1.
            d.put16(8);
            d.push(0x01);
            // TMV = 1, ALLOW COMMANDS 001b, PTPL_A.
            d.push(0x80 | 0x10 | u8::from(pr.aptpl));
            // Type mask: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX; EX_AC_AR.
            d.push(0x80 | 0x40 | 0x20 | 0x08 | 0x02);
            d.push(0x01);
            d.put16(0);
        }
        0x03 => {
            // READ FULL STATUS
            d.put32(pr.generation);
            d.put32(0);
            for r in &pr.registrations {
                let holder = pr.is_holder(&r.it);
                d.put64(r.key);
                d.put32(0);
                d.push(u8::from(holder)); // ALL_TG_PT = 0, R_HOLDER
                d.push(match (&pr.reservation, holder) {
                    (Some(res), true) => res.kind & 0x0f,
                    _ => 0,
                });
                d.put32(0);
                d.put16(r.it.rel_port);
                let tid = transport_id(&r.it);
                d.put32(tid.len() as u32);
                d.extend_from_slice(&tid);
            }
            let len = (d.len() - 8) as u32;
            d.set32(4, len);
        }
        _ => return Err(Sense::invalid_cdb(1, Some(4)).into()),
    }
    Ok(Done::data(d, alloc))
}

/// iSCSI TransportID with ISID (SPC-4 §7.6.4.6, format 01b): `name,i,0x<isid>`.
fn transport_id(it: &ItNexus) -> Vec<u8> {
    let mut name = it.initiator_port.as_bytes().to_vec();
    name.push(0);
    while name.len() % 4 != 0 {
        name.push(0);
    }
    let mut d = vec![0x40 | 0x05, 0];
    d.put16(name.len() as u16);
    d.extend_from_slice(&name);
    d
}

/// Parse an iSCSI TransportID into (initiator name, ISID if given).
fn parse_transport_id(b: &[u8]) -> Option<(String, Option<String>)> {
    let p = Bytes(b);
    if p.len() < 4 || p.u8(0) & 0x0f != 0x05 {
        return None;
    }
    let format = p.u8(0) >> 6;
    let len = usize::from(p.be16(2));
    let body = p.slice(4, len);
    let text = body.split(|&c| c == 0).next()?;
    let text = std::str::from_utf8(text).ok()?;
    match format {
        0 => Some((text.to_string(), None)),
        1 => {
            let (name, isid) = text.split_once(",i,0x")?;
            Some((name.to_string(), Some(isid.to_ascii_lowercase())))
        }
        _ => None,
    }
}

/// PERSISTENT RESERVE OUT.
pub(crate) fn persistent_reserve_out(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    let action = cdb.u8(1) & 0x1f;
    let scope = cdb.u8(2) >> 4;
    let rtype = cdb.u8(2) & 0x0f;
    let param_len = cdb.be32(5) as usize;
    x.nominal = Some(param_len as u64);
    let data = x.data_out();
    if data.len() < param_len {
        return Err(Sense::param_list_length().into());
    }
    let p = Bytes(&data[..param_len]);
    if action == sa::REGISTER_AND_MOVE {
        return register_and_move(x, p, scope, rtype);
    }
    if param_len != 24 {
        return Err(Sense::param_list_length().into());
    }
    let key = p.be64(0);
    let sa_key = p.be64(8);
    let flags = p.u8(20);
    let spec_i_pt = flags & 0x08 != 0;
    let all_tg_pt = flags & 0x04 != 0;
    let aptpl = flags & 0x01 != 0;
    let it = x.it;
    let mut guard = x.state.lock();
    let s: &mut LuInner = &mut guard;
    match action {
        sa::REGISTER | sa::REGISTER_AND_IGNORE => {
            if spec_i_pt {
                return Err(Sense::invalid_param(20, Some(3)).into());
            }
            if all_tg_pt {
                return Err(Sense::invalid_param(20, Some(2)).into());
            }
            let current = s.pr.key_of(it);
            if action == sa::REGISTER {
                let expected = current.unwrap_or(0);
                if key != expected {
                    return Err(Fail::Conflict);
                }
            }
            match (current, sa_key) {
                (None, 0) => {}
                (None, k) => {
                    s.pr.registrations.push(Registration {
                        it: it.clone(),
                        key: k,
                    });
                    s.pr.aptpl = aptpl;
                    s.pr.bump();
                }
                (Some(_), 0) => {
                    unregister(s, it);
                    s.pr.aptpl = aptpl;
                    s.pr.bump();
                }
                (Some(_), k) => {
                    for r in s.pr.registrations.iter_mut().filter(|r| &r.it == it) {
                        r.key = k;
                    }
                    s.pr.aptpl = aptpl;
                    s.pr.bump();
                }
            }
            Ok(Done::good())
        }
        sa::RESERVE => {
            check_registered(&s.pr, it, key)?;
            check_scope_type(scope, rtype)?;
            if s.reserve2.is_some() {
                return Err(Fail::Conflict);
            }
            match &s.pr.reservation {
                Some(r) => {
                    if s.pr.is_holder(it) && r.kind == rtype {
                        Ok(Done::good())
                    } else {
                        Err(Fail::Conflict)
                    }
                }
                None => {
                    s.pr.reservation = Some(Reservation {
                        holder: it.clone(),
                        kind: rtype,
                    });
                    Ok(Done::good())
                }
            }
        }
        sa::RELEASE => {
            check_registered(&s.pr, it, key)?;
            let Some(r) = s.pr.reservation.clone() else {
                return Ok(Done::good());
            };
            if !s.pr.is_holder(it) {
                return Ok(Done::good());
            }
            if scope != 0 || rtype != r.kind {
                return Err(Sense::illegal(Asc::INVALID_RELEASE_OF_PERSISTENT_RESERVATION).into());
            }
            s.pr.reservation = None;
            if r.kind != kind::WRITE_EXCLUSIVE && r.kind != kind::EXCLUSIVE_ACCESS {
                notify_registrants(s, it, Asc::RESERVATIONS_RELEASED);
            }
            Ok(Done::good())
        }
        sa::CLEAR => {
            check_registered(&s.pr, it, key)?;
            notify_registrants(s, it, Asc::RESERVATIONS_PREEMPTED);
            s.pr.reservation = None;
            s.pr.registrations.clear();
            s.pr.bump();
            Ok(Done::good())
        }
        sa::PREEMPT | sa::PREEMPT_AND_ABORT => {
            check_registered(&s.pr, it, key)?;
            preempt(s, it, sa_key, scope, rtype)
        }
        _ => Err(Sense::invalid_cdb(1, Some(4)).into()),
    }
}

/// Unregister `it`, with what that does to a reservation it holds (SPC-4 §5.13.10.3).
fn unregister(s: &mut LuInner, it: &ItNexus) {
    let held = s.pr.reservation.clone();
    s.pr.unregister(it);
    if let Some(r) = held {
        if kind::all_registrants(r.kind) {
            // The reservation lives while any registrant remains.
            if s.pr.registrations.is_empty() {
                s.pr.reservation = None;
            }
        } else if r.holder == *it {
            s.pr.reservation = None;
            if matches!(r.kind, kind::WRITE_EXCLUSIVE_RO | kind::EXCLUSIVE_ACCESS_RO) {
                notify_registrants(s, it, Asc::RESERVATIONS_RELEASED);
            }
        }
    }
}

fn check_registered(pr: &PrState, it: &ItNexus, key: u64) -> Result<(), Fail> {
    match pr.key_of(it) {
        Some(k) if k == key => Ok(()),
        _ => Err(Fail::Conflict),
    }
}

fn check_scope_type(scope: u8, rtype: u8) -> Result<(), Fail> {
    if scope != 0 {
        return Err(Sense::invalid_cdb(2, Some(7)).into());
    }
    if !kind::valid(rtype) {
        return Err(Sense::invalid_cdb(2, Some(3)).into());
    }
    Ok(())
}

/// Unit attention to every registrant other than `except`.
fn notify_registrants(s: &mut LuInner, except: &ItNexus, asc: Asc) {
    let others: Vec<ItNexus> =
        s.pr.registrations
            .iter()
            .map(|r| r.it.clone())
            .filter(|n| n != except)
            .collect();
    for n in others {
        s.raise_ua(&n, asc);
    }
}

/// PREEMPT (SPC-4 §5.13.11.4).
fn preempt(s: &mut LuInner, it: &ItNexus, sa_key: u64, scope: u8, rtype: u8) -> Outcome {
    let res = s.pr.reservation.clone();
    let all_reg = res.as_ref().is_some_and(|r| kind::all_registrants(r.kind));
    if sa_key == 0 && !all_reg {
        return Err(Sense::invalid_param(8, None).into());
    }
    // Which registrations go.
    let victims: Vec<ItNexus> =
        s.pr.registrations
            .iter()
            .filter(|r| {
                &r.it != it
                    && (if all_reg && sa_key == 0 {
                        true
                    } else {
                        r.key == sa_key
                    })
            })
            .map(|r| r.it.clone())
            .collect();
    let holder_key = res
        .as_ref()
        .filter(|r| !kind::all_registrants(r.kind))
        .and_then(|r| s.pr.key_of(&r.holder));
    let takes_reservation = match &res {
        None => false,
        Some(_) if all_reg => sa_key == 0,
        Some(_) => holder_key == Some(sa_key),
    };
    if victims.is_empty() && !takes_reservation {
        return Err(Fail::Conflict);
    }
    if takes_reservation {
        check_scope_type(scope, rtype)?;
    }
    for v in &victims {
        s.pr.unregister(v);
        s.raise_ua(v, Asc::REGISTRATIONS_PREEMPTED);
    }
    if takes_reservation {
        let old = res.as_ref().map(|r| r.kind);
        s.pr.reservation = Some(Reservation {
            holder: it.clone(),
            kind: rtype,
        });
        if old != Some(rtype) {
            notify_registrants(s, it, Asc::RESERVATIONS_RELEASED);
        }
    }
    s.pr.bump();
    Ok(Done::good())
}

/// REGISTER AND MOVE (SPC-4 §5.13.8): the holder hands its reservation to another
/// initiator port on a target port of this target, registering it with `sa_key`.
fn register_and_move(x: &Exec<'_>, p: Bytes<'_>, scope: u8, rtype: u8) -> Outcome {
    if p.len() < 24 {
        return Err(Sense::param_list_length().into());
    }
    let key = p.be64(0);
    let sa_key = p.be64(8);
    let unreg = p.bit(17, 1);
    let aptpl = p.bit(17, 0);
    let rel_port = p.be16(18);
    let tid_len = p.be32(20) as usize;
    if 24 + tid_len > p.len() {
        return Err(Sense::param_list_length().into());
    }
    let it = x.it;
    let mut guard = x.state.lock();
    let s: &mut LuInner = &mut guard;
    check_registered(&s.pr, it, key)?;
    let Some(res) = s.pr.reservation.clone() else {
        return Err(Fail::Conflict);
    };
    if !s.pr.is_holder(it) {
        return Err(Fail::Conflict);
    }
    if kind::all_registrants(res.kind) {
        return Err(Fail::Conflict);
    }
    check_scope_type(scope, rtype)?;
    if sa_key == 0 {
        return Err(Sense::invalid_param(8, None).into());
    }
    let Some((name, isid)) = parse_transport_id(p.slice(24, tid_len)) else {
        return Err(Sense::invalid_param(24, None).into());
    };
    // The destination nexus: an initiator port this LU has seen through the given
    // relative target port.
    let dest = s
        .known
        .iter()
        .chain(s.pr.registrations.iter().map(|r| &r.it))
        .find(|n| {
            n.rel_port == rel_port
                && n.initiator_name == name
                && isid
                    .as_deref()
                    .is_none_or(|i| n.initiator_port.ends_with(&format!(",i,0x{i}")))
        })
        .cloned();
    let Some(dest) = dest else {
        return Err(Sense::invalid_param(18, None).into());
    };
    if &dest == it {
        return Err(Sense::invalid_param(24, None).into());
    }
    match s.pr.registrations.iter_mut().find(|r| r.it == dest) {
        Some(r) => r.key = sa_key,
        None => s.pr.registrations.push(Registration {
            it: dest.clone(),
            key: sa_key,
        }),
    }
    s.pr.reservation = Some(Reservation {
        holder: dest,
        kind: rtype,
    });
    if unreg {
        s.pr.unregister(it);
    }
    s.pr.aptpl = aptpl;
    s.pr.bump();
    Ok(Done::good())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::scsi::Nexus;

    fn it(n: u8) -> ItNexus {
        ItNexus::of(&Nexus {
            id: u64::from(n),
            initiator_name: format!("iqn.2000-01.test:i{n}"),
            isid: [0x23, 0, 0, 0, 0, n],
            target_name: "iqn.2000-01.test:t".into(),
            tpgt: 1,
        })
    }

    #[test]
    fn transport_id_roundtrip() {
        let t = transport_id(&it(3));
        assert_eq!(t[0], 0x45);
        assert_eq!(t.len() % 4, 0);
        let (name, isid) = parse_transport_id(&t).unwrap();
        assert_eq!(name, "iqn.2000-01.test:i3");
        assert_eq!(isid.as_deref(), Some("230000000003"));
        assert!(parse_transport_id(&[0x01, 0, 0, 0]).is_none());
        assert!(parse_transport_id(&[]).is_none());
    }

    #[test]
    fn all_registrants_reservation_held_by_every_registrant() {
        let mut pr = PrState::default();
        pr.registrations.push(Registration { it: it(1), key: 1 });
        pr.registrations.push(Registration { it: it(2), key: 2 });
        pr.reservation = Some(Reservation {
            holder: it(1),
            kind: kind::WRITE_EXCLUSIVE_AR,
        });
        assert!(pr.is_holder(&it(2)));
        assert!(!pr.is_holder(&it(3)));
    }
}
