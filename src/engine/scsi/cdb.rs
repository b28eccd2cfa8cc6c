//! Checked access to CDB and parameter-list bytes.
//!
//! The dispatcher checks a CDB's length against the command table before any handler
//! runs, so handlers read fields at fixed offsets; these readers still answer 0 past
//! the end instead of panicking, so that no CDB can crash the engine.

/// Operation codes the engine knows (SPC-4, SBC-3).
pub(crate) mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0a;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const SEND_DIAGNOSTIC: u8 = 0x1d;
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const WRITE_AND_VERIFY_10: u8 = 0x2e;
    pub const VERIFY_10: u8 = 0x2f;
    pub const PRE_FETCH_10: u8 = 0x34;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const READ_DEFECT_DATA_10: u8 = 0x37;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const SANITIZE: u8 = 0x48;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const RESERVE_10: u8 = 0x56;
    pub const RELEASE_10: u8 = 0x57;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5e;
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5f;
    pub const EXTENDED_COPY: u8 = 0x83;
    pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
    pub const READ_16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const WRITE_16: u8 = 0x8a;
    pub const ORWRITE_16: u8 = 0x8b;
    pub const WRITE_AND_VERIFY_16: u8 = 0x8e;
    pub const VERIFY_16: u8 = 0x8f;
    pub const PRE_FETCH_16: u8 = 0x90;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const MAINTENANCE_IN: u8 = 0xa3;
    pub const READ_12: u8 = 0xa8;
    pub const WRITE_12: u8 = 0xaa;
    pub const WRITE_AND_VERIFY_12: u8 = 0xae;
    pub const VERIFY_12: u8 = 0xaf;
    pub const READ_DEFECT_DATA_12: u8 = 0xb7;

    /// SERVICE ACTION IN(16) service actions.
    pub const SAI_READ_CAPACITY_16: u8 = 0x10;
    pub const SAI_GET_LBA_STATUS: u8 = 0x12;
    /// MAINTENANCE IN service actions.
    pub const MI_REPORT_TARGET_PORT_GROUPS: u8 = 0x0a;
    pub const MI_REPORT_SUPPORTED_OPCODES: u8 = 0x0c;
    pub const MI_REPORT_SUPPORTED_TMFS: u8 = 0x0d;
}

/// Big-endian readers over a byte slice that yield 0 past the end.
#[derive(Clone, Copy)]
pub(crate) struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn u8(&self, at: usize) -> u8 {
        self.0.get(at).copied().unwrap_or(0)
    }
    pub fn be16(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.u8(at), self.u8(at + 1)])
    }
    pub fn be24(&self, at: usize) -> u32 {
        u32::from_be_bytes([0, self.u8(at), self.u8(at + 1), self.u8(at + 2)])
    }
    pub fn be32(&self, at: usize) -> u32 {
        u32::from_be_bytes([
            self.u8(at),
            self.u8(at + 1),
            self.u8(at + 2),
            self.u8(at + 3),
        ])
    }
    pub fn be64(&self, at: usize) -> u64 {
        (u64::from(self.be32(at)) << 32) | u64::from(self.be32(at + 4))
    }
    /// `n` bytes from `at`, shorter (possibly empty) past the end.
    pub fn slice(&self, at: usize, n: usize) -> &'a [u8] {
        let start = at.min(self.0.len());
        let end = at.saturating_add(n).min(self.0.len());
        &self.0[start..end]
    }
    /// Bit `bit` of byte `at`.
    pub fn bit(&self, at: usize, bit: u8) -> bool {
        self.u8(at) & (1 << bit) != 0
    }
}

/// Append helpers for building parameter data.
pub(crate) trait PutBe {
    fn put16(&mut self, v: u16);
    fn put32(&mut self, v: u32);
    fn put64(&mut self, v: u64);
    fn set16(&mut self, at: usize, v: u16);
    fn set32(&mut self, at: usize, v: u32);
}

impl PutBe for Vec<u8> {
    fn put16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn set16(&mut self, at: usize, v: u16) {
        if let Some(d) = self.get_mut(at..at + 2) {
            d.copy_from_slice(&v.to_be_bytes());
        }
    }
    fn set32(&mut self, at: usize, v: u32) {
        if let Some(d) = self.get_mut(at..at + 4) {
            d.copy_from_slice(&v.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_never_overrun() {
        let b = Bytes(&[1, 2, 3]);
        assert_eq!(b.be16(0), 0x0102);
        assert_eq!(b.be16(2), 0x0300);
        assert_eq!(b.be32(1), 0x0203_0000);
        assert_eq!(b.be64(100), 0);
        assert_eq!(b.slice(2, 10), &[3]);
        assert_eq!(b.slice(9, 10), &[] as &[u8]);
        assert_eq!(b.slice(usize::MAX, usize::MAX), &[] as &[u8]);
        assert!(b.bit(0, 0));
        assert!(!b.bit(7, 0));
    }

    #[test]
    fn writers_set_in_place() {
        let mut v = vec![0u8; 4];
        v.set16(1, 0xabcd);
        assert_eq!(v, [0, 0xab, 0xcd, 0]);
        v.set32(2, 1); // out of range: ignored
        assert_eq!(v, [0, 0xab, 0xcd, 0]);
        v.put32(7);
        assert_eq!(&v[4..], &[0, 0, 0, 7]);
    }
}
