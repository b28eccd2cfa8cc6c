//! [`Secret`]: a CHAP secret that never prints.
//!
//! Secrets live only inside this type. `Debug` and `Display` show `(sensitive)`, and
//! serde serialisation writes `(sensitive)` too, so a secret cannot leak through a
//! plan, a log line or JSON output by accident. Code that must send the real bytes
//! (a configfs write, a CHAP computation) calls [`Secret::expose`], which is easy to
//! grep for.

use std::fmt;

/// What every rendering of a secret shows instead of its value.
pub const REDACTED: &str = "(sensitive)";

/// A secret string. Equality compares values (used by the diff), in constant time.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The clear value. Call only where the value must reach the kernel or the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in characters (validation checks 12..=16).
    pub fn char_len(&self) -> usize {
        self.0.chars().count()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.0.len() && bool::from(self.0.as_bytes().ct_eq(other.0.as_bytes()))
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Overwrite the bytes before the allocation is freed.
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("supersecret123");
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"(sensitive)\"");
        assert_eq!(s.expose(), "supersecret123");
    }

    #[test]
    fn compares_by_value() {
        assert_eq!(Secret::new("abc"), Secret::new("abc"));
        assert_ne!(Secret::new("abc"), Secret::new("abd"));
        assert_ne!(Secret::new("abc"), Secret::new("abcd"));
    }
}
