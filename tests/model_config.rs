//! Every example model shipped in `config/` validates, without warnings, on a fresh
//! machine: no environment variables, no secret files, no backing files present.

use std::path::{Path, PathBuf};

use isctl::model::{self, AuthMethod, Backing, IscsiName};

/// The models under `config/`: each `*.toml` file directly in it, and each
/// subdirectory as one directory model.
fn example_models() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir("config")
        .expect("config/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|x| x == "toml"))
        .collect();
    out.sort();
    out
}

#[test]
fn every_example_validates_without_warnings() {
    let models = example_models();
    for want in [
        "config/complete.toml",
        "config/demo.toml",
        "config/engine.toml",
        "config/gitops",
    ] {
        assert!(
            models.contains(&PathBuf::from(want)),
            "{want} missing from {models:?}"
        );
    }
    for path in models {
        match model::load(&path) {
            Ok(l) => assert!(
                l.warnings.is_empty(),
                "{}: warnings:\n{}",
                path.display(),
                l.warnings
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            Err(e) => panic!("{} does not validate:\n{e}", path.display()),
        }
    }
}

#[test]
fn complete_example_covers_every_feature() {
    let m = model::load(Path::new("config/complete.toml"))
        .unwrap()
        .model;
    let counts = (
        m.portals.len(),
        m.initiator_groups.len(),
        m.auths.len(),
        m.extents.len(),
        m.targets.len(),
    );
    assert_eq!(counts, (2, 1, 2, 4, 3));
    assert_eq!(m.targets.values().map(|t| t.luns.len()).sum::<usize>(), 5);
    // Default and explicit tags.
    assert_eq!(m.portals["default"].tag, 1);
    assert_eq!(m.portals["storage-net"].tag, 10);
    assert!(m
        .portals
        .values()
        .all(|p| p.discovery_auth == AuthMethod::Chap));
    // Mutual CHAP, one-way CHAP by default, demo mode.
    let t0 = &m.targets[&IscsiName::parse("iqn.2005-10.org.example.ctl:target0").unwrap()];
    assert_eq!(t0.groups[0].auth_method, AuthMethod::MutualChap);
    assert_eq!(t0.groups[1].auth_method, AuthMethod::Chap);
    assert!(m.auths["chap1"].peer.is_some());
    let lab = &m.targets[&IscsiName::parse("iqn.2005-10.org.example.ctl:lab").unwrap()];
    assert!(lab
        .groups
        .iter()
        .all(|g| g.initiator_group.is_none() && g.auth.is_none()));
    // One extent of each type, and a shared read-only one.
    let types: Vec<&str> = m.extents.values().map(|x| x.backing.type_name()).collect();
    for t in ["file", "block", "ramdisk"] {
        assert!(types.contains(&t), "{types:?}");
    }
    assert!(m.extents["media"].shared && m.extents["media"].readonly);
    // Networks are something LIO cannot enforce: not in the LIO example.
    assert!(m.initiator_groups.values().all(|g| g.networks.is_empty()));
}

#[test]
fn demo_example_is_local_and_open() {
    let m = model::load(Path::new("config/demo.toml")).unwrap().model;
    let p = &m.portals["local"];
    assert_eq!(p.listen, vec!["127.0.0.1:3260".parse().unwrap()]);
    assert!(m.auths.is_empty() && m.initiator_groups.is_empty());
    assert!(
        matches!(&m.extents["disk0"].backing, Backing::File { path, size: Some(_) } if path.starts_with("/tmp"))
    );
    assert!(matches!(m.extents["ro0"].backing, Backing::Ramdisk { .. }));
    assert!(m.extents["ro0"].readonly);
}

#[test]
fn gitops_directory_merges_its_files() {
    let m = model::load(Path::new("config/gitops")).unwrap().model;
    assert_eq!(m.targets.len(), 3);
    assert!(m.extents["postgres-data"]
        .origin
        .file
        .ends_with("postgres.toml"));
    assert!(m.portals["default"].origin.file.ends_with("00-common.toml"));
}

/// The examples meant for the kernel target must be fully expressible on LIO: a
/// feature LIO cannot honour is a plan-time refusal, and the README tells users to
/// apply these files.
#[test]
fn lio_examples_lower_for_lio_without_limits() {
    for path in ["config/complete.toml", "config/gitops"] {
        let m = model::load(Path::new(path)).unwrap().model;
        if let Err(e) = isctl::state::lower::lower(&m) {
            panic!("{path} cannot be applied to LIO:\n{e}");
        }
    }
}
