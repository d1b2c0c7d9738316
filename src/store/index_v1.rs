//! The version-1 queue index (`rabbit_queue_index`, default up to 3.13):
//! `journal.jif` plus segment files `N.idx`, replayed to the entries that
//! are published and not acknowledged.
//!
//! Segment `N.idx` covers sequence ids `N*C .. (N+1)*C` (C from the vhost's
//! `.config`). Its records: a publish `<<1:1, Persistent:1, RelSeq:14,
//! MsgId:16/binary, Expiry:64, Size:32, EmbeddedSize:32, Embedded/binary>>`
//! (a small message's `#basic_message{}` term embedded), or `<<0:1, 1:1,
//! RelSeq:14>>`: the first for a sequence id marks it delivered, the second
//! acknowledged. The journal holds the same actions with full sequence
//! ids (`<<Prefix:2, SeqId:62, ...>>`: 00/01 publish persistent/transient,
//! 10 deliver, 11 acknowledge) not yet written to segments; a crash can
//! leave an action in both, so the state of a message is the union of
//! both (as `journal_minus_segment` and `segment_plus_journal` compute).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::StoreError;
use super::queue::{Body, IndexEntry};

/// Distinct sequence ids a journal may hold (RabbitMQ flushes it at
/// `queue_index_max_journal_entries`, 32768 by default).
pub const MAX_JOURNAL_ENTRIES: usize = 1 << 20;

const PUB_BODY: usize = 16 + 8 + 4;

#[derive(Debug, Clone)]
struct Pub {
    persistent: bool,
    msg_id: [u8; 16],
    expiry: u64,
    /// Where an embedded message's term is: (offset, length) in the file.
    embedded: Option<(u64, u32)>,
}

#[derive(Debug, Clone, Default)]
struct State {
    published: Option<Pub>,
    /// The file `published` came from (`None`: the journal).
    from_segment: bool,
    delivered: bool,
    acked: bool,
}

/// A queue directory's version-1 index, read segment by segment.
pub struct V1Index {
    dir: String,
    entry_count: u64,
    journal: BTreeMap<u64, State>,
    segments: Vec<u64>,
    next: usize,
    /// Bytes ignored at the end of files, as RabbitMQ ignores them.
    pub warnings: Vec<String>,
}

fn u64_at(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

/// A buffered reader that counts its position and reads exactly or not at all.
struct Cursor {
    inner: BufReader<File>,
    pos: u64,
    len: u64,
}

impl Cursor {
    fn open(root: &Path, rel: &str) -> Result<Cursor, StoreError> {
        let file = File::open(root.join(rel)).map_err(|e| StoreError::io(rel, e))?;
        let len = file.metadata().map_err(|e| StoreError::io(rel, e))?.len();
        Ok(Cursor {
            inner: BufReader::with_capacity(1 << 16, file),
            pos: 0,
            len,
        })
    }

    fn left(&self) -> u64 {
        self.len - self.pos
    }

    /// Fills `buf` if that many bytes are left; `false` (nothing read) if not.
    fn read(&mut self, buf: &mut [u8], rel: &str) -> Result<bool, StoreError> {
        if (buf.len() as u64) > self.left() {
            return Ok(false);
        }
        self.inner
            .read_exact(buf)
            .map_err(|e| StoreError::io(rel, e))?;
        self.pos += buf.len() as u64;
        Ok(true)
    }

    fn skip(&mut self, n: u64, rel: &str) -> Result<(), StoreError> {
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())
            .map_err(|e| StoreError::io(rel, e))?;
        self.pos += copied;
        Ok(())
    }
}

impl V1Index {
    /// Reads the journal and lists the segments of the index in `dir`.
    pub fn open(
        root: &Path,
        dir: &str,
        entry_count: u32,
        idx_files: &[u64],
    ) -> Result<V1Index, StoreError> {
        let mut index = V1Index {
            dir: dir.to_string(),
            entry_count: u64::from(entry_count),
            journal: BTreeMap::new(),
            segments: Vec::new(),
            next: 0,
            warnings: Vec::new(),
        };
        let journal = format!("{dir}/journal.jif");
        if root.join(&journal).exists() {
            index.load_journal(root, &journal)?;
        }
        let mut segments: Vec<u64> = idx_files.to_vec();
        segments.extend(index.journal.keys().map(|s| s / index.entry_count));
        segments.sort_unstable();
        segments.dedup();
        index.segments = segments;
        Ok(index)
    }

    fn load_journal(&mut self, root: &Path, rel: &str) -> Result<(), StoreError> {
        let mut c = Cursor::open(root, rel)?;
        let mut head = [0u8; 8];
        loop {
            let at = c.pos;
            if !c.read(&mut head, rel)? {
                if c.left() > 0 {
                    self.warnings.push(format!(
                        "{rel}: the last {} bytes (from offset {at}) are not a whole entry; ignored, as RabbitMQ ignores them",
                        c.left()
                    ));
                }
                return Ok(());
            }
            let prefix = head[0] >> 6;
            let seq = u64_at(&head) & ((1 << 62) - 1);
            let action = match prefix {
                0b10 => Action::Deliver,
                0b11 => Action::Ack,
                _ => {
                    let mut body = [0u8; PUB_BODY + 4];
                    if !c.read(&mut body, rel)? {
                        let left = c.left() + 8;
                        self.warnings.push(format!(
                            "{rel}: the last {left} bytes (from offset {at}) are not a whole entry; ignored, as RabbitMQ ignores them"
                        ));
                        return Ok(());
                    }
                    if prefix == 0 && seq == 0 && body.iter().all(|&b| b == 0) {
                        // Zeroes left by a dirty shutdown end the journal for RabbitMQ too.
                        let left = c.left() + 8 + body.len() as u64;
                        self.warnings.push(format!(
                            "{rel}: zeroes from offset {at} ({left} bytes) end the journal, as RabbitMQ reads it"
                        ));
                        return Ok(());
                    }
                    let size = u64::from(u32_at(&body[PUB_BODY..]));
                    if size > c.left() {
                        let left = c.left() + 8 + body.len() as u64;
                        self.warnings.push(format!(
                            "{rel}: the last {left} bytes (from offset {at}) are not a whole entry; ignored, as RabbitMQ ignores them"
                        ));
                        return Ok(());
                    }
                    let embedded = (size > 0).then_some((c.pos, size as u32));
                    c.skip(size, rel)?;
                    Action::Publish(Pub {
                        persistent: prefix == 0,
                        msg_id: body[..16].try_into().expect("16 bytes"),
                        expiry: u64_at(&body[16..]),
                        embedded,
                    })
                }
            };
            let full = self.journal.len() >= MAX_JOURNAL_ENTRIES;
            let state = match self.journal.get_mut(&seq) {
                Some(s) => s,
                None if full => {
                    return Err(StoreError::at(
                        rel,
                        at,
                        format!(
                            "the journal holds more than {MAX_JOURNAL_ENTRIES} messages; RabbitMQ flushes it at queue_index_max_journal_entries (32768 by default)"
                        ),
                    ));
                }
                None => self.journal.entry(seq).or_default(),
            };
            apply(state, action)
                .map_err(|p| StoreError::at(rel, at, format!("sequence id {seq}: {p}")))?;
        }
    }

    /// The live entries of the next segment, in sequence order; `None`
    /// after the last segment.
    pub fn next_segment(&mut self, root: &Path) -> Result<Option<Vec<IndexEntry>>, StoreError> {
        let Some(&seg) = self.segments.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        let count = self.entry_count as usize;
        let mut states: Vec<State> = vec![State::default(); count];
        let file = format!("{}/{seg}.idx", self.dir);
        if root.join(&file).exists() {
            self.load_segment(root, &file, &mut states)?;
        }
        let first = seg * self.entry_count;
        for (seq, j) in self.journal.range(first..first + self.entry_count) {
            let s = &mut states[(seq - first) as usize];
            if s.published.is_none() {
                s.published = j.published.clone();
                s.from_segment = false;
            }
            s.delivered |= j.delivered;
            s.acked |= j.acked;
        }
        let journal = format!("{}/journal.jif", self.dir);
        let mut out = Vec::new();
        for (rel, s) in states.into_iter().enumerate() {
            let (Some(p), false) = (s.published, s.acked) else {
                continue;
            };
            let source = if s.from_segment { &file } else { &journal };
            out.push(IndexEntry {
                seq_id: first + rel as u64,
                persistent: p.persistent,
                delivered: s.delivered,
                expiry_ms: (p.expiry != 0).then_some(p.expiry),
                body: match p.embedded {
                    Some((offset, len)) => Body::Embedded {
                        file: source.clone(),
                        offset,
                        len,
                    },
                    None => Body::Shared(p.msg_id),
                },
            });
        }
        Ok(Some(out))
    }

    fn load_segment(
        &mut self,
        root: &Path,
        rel: &str,
        states: &mut [State],
    ) -> Result<(), StoreError> {
        let mut c = Cursor::open(root, rel)?;
        let mut head = [0u8; 2];
        loop {
            let at = c.pos;
            if !c.read(&mut head, rel)? {
                if c.left() > 0 {
                    self.warnings.push(format!(
                        "{rel}: the last byte (offset {at}) is not a whole entry; ignored"
                    ));
                }
                return Ok(());
            }
            let rel_seq = usize::from(u16::from_be_bytes(head) & 0x3fff);
            let Some(state) = states.get_mut(rel_seq) else {
                return Err(StoreError::at(
                    rel,
                    at,
                    format!(
                        "relative sequence id {rel_seq} is beyond the segment's {} entries",
                        states.len()
                    ),
                ));
            };
            let action = if head[0] & 0x80 != 0 {
                let mut body = [0u8; PUB_BODY + 4];
                let size = if c.read(&mut body, rel)? {
                    u64::from(u32_at(&body[PUB_BODY..]))
                } else {
                    u64::MAX
                };
                if size > c.left() {
                    self.warnings.push(format!(
                        "{rel}: the last {} bytes (from offset {at}) are not a whole entry; ignored",
                        c.len - at
                    ));
                    return Ok(());
                }
                let embedded = (size > 0).then_some((c.pos, size as u32));
                c.skip(size, rel)?;
                Action::Publish(Pub {
                    persistent: head[0] & 0x40 != 0,
                    msg_id: body[..16].try_into().expect("16 bytes"),
                    expiry: u64_at(&body[16..]),
                    embedded,
                })
            } else if head[0] & 0x40 != 0 {
                if state.published.is_none() {
                    return Err(StoreError::at(
                        rel,
                        at,
                        format!(
                            "relative sequence id {rel_seq} is delivered or acknowledged before it is published"
                        ),
                    ));
                }
                if state.delivered {
                    Action::Ack
                } else {
                    Action::Deliver
                }
            } else {
                return Err(StoreError::at(
                    rel,
                    at,
                    format!("unknown entry type (first byte {:#04x})", head[0]),
                ));
            };
            if let Action::Publish(p) = action {
                // A second publish replaces the first, as RabbitMQ's array:set does.
                *state = State {
                    published: Some(p),
                    from_segment: true,
                    delivered: false,
                    acked: false,
                };
            } else {
                apply(state, action).map_err(|p| {
                    StoreError::at(rel, at, format!("relative sequence id {rel_seq}: {p}"))
                })?;
            }
        }
    }
}

enum Action {
    Publish(Pub),
    Deliver,
    Ack,
}

/// One action on a message's state; the transitions RabbitMQ's
/// `action_to_entry` allows (a delivery or acknowledgement may refer to a
/// publish recorded elsewhere).
fn apply(state: &mut State, action: Action) -> Result<(), String> {
    match action {
        Action::Publish(p) => {
            if state.published.is_some() || state.delivered || state.acked {
                return Err("published again".into());
            }
            state.published = Some(p);
        }
        Action::Deliver => {
            if state.delivered || state.acked {
                return Err("delivered again".into());
            }
            state.delivered = true;
        }
        Action::Ack => {
            if state.acked {
                return Err("acknowledged again".into());
            }
            state.acked = true;
        }
    }
    Ok(())
}
