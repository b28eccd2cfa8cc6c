//! An apply killed half way (SIGKILL, OOM, a systemd stop timeout, a power cut)
//! orphans nothing: the simulated kernel keeps exactly the changes made before the
//! "crash", and the next apply of any model converges from there.
//!
//! The crash is simulated in the configfs simulator: after N mutations every
//! further call panics, so `apply` unwinds with no rollback and no ledger update,
//! as a killed process would. Its own test binary, because it silences the panic
//! messages of those simulated crashes.

mod reconcile_common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use isctl::model::Model;
use isctl::state::State;
use reconcile_common::*;

/// Crash an apply of `to` (on a host that holds `from`) after `n` mutations.
/// False when the apply finished before reaching the crash.
fn crash_at(h: &Host, to: &Model, n: u64) -> bool {
    let (_, p) = h.plan(to, no_opts());
    assert!(!p.is_refused(), "{:#?}", p.refusals);
    h.sim.crash_after_mutations(n);
    let crashed = catch_unwind(AssertUnwindSafe(|| h.apply_plan(&p))).is_err();
    h.sim.recover();
    crashed
}

/// Silence the simulated crashes' panic messages, and only those.
fn quiet_crashes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let text = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // The crash itself, and its re-raise by the executor's thread scope.
        if !text.starts_with("simulated crash") && text != "a scoped thread panicked" {
            default(info);
        }
    }));
}

fn empty() -> Model {
    load_str("")
}

#[test]
fn an_apply_killed_at_any_step_orphans_nothing() {
    quiet_crashes();
    let pristine = Host::new().observe().state;
    let mut crashes = 0;
    for n in 0.. {
        let h = Host::new();
        if !crash_at(&h, &complete(), n) {
            break;
        }
        crashes += 1;
        let ledger = h.ledger();
        let intent = ledger
            .interrupted()
            .expect("the interrupted apply is recorded");
        assert!(intent.operations > 0);
        // Whatever the crashed run created is managed: an empty model removes it all.
        let (_, p) = h.plan(&empty(), no_opts());
        assert!(
            p.unmanaged.is_empty(),
            "crash at {n}: orphans {:?}",
            p.unmanaged
        );
        if !p.is_empty() {
            h.apply_plan(&p)
                .unwrap_or_else(|e| panic!("crash at {n}: {e}"));
        }
        let after: State = h.observe().state;
        // Every storage object and target is gone. What stays is what an apply of an
        // empty model leaves after a complete one, too: the iSCSI fabric (the
        // loaded target module) with its discovery settings, and HBA directories
        // without storage objects (a crash between creating an HBA and the object
        // in it leaves one; isctl leaves empty HBAs alone, they may be anyone's).
        assert_eq!(
            after.backstores, pristine.backstores,
            "crash at {n}: backstores left behind"
        );
        assert_eq!(
            after.targets, pristine.targets,
            "crash at {n}: targets left behind"
        );
        assert!(
            after.hbas.values().all(|objects| *objects == 0),
            "crash at {n}: {:?}",
            after.hbas
        );
        assert!(
            after.foreign.is_empty(),
            "crash at {n}: {:?}",
            after.foreign
        );
    }
    assert!(
        crashes > 50,
        "the complete model has more steps than {crashes}"
    );
}

#[test]
fn after_a_crash_the_same_model_converges_and_the_intent_is_settled() {
    quiet_crashes();
    // Crash a change from a partly applied host at every fifth step.
    let mut first = complete();
    first
        .targets
        .retain(|k, _| k.as_str() != "iqn.2005-10.org.example.ctl:lab");
    for n in (0..).step_by(5) {
        let h = Host::new();
        h.converge(&first, no_opts());
        if !crash_at(&h, &complete(), n) {
            break;
        }
        h.converge(&complete(), no_opts());
        let (_, again) = h.plan(&complete(), no_opts());
        assert!(
            again.is_empty(),
            "crash at {n}: not converged: {:#?}",
            again.changes
        );
        assert!(
            h.ledger().interrupted().is_none(),
            "crash at {n}: intent left"
        );
        // And going back to the first model removes exactly what it does not hold.
        h.converge(&first, no_opts());
        let (_, back) = h.plan(&first, no_opts());
        assert!(back.is_empty() && back.unmanaged.is_empty(), "crash at {n}");
    }
}
