//! Unpacks a snapshot's stream into a staging directory, accepting only what
//! the manifest lists: plain files and directories at checked paths, each
//! file with the size and SHA-256 the manifest records.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::manifest::{FileEntry, Manifest};
use super::paths::{DEFINITIONS, check_archive_path};
use crate::error::integrity;

/// Counts the bytes that pass through a reader.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Unpacks the compressed stream `stored` into `dest` (or, without a
/// destination, only checks it) and returns the bytes of `definitions.json`.
/// `dest` must exist and be empty. Any deviation from the manifest is an
/// integrity error; `dest` may then hold partial data and
/// is the caller's to remove.
pub fn unpack(
    stored: impl Read,
    manifest: &Manifest,
    dest: Option<&Path>,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<Vec<u8>> {
    let decoder = zstd::stream::read::Decoder::new(stored)
        .map_err(|e| integrity(format!("cannot start decompressing: {e}")))?;
    let mut counting = Counting {
        inner: decoder,
        count: 0,
    };
    let expected_files: HashMap<&str, &FileEntry> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    let expected_dirs: HashSet<&str> = manifest.dirs.iter().map(|d| d.path.as_str()).collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut definitions = None;
    // One copy buffer for every file: stores hold thousands of small ones.
    let mut buf = vec![0u8; 1 << 20];

    {
        let mut archive = tar::Archive::new(&mut counting);
        let entries = archive
            .entries()
            .map_err(|e| integrity(format!("the archive is not a tar stream: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| integrity(format!("the archive is damaged: {e}")))?;
            let raw = entry.path_bytes().into_owned();
            let path = String::from_utf8(raw)
                .map_err(|_| integrity("the archive holds a path that is not UTF-8"))?;
            check_archive_path(&path).map_err(|e| integrity(e.to_string()))?;
            let target = dest.map(|d| d.join(&path));
            if !seen.insert(path.clone()) {
                return Err(integrity(format!("the archive holds {path} twice")));
            }
            match entry.header().entry_type() {
                tar::EntryType::Directory => {
                    if !expected_dirs.is_empty() && !expected_dirs.contains(path.as_str()) {
                        return Err(integrity(format!(
                            "the archive holds directory {path}, which the manifest does not list"
                        )));
                    }
                    if let Some(target) = &target {
                        fs::create_dir_all(target)?;
                    }
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let Some(expected) = expected_files.get(path.as_str()) else {
                        return Err(integrity(format!(
                            "the archive holds file {path}, which the manifest does not list"
                        )));
                    };
                    if entry.size() != expected.size {
                        return Err(integrity(format!(
                            "{path} is {} bytes in the archive but {} in the manifest",
                            entry.size(),
                            expected.size
                        )));
                    }
                    if path == DEFINITIONS {
                        let mut data = Vec::with_capacity(expected.size as usize);
                        entry.read_to_end(&mut data)?;
                        let digest = Sha256::digest(&data);
                        check_digest(&path, &digest, &expected.sha256)?;
                        check_digest(&path, &digest, &manifest.definitions.sha256)?;
                        definitions = Some(data);
                    } else {
                        copy_checked(&mut entry, target.as_deref(), expected, &path, &mut buf)?;
                        progress(expected.size);
                    }
                }
                other => {
                    return Err(integrity(format!(
                        "refusing {path}: the archive may hold only files and directories, not {other:?} entries (links and devices are never part of a snapshot)"
                    )));
                }
            }
        }
    }
    // Whatever follows the tar end must still decompress: it is all verified bytes.
    io::copy(&mut counting, &mut io::sink())
        .map_err(|e| integrity(format!("the archive is damaged: {e}")))?;
    if counting.count != manifest.totals.tar_bytes {
        return Err(integrity(format!(
            "the archive decompresses to {} bytes but the manifest says {}",
            counting.count, manifest.totals.tar_bytes
        )));
    }
    if let Some(missing) = manifest.files.iter().find(|f| !seen.contains(&f.path)) {
        return Err(integrity(format!(
            "the archive lacks {}, which the manifest lists",
            missing.path
        )));
    }
    definitions.ok_or_else(|| integrity("the archive holds no definitions.json"))
}

/// Reads only `definitions.json`, the archive's first entry, and checks it
/// against the manifest. Reads no further than that entry.
pub fn definitions_only(stored: impl Read, manifest: &Manifest) -> anyhow::Result<Vec<u8>> {
    let decoder = zstd::stream::read::Decoder::new(stored)
        .map_err(|e| integrity(format!("cannot start decompressing: {e}")))?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive
        .entries()
        .map_err(|e| integrity(format!("the archive is not a tar stream: {e}")))?;
    let mut entry = entries
        .next()
        .ok_or_else(|| integrity("the archive is empty"))?
        .map_err(|e| integrity(format!("the archive is damaged: {e}")))?;
    if entry.path_bytes().as_ref() != DEFINITIONS.as_bytes()
        || entry.header().entry_type() != tar::EntryType::Regular
    {
        return Err(integrity(
            "the archive does not start with definitions.json",
        ));
    }
    let mut data = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut data)?;
    check_digest(
        DEFINITIONS,
        &Sha256::digest(&data),
        &manifest.definitions.sha256,
    )?;
    Ok(data)
}

fn check_digest(path: &str, digest: &[u8], expected: &str) -> anyhow::Result<()> {
    let actual = hex::encode(digest);
    if actual != expected {
        return Err(integrity(format!(
            "{path} has SHA-256 {actual} but the manifest records {expected}"
        )));
    }
    Ok(())
}

/// Streams one entry into `target` (if any), checking its digest.
fn copy_checked(
    entry: &mut impl Read,
    target: Option<&Path>,
    expected: &FileEntry,
    path: &str,
    buf: &mut [u8],
) -> anyhow::Result<()> {
    let mut out = match target {
        Some(target) => {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            let file = File::options()
                .write(true)
                .create_new(true)
                .open(target)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", target.display()))?;
            Some(BufWriter::with_capacity(1 << 20, file))
        }
        None => None,
    };
    let mut hasher = Sha256::new();
    loop {
        let n = entry.read(buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(out) = out.as_mut() {
            out.write_all(&buf[..n])?;
        }
    }
    check_digest(path, &hasher.finalize(), &expected.sha256)?;
    if let Some(out) = out {
        let file = out.into_inner().map_err(|e| e.into_error())?;
        // Permission bits only: never set-id bits from an archive.
        file.set_permissions(fs::Permissions::from_mode(expected.mode & 0o777))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::chunker::{ChunkOptions, ChunkWriter};
    use crate::archive::manifest::{Totals, tests::sample};
    use crate::archive::writer::write_archive;
    use crate::error::{Kind, kind_of};

    /// Builds a real archive of a small store; returns (stored bytes, manifest).
    fn build() -> (Vec<u8>, Manifest) {
        let src = tempfile::tempdir().unwrap();
        let vh = src.path().join("msg_stores/vhosts/V/queues/Q");
        fs::create_dir_all(&vh).unwrap();
        fs::write(vh.join("0.idx"), vec![3u8; 70_000]).unwrap();
        let defs = br#"{"queues":[]}"#;
        let mut stored = Vec::new();
        let options = ChunkOptions {
            chunk_size: 8192,
            level: 3,
            workers: 0,
        };
        let sink = ChunkWriter::new(options, |c| {
            stored.extend_from_slice(&c.data);
            Ok(())
        });
        let selected = ["msg_stores/vhosts/V".to_string()].into();
        let (sink, written) =
            write_archive(sink, defs, src.path(), false, &selected, |_| {}).unwrap();
        let tar_bytes = sink.finish().unwrap();
        let mut m = sample();
        m.definitions.sha256 = hex::encode(Sha256::digest(defs));
        m.files = written.files;
        m.dirs = written.dirs;
        m.totals = Totals {
            tar_bytes,
            ..Default::default()
        };
        (stored, m)
    }

    #[test]
    fn round_trip() {
        let (stored, m) = build();
        let dest = tempfile::tempdir().unwrap();
        let defs = unpack(&stored[..], &m, Some(dest.path()), |_| {}).unwrap();
        assert_eq!(defs, br#"{"queues":[]}"#);
        let idx = fs::read(dest.path().join("msg_stores/vhosts/V/queues/Q/0.idx")).unwrap();
        assert_eq!(idx, vec![3u8; 70_000]);
    }

    #[test]
    fn definitions_alone() {
        let (stored, m) = build();
        assert_eq!(
            definitions_only(&stored[..], &m).unwrap(),
            br#"{"queues":[]}"#
        );
        let mut wrong = m.clone();
        wrong.definitions.sha256 = "1".repeat(64);
        assert!(definitions_only(&stored[..], &wrong).is_err());
    }

    #[test]
    fn a_wrong_file_digest_is_refused() {
        let (stored, mut m) = build();
        let f = m
            .files
            .iter_mut()
            .find(|f| f.path.ends_with("0.idx"))
            .unwrap();
        f.sha256 = "0".repeat(64);
        let dest = tempfile::tempdir().unwrap();
        let err = unpack(&stored[..], &m, Some(dest.path()), |_| {}).unwrap_err();
        assert_eq!(kind_of(&err), Kind::Integrity);
        assert!(err.to_string().contains("0.idx"), "{err}");
    }

    #[test]
    fn an_unlisted_file_is_refused() {
        let (stored, mut m) = build();
        m.files.retain(|f| !f.path.ends_with("0.idx"));
        let dest = tempfile::tempdir().unwrap();
        let err = unpack(&stored[..], &m, Some(dest.path()), |_| {}).unwrap_err();
        assert!(err.to_string().contains("does not list"), "{err}");
    }

    #[test]
    fn a_missing_file_is_refused() {
        let (stored, mut m) = build();
        let mut extra = m.files[1].clone();
        extra.path = "msg_stores/vhosts/V/extra".into();
        m.files.push(extra);
        let dest = tempfile::tempdir().unwrap();
        let err = unpack(&stored[..], &m, Some(dest.path()), |_| {}).unwrap_err();
        assert!(
            err.to_string().contains("lacks msg_stores/vhosts/V/extra"),
            "{err}"
        );
    }

    fn hostile_archive(kind: tar::EntryType, path: &str, link: Option<&str>) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(0);
        header.set_mode(0o644);
        if let Some(link) = link {
            header.set_link_name(link).unwrap();
        }
        // Write the raw name so the tar crate's own checks do not stop us.
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, io::empty()).unwrap();
        let tar = builder.into_inner().unwrap();
        zstd::encode_all(&tar[..], 3).unwrap()
    }

    #[test]
    fn links_devices_and_escapes_are_refused_before_writing() {
        let cases = [
            (tar::EntryType::Symlink, "msg_stores/link", Some("/etc")),
            (tar::EntryType::Link, "msg_stores/hard", Some("/etc/passwd")),
            (tar::EntryType::Char, "msg_stores/dev", None),
            (tar::EntryType::Regular, "../escape", None),
            (tar::EntryType::Regular, "/abs", None),
        ];
        for (kind, path, link) in cases {
            let stored = hostile_archive(kind, path, link);
            let dest = tempfile::tempdir().unwrap();
            let inner = dest.path().join("stage");
            fs::create_dir(&inner).unwrap();
            let err = unpack(&stored[..], &sample(), Some(&inner), |_| {}).unwrap_err();
            assert_eq!(kind_of(&err), Kind::Integrity, "{path}: {err}");
            let leftover: Vec<_> = fs::read_dir(dest.path()).unwrap().collect();
            assert_eq!(
                leftover.len(),
                1,
                "{path}: nothing written beside the staging dir"
            );
            assert_eq!(
                fs::read_dir(&inner).unwrap().count(),
                0,
                "{path}: nothing written"
            );
        }
    }
}
