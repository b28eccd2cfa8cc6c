//! Sense data (SPC-4 §4.5): what a CHECK CONDITION carries.
//!
//! Every error the command layer reports is a [`Sense`]; it is encoded once, in fixed
//! format (0x70) by default or descriptor format (0x72) when the control mode page's
//! D_SENSE bit is set.

use std::fmt;

/// SPC-4 sense key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SenseKey(pub u8);

impl SenseKey {
    pub const NO_SENSE: SenseKey = SenseKey(0x0);
    pub const NOT_READY: SenseKey = SenseKey(0x2);
    pub const MEDIUM_ERROR: SenseKey = SenseKey(0x3);
    pub const HARDWARE_ERROR: SenseKey = SenseKey(0x4);
    pub const ILLEGAL_REQUEST: SenseKey = SenseKey(0x5);
    pub const UNIT_ATTENTION: SenseKey = SenseKey(0x6);
    pub const DATA_PROTECT: SenseKey = SenseKey(0x7);
    pub const COPY_ABORTED: SenseKey = SenseKey(0xa);
    pub const ABORTED_COMMAND: SenseKey = SenseKey(0xb);
    pub const MISCOMPARE: SenseKey = SenseKey(0xe);
}

impl fmt::Debug for SenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            SenseKey::NO_SENSE => "NO_SENSE",
            SenseKey::NOT_READY => "NOT_READY",
            SenseKey::MEDIUM_ERROR => "MEDIUM_ERROR",
            SenseKey::HARDWARE_ERROR => "HARDWARE_ERROR",
            SenseKey::ILLEGAL_REQUEST => "ILLEGAL_REQUEST",
            SenseKey::UNIT_ATTENTION => "UNIT_ATTENTION",
            SenseKey::DATA_PROTECT => "DATA_PROTECT",
            SenseKey::COPY_ABORTED => "COPY_ABORTED",
            SenseKey::ABORTED_COMMAND => "ABORTED_COMMAND",
            SenseKey::MISCOMPARE => "MISCOMPARE",
            SenseKey(k) => return write!(f, "SenseKey(0x{k:x})"),
        };
        f.write_str(name)
    }
}

/// Additional sense code and qualifier (SPC-4 Annex D), as one 16-bit value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Asc(pub u16);

impl Asc {
    pub const NO_ADDITIONAL: Asc = Asc(0x0000);
    pub const UNRECOVERED_READ_ERROR: Asc = Asc(0x1100);
    pub const WRITE_ERROR: Asc = Asc(0x0c00);
    pub const PARAMETER_LIST_LENGTH_ERROR: Asc = Asc(0x1a00);
    pub const MISCOMPARE_DURING_VERIFY: Asc = Asc(0x1d00);
    pub const INVALID_COMMAND_OPERATION_CODE: Asc = Asc(0x2000);
    pub const LBA_OUT_OF_RANGE: Asc = Asc(0x2100);
    pub const INVALID_FIELD_IN_CDB: Asc = Asc(0x2400);
    pub const LOGICAL_UNIT_NOT_SUPPORTED: Asc = Asc(0x2500);
    pub const INVALID_FIELD_IN_PARAMETER_LIST: Asc = Asc(0x2600);
    pub const TOO_MANY_TARGET_DESCRIPTORS: Asc = Asc(0x2606);
    pub const UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE: Asc = Asc(0x2607);
    pub const TOO_MANY_SEGMENT_DESCRIPTORS: Asc = Asc(0x2608);
    pub const UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE: Asc = Asc(0x2609);
    pub const WRITE_PROTECTED: Asc = Asc(0x2700);
    pub const POWER_ON_RESET: Asc = Asc(0x2900);
    pub const I_T_NEXUS_LOSS: Asc = Asc(0x2907);
    pub const PARAMETERS_CHANGED: Asc = Asc(0x2a00);
    pub const MODE_PARAMETERS_CHANGED: Asc = Asc(0x2a01);
    pub const RESERVATIONS_PREEMPTED: Asc = Asc(0x2a03);
    pub const RESERVATIONS_RELEASED: Asc = Asc(0x2a04);
    pub const REGISTRATIONS_PREEMPTED: Asc = Asc(0x2a05);
    pub const COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: Asc = Asc(0x2f00);
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: Asc = Asc(0x3900);
    pub const MEDIUM_NOT_PRESENT: Asc = Asc(0x3a00);
    pub const REPORTED_LUNS_DATA_HAS_CHANGED: Asc = Asc(0x3f0e);
    pub const INTERNAL_TARGET_FAILURE: Asc = Asc(0x4400);
    /// A Data-Out broke the transport's rules (iSCSI: bad offset or DataSN).
    pub const DATA_PHASE_ERROR: Asc = Asc(0x4b00);
    pub const INVALID_FIELD_IN_INFORMATION_UNIT: Asc = Asc(0x0e03);
    pub const MEDIUM_REMOVAL_PREVENTED: Asc = Asc(0x5302);
    pub const INSUFFICIENT_REGISTRATION_RESOURCES: Asc = Asc(0x5504);
    pub const COPY_TARGET_DEVICE_NOT_REACHABLE: Asc = Asc(0x0d02);
    pub const INVALID_RELEASE_OF_PERSISTENT_RESERVATION: Asc = Asc(0x2604);

    pub fn asc(self) -> u8 {
        (self.0 >> 8) as u8
    }
    pub fn ascq(self) -> u8 {
        self.0 as u8
    }
}

impl fmt::Debug for Asc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Asc(0x{:02x}/0x{:02x})", self.asc(), self.ascq())
    }
}

/// The sense-key-specific field (SPC-4 §4.5.2.4): where in the CDB or parameter list
/// the offending field is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenseKeySpecific {
    FieldPointer {
        /// true: the field is in the CDB; false: in the parameter data.
        in_cdb: bool,
        byte: u16,
        /// Bit within the byte, when a single bit is at fault.
        bit: Option<u8>,
    },
}

impl SenseKeySpecific {
    fn encode(self) -> [u8; 3] {
        match self {
            SenseKeySpecific::FieldPointer { in_cdb, byte, bit } => {
                let mut b0 = 0x80; // SKSV
                if in_cdb {
                    b0 |= 0x40; // C/D
                }
                if let Some(bit) = bit {
                    b0 |= 0x08 | (bit & 0x7); // BPV + bit pointer
                }
                let [hi, lo] = byte.to_be_bytes();
                [b0, hi, lo]
            }
        }
    }
}

/// One CHECK CONDITION's sense data, format-independent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sense {
    pub key: SenseKey,
    pub asc: Asc,
    /// INFORMATION field (e.g. the LBA or the miscompare offset).
    pub information: Option<u64>,
    pub specific: Option<SenseKeySpecific>,
}

impl Sense {
    pub fn new(key: SenseKey, asc: Asc) -> Self {
        Sense {
            key,
            asc,
            information: None,
            specific: None,
        }
    }

    pub fn illegal(asc: Asc) -> Self {
        Sense::new(SenseKey::ILLEGAL_REQUEST, asc)
    }

    /// ILLEGAL REQUEST / INVALID FIELD IN CDB pointing at `byte` (and `bit`).
    pub fn invalid_cdb(byte: u16, bit: Option<u8>) -> Self {
        Sense {
            specific: Some(SenseKeySpecific::FieldPointer {
                in_cdb: true,
                byte,
                bit,
            }),
            ..Sense::illegal(Asc::INVALID_FIELD_IN_CDB)
        }
    }

    /// ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST pointing at `byte`.
    pub fn invalid_param(byte: u16, bit: Option<u8>) -> Self {
        Sense {
            specific: Some(SenseKeySpecific::FieldPointer {
                in_cdb: false,
                byte,
                bit,
            }),
            ..Sense::illegal(Asc::INVALID_FIELD_IN_PARAMETER_LIST)
        }
    }

    pub fn lba_out_of_range() -> Self {
        Sense::illegal(Asc::LBA_OUT_OF_RANGE)
    }

    pub fn invalid_opcode() -> Self {
        Sense::invalid_cdb(0, None).with_asc(Asc::INVALID_COMMAND_OPERATION_CODE)
    }

    pub fn param_list_length() -> Self {
        Sense::illegal(Asc::PARAMETER_LIST_LENGTH_ERROR)
    }

    pub fn write_protected() -> Self {
        Sense::new(SenseKey::DATA_PROTECT, Asc::WRITE_PROTECTED)
    }

    pub fn unit_attention(asc: Asc) -> Self {
        Sense::new(SenseKey::UNIT_ATTENTION, asc)
    }

    pub fn with_asc(mut self, asc: Asc) -> Self {
        self.asc = asc;
        self
    }

    pub fn with_information(mut self, info: u64) -> Self {
        self.information = Some(info);
        self
    }

    /// Encode in fixed (`descriptor == false`, response code 0x70) or descriptor
    /// format (0x72).
    pub fn encode(&self, descriptor: bool) -> Vec<u8> {
        if descriptor {
            self.encode_descriptor()
        } else {
            self.encode_fixed()
        }
    }

    fn encode_fixed(&self) -> Vec<u8> {
        let mut b = vec![0u8; 18];
        b[0] = 0x70;
        if let Some(info) = self.information {
            // The fixed format's INFORMATION field has 4 bytes; VALID only if it fits.
            if let Ok(v) = u32::try_from(info) {
                b[0] |= 0x80;
                b[3..7].copy_from_slice(&v.to_be_bytes());
            }
        }
        b[2] = self.key.0 & 0x0f;
        b[7] = 10; // additional sense length
        b[12] = self.asc.asc();
        b[13] = self.asc.ascq();
        if let Some(s) = self.specific {
            b[15..18].copy_from_slice(&s.encode());
        }
        b
    }

    fn encode_descriptor(&self) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        b[0] = 0x72;
        b[1] = self.key.0 & 0x0f;
        b[2] = self.asc.asc();
        b[3] = self.asc.ascq();
        if let Some(info) = self.information {
            // Information descriptor (type 0x00).
            b.extend_from_slice(&[0x00, 0x0a, 0x80, 0x00]);
            b.extend_from_slice(&info.to_be_bytes());
        }
        if let Some(s) = self.specific {
            // Sense key specific descriptor (type 0x02).
            b.extend_from_slice(&[0x02, 0x06, 0x00, 0x00]);
            b.extend_from_slice(&s.encode());
            b.push(0);
        }
        b[7] = (b.len() - 8) as u8;
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_invalid_field_with_pointer() {
        let s = Sense::invalid_cdb(1, Some(3));
        let b = s.encode(false);
        assert_eq!(b.len(), 18);
        assert_eq!(b[0], 0x70);
        assert_eq!(b[2], 0x05);
        assert_eq!(b[7], 10);
        assert_eq!((b[12], b[13]), (0x24, 0x00));
        assert_eq!(&b[15..18], &[0x80 | 0x40 | 0x08 | 3, 0x00, 0x01]);
    }

    #[test]
    fn fixed_format_information_valid_only_when_it_fits() {
        let s = Sense::new(SenseKey::MISCOMPARE, Asc::MISCOMPARE_DURING_VERIFY).with_information(5);
        let b = s.encode(false);
        assert_eq!(b[0], 0xf0);
        assert_eq!(&b[3..7], &[0, 0, 0, 5]);
        let s = Sense::lba_out_of_range().with_information(1 << 40);
        let b = s.encode(false);
        assert_eq!(b[0], 0x70);
        assert_eq!(&b[3..7], &[0, 0, 0, 0]);
    }

    #[test]
    fn descriptor_format_carries_information_and_pointer() {
        let s = Sense {
            information: Some(0x1_0000_0001),
            ..Sense::invalid_cdb(2, None)
        };
        let b = s.encode(true);
        assert_eq!(&b[..4], &[0x72, 0x05, 0x24, 0x00]);
        assert_eq!(b[7] as usize, b.len() - 8);
        assert_eq!(&b[8..12], &[0x00, 0x0a, 0x80, 0x00]);
        assert_eq!(&b[12..20], &0x1_0000_0001u64.to_be_bytes());
        assert_eq!(&b[20..24], &[0x02, 0x06, 0, 0]);
        assert_eq!(&b[24..27], &[0xc0, 0x00, 0x02]);
    }

    #[test]
    fn invalid_opcode_is_illegal_request_2000() {
        let b = Sense::invalid_opcode().encode(false);
        assert_eq!((b[2], b[12], b[13]), (0x05, 0x20, 0x00));
    }
}
