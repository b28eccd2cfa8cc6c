//! The informational SCSI commands the probe sends (SPC-4, SBC-3) and the parsing of
//! their answers: pure functions over bytes. Only commands that neither read nor change
//! the medium are built here.

use serde::Serialize;

/// SCSI status codes (SAM-5).
pub const GOOD: u8 = 0x00;
pub const CHECK_CONDITION: u8 = 0x02;
pub const BUSY: u8 = 0x08;
pub const RESERVATION_CONFLICT: u8 = 0x18;
pub const TASK_SET_FULL: u8 = 0x28;

/// Sense keys.
pub const NOT_READY: u8 = 0x2;
pub const ILLEGAL_REQUEST: u8 = 0x5;
pub const UNIT_ATTENTION: u8 = 0x6;

/// A status byte by name.
pub fn status_name(s: u8) -> &'static str {
    match s {
        GOOD => "good",
        CHECK_CONDITION => "check condition",
        0x04 => "condition met",
        BUSY => "busy",
        RESERVATION_CONFLICT => "reservation conflict",
        TASK_SET_FULL => "task set full",
        0x30 => "ACA active",
        0x40 => "task aborted",
        _ => "unknown status",
    }
}

pub fn sense_key_name(k: u8) -> &'static str {
    match k {
        0x0 => "no sense",
        0x1 => "recovered error",
        0x2 => "not ready",
        0x3 => "medium error",
        0x4 => "hardware error",
        0x5 => "illegal request",
        0x6 => "unit attention",
        0x7 => "data protect",
        0x8 => "blank check",
        0x9 => "vendor specific",
        0xa => "copy aborted",
        0xb => "aborted command",
        0xd => "volume overflow",
        0xe => "miscompare",
        _ => "reserved",
    }
}

/// Decoded sense data (fixed or descriptor format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

impl std::fmt::Display for Sense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (asc 0x{:02x} ascq 0x{:02x})",
            sense_key_name(self.key),
            self.asc,
            self.ascq
        )
    }
}

pub fn parse_sense(s: &[u8]) -> Option<Sense> {
    let code = *s.first()? & 0x7f;
    match code {
        0x70 | 0x71 if s.len() >= 14 => Some(Sense {
            key: s[2] & 0xf,
            asc: s[12],
            ascq: s[13],
        }),
        0x70 | 0x71 if s.len() >= 3 => Some(Sense {
            key: s[2] & 0xf,
            asc: 0,
            ascq: 0,
        }),
        0x72 | 0x73 if s.len() >= 4 => Some(Sense {
            key: s[1] & 0xf,
            asc: s[2],
            ascq: s[3],
        }),
        _ => None,
    }
}

// ---- CDBs ----

pub fn test_unit_ready() -> Vec<u8> {
    vec![0x00, 0, 0, 0, 0, 0]
}

pub fn report_luns(alloc: u32) -> Vec<u8> {
    let mut c = vec![0u8; 12];
    c[0] = 0xa0;
    c[6..10].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// INQUIRY: standard data (`page` None) or a VPD page.
pub fn inquiry(page: Option<u8>, alloc: u16) -> Vec<u8> {
    let mut c = vec![0u8; 6];
    c[0] = 0x12;
    if let Some(p) = page {
        c[1] = 0x01;
        c[2] = p;
    }
    c[3..5].copy_from_slice(&alloc.to_be_bytes());
    c
}

pub fn read_capacity10() -> Vec<u8> {
    let mut c = vec![0u8; 10];
    c[0] = 0x25;
    c
}

pub fn read_capacity16(alloc: u32) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = 0x9e;
    c[1] = 0x10;
    c[10..14].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// MODE SENSE(6), all pages, current values, no block descriptors.
pub fn mode_sense6(alloc: u8) -> Vec<u8> {
    vec![0x1a, 0x08, 0x3f, 0, alloc, 0]
}

/// MODE SENSE(10), all pages, current values, no block descriptors.
pub fn mode_sense10(alloc: u16) -> Vec<u8> {
    let mut c = vec![0u8; 10];
    c[0] = 0x5a;
    c[1] = 0x08;
    c[2] = 0x3f;
    c[7..9].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// The 8-byte LUN field for a LUN id (SAM-5 peripheral or flat addressing).
pub fn lun_field(lun: u16) -> [u8; 8] {
    let mut l = [0u8; 8];
    if lun < 256 {
        l[1] = lun as u8;
    } else {
        l[0] = 0x40 | ((lun >> 8) as u8 & 0x3f);
        l[1] = lun as u8;
    }
    l
}

// ---- answers ----

/// REPORT LUNS: the LUN ids (peripheral and flat addressing; others are skipped).
pub fn parse_report_luns(d: &[u8]) -> Vec<u16> {
    if d.len() < 8 {
        return Vec::new();
    }
    let len = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
    let end = (8 + len).min(d.len());
    d[8..end]
        .chunks_exact(8)
        .filter_map(|e| match e[0] >> 6 {
            0 => Some(u16::from(e[1])),
            1 => Some((u16::from(e[0] & 0x3f) << 8) | u16::from(e[1])),
            _ => None,
        })
        .collect()
}

/// Standard INQUIRY data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inquiry {
    pub peripheral_qualifier: u8,
    pub peripheral_type: u8,
    pub peripheral_type_name: &'static str,
    pub vendor: String,
    pub product: String,
    pub revision: String,
}

pub fn peripheral_type_name(t: u8) -> &'static str {
    match t {
        0x00 => "disk",
        0x01 => "tape",
        0x05 => "cd/dvd",
        0x07 => "optical",
        0x08 => "medium changer",
        0x0c => "storage array controller",
        0x0d => "enclosure",
        0x0e => "simplified direct-access",
        0x1f => "unknown or no device",
        _ => "other",
    }
}

fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_string()
}

pub fn parse_inquiry(d: &[u8]) -> Option<Inquiry> {
    if d.len() < 36 {
        return None;
    }
    Some(Inquiry {
        peripheral_qualifier: d[0] >> 5,
        peripheral_type: d[0] & 0x1f,
        peripheral_type_name: peripheral_type_name(d[0] & 0x1f),
        vendor: ascii(&d[8..16]),
        product: ascii(&d[16..32]),
        revision: ascii(&d[32..36]),
    })
}

/// The payload of a VPD page (after its 4-byte header), checking the page code.
pub fn vpd_payload(d: &[u8], page: u8) -> Option<&[u8]> {
    if d.len() < 4 || d[1] != page {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([d[2], d[3]]));
    Some(&d[4..(4 + len).min(d.len())])
}

/// VPD 0x00: the supported pages.
pub fn parse_supported_pages(d: &[u8]) -> Option<Vec<u8>> {
    vpd_payload(d, 0x00).map(|p| p.to_vec())
}

/// VPD 0x80: the unit serial number.
pub fn parse_serial(d: &[u8]) -> Option<String> {
    vpd_payload(d, 0x80).map(ascii)
}

/// One designation descriptor of VPD 0x83.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Designator {
    /// `naa`, `t10`, `eui64`, `relative-port`, `port-group`, `lu-group`, `md5`,
    /// `scsi-name`, `vendor`, `uuid`, `other`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `lun`, `port` or `target`.
    pub association: &'static str,
    /// ASCII designators as text; binary ones as `0x` + lower-case hex.
    pub value: String,
}

/// VPD 0x83: the designation descriptors.
pub fn parse_designators(d: &[u8]) -> Option<Vec<Designator>> {
    let mut rest = vpd_payload(d, 0x83)?;
    let mut out = Vec::new();
    while rest.len() >= 4 {
        let code_set = rest[0] & 0xf;
        let assoc = (rest[1] >> 4) & 3;
        let kind = rest[1] & 0xf;
        let len = usize::from(rest[3]);
        let body = &rest[4..(4 + len).min(rest.len())];
        let value = if code_set == 2 || code_set == 3 {
            ascii(body)
        } else {
            let mut s = String::from("0x");
            for b in body {
                s.push_str(&format!("{b:02x}"));
            }
            s
        };
        out.push(Designator {
            kind: match kind {
                0 => "vendor",
                1 => "t10",
                2 => "eui64",
                3 => "naa",
                4 => "relative-port",
                5 => "port-group",
                6 => "lu-group",
                7 => "md5",
                8 => "scsi-name",
                0xa => "uuid",
                _ => "other",
            },
            association: match assoc {
                0 => "lun",
                1 => "port",
                _ => "target",
            },
            value,
        });
        rest = &rest[(4 + len).min(rest.len())..];
    }
    Some(out)
}

/// VPD 0xB1: the medium rotation rate (0 not reported, 1 non-rotating, else rpm).
pub fn parse_rotation_rate(d: &[u8]) -> Option<u16> {
    let p = vpd_payload(d, 0xb1)?;
    (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]))
}

/// READ CAPACITY's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capacity {
    /// Number of logical blocks (last LBA + 1).
    pub blocks: u64,
    pub block_size: u32,
    /// Logical blocks per physical block exponent (RC16 only; 0 from RC10).
    pub physical_block_exponent: u8,
    /// Logical block provisioning management enabled (thin; RC16 only).
    pub lbpme: bool,
    /// Unmapped blocks read as zeros (RC16 only).
    pub lbprz: bool,
}

impl Capacity {
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }
}

pub fn parse_read_capacity16(d: &[u8]) -> Option<Capacity> {
    if d.len() < 15 {
        return None;
    }
    let last = u64::from_be_bytes(d[0..8].try_into().ok()?);
    Some(Capacity {
        blocks: last.wrapping_add(1),
        block_size: u32::from_be_bytes(d[8..12].try_into().ok()?),
        physical_block_exponent: d[13] & 0xf,
        lbpme: d[14] & 0x80 != 0,
        lbprz: d[14] & 0x40 != 0,
    })
}

pub fn parse_read_capacity10(d: &[u8]) -> Option<Capacity> {
    if d.len() < 8 {
        return None;
    }
    let last = u32::from_be_bytes(d[0..4].try_into().ok()?);
    Some(Capacity {
        blocks: u64::from(last) + 1,
        block_size: u32::from_be_bytes(d[4..8].try_into().ok()?),
        physical_block_exponent: 0,
        lbpme: false,
        lbprz: false,
    })
}

/// MODE SENSE(6): the WP bit of the device-specific parameter.
pub fn parse_mode_sense6_wp(d: &[u8]) -> Option<bool> {
    (d.len() >= 4).then(|| d[2] & 0x80 != 0)
}

/// MODE SENSE(10): the WP bit of the device-specific parameter.
pub fn parse_mode_sense10_wp(d: &[u8]) -> Option<bool> {
    (d.len() >= 8).then(|| d[3] & 0x80 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdbs_are_the_informational_opcodes() {
        assert_eq!(test_unit_ready(), [0; 6]);
        assert_eq!(
            report_luns(4096)[..10],
            [0xa0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0]
        );
        assert_eq!(inquiry(None, 96), [0x12, 0, 0, 0, 96, 0]);
        assert_eq!(inquiry(Some(0x83), 0x400), [0x12, 1, 0x83, 4, 0, 0]);
        assert_eq!(read_capacity16(32)[..2], [0x9e, 0x10]);
        assert_eq!(read_capacity16(32)[13], 32);
        assert_eq!(read_capacity10()[0], 0x25);
        assert_eq!(mode_sense6(255), [0x1a, 0x08, 0x3f, 0, 255, 0]);
        assert_eq!(mode_sense10(512)[7..9], [2, 0]);
        // Nothing that reads, writes, unmaps, reserves or selects a mode.
        for c in [
            test_unit_ready(),
            report_luns(1),
            inquiry(None, 1),
            read_capacity10(),
            read_capacity16(1),
            mode_sense6(1),
            mode_sense10(1),
        ] {
            assert!(![0x28, 0x88, 0x2a, 0x8a, 0x42, 0x56, 0x57, 0x5f, 0x15, 0x55].contains(&c[0]));
        }
    }

    #[test]
    fn lun_fields_peripheral_and_flat() {
        assert_eq!(lun_field(0), [0; 8]);
        assert_eq!(lun_field(5), [0, 5, 0, 0, 0, 0, 0, 0]);
        assert_eq!(lun_field(300), [0x41, 0x2c, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn report_luns_decodes_both_addressing_methods() {
        let mut d = vec![0, 0, 0, 24, 0, 0, 0, 0];
        d.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        d.extend_from_slice(&[0, 7, 0, 0, 0, 0, 0, 0]);
        d.extend_from_slice(&[0x41, 0x2c, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_report_luns(&d), vec![0, 7, 300]);
        // Truncated by the allocation length: only whole entries.
        assert_eq!(parse_report_luns(&d[..20]), vec![0]);
        assert!(parse_report_luns(&[0, 0]).is_empty());
    }

    #[test]
    fn standard_inquiry() {
        let mut d = vec![0u8; 36];
        d[0] = 0x00;
        d[8..16].copy_from_slice(b"ISCTL   ");
        d[16..32].copy_from_slice(b"engine          ");
        d[32..36].copy_from_slice(b"0.1 ");
        let i = parse_inquiry(&d).unwrap();
        assert_eq!(
            (i.vendor.as_str(), i.product.as_str(), i.revision.as_str()),
            ("ISCTL", "engine", "0.1")
        );
        assert_eq!((i.peripheral_type, i.peripheral_type_name), (0, "disk"));
        d[0] = 0x7f;
        let i = parse_inquiry(&d).unwrap();
        assert_eq!((i.peripheral_qualifier, i.peripheral_type), (3, 0x1f));
        assert!(parse_inquiry(&d[..20]).is_none());
    }

    #[test]
    fn vpd_pages() {
        assert_eq!(
            parse_supported_pages(&[0, 0, 0, 3, 0, 0x80, 0x83]),
            Some(vec![0, 0x80, 0x83])
        );
        assert_eq!(
            parse_serial(&[0, 0x80, 0, 6, b'a', b'b', b'c', b'1', b' ', 0]),
            Some("abc1".into())
        );
        assert_eq!(parse_serial(&[0, 0x83, 0, 0]), None, "wrong page code");
        assert_eq!(
            parse_rotation_rate(&[0, 0xb1, 0, 0x3c, 0, 1, 0, 0]),
            Some(1)
        );
        let mut d = vec![0, 0x83, 0, 0];
        // NAA binary, LUN association.
        d.extend_from_slice(&[0x01, 0x03, 0, 8, 0x60, 1, 2, 3, 4, 5, 6, 7]);
        // T10 vendor id, ASCII.
        d.extend_from_slice(&[0x02, 0x01, 0, 4, b'I', b'S', b'C', b'T']);
        // SCSI name string of the target (association 2, UTF-8).
        d.extend_from_slice(&[0x53, 0xa8, 0, 4, b'i', b'q', b'n', 0]);
        let len = (d.len() - 4) as u16;
        d[2..4].copy_from_slice(&len.to_be_bytes());
        let ds = parse_designators(&d).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(
            (ds[0].kind, ds[0].association, ds[0].value.as_str()),
            ("naa", "lun", "0x6001020304050607")
        );
        assert_eq!((ds[1].kind, ds[1].value.as_str()), ("t10", "ISCT"));
        assert_eq!(
            (ds[2].kind, ds[2].association, ds[2].value.as_str()),
            ("scsi-name", "target", "iqn")
        );
    }

    #[test]
    fn read_capacity_both_sizes() {
        let mut d = vec![0u8; 32];
        d[0..8].copy_from_slice(&65535u64.to_be_bytes());
        d[8..12].copy_from_slice(&512u32.to_be_bytes());
        d[13] = 3;
        d[14] = 0xc0;
        let c = parse_read_capacity16(&d).unwrap();
        assert_eq!(
            c,
            Capacity {
                blocks: 65536,
                block_size: 512,
                physical_block_exponent: 3,
                lbpme: true,
                lbprz: true
            }
        );
        assert_eq!(c.bytes(), 32 << 20);
        let c = parse_read_capacity10(&[0, 0, 0x0f, 0xff, 0, 0, 0x10, 0]).unwrap();
        assert_eq!((c.blocks, c.block_size), (4096, 4096));
        assert!(parse_read_capacity16(&d[..8]).is_none());
    }

    #[test]
    fn mode_sense_write_protect_and_sense_formats() {
        assert_eq!(parse_mode_sense6_wp(&[3, 0, 0x80, 0]), Some(true));
        assert_eq!(parse_mode_sense6_wp(&[3, 0, 0x10, 0]), Some(false));
        assert_eq!(
            parse_mode_sense10_wp(&[0, 6, 0, 0x80, 0, 0, 0, 0]),
            Some(true)
        );
        let mut fixed = vec![0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x06;
        fixed[12] = 0x29;
        let s = parse_sense(&fixed).unwrap();
        assert_eq!((s.key, s.asc, s.ascq), (UNIT_ATTENTION, 0x29, 0));
        let s = parse_sense(&[0x72, 0x05, 0x24, 0x00]).unwrap();
        assert_eq!((s.key, s.asc), (ILLEGAL_REQUEST, 0x24));
        assert_eq!(s.to_string(), "illegal request (asc 0x24 ascq 0x00)");
        assert!(parse_sense(&[]).is_none());
    }
}
