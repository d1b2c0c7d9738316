//! The cluster restore's journal (`restore --cluster`, DESIGN §13):
//! definitions once, then every member snapshot's part replayed into the
//! running target cluster, one part at a time, each message into its queue
//! wherever that queue now lives.
//!
//! ```text
//!  Staged ──import──▶ Imported ──[the swapped part]──purge (--replace-messages)
//!  or count (--append)──▶ Replaying: per part  Todo ──download+verify──▶ Fetched
//!  ──replay──▶ Replayed ;  all parts done ──counts──▶ Done
//!  swapped part (in Imported, before any other message is touched):
//!  Todo ──download+verify──▶ Fetched ──▶ Swapping ──single-node machine──▶ Swapped
//! ```
//!
//! The part of the member whose name is the node's own may be swapped
//! (`PartMethod::Swap`, [`super::swap`]): the single-node restore machine
//! ([`crate::restore::machine`]) runs in `part-<i>` with its own journal
//! (`part-<i>/journal.json`), stopping only this member, and is resumed
//! from there; its failure before or during the swap rolls it back, and
//! since no other part has been touched then, the cluster restore ends
//! with the target's previous messages (definitions stay imported).
//!
//! The journal (`cluster-journal.json` in a work area beside the data
//! directory of the node the tool runs on) is written and synced BEFORE
//! each step is taken and after it is done: a part's messages are
//! downloaded into `part-<i>/new` and replayed with the single-node replay
//! ([`crate::replay::run`]), whose own journal (`part-<i>/replay.json`)
//! holds each queue's confirmed position, so `--resume` continues after the
//! last confirmed message. At worst a message in flight at a crash is
//! published twice; none is lost. Every journal write passes the failpoint
//! `cluster-restore:journal:<step>` (a crash test kills the tool at each).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Kind, class};
use crate::failpoint::hit;
use crate::rabbit::queue_type::QueueType;
use crate::staging::replace_durably;

/// The journal's file name in the work area.
pub const JOURNAL: &str = "cluster-journal.json";
/// The work area's purpose (`<MARK>-cluster-restore-<dir>-<id>`).
pub const PURPOSE: &str = "cluster-restore";
/// The journal format this version writes and reads.
const VERSION: u32 = 2;
/// Journals this version resumes (version 1 had no swapped part).
const READS: [u32; 2] = [1, 2];

/// How far a cluster restore got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Every check passed; nothing on the target changed yet.
    Staged,
    /// Definitions imported (merged); no message touched.
    Imported,
    /// Parts are being replayed (the target queues were emptied first with
    /// `--replace-messages`).
    Replaying,
    /// Every part replayed and the counts checked.
    Done,
}

/// How a part's messages are put back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartMethod {
    /// Decoded and published into the running cluster.
    #[default]
    Replay,
    /// The member's classic stores swapped onto the node of the same name
    /// (the one the tool runs on), its logical records replayed after.
    Swap,
}

impl PartMethod {
    /// The name in reports.
    pub fn label(self) -> &'static str {
        match self {
            PartMethod::Replay => "replay",
            PartMethod::Swap => "swap",
        }
    }
}

/// Where one part stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartState {
    /// Not downloaded (a partial download is started again).
    Todo,
    /// Downloaded and verified into `part-<i>/new`; being replayed.
    Fetched,
    /// Every message of its queues confirmed; its files removed.
    Replayed,
    /// Swap: the single-node machine in `part-<i>` (its own journal) is
    /// moving this member's stores; `--resume` resumes it.
    Swapping,
    /// Swap: stores swapped in and counted, logical records replayed.
    Swapped,
}

impl PartState {
    /// Its messages are restored.
    pub fn done(self) -> bool {
        matches!(self, PartState::Replayed | PartState::Swapped)
    }
}

/// A queue a part replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedQueue {
    /// Virtual host.
    pub vhost: String,
    /// Queue name.
    pub name: String,
    /// Its type at backup time.
    #[serde(rename = "type")]
    pub queue_type: QueueType,
    /// Messages the member snapshot holds of it.
    pub messages: u64,
}

impl PlannedQueue {
    /// `(vhost, name)`.
    pub fn key(&self) -> (String, String) {
        (self.vhost.clone(), self.name.clone())
    }
}

/// One member snapshot's part, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartJournal {
    /// The member the snapshot was taken on.
    pub node: String,
    /// Its snapshot id.
    pub snapshot: String,
    /// The queues replayed from it: those with messages it holds and no
    /// other part does.
    pub queues: Vec<PlannedQueue>,
    /// Where it stands.
    pub state: PartState,
    /// How its messages are put back.
    #[serde(default)]
    pub method: PartMethod,
    /// Why that method.
    #[serde(default)]
    pub reason: String,
    /// Once replayed: messages published into each of `queues`.
    #[serde(default)]
    pub published: Vec<u64>,
    /// Once replayed: messages excluded (`--exclude-routing-key`).
    #[serde(default)]
    pub excluded: u64,
    /// Once replayed: queues whose replay was interrupted and resumed
    /// (they may hold up to a publisher window twice).
    #[serde(default)]
    pub interrupted: Vec<(String, String)>,
}

impl PartJournal {
    /// Messages published from this part.
    pub fn published_total(&self) -> u64 {
        self.published.iter().sum()
    }
}

/// `--exclude-routing-key`, kept for `--resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exclusion {
    /// Routing-key globs.
    pub globs: Vec<String>,
    /// Drop instead of moving to `<queue>.excluded`.
    pub drop: bool,
}

/// The journal of one cluster restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Journal format.
    pub version: u32,
    /// The cluster of the snapshot.
    pub cluster: String,
    /// The cluster snapshot's id.
    pub cluster_snapshot: String,
    /// The node the tool runs against.
    pub target_node: String,
    /// Member snapshot whose definitions are imported: `(node, id)`.
    pub definitions_from: (String, String),
    /// Progress.
    pub phase: Phase,
    /// One per member snapshot, in replay order.
    pub parts: Vec<PartJournal>,
    /// Empty the replayed queues first (`--replace-messages`).
    pub purge: bool,
    /// Add to what the target queues hold (`--append`).
    pub append: bool,
    /// A swapped part keeps the member's previous stores (`--keep-old`).
    #[serde(default)]
    pub keep_old: bool,
    /// With `--append`: each queue's count before the replay, in
    /// [`Journal::queues`] order.
    #[serde(default)]
    pub before: Vec<u64>,
    /// `--exclude-routing-key`.
    pub exclude: Option<Exclusion>,
}

impl Journal {
    /// A new journal in phase [`Phase::Staged`].
    pub fn new(
        cluster: &str,
        cluster_snapshot: &str,
        target_node: &str,
        definitions_from: (String, String),
        parts: Vec<PartJournal>,
    ) -> Journal {
        Journal {
            version: VERSION,
            cluster: cluster.into(),
            cluster_snapshot: cluster_snapshot.into(),
            target_node: target_node.into(),
            definitions_from,
            phase: Phase::Staged,
            parts,
            purge: false,
            append: false,
            keep_old: false,
            before: Vec::new(),
            exclude: None,
        }
    }

    /// Every replayed queue once, in part order (a queue is in one part;
    /// the first one's entry stands for it).
    pub fn queues(&self) -> Vec<&PlannedQueue> {
        let mut out: Vec<&PlannedQueue> = Vec::new();
        for q in self.parts.iter().flat_map(|p| p.queues.iter()) {
            if !out.iter().any(|o| o.vhost == q.vhost && o.name == q.name) {
                out.push(q);
            }
        }
        out
    }

    /// The swapped part whose swap is under way, if any.
    pub fn swapping(&self) -> Option<&PartJournal> {
        self.parts.iter().find(|p| p.state == PartState::Swapping)
    }

    /// `(vhost, name)` of every replayed queue, in [`Journal::queues`] order.
    pub fn queue_keys(&self) -> Vec<(String, String)> {
        self.queues().iter().map(|q| q.key()).collect()
    }

    /// Messages published into `vhost`/`name` over every part, and the
    /// part snapshots' message counts of it.
    pub fn published(&self, vhost: &str, name: &str) -> (u64, u64) {
        self.parts
            .iter()
            .flat_map(|p| p.queues.iter().zip(p.published.iter()))
            .filter(|(q, _)| q.vhost == vhost && q.name == name)
            .fold((0, 0), |(p, m), (q, n)| (p + n, m + q.messages))
    }
}

/// A cluster restore's work area and its journal.
#[derive(Debug)]
pub struct Area {
    path: PathBuf,
    /// The journal as last saved.
    pub journal: Journal,
}

impl Area {
    /// Creates the work area beside `data_dir` and writes its first journal.
    pub fn create(data_dir: &Path, journal: Journal) -> anyhow::Result<Area> {
        let mut staging =
            crate::staging::Staging::create(data_dir, PURPOSE, &journal.cluster_snapshot)?;
        let mut area = Area {
            path: staging.path().to_path_buf(),
            journal,
        };
        area.save("staged")?;
        staging.keep();
        Ok(area)
    }

    /// Loads the journal of an existing area.
    pub fn load(path: &Path) -> anyhow::Result<Area> {
        let file = path.join(JOURNAL);
        let bytes = std::fs::read(&file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        let journal: Journal = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("the journal {} is damaged: {e}", file.display()))?;
        if !READS.contains(&journal.version) {
            anyhow::bail!(
                "the journal {} has format {}, this rabbitmq-backup reads {READS:?}",
                file.display(),
                journal.version
            );
        }
        Ok(Area {
            path: path.to_path_buf(),
            journal,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Part `i`'s directory (its unpacked snapshot in `new/`, its replay
    /// journal beside).
    pub fn part_dir(&self, i: usize) -> PathBuf {
        self.path.join(format!("part-{i}"))
    }

    /// Writes and syncs the journal, passing `cluster-restore:journal:<step>`.
    pub fn save(&mut self, step: &str) -> anyhow::Result<()> {
        hit(&format!("cluster-restore:journal:{step}"))?;
        let path = self.path.join(JOURNAL);
        let tmp = self.path.join(format!("{JOURNAL}.tmp"));
        replace_durably(&path, &tmp, &serde_json::to_vec_pretty(&self.journal)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    }

    /// Enters `phase`, journalled.
    pub fn enter(&mut self, phase: Phase) -> anyhow::Result<()> {
        self.journal.phase = phase;
        let label = match phase {
            Phase::Staged => "staged",
            Phase::Imported => "imported",
            Phase::Replaying => "replaying",
            Phase::Done => "done",
        };
        self.save(label)
    }

    /// Sets part `i`'s state, journalled.
    pub fn set_part(&mut self, i: usize, state: PartState) -> anyhow::Result<()> {
        self.journal.parts[i].state = state;
        let label = match state {
            PartState::Todo => "todo",
            PartState::Fetched => "fetched",
            PartState::Replayed => "replayed",
            PartState::Swapping => "swapping",
            PartState::Swapped => "swapped",
        };
        self.save(&format!("{label}:{i}"))
    }

    /// Removes the finished work area.
    pub fn remove(self) -> anyhow::Result<()> {
        hit("cluster-restore:remove-area")?;
        std::fs::remove_dir_all(&self.path)
            .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", self.path.display()))
    }

    /// The error that leaves the area for `--resume` (exit 8).
    pub fn attention(&self, e: anyhow::Error) -> anyhow::Error {
        let j = &self.journal;
        if let Some(p) = j.swapping() {
            return e.context(class(
                Kind::NeedsAttention,
                format!(
                    "the restore of cluster snapshot {} of {:?} stopped while swapping the part of {} onto {}; that member's broker may be stopped, the other members keep running. The work area {} holds the journals and the member's previous message stores: run `rabbitmq-backup restore --cluster {} --resume` to finish or undo the swap, then replay the other parts",
                    j.cluster_snapshot,
                    j.cluster,
                    p.node,
                    j.target_node,
                    self.path.display(),
                    j.cluster
                ),
            ));
        }
        e.context(class(
            Kind::NeedsAttention,
            format!(
                "the restore of cluster snapshot {} of {:?} onto {} stopped at phase {:?}; the brokers keep running and hold the messages confirmed so far. The work area {} holds the journal: fix the cause, then run `rabbitmq-backup restore --cluster {} --resume` to publish the rest (nothing is published twice but what was in flight)",
                j.cluster_snapshot,
                j.cluster,
                j.target_node,
                j.phase,
                self.path.display(),
                j.cluster
            ),
        ))
    }
}

/// The cluster restores of the node with `data_dir` that were interrupted
/// after changing something. Areas whose restore changed nothing
/// (`Staged`, no journal) or ended (`Done`) are removed, unless
/// `look_only`. Call only while holding the node's lock.
pub fn sweep(data_dir: &Path, look_only: bool) -> anyhow::Result<Vec<Area>> {
    let mut pending = Vec::new();
    for path in crate::staging::areas(data_dir, PURPOSE)? {
        let area = if path.join(JOURNAL).exists() {
            Some(Area::load(&path).map_err(|e| {
                e.context(class(
                    Kind::NeedsAttention,
                    format!(
                        "the journal of an earlier cluster restore in {} cannot be read: inspect it and remove it by hand",
                        path.display()
                    ),
                ))
            })?)
        } else {
            None // killed before its first journal: nothing was changed
        };
        match area {
            Some(a) if !matches!(a.journal.phase, Phase::Staged | Phase::Done) => pending.push(a),
            _ if look_only => {}
            _ => {
                tracing::warn!(
                    "removed {}, left by a cluster restore that had not changed anything or had finished",
                    path.display()
                );
                std::fs::remove_dir_all(&path)?;
            }
        }
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(node: &str, queues: &[&str]) -> PartJournal {
        PartJournal {
            node: node.into(),
            snapshot: "20261201T000000Z-00000000".into(),
            queues: queues
                .iter()
                .map(|q| PlannedQueue {
                    vhost: "/".into(),
                    name: q.to_string(),
                    queue_type: QueueType::Classic,
                    messages: 5,
                })
                .collect(),
            state: PartState::Todo,
            method: PartMethod::Replay,
            reason: String::new(),
            published: Vec::new(),
            excluded: 0,
            interrupted: Vec::new(),
        }
    }

    fn journal() -> Journal {
        Journal::new(
            "prod",
            "20261201T000000Z-00000000",
            "rabbit@t",
            ("rabbit@a".into(), "20261201T000000Z-00000000".into()),
            vec![part("rabbit@a", &["a", "q"]), part("rabbit@b", &["b"])],
        )
    }

    #[test]
    fn the_journal_survives_a_reload_and_sums_published_per_queue() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("rabbit@t");
        std::fs::create_dir(&data_dir).unwrap();
        let mut area = Area::create(&data_dir, journal()).unwrap();
        area.journal.parts[0].published = vec![3, 4];
        area.set_part(0, PartState::Replayed).unwrap();
        area.enter(Phase::Replaying).unwrap();
        let back = Area::load(area.path()).unwrap();
        assert_eq!(back.journal, area.journal);
        assert_eq!(
            back.journal.queue_keys(),
            [("/", "a"), ("/", "q"), ("/", "b")].map(|(v, q)| (v.to_string(), q.to_string()))
        );
        assert_eq!(back.journal.published("/", "q"), (4, 5));
        assert_eq!(back.journal.parts[0].published_total(), 7);
    }

    #[test]
    fn a_swapped_part_is_journalled_and_a_version_1_journal_still_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("rabbit@t");
        std::fs::create_dir(&data_dir).unwrap();
        let mut j = journal();
        j.parts[1].method = PartMethod::Swap;
        let mut area = Area::create(&data_dir, j).unwrap();
        area.enter(Phase::Imported).unwrap();
        area.set_part(1, PartState::Swapping).unwrap();
        let back = Area::load(area.path()).unwrap();
        assert_eq!(back.journal.swapping().unwrap().node, "rabbit@b");
        let e = back.attention(anyhow::anyhow!("killed"));
        assert!(
            format!("{e:#}").contains("finish or undo the swap"),
            "{e:#}"
        );
        area.set_part(1, PartState::Swapped).unwrap();
        assert!(
            Area::load(area.path()).unwrap().journal.parts[1]
                .state
                .done()
        );
        assert!(area.journal.swapping().is_none());
        // Written by the version before swapped parts: no method, no keep_old.
        let mut v1 = serde_json::to_value(journal()).unwrap();
        v1["version"] = 1.into();
        v1.as_object_mut().unwrap().remove("keep_old");
        for p in v1["parts"].as_array_mut().unwrap() {
            p.as_object_mut().unwrap().remove("method");
            p.as_object_mut().unwrap().remove("reason");
        }
        std::fs::write(area.path().join(JOURNAL), v1.to_string()).unwrap();
        let old = Area::load(area.path()).unwrap();
        assert!(
            old.journal
                .parts
                .iter()
                .all(|p| p.method == PartMethod::Replay)
        );
    }

    #[test]
    fn sweep_keeps_interrupted_restores_and_removes_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("rabbit@t");
        std::fs::create_dir(&data_dir).unwrap();
        let area = Area::create(&data_dir, journal()).unwrap();
        let path = area.path().to_path_buf();
        // Staged: nothing changed yet, removed.
        assert!(sweep(&data_dir, true).unwrap().is_empty());
        assert!(path.exists(), "look_only removes nothing");
        assert!(sweep(&data_dir, false).unwrap().is_empty());
        assert!(!path.exists());
        let mut area = Area::create(&data_dir, journal()).unwrap();
        area.enter(Phase::Imported).unwrap();
        let pending = sweep(&data_dir, false).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].journal.phase, Phase::Imported);
        std::fs::write(area.path().join(JOURNAL), b"{damaged").unwrap();
        let e = sweep(&data_dir, false).unwrap_err();
        assert_eq!(crate::error::kind_of(&e), Kind::NeedsAttention);
        assert!(area.path().exists(), "never removed when unreadable");
    }
}
