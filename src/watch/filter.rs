//! Which file-system events concern the model, and when a burst of them is over.
//! Pure logic (paths and instants in, decisions out): no I/O, unit-tested here.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind};

/// The name of the symbolic link a Kubernetes ConfigMap volume swaps atomically
/// (`..data_tmp` renamed over `..data`) to publish a new version of its files.
pub const CONFIGMAP_DATA: &str = "..data";

/// Names `model::load` never reads (hidden files and directories, editor backups):
/// events about them alone never trigger an apply.
pub use crate::model::is_skipped_name;

/// True for the kinds of event that can change what `model::load` reads: creation,
/// modification, renames, removal, a file closed after writing, and the unknown.
/// Opening or reading a file is not a change — and must not count as one: the
/// watcher's own reads of the model would otherwise trigger it again and again.
pub fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Decides whether an event path concerns the model at `root` (the path given to
/// `isctl watch`, made absolute, not resolved: a symbolic link stays a link).
#[derive(Debug, Clone)]
pub struct Filter {
    root: PathBuf,
}

impl Filter {
    pub fn new(root: &Path) -> Filter {
        Filter {
            root: root.to_path_buf(),
        }
    }

    /// True when `path` is the model itself (the file, the directory, or the link
    /// to it, as seen from its parent: renames and symlink swaps), or a path below a
    /// model directory none of whose components `model::load` skips — except the
    /// ConfigMap's `..data` link, whose swap is how a new version appears (also
    /// beside a single-file model: `/etc/isctl/model.toml -> ..data/model.toml`).
    pub fn relevant(&self, path: &Path) -> bool {
        if path == self.root {
            return true;
        }
        if path.parent() == self.root.parent()
            && path.file_name().is_some_and(|n| n == CONFIGMAP_DATA)
        {
            return true;
        }
        match path.strip_prefix(&self.root) {
            Ok(rel) => rel.components().all(|c| match c {
                Component::Normal(n) => {
                    let n = n.to_string_lossy();
                    n == CONFIGMAP_DATA || !is_skipped_name(&n)
                }
                _ => false,
            }),
            // Anything else in the parent directory is not the model.
            Err(_) => false,
        }
    }

    /// The paths of `event` that concern the model, if the event changes anything
    /// (empty otherwise): what the loop debounces, and what the watcher's thread counts.
    pub fn model_paths<'e>(&self, event: &'e notify::Event) -> Vec<&'e PathBuf> {
        if !is_change(&event.kind) {
            return Vec::new();
        }
        event.paths.iter().filter(|p| self.relevant(p)).collect()
    }

    /// True when `path` names the model itself (the parent's entry for it): the
    /// watches below it may have to follow a new target.
    pub fn is_root(&self, path: &Path) -> bool {
        path == self.root
    }
}

/// Trailing-edge debouncer: fires once `window` has passed without an event, or at
/// the latest `max_delay` after the first event of a burst (so that a steady
/// trickle of writes cannot postpone an apply for ever).
///
/// A burst is not over while a model file is still open for writing (modified, not yet
/// closed): an in-place write (`>`, `cp`, a generator) is read only once complete, not
/// after a pause of its writer longer than the window — at `--debounce 0`, the truncation
/// alone would otherwise be applied as an empty file (tests/watch.rs,
/// `a_shrink_by_20_luns_written_in_place_under_stress_is_applied_whole`). A writer that
/// never closes (or a lost close event) holds the burst back at most `max_delay`.
#[derive(Debug, Clone)]
pub struct Debouncer {
    window: Duration,
    max_delay: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Model files modified and not closed since.
    writing: BTreeSet<PathBuf>,
}

/// What an event says about a writer of the file it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// Created or modified: a writer has it open (a created path counts only if it
    /// is a regular file: symbolic links and directories are never "closed").
    Opened,
    /// Closed after writing, removed, or renamed away: no writer to wait for.
    Closed,
    /// Nothing about writers (metadata, a rename into place, ...).
    Unchanged,
}

/// How `kind` changes the writers of its paths (the first path of a rename is the
/// old name).
pub fn writer(kind: &EventKind) -> Writer {
    use notify::event::{CreateKind, ModifyKind};
    match kind {
        EventKind::Create(CreateKind::File) | EventKind::Modify(ModifyKind::Data(_)) => {
            Writer::Opened
        }
        EventKind::Access(AccessKind::Close(AccessMode::Write)) | EventKind::Remove(_) => {
            Writer::Closed
        }
        _ => Writer::Unchanged,
    }
}

impl Debouncer {
    pub fn new(window: Duration) -> Debouncer {
        Debouncer {
            window,
            max_delay: (window * 10).max(Duration::from_secs(5)),
            first: None,
            last: None,
            writing: BTreeSet::new(),
        }
    }

    /// A model file was created or modified: wait for its close.
    pub fn writer_opened(&mut self, path: &Path) {
        self.writing.insert(path.to_path_buf());
    }

    /// A model file was closed after writing, removed or renamed away (a removed
    /// directory takes the files below it).
    pub fn writer_closed(&mut self, path: &Path) {
        self.writing.retain(|p| !p.starts_with(path));
    }

    /// Events were lost (an overflowed queue): the open writers are not known.
    pub fn forget_writers(&mut self) {
        self.writing.clear();
    }

    /// A relevant event happened at `now`.
    pub fn event(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the pending burst is due, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.first, self.last) {
            (Some(f), _) if !self.writing.is_empty() => Some(f + self.max_delay),
            (Some(f), Some(l)) => Some((l + self.window).min(f + self.max_delay)),
            _ => None,
        }
    }

    /// True (once per burst) when the pending burst is due at `now`.
    pub fn fire(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(d) if d <= now => {
                self.first = None;
                self.last = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> Filter {
        Filter::new(Path::new("/etc/isctl"))
    }

    #[test]
    fn reading_the_model_is_not_a_change() {
        use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Read)));
        for k in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::Any),
            EventKind::Any,
            EventKind::Other,
        ] {
            assert!(is_change(&k), "{k:?}");
        }
    }

    #[test]
    fn model_files_and_the_root_are_relevant() {
        assert!(f().relevant(Path::new("/etc/isctl")));
        assert!(f().relevant(Path::new("/etc/isctl/a.toml")));
        assert!(f().relevant(Path::new("/etc/isctl/sub/b.toml")));
        assert!(f().relevant(Path::new("/etc/isctl/newdir")));
        assert!(f().is_root(Path::new("/etc/isctl")));
        assert!(!f().is_root(Path::new("/etc/isctl/a.toml")));
    }

    #[test]
    fn hidden_files_backups_and_siblings_are_not() {
        for p in [
            "/etc/isctl/.a.toml.swp",
            "/etc/isctl/a.toml~",
            "/etc/isctl/#a.toml#",
            "/etc/isctl/.git/index",
            "/etc/isctl/sub/.hidden/x.toml",
            "/etc/isctl/a.toml.swo",
            "/etc/other",
            "/etc/isctl.bak",
            "/etc/isctl/..2026_12_03_10_00_00.123/a.toml",
            "/etc/isctl/..data_tmp",
        ] {
            assert!(!f().relevant(Path::new(p)), "{p}");
        }
    }

    #[test]
    fn the_configmap_data_link_is_relevant() {
        assert!(f().relevant(Path::new("/etc/isctl/..data")));
        assert!(f().relevant(Path::new("/etc/isctl/..data/a.toml")));
    }

    #[test]
    fn a_single_file_model_is_seen_from_its_parent() {
        let f = Filter::new(Path::new("/srv/m.toml"));
        assert!(f.relevant(Path::new("/srv/m.toml")));
        assert!(!f.relevant(Path::new("/srv/.m.toml.swp")));
        assert!(!f.relevant(Path::new("/srv/m.toml.tmp")));
        // A ConfigMap key watched as a file: its link goes through `..data`.
        assert!(f.relevant(Path::new("/srv/..data")));
        assert!(!f.relevant(Path::new("/srv/..data_tmp")));
    }

    #[test]
    fn a_burst_fires_once_after_the_window() {
        let w = Duration::from_millis(500);
        let mut d = Debouncer::new(w);
        let t0 = Instant::now();
        assert_eq!(d.deadline(), None);
        assert!(!d.fire(t0));
        for i in 0..50 {
            d.event(t0 + Duration::from_millis(i * 5));
            assert!(!d.fire(t0 + Duration::from_millis(i * 5)));
        }
        let last = t0 + Duration::from_millis(49 * 5);
        assert_eq!(d.deadline(), Some(last + w));
        assert!(!d.fire(last + w - Duration::from_millis(1)));
        assert!(d.fire(last + w));
        assert!(!d.fire(last + w * 3), "one burst fires once");
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn a_steady_trickle_fires_at_the_maximum_delay() {
        let w = Duration::from_millis(500);
        let mut d = Debouncer::new(w);
        let t0 = Instant::now();
        let mut fired = None;
        for i in 0..200u64 {
            let t = t0 + Duration::from_millis(i * 100);
            d.event(t);
            if d.fire(t) {
                fired = Some(i);
                break;
            }
        }
        assert_eq!(
            fired,
            Some(50),
            "fires 5 s (10 windows, at least 5 s) after the first event"
        );
    }

    #[test]
    fn a_file_open_for_writing_holds_the_burst_until_closed() {
        use notify::event::{CreateKind, DataChange, ModifyKind, RemoveKind};
        let w = Duration::from_millis(0);
        let mut d = Debouncer::new(w);
        let t0 = Instant::now();
        let f = Path::new("/etc/isctl/t.toml");
        // A truncating open, then a writer that pauses for a second.
        assert_eq!(
            writer(&EventKind::Modify(ModifyKind::Data(DataChange::Any))),
            Writer::Opened
        );
        d.writer_opened(f);
        d.event(t0);
        assert!(!d.fire(t0 + Duration::from_secs(1)), "half-written");
        assert_eq!(
            writer(&EventKind::Access(AccessKind::Close(AccessMode::Write))),
            Writer::Closed
        );
        d.writer_closed(f);
        d.event(t0 + Duration::from_secs(1));
        assert!(d.fire(t0 + Duration::from_secs(1)), "complete");
        // A writer that never closes is waited for at most the maximum delay.
        assert_eq!(writer(&EventKind::Create(CreateKind::File)), Writer::Opened);
        d.writer_opened(f);
        d.event(t0);
        assert!(!d.fire(t0 + Duration::from_millis(4999)));
        assert!(d.fire(t0 + Duration::from_secs(5)));
        // Removing the directory forgets its files.
        d.writer_closed(Path::new("/etc/isctl"));
        assert_eq!(
            writer(&EventKind::Remove(RemoveKind::Folder)),
            Writer::Closed
        );
        d.event(t0);
        assert!(d.fire(t0));
        assert_eq!(
            writer(&EventKind::Modify(ModifyKind::Metadata(
                notify::event::MetadataKind::Any
            ))),
            Writer::Unchanged
        );
    }
}
