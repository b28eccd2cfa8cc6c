//! The iSCSI PDU: the 48-byte Basic Header Segment, additional header segments, the
//! data segment, digests (RFC 7143 §11).
//!
//! [`Bhs`] is the raw header with typed accessors for the fields every opcode shares;
//! the opcode-specific fields are read and written through named accessors (one per
//! field, named after the RFC) so that a wrong offset shows up in review rather than on
//! the wire. [`Pdu`] is a header plus its AHS and data segment; [`read_pdu`] reads one
//! from a stream with the negotiated digests, bounded by the receive limit, and
//! [`PduWriter`] frames outgoing PDUs (padding, digests).

use std::io::{self, IoSlice, Read, Write};

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;

/// Reserved tag value ("no task"): RFC 7143 §11.1 / §11.18.
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// Opcodes (RFC 7143 §11.1.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    NopOut,
    ScsiCommand,
    TaskMgmtRequest,
    LoginRequest,
    TextRequest,
    DataOut,
    LogoutRequest,
    SnackRequest,
    NopIn,
    ScsiResponse,
    TaskMgmtResponse,
    LoginResponse,
    TextResponse,
    DataIn,
    LogoutResponse,
    R2t,
    AsyncMessage,
    Reject,
    /// Anything else (vendor-specific 0x1c-0x1e and 0x3c-0x3e, or undefined).
    Unknown(u8),
}

impl Opcode {
    pub fn from_byte(b: u8) -> Opcode {
        match b & 0x3f {
            0x00 => Opcode::NopOut,
            0x01 => Opcode::ScsiCommand,
            0x02 => Opcode::TaskMgmtRequest,
            0x03 => Opcode::LoginRequest,
            0x04 => Opcode::TextRequest,
            0x05 => Opcode::DataOut,
            0x06 => Opcode::LogoutRequest,
            0x10 => Opcode::SnackRequest,
            0x20 => Opcode::NopIn,
            0x21 => Opcode::ScsiResponse,
            0x22 => Opcode::TaskMgmtResponse,
            0x23 => Opcode::LoginResponse,
            0x24 => Opcode::TextResponse,
            0x25 => Opcode::DataIn,
            0x26 => Opcode::LogoutResponse,
            0x31 => Opcode::R2t,
            0x32 => Opcode::AsyncMessage,
            0x3f => Opcode::Reject,
            other => Opcode::Unknown(other),
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            Opcode::NopOut => 0x00,
            Opcode::ScsiCommand => 0x01,
            Opcode::TaskMgmtRequest => 0x02,
            Opcode::LoginRequest => 0x03,
            Opcode::TextRequest => 0x04,
            Opcode::DataOut => 0x05,
            Opcode::LogoutRequest => 0x06,
            Opcode::SnackRequest => 0x10,
            Opcode::NopIn => 0x20,
            Opcode::ScsiResponse => 0x21,
            Opcode::TaskMgmtResponse => 0x22,
            Opcode::LoginResponse => 0x23,
            Opcode::TextResponse => 0x24,
            Opcode::DataIn => 0x25,
            Opcode::LogoutResponse => 0x26,
            Opcode::R2t => 0x31,
            Opcode::AsyncMessage => 0x32,
            Opcode::Reject => 0x3f,
            Opcode::Unknown(b) => b & 0x3f,
        }
    }
}

/// Reject reasons (RFC 7143 §11.17.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    DataDigestError = 0x02,
    SnackReject = 0x03,
    ProtocolError = 0x04,
    CommandNotSupported = 0x05,
    ImmediateCommandReject = 0x06,
    TaskInProgress = 0x07,
    InvalidDataAck = 0x08,
    InvalidPduField = 0x09,
    LongOperationReject = 0x0a,
    WaitingForLogout = 0x0c,
}

/// Flag bits in byte 1.
pub mod flags {
    /// Final (F) bit of most PDUs; Transit (T) of login PDUs.
    pub const FINAL: u8 = 0x80;
    /// SCSI Command: read; Login: continue (C); Text: continue (C).
    pub const READ: u8 = 0x40;
    pub const CONTINUE: u8 = 0x40;
    /// SCSI Command: write.
    pub const WRITE: u8 = 0x20;
    /// Data-In: acknowledge requested.
    pub const ACK: u8 = 0x40;
    /// Data-In / SCSI Response: residual overflow.
    pub const OVERFLOW: u8 = 0x04;
    /// Data-In / SCSI Response: residual underflow.
    pub const UNDERFLOW: u8 = 0x02;
    /// Data-In: status present.
    pub const STATUS: u8 = 0x01;
}

/// The Basic Header Segment (48 bytes, network byte order).
#[derive(Clone, PartialEq, Eq)]
pub struct Bhs(pub [u8; BHS_LEN]);

impl std::fmt::Debug for Bhs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bhs")
            .field("opcode", &self.opcode())
            .field("immediate", &self.immediate())
            .field("flags", &format_args!("{:#04x}", self.flags()))
            .field("itt", &format_args!("{:#010x}", self.itt()))
            .field("dsl", &self.data_segment_len())
            .finish()
    }
}

macro_rules! u32_field {
    ($get:ident, $set:ident, $off:expr) => {
        pub fn $get(&self) -> u32 {
            self.u32_at($off)
        }
        pub fn $set(&mut self, v: u32) {
            self.set_u32_at($off, v)
        }
    };
}

impl Bhs {
    pub fn new(op: Opcode) -> Bhs {
        let mut b = Bhs([0; BHS_LEN]);
        b.0[0] = op.to_byte();
        b
    }

    fn u32_at(&self, off: usize) -> u32 {
        u32::from_be_bytes([
            self.0[off],
            self.0[off + 1],
            self.0[off + 2],
            self.0[off + 3],
        ])
    }
    fn set_u32_at(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_be_bytes());
    }
    fn u16_at(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.0[off], self.0[off + 1]])
    }
    fn set_u16_at(&mut self, off: usize, v: u16) {
        self.0[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }

    pub fn opcode(&self) -> Opcode {
        Opcode::from_byte(self.0[0])
    }
    /// The I bit: an immediate command (does not advance CmdSN).
    pub fn immediate(&self) -> bool {
        self.0[0] & 0x40 != 0
    }
    pub fn flags(&self) -> u8 {
        self.0[1]
    }
    pub fn set_flags(&mut self, f: u8) {
        self.0[1] = f;
    }
    pub fn final_bit(&self) -> bool {
        self.0[1] & flags::FINAL != 0
    }
    /// Bytes 2 and 3 (opcode specific: response/status, version, reason...).
    pub fn byte2(&self) -> u8 {
        self.0[2]
    }
    pub fn byte3(&self) -> u8 {
        self.0[3]
    }
    pub fn set_byte2(&mut self, v: u8) {
        self.0[2] = v;
    }
    pub fn set_byte3(&mut self, v: u8) {
        self.0[3] = v;
    }
    /// TotalAHSLength in bytes (the field counts 4-byte words).
    pub fn ahs_len(&self) -> usize {
        usize::from(self.0[4]) * 4
    }
    pub fn data_segment_len(&self) -> usize {
        (usize::from(self.0[5]) << 16) | (usize::from(self.0[6]) << 8) | usize::from(self.0[7])
    }
    pub fn set_data_segment_len(&mut self, len: usize) {
        debug_assert!(len < 1 << 24);
        self.0[5] = (len >> 16) as u8;
        self.0[6] = (len >> 8) as u8;
        self.0[7] = len as u8;
    }
    /// Bytes 8..16: the LUN field (or ISID + TSIH in login PDUs).
    pub fn lun_field(&self) -> [u8; 8] {
        let mut l = [0; 8];
        l.copy_from_slice(&self.0[8..16]);
        l
    }
    pub fn set_lun_field(&mut self, l: [u8; 8]) {
        self.0[8..16].copy_from_slice(&l);
    }
    pub fn isid(&self) -> [u8; 6] {
        let mut i = [0; 6];
        i.copy_from_slice(&self.0[8..14]);
        i
    }
    pub fn set_isid(&mut self, isid: [u8; 6]) {
        self.0[8..14].copy_from_slice(&isid);
    }
    pub fn tsih(&self) -> u16 {
        self.u16_at(14)
    }
    pub fn set_tsih(&mut self, v: u16) {
        self.set_u16_at(14, v)
    }
    /// Login Response: Status-Class and Status-Detail (bytes 36-37) as one number.
    pub fn login_status(&self) -> u16 {
        self.u16_at(36)
    }
    pub fn set_login_status(&mut self, status: u16) {
        self.set_u16_at(36, status)
    }
    /// Login and Logout requests: the connection id (bytes 20-21).
    pub fn cid(&self) -> u16 {
        self.u16_at(20)
    }
    /// Logout response: Time2Wait and Time2Retain (bytes 40-43).
    pub fn set_time2wait_retain(&mut self, wait: u16, retain: u16) {
        self.set_u16_at(40, wait);
        self.set_u16_at(42, retain);
    }

    u32_field!(itt, set_itt, 16);
    // Bytes 20-23: TTT, Expected Data Transfer Length, Referenced Task Tag, or SNACK tag.
    u32_field!(ttt, set_ttt, 20);
    u32_field!(expected_len, set_expected_len, 20);
    u32_field!(ref_task_tag, set_ref_task_tag, 20);
    // Bytes 24-27: CmdSN (initiator) / StatSN (target).
    u32_field!(cmd_sn, set_cmd_sn, 24);
    u32_field!(stat_sn, set_stat_sn, 24);
    // Bytes 28-31: ExpStatSN (initiator) / ExpCmdSN (target).
    u32_field!(exp_stat_sn, set_exp_stat_sn, 28);
    u32_field!(exp_cmd_sn, set_exp_cmd_sn, 28);
    // Bytes 32-35: MaxCmdSN (target) / RefCmdSN (TMF).
    u32_field!(max_cmd_sn, set_max_cmd_sn, 32);
    u32_field!(ref_cmd_sn, set_ref_cmd_sn, 32);
    // Bytes 36-39: DataSN, R2TSN, ExpDataSN.
    u32_field!(data_sn, set_data_sn, 36);
    // Bytes 40-43: Buffer Offset; 44-47: Residual Count or Desired Data Transfer Length.
    u32_field!(buffer_offset, set_buffer_offset, 40);
    u32_field!(residual, set_residual, 44);
    u32_field!(desired_len, set_desired_len, 44);

    /// The CDB (bytes 32..48 of a SCSI Command).
    pub fn cdb(&self) -> &[u8] {
        &self.0[32..48]
    }
}

/// Additional header segment types (RFC 7143 §11.2.2).
pub const AHS_EXTENDED_CDB: u8 = 1;
pub const AHS_BIDI_READ_LENGTH: u8 = 2;

/// A whole PDU as received.
#[derive(Debug, Clone)]
pub struct Pdu {
    pub bhs: Bhs,
    pub ahs: Vec<u8>,
    pub data: Vec<u8>,
}

impl Pdu {
    /// The extended-CDB AHS bytes, if present (the CDB beyond the first 16 bytes).
    pub fn extended_cdb(&self) -> Option<&[u8]> {
        self.ahs_of_type(AHS_EXTENDED_CDB).map(|d| {
            // The first byte of an extended-CDB AHS is reserved.
            &d[d.len().min(1)..]
        })
    }

    fn ahs_of_type(&self, ty: u8) -> Option<&[u8]> {
        let mut rest = &self.ahs[..];
        while rest.len() >= 4 {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let kind = rest[2];
            let body_end = (3 + len).min(rest.len());
            let body = &rest[3..body_end];
            if kind == ty {
                return Some(body);
            }
            let step = (3 + len).div_ceil(4) * 4;
            if step == 0 || step > rest.len() {
                break;
            }
            rest = &rest[step..];
        }
        None
    }
}

/// Digests negotiated for a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digests {
    pub header: bool,
    pub data: bool,
}

/// Why a PDU could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The header digest did not match: at ErrorRecoveryLevel 0 the connection
    /// cannot trust the lengths any more and must be dropped.
    #[error("header digest mismatch")]
    HeaderDigest,
    /// The data segment is longer than this side declared it can receive; the data
    /// was read and discarded so the stream stays in step.
    #[error("data segment of {len} bytes exceeds the limit of {limit}")]
    TooLong {
        bhs: Box<Bhs>,
        len: usize,
        limit: usize,
    },
    /// The data digest did not match; the header is good (reject with reason 0x02).
    #[error("data digest mismatch")]
    DataDigest { bhs: Box<Bhs> },
}

/// Padding to the next 4-byte boundary.
pub fn pad_len(len: usize) -> usize {
    (4 - (len % 4)) % 4
}

/// CRC32C as iSCSI sends it: the value in little-endian byte order (RFC 7143 §13.1 /
/// the bit ordering of RFC 3385, as Linux and libiscsi put it on the wire).
fn digest_bytes(crc: u32) -> [u8; 4] {
    crc.to_le_bytes()
}

/// Read one PDU. `max_data` bounds the data segment (this side's MaxRecvDataSegmentLength,
/// or the login limit); a longer segment is drained and reported, never buffered.
pub fn read_pdu<R: Read>(r: &mut R, digests: Digests, max_data: usize) -> Result<Pdu, ReadError> {
    let mut bhs = Bhs([0; BHS_LEN]);
    read_exact_or_closed(r, &mut bhs.0)?;
    let mut ahs = vec![0; bhs.ahs_len()];
    r.read_exact(&mut ahs)?;
    if digests.header {
        let mut d = [0; 4];
        r.read_exact(&mut d)?;
        let mut crc = crc32c::crc32c(&bhs.0);
        crc = crc32c::crc32c_append(crc, &ahs);
        if d != digest_bytes(crc) {
            return Err(ReadError::HeaderDigest);
        }
    }
    let len = bhs.data_segment_len();
    let padded = len + pad_len(len);
    if len > max_data {
        let extra = padded + if digests.data && len > 0 { 4 } else { 0 };
        io::copy(&mut r.take(extra as u64), &mut io::sink())?;
        return Err(ReadError::TooLong {
            bhs: Box::new(bhs),
            len,
            limit: max_data,
        });
    }
    let mut data = vec![0; padded];
    r.read_exact(&mut data)?;
    if digests.data && len > 0 {
        let mut d = [0; 4];
        r.read_exact(&mut d)?;
        if d != digest_bytes(crc32c::crc32c(&data)) {
            return Err(ReadError::DataDigest { bhs: Box::new(bhs) });
        }
    }
    data.truncate(len);
    Ok(Pdu { bhs, ahs, data })
}

fn read_exact_or_closed<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), ReadError> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) if done == 0 => return Err(ReadError::Closed),
            Ok(0) => return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(())
}

/// Frames outgoing PDUs into a buffer that the connection flushes when it has no more
/// input to process, so that pipelined commands get their responses in one write.
/// Large data segments bypass the buffer (vectored write) to save a copy, unless the
/// caller says the buffer is being written elsewhere ([`PduWriter::push_buffered`]).
#[derive(Debug, Default)]
pub struct PduWriter {
    pub digests: Digests,
    buf: Vec<u8>,
    /// A cleared buffer to frame into while `buf`'s bytes are written outside the
    /// connection's lock ([`PduWriter::take_pending`]), so neither is reallocated.
    spare: Vec<u8>,
}

/// Data segments at least this long are written straight from the caller's buffer.
const DIRECT_WRITE_MIN: usize = 32 * 1024;
/// A buffer grown past this by a burst of large responses is shrunk back to
/// [`BUFFER_CAPACITY`]: it must not pin memory for the connection's life.
const BUFFER_SHRINK_ABOVE: usize = 1024 * 1024;
const BUFFER_CAPACITY: usize = 64 * 1024;

impl PduWriter {
    pub fn new() -> PduWriter {
        PduWriter {
            digests: Digests::default(),
            buf: Vec::with_capacity(BUFFER_CAPACITY),
            spare: Vec::new(),
        }
    }

    /// Queue a PDU with `data` as its data segment; its length field is set here. A
    /// large segment goes out at once through `w`, after what is buffered.
    pub fn push<W: Write>(&mut self, w: &mut W, bhs: Bhs, data: &[u8]) -> io::Result<()> {
        match self.frame(bhs, data, data.len() >= DIRECT_WRITE_MIN) {
            Some(tail) => {
                let head = std::mem::take(&mut self.buf);
                let r = write_all_vectored(w, &[&head, data, &tail]);
                self.buf = head;
                self.buf.clear();
                r
            }
            None => Ok(()),
        }
    }

    /// Queue a PDU, copying even a large data segment into the buffer: for when another
    /// thread is writing the bytes taken before it, which must reach the peer first.
    pub fn push_buffered(&mut self, bhs: Bhs, data: &[u8]) {
        let direct = self.frame(bhs, data, false);
        debug_assert!(direct.is_none());
    }

    /// Frame the header (and, unless `direct`, the data segment) into the buffer.
    /// `Some(tail)`: the caller writes the buffer, `data` and `tail` (pad and digest).
    fn frame(&mut self, mut bhs: Bhs, data: &[u8], direct: bool) -> Option<Vec<u8>> {
        bhs.set_data_segment_len(data.len());
        self.buf.extend_from_slice(&bhs.0);
        if self.digests.header {
            self.buf
                .extend_from_slice(&digest_bytes(crc32c::crc32c(&bhs.0)));
        }
        if data.is_empty() {
            return None;
        }
        let pad = [0u8; 3];
        let pad = &pad[..pad_len(data.len())];
        let digest = if self.digests.data {
            let crc = crc32c::crc32c_append(crc32c::crc32c(data), pad);
            Some(digest_bytes(crc))
        } else {
            None
        };
        if direct {
            let mut tail = Vec::with_capacity(7);
            tail.extend_from_slice(pad);
            if let Some(d) = digest {
                tail.extend_from_slice(&d);
            }
            return Some(tail);
        }
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(pad);
        if let Some(d) = digest {
            self.buf.extend_from_slice(&d);
        }
        None
    }

    /// True when PDUs wait in the buffer.
    pub fn pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Write out what is buffered.
    pub fn flush<W: Write>(&mut self, w: &mut W) -> io::Result<()> {
        if let Some(bytes) = self.take_pending() {
            let r = w.write_all(&bytes);
            self.give_back(bytes);
            r?;
        }
        w.flush()
    }

    /// The buffered bytes, for a caller to write (in order, before any taken later);
    /// framing goes on into a spare buffer meanwhile. `None` when nothing waits.
    pub fn take_pending(&mut self) -> Option<Vec<u8>> {
        if self.buf.is_empty() {
            return None;
        }
        let spare = std::mem::take(&mut self.spare);
        Some(std::mem::replace(&mut self.buf, spare))
    }

    /// Return a buffer from [`PduWriter::take_pending`] once written, for reuse.
    pub fn give_back(&mut self, mut bytes: Vec<u8>) {
        bytes.clear();
        if bytes.capacity() > BUFFER_SHRINK_ABOVE {
            bytes.shrink_to(BUFFER_CAPACITY);
        }
        if self.buf.is_empty() && self.buf.capacity() < bytes.capacity() {
            // Keep framing into the larger of the two.
            std::mem::swap(&mut self.buf, &mut bytes);
        }
        if self.spare.capacity() < bytes.capacity() {
            self.spare = bytes;
        }
    }
}

fn write_all_vectored<W: Write>(w: &mut W, parts: &[&[u8]]) -> io::Result<()> {
    let mut idx = 0;
    let mut off = 0;
    while idx < parts.len() {
        if off == parts[idx].len() {
            idx += 1;
            off = 0;
            continue;
        }
        let mut slices = Vec::with_capacity(parts.len() - idx);
        slices.push(IoSlice::new(&parts[idx][off..]));
        for p in &parts[idx + 1..] {
            slices.push(IoSlice::new(p));
        }
        let mut n = match w.write_vectored(&slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while n > 0 && idx < parts.len() {
            let left = parts[idx].len() - off;
            if n >= left {
                n -= left;
                idx += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
    Ok(())
}

/// Serial number arithmetic (RFC 1982, 32 bits) for CmdSN/StatSN comparisons.
pub fn sn_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

pub fn sn_le(a: u32, b: u32) -> bool {
    a == b || sn_lt(a, b)
}

/// The 8-byte LUN field decoded to a flat LUN (SAM-5 §4.7: peripheral and flat
/// addressing of the first level).
pub fn decode_lun(field: [u8; 8]) -> u64 {
    let method = field[0] >> 6;
    match method {
        0 => u64::from(field[1]),
        1 => (u64::from(field[0] & 0x3f) << 8) | u64::from(field[1]),
        // Other methods (logical unit, extended) are not used by the engine's LUN
        // map; map them out of range so the SCSI layer answers LOGICAL UNIT NOT SUPPORTED.
        _ => u64::MAX,
    }
}

/// A flat LUN encoded for the LUN field (peripheral for < 256, flat above).
pub fn encode_lun(lun: u64) -> [u8; 8] {
    let mut f = [0; 8];
    if lun < 256 {
        f[1] = lun as u8;
    } else {
        f[0] = 0x40 | ((lun >> 8) as u8 & 0x3f);
        f[1] = lun as u8;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_digests() {
        let mut w = PduWriter::new();
        w.digests = Digests {
            header: true,
            data: true,
        };
        let mut out = Vec::new();
        let mut bhs = Bhs::new(Opcode::NopIn);
        bhs.set_itt(7);
        w.push(&mut out, bhs.clone(), b"hello").unwrap();
        let big = vec![0xab; 40_000];
        w.push(&mut out, bhs.clone(), &big).unwrap();
        w.flush(&mut out).unwrap();
        let mut r = &out[..];
        let d = w.digests;
        let p = read_pdu(&mut r, d, 65536).unwrap();
        assert_eq!(p.bhs.itt(), 7);
        assert_eq!(p.data, b"hello");
        let p = read_pdu(&mut r, d, 65536).unwrap();
        assert_eq!(p.data, big);
        assert!(matches!(read_pdu(&mut r, d, 65536), Err(ReadError::Closed)));
    }

    #[test]
    fn bytes_taken_for_another_writer_stay_ahead_of_those_framed_meanwhile() {
        let mut w = PduWriter::new();
        w.digests.data = true;
        let mut first = Bhs::new(Opcode::NopIn);
        first.set_itt(1);
        let mut second = Bhs::new(Opcode::NopIn);
        second.set_itt(2);
        let big = vec![0xcd; 40_000];
        w.push_buffered(first, b"abc");
        let taken = w.take_pending().expect("the first PDU waits");
        assert!(!w.pending());
        // While `taken` is being written elsewhere, even a large segment is buffered.
        w.push_buffered(second, &big);
        let later = w.take_pending().expect("the second PDU waits");
        let wire = [taken.as_slice(), later.as_slice()].concat();
        let mut r = &wire[..];
        let p = read_pdu(&mut r, w.digests, 65536).unwrap();
        assert_eq!((p.bhs.itt(), p.data.as_slice()), (1, &b"abc"[..]));
        let p = read_pdu(&mut r, w.digests, 65536).unwrap();
        assert_eq!((p.bhs.itt(), p.data), (2, big));
        assert!(matches!(
            read_pdu(&mut r, w.digests, 65536),
            Err(ReadError::Closed)
        ));
        // Given back, the buffers are reused cleared: nothing is sent twice.
        w.give_back(taken);
        w.give_back(later);
        assert!(w.take_pending().is_none());
        let mut out = Vec::new();
        w.flush(&mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn a_flipped_bit_fails_the_header_digest() {
        let mut w = PduWriter::new();
        w.digests.header = true;
        let mut out = Vec::new();
        w.push(&mut out, Bhs::new(Opcode::NopIn), b"").unwrap();
        w.flush(&mut out).unwrap();
        out[20] ^= 1;
        let d = w.digests;
        assert!(matches!(
            read_pdu(&mut &out[..], d, 8192),
            Err(ReadError::HeaderDigest)
        ));
    }

    #[test]
    fn an_oversized_segment_is_drained_not_buffered() {
        let mut bhs = Bhs::new(Opcode::NopOut);
        bhs.set_data_segment_len(10_000);
        let mut bytes = bhs.0.to_vec();
        bytes.extend(vec![0; 10_000]);
        let mut next = Bhs::new(Opcode::NopOut);
        next.set_itt(9);
        bytes.extend_from_slice(&next.0);
        let mut r = &bytes[..];
        assert!(matches!(
            read_pdu(&mut r, Digests::default(), 8192),
            Err(ReadError::TooLong { len: 10_000, .. })
        ));
        assert_eq!(
            read_pdu(&mut r, Digests::default(), 8192)
                .unwrap()
                .bhs
                .itt(),
            9
        );
    }

    #[test]
    fn crc32c_of_the_rfc_test_vector() {
        // RFC 3720 B.4: 32 bytes of zeros → aa 36 91 8a (as sent on the wire).
        assert_eq!(
            digest_bytes(crc32c::crc32c(&[0u8; 32])),
            [0xaa, 0x36, 0x91, 0x8a]
        );
    }

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(sn_lt(0xffff_fff0, 5));
        assert!(!sn_lt(5, 0xffff_fff0));
        assert!(sn_le(3, 3));
    }

    #[test]
    fn lun_fields() {
        assert_eq!(decode_lun(encode_lun(3)), 3);
        assert_eq!(decode_lun(encode_lun(300)), 300);
    }
}
