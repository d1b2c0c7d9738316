//! A queue's logical records cut into record files of bounded size, each a
//! complete record file (`crate::message::record`), handed to the archive
//! writer as they fill: a tar entry needs its size before its bytes, and a
//! queue may be far larger than memory. The files of a queue are
//! `logical/<vhost dir>/<queue dir>/000000.rblr`, `000001.rblr`… in queue
//! order (the directory names are RabbitMQ's own for classic queues).

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::archive::paths::LOGICAL;
use crate::message::Message;
use crate::message::record::RecordWriter;
use crate::rabbit::datadir;

/// Bytes at which a record file is closed and the next one started.
pub const SEGMENT_BYTES: usize = 8 << 20;

/// One record file for the archive.
#[derive(Debug)]
pub struct Segment {
    /// Path in the archive.
    pub path: String,
    /// The whole file.
    pub bytes: Vec<u8>,
}

/// The directory holding a queue's record files.
pub fn queue_dir(vhost: &str, queue: &str) -> String {
    let vhost_dir = datadir::VhostDir::of(vhost);
    let vh = vhost_dir.name();
    format!(
        "{LOGICAL}/{vh}/{}",
        datadir::queue_dir_name(vhost, queue.as_bytes())
    )
}

/// What was written for one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Directory of its record files.
    pub dir: String,
    /// Records (messages).
    pub records: u64,
    /// Record files.
    pub files: u64,
    /// Bytes of all its record files.
    pub bytes: u64,
    /// SHA-256 (hex) of its record files, concatenated in order.
    pub sha256: String,
}

/// Writes one queue's records, sending each record file when it is full.
pub struct SegmentWriter {
    vhost: String,
    queue: String,
    dir: String,
    limit: usize,
    current: Option<RecordWriter<Vec<u8>>>,
    out: mpsc::Sender<Segment>,
    hasher: Sha256,
    written: Written,
}

impl SegmentWriter {
    /// Starts the records of `queue` in `vhost`; files go to `out`.
    pub fn new(
        vhost: &str,
        queue: &str,
        limit: usize,
        out: mpsc::Sender<Segment>,
    ) -> SegmentWriter {
        let dir = queue_dir(vhost, queue);
        SegmentWriter {
            vhost: vhost.to_string(),
            queue: queue.to_string(),
            written: Written {
                dir: dir.clone(),
                ..Written::default()
            },
            dir,
            limit,
            current: None,
            out,
            hasher: Sha256::new(),
        }
    }

    /// Appends one message (in queue order).
    pub async fn write(&mut self, message: &Message) -> anyhow::Result<()> {
        if self.current.is_none() {
            self.current = Some(RecordWriter::new(Vec::new(), &self.vhost, &self.queue)?);
        }
        let file = self.current.as_mut().expect("a record file is open");
        file.write(message)?;
        self.written.records += 1;
        if file.bytes_written() as usize >= self.limit {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        let Some(file) = self.current.take() else {
            return Ok(());
        };
        let bytes = file.into_inner();
        self.hasher.update(&bytes);
        self.written.bytes += bytes.len() as u64;
        let path = format!("{}/{:06}.rblr", self.dir, self.written.files);
        self.written.files += 1;
        self.out
            .send(Segment { path, bytes })
            .await
            .map_err(|_| anyhow::anyhow!("the archive writer stopped"))
    }

    /// Sends the last record file (a queue without messages still gets one,
    /// holding only the header) and says what was written.
    pub async fn finish(mut self) -> anyhow::Result<Written> {
        if self.written.files == 0 && self.current.is_none() {
            self.current = Some(RecordWriter::new(Vec::new(), &self.vhost, &self.queue)?);
        }
        self.flush().await?;
        self.written.sha256 = hex::encode(self.hasher.finalize());
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Properties;
    use crate::message::record::RecordReader;
    use bytes::Bytes;

    fn message(i: usize, size: usize) -> Message {
        Message {
            exchange: "x".into(),
            routing_keys: vec![format!("k{i}")],
            properties: Properties::default(),
            body: Bytes::from(vec![i as u8; size]),
        }
    }

    async fn collect(limit: usize, messages: &[Message]) -> (Written, Vec<Segment>) {
        let (tx, mut rx) = mpsc::channel(1);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Some(s) = rx.recv().await {
                all.push(s);
            }
            all
        });
        let mut w = SegmentWriter::new("/", "orders", limit, tx);
        for m in messages {
            w.write(m).await.unwrap();
        }
        let written = w.finish().await.unwrap();
        (written, reader.await.unwrap())
    }

    fn read_back(segments: &[Segment]) -> Vec<Message> {
        let mut out = Vec::new();
        for s in segments {
            let mut r = RecordReader::new(&s.bytes[..], s.bytes.len() as u64).unwrap();
            assert_eq!((r.vhost(), r.queue()), ("/", "orders"));
            while let Some(m) = r.next_message().unwrap() {
                out.push(m);
            }
        }
        out
    }

    #[tokio::test]
    async fn records_are_cut_into_complete_files_in_order() {
        let messages: Vec<Message> = (0..10).map(|i| message(i, 300)).collect();
        let (written, segments) = collect(1000, &messages).await;
        assert_eq!(written.records, 10);
        assert!(segments.len() > 2, "{}", segments.len());
        assert_eq!(written.files, segments.len() as u64);
        assert_eq!(read_back(&segments), messages);
        let dir = queue_dir("/", "orders");
        assert_eq!(segments[0].path, format!("{dir}/000000.rblr"));
        assert_eq!(segments[1].path, format!("{dir}/000001.rblr"));
        let all: Vec<u8> = segments.iter().flat_map(|s| s.bytes.clone()).collect();
        assert_eq!(written.sha256, hex::encode(Sha256::digest(&all)));
        assert_eq!(written.bytes, all.len() as u64);
    }

    #[tokio::test]
    async fn an_empty_queue_gets_one_file_with_its_header() {
        let (written, segments) = collect(1000, &[]).await;
        assert_eq!((written.records, written.files), (0, 1));
        assert!(read_back(&segments).is_empty());
    }

    #[test]
    fn queue_directories_follow_rabbitmq_names() {
        let dir = queue_dir("/", "orders");
        assert!(
            dir.starts_with("logical/628WB79CIFDYO9LJI6DKMI09L/"),
            "{dir}"
        );
        assert_ne!(dir, queue_dir("/", "orders2"));
        crate::archive::paths::check_archive_path(&dir).unwrap();
    }
}
