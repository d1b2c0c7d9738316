//! Work areas beside the data directory (same filesystem, so moves are
//! renames), the per-node lock, and the fast local copy of a message store.
//!
//! Nothing is ever created *inside* the data directory: some RabbitMQ
//! versions delete unknown entries there at boot.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{data_dir as data_dir_error, refused};
use crate::rabbit::datadir::VhostDir;

/// Prefix of every entry this tool creates beside a data directory.
pub const MARK: &str = ".rabbitmq-backup";

/// The directory that holds the data directory.
pub fn parent_of(data_dir: &Path) -> anyhow::Result<&Path> {
    data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            data_dir_error(format!(
                "the data directory {} has no parent directory to stage in",
                data_dir.display()
            ))
        })
}

/// The name of the data directory (the node's directory under the mnesia base).
fn dir_name(data_dir: &Path) -> String {
    data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "node".into())
}

/// A work directory beside the data directory, removed on drop unless kept.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    keep: bool,
}

impl Staging {
    /// The path of a work area for `purpose` (`backup`, `restore`) and `id`.
    pub fn path_for(data_dir: &Path, purpose: &str, id: &str) -> anyhow::Result<PathBuf> {
        Ok(parent_of(data_dir)?.join(format!("{MARK}-{purpose}-{}-{id}", dir_name(data_dir))))
    }

    /// Creates a new, empty work area (mode 0700: it holds message data).
    pub fn create(data_dir: &Path, purpose: &str, id: &str) -> anyhow::Result<Staging> {
        let path = Self::path_for(data_dir, purpose, id)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the staging directory {}: {e}",
                    path.display()
                )
            })?;
        Ok(Staging { path, keep: false })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the directory in place when this value is dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = fs::remove_dir_all(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(
                "could not remove the staging directory {}: {e}",
                self.path.display()
            );
        }
    }
}

/// The work areas for `purpose` of the node with `data_dir`: exactly
/// `<MARK>-<purpose>-<dir name>-<snapshot id>`, so that `rabbit@h` never
/// claims the areas of `rabbit@h-2` beside it.
pub fn areas(data_dir: &Path, purpose: &str) -> anyhow::Result<Vec<PathBuf>> {
    let parent = parent_of(data_dir)?;
    let prefix = format!("{MARK}-{purpose}-{}-", dir_name(data_dir));
    let mut found = Vec::new();
    for entry in fs::read_dir(parent)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name
            .strip_prefix(&prefix)
            .is_some_and(crate::repo::snapshot_id::is_valid);
        if ours && entry.file_type()?.is_dir() {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Removes work areas for `purpose` left by a process that died, except
/// those `keep` wants kept. Call only while holding the [`NodeLock`]: then
/// no living process owns any of them. Returns what was removed.
pub fn remove_stale(
    data_dir: &Path,
    purpose: &str,
    mut keep: impl FnMut(&Path) -> anyhow::Result<bool>,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for area in areas(data_dir, purpose)? {
        if !keep(&area)? {
            fs::remove_dir_all(&area)?;
            removed.push(area);
        }
    }
    Ok(removed)
}

/// Refuses (exit 4) when the filesystem holding `dir` has less than
/// `needed` bytes free; `what` says what the space is for.
pub fn check_free_space(dir: &Path, needed: u64, what: &str) -> anyhow::Result<()> {
    let free = match crate::failpoint::value("staging:free-bytes") {
        Some(imposed) => imposed,
        None => {
            // A filesystem that cannot say is not refused for it.
            let Ok(stat) = rustix::fs::statvfs(dir) else {
                return Ok(());
            };
            stat.f_bavail.saturating_mul(stat.f_frsize)
        }
    };
    if free < needed {
        return Err(refused(format!(
            "{} has {} free but {what} needs about {}: free some space beside the data directory",
            dir.display(),
            crate::output::bytes(free),
            crate::output::bytes(needed)
        )));
    }
    Ok(())
}

/// Replaces `path` with `body` through `tmp` (in the same directory):
/// written, synced, renamed, the directory synced, so that after a crash
/// `path` holds either its old bytes or all the new ones. `tmp` is removed
/// when anything fails.
pub fn replace_durably(path: &Path, tmp: &Path, body: &[u8]) -> std::io::Result<()> {
    let result = (|| {
        let mut file = File::create(tmp)?;
        file.write_all(body)?;
        file.sync_all()?;
        fs::rename(tmp, path)?;
        // The rename is durable only once the directory entry is synced.
        File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// An exclusive lock on one node's data directory, held by one backup or
/// restore at a time; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct NodeLock {
    _file: File,
}

impl NodeLock {
    /// Takes the lock or refuses (exit 4) naming the holder.
    pub fn acquire(data_dir: &Path, purpose: &str) -> anyhow::Result<NodeLock> {
        let path = parent_of(data_dir)?.join(format!("{MARK}-{}.lock", dir_name(data_dir)));
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open the lock file {}: {e}", path.display()))?;
        // flock(LOCK_EX | LOCK_NB) on Unix: released when the process dies.
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::Error(e)) => {
                return Err(anyhow::anyhow!("cannot lock {}: {e}", path.display()));
            }
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(refused(format!(
                    "another rabbitmq-backup ({}) is working on the node with data directory {}; wait for it to finish and try again",
                    if holder.trim().is_empty() {
                        "unknown process".to_string()
                    } else {
                        holder.trim().to_string()
                    },
                    data_dir.display()
                )));
            }
        }
        file.set_len(0)?;
        file.seek(io::SeekFrom::Start(0))?;
        write!(file, "pid {}, {purpose}", std::process::id())?;
        file.flush()?;
        Ok(NodeLock { _file: file })
    }
}

/// Copies `msg_stores` (only the given vhost directories under
/// `msg_stores/vhosts`) from `src_root` into `dst_root`, sharing blocks by
/// reflink where the filesystem can. `msg_store_transient` files are
/// skipped: the node wipes them at boot. Returns the bytes copied.
pub fn copy_store(
    src_root: &Path,
    dst_root: &Path,
    vhost_dirs: &[VhostDir],
    threads: usize,
) -> io::Result<u64> {
    let mut dirs = vec!["msg_stores".to_string(), "msg_stores/vhosts".to_string()];
    let mut files = Vec::new();
    for vhost in vhost_dirs {
        collect(src_root, vhost.as_str(), &mut dirs, &mut files)?;
    }
    for dir in &dirs {
        let mode = fs::metadata(src_root.join(dir))?.mode() & 0o7777;
        fs::DirBuilder::new()
            .mode(mode)
            .create(dst_root.join(dir))?;
    }
    let queue = Mutex::new(files.into_iter());
    let copied = Mutex::new(0u64);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> io::Result<()> {
                    loop {
                        let next = queue.lock().expect("queue lock").next();
                        let Some(rel) = next else { return Ok(()) };
                        let n = clone_or_copy(&src_root.join(&rel), &dst_root.join(&rel))?;
                        *copied.lock().expect("count lock") += n;
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(io::Error::other("copy thread panicked")))
        })
    })?;
    Ok(copied.into_inner().expect("count lock"))
}

fn collect(
    root: &Path,
    rel: &str,
    dirs: &mut Vec<String>,
    files: &mut Vec<String>,
) -> io::Result<()> {
    dirs.push(rel.to_string());
    let transient = rel.ends_with("/msg_store_transient");
    for entry in fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = format!("{rel}/{name}");
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(root, &child, dirs, files)?;
        } else if kind.is_file() && !transient {
            files.push(child);
        }
    }
    Ok(())
}

/// Flushes every dirty page of the filesystem holding `dir` to disk.
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    Ok(rustix::fs::syncfs(File::open(dir)?)?)
}

/// Shares the source's blocks (FICLONE: btrfs, XFS), or copies where the
/// filesystem cannot. Returns the bytes the file holds.
fn clone_or_copy(src: &Path, dst: &Path) -> io::Result<u64> {
    let from = File::open(src)?;
    let meta = from.metadata()?;
    let to = File::options().write(true).create_new(true).open(dst)?;
    if rustix::fs::ioctl_ficlone(&to, &from).is_err() {
        let mut from = from;
        let mut to = to;
        // std::io::copy uses copy_file_range on Linux: no user-space buffer.
        io::copy(&mut from, &mut to)?;
    }
    fs::set_permissions(dst, meta.permissions())?;
    Ok(meta.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_is_beside_and_removed_on_drop() {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("rabbit@h");
        fs::create_dir(&data).unwrap();
        let path = {
            let s = Staging::create(&data, "backup", "X").unwrap();
            assert_eq!(s.path().parent(), Some(base.path()));
            assert!(!s.path().starts_with(&data));
            s.path().to_path_buf()
        };
        assert!(!path.exists());
    }

    #[test]
    fn stale_areas_are_removed_unless_kept() {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("rabbit@h");
        fs::create_dir(&data).unwrap();
        let a = Staging::create(&data, "backup", "20261121T051500Z-0000000a").unwrap();
        let b = Staging::create(&data, "backup", "20261121T051500Z-0000000b").unwrap();
        let other = Staging::create(&data, "restore", "20261121T051500Z-0000000c").unwrap();
        let keep_b = b.path().to_path_buf();
        let removed = remove_stale(&data, "backup", |p| Ok(p == keep_b)).unwrap();
        assert_eq!(removed, vec![a.path().to_path_buf()]);
        assert!(b.path().exists() && other.path().exists());
    }

    #[test]
    fn another_nodes_areas_are_never_matched_by_prefix() {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("rabbit@h");
        let other = base.path().join("rabbit@h-2");
        fs::create_dir(&data).unwrap();
        fs::create_dir(&other).unwrap();
        let id = "20261121T051500Z-3fa2c1d9";
        let mine = Staging::create(&data, "restore", id).unwrap();
        let theirs = Staging::create(&other, "restore", id).unwrap();
        assert_eq!(
            areas(&data, "restore").unwrap(),
            vec![mine.path().to_path_buf()]
        );
        let removed = remove_stale(&data, "restore", |_| Ok(false)).unwrap();
        assert_eq!(removed, vec![mine.path().to_path_buf()]);
        assert!(
            theirs.path().exists(),
            "rabbit@h-2's area is not rabbit@h's"
        );
    }

    #[test]
    fn too_little_free_space_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_free_space(dir.path(), 1, "the copy").unwrap();
        let err = check_free_space(dir.path(), u64::MAX / 2, "the copy").unwrap_err();
        assert_eq!(crate::error::kind_of(&err), crate::error::Kind::Refused);
        assert!(format!("{err:#}").contains("the copy needs"), "{err:#}");
    }

    #[test]
    fn a_second_lock_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("rabbit@h");
        fs::create_dir(&data).unwrap();
        let first = NodeLock::acquire(&data, "backup").unwrap();
        let err = NodeLock::acquire(&data, "restore").unwrap_err();
        assert_eq!(crate::error::kind_of(&err), crate::error::Kind::Refused);
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        NodeLock::acquire(&data, "restore").unwrap();
    }

    /// The clone request must be one this kernel knows (ENOTTY would mean a
    /// request number from another architecture, as the hard-coded x86
    /// number was on others): it clones, or says this filesystem cannot.
    #[test]
    fn ficlone_is_this_platforms_request() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::write(&src, vec![7u8; 64 << 10]).unwrap();
        let from = File::open(&src).unwrap();
        let to = File::create(&dst).unwrap();
        match rustix::fs::ioctl_ficlone(&to, &from) {
            Ok(()) => assert_eq!(fs::read(&dst).unwrap(), vec![7u8; 64 << 10]),
            Err(e) => assert!(
                [
                    rustix::io::Errno::OPNOTSUPP,
                    rustix::io::Errno::XDEV,
                    rustix::io::Errno::INVAL
                ]
                .contains(&e),
                "FICLONE failed with {e:?}"
            ),
        }
        drop(to);
        fs::remove_file(&dst).unwrap();
        // Either way the copy is complete.
        assert_eq!(clone_or_copy(&src, &dst).unwrap(), 64 << 10);
        assert_eq!(fs::read(&dst).unwrap(), vec![7u8; 64 << 10]);
    }

    #[test]
    fn copies_selected_vhosts_without_transient_files() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        for vh in ["A", "B"] {
            let d = src.path().join(format!("msg_stores/vhosts/{vh}"));
            fs::create_dir_all(d.join("msg_store_transient")).unwrap();
            fs::create_dir_all(d.join("queues/Q")).unwrap();
            fs::write(d.join("queues/Q/0.idx"), vh.repeat(1000)).unwrap();
            fs::write(d.join("msg_store_transient/0.rdq"), "t").unwrap();
        }
        let n = copy_store(
            src.path(),
            dst.path(),
            &[VhostDir::parse("msg_stores/vhosts/A").unwrap()],
            2,
        )
        .unwrap();
        assert_eq!(n, 1000);
        assert_eq!(
            fs::read(dst.path().join("msg_stores/vhosts/A/queues/Q/0.idx")).unwrap(),
            "A".repeat(1000).as_bytes()
        );
        assert!(
            dst.path()
                .join("msg_stores/vhosts/A/msg_store_transient")
                .is_dir()
        );
        assert!(
            !dst.path()
                .join("msg_stores/vhosts/A/msg_store_transient/0.rdq")
                .exists()
        );
        assert!(!dst.path().join("msg_stores/vhosts/B").exists());
    }
}
