//! `[extent.*]`: storage for a logical unit (file, block device or ramdisk).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use toml::de::DeValue;

use crate::model::diag::Diags;
use crate::model::schema::{integer_of, type_name, Fields, Val};
use crate::model::size::{parse_size, size_from_integer};
use crate::model::types::{Backing, Extent, Origin, Rpm};

use super::{one_of, Entry};

/// Logical block sizes LIO and the engine support.
pub const BLOCK_SIZES: [u32; 4] = [512, 1024, 2048, 4096];
/// Longest unit serial number: LIO keeps `vpd_unit_serial` in 254 bytes with the NUL.
pub const MAX_SERIAL: usize = 253;
const MAX_COMMENT: usize = 1024;

/// What cross-checks need of an extent, even one with errors, and the extent itself
/// when it is valid.
pub(crate) struct ExtentDraft {
    pub name: String,
    pub origin: Origin,
    /// Where the backing was read, when it could be.
    pub backing: Option<Backing>,
    /// Position of `path` or `device`'s value.
    pub backing_at: Origin,
    pub shared: bool,
    /// `Some` when the definition has no error.
    pub extent: Option<Extent>,
}

/// The serial an extent gets when the model gives none: 16 lower-case hex digits of
/// SHA-256 over the global basename (empty without one), a line feed, and the extent
/// name. Stable across runs and hosts; hex only, so that LIO's NAA identifier, which
/// it derives from the serial's hex digits, uses all of it.
pub fn derived_serial(basename: Option<&str>, extent: &str) -> String {
    let mut h = Sha256::new();
    h.update(basename.unwrap_or("").as_bytes());
    h.update(b"\n");
    h.update(extent.as_bytes());
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn extent(e: &Entry<'_, '_>, basename: Option<&str>, d: &mut Diags) -> ExtentDraft {
    let mut f = Fields::new(
        e.src,
        e.table,
        format!("extent.{}", e.name),
        e.at.clone(),
        "an extent",
    );
    let errors_before = d.error_count();

    let kind = match f.string(d, "type") {
        Some(t) => one_of(d, &f, "type", &t, &["file", "block", "ramdisk"]),
        None => {
            if !f.has("type") {
                f.missing(d, "type", "add type = \"file\", \"block\" or \"ramdisk\"");
            }
            None
        }
    };
    let path = f.string(d, "path");
    let device = f.string(d, "device");
    let size = size(&mut f, d);
    let blocksize = match f.integer(d, "blocksize") {
        None => 512,
        Some(b) => match u32::try_from(b.v).ok().filter(|b| BLOCK_SIZES.contains(b)) {
            Some(b) => b,
            None => {
                d.error(
                    &b.at,
                    &f.object,
                    format!("blocksize {} is not 512, 1024, 2048 or 4096", b.v),
                    "use blocksize = 512 (the default), 1024, 2048 or 4096",
                );
                512
            }
        },
    };

    let mut backing_at = e.at.clone();
    let backing = match kind {
        Some("file") => {
            not_for(
                d,
                &f,
                &device,
                "device",
                "file",
                "use `path` for a file extent",
            );
            match &path {
                None => {
                    f.missing(
                        d,
                        "path",
                        "add path = \"/srv/iscsi/<name>.img\" (created sparse if missing)",
                    );
                    None
                }
                Some(p) => {
                    backing_at = p.at.clone();
                    absolute(d, &f, "path", p).map(|path| {
                        let size = size.as_ref().map(|s| s.v);
                        check_file(d, &f, p, &path, size.is_some());
                        Backing::File { path, size }
                    })
                }
            }
        }
        Some("block") => {
            not_for(
                d,
                &f,
                &path,
                "path",
                "block",
                "use `device` for a block extent",
            );
            if let Some(s) = &size {
                d.error(
                    &s.key_at,
                    &f.object,
                    "`size` is not used for a block extent: its size is the device's",
                    "remove `size`",
                );
            }
            match &device {
                None => {
                    f.missing(d, "device", "add device = \"/dev/<block device>\"");
                    None
                }
                Some(p) => {
                    backing_at = p.at.clone();
                    absolute(d, &f, "device", p).map(|device| {
                        warn_if_not_block_device(d, &f, p, &device);
                        Backing::Block { device }
                    })
                }
            }
        }
        Some(_) => {
            not_for(
                d,
                &f,
                &path,
                "path",
                "ramdisk",
                "remove `path`: a ramdisk lives in memory",
            );
            not_for(
                d,
                &f,
                &device,
                "device",
                "ramdisk",
                "remove `device`: a ramdisk lives in memory",
            );
            match &size {
                None => {
                    if !f.has("size") {
                        f.missing(d, "size", "add size = \"256MiB\" (a ramdisk needs a size)");
                    }
                    None
                }
                Some(s) => Some(Backing::Ramdisk { size: s.v }),
            }
        }
        None => None,
    };
    if let (Some(s), Some(Backing::File { .. } | Backing::Ramdisk { .. })) = (&size, &backing) {
        if s.v % u64::from(blocksize) != 0 {
            d.error(
                &s.at,
                &f.object,
                format!(
                    "size {} bytes is not a multiple of the block size {blocksize}",
                    s.v
                ),
                format!(
                    "use a size that is a whole number of {blocksize}-byte blocks, e.g. {} bytes",
                    (s.v / u64::from(blocksize)).max(1) * u64::from(blocksize)
                ),
            );
        }
    }

    let serial = match f.string(d, "serial") {
        Some(s) => {
            check_serial(d, &f, &s);
            s.v
        }
        None => derived_serial(basename, e.name),
    };
    let naa = f.string(d, "naa").and_then(|n| check_naa(d, &f, &n));
    let readonly = f.bool(d, "readonly").is_some_and(|v| v.v);
    let rpm = rpm(&mut f, d).unwrap_or_default();
    let comment = match f.string(d, "comment") {
        Some(c) if c.v.len() > MAX_COMMENT => {
            d.error(
                &c.at,
                &f.object,
                format!(
                    "`comment` is {} bytes long; the limit is {MAX_COMMENT}",
                    c.v.len()
                ),
                "shorten the comment",
            );
            String::new()
        }
        Some(c) => c.v,
        None => String::new(),
    };
    let enabled = f.bool(d, "enabled").is_none_or(|v| v.v);
    let shared = f.bool(d, "shared").is_some_and(|v| v.v);
    let write_back = match f.bool(d, "write_back") {
        Some(v) if v.v && matches!(backing, Some(Backing::Ramdisk { .. })) => {
            d.error(
                &v.at,
                &f.object,
                "`write_back` has no meaning for a ramdisk: it has no slower medium to write back to",
                "remove `write_back`",
            );
            false
        }
        Some(v) => v.v,
        None => false,
    };
    let model_alias = f.bool(d, "model_alias").is_some_and(|v| v.v);
    f.finish(d);

    let valid = d.error_count() == errors_before;
    ExtentDraft {
        name: e.name.to_owned(),
        origin: e.at.clone(),
        extent: match (&backing, valid) {
            (Some(b), true) => Some(Extent {
                name: e.name.to_owned(),
                backing: b.clone(),
                blocksize,
                serial,
                naa,
                readonly,
                rpm,
                comment,
                enabled,
                shared,
                write_back,
                model_alias,
                origin: e.at.clone(),
            }),
            _ => None,
        },
        backing,
        backing_at,
        shared,
    }
}

/// A key that belongs to another extent type.
fn not_for(
    d: &mut Diags,
    f: &Fields<'_, '_>,
    v: &Option<Val<String>>,
    key: &str,
    kind: &str,
    fix: &str,
) {
    if let Some(v) = v {
        d.error(
            &v.key_at,
            &f.object,
            format!("`{key}` is not a key of a {kind} extent"),
            fix,
        );
    }
}

/// `size`: a string with a unit or an integer number of bytes.
fn size(f: &mut Fields<'_, '_>, d: &mut Diags) -> Option<Val<u64>> {
    let (v, at, key_at) = f.raw("size")?;
    let parsed = match v.get_ref() {
        DeValue::String(s) => parse_size(s),
        DeValue::Integer(_) => match integer_of(v.get_ref()) {
            Some(n) => size_from_integer(n),
            None => size_from_integer(i128::MAX),
        },
        other => {
            d.error(
                &at,
                &f.object,
                format!(
                    "`size` must be a string with a unit or a number of bytes, found {}",
                    type_name(other)
                ),
                "write size = \"10GiB\" or size = 10737418240",
            );
            return None;
        }
    };
    match parsed {
        Ok(n) => Some(Val { v: n, at, key_at }),
        Err(e) => {
            d.error(&at, &f.object, e.problem, e.fix);
            None
        }
    }
}

/// Backing paths are absolute: a relative one would depend on the directory isctl
/// happens to run in. Returned without `.` components or repeated slashes.
fn absolute(d: &mut Diags, f: &Fields<'_, '_>, key: &str, v: &Val<String>) -> Option<PathBuf> {
    let p = Path::new(&v.v);
    if !p.is_absolute() {
        d.error(
            &v.at,
            &f.object,
            format!("{key} {:?} is not an absolute path", v.v),
            format!(
                "write the full path, starting with '/': {:?}",
                format!("/{}", v.v.trim_start_matches("./"))
            ),
        );
        return None;
    }
    Some(p.components().collect())
}

/// A file extent's file: a directory is an error; a missing file needs a size (it is
/// created sparse at apply).
fn check_file(d: &mut Diags, f: &Fields<'_, '_>, v: &Val<String>, path: &Path, has_size: bool) {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => d.error(
            &v.at,
            &f.object,
            format!("path {:?} is a directory", v.v),
            "give the path of the image file, e.g. <dir>/<name>.img",
        ),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !has_size => d.error(
            &v.at,
            &f.object,
            format!("file {:?} does not exist and no `size` is given", v.v),
            "add size = \"10GiB\" (the file is created sparse), or create the file first",
        ),
        Err(_) => {}
    }
}

#[cfg(unix)]
fn warn_if_not_block_device(d: &mut Diags, f: &Fields<'_, '_>, v: &Val<String>, path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(m) = std::fs::metadata(path) {
        if !m.file_type().is_block_device() {
            d.warn(
                &v.at,
                &f.object,
                format!("device {:?} exists but is not a block device", v.v),
                "for an image file use type = \"file\" with `path`",
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_not_block_device(_: &mut Diags, _: &Fields<'_, '_>, _: &Val<String>, _: &Path) {}

/// Printable ASCII without spaces, 1..=253 bytes.
fn check_serial(d: &mut Diags, f: &Fields<'_, '_>, s: &Val<String>) {
    if s.v.is_empty() {
        d.error(
            &s.at,
            &f.object,
            "`serial` is empty",
            "give a serial, or remove `serial` to have one derived",
        );
    } else if let Some(c) = s.v.chars().find(|c| !c.is_ascii_graphic()) {
        d.error(
            &s.at,
            &f.object,
            format!(
                "serial {:?} contains {c:?}; a unit serial is printable ASCII without spaces",
                s.v
            ),
            "use letters, digits and punctuation only, e.g. serial = \"0123456789abcdef\"",
        );
    } else if s.v.len() > MAX_SERIAL {
        d.error(
            &s.at,
            &f.object,
            format!(
                "serial is {} bytes long; LIO's limit is {MAX_SERIAL}",
                s.v.len()
            ),
            "use a shorter serial",
        );
    }
}

/// `0x` followed by 16 or 32 hex digits; stored lower-case.
fn check_naa(d: &mut Diags, f: &Fields<'_, '_>, n: &Val<String>) -> Option<String> {
    let hex = n.v.strip_prefix("0x").or_else(|| n.v.strip_prefix("0X"));
    match hex {
        Some(h) if (h.len() == 16 || h.len() == 32) && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(format!("0x{}", h.to_ascii_lowercase()))
        }
        _ => {
            d.error(
                &n.at,
                &f.object,
                format!(
                    "naa {:?} is not \"0x\" followed by 16 or 32 hex digits",
                    n.v
                ),
                "write e.g. naa = \"0x6001405abcdef012\", or remove `naa`",
            );
            None
        }
    }
}

/// `rpm`: "ssd", "unknown", or 5400/7200/10000/15000 (as a number or a string).
fn rpm(f: &mut Fields<'_, '_>, d: &mut Diags) -> Option<Rpm> {
    let (v, at, _) = f.raw("rpm")?;
    let allowed = "ssd, unknown, 5400, 7200, 10000, 15000";
    let word = match v.get_ref() {
        DeValue::String(s) => s.to_string(),
        DeValue::Integer(_) => {
            integer_of(v.get_ref()).map_or_else(|| "?".into(), |n| n.to_string())
        }
        other => {
            d.error(
                &at,
                &f.object,
                format!("`rpm` must be one of {allowed}, found {}", type_name(other)),
                "write rpm = \"ssd\" or rpm = 7200",
            );
            return None;
        }
    };
    match word.as_str() {
        "ssd" => Some(Rpm::Ssd),
        "unknown" => Some(Rpm::Unknown),
        "5400" => Some(Rpm::Rpm(5400)),
        "7200" => Some(Rpm::Rpm(7200)),
        "10000" => Some(Rpm::Rpm(10000)),
        "15000" => Some(Rpm::Rpm(15000)),
        _ => {
            d.error(
                &at,
                &f.object,
                format!("rpm {word:?} is not one of {allowed}"),
                "use rpm = \"ssd\" for flash, a spindle speed, or \"unknown\"",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_serials_are_stable_hex() {
        let a = derived_serial(Some("iqn.2005-10.org.example.ctl"), "lun0");
        assert_eq!(a.len(), 16);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(
            a,
            derived_serial(Some("iqn.2005-10.org.example.ctl"), "lun0")
        );
        assert_ne!(
            a,
            derived_serial(Some("iqn.2005-10.org.example.ctl"), "lun1")
        );
        assert_ne!(a, derived_serial(None, "lun0"));
        // Pinned (computed with `printf 'BASENAME\nlun0' | sha256sum`): the serial
        // must never change between isctl versions, because LIO freezes it once a LUN
        // is linked and initiators identify disks by it.
        assert_eq!(derived_serial(None, "lun0"), "bc7416fb0235399c");
        assert_eq!(
            derived_serial(Some("iqn.2005-10.org.example.ctl"), "lun0"),
            "af8ee578209aeee3"
        );
    }
}
