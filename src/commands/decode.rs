//! A snapshot's message stores, downloaded and verified into a temporary
//! work area and opened with the store reader (for `messages` and
//! `verify --deep`). Memory stays flat: the archive streams to disk, and
//! the reader reads the files by offset; the disk needed is the selected
//! vhosts' stores plus a location table about twice their queue indexes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::archive::manifest::Manifest;
use crate::archive::reader;
use crate::crypt::Identities;
use crate::error::refused;
use crate::logical::{self, LogicalQueue};
use crate::output::bytes;
use crate::repo::{Repository, SnapshotRef};
use crate::store::Store;
use crate::transfer::{self, DownloadSource};

/// An opened copy of a snapshot's stores; removed when dropped.
pub struct Staged {
    /// The reader's view of the copy.
    pub store: Store,
    /// The queues captured as logical records (quorum queues, streams), by
    /// vhost and queue.
    pub logical: Vec<LogicalQueue>,
    dir: tempfile::TempDir,
}

impl Staged {
    /// Where the copy is.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where a reader may keep its location tables.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The logical records of queue `name` in `vhost`, if it was captured
    /// that way (a replay's message source for quorum queues and streams).
    pub fn logical_queue(&self, vhost: &str, name: &str) -> Option<&LogicalQueue> {
        self.logical
            .iter()
            .find(|q| q.vhost == vhost && q.queue == name)
    }
}

/// The archive paths worth unpacking for `vhost_dirs`: never the transient
/// store (the broker wipes it at boot).
fn wanted(path: &str, vhost_dirs: &BTreeSet<String>) -> bool {
    path == "logical"
        || path.starts_with("logical/")
        || vhost_dirs.iter().any(|dir| {
            path.strip_prefix(dir.as_str()).is_some_and(|rest| {
                (rest.is_empty() || rest.starts_with('/'))
                    && !rest.starts_with("/msg_store_transient")
            })
        })
        || vhost_dirs
            .iter()
            .any(|dir| dir.starts_with(&format!("{path}/")))
}

/// Downloads the snapshot, verifies every chunk and file, and keeps the
/// stores of the vhosts named (all of them when `vhosts` is empty).
pub async fn stage(
    repo: &Repository,
    snapshot: &SnapshotRef,
    manifest: &Manifest,
    vhosts: &[String],
    identity: Option<&Arc<Identities>>,
    concurrency: usize,
) -> anyhow::Result<Staged> {
    let vhost_dirs: BTreeSet<String> = manifest
        .vhosts
        .iter()
        .filter(|v| vhosts.is_empty() || vhosts.contains(&v.name))
        .map(|v| v.dir.to_string())
        .collect();
    let needed: u64 = manifest
        .files
        .iter()
        .filter(|f| wanted(&f.path, &vhost_dirs))
        .map(|f| f.size)
        .sum();
    let parent = std::env::temp_dir();
    // The copy, its location tables (at most twice the indexes) and slack.
    check_free_space(&parent, needed + needed / 2 + (64 << 20))?;
    let dir = tempfile::Builder::new()
        .prefix("rabbitmq-backup-decode-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a work directory in {}", parent.display()))?;
    std::fs::create_dir(dir.path().join("work"))?;
    tracing::info!(
        "downloading snapshot {} and verifying it; unpacking {} of message stores into {}",
        manifest.id,
        bytes(needed),
        dir.path().display()
    );
    let source = DownloadSource::for_snapshot(repo, snapshot, manifest, identity, concurrency)?;
    let (m, dest) = (Arc::new(manifest.clone()), dir.path().to_path_buf());
    transfer::download(source, manifest.chunks.clone(), move |r| {
        reader::unpack_selected(r, &m, Some(&dest), |p| wanted(p, &vhost_dirs), |_| {})
    })
    .await
    .with_context(|| format!("snapshot {} failed verification", manifest.id))?;
    let root = dir.path().to_path_buf();
    let manifest_logical = manifest.logical.clone();
    let (store, logical) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let store = Store::open(&root).map_err(|e| e.into_anyhow())?;
        Ok((store, logical::find(&root, &manifest_logical)?))
    })
    .await??;
    for note in &store.notes {
        tracing::warn!("{note}");
    }
    Ok(Staged {
        store,
        logical,
        dir,
    })
}

fn check_free_space(dir: &Path, needed: u64) -> anyhow::Result<()> {
    // A filesystem that cannot say is not refused for it.
    let Ok(stat) = rustix::fs::statvfs(dir) else {
        return Ok(());
    };
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free < needed {
        return Err(refused(format!(
            "{} has {} free but decoding needs about {}: set TMPDIR to a larger filesystem, or select fewer vhosts",
            dir.display(),
            bytes(free),
            bytes(needed)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_selected_persistent_stores_are_unpacked() {
        let dirs: BTreeSet<String> = ["msg_stores/vhosts/A".to_string()].into();
        assert!(wanted("msg_stores/vhosts/A/queues/Q/0.idx", &dirs));
        assert!(wanted(
            "msg_stores/vhosts/A/msg_store_persistent/0.rdq",
            &dirs
        ));
        assert!(wanted("msg_stores/vhosts/A", &dirs));
        assert!(wanted("msg_stores", &dirs));
        assert!(!wanted(
            "msg_stores/vhosts/A/msg_store_transient/0.rdq",
            &dirs
        ));
        assert!(!wanted("msg_stores/vhosts/AB/queues/Q/0.idx", &dirs));
        assert!(!wanted("definitions.json", &dirs));
        assert!(wanted("logical/V/q.rblr", &dirs));
    }
}
