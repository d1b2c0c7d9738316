//! The backup's report: what the `--json` output and the metrics file show.

use serde::Serialize;

use crate::archive::manifest::{Consistency, QueueEntry};
use crate::rabbit::queue_type::QueueType;

/// A queue whose messages the snapshot does not hold.
#[derive(Debug, Clone, Serialize)]
pub struct UncoveredQueue {
    /// Virtual host.
    pub vhost: String,
    /// Queue name.
    pub name: String,
    /// Queue type.
    #[serde(rename = "type")]
    pub queue_type: QueueType,
    /// Messages at backup time.
    pub messages: u64,
    /// Why, when it is not simply the queue's type (a skip flag, a failed
    /// capture, a leader on another node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Milestones of a backup, in milliseconds since it started: what came
/// before the first byte of the store was read (connecting, checks, the
/// pause) and after the last chunk was stored are fixed costs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Phases {
    /// The archive started reading the store (after the pause, if any).
    pub first_read_ms: u64,
    /// The last chunk was stored.
    pub last_upload_ms: u64,
}

/// The result of a backup (`--json` schema).
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The new snapshot's id.
    pub id: String,
    /// Source node.
    pub node: String,
    /// How the tool talked to the node: `distribution` or `rabbitmqctl`.
    pub control: &'static str,
    /// Repository location, as given.
    pub repository: String,
    /// Where the snapshot is: its absolute directory, or its bucket, key
    /// prefix and endpoint.
    pub location: String,
    /// `stop-app` or `live`.
    pub consistency: Consistency,
    /// How long the broker was stopped, in milliseconds.
    pub pause_ms: u64,
    /// Wall time of the whole backup, in milliseconds.
    pub duration_ms: u64,
    /// When reading and uploading happened within that time.
    pub phases: Phases,
    /// Retention tier.
    pub tier: &'static str,
    /// Files archived.
    pub files: u64,
    /// Bytes of files archived.
    pub file_bytes: u64,
    /// Bytes stored in the repository.
    pub stored_bytes: u64,
    /// Chunks stored.
    pub chunks: u64,
    /// Messages in all queues.
    pub messages: u64,
    /// Messages the snapshot holds.
    pub covered_messages: u64,
    /// Every queue.
    pub queues: Vec<QueueEntry>,
    /// Queues whose messages are not in the snapshot (non-durable, skipped, failed captures).
    pub uncovered_queues: Vec<UncoveredQueue>,
    /// The age recipients every chunk is encrypted to; empty when plain.
    pub encrypted_to: Vec<String>,
    /// Anything the operator should know.
    pub warnings: Vec<String>,
    /// What the bucket's retention could do to snapshots (see `check-repo`).
    pub repository_warnings: Vec<String>,
}
