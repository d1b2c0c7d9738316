//! Cuts a byte stream into chunks of a fixed uncompressed size, compresses
//! them on every core, optionally encrypts each chunk (one age file per
//! chunk), and names each chunk by the SHA-256 of its stored bytes.
//! Unencrypted, the chunks concatenated in order form one valid `.zst` stream.
//!
//! The stream is cut into blocks (at most 4 MiB, never across a chunk
//! boundary); worker threads compress blocks as independent zstd frames
//! with reused contexts; results are put back in order, appended to the
//! current chunk (through the encryptor) and hashed as they arrive. Nothing
//! waits at chunk boundaries, so all cores stay busy.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::crypt::Recipients;

/// A compressed chunk ready to store.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Position in the stream, from 0.
    pub index: usize,
    /// The stored (compressed, then encrypted if asked) bytes.
    pub data: Bytes,
    /// SHA-256 of `data`.
    pub sha256: [u8; 32],
    /// Number of stream bytes it decompresses to.
    pub uncompressed_size: u64,
}

/// Compression and encryption settings.
#[derive(Debug, Clone)]
pub struct ChunkOptions {
    /// Uncompressed bytes per chunk.
    pub chunk_size: u64,
    /// zstd level (1-19).
    pub level: i32,
    /// Compression threads (at least one is used).
    pub workers: u32,
    /// Encrypt each chunk to these recipients.
    pub encrypt_to: Option<Arc<Recipients>>,
}

/// Largest block compressed as one frame.
const BLOCK: u64 = 4 << 20;

struct Job {
    seq: u64,
    raw: Vec<u8>,
    ends_chunk: bool,
}

struct Done {
    seq: u64,
    frame: io::Result<Vec<u8>>,
    raw_len: u64,
    ends_chunk: bool,
}

/// A `Write` sink that emits [`Chunk`]s through `emit`, in order, on the
/// writing thread.
pub struct ChunkWriter<F: FnMut(Chunk) -> io::Result<()>> {
    options: ChunkOptions,
    emit: F,
    jobs: Option<SyncSender<Job>>,
    results: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    block: Vec<u8>,
    /// Raw bytes of the current chunk already cut into blocks.
    chunk_cut: u64,
    next_seq: u64,
    next_done: u64,
    pending: BTreeMap<u64, Done>,
    /// The current chunk's stored bytes; `None` before its first frame.
    chunk: Option<ChunkBody>,
    chunk_raw: u64,
    index: usize,
    total: u64,
}

/// Stored bytes, hashed as they are appended.
struct Hashed {
    bytes: Vec<u8>,
    hash: Sha256,
}

impl Write for Hashed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hash.update(buf);
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The chunk being built: frames appended as they are, or through age.
enum ChunkBody {
    Plain(Hashed),
    Sealed(age::stream::StreamWriter<Hashed>),
}

impl ChunkBody {
    fn start(options: &ChunkOptions) -> io::Result<ChunkBody> {
        let out = Hashed {
            // Compressed, a chunk is usually well under its raw size.
            bytes: Vec::with_capacity((options.chunk_size / 2) as usize),
            hash: Sha256::new(),
        };
        Ok(match &options.encrypt_to {
            None => ChunkBody::Plain(out),
            Some(recipients) => ChunkBody::Sealed(recipients.seal(out)?),
        })
    }

    fn write_all(&mut self, frame: &[u8]) -> io::Result<()> {
        match self {
            ChunkBody::Plain(out) => out.write_all(frame),
            ChunkBody::Sealed(sealed) => sealed.write_all(frame),
        }
    }

    fn finish(self) -> io::Result<Hashed> {
        match self {
            ChunkBody::Plain(out) => Ok(out),
            ChunkBody::Sealed(sealed) => sealed.finish(),
        }
    }
}

fn worker(jobs: Arc<Mutex<Receiver<Job>>>, results: Sender<Done>, level: i32) {
    let mut compressor = match zstd::bulk::Compressor::new(level) {
        Ok(mut c) => {
            // Lets `zstd -d` detect corruption when someone restores by hand.
            let _ = c.include_checksum(true);
            Some(c)
        }
        Err(_) => None,
    };
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let frame = match compressor.as_mut() {
            Some(c) => c.compress(&job.raw),
            None => Err(io::Error::other("cannot create a zstd compression context")),
        };
        let done = Done {
            seq: job.seq,
            frame,
            raw_len: job.raw.len() as u64,
            ends_chunk: job.ends_chunk,
        };
        if results.send(done).is_err() {
            return;
        }
    }
}

impl<F: FnMut(Chunk) -> io::Result<()>> ChunkWriter<F> {
    /// A writer that calls `emit` for every finished chunk, in order.
    pub fn new(options: ChunkOptions, emit: F) -> Self {
        assert!(options.chunk_size > 0, "chunk size must be positive");
        let threads = options.workers.max(1) as usize;
        let (job_tx, job_rx) = sync_channel::<Job>(threads * 2);
        let (done_tx, done_rx) = channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let (rx, tx) = (job_rx.clone(), done_tx.clone());
                std::thread::spawn(move || worker(rx, tx, options.level))
            })
            .collect();
        ChunkWriter {
            options,
            emit,
            jobs: Some(job_tx),
            results: done_rx,
            workers,
            block: Vec::new(),
            chunk_cut: 0,
            next_seq: 0,
            next_done: 0,
            pending: BTreeMap::new(),
            chunk: None,
            chunk_raw: 0,
            index: 0,
            total: 0,
        }
    }

    fn block_limit(&self) -> u64 {
        BLOCK.min(self.options.chunk_size - self.chunk_cut)
    }

    /// Hands the current block to the workers.
    fn submit(&mut self) -> io::Result<()> {
        let raw = std::mem::take(&mut self.block);
        self.chunk_cut += raw.len() as u64;
        let ends_chunk = self.chunk_cut == self.options.chunk_size;
        if ends_chunk {
            self.chunk_cut = 0;
        }
        let job = Job {
            seq: self.next_seq,
            raw,
            ends_chunk,
        };
        self.next_seq += 1;
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("the chunk writer is closed"))?;
        jobs.send(job)
            .map_err(|_| io::Error::other("the compression threads stopped"))?;
        self.collect(false)
    }

    /// Takes finished frames, in order; with `all`, waits for every one.
    fn collect(&mut self, all: bool) -> io::Result<()> {
        loop {
            while let Some(done) = self.pending.remove(&self.next_done) {
                self.next_done += 1;
                self.append(done)?;
            }
            if self.next_done == self.next_seq {
                return Ok(());
            }
            let done = if all {
                self.results
                    .recv()
                    .map_err(|_| io::Error::other("the compression threads stopped"))?
            } else {
                match self.results.try_recv() {
                    Ok(done) => done,
                    Err(_) => return Ok(()),
                }
            };
            self.pending.insert(done.seq, done);
        }
    }

    fn append(&mut self, done: Done) -> io::Result<()> {
        let frame = done.frame?;
        if self.chunk.is_none() {
            self.chunk = Some(ChunkBody::start(&self.options)?);
        }
        if let Some(body) = &mut self.chunk {
            body.write_all(&frame)?;
        }
        self.chunk_raw += done.raw_len;
        if done.ends_chunk {
            self.emit_chunk()?;
        }
        Ok(())
    }

    fn emit_chunk(&mut self) -> io::Result<()> {
        let body = match self.chunk.take() {
            Some(body) => body,
            None => ChunkBody::start(&self.options)?,
        };
        let stored = body.finish()?;
        let chunk = Chunk {
            index: self.index,
            data: Bytes::from(stored.bytes),
            sha256: stored.hash.finalize().into(),
            uncompressed_size: self.chunk_raw,
        };
        self.index += 1;
        self.chunk_raw = 0;
        (self.emit)(chunk)
    }

    /// Emits the last, partial chunk and returns the stream length.
    pub fn finish(mut self) -> io::Result<u64> {
        if !self.block.is_empty() {
            self.submit()?;
        }
        self.collect(true)?;
        if self.chunk_raw > 0 {
            self.emit_chunk()?;
        }
        Ok(self.total)
    }
}

impl<F: FnMut(Chunk) -> io::Result<()>> Write for ChunkWriter<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let limit = self.block_limit();
        if self.block.capacity() == 0 {
            self.block.reserve_exact(limit as usize);
        }
        let n = buf.len().min((limit - self.block.len() as u64) as usize);
        self.block.extend_from_slice(&buf[..n]);
        self.total += n as u64;
        if self.block.len() as u64 == limit {
            self.submit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<F: FnMut(Chunk) -> io::Result<()>> Drop for ChunkWriter<F> {
    fn drop(&mut self) {
        // Closing the job channel ends the workers.
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn chunk_all(data: &[u8], chunk_size: u64, workers: u32) -> Vec<Chunk> {
        chunk_with(data, chunk_size, workers, None)
    }

    fn chunk_with(
        data: &[u8],
        chunk_size: u64,
        workers: u32,
        encrypt_to: Option<Arc<Recipients>>,
    ) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        let options = ChunkOptions {
            chunk_size,
            level: 3,
            workers,
            encrypt_to,
        };
        let mut w = ChunkWriter::new(options, |c| {
            chunks.push(c);
            Ok(())
        });
        // Odd write sizes exercise the boundary arithmetic.
        for piece in data.chunks(777) {
            w.write_all(piece).unwrap();
        }
        assert_eq!(w.finish().unwrap(), data.len() as u64);
        chunks
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i * 7 % 251) as u8 ^ (i / 1000) as u8)
            .collect()
    }

    fn decode(chunks: &[Chunk]) -> Vec<u8> {
        let stored: Vec<u8> = chunks.iter().flat_map(|c| c.data.to_vec()).collect();
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(&stored[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn concatenated_chunks_decompress_to_the_input() {
        let data = sample(100_000);
        for workers in [1, 3] {
            let chunks = chunk_all(&data, 16 * 1024, workers);
            assert_eq!(chunks.len(), 7);
            let sizes: Vec<u64> = chunks.iter().map(|c| c.uncompressed_size).collect();
            assert_eq!(sizes[..6], [16384; 6]);
            assert_eq!(sizes[6], 100_000 - 6 * 16384);
            assert_eq!(decode(&chunks), data);
            // Each chunk on its own is a complete stream of frames.
            let mut one = Vec::new();
            zstd::stream::read::Decoder::new(&chunks[3].data[..])
                .unwrap()
                .read_to_end(&mut one)
                .unwrap();
            assert_eq!(one, data[3 * 16384..4 * 16384]);
        }
    }

    #[test]
    fn chunks_larger_than_a_block_hold_several_frames() {
        let data = sample(11 << 20);
        let chunks = chunk_all(&data, 10 << 20, 2);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].uncompressed_size, 10 << 20);
        assert_eq!(decode(&chunks), data);
    }

    #[test]
    fn chunks_are_named_by_their_stored_bytes() {
        for chunk in chunk_all(&sample(50_000), 10_000, 2) {
            let expected: [u8; 32] = Sha256::digest(&chunk.data).into();
            assert_eq!(chunk.sha256, expected);
        }
    }

    #[test]
    fn encrypted_chunks_are_age_files_of_the_compressed_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public, _) = crate::crypt::tests::keypair(dir.path(), "key.txt");
        let recipients = Recipients::parse(&[public]).unwrap().map(Arc::new);
        let identity = crate::crypt::Identities::load(&key).unwrap();
        let data = sample(5 << 20);
        let chunks = chunk_with(&data, 2 << 20, 2, recipients);
        assert_eq!(chunks.len(), 3);
        let mut opened = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            assert!(chunk.data.starts_with(b"age-encryption.org/v1\n"));
            let expected: [u8; 32] = Sha256::digest(&chunk.data).into();
            assert_eq!(
                chunk.sha256, expected,
                "named by the stored (encrypted) bytes"
            );
            let plain = identity.open(&chunk.data).unwrap();
            let mut one = Vec::new();
            zstd::stream::read::Decoder::new(&plain[..])
                .unwrap()
                .read_to_end(&mut one)
                .unwrap();
            assert_eq!(one.len() as u64, chunk.uncompressed_size);
            assert_eq!(one, data[i * (2 << 20)..][..one.len()]);
            opened.extend_from_slice(&plain);
        }
        let mut all = Vec::new();
        zstd::stream::read::Decoder::new(&opened[..])
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(all, data);
    }

    #[test]
    fn exact_multiple_has_no_empty_tail() {
        let chunks = chunk_all(&sample(40_000), 10_000, 2);
        assert_eq!(chunks.len(), 4);
        assert!(chunks.iter().enumerate().all(|(i, c)| c.index == i));
    }

    #[test]
    fn emit_errors_stop_the_writer() {
        let options = ChunkOptions {
            chunk_size: 10,
            level: 1,
            workers: 1,
            encrypt_to: None,
        };
        let mut w = ChunkWriter::new(options, |_| Err(io::Error::other("upload stopped")));
        let result = w.write_all(&[0u8; 100]).and_then(|()| w.finish().map(drop));
        assert!(result.is_err());
    }
}
