//! iSCSI names (RFC 3720 §3.2.6, RFC 3721, RFC 3722): the [`IscsiName`] newtype.
//!
//! A name is parsed once, here; afterwards no raw `String` stands for an IQN. isctl
//! accepts only the normalised form (lower case, ASCII), because LIO compares names
//! byte-wise at login: a mixed-case ACL would never match.

use std::fmt;

/// Longest iSCSI name, in bytes (RFC 3720 §3.2.6.1).
pub const MAX_NAME_LEN: usize = 223;

/// A syntactically valid, normalised iSCSI name: `iqn.…`, `eui.…` or `naa.…`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct IscsiName(String);

/// Why a string is not an iSCSI name. The message says what is wrong; `fix` how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct NameError {
    pub problem: String,
    pub fix: String,
}

fn err(problem: impl Into<String>, fix: impl Into<String>) -> NameError {
    NameError {
        problem: problem.into(),
        fix: fix.into(),
    }
}

impl IscsiName {
    /// Parse and check a name. Upper-case letters are refused (not silently lowered),
    /// so that what is in the model is exactly what reaches the kernel.
    pub fn parse(s: &str) -> Result<IscsiName, NameError> {
        if s.len() > MAX_NAME_LEN {
            return Err(err(
                format!(
                    "iSCSI name is {} bytes long; the limit is {MAX_NAME_LEN}",
                    s.len()
                ),
                "shorten the name",
            ));
        }
        if s.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(err(
                format!("iSCSI name {s:?} has upper-case letters"),
                format!("write it in lower case: {:?}", s.to_ascii_lowercase()),
            ));
        }
        if let Some(rest) = s.strip_prefix("iqn.") {
            parse_iqn(s, rest)?;
        } else if let Some(hex) = s.strip_prefix("eui.") {
            if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err(
                    format!("{s:?}: an eui. name needs exactly 16 hex digits after \"eui.\""),
                    "use the form eui.0123456789abcdef",
                ));
            }
        } else if let Some(hex) = s.strip_prefix("naa.") {
            if !(hex.len() == 16 || hex.len() == 32) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(err(
                    format!("{s:?}: a naa. name needs 16 or 32 hex digits after \"naa.\""),
                    "use the form naa.52004567ba64678d",
                ));
            }
        } else {
            return Err(err(
                format!("{s:?} is not an iSCSI name: it must start with iqn., eui. or naa."),
                "use the form iqn.yyyy-mm.reversed.domain:identifier",
            ));
        }
        Ok(IscsiName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for names that start with `iqn.`, `eui.` or `naa.` (a target key that does
    /// not is prefixed with the global basename).
    pub fn has_type_prefix(s: &str) -> bool {
        let l = s.to_ascii_lowercase();
        l.starts_with("iqn.") || l.starts_with("eui.") || l.starts_with("naa.")
    }
}

/// `iqn.yyyy-mm.reversed.domain[:anything]` (RFC 3720 §3.2.6.3.1).
fn parse_iqn(full: &str, rest: &str) -> Result<(), NameError> {
    let form =
        "use the form iqn.yyyy-mm.reversed.domain[:identifier], e.g. iqn.2005-10.org.example:disk1";
    let date_ok = rest.len() >= 8
        && rest.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && rest.as_bytes()[4] == b'-'
        && rest.as_bytes()[5..7].iter().all(u8::is_ascii_digit)
        && matches!(
            &rest[5..7],
            "01" | "02" | "03" | "04" | "05" | "06" | "07" | "08" | "09" | "10" | "11" | "12"
        )
        && rest.as_bytes()[7] == b'.';
    if !date_ok {
        return Err(err(
            format!("{full:?}: after \"iqn.\" must come a date yyyy-mm and a dot"),
            form,
        ));
    }
    let after_date = &rest[8..];
    let (authority, suffix) = match after_date.split_once(':') {
        Some((a, s)) => (a, Some(s)),
        None => (after_date, None),
    };
    if authority.is_empty()
        || authority.split('.').any(|label| {
            label.is_empty()
                || !label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
    {
        return Err(err(
            format!("{full:?}: the naming authority {authority:?} must be a reversed domain name (labels of a-z, 0-9, '-', separated by dots)"),
            form,
        ));
    }
    if let Some(suffix) = suffix {
        if let Some(bad) = suffix.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':'))
        }) {
            return Err(err(
                format!("{full:?}: character {bad:?} is not allowed in an iSCSI name"),
                "use only a-z, 0-9, '-', '.' and ':'",
            ));
        }
    }
    Ok(())
}

impl fmt::Display for IscsiName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for IscsiName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for n in [
            "iqn.2005-10.org.example.ctl:target0",
            "iqn.1998-01.com.vmware:esxi-host-1",
            "iqn.2026-01.com.example",
            "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test",
            "eui.0123456789abcdef",
            "naa.52004567ba64678d",
            "naa.6001405abcdef0123456789abcdef012",
        ] {
            assert!(IscsiName::parse(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for n in [
            "iqn.2005-13.org.example:x",
            "iqn.05-10.org.example",
            "iqn.2005-10.:x",
            "iqn.2005-10.org..example",
            "iqn.2005-10.Org.example",
            "iqn.2005-10.org.example:with space",
            "iqn.2005-10.org.example:under_score",
            "eui.0123",
            "naa.123456789012345678",
            "target0",
            "",
        ] {
            assert!(IscsiName::parse(n).is_err(), "{n}");
        }
        let long = format!("iqn.2005-10.org.example:{}", "a".repeat(200));
        assert!(IscsiName::parse(&long).is_err());
    }

    #[test]
    fn upper_case_error_suggests_lower_case() {
        let e = IscsiName::parse("iqn.2005-10.org.example:Disk").unwrap_err();
        assert!(e.fix.contains("iqn.2005-10.org.example:disk"), "{}", e.fix);
    }
}
