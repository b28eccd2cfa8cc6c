//! MODE SENSE / MODE SELECT (SPC-4 §6.11-6.14, §7.5): the read-write error recovery,
//! caching and control pages; current, changeable and default values; block
//! descriptors (short and long); DBD.
//!
//! Changeable: WCE (caching page: whether writes may sit in a cache until SYNCHRONIZE
//! CACHE), D_SENSE (control page: descriptor-format sense) and SWP (control page:
//! software write protect). Saving is not supported: PC = saved values and SP = 1 are
//! refused as SPC-4 says. Values live in memory for the life of the LU.

use super::cdb::{op, Bytes, PutBe};
use super::command::{Done, Exec, Outcome};
use super::sense::{Asc, Sense};
use crate::engine::lu::LogicalUnit;

/// The LU's current mode parameters.
/// Defaults: WCE from the LU, D_SENSE = 0, SWP = 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ModeParams {
    /// Caching page WCE as set by MODE SELECT; `None`: the LU's own setting (the
    /// model's `write_back`).
    pub wce: Option<bool>,
    /// Control page D_SENSE.
    pub d_sense: bool,
    /// Control page SWP.
    pub swp: bool,
}

const PAGE_RW_ERROR_RECOVERY: u8 = 0x01;
const PAGE_CACHING: u8 = 0x08;
const PAGE_CONTROL: u8 = 0x0a;
const ALL_PAGES: u8 = 0x3f;
const PAGES: &[u8] = &[PAGE_RW_ERROR_RECOVERY, PAGE_CACHING, PAGE_CONTROL];

impl ModeParams {
    /// Whether writes may be cached (WCE) on `lu`.
    pub fn write_cache(&self, lu: &LogicalUnit) -> bool {
        self.wce.unwrap_or(lu.write_back())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Values {
    Current,
    Changeable,
    Default,
}

/// A page's bytes (page code and length included). `default_wce` is the LU's own
/// write cache setting.
fn page(code: u8, p: &ModeParams, which: Values, default_wce: bool) -> Vec<u8> {
    let current = which == Values::Current;
    let changeable = which == Values::Changeable;
    let defaults = ModeParams::default();
    let p = if current { p } else { &defaults };
    let wce = p.wce.unwrap_or(default_wce);
    match code {
        PAGE_RW_ERROR_RECOVERY => {
            let mut d = vec![0u8; 12];
            d[0] = PAGE_RW_ERROR_RECOVERY;
            d[1] = 0x0a;
            d
        }
        PAGE_CACHING => {
            let mut d = vec![0u8; 20];
            d[0] = PAGE_CACHING;
            d[1] = 0x12;
            if changeable || wce {
                d[2] = 0x04; // WCE
            }
            d
        }
        _ => {
            let mut d = vec![0u8; 12];
            d[0] = PAGE_CONTROL;
            d[1] = 0x0a;
            if changeable {
                d[2] = 0x04; // D_SENSE
                d[4] = 0x08; // SWP
            } else {
                // TST 000b, GLTSD = 1 (no implicit log saving), D_SENSE.
                d[2] = 0x02 | if p.d_sense { 0x04 } else { 0 };
                // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering; QERR 00b.
                d[3] = 0x10;
                d[4] = if p.swp { 0x08 } else { 0 };
                // BUSY TIMEOUT PERIOD: unlimited.
                d.set16(8, 0xffff);
            }
            d
        }
    }
}

/// MODE SENSE(6) / MODE SENSE(10).
pub(crate) fn mode_sense(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    let is6 = cdb.u8(0) == op::MODE_SENSE_6;
    let dbd = cdb.bit(1, 3);
    let llbaa = !is6 && cdb.bit(1, 4);
    let pc = cdb.u8(2) >> 6;
    let code = cdb.u8(2) & 0x3f;
    let subpage = cdb.u8(3);
    let alloc = if is6 {
        usize::from(cdb.u8(4))
    } else {
        usize::from(cdb.be16(7))
    };
    let which = match pc {
        0 => Values::Current,
        1 => Values::Changeable,
        2 => Values::Default,
        _ => {
            return Err(Sense::illegal(Asc::SAVING_PARAMETERS_NOT_SUPPORTED).into());
        }
    };
    if subpage != 0 && subpage != 0xff {
        return Err(Sense::invalid_cdb(3, None).into());
    }
    let codes: Vec<u8> = if code == ALL_PAGES {
        PAGES.to_vec()
    } else if PAGES.contains(&code) {
        vec![code]
    } else {
        return Err(Sense::invalid_cdb(2, Some(5)).into());
    };
    let params = x.state.lock().mode.clone();
    let mut body = Vec::new();
    for c in codes {
        body.extend_from_slice(&page(c, &params, which, x.lu.write_back()));
    }
    let descriptor = if dbd {
        Vec::new()
    } else {
        block_descriptor(x.lu, llbaa)
    };
    // Device-specific parameter: WP (bit 7), DPOFUA (bit 4).
    let wp = x.lu.readonly() || params.swp;
    let dsp = if wp { 0x80 } else { 0 } | 0x10;
    let mut d = Vec::new();
    if is6 {
        d.push(0);
        d.push(0);
        d.push(dsp);
        d.push(descriptor.len() as u8);
    } else {
        d.put16(0);
        d.push(0);
        d.push(dsp);
        d.push(if llbaa && !dbd { 0x01 } else { 0 });
        d.push(0);
        d.put16(descriptor.len() as u16);
    }
    d.extend_from_slice(&descriptor);
    d.extend_from_slice(&body);
    if is6 {
        d[0] = (d.len() - 1).min(255) as u8;
    } else {
        let len = (d.len() - 2) as u16;
        d.set16(0, len);
    }
    Ok(Done::data(d, alloc))
}

/// Short (8-byte) or long (16-byte) block descriptor.
fn block_descriptor(lu: &LogicalUnit, long: bool) -> Vec<u8> {
    let mut d = Vec::new();
    if long {
        d.put64(lu.num_blocks());
        d.put32(0);
        d.put32(lu.block_size());
    } else {
        d.put32(u32::try_from(lu.num_blocks()).unwrap_or(u32::MAX));
        d.put32(lu.block_size() & 0x00ff_ffff);
    }
    d
}

/// MODE SELECT(6) / MODE SELECT(10).
pub(crate) fn mode_select(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    let is6 = cdb.u8(0) == op::MODE_SELECT_6;
    let pf = cdb.bit(1, 4);
    let sp = cdb.bit(1, 0);
    let param_len = if is6 {
        usize::from(cdb.u8(4))
    } else {
        usize::from(cdb.be16(7))
    };
    x.nominal = Some(param_len as u64);
    if sp {
        return Err(Sense::invalid_cdb(1, Some(0)).into());
    }
    if param_len == 0 {
        return Ok(Done::good());
    }
    if !pf {
        return Err(Sense::invalid_cdb(1, Some(4)).into());
    }
    let data = x.data_out();
    if data.len() < param_len {
        return Err(Sense::param_list_length().into());
    }
    let p = Bytes(&data[..param_len]);
    let header = if is6 { 4 } else { 8 };
    if p.len() < header {
        return Err(Sense::param_list_length().into());
    }
    let bdl = if is6 {
        usize::from(p.u8(3))
    } else {
        usize::from(p.be16(6))
    };
    let long = !is6 && p.bit(4, 0);
    if header + bdl > p.len() {
        return Err(Sense::param_list_length().into());
    }
    match (bdl, long) {
        (0, _) => {}
        (8, false) => {
            if p.be24(header + 5) != x.lu.block_size() {
                return Err(Sense::invalid_param((header + 5) as u16, None).into());
            }
        }
        (16, true) => {
            if p.be32(header + 12) != x.lu.block_size() {
                return Err(Sense::invalid_param((header + 12) as u16, None).into());
            }
        }
        _ => {
            let at = if is6 { 3 } else { 6 };
            return Err(Sense::invalid_param(at, None).into());
        }
    }
    let current = x.state.lock().mode.clone();
    let mut next = current.clone();
    let mut at = header + bdl;
    while at < p.len() {
        let code = p.u8(at) & 0x3f;
        if p.u8(at) & 0x40 != 0 || !PAGES.contains(&code) {
            // Sub-page format or a page we do not have.
            return Err(Sense::invalid_param(at as u16, Some(5)).into());
        }
        let ours = page(code, &current, Values::Current, x.lu.write_back());
        let mask = page(code, &current, Values::Changeable, x.lu.write_back());
        let len = usize::from(p.u8(at + 1)) + 2;
        if len != ours.len() {
            return Err(Sense::invalid_param((at + 1) as u16, None).into());
        }
        if at + len > p.len() {
            return Err(Sense::param_list_length().into());
        }
        let new = p.slice(at, len);
        for i in 2..len {
            if (new[i] ^ ours[i]) & !mask[i] != 0 {
                return Err(Sense::invalid_param((at + i) as u16, None).into());
            }
        }
        match code {
            PAGE_CACHING => next.wce = Some(new[2] & 0x04 != 0),
            PAGE_CONTROL => {
                next.d_sense = new[2] & 0x04 != 0;
                next.swp = new[4] & 0x08 != 0;
            }
            _ => {}
        }
        at += len;
    }
    let mut s = x.state.lock();
    if s.mode != next {
        s.mode = next;
        // SPC-4 §7.5.1: other I_T nexuses learn of the change by a unit attention.
        s.raise_ua_all(Asc::MODE_PARAMETERS_CHANGED, Some(x.it));
    }
    Ok(Done::good())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_have_their_standard_lengths() {
        let p = ModeParams::default();
        for &c in PAGES {
            for w in [Values::Current, Values::Changeable, Values::Default] {
                let b = page(c, &p, w, true);
                assert_eq!(b[0], c);
                assert_eq!(usize::from(b[1]) + 2, b.len());
            }
        }
    }

    #[test]
    fn current_values_follow_params() {
        let p = ModeParams {
            wce: Some(false),
            d_sense: true,
            swp: true,
        };
        assert_eq!(page(PAGE_CACHING, &p, Values::Current, true)[2] & 0x04, 0);
        let ctl = page(PAGE_CONTROL, &p, Values::Current, true);
        assert_eq!(ctl[2] & 0x04, 0x04);
        assert_eq!(ctl[4] & 0x08, 0x08);
        // Defaults ignore the current values and follow the LU's setting.
        assert_eq!(
            page(PAGE_CACHING, &p, Values::Default, true)[2] & 0x04,
            0x04
        );
        assert_eq!(page(PAGE_CACHING, &p, Values::Default, false)[2] & 0x04, 0);
        let unset = ModeParams::default();
        assert_eq!(
            page(PAGE_CACHING, &unset, Values::Current, false)[2] & 0x04,
            0
        );
    }
}
