//! Sizes with units: `10GiB`, `512M`, `1.5TB`, or a plain number of bytes.
//!
//! 1024-based: `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB`; 1000-based: `KB`, `MB`, `GB`,
//! `TB`; `B` or no unit: bytes. A decimal number is allowed when the result is a whole
//! number of bytes (`1.5GiB`), computed exactly (no floating point).

/// Why a size does not parse. `problem` quotes the size as written (sizes are never
/// secret); `fix` says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeError {
    pub problem: String,
    pub fix: String,
}

pub(crate) const UNITS_FIX: &str =
    "use B, K/KiB, M/MiB, G/GiB, T/TiB, KB/MB/GB/TB or a plain number of bytes";

const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("B", 1),
    ("K", 1 << 10),
    ("KiB", 1 << 10),
    ("M", 1 << 20),
    ("MiB", 1 << 20),
    ("G", 1 << 30),
    ("GiB", 1 << 30),
    ("T", 1 << 40),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

fn err(problem: String, fix: impl Into<String>) -> SizeError {
    SizeError {
        problem,
        fix: fix.into(),
    }
}

/// Parse a size written as a string. The result is in bytes and never 0.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let body = s.trim();
    if body.starts_with('-') {
        return Err(err(
            format!("size {s:?} is negative"),
            "give a size greater than 0",
        ));
    }
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, unit) = body.split_at(split);
    if number.is_empty()
        || number.starts_with('.')
        || number.ends_with('.')
        || number.matches('.').count() > 1
    {
        return Err(err(
            format!("size {s:?} does not start with a number"),
            "write a number followed by a unit, e.g. \"10GiB\" or \"512M\"",
        ));
    }
    let Some(&(_, multiplier)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        let trimmed = unit.trim();
        let fix = if trimmed != unit && UNITS.iter().any(|(u, _)| *u == trimmed) {
            format!("{UNITS_FIX}, with no space before the unit: \"{number}{trimmed}\"")
        } else {
            UNITS_FIX.to_owned()
        };
        return Err(err(format!("size {s:?} has an unknown unit"), fix));
    };
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    let too_large = || {
        err(
            format!("size {s:?} is too large"),
            "give a size below 16 EiB (2^64 bytes)",
        )
    };
    // value = digits / 10^frac_len * multiplier, in exact integer arithmetic.
    let mut digits: u128 = 0;
    for b in int_part.bytes().chain(frac_part.bytes()) {
        digits = digits
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(b - b'0')))
            .ok_or_else(too_large)?;
    }
    let scale = u32::try_from(frac_part.len())
        .ok()
        .and_then(|n| 10u128.checked_pow(n))
        .ok_or_else(|| {
            err(
                format!("size {s:?} has too many decimals"),
                "write fewer decimals",
            )
        })?;
    let scaled = digits
        .checked_mul(u128::from(multiplier))
        .ok_or_else(too_large)?;
    if scaled % scale != 0 {
        return Err(err(
            format!("size {s:?} is not a whole number of bytes"),
            "use a smaller unit or fewer decimals so that the size is whole bytes",
        ));
    }
    let bytes = u64::try_from(scaled / scale).map_err(|_| too_large())?;
    if bytes == 0 {
        return Err(err(
            format!("size {s:?} is zero"),
            "give a size greater than 0",
        ));
    }
    Ok(bytes)
}

/// Parse a size written as a TOML integer (bytes).
pub fn size_from_integer(n: i128) -> Result<u64, SizeError> {
    if n < 0 {
        return Err(err(
            format!("size {n} is negative"),
            "give a size greater than 0",
        ));
    }
    if n == 0 {
        return Err(err("size is zero".into(), "give a size greater than 0"));
    }
    u64::try_from(n).map_err(|_| {
        err(
            format!("size {n} is too large"),
            "give a size below 16 EiB (2^64 bytes)",
        )
    })
}

/// A size for humans: the largest binary unit that divides it exactly (`10GiB`), else
/// bytes.
pub fn format_size(bytes: u64) -> String {
    for (unit, m) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= m && bytes % m == 0 {
            return format!("{}{unit}", bytes / m);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_unit() {
        let cases: &[(&str, u64)] = &[
            ("512", 512),
            ("512B", 512),
            ("4K", 4096),
            ("4KiB", 4096),
            ("512M", 512 << 20),
            ("10GiB", 10 << 30),
            ("10G", 10 << 30),
            ("2T", 2 << 40),
            ("2TiB", 2 << 40),
            ("1KB", 1000),
            ("10MB", 10_000_000),
            ("10GB", 10_000_000_000),
            ("3TB", 3_000_000_000_000),
            ("1.5GiB", 3 << 29),
            ("0.5K", 512),
            (" 1M ", 1 << 20),
            ("16383T", 16383 << 40),
        ];
        for (s, want) in cases {
            assert_eq!(parse_size(s), Ok(*want), "{s}");
        }
    }

    #[test]
    fn rejects_bad_sizes() {
        for (s, what) in [
            ("10 GB", "unknown unit"),
            ("10gb", "unknown unit"),
            ("10PiB", "unknown unit"),
            ("0", "zero"),
            ("0GiB", "zero"),
            ("-1G", "negative"),
            ("0.3B", "whole number"),
            ("1.0000001K", "whole number"),
            ("99999999999999999999999T", "too large"),
            ("16384PiB", "unknown unit"),
            ("17179869184G", "too large"),
            ("GiB", "number"),
            (".5G", "number"),
            ("1..5G", "number"),
            ("", "number"),
        ] {
            let e = parse_size(s).unwrap_err();
            assert!(e.problem.contains(what), "{s}: {}", e.problem);
        }
    }

    #[test]
    fn space_before_unit_gets_a_precise_fix() {
        let e = parse_size("10 GB").unwrap_err();
        assert_eq!(e.problem, "size \"10 GB\" has an unknown unit");
        assert!(e.fix.contains("\"10GB\""), "{}", e.fix);
    }

    #[test]
    fn integer_sizes() {
        assert_eq!(size_from_integer(4096), Ok(4096));
        assert!(size_from_integer(0).is_err());
        assert!(size_from_integer(-5).is_err());
        assert!(size_from_integer(i128::from(u64::MAX) + 1).is_err());
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_size(10 << 30), "10GiB");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(512 << 20), "512MiB");
    }
}
