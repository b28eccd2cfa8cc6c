//! `isctl import`: other targets' configurations → models that `isctl validate`
//! accepts, with the right targets, LUN numbers, sizes, serials and CHAP users, and
//! every setting the model cannot express reported (exit 4).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::Isctl;

const FIX: &str = "tests/fixtures/import";

/// Validates `path` (a file or a directory) with `env` set; returns stdout.
#[track_caller]
fn validate(path: &Path, env: &[(&str, &str)]) -> String {
    let run = Isctl::new()
        .envs(env.iter().copied())
        .args(["validate".as_ref(), path.as_os_str()])
        .run();
    run.assert_exit(0);
    run.stdout.clone()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn model(path: &Path) -> isctl::model::Model {
    isctl::model::load(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .model
}

#[test]
fn tgt_example_imports_with_tgt_lun_numbers_and_serials() {
    let run = Isctl::new()
        .args(["import", "tgt", &format!("{FIX}/tgt-targets.conf.example")])
        .run();
    run.assert_exit(4);
    // Listed on stderr and in the header, with file:line.
    assert!(
        run.stderr
            .contains("error: the import is not lossless: 26 tgt setting(s)"),
        "{run}"
    );
    assert!(run.stderr.contains("tgt-targets.conf.example:102: target \"iqn.2008-09.com.example:server.target5\" store \"/dev/sdd\": `removable 1`"), "{run}");
    assert!(run.stdout.starts_with("# Imported by isctl"), "{run}");
    assert!(
        run.stdout
            .contains("#   - tests/fixtures/import/tgt-targets.conf.example:179:"),
        "{run}"
    );
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "m.toml", &run.stdout);
    let env = [
        ("ISCTL_SECRET_SOMEUSER", "secretpass12"),
        ("ISCTL_SECRET_USER1_USERA", "secretpass12"),
        ("ISCTL_SECRET_USER1_USERA_PEER", "newsecretpassA"),
    ];
    let out = validate(&f, &env);
    assert!(out.contains("9 targets, 18 LUNs"), "{out}");
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    let m = model(&f);
    let luns = |t: &str| -> Vec<(u16, String, String)> {
        let t = m.targets.values().find(|x| x.key.ends_with(t)).unwrap();
        t.luns
            .iter()
            .map(|(l, e)| {
                let x = &m.extents[e];
                let p = match &x.backing {
                    isctl::model::Backing::Block { device } => device.display().to_string(),
                    b => panic!("{b:?}"),
                };
                (*l, p, x.serial.clone())
            })
            .collect()
    };
    let s = |l: u16, p: &str, ser: &str| (l, p.to_string(), ser.to_string());
    // target3: three backing stores, LUN 1, 2, 3; tid 3.
    assert_eq!(
        luns(":server.target3"),
        vec![
            s(1, "/dev/LVM/somedevice1", "beaf31"),
            s(2, "/dev/LVM/somedevice2", "beaf32"),
            s(3, "/dev/LVM/somedevice3", "beaf33"),
        ]
    );
    // target4 (two blocks merged): backing stores first, then direct stores, each in
    // path order; /dev/sdc twice is skipped the second time.
    assert_eq!(
        luns(":server.target4")
            .iter()
            .map(|x| (x.0, x.1.clone()))
            .collect::<Vec<_>>(),
        vec![
            (1, "/dev/sdc".to_string()),
            (2, "/dev/sde".to_string()),
            (3, "/dev/sdb".to_string()),
            (4, "/dev/sdd".to_string())
        ]
    );
    // target5: explicit LUNs 1, 2, 15; the free /dev/sdb1 takes 3; serials from scsi_sn.
    let t5 = luns(":server.target5");
    assert_eq!(
        t5.iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 15]
    );
    assert_eq!(t5[2], s(3, "/dev/sdb1", "SERIAL"));
    assert_eq!(t5[3], s(15, "/dev/sdd1", "multipath-10"));
    // target6: `lun 10`.
    assert_eq!(luns(":server.target6")[0].0, 10);
    // CHAP users.
    let t5 = m
        .targets
        .values()
        .find(|x| x.key.ends_with(":server.target5"))
        .unwrap();
    let a = &m.auths[t5.groups[0].auth.as_ref().unwrap()];
    assert_eq!(a.user, "user1");
    assert_eq!(a.peer.as_ref().unwrap().user, "userA");
    let g = &m.initiator_groups[t5.groups[0].initiator_group.as_ref().unwrap()];
    assert_eq!(g.networks.len(), 2);
}

#[test]
fn tgt_lossless_config_to_a_directory_with_secret_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let secrets = dir.path().join("secrets");
    let run = Isctl::new()
        .args([
            "import",
            "tgt",
            &format!("{FIX}/tgt-lossless.conf"),
            "--out-dir",
        ])
        .arg(&out)
        .arg("--secrets-dir")
        .arg(&secrets)
        .run();
    run.assert_exit(0);
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["00-common.toml", "db.toml", "web.toml"]);
    let all: String = files
        .iter()
        .map(|f| std::fs::read_to_string(out.join(f)).unwrap())
        .collect();
    for secret in ["dbsecret12345", "dbtargetsecret1", "discoversecret1"] {
        assert!(!all.contains(secret), "a secret in the TOML:\n{all}");
    }
    let f = secrets.join("dbuser-dbtarget.secret");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "dbsecret12345");
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let v = validate(&out, &[]);
    assert!(v.contains("2 targets, 4 LUNs"), "{v}");
    let m = model(&out);
    let db = m.targets.values().find(|t| t.key.ends_with(":db")).unwrap();
    let db_luns: Vec<_> = db.luns.iter().map(|(l, e)| (*l, &m.extents[e])).collect();
    // The free store takes the smallest LUN not reserved: 1; the other keeps 3.
    assert_eq!(db_luns[0].0, 1);
    assert_eq!(db_luns[0].1.serial, "beaf11");
    assert_eq!(db_luns[0].1.blocksize, 4096);
    assert!(!db_luns[0].1.write_back);
    assert_eq!(
        (db_luns[1].0, db_luns[1].1.serial.as_str()),
        (3, "DBDATA01")
    );
    assert!(db_luns[1].1.write_back);
    let a = &m.auths[db.groups[0].auth.as_ref().unwrap()];
    assert_eq!(
        (a.user.as_str(), a.peer.as_ref().unwrap().user.as_str()),
        ("dbuser", "dbtarget")
    );
    assert_eq!(
        db.groups[0].auth_method,
        isctl::model::AuthMethod::MutualChap
    );
    assert_eq!(
        m.portals["default"].discovery_auth_group.as_deref(),
        Some("discover")
    );
    // The included file: web, tid 2, stores in path order, read-only.
    let web = m
        .targets
        .values()
        .find(|t| t.key.ends_with(":web"))
        .unwrap();
    let web_luns: Vec<_> = web
        .luns
        .iter()
        .map(|(l, e)| (*l, m.extents[e].serial.clone(), m.extents[e].readonly))
        .collect();
    assert_eq!(
        web_luns,
        vec![(1, "beaf21".into(), true), (2, "beaf22".into(), true)]
    );
    assert_eq!(m.extents[&web.luns[&1]].name, "dev-vg0-web-a");
}

#[test]
fn tgt_json_output_and_bad_input() {
    let run = Isctl::new()
        .args([
            "-o",
            "json",
            "import",
            "tgt",
            &format!("{FIX}/tgt-lossless.conf"),
        ])
        .run();
    run.assert_exit(0);
    let j = run.json();
    assert_eq!(j["lossless"], true);
    assert_eq!(
        j["model"]["auth"]["dbuser-dbtarget"]["secret_env"],
        "ISCTL_SECRET_DBUSER_DBTARGET"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "t.conf",
        "<target iqn.2024-01.a:b>\n  backing-store /dev/x\n",
    );
    let run = Isctl::new()
        .args(["import".as_ref(), "tgt".as_ref(), bad.as_os_str()])
        .run();
    run.assert_exit(1);
    assert!(
        run.stderr
            .contains("t.conf:1: error: <target iqn.2024-01.a:b> is never closed"),
        "{run}"
    );
    assert!(run.stderr.contains("fix: add </target>"), "{run}");
    let run = Isctl::new()
        .args(["import", "tgt", "/nonexistent/targets.conf"])
        .run();
    run.assert_exit(1);
}

#[test]
fn ctld_manpage_example_imports_and_reports() {
    let run = Isctl::new()
        .args(["import", "ctld", &format!("{FIX}/ctld-manpage.conf")])
        .run();
    run.assert_exit(4);
    assert!(
        run.stderr
            .contains("error: the import is not lossless: 10 ctld setting(s)"),
        "{run}"
    );
    assert!(run.stderr.contains("ctld-manpage.conf:45: target \"iqn.2012-06.com.example:target2\" lun 1: `option foo bar`"), "{run}");
    assert!(run.stderr.contains("2 CHAP credentials"), "{run}");
    // target0 and target3 use the predefined portal group, whose discovery ctld denies.
    assert!(run.stderr.contains("ctld-manpage.conf:20: portal-group \"default\": ctld's predefined auth-group `default` denies every discovery session"), "{run}");
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "m.toml", &run.stdout);
    let env = [
        ("ISCTL_SECRET_AG_MUTUAL", "usersecret0001"),
        ("ISCTL_SECRET_AG_MUTUAL_PEER", "mutualsecret01"),
        ("ISCTL_SECRET_TARGET3", "chapsecret12"),
    ];
    let out = validate(&f, &env);
    assert!(out.contains("3 targets, 4 LUNs"), "{out}");
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    let m = model(&f);
    let t = |s: &str| m.targets.values().find(|t| t.key.ends_with(s)).unwrap();
    let t0 = t(":target0");
    assert_eq!(t0.alias.as_deref(), Some("Example target"));
    assert_eq!(m.extents[&t0.luns[&0]].blocksize, 4096);
    assert_eq!(t0.groups[0].portal, "default");
    let t2 = t(":target2");
    assert_eq!(t2.luns.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(t2.groups[0].portal, "pg-example");
    assert_eq!(
        t2.groups[0].auth_method,
        isctl::model::AuthMethod::MutualChap
    );
    let a = &m.auths[t2.groups[0].auth.as_ref().unwrap()];
    assert_eq!(
        (a.user.as_str(), a.peer.as_ref().unwrap().user.as_str()),
        ("user", "mutualuser")
    );
    assert_eq!(
        m.auths[t(":target3").groups[0].auth.as_ref().unwrap()].user,
        "chapuser"
    );
    let pg = &m.portals["pg-example"];
    assert_eq!(pg.tag, 2);
    assert_eq!(
        pg.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        vec!["[::]:3261"]
    );
}

#[test]
fn ctld_lossless_config_validates_with_sizes_serials_and_shared_luns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let secrets = dir.path().join("secrets");
    let run = Isctl::new()
        .args([
            "import",
            "ctld",
            &format!("{FIX}/ctld-lossless.conf"),
            "--out-dir",
        ])
        .arg(&out)
        .arg("--secrets-dir")
        .arg(&secrets)
        .run();
    run.assert_exit(0);
    assert!(run.stderr.contains("note: tests/fixtures/import/ctld-lossless.conf:12: portal-group \"pg0\": listen 0.0.0.0:3260 and [::]:3260"), "{run}");
    let v = validate(&out, &[]);
    assert!(
        v.contains("2 portals, 1 initiator group, 2 auths, 3 extents, 2 targets, 4 LUNs"),
        "{v}"
    );
    // The shared LUN lives in the common file, the others beside their target.
    let common = std::fs::read_to_string(out.join("00-common.toml")).unwrap();
    assert!(common.contains("[extent.dev-zvol-tank-iso]"), "{common}");
    assert!(std::fs::read_to_string(out.join("backup.toml"))
        .unwrap()
        .contains("[extent.backup-lun0]"));
    let m = model(&out);
    let t = |s: &str| m.targets.values().find(|t| t.key.ends_with(s)).unwrap();
    let b = t(":backup");
    let ram = &m.extents[&b.luns[&0]];
    assert_eq!(
        ram.backing,
        isctl::model::Backing::Ramdisk { size: 512 << 20 }
    );
    assert_eq!(ram.serial, "RAM0000");
    assert_eq!(b.luns[&3], "dev-zvol-tank-iso");
    assert_eq!(m.portals["backup"].tag, 7);
    assert_eq!(m.portals["pg0"].tag, 2);
    let v = t(":vmware");
    assert_eq!(v.luns[&1], "dev-zvol-tank-iso");
    let iso = &m.extents["dev-zvol-tank-iso"];
    assert!(iso.shared && iso.readonly);
    assert_eq!(m.extents[&v.luns[&0]].rpm, isctl::model::Rpm::Ssd);
    let ig = &m.initiator_groups[v.groups[0].initiator_group.as_ref().unwrap()];
    assert_eq!(ig.initiators.len(), 2);
    assert_eq!(
        std::fs::read_to_string(secrets.join("vmware.peer_secret")).unwrap(),
        "ctldsecret1234"
    );
}

#[test]
fn truenas_queries_as_a_directory_or_one_file_give_one_model() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let per_query = Isctl::new()
        .args([
            "import",
            "truenas",
            &format!("{FIX}/truenas"),
            "--secrets-dir",
        ])
        .arg(&secrets)
        .run();
    per_query.assert_exit(0);
    let combined = Isctl::new()
        .args([
            "import",
            "truenas",
            &format!("{FIX}/truenas-all.json"),
            "--secrets-dir",
        ])
        .arg(&secrets)
        .run();
    combined.assert_exit(0);
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&per_query.stdout), body(&combined.stdout));
    assert!(!per_query.stdout.contains("esxsecret1234"), "{per_query}");
    let f = write(dir.path(), "m.toml", &per_query.stdout);
    let v = validate(&f, &[]);
    assert!(
        v.contains("2 portals, 2 initiator groups, 2 auths, 3 extents, 2 targets, 4 LUNs"),
        "{v}"
    );
    let m = model(&f);
    let vm =
        &m.targets[&isctl::model::IscsiName::parse("iqn.2005-10.org.freenas.ctl:vmware").unwrap()];
    assert_eq!(vm.alias.as_deref(), Some("VMware datastore"));
    assert_eq!(vm.luns.keys().copied().collect::<Vec<_>>(), vec![0, 5]);
    let g = &vm.groups[0];
    assert_eq!(
        (g.portal.as_str(), g.auth.as_deref()),
        ("portal-1", Some("esx"))
    );
    assert_eq!(g.auth_method, isctl::model::AuthMethod::MutualChap);
    let ds = &m.extents[&vm.luns[&0]];
    assert_eq!(ds.serial, "ac1f6b0a1b2c000");
    assert_eq!(
        ds.naa.as_deref(),
        Some("0x6589cfc000000e1f2c3a4b5c6d7e8f90")
    );
    assert_eq!(ds.rpm, isctl::model::Rpm::Ssd);
    let bk = m
        .targets
        .values()
        .find(|t| t.key.ends_with(":backup"))
        .unwrap();
    let img = &m.extents[&bk.luns[&0]];
    assert_eq!(
        img.backing,
        isctl::model::Backing::File {
            path: "/mnt/tank/iscsi/backup.img".into(),
            size: Some(10 << 30)
        }
    );
    assert_eq!(
        (img.blocksize, img.rpm),
        (4096, isctl::model::Rpm::Rpm(7200))
    );
    let iso = &m.extents[&bk.luns[&1]];
    assert!(iso.shared && iso.readonly);
    let ig = &m.initiator_groups[bk.groups[0].initiator_group.as_ref().unwrap()];
    assert_eq!(ig.networks.len(), 1);
    assert!(ig.initiators.is_empty());
    assert_eq!(
        m.portals["portal-2"].discovery_auth_group.as_deref(),
        Some("discover")
    );
}

#[test]
fn freenas_v1_responses_convert_as_freenas_meant() {
    let run = Isctl::new()
        .args(["import", "freenas", &format!("{FIX}/freenas")])
        .run();
    run.assert_exit(0);
    assert!(run.stderr.contains("freenas/targettoextent.json:3: targettoextent id 2: no lunid: the lowest free id of the target, 0, is used"), "{run}");
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "m.toml", &run.stdout);
    let env = [
        ("ISCTL_SECRET_ESX", "esxsecret1234"),
        ("ISCTL_SECRET_ESX_PEER", "nassecret1234"),
        ("ISCTL_SECRET_DISCOVER", "discoversecret"),
    ];
    let v = validate(&f, &env);
    assert!(
        v.contains("2 portals, 2 initiator groups, 2 auths, 3 extents, 2 targets, 3 LUNs"),
        "{v}"
    );
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    let m = model(&f);
    let bk = m
        .targets
        .values()
        .find(|t| t.key.ends_with(":backup"))
        .unwrap();
    // "10MB" is 10 MiB, as ctld's expand_number read FreeNAS's size.
    assert_eq!(
        m.extents[&bk.luns[&0]].backing,
        isctl::model::Backing::File {
            path: "/mnt/tank/iscsi/backup.img".into(),
            size: Some(10 << 20)
        }
    );
    assert_eq!(
        m.extents[&bk.luns[&4]].backing,
        isctl::model::Backing::Block {
            device: "/dev/ada2".into()
        }
    );
    // "ALL" initiators with a space-separated network list.
    let ig = &m.initiator_groups[bk.groups[0].initiator_group.as_ref().unwrap()];
    assert!(ig.initiators.is_empty());
    assert_eq!(ig.networks.len(), 2);
    let vm = m
        .targets
        .values()
        .find(|t| t.key.ends_with(":vmware"))
        .unwrap();
    assert_eq!(
        vm.groups[0].auth_method,
        isctl::model::AuthMethod::MutualChap
    );
    assert_eq!(
        m.extents[&vm.luns[&0]].backing,
        isctl::model::Backing::Block {
            device: "/dev/zvol/tank/vmware-ds1".into()
        }
    );
    assert_eq!(
        m.initiator_groups[vm.groups[0].initiator_group.as_ref().unwrap()]
            .initiators
            .len(),
        2
    );
    assert_eq!(
        m.portals["portal-1"].discovery_auth_group.as_deref(),
        Some("discover")
    );

    // What the model lacks is reported against the FreeNAS file.
    let bad = write(
        dir.path(),
        "all.json",
        r#"{"target": [{"id": 1, "iscsi_target_name": "t", "iscsi_target_mode": "fc"}],
            "extent": [{"id": 1, "iscsi_target_extent_name": "x", "iscsi_target_extent_type": "File",
                        "iscsi_target_extent_path": "/mnt/x.img", "iscsi_target_extent_filesize": "10 parsecs",
                        "iscsi_target_extent_serial": "s1", "iscsi_target_extent_xen": true}]}"#,
    );
    let run = Isctl::new()
        .args(["import".as_ref(), "freenas".as_ref(), bad.as_os_str()])
        .run();
    run.assert_exit(4);
    assert!(
        run.stderr.contains("all.json:2: extent id 1 (\"x\"): xen"),
        "{run}"
    );
    assert!(run.stderr.contains("filesize \"10 parsecs\""), "{run}");
    assert!(run.stderr.contains("Fibre Channel"), "{run}");
}

/// A child process killed (SIGKILL, by its own pid) when the test ends, even on panic:
/// tgtd ignores SIGTERM while it has targets.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[track_caller]
fn wait_listening(port: u16, what: &str) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{what} does not listen on 127.0.0.1:{port}");
}

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What an initiator sees of the data LUNs behind 127.0.0.1:`port`: the discovery
/// listing (tgt's LUN 0 controller left out), and per LUN the capacity, block length
/// and unit serial number (tgt pads the serial with leading spaces: trimmed).
fn seen(port: u16, luns: &[(String, u16)]) -> Vec<String> {
    let mut out: Vec<String> = tool("iscsi-ls", &["-s", &format!("iscsi://127.0.0.1:{port}/")])
        .lines()
        .filter(|l| !l.starts_with("Lun:0 "))
        .map(|l| l.replace(&format!(":{port},"), ":PORT,"))
        .collect();
    for (t, l) in luns {
        let url = format!("iscsi://127.0.0.1:{port}/{t}/{l}");
        let cap = tool("iscsi-readcapacity16", &[&url]);
        for line in cap
            .lines()
            .filter(|x| x.starts_with("Total size") || x.starts_with("LOGICAL BLOCK LENGTH"))
        {
            out.push(format!("{t}/{l} {line}"));
        }
        let inq = tool("iscsi-inq", &["-e", "1", "-c", "128", &url]);
        let serial = inq
            .split_once('[')
            .and_then(|(_, s)| s.split_once(']'))
            .map(|(s, _)| s.trim().to_string())
            .unwrap_or_else(|| panic!("no serial in {inq}"));
        out.push(format!("{t}/{l} serial {serial}"));
    }
    out
}

#[test]
#[ignore = "needs tgt: run via tests/run.sh"]
fn tgt_and_the_engine_serving_the_import_look_the_same_to_initiators() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    for (f, mib) in [("a.img", 8u64), ("b.img", 16), ("c.img", 4), ("d.img", 2)] {
        std::fs::File::create(dir.path().join(f))
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
    }
    // Stores in reverse path order, an explicit serial, a reserved LUN, a target-level lun.
    let conf = write(
        dir.path(),
        "targets.conf",
        &format!(
            "<target iqn.2024-01.com.example:alpha>
    <backing-store {d}/b.img>
    </backing-store>
    <backing-store {d}/a.img>
        scsi_sn ALPHA0001
    </backing-store>
    <backing-store {d}/d.img>
        lun 1
    </backing-store>
</target>
<target iqn.2024-01.com.example:beta>
    backing-store {d}/c.img
    lun 5
</target>
"
        ),
    );
    // tgt: tgtd on a private portal and control port, configured by tgt-admin itself.
    let port = free_port();
    let control = (10000 + std::process::id() % 20000).to_string();
    let tgtd = Killed(
        std::process::Command::new("tgtd")
            .args([
                "-f",
                "-C",
                &control,
                "--iscsi",
                &format!("portal=127.0.0.1:{port}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tgtd (apt-get install tgt)"),
    );
    wait_listening(port, "tgtd");
    tool(
        "tgt-admin",
        &["-C", &control, "-e", "-c", &conf.display().to_string()],
    );

    // The import, and the LUNs it says tgt has.
    let run = Isctl::new()
        .args(["import".as_ref(), "tgt".as_ref(), conf.as_os_str()])
        .run();
    run.assert_exit(0);
    let model_path = dir.path().join("m.toml");
    let port2 = free_port();
    std::fs::write(
        &model_path,
        run.stdout.replace(
            "listen = [\"[::]:3260\"]",
            &format!("listen = [\"127.0.0.1:{port2}\"]"),
        ),
    )
    .unwrap();
    let m = model(&model_path);
    let luns: Vec<(String, u16)> = m
        .targets
        .values()
        .flat_map(|t| {
            t.luns
                .keys()
                .map(move |l| (t.name.as_str().to_string(), *l))
        })
        .collect();
    assert_eq!(luns.len(), 4);
    let from_tgt = seen(port, &luns);
    drop(tgtd);

    let engine = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_isctl"))
            .arg("--socket")
            .arg(dir.path().join("engine.sock"))
            .arg("serve")
            .arg(&model_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port2, "isctl serve");
    let from_engine = seen(port2, &luns);
    drop(engine);
    assert_eq!(from_tgt, from_engine);
    // And the LUN numbers are tgt's: a.img and b.img take 2 and 3 (1 is reserved).
    assert!(
        from_tgt
            .iter()
            .any(|l| l == "iqn.2024-01.com.example:alpha/2 serial ALPHA0001"),
        "{from_tgt:#?}"
    );
    assert!(
        from_tgt
            .iter()
            .any(|l| l == "iqn.2024-01.com.example:alpha/3 serial beaf13"),
        "{from_tgt:#?}"
    );
    assert!(
        from_tgt
            .iter()
            .any(|l| l == "iqn.2024-01.com.example:beta/5 serial beaf25"),
        "{from_tgt:#?}"
    );
}
