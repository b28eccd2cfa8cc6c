//! Comparing what a target shows (a [`ProbeReport`]) with a model: the targets a portal
//! offers, each target's LUN ids, and per LUN its size, block size, serial, NAA (when
//! the model sets one) and read-only flag. Pure.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use super::probe::ProbeReport;
use crate::model::{Backing, Model};

/// The model's targets an initiator may reach through `portal` from `from`.
pub fn targets_at(model: &Model, portal: SocketAddr, initiator: &str, from: IpAddr) -> Vec<String> {
    model
        .targets
        .values()
        .filter(|t| {
            t.groups.iter().any(|g| {
                let listens = model.portals.get(&g.portal).is_some_and(|p| {
                    p.listen.iter().any(|l| {
                        l.port() == portal.port()
                            && (l.ip() == portal.ip() || l.ip().is_unspecified())
                    })
                });
                listens && model.admits(g, initiator, from)
            })
        })
        .map(|t| t.name.as_str().to_string())
        .collect()
}

/// The size in bytes the model gives an extent, when it says.
fn extent_size(b: &Backing) -> Option<u64> {
    match b {
        Backing::Ramdisk { size } => Some(*size),
        Backing::File { size: Some(s), .. } => Some(*s),
        Backing::File { path, size: None } => std::fs::metadata(path).ok().map(|m| m.len()),
        Backing::Block { .. } => None,
    }
}

/// Differences between the model and the report, one sentence each; empty: they agree.
/// `expected`: the model's targets this portal should offer (see [`targets_at`]), or
/// `None` to skip that comparison (targets were named on the command line).
pub fn compare(model: &Model, report: &ProbeReport, expected: Option<&[String]>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(expected) = expected {
        if report.discovery.login.as_ref().is_some_and(|l| l.ok) {
            let shown: BTreeSet<&str> = report
                .discovery
                .targets
                .iter()
                .map(|t| t.name.as_str())
                .collect();
            let want: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
            for t in want.difference(&shown) {
                out.push(format!(
                    "target {t}: in the model, not offered by the portal"
                ));
            }
            for t in shown.difference(&want) {
                out.push(format!(
                    "target {t}: offered by the portal, not in the model"
                ));
            }
        }
    }
    for t in &report.targets {
        if !t.login.ok {
            continue;
        }
        let Some(mt) = model.targets.values().find(|m| m.name.as_str() == t.name) else {
            if expected.is_none() {
                out.push(format!("target {}: not in the model", t.name));
            }
            continue;
        };
        let Some(shown) = &t.report_luns else {
            continue;
        };
        let want: BTreeSet<u16> = mt
            .luns
            .iter()
            .filter(|(_, e)| model.extents.get(*e).is_none_or(|x| x.enabled))
            .map(|(id, _)| *id)
            .collect();
        let shown_set: BTreeSet<u16> = shown.iter().copied().collect();
        for id in want.difference(&shown_set) {
            out.push(format!(
                "target {} LUN {id}: in the model, not reported",
                t.name
            ));
        }
        for id in shown_set.difference(&want) {
            out.push(format!(
                "target {} LUN {id}: reported, not in the model",
                t.name
            ));
        }
        for l in &t.luns {
            let Some(ext) = mt.luns.get(&l.lun).and_then(|e| model.extents.get(e)) else {
                continue;
            };
            let who = format!("target {} LUN {}", t.name, l.lun);
            if let Some(cap) = &l.capacity {
                if cap.capacity.block_size != ext.blocksize {
                    out.push(format!(
                        "{who}: block size {} (model: {})",
                        cap.capacity.block_size, ext.blocksize
                    ));
                } else if let Some(size) = extent_size(&ext.backing) {
                    let want = size / u64::from(ext.blocksize) * u64::from(ext.blocksize);
                    if cap.bytes != want {
                        out.push(format!("{who}: size {} bytes (model: {want})", cap.bytes));
                    }
                }
            }
            if let Some(serial) = &l.serial {
                if *serial != ext.serial {
                    out.push(format!(
                        "{who}: serial {serial:?} (model: {:?})",
                        ext.serial
                    ));
                }
            }
            if let Some(naa) = &ext.naa {
                // Only a NAA the model sets is compared: otherwise the target derives it.
                let shown: Vec<&str> = l
                    .designators
                    .iter()
                    .filter(|d| d.kind == "naa" && d.association == "lun")
                    .map(|d| d.value.as_str())
                    .collect();
                if !shown.contains(&naa.as_str()) {
                    out.push(format!(
                        "{who}: NAA {} (model: {naa})",
                        if shown.is_empty() {
                            "none".to_string()
                        } else {
                            shown.join(", ")
                        }
                    ));
                }
            }
            if let Some(wp) = l.write_protected {
                if wp != ext.readonly {
                    out.push(format!(
                        "{who}: {} (model: {})",
                        if wp { "read-only" } else { "writable" },
                        if ext.readonly {
                            "read-only"
                        } else {
                            "writable"
                        }
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initiator::probe::{
        CapacityReport, DiscoveryReport, LoginReport, LunReport, TargetReport,
    };
    use crate::initiator::scsi::Capacity;

    fn model() -> Model {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.toml");
        std::fs::write(
            &p,
            r#"[global]
basename = "iqn.2026-11.test"
[portal.p]
listen = ["0.0.0.0:3260"]
[initiator_group.far]
networks = ["10.0.0.0/8"]
[extent.r]
type = "ramdisk"
size = "8MiB"
serial = "s1"
[extent.q]
type = "ramdisk"
size = "8MiB"
[target.t]
luns = { 0 = "r" }
[[target.t.group]]
portal = "p"
[target.far]
luns = { 0 = "q" }
[[target.far.group]]
portal = "p"
initiator_group = "far"
"#,
        )
        .unwrap();
        crate::model::load(&p).unwrap().model
    }

    fn login(ok: bool) -> LoginReport {
        LoginReport {
            ok,
            status: 0,
            status_name: "success".into(),
            auth: "none",
            chap_algorithm: None,
            mutual_chap_verified: None,
            redirect: None,
            tsih: Some(1),
            negotiated: Default::default(),
            error: None,
        }
    }

    fn report(luns: Vec<u16>, blocks: u64, serial: &str, wp: bool) -> ProbeReport {
        ProbeReport {
            portal: "127.0.0.1:3260".into(),
            requested: Vec::new(),
            discovery: DiscoveryReport {
                connected: true,
                local_address: Some("127.0.0.1:40000".into()),
                initiator: "iqn.x:i".into(),
                login: Some(login(true)),
                error: None,
                targets: vec![crate::initiator::client::DiscoveredTarget {
                    name: "iqn.2026-11.test:t".into(),
                    addresses: Vec::new(),
                }],
            },
            targets: vec![TargetReport {
                name: "iqn.2026-11.test:t".into(),
                portal: "127.0.0.1:3260".into(),
                initiator: "iqn.x:i".into(),
                login: login(true),
                report_luns: Some(luns),
                luns: vec![LunReport {
                    lun: 0,
                    state: "ready".into(),
                    sense: None,
                    inquiry: None,
                    vpd_pages: Vec::new(),
                    serial: Some(serial.into()),
                    designators: Vec::new(),
                    rotation_rate: None,
                    capacity: Some(CapacityReport {
                        capacity: Capacity {
                            blocks,
                            block_size: 512,
                            physical_block_exponent: 0,
                            lbpme: false,
                            lbprz: false,
                        },
                        bytes: blocks * 512,
                        command: "read-capacity-16",
                    }),
                    write_protected: Some(wp),
                    notes: Vec::new(),
                }],
                logout: true,
                error: None,
            }],
        }
    }

    #[test]
    fn targets_reachable_from_an_address() {
        let m = model();
        let portal: SocketAddr = "127.0.0.1:3260".parse().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            targets_at(&m, portal, "iqn.x:i", local),
            vec!["iqn.2026-11.test:t".to_string()]
        );
        assert!(targets_at(&m, "127.0.0.1:3261".parse().unwrap(), "iqn.x:i", local).is_empty());
        assert_eq!(
            targets_at(&m, portal, "iqn.x:i", "10.1.1.1".parse().unwrap()).len(),
            2
        );
    }

    #[test]
    fn matches_and_each_kind_of_difference() {
        let m = model();
        let expected = vec!["iqn.2026-11.test:t".to_string()];
        let ok = report(vec![0], 16384, "s1", false);
        assert!(compare(&m, &ok, Some(&expected)).is_empty());

        let bad = report(vec![0, 3], 8192, "other", true);
        let d = compare(&m, &bad, Some(&expected));
        assert_eq!(
            d,
            vec![
                "target iqn.2026-11.test:t LUN 3: reported, not in the model",
                "target iqn.2026-11.test:t LUN 0: size 4194304 bytes (model: 8388608)",
                "target iqn.2026-11.test:t LUN 0: serial \"other\" (model: \"s1\")",
                "target iqn.2026-11.test:t LUN 0: read-only (model: writable)",
            ]
        );
        let mut with_naa = m.clone();
        with_naa.extents.get_mut("r").unwrap().naa = Some("0x6001405123456789".into());
        let mut shown = ok.clone();
        shown.targets[0].luns[0].designators = vec![crate::initiator::scsi::Designator {
            kind: "naa",
            association: "lun",
            value: "0x6001405000000000".into(),
        }];
        assert_eq!(
            compare(&with_naa, &shown, Some(&expected)),
            vec!["target iqn.2026-11.test:t LUN 0: NAA 0x6001405000000000 (model: 0x6001405123456789)"]
        );
        shown.targets[0].luns[0].designators[0].value = "0x6001405123456789".into();
        assert!(compare(&with_naa, &shown, Some(&expected)).is_empty());

        let more = vec![expected[0].clone(), "iqn.2026-11.test:far".to_string()];
        let d = compare(&m, &ok, Some(&more));
        assert_eq!(
            d,
            vec!["target iqn.2026-11.test:far: in the model, not offered by the portal"]
        );
    }
}
