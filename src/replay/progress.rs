//! The replay's progress journal (`replay.json` in the restore's work
//! area): per queue, how many of its messages (in delivery order) the
//! broker has confirmed. Written and synced after confirms arrive, never
//! before, so `--resume` starts after the last confirmed message: a crash
//! can only make the broker hold again what was in flight (at most the
//! publisher's window), never lose a message.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::staging::replace_durably;

/// The journal's file name.
pub const FILE: &str = "replay.json";

/// One queue's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueProgress {
    /// Virtual host.
    pub vhost: String,
    /// Queue name.
    pub queue: String,
    /// Messages read from the snapshot and settled (confirmed, or excluded
    /// and dropped): the next run starts at this position.
    pub confirmed: u64,
    /// Of those, published into the queue.
    pub published: u64,
    /// Of those, excluded (`--exclude-routing-key`).
    pub excluded: u64,
    /// Every message of the queue is settled.
    pub done: bool,
    /// Messages in the snapshot's queue, once read to the end.
    pub total: Option<u64>,
    /// Publishing into it began (journalled before the first publish).
    pub started: bool,
    /// Runs interrupted after publishing into this queue: each may have
    /// left up to a window of duplicates.
    pub interrupted: u32,
}

/// The journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// In replay order.
    pub queues: Vec<QueueProgress>,
    /// The target queues were emptied (`--replace-messages`): never again.
    #[serde(default)]
    pub purged: bool,
    /// With `--append`: each target queue's count before the replay.
    #[serde(default)]
    pub before: Vec<u64>,
    #[serde(skip)]
    path: PathBuf,
}

impl Progress {
    /// Loads the journal in `area`, or starts an empty one there.
    pub fn open(area: &Path) -> anyhow::Result<Progress> {
        let path = area.join(FILE);
        let mut progress = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!("the replay journal {} is damaged: {e}", path.display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Progress::default(),
            Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        };
        progress.path = path;
        Ok(progress)
    }

    /// The entry of a queue, made at position 0 if new.
    pub fn entry(&mut self, vhost: &str, queue: &str) -> &mut QueueProgress {
        let at = match self
            .queues
            .iter()
            .position(|q| q.vhost == vhost && q.queue == queue)
        {
            Some(i) => i,
            None => {
                self.queues.push(QueueProgress {
                    vhost: vhost.into(),
                    queue: queue.into(),
                    ..QueueProgress::default()
                });
                self.queues.len() - 1
            }
        };
        &mut self.queues[at]
    }

    /// The entry of a queue, if it has one.
    pub fn get(&self, vhost: &str, queue: &str) -> Option<&QueueProgress> {
        self.queues
            .iter()
            .find(|q| q.vhost == vhost && q.queue == queue)
    }

    /// Writes and syncs the journal; each write passes the failpoint
    /// `replay:progress` (a crash test kills the tool at every one).
    pub fn save(&mut self) -> anyhow::Result<()> {
        crate::failpoint::hit("replay:progress")?;
        let tmp = self.path.with_extension("json.tmp");
        replace_durably(&self.path, &tmp, &serde_json::to_vec_pretty(self)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Progress::open(dir.path()).unwrap();
        assert!(p.queues.is_empty());
        p.entry("/", "a").confirmed = 7;
        p.entry("v", "b").done = true;
        p.entry("/", "a").published = 6;
        p.save().unwrap();
        let back = Progress::open(dir.path()).unwrap();
        assert_eq!(back.get("/", "a").unwrap().confirmed, 7);
        assert_eq!(back.get("/", "a").unwrap().published, 6);
        assert!(back.get("v", "b").unwrap().done);
        assert_eq!(back.queues.len(), 2);
    }

    #[test]
    fn a_damaged_journal_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let e = Progress::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains(FILE), "{e}");
    }
}
