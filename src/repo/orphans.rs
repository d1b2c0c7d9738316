//! Incomplete snapshots of a local repository: directories a killed or
//! failed backup left without a manifest. Nothing lists or restores them;
//! `prune` removes those old enough that no backup can still be writing them.
//!
//! A backup writes its snapshot's objects continuously from its start (a
//! chunk every few seconds; an upload gives up after minutes of silence)
//! and its id is its start time. A directory is removed only when BOTH its
//! id and its newest file are older than [`GRACE`]: a running backup is
//! younger on both counts, and a day is far longer than any backup runs
//! without writing. Ids are never reused, so no backup writes there again.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{MANIFEST, SNAPSHOTS_DIR, snapshot_id};

/// How old an incomplete snapshot must be (by id and by its newest file)
/// before `prune` removes it.
pub const GRACE: Duration = Duration::from_secs(24 * 3600);

/// One incomplete snapshot directory (`prune --json` schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphan {
    /// Node directory it is under.
    pub node: String,
    /// Its id.
    pub id: String,
    /// Files in it.
    pub files: u64,
    /// Bytes in it.
    pub bytes: u64,
    /// Hours since its newest file was written.
    pub idle_hours: u64,
    /// Old enough to remove (by id and newest file).
    pub removable: bool,
    #[serde(skip)]
    dir: PathBuf,
}

impl Orphan {
    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Every incomplete snapshot under `root` (of `node`, if given), oldest
/// first, each marked removable or not as of `now`.
pub fn find(root: &Path, node: Option<&str>, now: SystemTime) -> anyhow::Result<Vec<Orphan>> {
    let snapshots = root.join(SNAPSHOTS_DIR);
    let mut out = Vec::new();
    for node_dir in read_dirs(&snapshots)? {
        let node_name = node_dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if node.is_some_and(|n| n != node_name) {
            continue;
        }
        for dir in read_dirs(&node_dir)? {
            let id = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            if !snapshot_id::is_valid(&id) || dir.join(MANIFEST).exists() {
                continue;
            }
            let (files, bytes, newest) = tree(&dir)?;
            let started = snapshot_id::timestamp(&id).map(SystemTime::from);
            let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
            let removable = started.is_some_and(|t| age(t) > GRACE) && age(newest) > GRACE;
            out.push(Orphan {
                node: node_name.clone(),
                id,
                files,
                bytes,
                idle_hours: age(newest).as_secs() / 3600,
                removable,
                dir,
            });
        }
    }
    out.sort_by(|a, b| (&a.id, &a.node).cmp(&(&b.id, &b.node)));
    Ok(out)
}

/// Removes an orphan's directory, and its node directory if now empty.
pub fn remove(orphan: &Orphan) -> anyhow::Result<()> {
    std::fs::remove_dir_all(&orphan.dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot remove the incomplete snapshot {}: {e}",
            orphan.dir.display()
        )
    })?;
    if let Some(parent) = orphan.dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(())
}

fn read_dirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => anyhow::bail!("cannot list {}: {e}", dir.display()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| anyhow::anyhow!("cannot list {}: {e}", dir.display()))?;
        if entry.file_type()?.is_dir() {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// Files, bytes and the newest modification time (of files and
/// directories) below `dir`, temporary files of unfinished writes included.
fn tree(dir: &Path) -> anyhow::Result<(u64, u64, SystemTime)> {
    let meta = std::fs::metadata(dir)?;
    let (mut files, mut bytes, mut newest) = (0, 0, meta.modified()?);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let (f, b, n) = tree(&entry.path())?;
            files += f;
            bytes += b;
            newest = newest.max(n);
        } else {
            files += 1;
            bytes += meta.len();
            newest = newest.max(meta.modified()?);
        }
    }
    Ok((files, bytes, newest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, when: SystemTime) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"chunk").unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    fn set_dir_times(dir: &Path, when: SystemTime) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                set_dir_times(&path, when);
            }
        }
        std::fs::File::open(dir)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    #[test]
    fn only_old_and_idle_incomplete_snapshots_are_removable() {
        let root = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(24 * 3600);
        let old = now - 3 * day;
        let snap = |node: &str, id: &str| root.path().join("snapshots").join(node).join(id);
        // Killed long ago: old id, nothing written since.
        let dead = snap("rabbit@a", "20200101T000000Z-00000001");
        touch(&dead.join("data/aa"), old);
        // Committed: never an orphan, whatever its age.
        let done = snap("rabbit@a", "20200101T000000Z-00000002");
        touch(&done.join("data/bb"), old);
        touch(&done.join(MANIFEST), old);
        // Old id but a file written just now: still being written.
        let writing = snap("rabbit@a", "20200101T000000Z-00000003");
        touch(&writing.join("data/cc"), old);
        touch(&writing.join("data/dd.tmp-1-2"), now);
        // Started an hour ago: young by id.
        let id = snapshot_id::new_id(time::OffsetDateTime::now_utc() - time::Duration::hours(1));
        let young = snap("rabbit@b", &id);
        touch(&young.join("data/ee"), old);
        for dir in [&dead, &done, &young] {
            set_dir_times(dir, old);
        }
        // Not an id: never touched.
        std::fs::create_dir_all(snap("rabbit@a", "not-a-snapshot")).unwrap();

        let found = find(root.path(), None, now).unwrap();
        let verdicts: Vec<(&str, bool)> =
            found.iter().map(|o| (o.id.as_str(), o.removable)).collect();
        assert_eq!(
            verdicts,
            vec![
                ("20200101T000000Z-00000001", true),
                ("20200101T000000Z-00000003", false),
                (id.as_str(), false),
            ]
        );
        assert_eq!(found[0].files, 1);
        assert_eq!(find(root.path(), Some("rabbit@b"), now).unwrap().len(), 1);
        remove(&found[0]).unwrap();
        assert!(!dead.exists() && done.exists() && writing.exists());
    }
}
