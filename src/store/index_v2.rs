//! The version-2 queue index (`rabbit_classic_queue_index_v2`, 3.10+,
//! the only one from 4.0) and its per-queue store.
//!
//! `N.qi`: a 64-byte header `<<"RCQI", 2:8, FromSeqId:64, ToSeqId:64,
//! 0...>>`, then one 32-byte entry per sequence id of the segment:
//! `<<Status:8, 0:7, Persistent:1, 0:8, Location:17/binary, Size:32,
//! Expiry:64>>`; status 1 is a message, 0 none or acknowledged. Location:
//! all zeroes (memory only), `<<1, MsgId:16/binary>>` (shared store) or
//! `<<2, Offset:64, Size:32, 0:32>>` (the queue's own `N.qs`).
//!
//! `N.qs`: a 64-byte header `<<"RCQS", 2:8, ...>>`, then at each offset
//! `<<Size:32, 0:7, UseCrc:1, Crc:16, 0:8, Term:Size/binary>>` (the term
//! padded with zeroes to Size; the CRC is the low 16 bits of CRC-32).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::StoreError;
use super::queue::{Body, IndexEntry};

const QI_MAGIC: &[u8; 4] = b"RCQI";
const QS_MAGIC: &[u8; 4] = b"RCQS";
const VERSION: u8 = 2;
const HEADER: u64 = 64;
const ENTRY: usize = 32;
/// Largest segment accepted (RabbitMQ's default is 4096 entries).
const MAX_SEGMENT_ENTRIES: u64 = 1 << 20;

/// A queue directory's version-2 index, read segment by segment.
pub struct V2Index {
    dir: String,
    segments: Vec<u64>,
    next: usize,
    /// Messages the broker drops at recovery, with the reason.
    pub dropped: Vec<String>,
    /// Bytes ignored at the end of files.
    pub warnings: Vec<String>,
}

impl V2Index {
    /// Lists the segments (`qi_files`: the `N` of each `N.qi`).
    pub fn open(dir: &str, qi_files: &[u64]) -> V2Index {
        V2Index {
            dir: dir.to_string(),
            segments: qi_files.to_vec(),
            next: 0,
            dropped: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The live entries of the next segment, in sequence order.
    pub fn next_segment(&mut self, root: &Path) -> Result<Option<Vec<IndexEntry>>, StoreError> {
        let Some(&seg) = self.segments.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        let rel = format!("{}/{seg}.qi", self.dir);
        let mut file = File::open(root.join(&rel)).map_err(|e| StoreError::io(&rel, e))?;
        let len = file.metadata().map_err(|e| StoreError::io(&rel, e))?.len();
        let mut header = [0u8; HEADER as usize];
        if len < HEADER || file.read_exact(&mut header).is_err() {
            // RabbitMQ deletes a segment without a whole header, with its messages.
            self.warnings.push(format!(
                "{rel}: {len} bytes, shorter than a segment header; RabbitMQ deletes it, and so nothing in it is read"
            ));
            return Ok(Some(Vec::new()));
        }
        let (from, to) = check_header(&header, QI_MAGIC, &rel)?;
        let count = to
            .checked_sub(from)
            .filter(|c| (1..=MAX_SEGMENT_ENTRIES).contains(c));
        let Some(count) = count.filter(|c| from == seg.saturating_mul(*c)) else {
            return Err(StoreError::at(
                &rel,
                5,
                format!(
                    "segment {seg} says it holds sequence ids {from} to {to}, which is not a segment RabbitMQ writes"
                ),
            ));
        };
        let whole = ((len - HEADER) / ENTRY as u64).min(count);
        let partial = (len - HEADER) - whole * ENTRY as u64;
        if partial > 0 {
            self.warnings.push(format!(
                "{rel}: {partial} bytes at offset {} are not a whole entry; ignored",
                HEADER + whole * ENTRY as u64
            ));
        }
        let qs = format!("{}/{seg}.qs", self.dir);
        let mut out = Vec::new();
        let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
        let mut e = [0u8; ENTRY];
        for i in 0..whole {
            let at = HEADER + i * ENTRY as u64;
            reader
                .read_exact(&mut e)
                .map_err(|err| StoreError::io(&rel, err))?;
            let seq_id = from + i;
            match e[0] {
                0 => continue,
                1 => {}
                s => {
                    return Err(StoreError::at(
                        &rel,
                        at,
                        format!("entry status {s} is neither 0 nor 1"),
                    ));
                }
            }
            if e[1] & 0xfe != 0 || e[2] != 0 {
                return Err(StoreError::at(
                    &rel,
                    at,
                    format!(
                        "entry flags {:#04x} {:#04x} are not ones RabbitMQ writes",
                        e[1], e[2]
                    ),
                ));
            }
            let persistent = e[1] & 1 == 1;
            let loc = &e[3..20];
            let body = match loc[0] {
                0 if loc.iter().all(|&b| b == 0) => None,
                1 => Some(Body::Shared(loc[1..17].try_into().expect("16 bytes"))),
                2 if loc[13..17] == [0; 4] => Some(Body::QueueStore {
                    file: qs.clone(),
                    offset: u64::from_be_bytes(loc[1..9].try_into().expect("8 bytes")),
                    size: u32::from_be_bytes(loc[9..13].try_into().expect("4 bytes")),
                }),
                _ => {
                    return Err(StoreError::at(
                        &rel,
                        at + 3,
                        "a message location RabbitMQ does not write",
                    ));
                }
            };
            let Some(body) = body else {
                if persistent {
                    // Only in memory when the copy was taken: the broker drops it at recovery.
                    self.dropped.push(format!(
                        "{rel}: sequence id {seq_id} was never written to disk (dropped by RabbitMQ at recovery)"
                    ));
                }
                continue;
            };
            let expiry = u64::from_be_bytes(e[24..32].try_into().expect("8 bytes"));
            out.push(IndexEntry {
                seq_id,
                persistent,
                // Version 2 does not record deliveries.
                delivered: false,
                expiry_ms: (expiry != 0).then_some(expiry),
                body,
            });
        }
        Ok(Some(out))
    }
}

fn check_header(h: &[u8], magic: &[u8; 4], rel: &str) -> Result<(u64, u64), StoreError> {
    if &h[..4] != magic {
        return Err(StoreError::at(
            rel,
            0,
            format!(
                "no {} header: not a version-2 segment",
                String::from_utf8_lossy(magic)
            ),
        ));
    }
    if h[4] != VERSION {
        return Err(StoreError::at(
            rel,
            4,
            format!("segment format version {} is not 2", h[4]),
        ));
    }
    Ok((
        u64::from_be_bytes(h[5..13].try_into().expect("8 bytes")),
        u64::from_be_bytes(h[13..21].try_into().expect("8 bytes")),
    ))
}

/// Checks the header of a per-queue store `rel` (`N.qs`) of `len` bytes.
pub fn check_queue_store(file: &File, len: u64, rel: &str) -> Result<(), StoreError> {
    use std::os::unix::fs::FileExt;
    if len < HEADER {
        return Err(StoreError::at(rel, 0, "shorter than a segment header"));
    }
    let mut header = [0u8; HEADER as usize];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| StoreError::io(rel, e))?;
    check_header(&header, QS_MAGIC, rel).map(drop)
}

/// Reads the term bytes of the message at `offset` of a per-queue store
/// whose header was checked.
pub fn read_queue_store(
    file: &File,
    len: u64,
    rel: &str,
    offset: u64,
    size: u32,
) -> Result<Vec<u8>, StoreError> {
    use std::os::unix::fs::FileExt;
    let end = offset.checked_add(8 + u64::from(size));
    if offset < HEADER || end.is_none_or(|end| end > len) {
        return Err(StoreError::at(
            rel,
            offset,
            format!("the index places a {size}-byte message here, beyond the file's {len} bytes"),
        ));
    }
    let mut data = vec![0u8; 8 + size as usize];
    file.read_exact_at(&mut data, offset)
        .map_err(|e| StoreError::io(rel, e))?;
    let stored = u32::from_be_bytes(data[..4].try_into().expect("4 bytes"));
    if stored != size {
        return Err(StoreError::at(
            rel,
            offset,
            format!("the message here is {stored} bytes, the index says {size}"),
        ));
    }
    if data[4] & 1 == 1 {
        let expected = u16::from_be_bytes([data[5], data[6]]);
        if crc32fast::hash(&data[8..]) as u16 != expected {
            return Err(StoreError::at(
                rel,
                offset,
                "the message fails its CRC check",
            ));
        }
    }
    Ok(data)
}
