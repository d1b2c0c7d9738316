//! Swapping vhost message stores in and out of a data directory by rename,
//! with a journal on disk so an interrupted restore can be finished or undone.
//!
//! The work area (beside the data directory) holds:
//! ```text
//! new/msg_stores/vhosts/<VH>   verified snapshot data, waiting to go in
//! old/<VH>                     the node's previous store, moved aside
//! failed/<VH>                  snapshot data taken out again by a rollback
//! manifest.json                the snapshot's manifest (for --resume)
//! journal.json                 what has been done so far
//! ```

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// How far a restore got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Definitions imported (merged); messages untouched.
    Imported,
    /// The broker is (being) stopped; stores may be partly swapped.
    Stopped,
    /// Every store swapped in; the broker is being started.
    Swapped,
    /// The broker runs on the restored stores; checks pending.
    Started,
    /// Finished (or rolled back): nothing left to do.
    Done,
}

/// The journal of one restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Snapshot being restored.
    pub snapshot_id: String,
    /// The snapshot's node.
    pub source_node: String,
    /// The node being restored.
    pub target_node: String,
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// Vhost directories to swap (`msg_stores/vhosts/<VH>`).
    pub vhost_dirs: Vec<String>,
    /// Progress.
    pub phase: Phase,
    /// Directories whose previous store was moved to `old/`.
    pub moved_aside: Vec<String>,
    /// Directories now holding snapshot data.
    pub swapped_in: Vec<String>,
}

/// The journal file's name in the work area.
pub const JOURNAL: &str = "journal.json";

/// Journaled swap operations on one work area.
#[derive(Debug)]
pub struct Swapper {
    area: PathBuf,
    /// The journal as last saved.
    pub journal: Journal,
}

fn vh_name(dir: &str) -> &str {
    dir.rsplit('/').next().unwrap_or(dir)
}

impl Swapper {
    /// Starts a journal in `area` (saved at once).
    pub fn create(area: &Path, journal: Journal) -> anyhow::Result<Swapper> {
        let swapper = Swapper {
            area: area.to_path_buf(),
            journal,
        };
        swapper.save()?;
        Ok(swapper)
    }

    /// Loads the journal of an interrupted restore.
    pub fn load(area: &Path) -> anyhow::Result<Swapper> {
        let path = area.join(JOURNAL);
        let text = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let journal = serde_json::from_slice(&text)
            .with_context(|| format!("{} is damaged", path.display()))?;
        Ok(Swapper {
            area: area.to_path_buf(),
            journal,
        })
    }

    /// The work area.
    pub fn area(&self) -> &Path {
        &self.area
    }

    /// Where verified snapshot data is unpacked.
    pub fn new_root(&self) -> PathBuf {
        self.area.join("new")
    }

    fn save(&self) -> anyhow::Result<()> {
        crate::staging::replace_durably(
            &self.area.join(JOURNAL),
            &self.area.join(format!("{JOURNAL}.tmp")),
            &serde_json::to_vec_pretty(&self.journal)?,
        )?;
        Ok(())
    }

    /// Records a new phase.
    pub fn set_phase(&mut self, phase: Phase) -> anyhow::Result<()> {
        self.journal.phase = phase;
        self.save()
    }

    /// Moves each vhost's current store aside and the staged one into place.
    /// Safe to call again after an interruption: done steps are skipped.
    pub fn swap_in(&mut self) -> anyhow::Result<()> {
        let data_dir = self.journal.data_dir.clone();
        fs::create_dir_all(self.area.join("old"))?;
        for dir in self.journal.vhost_dirs.clone() {
            if self.journal.swapped_in.contains(&dir) {
                continue;
            }
            let current = data_dir.join(&dir);
            let old = self.area.join("old").join(vh_name(&dir));
            let staged = self.new_root().join(&dir);
            if !self.journal.moved_aside.contains(&dir) {
                if current.exists() {
                    rename(&current, &old)?;
                }
                // Recorded even when there was nothing to move: the step is done.
                self.journal.moved_aside.push(dir.clone());
                self.save()?;
                crate::failpoint::hit("restore:mid-swap")?;
            }
            if current.exists() {
                anyhow::bail!(
                    "{} reappeared while the broker was stopped; is something else writing to the data directory?",
                    current.display()
                );
            }
            rename(&staged, &current)?;
            self.journal.swapped_in.push(dir.clone());
            self.save()?;
        }
        Ok(())
    }

    /// Undoes [`Swapper::swap_in`]: snapshot data goes to `failed/`, the
    /// previous stores come back. Safe to call again after an interruption.
    pub fn swap_back(&mut self) -> anyhow::Result<()> {
        let data_dir = self.journal.data_dir.clone();
        fs::create_dir_all(self.area.join("failed"))?;
        for dir in self.journal.moved_aside.clone().into_iter().rev() {
            let current = data_dir.join(&dir);
            let old = self.area.join("old").join(vh_name(&dir));
            let failed = self.area.join("failed").join(vh_name(&dir));
            if self.journal.swapped_in.contains(&dir) {
                if current.exists() {
                    rename(&current, &failed)?;
                }
                self.journal.swapped_in.retain(|d| d != &dir);
                self.save()?;
            }
            if old.exists() {
                rename(&old, &current)?;
            }
            self.journal.moved_aside.retain(|d| d != &dir);
            self.save()?;
        }
        Ok(())
    }

    /// Gives every swapped-in file the data directory's owner.
    pub fn fix_owner(&self) -> anyhow::Result<()> {
        let meta = fs::metadata(&self.journal.data_dir)?;
        let (uid, gid) = (meta.uid(), meta.gid());
        for dir in &self.journal.swapped_in {
            chown_tree(&self.journal.data_dir.join(dir), uid, gid)?;
        }
        Ok(())
    }

    /// The previous stores, if kept: moved beside the data directory, or removed.
    pub fn finish(&mut self, keep_old: bool) -> anyhow::Result<Option<PathBuf>> {
        let old = self.area.join("old");
        let kept = if keep_old && old.exists() {
            let dest = self.area.with_file_name(format!(
                "{}-previous-{}",
                crate::staging::MARK,
                self.journal.snapshot_id
            ));
            rename(&old, &dest)?;
            Some(dest)
        } else {
            None
        };
        self.set_phase(Phase::Done)?;
        Ok(kept)
    }
}

fn rename(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::rename(from, to)
        .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))
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

/// Sorts the work areas of earlier restores of the node with `data_dir`, in
/// one pass. Call only while holding the [`crate::staging::NodeLock`].
/// Areas left before the broker was stopped (their restore changed no
/// message) or after the end are removed and returned second; interrupted
/// ones are returned first, for `--resume`. A journal that cannot be read
/// is an error, never a removal: its area may hold the previous stores.
pub fn sweep(data_dir: &Path) -> anyhow::Result<(Vec<Swapper>, Vec<PathBuf>)> {
    let mut pending = Vec::new();
    let removed = crate::staging::remove_stale(data_dir, "restore", |area| {
        if !area.join(JOURNAL).exists() {
            return Ok(false); // killed before the journal: nothing was touched
        }
        let s = Swapper::load(area).map_err(|e| {
            e.context(crate::error::class(
                crate::error::Kind::NeedsAttention,
                format!(
                    "the journal of an earlier restore in {} cannot be read; its old/ directory may hold the node's previous message stores: inspect it and move it away by hand",
                    area.display()
                ),
            ))
        })?;
        let interrupted = (Phase::Stopped..Phase::Done).contains(&s.journal.phase);
        if interrupted {
            pending.push(s);
        }
        Ok(interrupted)
    })?;
    Ok((pending, removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _base: tempfile::TempDir,
        data: PathBuf,
        area: PathBuf,
    }

    fn fixture() -> Fixture {
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
        // C exists only on the node and is not part of the snapshot.
        fs::create_dir_all(data.join("msg_stores/vhosts/C")).unwrap();
        fs::write(data.join("msg_stores/vhosts/C/f"), "old-C").unwrap();
        Fixture {
            _base: base,
            data,
            area,
        }
    }

    fn journal(f: &Fixture) -> Journal {
        Journal {
            snapshot_id: "X".into(),
            source_node: "rabbit@a".into(),
            target_node: "rabbit@h".into(),
            data_dir: f.data.clone(),
            vhost_dirs: vec!["msg_stores/vhosts/A".into(), "msg_stores/vhosts/B".into()],
            phase: Phase::Stopped,
            moved_aside: vec![],
            swapped_in: vec![],
        }
    }

    fn read(f: &Fixture, vh: &str) -> String {
        fs::read_to_string(f.data.join(format!("msg_stores/vhosts/{vh}/f"))).unwrap()
    }

    #[test]
    fn swap_in_then_back_restores_the_previous_state() {
        let f = fixture();
        let mut s = Swapper::create(&f.area, journal(&f)).unwrap();
        s.swap_in().unwrap();
        assert_eq!(read(&f, "A"), "new-A");
        assert_eq!(read(&f, "B"), "new-B");
        assert_eq!(read(&f, "C"), "old-C");
        s.swap_back().unwrap();
        assert_eq!(read(&f, "A"), "old-A");
        assert_eq!(read(&f, "B"), "old-B");
        assert!(s.journal.swapped_in.is_empty() && s.journal.moved_aside.is_empty());
    }

    #[test]
    fn an_interrupted_swap_can_be_finished_from_the_journal() {
        let f = fixture();
        let mut s = Swapper::create(&f.area, journal(&f)).unwrap();
        // Simulate a crash after A's store was moved aside, before anything else.
        fs::create_dir_all(f.area.join("old")).unwrap();
        fs::rename(f.data.join("msg_stores/vhosts/A"), f.area.join("old/A")).unwrap();
        s.journal.moved_aside.push("msg_stores/vhosts/A".into());
        s.save().unwrap();
        let mut resumed = Swapper::load(&f.area).unwrap();
        resumed.swap_in().unwrap();
        assert_eq!(read(&f, "A"), "new-A");
        assert_eq!(read(&f, "B"), "new-B");
    }

    #[test]
    fn an_interrupted_swap_can_be_undone_from_the_journal() {
        let f = fixture();
        let mut s = Swapper::create(&f.area, journal(&f)).unwrap();
        s.swap_in().unwrap();
        // Crash in the middle of the rollback: A is back, B is not yet.
        let mut resumed = Swapper::load(&f.area).unwrap();
        resumed.journal.vhost_dirs.clone_from(&s.journal.vhost_dirs);
        resumed.swap_back().unwrap();
        assert_eq!(read(&f, "A"), "old-A");
        assert_eq!(read(&f, "B"), "old-B");
    }

    #[test]
    fn finds_interrupted_restores() {
        let f = fixture();
        let mut s = Swapper::create(&f.area, journal(&f)).unwrap();
        let (pending, removed) = sweep(&f.data).unwrap();
        assert_eq!((pending.len(), removed.len()), (1, 0));
        s.set_phase(Phase::Done).unwrap();
        let (pending, removed) = sweep(&f.data).unwrap();
        assert!(pending.is_empty());
        assert_eq!(removed, vec![f.area.clone()]);
    }

    #[test]
    fn a_damaged_journal_is_refused_and_its_area_kept() {
        let f = fixture();
        Swapper::create(&f.area, journal(&f)).unwrap();
        fs::write(f.area.join(JOURNAL), b"{ damaged").unwrap();
        let err = sweep(&f.data).unwrap_err();
        assert_eq!(
            crate::error::kind_of(&err),
            crate::error::Kind::NeedsAttention
        );
        assert!(format!("{err:#}").contains("cannot be read"), "{err:#}");
        assert!(f.area.join("new").exists());
    }
}
