//! Cuts a byte stream into chunks of a fixed uncompressed size, compresses
//! each as an independent zstd frame and names it by the SHA-256 of the
//! stored bytes. Concatenated in order, the chunks form one `.zst` stream.

use std::io::{self, Write};

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// A compressed chunk ready to store.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Position in the stream, from 0.
    pub index: usize,
    /// The stored (compressed) bytes.
    pub data: Bytes,
    /// SHA-256 of `data`.
    pub sha256: [u8; 32],
    /// Number of stream bytes it decompresses to.
    pub uncompressed_size: u64,
}

/// Compression settings.
#[derive(Debug, Clone, Copy)]
pub struct ChunkOptions {
    /// Uncompressed bytes per chunk.
    pub chunk_size: u64,
    /// zstd level (1-19).
    pub level: i32,
    /// zstd worker threads (0 = compress on the calling thread).
    pub workers: u32,
}

/// A `Write` sink that emits [`Chunk`]s through `emit`.
pub struct ChunkWriter<F: FnMut(Chunk) -> io::Result<()>> {
    options: ChunkOptions,
    encoder: Option<zstd::stream::Encoder<'static, Vec<u8>>>,
    in_chunk: u64,
    total: u64,
    index: usize,
    emit: F,
}

impl<F: FnMut(Chunk) -> io::Result<()>> ChunkWriter<F> {
    /// A writer that calls `emit` for every finished chunk, in order.
    pub fn new(options: ChunkOptions, emit: F) -> Self {
        assert!(options.chunk_size > 0, "chunk size must be positive");
        ChunkWriter {
            options,
            encoder: None,
            in_chunk: 0,
            total: 0,
            index: 0,
            emit,
        }
    }

    fn encoder(&mut self) -> io::Result<&mut zstd::stream::Encoder<'static, Vec<u8>>> {
        if self.encoder.is_none() {
            // Room for a typical 2-3x compression without regrowing.
            let capacity = (self.options.chunk_size / 2) as usize;
            let mut enc =
                zstd::stream::Encoder::new(Vec::with_capacity(capacity), self.options.level)?;
            if self.options.workers > 0 {
                enc.multithread(self.options.workers)?;
            }
            // Lets `zstd -d` detect corruption when someone restores by hand.
            enc.include_checksum(true)?;
            self.encoder = Some(enc);
        }
        Ok(self.encoder.as_mut().expect("just created"))
    }

    fn finish_chunk(&mut self) -> io::Result<()> {
        let Some(enc) = self.encoder.take() else {
            return Ok(());
        };
        let data = enc.finish()?;
        let sha256: [u8; 32] = Sha256::digest(&data).into();
        let chunk = Chunk {
            index: self.index,
            data: Bytes::from(data),
            sha256,
            uncompressed_size: self.in_chunk,
        };
        self.index += 1;
        self.in_chunk = 0;
        (self.emit)(chunk)
    }

    /// Emits the last, partial chunk and returns the stream length.
    pub fn finish(mut self) -> io::Result<u64> {
        if self.in_chunk > 0 {
            self.finish_chunk()?;
        }
        Ok(self.total)
    }
}

impl<F: FnMut(Chunk) -> io::Result<()>> Write for ChunkWriter<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = (self.options.chunk_size - self.in_chunk) as usize;
        let n = buf.len().min(room);
        self.encoder()?.write_all(&buf[..n])?;
        self.in_chunk += n as u64;
        self.total += n as u64;
        if self.in_chunk == self.options.chunk_size {
            self.finish_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn chunk_all(data: &[u8], chunk_size: u64, workers: u32) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        let options = ChunkOptions {
            chunk_size,
            level: 3,
            workers,
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

    #[test]
    fn concatenated_chunks_decompress_to_the_input() {
        let data = sample(100_000);
        for workers in [0, 2] {
            let chunks = chunk_all(&data, 16 * 1024, workers);
            assert_eq!(chunks.len(), 7);
            let sizes: Vec<u64> = chunks.iter().map(|c| c.uncompressed_size).collect();
            assert_eq!(sizes[..6], [16384; 6]);
            assert_eq!(sizes[6], 100_000 - 6 * 16384);
            let stored: Vec<u8> = chunks.iter().flat_map(|c| c.data.to_vec()).collect();
            let mut out = Vec::new();
            zstd::stream::read::Decoder::new(&stored[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn chunks_are_named_by_their_stored_bytes() {
        for chunk in chunk_all(&sample(50_000), 10_000, 0) {
            let expected: [u8; 32] = Sha256::digest(&chunk.data).into();
            assert_eq!(chunk.sha256, expected);
        }
    }

    #[test]
    fn exact_multiple_has_no_empty_tail() {
        let chunks = chunk_all(&sample(40_000), 10_000, 0);
        assert_eq!(chunks.len(), 4);
        assert!(chunks.iter().enumerate().all(|(i, c)| c.index == i));
    }

    #[test]
    fn emit_errors_stop_the_writer() {
        let options = ChunkOptions {
            chunk_size: 10,
            level: 1,
            workers: 0,
        };
        let mut w = ChunkWriter::new(options, |_| Err(io::Error::other("upload stopped")));
        assert!(w.write_all(&[0u8; 100]).is_err());
    }
}
