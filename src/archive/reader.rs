//! Unpacks a snapshot's stream into a staging directory, accepting only what
//! the manifest lists: plain files and directories at checked paths, each
//! file with the size and SHA-256 the manifest records.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::digests::Digests;
use super::frames::ParallelDecoder;
use super::manifest::{FileEntry, Manifest};
use super::paths::{DEFINITIONS, check_archive_path};
use crate::error::integrity;
use crate::output::count;

/// The most `definitions.json` may hold, whatever a manifest or a tar header
/// says: it is read into memory (the definitions of 100 000 queues take
/// about 40 MiB).
pub const MAX_DEFINITIONS_BYTES: u64 = 512 << 20;

/// The most a GNU long-name entry may hold: paths in a snapshot are short,
/// and the tar crate would read any size into memory.
const MAX_LONG_NAME: u64 = 4096;

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
    stored: impl Read + Send + 'static,
    manifest: &Manifest,
    dest: Option<&Path>,
    progress: impl FnMut(u64),
) -> anyhow::Result<Vec<u8>> {
    unpack_selected(stored, manifest, dest, |_| true, progress)
}

/// [`unpack`], writing only the files and directories `keep` accepts (every
/// file is still checked against the manifest).
pub fn unpack_selected(
    stored: impl Read + Send + 'static,
    manifest: &Manifest,
    dest: Option<&Path>,
    keep: impl Fn(&str) -> bool,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<Vec<u8>> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let decoder = ParallelDecoder::new(stored, workers);
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
    // File digests are computed on other threads; checked once all is read.
    let mut digests = Digests::new(workers);
    let mut checks: Vec<(String, &str)> = Vec::new();
    let mut long_name: Option<Vec<u8>> = None;

    {
        let mut archive = tar::Archive::new(&mut counting);
        let entries = archive
            .entries()
            .map_err(|e| integrity(format!("the archive is not a tar stream: {e}")))?
            // Extension entries come to us, so that their sizes are checked
            // before anything is read into memory.
            .raw(true);
        for entry in entries {
            let mut entry = entry.map_err(|e| integrity(format!("the archive is damaged: {e}")))?;
            if entry.header().entry_type() == tar::EntryType::GNULongName {
                if long_name.is_some() {
                    return Err(integrity("the archive holds two long names for one entry"));
                }
                let size = entry.size();
                long_name = Some(read_long_name(&mut entry, size)?);
                continue;
            }
            let raw = match long_name.take() {
                Some(name) => name,
                None => entry.path_bytes().into_owned(),
            };
            let path = String::from_utf8(raw)
                .map_err(|_| integrity("the archive holds a path that is not UTF-8"))?;
            check_archive_path(&path).map_err(|e| integrity(e.to_string()))?;
            let target = dest.filter(|_| keep(&path)).map(|d| d.join(&path));
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
                            "{path} is {} in the archive but {} in the manifest",
                            count(entry.size(), "byte"),
                            expected.size
                        )));
                    }
                    if path == DEFINITIONS {
                        let data = read_definitions(&mut entry, expected.size)?;
                        let digest = Sha256::digest(&data);
                        check_digest(&path, &digest, &expected.sha256)?;
                        check_digest(&path, &digest, &manifest.definitions.sha256)?;
                        definitions = Some(data);
                    } else {
                        let id = checks.len();
                        copy_out(&mut entry, target.as_deref(), expected, &mut digests, id)?;
                        checks.push((path, &expected.sha256));
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
    if long_name.is_some() {
        return Err(integrity(
            "the archive ends with a long name that names no entry",
        ));
    }
    // Whatever follows the tar end must still decompress: it is all verified bytes.
    io::copy(&mut counting, &mut io::sink())
        .map_err(|e| integrity(format!("the archive is damaged: {e}")))?;
    if counting.count != manifest.totals.tar_bytes {
        return Err(integrity(format!(
            "the archive decompresses to {} but the manifest says {}",
            count(counting.count, "byte"),
            manifest.totals.tar_bytes
        )));
    }
    let computed = digests.finish()?;
    for (id, (path, expected)) in checks.iter().enumerate() {
        let digest = computed
            .get(&id)
            .ok_or_else(|| anyhow::anyhow!("no digest was computed for {path}"))?;
        check_digest(path, digest, expected)?;
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
    // Raw: an extension entry (long name, PAX) first is refused unread.
    let mut entries = archive
        .entries()
        .map_err(|e| integrity(format!("the archive is not a tar stream: {e}")))?
        .raw(true);
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
    // The header's size is the archive's word; the manifest's is checked
    // first, and neither may pass the cap.
    let recorded = manifest
        .files
        .iter()
        .find(|f| f.path == DEFINITIONS)
        .ok_or_else(|| integrity("the manifest does not list definitions.json"))?;
    if entry.size() != recorded.size {
        return Err(integrity(format!(
            "{DEFINITIONS} is {} in the archive but {} in the manifest",
            count(entry.size(), "byte"),
            recorded.size
        )));
    }
    let data = read_definitions(&mut entry, recorded.size)?;
    check_digest(
        DEFINITIONS,
        &Sha256::digest(&data),
        &manifest.definitions.sha256,
    )?;
    Ok(data)
}

/// Reads `definitions.json` (`size` bytes, as the manifest records) into
/// memory: refused above [`MAX_DEFINITIONS_BYTES`], and the buffer grows
/// with the bytes that really arrive, never to a size a header claims.
fn read_definitions(entry: &mut impl Read, size: u64) -> anyhow::Result<Vec<u8>> {
    if size > MAX_DEFINITIONS_BYTES {
        return Err(integrity(format!(
            "{DEFINITIONS} is said to hold {}, more than the {} any snapshot's definitions may: refusing the archive",
            count(size, "byte"),
            crate::output::bytes(MAX_DEFINITIONS_BYTES)
        )));
    }
    read_exactly(entry, size, DEFINITIONS)
}

/// A GNU long-name entry's path (without its trailing NUL), bounded.
fn read_long_name(entry: &mut impl Read, size: u64) -> anyhow::Result<Vec<u8>> {
    if size > MAX_LONG_NAME {
        return Err(integrity(format!(
            "the archive holds a long name of {}: no path in a snapshot is longer than {MAX_LONG_NAME} bytes",
            count(size, "byte")
        )));
    }
    let mut name = read_exactly(entry, size, "a long name")?;
    if name.last() == Some(&0) {
        name.pop();
    }
    Ok(name)
}

/// Exactly `size` bytes of `entry`; fewer is damage. The caller has bounded `size`.
fn read_exactly(entry: &mut impl Read, size: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(size.min(1 << 20) as usize);
    entry
        .take(size)
        .read_to_end(&mut data)
        .map_err(|e| integrity(format!("the archive is damaged while reading {what}: {e}")))?;
    if data.len() as u64 != size {
        return Err(integrity(format!(
            "the archive ends inside {what}: {} of {} read",
            data.len(),
            count(size, "byte")
        )));
    }
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

/// Streams one entry into `target` (if any), its bytes to the digest of
/// file `id`.
fn copy_out(
    entry: &mut impl Read,
    target: Option<&Path>,
    expected: &FileEntry,
    digests: &mut Digests,
    id: usize,
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
            Some(file)
        }
        None => None,
    };
    let mut left = expected.size;
    while left > 0 {
        // Owned buffers: each goes on to a hashing thread once written.
        let mut buf = vec![0u8; left.min(COPY_BUFFER) as usize];
        entry.read_exact(&mut buf)?;
        left -= buf.len() as u64;
        if let Some(out) = out.as_mut() {
            out.write_all(&buf)?;
        }
        digests.update(id, buf);
    }
    digests.end(id);
    if let Some(out) = out {
        // Permission bits only: never set-id bits from an archive.
        out.set_permissions(fs::Permissions::from_mode(expected.mode & 0o777))?;
        start_writeback(&out);
    }
    Ok(())
}

/// Asks the kernel to start writing a finished file to disk now, without
/// waiting: the restore's closing `syncfs` then finds most bytes already
/// written instead of writing the whole snapshot after the download (the
/// disk works while later chunks download). Durability still comes from
/// that `syncfs`; a failure here only loses the head start.
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor we own; no memory is
    // passed. rustix has no sync_file_range.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc != 0 {
        tracing::debug!("sync_file_range: {}", std::io::Error::last_os_error());
    }
}

/// Bytes read, written and hashed at a time.
const COPY_BUFFER: u64 = 1 << 20;

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
            encrypt_to: None,
        };
        let sink = ChunkWriter::new(options, |c| {
            stored.extend_from_slice(&c.data);
            Ok(())
        });
        let selected =
            [crate::rabbit::datadir::VhostDir::parse("msg_stores/vhosts/V").unwrap()].into();
        let (sink, written) =
            write_archive(sink, defs, src.path(), false, &selected, None, |_| {}).unwrap();
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
        let defs = unpack(
            io::Cursor::new(stored.clone()),
            &m,
            Some(dest.path()),
            |_| {},
        )
        .unwrap();
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
        let err = unpack(
            io::Cursor::new(stored.clone()),
            &m,
            Some(dest.path()),
            |_| {},
        )
        .unwrap_err();
        assert_eq!(kind_of(&err), Kind::Integrity);
        assert!(err.to_string().contains("0.idx"), "{err}");
    }

    #[test]
    fn an_unlisted_file_is_refused() {
        let (stored, mut m) = build();
        m.files.retain(|f| !f.path.ends_with("0.idx"));
        let dest = tempfile::tempdir().unwrap();
        let err = unpack(
            io::Cursor::new(stored.clone()),
            &m,
            Some(dest.path()),
            |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not list"), "{err}");
    }

    #[test]
    fn a_missing_file_is_refused() {
        let (stored, mut m) = build();
        let mut extra = m.files[1].clone();
        extra.path = "msg_stores/vhosts/V/extra".into();
        m.files.push(extra);
        let dest = tempfile::tempdir().unwrap();
        let err = unpack(
            io::Cursor::new(stored.clone()),
            &m,
            Some(dest.path()),
            |_| {},
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("lacks msg_stores/vhosts/V/extra"),
            "{err}"
        );
    }

    #[test]
    fn long_paths_round_trip() {
        let src = tempfile::tempdir().unwrap();
        let long = "Q".repeat(150);
        let dir = src.path().join("msg_stores/vhosts/V/queues").join(&long);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("0.idx"), b"index").unwrap();
        let defs = b"{}";
        let mut stored = Vec::new();
        let sink = ChunkWriter::new(
            ChunkOptions {
                chunk_size: 1 << 20,
                level: 1,
                workers: 0,
                encrypt_to: None,
            },
            |c| {
                stored.extend_from_slice(&c.data);
                Ok(())
            },
        );
        let selected =
            [crate::rabbit::datadir::VhostDir::parse("msg_stores/vhosts/V").unwrap()].into();
        let (sink, written) =
            write_archive(sink, defs, src.path(), false, &selected, None, |_| {}).unwrap();
        let mut m = sample();
        m.definitions.sha256 = hex::encode(Sha256::digest(defs));
        m.files = written.files;
        m.dirs = written.dirs;
        m.totals = Totals {
            tar_bytes: sink.finish().unwrap(),
            ..Default::default()
        };
        let dest = tempfile::tempdir().unwrap();
        unpack(
            std::io::Cursor::new(stored.clone()),
            &m,
            Some(dest.path()),
            |_| {},
        )
        .unwrap();
        let path = format!("msg_stores/vhosts/V/queues/{long}/0.idx");
        assert_eq!(fs::read(dest.path().join(path)).unwrap(), b"index");
    }

    /// A tar stream whose first entry claims `claimed` bytes but carries
    /// `actual` (zeros), compressed.
    fn lying_archive(kind: tar::EntryType, path: &str, claimed: u64, actual: usize) -> Vec<u8> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(0o600);
        header.set_size(claimed);
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        let mut tar = header.as_bytes().to_vec();
        tar.extend(std::iter::repeat_n(0u8, actual));
        zstd::encode_all(&tar[..], 1).unwrap()
    }

    /// A manifest that records `definitions.json` at `size` bytes.
    fn recording(size: u64) -> Manifest {
        let mut m = sample();
        m.files = vec![FileEntry {
            path: DEFINITIONS.into(),
            size,
            sha256: "0".repeat(64),
            mode: 0o600,
        }];
        m
    }

    #[test]
    fn huge_definitions_are_refused_before_any_allocation() {
        // 1 TiB claimed by header and manifest alike: refused by the cap.
        let stored = lying_archive(tar::EntryType::Regular, DEFINITIONS, 1 << 40, 512);
        let m = recording(1 << 40);
        for err in [
            definitions_only(&stored[..], &m).unwrap_err(),
            unpack(std::io::Cursor::new(stored.clone()), &m, None, |_| {}).unwrap_err(),
        ] {
            assert_eq!(kind_of(&err), Kind::Integrity, "{err}");
            assert!(err.to_string().contains("more than"), "{err}");
        }
        // A header that disagrees with the manifest is refused unread.
        let stored = lying_archive(tar::EntryType::Regular, DEFINITIONS, 1 << 40, 512);
        let err = definitions_only(&stored[..], &recording(13)).unwrap_err();
        assert!(err.to_string().contains("in the manifest"), "{err}");
    }

    #[test]
    fn a_long_name_bomb_is_refused_unread() {
        // 64 MiB of zeros as a "path": a few KiB compressed.
        let stored = lying_archive(
            tar::EntryType::GNULongName,
            "././@LongLink",
            64 << 20,
            64 << 20,
        );
        assert!(stored.len() < 64 << 10);
        let err = unpack(
            std::io::Cursor::new(stored.clone()),
            &sample(),
            None,
            |_| {},
        )
        .unwrap_err();
        assert_eq!(kind_of(&err), Kind::Integrity, "{err}");
        // Caught where the 64 MiB name is decompressed, before the tar reader.
        assert!(err.to_string().contains("more than 32 MiB"), "{err}");
        let err = definitions_only(&stored[..], &sample()).unwrap_err();
        assert_eq!(kind_of(&err), Kind::Integrity, "{err}");
    }

    proptest::proptest! {
        /// Whatever sizes a hostile header and manifest claim, reading gives
        /// a clear integrity error: never a panic, never an allocation of
        /// the claimed size.
        #[test]
        fn hostile_sizes_give_clear_errors(
            claimed in proptest::prop_oneof![0u64..4096, 0u64..u64::MAX >> 1, proptest::strategy::Just(u64::MAX >> 1)],
            recorded in proptest::prop_oneof![0u64..4096, 0u64..u64::MAX],
            actual in 0usize..2048,
            long_name in proptest::bool::ANY,
        ) {
            let (kind, path) = if long_name {
                (tar::EntryType::GNULongName, "././@LongLink")
            } else {
                (tar::EntryType::Regular, DEFINITIONS)
            };
            let stored = lying_archive(kind, path, claimed, actual);
            let m = recording(recorded);
            for result in [
                definitions_only(&stored[..], &m),
                unpack(std::io::Cursor::new(stored.clone()), &m, None, |_| {}),
            ] {
                // The digest never matches: every outcome is an error.
                let err = result.unwrap_err();
                proptest::prop_assert_eq!(kind_of(&err), Kind::Integrity, "{}", err);
            }
        }
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
            let err = unpack(
                io::Cursor::new(stored.clone()),
                &sample(),
                Some(&inner),
                |_| {},
            )
            .unwrap_err();
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
