//! Golden tests of the plan text (and of one JSON plan): the exact output for a
//! creation from empty and for an update with grow, replace, delete, remap and an
//! unmanaged object. Regenerate with `ISCTL_UPDATE_GOLDEN=1 cargo test --test
//! plan_golden` and review the diff.

mod reconcile_common;

use std::path::Path;

use isctl::plan::render;
use reconcile_common::*;

fn golden(name: &str, actual: &str) {
    let path = fixture("golden").join(name);
    if std::env::var_os("ISCTL_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set ISCTL_UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if want != actual {
        let mut msg = String::new();
        for (i, (w, a)) in want.lines().zip(actual.lines()).enumerate() {
            if w != a {
                msg = format!(
                    "first difference at line {}:\n  want: {w}\n  got:  {a}",
                    i + 1
                );
                break;
            }
        }
        panic!(
            "{} differs from the golden file ({} vs {} lines). {msg}\n--- got ---\n{actual}",
            path.display(),
            want.lines().count(),
            actual.lines().count()
        );
    }
}

#[test]
fn golden_plan_create_from_empty() {
    let h = Host::new();
    let (_, p) = h.plan(&complete(), no_opts());
    golden("create.txt", &render::text(&p));
}

#[test]
fn golden_plan_update() {
    let h = Host::new();
    h.converge(&complete(), no_opts());
    // An unmanaged ramdisk someone made by hand.
    use isctl::backend::lio::ConfigFs;
    let root = isctl::backend::sim::Sim::default_root();
    h.sim.mkdir(&root.join("core/rd_mcp_9")).unwrap();
    h.sim.mkdir(&root.join("core/rd_mcp_9/handmade")).unwrap();
    let v2 = load(&fixture("complete-v2.toml"));
    let (_, p) = h.plan(&v2, no_opts());
    golden("update.txt", &render::text(&p));
    let json = serde_json::to_string_pretty(&render::json(&p)).unwrap() + "\n";
    golden("update.json", &json);
    // And the update converges.
    h.converge(&v2, no_opts());
    assert!(h.plan(&v2, no_opts()).1.is_empty());
    let _ = Path::new("");
}
