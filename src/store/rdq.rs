//! The shared message store (`rabbit_msg_store`): `msg_store_persistent/
//! N.rdq` files of records `<<Size:64, MsgId:16/binary, Term, 255>>`
//! (Size counts the id and the term).
//!
//! The files carry no index a reader can trust (the broker's own one is
//! valid only after a clean stop), so they are scanned as the broker does
//! after a crash (4.x `scan_file_for_valid_messages`): a record is taken
//! where its size, id and end marker line up and its id is referenced by a
//! queue and not found yet; anywhere else the scan moves on one byte, which
//! steps over compaction leftovers and acknowledged messages.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::content;
use super::layout::{QueueDirs, QueueLevel, VhostDir};
use super::locator::{Location, Locator, MEMORY_LIMIT};
use super::queue::{Body, LevelEntries, QueueMessages, index_files};
use super::{MAX_MESSAGE, StoreError, index_v2};
use crate::message::Message;

/// Bytes read at a time while scanning.
const WINDOW: usize = 4 << 20;
/// The smallest record: size, id, an empty term, marker.
const MIN_RECORD: u64 = 8 + 16 + 1;

struct OpenFile {
    rel: String,
    file: File,
    len: u64,
}

/// One vhost, ready to read its queues.
pub struct VhostReader {
    root: PathBuf,
    vhost: VhostDir,
    locator: Locator,
    /// Index directories that failed while collecting references.
    failed: HashMap<String, StoreError>,
    /// The file read last (messages of a queue mostly sit in the same one).
    open: RefCell<Option<OpenFile>>,
    /// Records found in the shared store.
    pub records: u64,
    /// Bytes of the shared store scanned.
    pub scanned_bytes: u64,
}

impl VhostReader {
    pub(super) fn new(
        root: &Path,
        vhost: &VhostDir,
        work: &Path,
    ) -> Result<VhostReader, StoreError> {
        let mut bound = 0u64;
        let levels: Vec<&QueueLevel> = vhost.queues.iter().flat_map(|q| q.levels.iter()).collect();
        for level in &levels {
            bound += index_files(root, &level.dir)?.bytes;
        }
        // Every referencing entry takes at least 32 bytes of an index file.
        let locator = Locator::new(work, bound / 32 + 1, MEMORY_LIMIT).map_err(|e| {
            StoreError::whole(
                &work.display().to_string(),
                format!("cannot create the location table: {e}"),
            )
        })?;
        let mut reader = VhostReader {
            root: root.to_path_buf(),
            vhost: vhost.clone(),
            locator,
            failed: HashMap::new(),
            open: RefCell::new(None),
            records: 0,
            scanned_bytes: 0,
        };
        for level in levels {
            if let Err(e) = reader.reference(level) {
                reader.failed.insert(level.dir.clone(), e);
            }
        }
        reader.scan()?;
        Ok(reader)
    }

    /// The directory holding `msg_stores`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The vhost.
    pub fn vhost(&self) -> &VhostDir {
        &self.vhost
    }

    pub(super) fn segment_entry_count(&self) -> u32 {
        self.vhost.segment_entry_count
    }

    /// A queue's messages in delivery order.
    pub fn queue(&self, queue: &QueueDirs) -> QueueMessages<'_> {
        QueueMessages::new(self, queue)
    }

    /// The error found in this level's index while collecting references.
    pub(super) fn check_level(&self, level: &QueueLevel) -> Result<(), StoreError> {
        match self.failed.get(&level.dir) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Notes the shared-store messages a level's index refers to (persistent
    /// and unacknowledged, as the broker's `queue_index_walker`).
    fn reference(&mut self, level: &QueueLevel) -> Result<(), StoreError> {
        let mut entries = LevelEntries::open(&self.root, level, self.vhost.segment_entry_count)?;
        while let Some(entry) = entries.next(&self.root)? {
            if let (true, Body::Shared(id)) = (entry.persistent, &entry.body) {
                self.locator.reference(id).map_err(|e| {
                    StoreError::whole(
                        &level.dir,
                        format!("cannot record a message reference: {e}"),
                    )
                })?;
            }
        }
        Ok(())
    }

    fn store_dir(&self) -> String {
        format!("{}/msg_store_persistent", self.vhost.dir)
    }

    fn scan(&mut self) -> Result<(), StoreError> {
        if self.locator.referenced() == 0 {
            return Ok(());
        }
        let dir = self.store_dir();
        let mut numbers = Vec::new();
        let entries = match std::fs::read_dir(self.root.join(&dir)) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
            let name = entry.file_name();
            let n = name
                .to_str()
                .and_then(|n| n.strip_suffix(".rdq"))
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(n) = n {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        let mut buf = Vec::new();
        for n in numbers {
            self.scan_file(n, &mut buf)?;
        }
        Ok(())
    }

    fn scan_file(&mut self, number: u32, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        let rel = format!("{}/{number}.rdq", self.store_dir());
        let file = File::open(self.root.join(&rel)).map_err(|e| StoreError::io(&rel, e))?;
        let len = file.metadata().map_err(|e| StoreError::io(&rel, e))?.len();
        // The window: the file's real size at most, never what it claims.
        let wanted = (len.min(WINDOW as u64)) as usize;
        if buf.len() < wanted {
            buf.resize(wanted, 0);
        }
        self.scanned_bytes += len;
        let (mut start, mut filled) = (0u64, 0usize);
        let mut pos = 0u64;
        while pos + MIN_RECORD <= len {
            if pos < start || pos + 24 > start + filled as u64 {
                let want = (len - pos).min(buf.len() as u64) as usize;
                file.read_exact_at(&mut buf[..want], pos)
                    .map_err(|e| StoreError::io(&rel, e))?;
                (start, filled) = (pos, want);
            }
            let i = (pos - start) as usize;
            let size = u64::from_be_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
            let marker_at = (size >= 16)
                .then(|| size.checked_add(8).and_then(|n| pos.checked_add(n)))
                .flatten()
                .filter(|&m| m < len);
            if let Some(m) = marker_at {
                let marker = if m < start + filled as u64 {
                    buf[(m - start) as usize]
                } else {
                    let mut b = [0u8; 1];
                    file.read_exact_at(&mut b, m)
                        .map_err(|e| StoreError::io(&rel, e))?;
                    b[0]
                };
                let total = size + 9;
                if marker == 255 && total <= u64::from(u32::MAX) {
                    let id: [u8; 16] = buf[i + 8..i + 24].try_into().expect("16 bytes");
                    let at = Location {
                        file: number,
                        offset: pos,
                        total: total as u32,
                    };
                    let placed = self.locator.place(&id, at).map_err(|e| {
                        StoreError::whole(&rel, format!("cannot record a message location: {e}"))
                    })?;
                    if placed {
                        self.records += 1;
                        pos += total;
                        continue;
                    }
                }
            }
            pos += 1;
        }
        Ok(())
    }

    /// The message of an index entry; `None` if it is in the shared store
    /// and the scan did not find it.
    pub(super) fn load(
        &self,
        entry: &super::queue::IndexEntry,
    ) -> Result<Option<(Message, Vec<String>)>, StoreError> {
        // The bytes read, where the term is in them, and its file and offset.
        let (bytes, term, file, offset) = match &entry.body {
            Body::Embedded { file, offset, len } => {
                let data = self.with_file(file, |f| {
                    let end = offset.checked_add(u64::from(*len)).filter(|&e| e <= f.len);
                    if end.is_none() {
                        return Err(StoreError::at(
                            file,
                            *offset,
                            "an embedded message runs past the end of the file",
                        ));
                    }
                    let mut data = vec![0u8; *len as usize];
                    f.file
                        .read_exact_at(&mut data, *offset)
                        .map_err(|e| StoreError::io(file, e))?;
                    Ok(data)
                })?;
                let all = 0..data.len();
                (data, all, file.clone(), *offset)
            }
            Body::QueueStore { file, offset, size } => {
                let data = self.with_file(file, |f| {
                    index_v2::read_queue_store(&f.file, f.len, file, *offset, *size)
                })?;
                let term = 8..data.len();
                (data, term, file.clone(), offset + 8)
            }
            Body::Shared(id) => {
                let Some(at) = self.locator.get(id).map_err(|e| {
                    StoreError::whole(
                        &self.store_dir(),
                        format!("cannot read the location table: {e}"),
                    )
                })?
                else {
                    return Ok(None);
                };
                let rel = format!("{}/{}.rdq", self.store_dir(), at.file);
                let data = self.read_record(&rel, at, id)?;
                // The term lies between the id and the end marker.
                let term = 24..data.len() - 1;
                (data, term, rel, at.offset + 24)
            }
        };
        let bytes = bytes::Bytes::from(bytes).slice(term);
        let (message, extra) = content::decode(&bytes).map_err(|p| {
            StoreError::at(&file, offset, format!("sequence id {}: {p}", entry.seq_id))
        })?;
        Ok(Some((message, extra.notes)))
    }

    /// Runs `read` on the file `rel`, opening it unless it was the last one.
    fn with_file<T>(
        &self,
        rel: &str,
        read: impl FnOnce(&OpenFile) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut open = self.open.borrow_mut();
        if open.as_ref().is_none_or(|o| o.rel != rel) {
            let file = File::open(self.root.join(rel)).map_err(|e| StoreError::io(rel, e))?;
            let len = file.metadata().map_err(|e| StoreError::io(rel, e))?.len();
            if rel.ends_with(".qs") {
                index_v2::check_queue_store(&file, len, rel)?;
            }
            *open = Some(OpenFile {
                rel: rel.to_string(),
                file,
                len,
            });
        }
        read(open.as_ref().expect("opened above"))
    }

    fn read_record(&self, rel: &str, at: Location, id: &[u8; 16]) -> Result<Vec<u8>, StoreError> {
        if u64::from(at.total) > MAX_MESSAGE {
            return Err(StoreError::at(
                rel,
                at.offset,
                format!(
                    "a message of {} bytes is larger than RabbitMQ stores",
                    at.total
                ),
            ));
        }
        self.with_file(rel, |f| {
            let mut data = vec![0u8; at.total as usize];
            f.file
                .read_exact_at(&mut data, at.offset)
                .map_err(|e| StoreError::io(rel, e))?;
            // The scan checked these; the file may have changed since.
            if data[8..24] != id[..] || data[data.len() - 1] != 255 {
                return Err(StoreError::at(
                    rel,
                    at.offset,
                    "the record changed while it was being read",
                ));
            }
            Ok(data)
        })
    }
}
