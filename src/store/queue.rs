//! A queue's messages in delivery order: levels highest priority first,
//! each level's index entries by sequence id (a restarted broker makes
//! every unacknowledged message ready again in that order).

use std::collections::VecDeque;
use std::path::Path;

use super::index_v1::V1Index;
use super::index_v2::V2Index;
use super::layout::{QueueDirs, QueueLevel};
use super::{StoreError, VhostReader};
use crate::message::{Message, StoreFacts};

/// Where an index entry's message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Embedded in a version-1 index file: the term's offset and length.
    Embedded {
        /// The `N.idx` or `journal.jif`, relative to the root.
        file: String,
        /// Offset of the term.
        offset: u64,
        /// Its length.
        len: u32,
    },
    /// In the vhost's shared store, by message id.
    Shared([u8; 16]),
    /// In the queue's own store (`N.qs`, version 2).
    QueueStore {
        /// The `N.qs`, relative to the root.
        file: String,
        /// Offset of the entry.
        offset: u64,
        /// Size of the term (padded).
        size: u32,
    },
}

/// One live index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Sequence id (order within the level).
    pub seq_id: u64,
    /// Published persistent.
    pub persistent: bool,
    /// Marked delivered (version 1 only).
    pub delivered: bool,
    /// Expiry time in ms since the epoch.
    pub expiry_ms: Option<u64>,
    /// Where the message is.
    pub body: Body,
}

/// A queue's message with what the store says about it.
#[derive(Debug, Clone)]
pub struct QueueItem {
    /// 0-based position in delivery order.
    pub position: u64,
    /// The message.
    pub message: Message,
    /// What the store records besides it.
    pub facts: StoreFacts,
    /// Anything about it the message does not show (e.g. annotations).
    pub notes: Vec<String>,
}

/// What reading a queue found besides its messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSummary {
    /// Messages yielded.
    pub messages: u64,
    /// Transient messages in the index: the broker discards them at boot.
    pub transient_skipped: u64,
    /// Persistent messages the broker would drop at recovery, and why.
    pub dropped: Vec<String>,
    /// Damage tolerated as RabbitMQ tolerates it (e.g. a torn last entry).
    pub warnings: Vec<String>,
}

/// The segment files of one index directory.
#[derive(Debug, Default)]
pub struct IndexFiles {
    pub journal: bool,
    pub idx: Vec<u64>,
    pub qi: Vec<u64>,
    /// Every index file and its size, for sizing the location table.
    pub bytes: u64,
}

/// Lists the index files of a level's directory.
pub fn index_files(root: &Path, dir: &str) -> Result<IndexFiles, StoreError> {
    let mut out = IndexFiles::default();
    let entries = std::fs::read_dir(root.join(dir)).map_err(|e| StoreError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let number = |ext: &str| {
            name.strip_suffix(ext)
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u64>().ok())
        };
        let size = || entry.metadata().map(|m| m.len()).unwrap_or(0);
        if name == "journal.jif" {
            out.journal = true;
            out.bytes += size();
        } else if let Some(n) = number(".idx") {
            out.idx.push(n);
            out.bytes += size();
        } else if let Some(n) = number(".qi") {
            out.qi.push(n);
            out.bytes += size();
        }
    }
    out.idx.sort_unstable();
    out.qi.sort_unstable();
    Ok(out)
}

/// One level's index entries, versions 1 and 2 merged by sequence id (a
/// queue caught converting between them has both; the version-2 entry
/// wins, as the conversion skips ids the target already holds).
pub struct LevelEntries {
    v1: Option<V1Index>,
    v2: Option<V2Index>,
    a: VecDeque<IndexEntry>,
    b: VecDeque<IndexEntry>,
}

impl LevelEntries {
    /// Opens the indexes of `level`.
    pub fn open(
        root: &Path,
        level: &QueueLevel,
        segment_entry_count: u32,
    ) -> Result<LevelEntries, StoreError> {
        let files = index_files(root, &level.dir)?;
        let v1 = if files.journal || !files.idx.is_empty() {
            Some(V1Index::open(
                root,
                &level.dir,
                segment_entry_count,
                &files.idx,
            )?)
        } else {
            None
        };
        let v2 = (!files.qi.is_empty()).then(|| V2Index::open(&level.dir, &files.qi));
        Ok(LevelEntries {
            v1,
            v2,
            a: VecDeque::new(),
            b: VecDeque::new(),
        })
    }

    fn fill(&mut self, root: &Path) -> Result<(), StoreError> {
        while self.a.is_empty() {
            match self
                .v1
                .as_mut()
                .map(|v| v.next_segment(root))
                .transpose()?
                .flatten()
            {
                Some(seg) => self.a.extend(seg),
                None => break,
            }
        }
        while self.b.is_empty() {
            match self
                .v2
                .as_mut()
                .map(|v| v.next_segment(root))
                .transpose()?
                .flatten()
            {
                Some(seg) => self.b.extend(seg),
                None => break,
            }
        }
        Ok(())
    }

    /// The next entry in sequence order.
    pub fn next(&mut self, root: &Path) -> Result<Option<IndexEntry>, StoreError> {
        self.fill(root)?;
        Ok(match (self.a.front(), self.b.front()) {
            (Some(x), Some(y)) if x.seq_id < y.seq_id => self.a.pop_front(),
            (Some(x), Some(y)) if x.seq_id == y.seq_id => {
                self.a.pop_front();
                self.b.pop_front()
            }
            (_, Some(_)) => self.b.pop_front(),
            (Some(_), None) => self.a.pop_front(),
            (None, None) => None,
        })
    }

    /// Moves the indexes' findings into `summary`.
    pub fn report(&mut self, summary: &mut QueueSummary) {
        if let Some(v1) = &mut self.v1 {
            summary.warnings.append(&mut v1.warnings);
        }
        if let Some(v2) = &mut self.v2 {
            summary.warnings.append(&mut v2.warnings);
            summary.dropped.append(&mut v2.dropped);
        }
    }
}

/// Iterates a queue's messages; see [`VhostReader::queue`].
pub struct QueueMessages<'r> {
    reader: &'r VhostReader,
    levels: VecDeque<QueueLevel>,
    current: Option<(Option<u8>, LevelEntries)>,
    position: u64,
    summary: QueueSummary,
    done: bool,
}

impl<'r> QueueMessages<'r> {
    pub(super) fn new(reader: &'r VhostReader, queue: &QueueDirs) -> QueueMessages<'r> {
        QueueMessages {
            reader,
            levels: queue.levels.iter().cloned().collect(),
            current: None,
            position: 0,
            summary: QueueSummary::default(),
            done: false,
        }
    }

    /// What was found so far besides the messages (complete once the
    /// iterator has returned `None`).
    pub fn summary(&self) -> &QueueSummary {
        &self.summary
    }

    fn step(&mut self) -> Result<Option<QueueItem>, StoreError> {
        let root = self.reader.root();
        loop {
            if self.current.is_none() {
                let Some(level) = self.levels.pop_front() else {
                    return Ok(None);
                };
                self.reader.check_level(&level)?;
                let entries = LevelEntries::open(root, &level, self.reader.segment_entry_count())?;
                self.current = Some((level.priority, entries));
            }
            let (priority, entries) = self.current.as_mut().expect("set above");
            let priority = *priority;
            let Some(entry) = entries.next(root)? else {
                entries.report(&mut self.summary);
                self.current = None;
                continue;
            };
            if !entry.persistent {
                self.summary.transient_skipped += 1;
                continue;
            }
            let Some((message, notes)) = self.reader.load(&entry)? else {
                self.summary.dropped.push(format!(
                    "sequence id {} (priority level {}): its message is not in the shared store (RabbitMQ drops it at recovery)",
                    entry.seq_id,
                    priority.map_or("-".to_string(), |p| p.to_string())
                ));
                continue;
            };
            let item = QueueItem {
                position: self.position,
                message,
                facts: StoreFacts {
                    seq_id: entry.seq_id,
                    persistent: entry.persistent,
                    delivered: entry.delivered,
                    priority_level: priority,
                    expires_at_ms: entry.expiry_ms,
                },
                notes,
            };
            self.position += 1;
            self.summary.messages += 1;
            return Ok(Some(item));
        }
    }
}

impl Iterator for QueueMessages<'_> {
    type Item = Result<QueueItem, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                // One error ends the queue: what follows cannot be trusted to be in order.
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
