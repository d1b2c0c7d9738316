//! Writes the snapshot's tar stream: `definitions.json`, then the message
//! store, streaming each file once and digesting it on the way, then the
//! logical records of quorum queues and streams as their capture produces
//! them.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::manifest::{DirEntry, FileEntry};
use super::paths::{DEFINITIONS, LOGICAL, MSG_STORES};
use crate::capture::segments::Segment;
use crate::rabbit::datadir::VhostDir;

/// Record files of logical captures, appended after the message store.
pub struct LogicalFeed {
    /// Told when the writer reaches `logical/`: the capture starts then,
    /// so the node never waits on a writer still busy with the store.
    pub ready: tokio::sync::oneshot::Sender<()>,
    /// The record files in order; the archive ends when the sender is
    /// dropped.
    pub segments: tokio::sync::mpsc::Receiver<Segment>,
}

/// What was written, for the manifest.
#[derive(Debug, Default)]
pub struct Written {
    /// Regular files in archive order (definitions.json first).
    pub files: Vec<FileEntry>,
    /// Directories in archive order.
    pub dirs: Vec<DirEntry>,
    /// Things worth telling the operator (live captures only).
    pub warnings: Vec<String>,
}

/// Reads exactly `size` bytes of a file, hashing them. A live file that
/// shrank is padded with zeros (and reported), because the tar header has
/// already promised `size` bytes.
struct HashingReader {
    file: File,
    remaining: u64,
    padded: u64,
    live: bool,
    hasher: Sha256,
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining as usize);
        let mut n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            if !self.live {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was read",
                ));
            }
            buf[..want].fill(0);
            self.padded += want as u64;
            n = want;
        }
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Streams the archive into `out`: `definitions`, then everything under
/// `<source>/msg_stores` (sorted, so archives are reproducible), of the vhost
/// directories in `vhost_dirs` (`msg_stores/vhosts/<VH>`) only. The
/// contents of `msg_store_transient` are skipped: the node wipes them at boot.
/// `live` tolerates files that change or vanish while being read. Then the
/// record files `logical` delivers, if any (called from a blocking thread).
pub fn write_archive<W: Write>(
    out: W,
    definitions: &[u8],
    source: &Path,
    live: bool,
    vhost_dirs: &BTreeSet<VhostDir>,
    logical: Option<LogicalFeed>,
    mut progress: impl FnMut(u64),
) -> io::Result<(W, Written)> {
    let mut builder = tar::Builder::new(out);
    let mut written = Written::default();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut header = base_header(
        tar::EntryType::Regular,
        0o600,
        definitions.len() as u64,
        now,
    );
    builder.append_data(&mut header, DEFINITIONS, definitions)?;
    written.files.push(FileEntry {
        path: DEFINITIONS.into(),
        size: definitions.len() as u64,
        sha256: hex::encode(Sha256::digest(definitions)),
        mode: 0o600,
    });

    let root = source.join(MSG_STORES);
    let meta = fs::metadata(&root)?;
    append_dir(&mut builder, MSG_STORES, &meta, &mut written)?;
    let mut walker = Walker {
        live,
        vhost_dirs,
        written: &mut written,
        progress: &mut progress,
    };
    walker.walk(&mut builder, &root, MSG_STORES)?;
    if let Some(feed) = logical {
        // The capture logs its own progress (the store's total excludes it).
        append_logical(&mut builder, feed, now, &mut written)?;
    }
    let out = builder.into_inner()?;
    Ok((out, written))
}

/// Appends record files as they arrive, with the directories above them.
fn append_logical<W: Write>(
    builder: &mut tar::Builder<W>,
    mut feed: LogicalFeed,
    now: u64,
    written: &mut Written,
) -> io::Result<()> {
    // A capture that did not start (a refused backup) has dropped its end.
    let _ = feed.ready.send(());
    let mut dirs = BTreeSet::new();
    while let Some(segment) = feed.segments.blocking_recv() {
        crate::signals::check()?;
        let parts: Vec<&str> = segment.path.split('/').collect();
        for depth in 1..parts.len() {
            let dir = parts[..depth].join("/");
            if dirs.insert(dir.clone()) {
                let mut header = base_header(tar::EntryType::Directory, 0o700, 0, now);
                builder.append_data(&mut header, &dir, io::empty())?;
                written.dirs.push(DirEntry {
                    path: dir,
                    mode: 0o700,
                });
            }
        }
        debug_assert!(segment.path.starts_with(LOGICAL));
        let size = segment.bytes.len() as u64;
        let mut header = base_header(tar::EntryType::Regular, 0o600, size, now);
        builder.append_data(&mut header, &segment.path, &segment.bytes[..])?;
        written.files.push(FileEntry {
            path: segment.path,
            size,
            sha256: hex::encode(Sha256::digest(&segment.bytes)),
            mode: 0o600,
        });
    }
    Ok(())
}

fn base_header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn append_dir<W: Write>(
    builder: &mut tar::Builder<W>,
    rel: &str,
    meta: &fs::Metadata,
    written: &mut Written,
) -> io::Result<()> {
    let mode = meta.mode() & 0o7777;
    let mut header = base_header(
        tar::EntryType::Directory,
        mode,
        0,
        meta.mtime().max(0) as u64,
    );
    builder.append_data(&mut header, rel, io::empty())?;
    written.dirs.push(DirEntry {
        path: rel.to_string(),
        mode,
    });
    Ok(())
}

struct Walker<'a, P: FnMut(u64)> {
    live: bool,
    vhost_dirs: &'a BTreeSet<VhostDir>,
    written: &'a mut Written,
    progress: &'a mut P,
}

impl<P: FnMut(u64)> Walker<'_, P> {
    fn walk<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        dir: &Path,
        rel: &str,
    ) -> io::Result<()> {
        crate::signals::check()?;
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        let skip_files = dir.file_name().is_some_and(|n| n == "msg_store_transient");
        let vhosts_level = rel == "msg_stores/vhosts";
        for entry in entries {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                self.written.warnings.push(format!(
                    "skipped {}: its name is not UTF-8",
                    entry.path().display()
                ));
                continue;
            };
            let child_rel = format!("{rel}/{name}");
            if vhosts_level && !self.vhost_dirs.contains(child_rel.as_str()) {
                continue;
            }
            let meta = match fs::symlink_metadata(entry.path()) {
                Ok(m) => m,
                Err(e) if self.live && e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                append_dir(builder, &child_rel, &meta, self.written)?;
                self.walk(builder, &entry.path(), &child_rel)?;
            } else if meta.is_file() {
                if !skip_files {
                    self.append_file(builder, &entry.path(), &child_rel)?;
                }
            } else {
                self.written.warnings.push(format!(
                    "skipped {child_rel}: not a regular file or directory"
                ));
            }
        }
        Ok(())
    }

    fn append_file<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        path: &Path,
        rel: &str,
    ) -> io::Result<()> {
        let file = match File::open(path) {
            Ok(f) => f,
            // The node deletes store files as it compacts: a live capture skips them.
            Err(e) if self.live && e.kind() == io::ErrorKind::NotFound => {
                self.written
                    .warnings
                    .push(format!("{rel} vanished while the live capture ran"));
                return Ok(());
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        };
        let meta = file.metadata()?;
        let size = meta.len();
        let mode = meta.mode() & 0o7777;
        let mut header = base_header(
            tar::EntryType::Regular,
            mode,
            size,
            meta.mtime().max(0) as u64,
        );
        let mut reader = BufReader::with_capacity(
            1 << 20,
            HashingReader {
                file,
                remaining: size,
                padded: 0,
                live: self.live,
                hasher: Sha256::new(),
            },
        );
        builder
            .append_data(&mut header, rel, &mut reader)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot archive {}: {e}", path.display()))
            })?;
        let reader = reader.into_inner();
        if reader.padded > 0 {
            self.written.warnings.push(format!(
                "{rel} shrank by {} bytes while the live capture read it",
                reader.padded
            ));
        }
        self.written.files.push(FileEntry {
            path: rel.to_string(),
            size,
            sha256: hex::encode(reader.hasher.finalize()),
            mode,
        });
        (self.progress)(size);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_definitions_first_then_the_store() {
        let src = tempfile::tempdir().unwrap();
        let vh = src.path().join("msg_stores/vhosts/V");
        fs::create_dir_all(vh.join("msg_store_transient")).unwrap();
        fs::create_dir_all(vh.join("queues/Q")).unwrap();
        fs::write(vh.join(".vhost"), "/").unwrap();
        fs::write(vh.join("msg_store_transient/0.rdq"), "transient").unwrap();
        fs::write(vh.join("queues/Q/0.idx"), vec![9u8; 5000]).unwrap();

        let selected: BTreeSet<VhostDir> = [VhostDir::parse("msg_stores/vhosts/V").unwrap()].into();
        fs::create_dir_all(src.path().join("msg_stores/vhosts/OTHER")).unwrap();
        let (tar_bytes, written) = write_archive(
            Vec::new(),
            b"{\"x\":1}",
            src.path(),
            false,
            &selected,
            None,
            |_| {},
        )
        .unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names[0], "definitions.json");
        assert!(names.contains(&"msg_stores/vhosts/V/queues/Q/0.idx".to_string()));
        assert!(names.contains(&"msg_stores/vhosts/V/msg_store_transient".to_string()));
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with("msg_store_transient/0.rdq"))
        );
        assert!(!names.iter().any(|n| n.contains("OTHER")));
        let idx = written
            .files
            .iter()
            .find(|f| f.path.ends_with("0.idx"))
            .unwrap();
        assert_eq!(idx.size, 5000);
        assert_eq!(idx.sha256, hex::encode(Sha256::digest(vec![9u8; 5000])));
    }

    #[test]
    fn logical_record_files_follow_the_store_with_their_directories() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("msg_stores/vhosts/V")).unwrap();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        for (path, bytes) in [
            ("logical/V/Q/000000.rblr", b"one".to_vec()),
            ("logical/V/Q/000001.rblr", b"two".to_vec()),
            ("logical/V/R/000000.rblr", b"three".to_vec()),
        ] {
            tx.try_send(Segment {
                path: path.into(),
                bytes,
            })
            .unwrap();
        }
        drop(tx);
        let selected: BTreeSet<VhostDir> = [VhostDir::parse("msg_stores/vhosts/V").unwrap()].into();
        let feed = LogicalFeed {
            ready: ready_tx,
            segments: rx,
        };
        let (tar_bytes, written) = write_archive(
            Vec::new(),
            b"{}",
            src.path(),
            false,
            &selected,
            Some(feed),
            |_| {},
        )
        .unwrap();
        ready_rx.blocking_recv().expect("told when logical/ begins");
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        let at = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(at("msg_stores/vhosts/V") < at("logical"));
        assert!(at("logical") < at("logical/V") && at("logical/V") < at("logical/V/Q"));
        assert!(at("logical/V/Q/000000.rblr") < at("logical/V/Q/000001.rblr"));
        assert!(at("logical/V/Q/000001.rblr") < at("logical/V/R/000000.rblr"));
        assert_eq!(names.iter().filter(|n| *n == "logical/V").count(), 1);
        let file = written
            .files
            .iter()
            .find(|f| f.path == "logical/V/R/000000.rblr")
            .unwrap();
        assert_eq!(file.sha256, hex::encode(Sha256::digest(b"three")));
        assert!(written.dirs.iter().any(|d| d.path == "logical/V/R"));
    }
}
