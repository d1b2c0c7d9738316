//! Everything downloaded, verified and unpacked into the work area before
//! the node is touched.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::archive::manifest::Manifest;
use crate::archive::reader;
use crate::output::bytes;
use crate::progress::Progress;
use crate::transfer::{self, DownloadSource};

/// Refuses when the filesystem beside the data directory cannot hold the
/// snapshot's files (with some room to spare).
pub fn check_free_space(dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let needed = manifest.totals.file_bytes + manifest.totals.file_bytes / 10 + (64 << 20);
    crate::staging::check_free_space(dir, needed, "the snapshot")
}

/// Downloads, verifies and unpacks every chunk into `dest`, then lets
/// `prepare` adjust the unpacked files for the target; returns the
/// definitions. The staged data is synced to disk before this returns.
pub async fn fetch_all(
    source: DownloadSource,
    manifest: &Manifest,
    dest: &Path,
    prepare: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<u8>> {
    tracing::info!(
        "downloading and verifying {} chunks ({}) into {}",
        manifest.chunks.len(),
        bytes(manifest.totals.stored_bytes),
        dest.display()
    );
    std::fs::create_dir_all(dest)?;
    let progress = Progress::new("restoring", manifest.totals.file_bytes);
    let unpacking = progress.clone();
    let (m, d) = (Arc::new(manifest.clone()), dest.to_path_buf());
    let defs = transfer::download(source, manifest.chunks.clone(), move |reader| {
        reader::unpack(reader, &m, Some(&d), |n| unpacking.inc(n))
    })
    .await
    .with_context(|| {
        format!(
            "snapshot {} failed verification; the node was not touched",
            manifest.id
        )
    })?;
    progress.finish();
    prepare(dest)?;
    // On disk before it replaces the node's data: one syncfs, outside the pause.
    let dir = dest.to_path_buf();
    tokio::task::spawn_blocking(move || crate::staging::sync_filesystem(&dir)).await??;
    Ok(defs)
}

/// Downloads only the chunks holding `definitions.json` and returns it.
pub async fn fetch_definitions(
    source: DownloadSource,
    manifest: &Manifest,
) -> anyhow::Result<Vec<u8>> {
    let m = Arc::new(manifest.clone());
    // definitions.json leads the stream: fetch the chunks that hold it (its
    // bytes plus headers, a long-name entry, padding) and no more.
    let needed = manifest.files.first().map_or(0, |f| f.size) + 4096;
    let mut covered = 0;
    let first: Vec<_> = manifest
        .chunks
        .iter()
        .take_while(|c| {
            let take = covered < needed;
            covered += c.uncompressed_size;
            take
        })
        .cloned()
        .collect();
    transfer::download(source, first, move |r| reader::definitions_only(r, &m))
        .await
        .with_context(|| format!("cannot read the definitions of snapshot {}", manifest.id))
}
