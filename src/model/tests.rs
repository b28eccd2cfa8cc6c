//! Unit tests of the whole front end: defaults, merging, secrets. Golden tests of
//! broken models (exact positions and messages) are in `tests/model_errors.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::*;

const BASE: &str = r#"
[global]
basename = "iqn.2005-10.org.example.ctl"

[portal.default]
listen = ["[::]:3260"]

[extent.lun0]
type = "ramdisk"
size = "64MiB"

[target.target0]
luns = { 0 = "lun0" }
[[target.target0.group]]
portal = "default"
"#;

fn ok(text: &str) -> Loaded {
    match load_str("m.toml", text) {
        Ok(l) => l,
        Err(e) => panic!("expected a valid model, got:\n{e}"),
    }
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match load_str("m.toml", text) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.errors().cloned().collect(),
    }
}

fn one_error(text: &str) -> Diagnostic {
    let e = errors(text);
    assert_eq!(
        e.len(),
        1,
        "expected one error, got:\n{}",
        ModelError {
            diagnostics: e.clone()
        }
    );
    e.into_iter().next().unwrap_or_else(|| unreachable!())
}

#[test]
fn minimal_model_with_defaults() {
    let m = ok(BASE).model;
    let name = IscsiName::parse("iqn.2005-10.org.example.ctl:target0").unwrap();
    let t = &m.targets[&name];
    assert_eq!(t.key, "target0");
    assert_eq!(t.groups[0].auth_method, AuthMethod::None);
    assert_eq!(t.groups[0].initiator_group, None);
    assert_eq!(m.portals["default"].tag, 1);
    assert_eq!(
        m.portals["default"].listen,
        vec!["[::]:3260".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(m.portals["default"].discovery_auth, AuthMethod::None);
    let x = &m.extents["lun0"];
    assert_eq!(x.backing, Backing::Ramdisk { size: 64 << 20 });
    assert_eq!(x.blocksize, 512);
    assert_eq!(x.rpm, Rpm::Unknown);
    assert!(x.enabled && !x.readonly && !x.shared);
    assert_eq!(
        x.serial,
        derived_serial(Some("iqn.2005-10.org.example.ctl"), "lun0")
    );
    assert_eq!(x.origin.line, 8);
    assert_eq!(x.origin.column, 9);
}

#[test]
fn default_tags_fill_the_gaps_in_name_order() {
    let m = ok(r#"
[portal.c]
listen = ["127.0.0.3"]
[portal.b]
tag = 1
listen = ["127.0.0.2"]
[portal.a]
listen = ["127.0.0.1"]
[portal.d]
tag = 3
listen = ["127.0.0.4"]
[portal.e]
listen = ["127.0.0.5"]
"#)
    .model;
    let tags: Vec<(&str, u16)> = m.portals.iter().map(|(n, p)| (n.as_str(), p.tag)).collect();
    assert_eq!(tags, [("a", 2), ("b", 1), ("c", 4), ("d", 3), ("e", 5)]);
}

#[test]
fn auth_method_defaults_to_chap_when_auth_is_set() {
    let text = format!("{BASE}auth = \"a\"\n[auth.a]\nuser = \"u\"\nsecret = \"0123456789ab\"\n");
    let m = ok(&text).model;
    let t = m.targets.values().next().unwrap();
    assert_eq!(t.groups[0].auth.as_deref(), Some("a"));
    assert_eq!(t.groups[0].auth_method, AuthMethod::Chap);
    assert_eq!(m.auths["a"].secret.expose(), "0123456789ab");
    assert!(m.auths["a"].peer.is_none());
}

#[test]
fn discovery_auth_defaults_to_chap_when_a_group_is_set() {
    let text = BASE.replace(
        "listen = [\"[::]:3260\"]",
        "listen = [\"[::]:3260\"]\ndiscovery_auth_group = \"d\"",
    ) + "[auth.d]\nuser = \"u\"\nsecret = \"0123456789ab\"\n";
    let m = ok(&text).model;
    assert_eq!(m.portals["default"].discovery_auth, AuthMethod::Chap);
    assert_eq!(
        m.portals["default"].discovery_auth_group.as_deref(),
        Some("d")
    );
}

#[test]
fn target_names_with_prefix_are_used_as_written() {
    let text = BASE
        .replace(
            "target.target0",
            "target.\"iqn.2026-01.com.example:archive\"",
        )
        .replace("[global]\nbasename = \"iqn.2005-10.org.example.ctl\"", "");
    let m = ok(&text).model;
    let t = m.targets.values().next().unwrap();
    assert_eq!(t.name.as_str(), "iqn.2026-01.com.example:archive");
    // Without a basename the serial is derived from the name alone.
    assert_eq!(m.extents["lun0"].serial, derived_serial(None, "lun0"));
}

#[test]
fn every_error_is_collected() {
    let text = BASE
        .replace("size = \"64MiB\"", "size = \"64 MiB\"\nblocksise = 512")
        .replace("portal = \"default\"", "portal = \"defualt\"");
    let e = errors(&text);
    let problems: Vec<&str> = e.iter().map(|d| d.problem.as_str()).collect();
    assert_eq!(e.len(), 3, "{problems:?}");
    assert!(problems[0].contains("unknown unit"));
    assert!(problems[1].contains("did you mean `blocksize`"));
    assert!(problems[2].contains("did you mean \"default\""));
}

#[test]
fn shared_extents_may_be_mapped_by_several_targets() {
    let two = format!(
        "{BASE}[target.t1]\nluns = {{ 3 = \"lun0\" }}\n[[target.t1.group]]\nportal = \"default\"\n"
    );
    let e = one_error(&two);
    assert!(
        e.problem.contains("already mapped by target \"target0\""),
        "{}",
        e.problem
    );
    assert_eq!((e.line, e.column), (17, 14));
    let shared = two.replace("size = \"64MiB\"", "size = \"64MiB\"\nshared = true");
    assert_eq!(ok(&shared).model.targets.len(), 2);
}

#[test]
fn write_back_is_for_file_and_block_extents() {
    let ram = BASE.replace("size = \"64MiB\"", "size = \"64MiB\"\nwrite_back = true");
    let e = one_error(&ram);
    assert!(e.problem.contains("ramdisk"), "{}", e.problem);
    assert_eq!((e.line, e.column), (11, 14));
    let off = BASE.replace("size = \"64MiB\"", "size = \"64MiB\"\nwrite_back = false");
    assert!(!ok(&off).model.extents["lun0"].write_back);
}

fn write_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

#[test]
fn directory_files_merge() {
    let dir = write_dir(&[
        ("00-common.toml", "[global]\nbasename = \"iqn.2005-10.org.example.ctl\"\n[portal.default]\nlisten = [\"[::]\"]\n"),
        ("targets/t0.toml", "[extent.x]\ntype = \"ramdisk\"\nsize = \"1M\"\n[target.t0]\nluns = { 0 = \"x\" }\n[[target.t0.group]]\nportal = \"default\"\n"),
        ("targets/t0.toml~", "this is not toml ["),
        (".#t1.toml", "neither ["),
    ]);
    let m = load(dir.path()).unwrap().model;
    assert_eq!(m.targets.len(), 1);
    let x = &m.extents["x"];
    assert_eq!(x.origin.file, dir.path().join("targets/t0.toml"));
    assert_eq!((x.origin.line, x.origin.column), (1, 9));
}

#[test]
fn an_object_in_two_files_names_both() {
    let dir = write_dir(&[
        ("a.toml", "[extent.x]\ntype = \"ramdisk\"\nsize = \"1M\"\n"),
        (
            "b.toml",
            "\n[extent.x]\ntype = \"ramdisk\"\nsize = \"2M\"\n",
        ),
    ]);
    let e = load(dir.path()).unwrap_err();
    assert_eq!(e.error_count(), 1, "{e}");
    let d = &e.diagnostics[0];
    assert_eq!(d.file, dir.path().join("b.toml"));
    assert_eq!((d.line, d.column), (2, 9));
    assert_eq!(d.object, "extent.x");
    let first = format!("{}:1:9", dir.path().join("a.toml").display());
    assert!(d.problem.contains(&first), "{}", d.problem);
}

#[test]
fn global_in_two_files_is_an_error() {
    let dir = write_dir(&[
        ("a.toml", "[global]\nalua = false\n"),
        ("b.toml", "[global]\nalua = true\n"),
    ]);
    let e = load(dir.path()).unwrap_err();
    assert_eq!(e.error_count(), 1, "{e}");
    assert_eq!(e.diagnostics[0].file, dir.path().join("b.toml"));
    assert!(e.diagnostics[0].problem.contains("a.toml:1:2"), "{e}");
}

#[test]
fn missing_path_is_an_error() {
    let e = load(Path::new("/nonexistent/model.toml")).unwrap_err();
    assert_eq!(
        e.diagnostics[0].file,
        PathBuf::from("/nonexistent/model.toml")
    );
    assert_eq!(e.diagnostics[0].line, 0);
}

fn chap_model(secret_lines: &str) -> String {
    format!("{BASE}auth = \"a\"\n[auth.a]\nuser = \"u\"\n{secret_lines}\n")
}

#[cfg(unix)]
#[test]
fn secret_file_is_read_and_loses_one_newline() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s");
    std::fs::write(&f, "0123456789abc\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = chap_model(&format!("secret_file = {:?}", f.display().to_string()));
    let l = ok(&text);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(l.model.auths["a"].secret.expose(), "0123456789abc");

    // Two newlines: the second one is part of the secret, which is then refused.
    std::fs::write(&f, "0123456789abc\n\n").unwrap();
    let e = one_error(&text);
    assert!(e.problem.contains("control character"), "{}", e.problem);

    // Group- or world-readable: a warning naming the mode and the fix.
    std::fs::write(&f, "0123456789abc").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let l = ok(&text);
    assert_eq!(l.warnings.len(), 1);
    let w = &l.warnings[0];
    assert_eq!(w.severity, Severity::Warning);
    assert!(w.problem.contains("mode 0644"), "{}", w.problem);
    assert!(w.fix.starts_with("chmod 600 "), "{}", w.fix);
}

#[test]
fn relative_secret_file_is_relative_to_the_model_file() {
    let dir = write_dir(&[("secrets/a", "0123456789abcd\n")]);
    let model = dir.path().join("m.toml");
    std::fs::write(&model, chap_model("secret_file = \"secrets/a\"")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let perm = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(dir.path().join("secrets/a"), perm).unwrap();
    }
    let l = load(&model).unwrap();
    assert_eq!(l.model.auths["a"].secret.expose(), "0123456789abcd");
}

#[test]
fn secret_env() {
    // A variable name no other test or environment uses.
    let var = "ISCTL_MODEL_UNIT_TEST_SECRET_ENV";
    let text = chap_model(&format!("secret_env = \"{var}\""));
    let e = one_error(&text);
    assert!(e.problem.contains("is not set"), "{}", e.problem);
    assert!(e.fix.contains(var));
    // The variable is used by this test only (std serialises environment access).
    std::env::set_var(var, "from-the-env-1");
    assert_eq!(ok(&text).model.auths["a"].secret.expose(), "from-the-env-1");
    std::env::remove_var(var);
}

#[test]
fn mutual_chap() {
    let text =
        chap_model("secret = \"0123456789ab\"\npeer_user = \"t\"\npeer_secret = \"ba9876543210\"")
            .replace(
                "auth = \"a\"",
                "auth = \"a\"\nauth_method = \"mutual-chap\"",
            );
    let m = ok(&text).model;
    let peer = m.auths["a"].peer.as_ref().unwrap();
    assert_eq!(peer.user, "t");
    assert_eq!(peer.secret.expose(), "ba9876543210");
    assert_eq!(
        m.targets.values().next().unwrap().groups[0].auth_method,
        AuthMethod::MutualChap
    );

    let no_peer = chap_model("secret = \"0123456789ab\"").replace(
        "auth = \"a\"",
        "auth = \"a\"\nauth_method = \"mutual-chap\"",
    );
    let e = one_error(&no_peer);
    assert!(
        e.problem.contains("needs auth \"a\" to have peer_user"),
        "{}",
        e.problem
    );
}

#[test]
fn errors_never_print_secrets() {
    for secret_line in [
        "secret = \"abcde\"",
        "secret = \"abcdefghijklmnopqrstuvwxyz\"",
        "secret = \"abcde\"\nsecret_env = \"X\"",
        "secret = \"abcdefghijkl\"\npeer_user = \"p\"\npeer_secret = \"abcdefghijkl\"",
        "secrte = \"abcde\"",
        "secret = \"abc\nde\"",
    ] {
        let text = chap_model(secret_line);
        let e = load_str("m.toml", &text).unwrap_err();
        let shown = format!(
            "{e}\n{e:?}\n{}",
            serde_json::to_string(&e.diagnostics).unwrap()
        );
        for s in ["abcde", "abcdefghijkl"] {
            assert!(
                !shown.contains(s),
                "secret {s:?} leaked for {secret_line:?}:\n{shown}"
            );
        }
    }
}

#[test]
fn file_extents() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("disk.img");
    std::fs::write(&existing, vec![0u8; 4096]).unwrap();
    let text = format!(
        "{BASE}[extent.f]\ntype = \"file\"\npath = \"{}\"\n",
        existing.display()
    );
    let m = ok(&text).model;
    assert_eq!(
        m.extents["f"].backing,
        Backing::File {
            path: existing.clone(),
            size: None
        }
    );
    // A file that does not exist needs a size; a directory is refused.
    let missing = text.replace("disk.img", "missing.img");
    assert!(one_error(&missing)
        .problem
        .contains("does not exist and no `size`"));
    let as_dir = text.replace("/disk.img", "");
    assert!(one_error(&as_dir).problem.contains("is a directory"));
    let with_size = missing.replace(
        "type = \"file\"",
        "type = \"file\"\nsize = \"1GiB\"\nblocksize = 4096",
    );
    let m = ok(&with_size).model;
    assert_eq!(m.extents["f"].blocksize, 4096);
    assert!(matches!(m.extents["f"].backing, Backing::File { size: Some(s), .. } if s == 1 << 30));
}

#[test]
fn backing_paths_compare_normalised() {
    let text = format!(
        "{BASE}[extent.a]\ntype = \"file\"\npath = \"/srv/iscsi/a.img\"\nsize = \"1M\"\n[extent.b]\ntype = \"file\"\npath = \"/srv//iscsi/./x/../a.img\"\nsize = \"1M\"\n"
    );
    let e = one_error(&text);
    assert_eq!(e.object, "extent.b");
    assert!(
        e.problem.contains("also the backing of extent \"a\""),
        "{}",
        e.problem
    );
}

#[test]
fn listen_conflicts() {
    let both = BASE.replace("[\"[::]:3260\"]", "[\"0.0.0.0\", \"[::]:3260\"]");
    let e = one_error(&both);
    assert!(e.problem.contains("are one portal on LIO"), "{}", e.problem);
    assert!(e.fix.contains("dual-stack"));
    let other_port = BASE.replace("[\"[::]:3260\"]", "[\"0.0.0.0:3261\", \"[::]:3260\"]");
    ok(&other_port);
    // A wildcard takes every address of its family (and [::] IPv4 too) on its port.
    let overlap = format!("{BASE}[portal.b]\nlisten = [\"127.0.0.1\", \"127.0.0.1:3261\"]\n");
    let e = one_error(&overlap);
    assert!(
        e.problem.contains("127.0.0.1:3260 overlaps [::]:3260"),
        "{}",
        e.problem
    );
    let v4_wild = BASE.replace("[\"[::]:3260\"]", "[\"0.0.0.0\", \"[2001:db8::1]\"]");
    ok(&v4_wild);
    let two_groups = format!("{BASE}[portal.b]\nlisten = [\"[::]\"]\n");
    let e = one_error(&two_groups);
    assert!(
        e.problem
            .contains("also listed by portal group \"default\""),
        "{}",
        e.problem
    );
}

#[test]
fn duplicate_explicit_tags() {
    let text = format!("{BASE}[portal.b]\ntag = 7\nlisten = [\"127.0.0.1:3261\"]\n[portal.c]\ntag = 7\nlisten = [\"127.0.0.2:3261\"]\n");
    let e = one_error(&text);
    assert_eq!(e.object, "portal.c");
    assert!(e.problem.contains("also the tag of portal group \"b\""));
}

#[test]
fn two_keys_one_target_name() {
    let text = format!(
        "{BASE}[target.\"iqn.2005-10.org.example.ctl:target0\"]\n[[target.\"iqn.2005-10.org.example.ctl:target0\".group]]\nportal = \"default\"\n"
    );
    let e = one_error(&text);
    assert!(
        e.problem.contains("also the name of target \"target0\""),
        "{}",
        e.problem
    );
}

#[test]
fn sizes_accept_integers_and_check_block_multiples() {
    let m = ok(&BASE.replace("\"64MiB\"", "1048576")).model;
    assert_eq!(
        m.extents["lun0"].backing,
        Backing::Ramdisk { size: 1 << 20 }
    );
    let e = one_error(&BASE.replace("\"64MiB\"", "\"6000\""));
    assert!(
        e.problem.contains("not a multiple of the block size 512"),
        "{}",
        e.problem
    );
    let e = one_error(&BASE.replace("size = \"64MiB\"", "size = \"1536\"\nblocksize = 1024"));
    assert!(e.problem.contains("block size 1024"), "{}", e.problem);
}

#[test]
fn every_extent_option() {
    let text = BASE.replace(
        "size = \"64MiB\"",
        "size = \"64MiB\"\nblocksize = 4096\nserial = \"SN-0001\"\nnaa = \"0x6001405ABCDEF012\"\nreadonly = true\nrpm = 7200\ncomment = \"c\"\nenabled = false",
    );
    let x = ok(&text).model.extents["lun0"].clone();
    assert_eq!(x.blocksize, 4096);
    assert_eq!(x.serial, "SN-0001");
    assert_eq!(x.naa.as_deref(), Some("0x6001405abcdef012"));
    assert!(x.readonly && !x.enabled);
    assert_eq!(x.rpm, Rpm::Rpm(7200));
    assert_eq!(x.comment, "c");
    let ssd = ok(&BASE.replace("size = \"64MiB\"", "size = \"64MiB\"\nrpm = \"ssd\"")).model;
    assert_eq!(ssd.extents["lun0"].rpm, Rpm::Ssd);
}

#[test]
fn initiator_groups() {
    let text = format!(
        "{BASE}initiator_group = \"g\"\n[initiator_group.g]\ninitiators = [\"iqn.1998-01.com.vmware:esx1\"]\nnetworks = [\"192.168.1.0/24\", \"10.0.0.7\", \"10.1.0.9/16\"]\n"
    );
    let l = ok(&text);
    let g = &l.model.initiator_groups["g"];
    assert_eq!(g.initiators[0].as_str(), "iqn.1998-01.com.vmware:esx1");
    let nets: Vec<String> = g.networks.iter().map(ToString::to_string).collect();
    assert_eq!(nets, ["192.168.1.0/24", "10.0.0.7/32", "10.1.0.0/16"]);
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(l.warnings[0].problem.contains("host bits"));
}

/// Hostile or mangled input gives diagnostics, never a panic: thousands of random
/// edits of the complete example (deleted spans, duplicated lines, replaced and
/// inserted characters), each loaded in full.
#[test]
fn never_panics_on_mangled_models() {
    use rand::{Rng, SeedableRng};
    let original: Vec<char> = include_str!("../../config/complete.toml").chars().collect();
    let alphabet: Vec<char> = "[]{}=\".,:#\n 0123456789abcxyz-_/\\'\u{e9}\u{1F600}\t\r"
        .chars()
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x15c7);
    let mut invalid = 0;
    for _ in 0..2000 {
        let mut text = original.clone();
        for _ in 0..rng.random_range(1..6) {
            let len = text.len();
            let at = rng.random_range(0..len);
            match rng.random_range(0..4) {
                0 => {
                    let end = (at + rng.random_range(1..40)).min(len);
                    text.drain(at..end);
                }
                1 => text[at] = alphabet[rng.random_range(0..alphabet.len())],
                2 => text.insert(at, alphabet[rng.random_range(0..alphabet.len())]),
                _ => {
                    let start = text[..at]
                        .iter()
                        .rposition(|c| *c == '\n')
                        .map_or(0, |i| i + 1);
                    let end = text[at..]
                        .iter()
                        .position(|c| *c == '\n')
                        .map_or(len, |i| at + i + 1);
                    let line: Vec<char> = text[start..end].to_vec();
                    text.splice(end..end, line);
                }
            }
            if text.is_empty() {
                break;
            }
        }
        let s: String = text.into_iter().collect();
        if let Err(e) = load_str("mangled.toml", &s) {
            invalid += 1;
            for d in &e.diagnostics {
                assert!(!d.fix.is_empty(), "no fix: {d}");
            }
        }
    }
    // Most edits break something; the test must have exercised the error paths.
    assert!(
        invalid > 1000,
        "only {invalid} of 2000 mangled models were invalid"
    );
}

#[test]
fn model_alias_is_an_extent_switch() {
    assert!(!ok(BASE).model.extents["lun0"].model_alias);
    let on = BASE.replace("size = \"64MiB\"", "size = \"64MiB\"\nmodel_alias = true");
    assert!(ok(&on).model.extents["lun0"].model_alias);
    let rendered = render::render_toml(&ok(&on).model, &render::SecretsMode::Show, &[]);
    assert!(rendered.contains("model_alias = true"), "{}", *rendered);
}

#[test]
fn chap_optional_needs_chap_and_a_known_policy() {
    let with_auth = format!(
        "{BASE}auth = \"a\"\nchap = \"optional\"\n[auth.a]\nuser = \"u\"\nsecret = \"initiator2Target\"\n"
    );
    let m = ok(&with_auth).model;
    let g = &m.targets.values().next().unwrap().groups[0];
    assert!(g.chap_optional);
    assert_eq!(g.auth_method, AuthMethod::Chap);
    let required = with_auth.replace("chap = \"optional\"", "chap = \"required\"");
    assert!(!ok(&required).model.targets.values().next().unwrap().groups[0].chap_optional);
    let e = one_error(&with_auth.replace("chap = \"optional\"", "chap = \"maybe\""));
    assert!(e.problem.contains("not a CHAP policy"), "{}", e.problem);
    let e = one_error(&format!("{BASE}chap = \"optional\"\n"));
    assert!(e.problem.contains("no CHAP"), "{}", e.problem);
    assert!(e.fix.contains("auth"), "{}", e.fix);
}
