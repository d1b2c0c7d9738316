//! What a restore did (or would do): the `--json` schema and the human summary.

use serde::Serialize;

use crate::archive::manifest::{Capture, Manifest, QueueEntry};
use crate::rabbit::ctl::QueueStatus;
use crate::rabbit::queue_type::QueueType;

pub use crate::exclude::mover::Outcome as ExclusionOutcome;

/// One queue's outcome (`--json` schema).
#[derive(Debug, Clone, Serialize)]
pub struct QueueOutcome {
    /// Virtual host.
    pub vhost: String,
    /// Queue name.
    pub name: String,
    /// Queue type.
    #[serde(rename = "type")]
    pub queue_type: QueueType,
    /// Messages at backup time.
    pub expected: u64,
    /// Messages now (absent for a dry run).
    pub actual: Option<u64>,
    /// What became of it.
    pub status: QueueState,
}

/// What became of a queue (`status` in `--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueState {
    /// Every message is back.
    Ok,
    /// More than at backup time: something was published since.
    More,
    /// Fewer, for a reason the manifest recorded (see the warnings).
    ExpectedShortfall,
    /// Fewer, for no known reason, or the queue is gone (the restore fails).
    Missing,
    /// The snapshot does not hold its messages (quorum, stream).
    NotCovered,
    /// A dry run would restore it.
    Planned,
    /// A queue on the node whose messages the restore replaces.
    Replaced,
    /// A replay added the snapshot's messages after those it held (`--append`).
    AppendedTo,
    /// Fewer than replayed: a consumer, a TTL or a length limit took some
    /// (a warning, not a failure).
    Fewer,
    /// In the snapshot as logical records (quorum queue, stream), which only
    /// a replay brings back.
    LogicalRecords,
}

impl QueueState {
    /// The name in `--json` and the human summary.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueState::Ok => "ok",
            QueueState::More => "more",
            QueueState::ExpectedShortfall => "expected-shortfall",
            QueueState::Missing => "missing",
            QueueState::NotCovered => "not-covered",
            QueueState::Planned => "planned",
            QueueState::Replaced => "replaced",
            QueueState::AppendedTo => "appended-to",
            QueueState::Fewer => "fewer",
            QueueState::LogicalRecords => "logical-records",
        }
    }
}

impl std::fmt::Display for QueueState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of a restore (`--json` schema).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    /// Snapshot id.
    pub snapshot: String,
    /// The snapshot's node.
    pub from_node: String,
    /// The node restored.
    pub node: String,
    /// How the messages were (or would be) put on the node: `swap`,
    /// `replay`, or `swap+replay` (the classic stores swapped in, then the
    /// quorum queues' and streams' logical records replayed).
    pub method: &'static str,
    /// Why that method (`auto` explains its choice).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub method_reason: String,
    /// Repository location.
    pub repository: String,
    /// Nothing was changed.
    pub dry_run: bool,
    /// Only definitions were imported.
    pub definitions_only: bool,
    /// Definitions were imported (merged).
    pub definitions_imported: bool,
    /// The node already held every definition of the snapshot unchanged,
    /// so none were sent (`definitions_imported` is still true: the node
    /// holds them).
    pub definitions_already_held: bool,
    /// Vhosts restored: their message stores swapped in, or their
    /// messages replayed (see `method`).
    pub vhosts_restored: Vec<String>,
    /// How long the broker was stopped, in milliseconds.
    pub pause_ms: u64,
    /// Wall time, in milliseconds.
    pub duration_ms: u64,
    /// Per-queue outcome.
    pub queues: Vec<QueueOutcome>,
    /// Queues whose messages were not restored: not in the snapshot, or
    /// logical records (quorum queues, streams) that need a replay.
    pub uncovered_queues: Vec<QueueOutcome>,
    /// Queues on this node whose messages were (or would be) replaced.
    pub replaced_queues: Vec<QueueOutcome>,
    /// Exclusion results.
    pub excluded: Vec<ExclusionOutcome>,
    /// Where the previous message store was kept (`--keep-old`).
    pub previous_store: Option<String>,
    /// Anything the operator should know.
    pub warnings: Vec<String>,
}

impl QueueOutcome {
    /// An outcome for a queue of the manifest.
    pub fn of(q: &QueueEntry, actual: Option<u64>, status: QueueState) -> QueueOutcome {
        QueueOutcome {
            vhost: q.vhost.clone(),
            name: q.name.clone(),
            queue_type: q.queue_type.clone(),
            expected: q.messages,
            actual,
            status,
        }
    }
}

/// Queues whose messages this restore does not bring back: those the
/// snapshot does not hold, and (unless `replayed`: the restore replays
/// them) quorum queues and streams captured as logical records, which a
/// swap of files cannot restore.
pub fn uncovered(manifest: &Manifest, replayed: bool) -> Vec<QueueOutcome> {
    manifest
        .queues
        .iter()
        .filter_map(|q| match q.captured_as() {
            Capture::Files if q.covered => None,
            Capture::Logical if q.covered && replayed => None,
            Capture::Logical if q.covered => {
                Some(QueueOutcome::of(q, None, QueueState::LogicalRecords))
            }
            _ => Some(QueueOutcome::of(q, None, QueueState::NotCovered)),
        })
        .collect()
}

/// Queues a restore would bring back, for a dry run: those in files, and
/// the logical records' if `replayed`.
pub fn planned(manifest: &Manifest, replayed: bool) -> Vec<QueueOutcome> {
    manifest
        .queues
        .iter()
        .filter(|q| q.in_files() || (replayed && q.covered && q.captured_as() == Capture::Logical))
        .map(|q| QueueOutcome::of(q, None, QueueState::Planned))
        .collect()
}

/// Classic queues on the node, in vhosts the restore replaces, holding
/// messages; and non-durable or transient messages anywhere (a stop loses them).
pub fn replaced(target: &[QueueStatus], vhosts: &[String]) -> Vec<QueueOutcome> {
    target
        .iter()
        .filter(|q| q.queue_type.is_classic() && q.messages > 0)
        .filter(|q| {
            vhosts.contains(&q.vhost)
                || !q.durable
                || q.messages_persistent.is_some_and(|p| p < q.messages)
        })
        .map(|q| QueueOutcome {
            vhost: q.vhost.clone(),
            name: q.name.clone(),
            queue_type: q.queue_type.clone(),
            expected: 0,
            actual: Some(q.messages),
            status: QueueState::Replaced,
        })
        .collect()
}

/// The queues of a replay's target that already hold messages: emptied
/// first (`--replace-messages`) or appended to (`--append`).
pub fn holding_messages(target: &[QueueStatus], append: bool) -> Vec<QueueOutcome> {
    target
        .iter()
        .filter(|q| q.messages > 0)
        .map(|q| QueueOutcome {
            vhost: q.vhost.clone(),
            name: q.name.clone(),
            queue_type: q.queue_type.clone(),
            expected: 0,
            actual: Some(q.messages),
            status: if append {
                QueueState::AppendedTo
            } else {
                QueueState::Replaced
            },
        })
        .collect()
}

/// The human summary.
pub fn describe(r: &RestoreReport) -> String {
    let mut s = String::new();
    let verb = if r.dry_run {
        "would restore"
    } else {
        "restored"
    };
    s.push_str(&format!(
        "{verb} snapshot {} of {} onto {} (method: {}{})\n",
        r.snapshot,
        r.from_node,
        r.node,
        r.method,
        if r.method_reason.is_empty() {
            String::new()
        } else {
            format!(": {}", r.method_reason)
        }
    ));
    if r.dry_run {
        s.push_str("  every chunk and file was downloaded and verified; nothing was changed\n");
        s.push_str("  would import (merge) the snapshot's definitions\n");
    } else if r.definitions_already_held {
        s.push_str("  definitions already on the node, unchanged (nothing imported)\n");
    } else if r.definitions_imported {
        s.push_str("  definitions imported (merged)\n");
    }
    let replayed_only =
        r.method == super::plan::method_label(super::machine::Method::Replay, false);
    if !r.vhosts_restored.is_empty() && replayed_only {
        s.push_str(&format!(
            "  messages {} into vhosts: {} (the broker kept running)\n",
            if r.dry_run { "to replay" } else { "replayed" },
            r.vhosts_restored.join(", ")
        ));
    } else if !r.vhosts_restored.is_empty() {
        s.push_str(&format!(
            "  message stores {} for vhosts: {}\n",
            if r.dry_run {
                "to swap in"
            } else {
                "swapped in"
            },
            r.vhosts_restored.join(", ")
        ));
        if !r.dry_run {
            s.push_str(&format!("  broker paused {} ms\n", r.pause_ms));
        }
    }
    for q in &r.replaced_queues {
        s.push_str(&format!(
            "  {} {:?} in vhost {:?}: its {} messages on this node\n",
            if r.dry_run {
                "would replace"
            } else {
                "replaced"
            },
            q.name,
            q.vhost,
            q.actual.unwrap_or(0)
        ));
    }
    for q in &r.queues {
        match q.actual {
            Some(a) => s.push_str(&format!(
                "  queue {:?} in vhost {:?}: {a} messages ({} at backup) {}\n",
                q.name, q.vhost, q.expected, q.status
            )),
            None => s.push_str(&format!(
                "  queue {:?} in vhost {:?}: {} messages to restore\n",
                q.name, q.vhost, q.expected
            )),
        }
    }
    for q in &r.uncovered_queues {
        let why = if q.status == QueueState::LogicalRecords {
            format!(
                "in the snapshot as logical records, which only a replay restore brings back: `rabbitmq-backup restore {} --from-node {} --method replay --vhost {:?} --queue {:?}`",
                r.snapshot, r.from_node, q.vhost, q.name
            )
        } else {
            "not in the snapshot".to_string()
        };
        s.push_str(&format!(
            "  NOT RESTORED: {} queue {:?} in vhost {:?} had {} messages at backup time ({why})\n",
            q.queue_type, q.name, q.vhost, q.expected
        ));
    }
    for e in &r.excluded {
        match &e.to_queue {
            Some(to) => s.push_str(&format!(
                "  excluded {} messages from {:?} to {to:?}, kept {}\n",
                e.excluded, e.queue, e.kept
            )),
            None => s.push_str(&format!(
                "  dropped {} messages from {:?}, kept {}\n",
                e.excluded, e.queue, e.kept
            )),
        }
    }
    if r.dry_run {
        for w in &r.warnings {
            s.push_str(&format!("  note: {w}\n"));
        }
    }
    if let Some(p) = &r.previous_store {
        s.push_str(&format!("  the previous message store is kept in {p}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_says_it_replayed_and_a_swap_that_it_paused_the_broker() {
        let report = |method| RestoreReport {
            method,
            vhosts_restored: vec!["/".into()],
            pause_ms: 640,
            ..RestoreReport::default()
        };
        let replay = describe(&report("replay"));
        assert!(
            replay.contains("messages replayed into vhosts: /"),
            "{replay}"
        );
        assert!(
            !replay.contains("swapped") && !replay.contains("paused"),
            "{replay}"
        );
        for method in ["swap", "swap+replay"] {
            let swap = describe(&report(method));
            assert!(
                swap.contains("message stores swapped in for vhosts: /"),
                "{swap}"
            );
            assert!(swap.contains("broker paused 640 ms"), "{swap}");
        }
    }

    #[test]
    fn a_swap_names_logical_records_as_not_restored_and_a_replay_plans_them() {
        let mut m = crate::archive::manifest::tests::sample();
        let mut quorum = m.queues[0].clone();
        (quorum.name, quorum.queue_type, quorum.messages) = ("orders".into(), "quorum".into(), 7);
        quorum.dirs.clear();
        quorum.capture = Some(Capture::Logical);
        let mut skipped = quorum.clone();
        (skipped.name, skipped.covered, skipped.capture) =
            ("events".into(), false, Some(Capture::None));
        m.queues.extend([quorum, skipped]);
        let uncovered = uncovered(&m, false);
        let status = |name: &str| {
            uncovered
                .iter()
                .find(|q| q.name == name)
                .map(|q| q.status.as_str())
        };
        assert_eq!(status("orders"), Some("logical-records"));
        assert_eq!(status("events"), Some("not-covered"));
        assert_eq!(status("oro.default"), None);
        let planned_names = |replayed: bool| -> Vec<String> {
            planned(&m, replayed).into_iter().map(|q| q.name).collect()
        };
        assert_eq!(planned_names(false), vec!["oro.default"]);
        // A restore that replays them (auto, replay) plans them, and does
        // not call them unrestored.
        assert_eq!(planned_names(true), vec!["oro.default", "orders"]);
        let names: Vec<String> = super::uncovered(&m, true)
            .into_iter()
            .map(|q| q.name)
            .collect();
        assert_eq!(names, vec!["events"]);
        let text = describe(&RestoreReport {
            uncovered_queues: uncovered.clone(),
            ..RestoreReport::default()
        });
        assert!(text.contains("only a replay restore brings back"), "{text}");
        assert!(text.contains("--method replay --vhost"), "{text}");
    }

    #[test]
    fn replaced_counts_only_queues_that_lose_messages() {
        let q = |vhost: &str, name: &str, durable: bool, messages: u64, persistent: Option<u64>| {
            QueueStatus {
                vhost: vhost.into(),
                name: name.into(),
                queue_type: "classic".into(),
                durable,
                messages,
                messages_persistent: persistent,
                consumers: 0,
                policy: None,
                message_ttl: false,
            }
        };
        let target = [
            q("/", "full", true, 3, Some(3)),
            q("/", "empty", true, 0, Some(0)),
            q("other", "kept", true, 5, Some(5)),
            q("other", "transient", true, 5, Some(1)),
            q("other", "nondurable", false, 2, Some(0)),
        ];
        let names: Vec<String> = replaced(&target, &["/".into()])
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, vec!["full", "transient", "nondurable"]);
    }
}
