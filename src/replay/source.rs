//! Where replayed messages come from: one ordered stream of messages per
//! queue, read and made ready to publish on a blocking thread, handed over
//! in batches. Classic queues come from the snapshot's files through the
//! store reader (§11); quorum queues and streams from their logical records
//! (§12). A new origin is one more [`Origin`] variant and its arm in
//! [`produce`].

use std::path::Path;

use tokio::sync::mpsc;

use super::outgoing::{Outgoing, Preparer};
use crate::archive::manifest::LogicalEntry;
use crate::logical::LogicalQueue;
use crate::store::Store;

/// How a queue's messages are stored in the unpacked snapshot.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Classic queue files under `<root>/msg_stores`.
    Files,
    /// Logical record files (quorum queue, stream), in order.
    Logical(LogicalQueue),
}

/// One queue of the snapshot, to be replayed.
#[derive(Debug, Clone)]
pub struct QueueSource {
    /// Virtual host.
    pub vhost: String,
    /// Queue name.
    pub queue: String,
    /// Where its messages are.
    pub origin: Origin,
}

/// Every queue with messages in a snapshot unpacked at `root` (the
/// directory holding `msg_stores/` and `logical/`, whose manifest lists
/// `logical`), in vhost then name order.
pub fn find(root: &Path, logical: &[LogicalEntry]) -> anyhow::Result<Vec<QueueSource>> {
    let mut out = Vec::new();
    if root.join("msg_stores").exists() {
        let store = Store::open(root).map_err(|e| e.into_anyhow())?;
        for note in &store.notes {
            tracing::warn!("{note}");
        }
        out.extend(store.queues().map(|q| QueueSource {
            vhost: q.vhost.clone(),
            queue: q.name.clone(),
            origin: Origin::Files,
        }));
    }
    out.extend(
        crate::logical::find(root, logical)?
            .into_iter()
            .map(|f| QueueSource {
                vhost: f.vhost.clone(),
                queue: f.queue.clone(),
                origin: Origin::Logical(f),
            }),
    );
    out.sort_by(|a, b| (&a.vhost, &a.queue).cmp(&(&b.vhost, &b.queue)));
    Ok(out)
}

/// Messages handed over at once: one wake-up of the publisher per batch,
/// not per message.
const BATCH_MESSAGES: usize = 128;
/// A batch is closed once its bodies reach this (or holds one larger
/// message): with [`CHANNEL_BATCHES`], what waits between the threads is
/// bounded in bytes, not by the queue.
const BATCH_BYTES: usize = 1 << 20;
/// Batches the reading thread may be ahead of the publisher.
pub const CHANNEL_BATCHES: usize = 8;

/// What the reading thread sends the publisher.
#[derive(Debug)]
pub enum Item {
    /// The next messages of queue `index`, in delivery order.
    Messages {
        /// Index into the job's queues.
        index: usize,
        /// The messages, ready to publish.
        messages: Vec<Outgoing>,
    },
    /// Queue `index` has no more messages; `total` were read in all.
    End {
        /// Index into the job's queues.
        index: usize,
        /// Messages in the queue, skipped ones included.
        total: u64,
        /// What the reader left out (transient messages, damaged entries).
        notes: Vec<String>,
    },
}

/// Reads `queues` in order, skipping the first `skip[i]` messages of each
/// (already confirmed), into `tx` in batches. Runs on a blocking thread;
/// stops quietly when the publisher goes away.
pub fn produce(
    root: &Path,
    work: &Path,
    queues: &[QueueSource],
    skip: &[u64],
    mut prepare: Preparer,
    tx: mpsc::Sender<anyhow::Result<Item>>,
) {
    if let Err(e) = read_all(root, work, queues, skip, &mut prepare, &tx) {
        let _ = tx.blocking_send(Err(e));
    }
}

/// The batch being filled for one queue.
struct Batcher<'a> {
    tx: &'a mpsc::Sender<anyhow::Result<Item>>,
    index: usize,
    messages: Vec<Outgoing>,
    bytes: usize,
}

impl Batcher<'_> {
    /// Adds a message; false once the publisher is gone.
    fn push(&mut self, out: Outgoing) -> bool {
        self.bytes += out.body.len();
        self.messages.push(out);
        if self.messages.len() >= BATCH_MESSAGES || self.bytes >= BATCH_BYTES {
            return self.flush();
        }
        true
    }

    fn flush(&mut self) -> bool {
        if self.messages.is_empty() {
            return true;
        }
        self.bytes = 0;
        let messages = std::mem::replace(&mut self.messages, Vec::with_capacity(BATCH_MESSAGES));
        self.tx
            .blocking_send(Ok(Item::Messages {
                index: self.index,
                messages,
            }))
            .is_ok()
    }

    /// Sends what is left and the queue's end.
    fn end(mut self, total: u64, notes: Vec<String>) -> bool {
        self.flush()
            && self
                .tx
                .blocking_send(Ok(Item::End {
                    index: self.index,
                    total,
                    notes,
                }))
                .is_ok()
    }
}

fn read_all(
    root: &Path,
    work: &Path,
    queues: &[QueueSource],
    skip: &[u64],
    prepare: &mut Preparer,
    tx: &mpsc::Sender<anyhow::Result<Item>>,
) -> anyhow::Result<()> {
    let store = if queues.iter().any(|q| matches!(q.origin, Origin::Files)) {
        Some(Store::open(root).map_err(|e| e.into_anyhow())?)
    } else {
        None
    };
    // The shared store is scanned once per vhost, not once per queue.
    let mut reader: Option<(String, crate::store::VhostReader, tempfile::TempDir)> = None;
    for (index, q) in queues.iter().enumerate() {
        let skip = skip.get(index).copied().unwrap_or(0);
        let mut batch = Batcher {
            tx,
            index,
            messages: Vec::with_capacity(BATCH_MESSAGES),
            bytes: 0,
        };
        match &q.origin {
            Origin::Files => {
                let store = store.as_ref().expect("opened above");
                if reader.as_ref().is_none_or(|(v, _, _)| *v != q.vhost) {
                    drop(reader.take()); // its location index goes first
                    let dir = tempfile::tempdir_in(work)?;
                    let r = store
                        .vhost(&q.vhost, dir.path())
                        .map_err(|e| e.into_anyhow())?;
                    reader = Some((q.vhost.clone(), r, dir));
                }
                let (_, r, _) = reader.as_ref().expect("set above");
                let dirs = store
                    .queues()
                    .find(|d| d.vhost == q.vhost && d.name == q.queue)
                    .ok_or_else(|| {
                        anyhow::anyhow!("queue {:?} in vhost {:?} has no files", q.queue, q.vhost)
                    })?;
                let mut messages = r.queue(dirs);
                for item in messages.by_ref() {
                    // What was read before a damaged entry is still published.
                    let item = match item {
                        Ok(item) => item,
                        Err(e) => {
                            batch.flush();
                            return Err(e.into_anyhow());
                        }
                    };
                    if item.position < skip {
                        continue;
                    }
                    if !batch.push(prepare.prepare(item.position, item.message)) {
                        return Ok(());
                    }
                }
                let s = messages.summary();
                let total = s.messages;
                let mut notes: Vec<String> = s.dropped.clone();
                if s.transient_skipped > 0 {
                    notes.push(format!(
                        "{} transient messages left out (RabbitMQ discards them at boot)",
                        s.transient_skipped
                    ));
                }
                if !batch.end(total, notes) {
                    return Ok(());
                }
            }
            Origin::Logical(logical) => {
                let mut records = logical.messages();
                let mut position = 0u64;
                loop {
                    let message = match records.next_message() {
                        Ok(Some(message)) => message,
                        Ok(None) => break,
                        Err(e) => {
                            batch.flush();
                            return Err(e);
                        }
                    };
                    if position >= skip && !batch.push(prepare.prepare(position, message)) {
                        return Ok(());
                    }
                    position += 1;
                }
                if !batch.end(position, Vec::new()) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
