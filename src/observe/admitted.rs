//! What LIO's configfs cannot say of a session, taken from the model LIO was
//! configured from: the portal group's name (`target_portal_group`), the initiator
//! groups that admitted the initiator (`igroups[].name`) and the first one's comment
//! (`initiator.comment`). configfs has only TPG tags and ACL names.
//!
//! The session's TPG is found through the LIO lowering itself
//! ([`crate::state::lower::lower`]): each lowered TPG carries the origin of the model
//! group it came from, so the tag → group mapping here is exactly the one `apply`
//! wrote, never re-derived. The engine fills these fields itself
//! (`engine::server::control`); this is for LIO sessions only.
//!
//! [`ModelView::fill`] is pure; [`WithModel`] wraps a [`Source`] and decides where
//! the model comes from (`--model PATH`, or the watcher's `watch.json`).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::model::Model;
use crate::observe::stats::Statistics;
use crate::observe::Source;
use crate::state::lower::{lower, LowerErrors};
use crate::state::{Session, State};

/// A model and its LIO lowering, ready to name what sessions' tags mean.
pub struct ModelView {
    model: Model,
    desired: State,
}

impl ModelView {
    /// Lower `model` as `apply` would; a model LIO cannot honour is an error naming
    /// each problem (file:line, object, fix).
    pub fn new(model: Model) -> Result<ModelView, LowerErrors> {
        let desired = lower(&model)?;
        Ok(ModelView { model, desired })
    }

    /// [`ModelView::new`] for the model loaded from `path`, its refusal naming `path`.
    pub fn of(model: Model, path: &Path) -> anyhow::Result<ModelView> {
        ModelView::new(model).with_context(|| {
            format!(
                "the model {} cannot be mapped onto LIO, so sessions cannot be named from it",
                path.display()
            )
        })
    }

    /// Fill `target_portal_group`, `igroups` and `initiator.comment` of each session
    /// whose target and TPG tag the model has. Sessions of targets or tags the model
    /// does not know are left as they are (the model may not be the one applied).
    pub fn fill(&self, sessions: &mut [Session]) {
        for s in sessions {
            let Some(origin) = self
                .desired
                .targets
                .get(&s.target)
                .and_then(|t| t.tpgs.get(&s.tpg))
                .and_then(|tpg| tpg.origin.as_ref())
            else {
                continue;
            };
            let Some(group) = self
                .model
                .targets
                .values()
                .filter(|t| t.name.as_str() == s.target)
                .flat_map(|t| &t.groups)
                .find(|g| &g.origin == origin)
            else {
                continue;
            };
            s.portal_group = Some(group.portal.clone());
            let Some((name, ig)) = group
                .initiator_group
                .as_ref()
                .and_then(|n| self.model.initiator_groups.get(n).map(|ig| (n, ig)))
            else {
                continue; // no initiator group: anyone (LIO demo mode), no igroup
            };
            // LIO admits by name only (the lowering refuses networks), byte-wise.
            let admits =
                ig.any_initiator() || ig.initiators.iter().any(|i| i.as_str() == s.initiator);
            if admits && !s.igroups.contains(name) {
                s.igroups.push(name.clone());
                if s.initiator_comment.is_none() && !ig.comment.is_empty() {
                    s.initiator_comment = Some(ig.comment.clone());
                }
            }
        }
    }
}

/// Where the model for LIO sessions comes from.
pub enum ModelFrom {
    /// `--model PATH`, loaded and lowered once at start.
    Given(Box<ModelView>),
    /// The model `isctl watch` last applied (`<state-dir>/watch.json`), re-read at
    /// each call so that a running exporter follows the watcher. No such file: the
    /// fields stay absent.
    Watched { state_dir: PathBuf },
}

/// Load and lower the model at `path` (file or directory), with errors naming it.
pub fn load_view(path: &Path) -> anyhow::Result<ModelView> {
    let loaded = crate::model::load(path)
        .with_context(|| format!("loading the model {}", path.display()))?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    ModelView::of(loaded.model, path)
}

/// A [`Source`] whose LIO sessions are completed from a model.
pub struct WithModel {
    pub inner: Box<dyn Source>,
    pub from: ModelFrom,
}

/// The watcher's last model (`<state-dir>/watch.json`), if there is one and it
/// still loads; a model mid-edit is logged and skipped (sessions still show).
fn watched_view(state_dir: &Path) -> Option<ModelView> {
    let last = crate::watch::state::load(state_dir)?;
    load_view(&last.model)
        .map_err(|e| {
            tracing::warn!(
                "the watched model {} does not name sessions: {e:#}",
                last.model.display()
            )
        })
        .ok()
}

impl Source for WithModel {
    fn sessions(&self) -> anyhow::Result<Vec<Session>> {
        let mut list = self.inner.sessions()?;
        match &self.from {
            ModelFrom::Given(view) => view.fill(&mut list),
            ModelFrom::Watched { state_dir } => {
                if let Some(view) = watched_view(state_dir) {
                    view.fill(&mut list);
                }
            }
        }
        Ok(list)
    }

    fn statistics(&self) -> anyhow::Result<Statistics> {
        self.inner.statistics()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = r#"
[global]
basename = "iqn.2026-11.io.isctl.test"

[portal.front]
tag = 7
listen = ["0.0.0.0:3260"]

[portal.back]
tag = 9
listen = ["0.0.0.0:3261"]

[initiator_group.esx]
initiators = ["iqn.1998-01.com.vmware:esx1", "iqn.1998-01.com.vmware:esx2"]
comment = "vSphere cluster A"

[initiator_group.backup]
initiators = ["iqn.2026-11.io.example:backup"]

[auth.c]
user = "u"
secret = "secretsecret1"

[extent.d]
type = "ramdisk"
size = "1MiB"

[extent.e]
type = "ramdisk"
size = "1MiB"

[target.t]
luns = { 0 = "d" }

[[target.t.group]]
portal = "front"
initiator_group = "esx"
auth = "c"

[[target.t.group]]
portal = "back"
initiator_group = "backup"

[target.open]
luns = { 0 = "e" }

[[target.open.group]]
portal = "front"
"#;

    fn view() -> ModelView {
        let loaded = crate::model::load_str("m.toml", MODEL).unwrap();
        ModelView::new(loaded.model).unwrap()
    }

    fn session(target: &str, tag: u16, initiator: &str) -> Session {
        Session {
            target: format!("iqn.2026-11.io.isctl.test:{target}"),
            tpg: tag,
            initiator: initiator.into(),
            ..Session::default()
        }
    }

    #[test]
    fn the_tag_names_the_portal_group_and_the_admitting_initiator_group() {
        let mut s = vec![
            session("t", 7, "iqn.1998-01.com.vmware:esx2"),
            session("t", 9, "iqn.2026-11.io.example:backup"),
        ];
        view().fill(&mut s);
        assert_eq!(s[0].portal_group.as_deref(), Some("front"));
        assert_eq!(s[0].igroups, ["esx"]);
        assert_eq!(s[0].initiator_comment.as_deref(), Some("vSphere cluster A"));
        assert_eq!(s[1].portal_group.as_deref(), Some("back"));
        assert_eq!(s[1].igroups, ["backup"]);
        assert_eq!(s[1].initiator_comment, None, "an empty comment is absent");
    }

    #[test]
    fn demo_mode_unknown_targets_tags_and_initiators_get_only_what_the_model_says() {
        let mut s = vec![
            session("open", 7, "iqn.2026-11.io.example:anyone"),
            session("t", 8, "iqn.1998-01.com.vmware:esx1"),
            session("gone", 7, "iqn.1998-01.com.vmware:esx1"),
            // An ACL made by hand for someone the group does not name.
            session("t", 7, "iqn.2026-11.io.example:stranger"),
        ];
        view().fill(&mut s);
        assert_eq!(s[0].portal_group.as_deref(), Some("front"));
        assert!(s[0].igroups.is_empty(), "demo mode: no initiator group");
        assert_eq!(s[1].portal_group, None, "tag 8 is not in the model");
        assert_eq!(s[2].portal_group, None, "target not in the model");
        assert_eq!(s[3].portal_group.as_deref(), Some("front"));
        assert!(s[3].igroups.is_empty());
        assert_eq!(s[3].initiator_comment, None);
    }

    #[test]
    fn filling_twice_changes_nothing_more() {
        let mut s = vec![session("t", 7, "iqn.1998-01.com.vmware:esx1")];
        let v = view();
        v.fill(&mut s);
        let once = s.clone();
        v.fill(&mut s);
        assert_eq!(s, once);
    }

    #[test]
    fn a_model_lio_cannot_honour_is_refused_with_its_reasons() {
        let text = MODEL.replace(
            "comment = \"vSphere cluster A\"",
            "comment = \"vSphere cluster A\"\nnetworks = [\"10.0.0.0/8\"]",
        );
        let loaded = crate::model::load_str("m.toml", &text).unwrap();
        let err = ModelView::new(loaded.model)
            .err()
            .expect("networks cannot be lowered");
        assert!(err.to_string().contains("m.toml:"), "{err}");
    }
}
