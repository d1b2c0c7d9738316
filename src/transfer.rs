//! Moves chunk streams between the archive code (blocking threads) and a
//! repository (async), in parallel and with bounded memory.
//!
//! Upload: a blocking producer writes the tar stream into a [`ChunkWriter`];
//! finished chunks wait in a one-slot channel; at most `concurrency` uploads
//! run at once. Memory is about `(concurrency + 2)` compressed chunks.
//!
//! Download: chunks are fetched `concurrency` at a time but handed on in
//! order, each verified against its name (and decrypted, for an encrypted
//! snapshot) before a single byte reaches the consumer, which reads them as
//! one stream on a blocking thread.

use std::io::{self, Read};
use std::sync::Arc;

use anyhow::Context;
use bytes::{Buf, Bytes};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::archive::chunker::{Chunk, ChunkOptions, ChunkWriter};
use crate::archive::manifest::{ChunkEntry, Manifest};
use crate::crypt::Identities;
use crate::error::integrity;
use crate::repo::storage::{Storage, StorageErrorKind, Tags, storage_kind};
use crate::repo::{Repository, SnapshotRef};

/// The sink a producer writes the tar stream into.
pub type Sink = ChunkWriter<Box<dyn FnMut(Chunk) -> io::Result<()> + Send>>;

/// Where and how to upload.
pub struct UploadTarget {
    /// The storage.
    pub storage: Arc<dyn Storage>,
    /// Turns a chunk's hex digest into its key.
    pub key_of: Box<dyn Fn(&str) -> String + Send + Sync>,
    /// Tags for every object.
    pub tags: Tags,
    /// Uploads in flight at most.
    pub concurrency: usize,
    /// Called with the stored size of each uploaded chunk.
    pub on_uploaded: Box<dyn Fn(u64) + Send + Sync>,
}

/// Runs `produce` on a blocking thread, uploading the chunks it writes.
/// Returns the chunk list (in stream order), the producer's value, and the
/// stream length. On any failure nothing more is uploaded and the error of
/// the first failing side is returned.
///
/// Nothing is uploaded before `gate` resolves; if it resolves to an error,
/// nothing is uploaded at all. The producer meanwhile compresses ahead, as
/// far as the one-chunk channel lets it.
pub async fn upload<T: Send + 'static>(
    options: ChunkOptions,
    target: UploadTarget,
    gate: impl std::future::Future<Output = anyhow::Result<()>>,
    produce: impl FnOnce(&mut Sink) -> io::Result<T> + Send + 'static,
) -> anyhow::Result<(Vec<ChunkEntry>, T, u64)> {
    let (tx, mut rx) = mpsc::channel::<Chunk>(1);
    let producer = tokio::task::spawn_blocking(move || -> io::Result<(T, u64)> {
        let emit: Box<dyn FnMut(Chunk) -> io::Result<()> + Send> = Box::new(move |chunk| {
            tx.blocking_send(chunk)
                .map_err(|_| io::Error::other("the upload stopped"))
        });
        let mut sink = ChunkWriter::new(options, emit);
        let value = produce(&mut sink)?;
        let total = sink.finish()?;
        Ok((value, total))
    });

    let target = Arc::new(target);
    let permits = Arc::new(Semaphore::new(target.concurrency));
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let mut entries = Vec::new();
    let mut stored = std::collections::HashSet::new();
    let uploaded: anyhow::Result<()> = async {
        gate.await?;
        while let Some(chunk) = rx.recv().await {
            let hex = hex::encode(chunk.sha256);
            entries.push(ChunkEntry {
                sha256: hex.clone(),
                size: chunk.data.len() as u64,
                uncompressed_size: chunk.uncompressed_size,
            });
            // Identical chunks (zero-filled regions) share their object.
            if !stored.insert(hex.clone()) {
                continue;
            }
            let permit = permits.clone().acquire_owned().await?;
            while let Some(done) = tasks.try_join_next() {
                done??;
            }
            let target = target.clone();
            tasks.spawn(async move {
                let size = chunk.data.len() as u64;
                let key = (target.key_of)(&hex);
                target
                    .storage
                    .put(&key, chunk.data, &chunk.sha256, &target.tags)
                    .await?;
                if chunk.index == 0 {
                    crate::failpoint::hit("upload:after-first-chunk")?;
                }
                (target.on_uploaded)(size);
                drop(permit);
                Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    }
    .await;
    // Unblocks a producer waiting to hand over a chunk after a failure.
    drop(rx);
    tasks.abort_all();
    let produced = producer.await.context("the archive thread failed")?;
    match (uploaded, produced) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(anyhow::Error::new(e).context("cannot write the archive")),
        (Ok(()), Ok((value, total))) => Ok((entries, value, total)),
    }
}

/// Where and how to download.
pub struct DownloadSource {
    /// The storage.
    pub storage: Arc<dyn Storage>,
    /// Turns a chunk's hex digest into its key.
    pub key_of: Box<dyn Fn(&str) -> String + Send + Sync>,
    /// Downloads in flight at most.
    pub concurrency: usize,
    /// Decrypts every chunk after its digest is checked; `None` for a
    /// plain snapshot.
    pub key: Option<Arc<Identities>>,
}

impl DownloadSource {
    /// The chunks of `snapshot`, with the identity its manifest needs: a
    /// missing or wrong identity is refused here, before any download.
    pub fn for_snapshot(
        repo: &Repository,
        snapshot: &SnapshotRef,
        manifest: &Manifest,
        identity: Option<&Arc<Identities>>,
        concurrency: usize,
    ) -> anyhow::Result<DownloadSource> {
        Ok(DownloadSource {
            storage: repo.storage().clone(),
            key_of: repo.chunk_keys(&snapshot.node, &snapshot.id),
            concurrency,
            key: crate::crypt::key_for(manifest, identity)?,
        })
    }

    /// Fetches, verifies and (if encrypted) decrypts one chunk.
    async fn fetch(&self, entry: &ChunkEntry) -> anyhow::Result<Bytes> {
        let key = (self.key_of)(&entry.sha256);
        let data = fetch_verified(self.storage.as_ref(), &key, entry).await?;
        match &self.key {
            None => Ok(data),
            Some(identity) => open(identity.clone(), key, data).await,
        }
    }
}

/// Decrypts a verified chunk on a blocking thread. Its digest matched the
/// manifest and the identity is one of the manifest's recipients, so a
/// failure here means the manifest or the chunk was replaced.
async fn open(identity: Arc<Identities>, key: String, data: Bytes) -> anyhow::Result<Bytes> {
    let opened = tokio::task::spawn_blocking(move || identity.open(&data)).await?;
    opened.map(Bytes::from).map_err(|e| {
        integrity(format!(
            "chunk {key} cannot be decrypted with the identity although the manifest lists its key ({e}): the chunk or the manifest was replaced"
        ))
    })
}

/// Downloads and decrypts the first chunk of an encrypted snapshot: proof
/// that the identity opens the stored data, before anything else is done.
pub async fn probe(source: &DownloadSource, chunks: &[ChunkEntry]) -> anyhow::Result<()> {
    match (&source.key, chunks.first()) {
        (Some(_), Some(first)) => source.fetch(first).await.map(drop),
        _ => Ok(()),
    }
}

/// Fetches one chunk and checks its size and SHA-256 against its entry.
async fn fetch_verified(
    storage: &dyn Storage,
    key: &str,
    entry: &ChunkEntry,
) -> anyhow::Result<Bytes> {
    crate::repo::retry::reread_on_integrity(|| fetch_once(storage, key, entry)).await
}

async fn fetch_once(storage: &dyn Storage, key: &str, entry: &ChunkEntry) -> anyhow::Result<Bytes> {
    let data = storage.get(key).await.map_err(|e| match storage_kind(&e) {
        Some(StorageErrorKind::NotFound) => {
            integrity(format!("chunk {key} is missing from the repository"))
        }
        _ => e,
    })?;
    if data.len() as u64 != entry.size {
        return Err(integrity(format!(
            "chunk {key} is {} bytes but the manifest says {}: it is truncated or was replaced",
            data.len(),
            entry.size
        )));
    }
    let (data, digest) = tokio::task::spawn_blocking(move || {
        let digest = hex::encode(Sha256::digest(&data));
        (data, digest)
    })
    .await?;
    if digest != entry.sha256 {
        return Err(integrity(format!(
            "chunk {key} is corrupt: its SHA-256 is {digest}, not {}",
            entry.sha256
        )));
    }
    Ok(data)
}

/// Reads a stream of verified chunks handed over by the downloader.
pub struct ChunkReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while !self.current.has_remaining() {
            match self.rx.blocking_recv() {
                Some(Ok(next)) => self.current = next,
                Some(Err(message)) => return Err(io::Error::other(message)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.remaining());
        self.current.copy_to_slice(&mut buf[..n]);
        Ok(n)
    }
}

/// Downloads `chunks` in parallel and runs `consume` on a blocking thread
/// reading them in order. A download failure wins over the consumer's
/// resulting read error.
pub async fn download<T: Send + 'static>(
    source: DownloadSource,
    chunks: Vec<ChunkEntry>,
    consume: impl FnOnce(ChunkReader) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(2);
    let consumer = tokio::task::spawn_blocking(move || {
        consume(ChunkReader {
            rx,
            current: Bytes::new(),
        })
    });
    let source = Arc::new(source);
    let mut fetches = futures::stream::iter(chunks.into_iter().map(|entry| {
        let source = source.clone();
        async move { source.fetch(&entry).await }
    }))
    .buffered(source.concurrency);
    let mut failure = None;
    while let Some(result) = fetches.next().await {
        match result {
            Ok(data) => {
                if tx.send(Ok(data)).await.is_err() {
                    break; // the consumer stopped; its error says why
                }
            }
            Err(e) => {
                let _ = tx.send(Err("a chunk download failed".into())).await;
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    drop(fetches);
    let consumed = consumer.await.context("the unpacking thread failed")?;
    match failure {
        Some(e) => Err(e),
        None => consumed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::local::LocalStorage;
    use std::io::Write;

    fn options() -> ChunkOptions {
        ChunkOptions {
            chunk_size: 1000,
            level: 1,
            workers: 0,
            encrypt_to: None,
        }
    }

    async fn round(dir: &Path) -> (Arc<dyn Storage>, Vec<ChunkEntry>, Vec<u8>) {
        round_with(dir, options()).await
    }

    async fn round_with(
        dir: &Path,
        options: ChunkOptions,
    ) -> (Arc<dyn Storage>, Vec<ChunkEntry>, Vec<u8>) {
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir));
        let data: Vec<u8> = (0..25_000u32).map(|i| (i % 97) as u8).collect();
        let input = data.clone();
        let target = UploadTarget {
            storage: storage.clone(),
            key_of: Box::new(|h| format!("data/{h}")),
            tags: Vec::new(),
            concurrency: 3,
            on_uploaded: Box::new(|_| {}),
        };
        let (entries, (), total) = upload(options, target, async { Ok(()) }, move |sink| {
            sink.write_all(&input)
        })
        .await
        .unwrap();
        assert_eq!(total, 25_000);
        assert_eq!(entries.len(), 25);
        (storage, entries, data)
    }

    use std::path::Path;

    fn source(storage: Arc<dyn Storage>) -> DownloadSource {
        DownloadSource {
            storage,
            key_of: Box::new(|h| format!("data/{h}")),
            concurrency: 4,
            key: None,
        }
    }

    #[tokio::test]
    async fn upload_then_download_round_trips_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, entries, data) = round(dir.path()).await;
        let out = download(source(storage), entries, |reader| {
            let mut out = Vec::new();
            zstd::stream::read::Decoder::new(reader)?.read_to_end(&mut out)?;
            Ok(out)
        })
        .await
        .unwrap();
        assert_eq!(out, data);
    }

    fn decompress(reader: ChunkReader) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(reader)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[tokio::test]
    async fn encrypted_chunks_are_stored_sealed_and_read_back_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let (path, public, _) = crate::crypt::tests::keypair(keys.path(), "key.txt");
        let (_, other_public, _) = crate::crypt::tests::keypair(keys.path(), "other.txt");
        let mut sealed = options();
        sealed.encrypt_to = crate::crypt::Recipients::parse(std::slice::from_ref(&public))
            .unwrap()
            .map(Arc::new);
        let (storage, entries, data) = round_with(dir.path(), sealed).await;
        let stored = std::fs::read(dir.path().join(format!("data/{}", entries[0].sha256))).unwrap();
        assert!(stored.starts_with(b"age-encryption.org/v1\n"));

        let identity = Arc::new(crate::crypt::Identities::load(&path).unwrap());
        let mut keyed = source(storage.clone());
        keyed.key = Some(identity);
        probe(&keyed, &entries).await.unwrap();
        assert_eq!(
            download(keyed, entries.clone(), decompress).await.unwrap(),
            data
        );

        // Without the key the consumer gets ciphertext, which is not zstd.
        assert!(
            download(source(storage.clone()), entries.clone(), decompress)
                .await
                .is_err()
        );

        // A chunk sealed to someone else, although its name matches: an
        // integrity error naming the chunk, before the consumer reads it.
        let mut stranger = options();
        stranger.encrypt_to = crate::crypt::Recipients::parse(&[other_public])
            .unwrap()
            .map(Arc::new);
        let other_dir = tempfile::tempdir().unwrap();
        let (_, foreign, _) = round_with(other_dir.path(), stranger).await;
        let victim = &entries[0];
        let bytes =
            std::fs::read(other_dir.path().join(format!("data/{}", foreign[0].sha256))).unwrap();
        std::fs::write(dir.path().join(format!("data/{}", victim.sha256)), &bytes).unwrap();
        let mut lying = entries.clone();
        lying[0].sha256 = foreign[0].sha256.clone();
        lying[0].size = foreign[0].size;
        std::fs::write(
            dir.path().join(format!("data/{}", foreign[0].sha256)),
            &bytes,
        )
        .unwrap();
        let mut keyed = source(storage);
        keyed.key = Some(Arc::new(crate::crypt::Identities::load(&path).unwrap()));
        let err = probe(&keyed, &lying).await.unwrap_err();
        assert_eq!(crate::error::kind_of(&err), crate::error::Kind::Integrity);
        assert!(err.to_string().contains(&foreign[0].sha256), "{err}");
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = seen.clone();
        let err = download(keyed, lying, move |mut reader| {
            let mut buf = [0u8; 100];
            while reader.read(&mut buf)? > 0 {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(crate::error::kind_of(&err), crate::error::Kind::Integrity);
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_corrupt_chunk_is_named_and_never_reaches_the_consumer() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, entries, _) = round(dir.path()).await;
        let victim = &entries[7];
        let path = dir.path().join(format!("data/{}", victim.sha256));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = seen.clone();
        let err = download(source(storage), entries.clone(), move |mut reader| {
            let mut buf = [0u8; 100];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                counter.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .await
        .unwrap_err();
        assert_eq!(crate::error::kind_of(&err), crate::error::Kind::Integrity);
        assert!(err.to_string().contains(&victim.sha256), "{err}");
        let before: u64 = entries[..7].iter().map(|e| e.size).sum();
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), before);
    }

    #[tokio::test]
    async fn identical_chunks_are_stored_once_and_listed_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path()));
        let puts = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = puts.clone();
        let target = UploadTarget {
            storage,
            key_of: Box::new(|h| format!("data/{h}")),
            tags: Vec::new(),
            concurrency: 4,
            on_uploaded: Box::new(move |_| {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }),
        };
        let (entries, (), _) = upload(options(), target, async { Ok(()) }, |sink| {
            sink.write_all(&[0u8; 10_000])
        })
        .await
        .unwrap();
        assert_eq!(entries.len(), 10);
        assert!(entries.iter().all(|e| e.sha256 == entries[0].sha256));
        assert_eq!(puts.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failing_producer_fails_the_upload() {
        let dir = tempfile::tempdir().unwrap();
        let target = UploadTarget {
            storage: Arc::new(LocalStorage::new(dir.path())),
            key_of: Box::new(|h| format!("data/{h}")),
            tags: Vec::new(),
            concurrency: 2,
            on_uploaded: Box::new(|_| {}),
        };
        let err = upload(options(), target, async { Ok(()) }, |sink| {
            sink.write_all(&[1u8; 5000])?;
            Err::<(), _>(io::Error::other("disk on fire"))
        })
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("disk on fire"), "{err:#}");
    }
}
