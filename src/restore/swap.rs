//! The swap method's filesystem steps: each vhost's current store moved
//! aside and the staged one moved in, by rename, and back again. The state
//! machine (`machine.rs`) journals the intent before each step; this file
//! says what each step is and whether it has happened, which the
//! filesystem alone tells (a rename is atomic).
//!
//! ```text
//! <work area>/new/msg_stores/vhosts/<VH>   verified snapshot data, waiting to go in
//! <work area>/old/<VH>                     the node's previous store, moved aside
//! <work area>/failed/<VH>                  snapshot data taken out again by a rollback
//! <work area>/displaced/<VH>-<n>           a store the broker created by itself when it
//!                                          was started (a reboot) on a half-swapped node
//! ```
//!
//! Whether a step is done is read on the work-area side of its rename,
//! which only this tool touches; the data-directory side may hold a store
//! the broker created meanwhile, which is displaced, never overwritten.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::rabbit::datadir::VhostDir;

/// One rename of one vhost's store (the index is into the journal's vhost list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The node's store → `old/`.
    Aside(usize),
    /// The staged store → the data directory.
    In(usize),
    /// Snapshot data → `failed/` (rollback).
    Out(usize),
    /// `old/` → the data directory (rollback).
    Back(usize),
}

impl Step {
    /// The vhost's index.
    pub fn vhost(self) -> usize {
        match self {
            Step::Aside(i) | Step::In(i) | Step::Out(i) | Step::Back(i) => i,
        }
    }

    /// The step's failpoint name.
    pub fn point(self) -> String {
        match self {
            Step::Aside(i) => format!("restore:aside:{i}"),
            Step::In(i) => format!("restore:in:{i}"),
            Step::Out(i) => format!("restore:out:{i}"),
            Step::Back(i) => format!("restore:back:{i}"),
        }
    }
}

/// Where a step stands, as the filesystem shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not yet done.
    Todo,
    /// Done.
    Done,
    /// Nothing to do (a rollback step for a store that never moved).
    Moot,
}

/// The steps that put the snapshot's stores in: for each vhost, its store
/// aside (if it had one when the broker was stopped), then the staged one in.
pub fn forward(had_store: &[bool]) -> Vec<Step> {
    let mut steps = Vec::new();
    for (i, had) in had_store.iter().enumerate() {
        if *had {
            steps.push(Step::Aside(i));
        }
        steps.push(Step::In(i));
    }
    steps
}

/// The steps that undo [`forward`] from any point, last vhost first.
pub fn backward(vhosts: usize) -> Vec<Step> {
    (0..vhosts)
        .rev()
        .flat_map(|i| [Step::Out(i), Step::Back(i)])
        .collect()
}

/// A filesystem state the journal cannot explain: nothing is moved then.
#[derive(Debug)]
pub struct Anomaly(pub String);

impl std::fmt::Display for Anomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Anomaly {}

/// The paths of one restore's stores.
#[derive(Debug, Clone)]
pub struct Stores {
    area: PathBuf,
    data_dir: PathBuf,
    dirs: Vec<VhostDir>,
}

impl Stores {
    /// The stores of `dirs` (`msg_stores/vhosts/<VH>`) between a work area
    /// and a data directory.
    pub fn new(area: &Path, data_dir: &Path, dirs: &[VhostDir]) -> Stores {
        Stores {
            area: area.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            dirs: dirs.to_vec(),
        }
    }

    /// The store the broker uses.
    pub fn current(&self, i: usize) -> PathBuf {
        self.data_dir.join(&self.dirs[i])
    }

    /// The verified snapshot store, waiting to go in.
    pub fn staged(&self, i: usize) -> PathBuf {
        self.area.join("new").join(&self.dirs[i])
    }

    fn old(&self, i: usize) -> PathBuf {
        self.area.join("old").join(self.dirs[i].name())
    }

    fn failed(&self, i: usize) -> PathBuf {
        self.area.join("failed").join(self.dirs[i].name())
    }

    /// Which vhosts have a store in the data directory now.
    pub fn present(&self) -> Vec<bool> {
        (0..self.dirs.len())
            .map(|i| self.current(i).exists())
            .collect()
    }

    /// The rename a step makes.
    fn ends(&self, step: Step) -> (PathBuf, PathBuf) {
        match step {
            Step::Aside(i) => (self.current(i), self.old(i)),
            Step::In(i) => (self.staged(i), self.current(i)),
            Step::Out(i) => (self.current(i), self.failed(i)),
            Step::Back(i) => (self.old(i), self.current(i)),
        }
    }

    /// Where a step stands, read on the work-area side of its rename.
    pub fn status(&self, step: Step) -> Status {
        match step {
            Step::Aside(i) if self.old(i).exists() => Status::Done,
            Step::Aside(_) => Status::Todo,
            Step::In(i) if self.staged(i).exists() => Status::Todo,
            Step::In(_) => Status::Done,
            Step::Out(i) if self.failed(i).exists() => Status::Done,
            Step::Out(i) if self.staged(i).exists() => Status::Moot,
            Step::Out(_) => Status::Todo,
            Step::Back(i) if self.old(i).exists() => Status::Todo,
            Step::Back(_) => Status::Done,
        }
    }

    /// Whether the data-directory side of a step that moves a store in is
    /// taken by a store the broker created by itself.
    pub fn occupied(&self, step: Step) -> bool {
        matches!(step, Step::In(_) | Step::Back(_)) && self.ends(step).1.exists()
    }

    /// Moves the store occupying the data-directory side of `step` to
    /// `displaced/`. Returns where it went.
    pub fn displace(&self, step: Step) -> anyhow::Result<PathBuf> {
        let i = step.vhost();
        let dir = self.area.join("displaced");
        fs::create_dir_all(&dir)?;
        let taken = fs::read_dir(&dir)?.count();
        let to = dir.join(format!("{}-{taken}", self.dirs[i].name()));
        rename_durably(&self.current(i), &to)?;
        Ok(to)
    }

    /// Makes the rename of a step that is to do.
    pub fn take(&self, step: Step) -> anyhow::Result<()> {
        let (from, to) = self.ends(step);
        if !from.exists() {
            return Err(anyhow::Error::new(Anomaly(format!(
                "{} is missing although the journal has not moved it yet",
                from.display()
            ))));
        }
        if to.exists() {
            return Err(anyhow::Error::new(Anomaly(format!(
                "{} exists already: something other than this restore changed it",
                to.display()
            ))));
        }
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        rename_durably(&from, &to)
    }

    /// Gives every swapped-in file the data directory's owner.
    pub fn fix_owner(&self) -> anyhow::Result<()> {
        let meta = fs::metadata(&self.data_dir)?;
        for i in 0..self.dirs.len() {
            chown_tree(&self.current(i), meta.uid(), meta.gid())?;
        }
        Ok(())
    }

    /// The previous stores (`old/`), if any store was moved aside.
    pub fn old_stores(&self) -> Option<PathBuf> {
        let old = self.area.join("old");
        non_empty(&old).then_some(old)
    }

    /// The displaced stores, if the broker created any.
    pub fn displaced(&self) -> Option<PathBuf> {
        let dir = self.area.join("displaced");
        non_empty(&dir).then_some(dir)
    }
}

/// True when `dir` exists and holds an entry.
pub fn non_empty(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// Renames `from` to `to` and syncs both directories, so that the rename
/// is on disk before the journal records the next intent.
pub fn rename_durably(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::rename(from, to)
        .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
    for dir in [from.parent(), to.parent()].into_iter().flatten() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))?;
    }
    Ok(())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.uid() != uid || meta.gid() != gid {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .with_context(|| format!("cannot give {} to uid {uid} gid {gid}", path.display()))?;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Refuses a data directory whose stores are on another filesystem than
/// the work area beside it: a rename across filesystems fails (EXDEV), and
/// it would fail with the broker stopped.
pub fn check_same_filesystem(data_dir: &Path, dirs: &[VhostDir]) -> anyhow::Result<()> {
    let area_dev = fs::metadata(crate::staging::parent_of(data_dir)?)?.dev();
    let vhosts = data_dir.join("msg_stores/vhosts");
    let candidates = std::iter::once(vhosts).chain(dirs.iter().map(|d| data_dir.join(d)));
    for path in candidates {
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.dev() != area_dev {
            return Err(crate::error::refused(format!(
                "{} is on another filesystem than {}, where the restore stages the snapshot: \
                 the stores are swapped by rename, which cannot cross filesystems. Keep the whole \
                 data directory and its parent on one filesystem (mount the parent, not msg_stores)",
                path.display(),
                crate::staging::parent_of(data_dir)?.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn vh(name: &str) -> VhostDir {
        VhostDir::parse(&format!("msg_stores/vhosts/{name}")).unwrap()
    }

    pub(crate) struct Fixture {
        pub _base: tempfile::TempDir,
        pub data: PathBuf,
        pub area: PathBuf,
    }

    /// A data directory with stores A, B, C and a work area with A and B staged.
    pub(crate) fn fixture() -> Fixture {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("rabbit@h");
        let area = base.path().join(".rabbitmq-backup-restore-rabbit@h-X");
        for (root, tag) in [(&data, "old"), (&area.join("new"), "new")] {
            for vh in ["A", "B"] {
                let d = root.join(format!("msg_stores/vhosts/{vh}"));
                fs::create_dir_all(&d).unwrap();
                fs::write(d.join("f"), format!("{tag}-{vh}")).unwrap();
            }
        }
        fs::create_dir_all(data.join("msg_stores/vhosts/C")).unwrap();
        fs::write(data.join("msg_stores/vhosts/C/f"), "old-C").unwrap();
        Fixture {
            _base: base,
            data,
            area,
        }
    }

    fn stores(f: &Fixture) -> Stores {
        Stores::new(&f.area, &f.data, &[vh("A"), vh("B")])
    }

    fn read(f: &Fixture, vh: &str) -> String {
        fs::read_to_string(f.data.join(format!("msg_stores/vhosts/{vh}/f"))).unwrap()
    }

    #[test]
    fn forward_then_backward_restores_the_previous_state() {
        let f = fixture();
        let s = stores(&f);
        for step in forward(&s.present()) {
            assert_eq!(s.status(step), Status::Todo, "{step:?}");
            s.take(step).unwrap();
            assert_eq!(s.status(step), Status::Done, "{step:?}");
        }
        assert_eq!(
            (read(&f, "A"), read(&f, "B")),
            ("new-A".into(), "new-B".into())
        );
        assert_eq!(read(&f, "C"), "old-C");
        for step in backward(2) {
            assert_eq!(s.status(step), Status::Todo, "{step:?}");
            s.take(step).unwrap();
        }
        assert_eq!(
            (read(&f, "A"), read(&f, "B")),
            ("old-A".into(), "old-B".into())
        );
        assert!(s.old_stores().is_none());
    }

    #[test]
    fn a_rollback_from_half_way_skips_what_never_moved() {
        let f = fixture();
        let s = stores(&f);
        // A swapped in, B only moved aside.
        for step in &forward(&[true, true])[..3] {
            s.take(*step).unwrap();
        }
        let statuses: Vec<Status> = backward(2).into_iter().map(|st| s.status(st)).collect();
        // Out(B) is moot (B's snapshot never went in), Back(B) to do, then A.
        assert_eq!(
            statuses,
            [Status::Moot, Status::Todo, Status::Todo, Status::Todo]
        );
    }

    #[test]
    fn a_store_created_by_the_broker_is_displaced_not_overwritten() {
        let f = fixture();
        let s = stores(&f);
        s.take(Step::Aside(0)).unwrap();
        // A rebooted broker creates a fresh store for the missing vhost.
        fs::create_dir_all(s.current(0)).unwrap();
        fs::write(s.current(0).join("f"), "intruder").unwrap();
        assert!(s.occupied(Step::In(0)));
        let err = s.take(Step::In(0)).unwrap_err();
        assert!(err.downcast_ref::<Anomaly>().is_some(), "{err:#}");
        let to = s.displace(Step::In(0)).unwrap();
        assert_eq!(fs::read_to_string(to.join("f")).unwrap(), "intruder");
        s.take(Step::In(0)).unwrap();
        assert_eq!(read(&f, "A"), "new-A");
        assert!(s.displaced().is_some());
    }

    #[test]
    fn stores_on_another_filesystem_are_refused() {
        let f = fixture();
        check_same_filesystem(&f.data, &[vh("A")]).unwrap();
        // /dev/shm is a tmpfs of its own: the operator's symlinked msg_stores.
        let elsewhere = tempfile::tempdir_in("/dev/shm").unwrap();
        fs::rename(f.data.join("msg_stores/vhosts/A"), f.data.join("A-moved")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), f.data.join("msg_stores/vhosts/A")).unwrap();
        let err = check_same_filesystem(&f.data, &[vh("A")]).unwrap_err();
        assert_eq!(
            crate::error::kind_of(&err),
            crate::error::Kind::Refused,
            "{err:#}"
        );
        assert!(format!("{err:#}").contains("another filesystem"), "{err:#}");
    }
}
