//! Decompresses the archive stream on every core: the chunker writes
//! independent zstd frames (at most 4 MiB of tar bytes each), so the
//! stream is cut at frame boundaries, found from the frame and block
//! headers without decompressing, and the frames are decompressed by
//! worker threads and handed on in order through [`ParallelDecoder`], a
//! `Read`. Memory: a few frames in flight.
//!
//! The bytes are untrusted (a manifest and its chunks may be replaced
//! together): every size is checked against a fixed limit before anything
//! is allocated, and damage is an error naming the stream offset.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

/// Largest frame accepted, compressed or not (the chunker writes 4 MiB).
pub const MAX_FRAME: usize = 32 << 20;

const MAGIC: u32 = 0xFD2F_B528;
/// Skippable frames: magic 0x184D2A50..=0x184D2A5F.
const SKIPPABLE_MASK: u32 = 0xFFFF_FFF0;
const SKIPPABLE: u32 = 0x184D_2A50;

/// One zstd frame as stored, with the size it declares (if it does).
#[derive(Debug)]
pub struct Frame {
    /// Offset of its first byte in the stored stream.
    pub offset: u64,
    /// The frame's bytes.
    pub bytes: Vec<u8>,
    /// Frame_Content_Size, when the header holds it.
    pub content_size: Option<u64>,
}

fn damaged(offset: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the compressed stream is damaged at byte {offset}: {what}"),
    )
}

/// Cuts a stream of zstd frames into frames (skippable frames dropped).
pub struct FrameSplitter<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> FrameSplitter<R> {
    /// Reads frames from `inner`.
    pub fn new(inner: R) -> Self {
        FrameSplitter { inner, offset: 0 }
    }

    /// Reads `n` more bytes of the current frame into `frame`, within the limit.
    fn take(&mut self, frame: &mut Vec<u8>, start: u64, n: usize) -> io::Result<()> {
        if frame.len() + n > MAX_FRAME {
            return Err(damaged(
                start,
                &format!("a frame longer than {} MiB", MAX_FRAME >> 20),
            ));
        }
        let at = frame.len();
        frame.resize(at + n, 0);
        self.inner.read_exact(&mut frame[at..]).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                damaged(start, "the stream ends inside a frame")
            } else {
                e
            }
        })?;
        self.offset += n as u64;
        Ok(())
    }

    /// The next frame, or `None` at the end of the stream.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            let start = self.offset;
            let mut magic = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                match self.inner.read(&mut magic[got..]) {
                    Ok(0) if got == 0 => return Ok(None),
                    Ok(0) => return Err(damaged(start, "the stream ends inside a frame")),
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.offset += 4;
            let magic_value = u32::from_le_bytes(magic);
            if magic_value & SKIPPABLE_MASK == SKIPPABLE {
                let mut size = [0u8; 4];
                self.inner
                    .read_exact(&mut size)
                    .map_err(|_| damaged(start, "the stream ends inside a frame"))?;
                self.offset += 4;
                let size = u32::from_le_bytes(size) as u64;
                let skipped = io::copy(&mut (&mut self.inner).take(size), &mut io::sink())?;
                if skipped != size {
                    return Err(damaged(start, "the stream ends inside a frame"));
                }
                self.offset += size;
                continue;
            }
            if magic_value != MAGIC {
                return Err(damaged(start, "not a zstd frame"));
            }
            let mut frame = magic.to_vec();
            return self.rest_of_frame(start, &mut frame).map(|content_size| {
                Some(Frame {
                    offset: start,
                    bytes: frame,
                    content_size,
                })
            });
        }
    }

    /// Reads the header, blocks and checksum after the magic number.
    fn rest_of_frame(&mut self, start: u64, frame: &mut Vec<u8>) -> io::Result<Option<u64>> {
        self.take(frame, start, 1)?;
        let descriptor = frame[4];
        if descriptor & 0x08 != 0 {
            return Err(damaged(start, "a reserved header bit is set"));
        }
        let fcs_flag = descriptor >> 6;
        let single_segment = descriptor & 0x20 != 0;
        let checksum = descriptor & 0x04 != 0;
        let dict_bytes = [0, 1, 2, 4][(descriptor & 0x03) as usize];
        let fcs_bytes = match (fcs_flag, single_segment) {
            (0, false) => 0,
            (0, true) => 1,
            (1, _) => 2,
            (2, _) => 4,
            _ => 8,
        };
        let header = usize::from(!single_segment) + dict_bytes + fcs_bytes;
        let at = frame.len();
        self.take(frame, start, header)?;
        let fcs = &frame[at + header - fcs_bytes..at + header];
        let content_size = match fcs_bytes {
            0 => None,
            1 => Some(u64::from(fcs[0])),
            2 => Some(u64::from(u16::from_le_bytes([fcs[0], fcs[1]])) + 256),
            4 => Some(u64::from(u32::from_le_bytes([
                fcs[0], fcs[1], fcs[2], fcs[3],
            ]))),
            _ => Some(u64::from_le_bytes([
                fcs[0], fcs[1], fcs[2], fcs[3], fcs[4], fcs[5], fcs[6], fcs[7],
            ])),
        };
        loop {
            let at = frame.len();
            self.take(frame, start, 3)?;
            let h = u32::from(frame[at])
                | u32::from(frame[at + 1]) << 8
                | u32::from(frame[at + 2]) << 16;
            let last = h & 1 != 0;
            let size = (h >> 3) as usize;
            let payload = match (h >> 1) & 3 {
                0 | 2 => size,
                1 => 1,
                _ => return Err(damaged(start, "a reserved block type")),
            };
            self.take(frame, start, payload)?;
            if last {
                break;
            }
        }
        if checksum {
            self.take(frame, start, 4)?;
        }
        Ok(content_size)
    }
}

/// Decompresses one frame, allocating no more than it declares (or the limit).
fn decompress(
    decompressor: &mut zstd::bulk::Decompressor<'static>,
    frame: &Frame,
) -> io::Result<Vec<u8>> {
    let capacity = match frame.content_size {
        Some(size) if size > MAX_FRAME as u64 => {
            return Err(damaged(
                frame.offset,
                &format!("a frame declares {size} bytes, more than the limit"),
            ));
        }
        Some(size) => size as usize,
        None => MAX_FRAME,
    };
    let out = decompressor
        .decompress(&frame.bytes, capacity)
        .map_err(|e| match frame.content_size {
            // Our frames declare their size; one without may not exceed the limit.
            None => damaged(
                frame.offset,
                &format!(
                    "a frame that declares no size decompresses to more than {} MiB, or is corrupt ({e})",
                    MAX_FRAME >> 20
                ),
            ),
            Some(_) => damaged(frame.offset, &e.to_string()),
        })?;
    if frame
        .content_size
        .is_some_and(|size| size != out.len() as u64)
    {
        return Err(damaged(
            frame.offset,
            "a frame decompresses to another size than it declares",
        ));
    }
    Ok(out)
}

type Decoded = (u64, io::Result<Vec<u8>>);

/// A `Read` of the decompressed stream, frames decompressed on `workers`
/// threads. The splitter and workers stop when this is dropped.
pub struct ParallelDecoder {
    results: Receiver<Decoded>,
    pending: BTreeMap<u64, io::Result<Vec<u8>>>,
    next: u64,
    current: Vec<u8>,
    pos: usize,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ParallelDecoder {
    /// Starts decompressing `stored` on `workers` threads (at least one).
    pub fn new<R: Read + Send + 'static>(stored: R, workers: usize) -> ParallelDecoder {
        let workers = workers.max(1);
        // Frames waiting for a worker, and results waiting to be read: a few
        // each, so memory stays a few frames whatever the stream's length.
        let (jobs_tx, jobs_rx) = sync_channel::<(u64, io::Result<Frame>)>(workers);
        let (results_tx, results) = sync_channel::<Decoded>(workers * 2);
        let mut threads = Vec::new();
        threads.push(std::thread::spawn(move || {
            let mut splitter = FrameSplitter::new(stored);
            let mut seq = 0;
            loop {
                let next = splitter.next_frame();
                let job = match next {
                    Ok(None) => return,
                    Ok(Some(frame)) => Ok(frame),
                    Err(e) => Err(e),
                };
                let failed = job.is_err();
                if jobs_tx.send((seq, job)).is_err() || failed {
                    return;
                }
                seq += 1;
            }
        }));
        let jobs = Arc::new(Mutex::new(jobs_rx));
        for _ in 0..workers {
            let (jobs, results_tx) = (jobs.clone(), results_tx.clone());
            threads.push(std::thread::spawn(move || worker(&jobs, &results_tx)));
        }
        ParallelDecoder {
            results,
            pending: BTreeMap::new(),
            next: 0,
            current: Vec::new(),
            pos: 0,
            threads,
        }
    }

    /// The next decompressed frame in order, `None` at the end.
    fn next_block(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(result) = self.pending.remove(&self.next) {
                self.next += 1;
                return result.map(Some);
            }
            match self.results.recv() {
                Ok((seq, result)) => {
                    self.pending.insert(seq, result);
                }
                // Every worker is gone and nothing is missing: the end.
                Err(_) if self.pending.is_empty() => return Ok(None),
                Err(_) => return Err(io::Error::other("a decompression thread stopped")),
            }
        }
    }
}

fn worker(jobs: &Mutex<Receiver<(u64, io::Result<Frame>)>>, results: &SyncSender<Decoded>) {
    let mut decompressor = zstd::bulk::Decompressor::new().ok();
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((seq, frame)) = job else { return };
        let out = frame.and_then(|frame| match decompressor.as_mut() {
            Some(d) => decompress(d, &frame),
            None => Err(io::Error::other(
                "cannot create a zstd decompression context",
            )),
        });
        if results.send((seq, out)).is_err() {
            return;
        }
    }
}

impl Read for ParallelDecoder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.next_block()? {
                Some(block) => {
                    self.current = block;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for ParallelDecoder {
    fn drop(&mut self) {
        // Closing the result channel stops the workers; the splitter stops
        // when its job channel closes. They are not joined: a splitter may
        // be blocked reading its source, which its owner closes.
        let (_, closed) = sync_channel(1);
        self.results = closed;
        self.threads.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames_of(data: &[u8], block: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut c = zstd::bulk::Compressor::new(1).unwrap();
        c.include_checksum(true).unwrap();
        for part in data.chunks(block) {
            out.extend_from_slice(&c.compress(part).unwrap());
        }
        out
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| ((i * 7919) % 251) as u8 ^ (i / 1000) as u8)
            .collect()
    }

    fn read_all(stored: Vec<u8>, workers: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ParallelDecoder::new(io::Cursor::new(stored), workers).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn frames_decode_in_order_on_any_number_of_workers() {
        let data = sample(3_000_000);
        let stored = frames_of(&data, 100_000);
        for workers in [1, 2, 5] {
            assert_eq!(read_all(stored.clone(), workers).unwrap(), data);
        }
        // The splitter finds exactly the frames the compressor wrote.
        let mut splitter = FrameSplitter::new(&stored[..]);
        let mut n = 0;
        while let Some(f) = splitter.next_frame().unwrap() {
            assert_eq!(f.content_size, Some(100_000));
            n += 1;
        }
        assert_eq!(n, 30);
    }

    #[test]
    fn streaming_frames_and_skippable_frames_are_read() {
        let data = sample(500_000);
        // A frame without a declared size, as `zstd` writes from a pipe.
        let mut stored = Vec::new();
        let mut enc = zstd::stream::write::Encoder::new(&mut stored, 3).unwrap();
        io::Write::write_all(&mut enc, &data).unwrap();
        enc.finish().unwrap();
        let mut with_skip = vec![0x50, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 1, 2, 3];
        with_skip.extend_from_slice(&stored);
        assert_eq!(read_all(with_skip, 2).unwrap(), data);
    }

    #[test]
    fn damage_is_an_error_naming_the_offset() {
        let data = sample(400_000);
        let stored = frames_of(&data, 100_000);
        let frame_len = stored.len() / 4;
        // Cut short; garbage after a frame; a flipped payload byte.
        let cut = stored[..stored.len() - 10].to_vec();
        let err = read_all(cut, 2).unwrap_err().to_string();
        assert!(err.contains("ends inside a frame"), "{err}");
        let mut garbage = stored.clone();
        garbage.extend_from_slice(b"tail");
        let err = read_all(garbage, 2).unwrap_err().to_string();
        assert!(err.contains(&format!("at byte {}", stored.len())), "{err}");
        let mut flipped = stored.clone();
        flipped[frame_len + 100] ^= 0x55;
        assert!(read_all(flipped, 2).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Hostile bytes: an error or a result, never a panic or a huge
        /// allocation (sizes are checked before anything is allocated).
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000), cut in 0usize..2000) {
            let mut stored = frames_of(&sample(20_000), 5_000);
            let at = cut % stored.len();
            stored.splice(at..at, bytes);
            let _ = read_all(stored, 2);
        }

        #[test]
        fn arbitrary_headers_never_panic(header in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut stored = vec![0x28, 0xB5, 0x2F, 0xFD];
            stored.extend(header);
            let _ = read_all(stored, 1);
        }
    }
}
