//! The backup's part in capturing quorum queues and streams (§5 step 4):
//! which queues, when the capture starts (once the safety checks passed
//! and the archive writer reached `logical/`), and what the manifest and
//! the report say about each.

use tokio::sync::{mpsc, oneshot};

use crate::archive::manifest::{Capture, LogicalEntry, QueueEntry};
use crate::archive::writer::LogicalFeed;
use crate::capture::segments::Segment;
use crate::capture::{self, Captured, Kind, Outcome, Target};
use crate::rabbit::control::Control;
use crate::rabbit::ctl::QueueStatus;
use crate::rabbit::queue_type::QueueType;
use crate::settings::BackupSettings;

/// Record files in flight between the capture and the archive writer: each
/// at most [`capture::segments::SEGMENT_BYTES`] (plus one message).
const IN_FLIGHT: usize = 2;

/// The capture's end of the link to the archive writer.
pub struct Side {
    segments: mpsc::Sender<Segment>,
    ready: oneshot::Receiver<()>,
}

/// A link between the archive writer and the capture.
pub fn link() -> (LogicalFeed, Side) {
    let (segments_tx, segments_rx) = mpsc::channel(IN_FLIGHT);
    let (ready_tx, ready_rx) = oneshot::channel();
    (
        LogicalFeed {
            ready: ready_tx,
            segments: segments_rx,
        },
        Side {
            segments: segments_tx,
            ready: ready_rx,
        },
    )
}

/// Why a quorum queue or stream is left out on purpose, if it is.
fn skipped(queue_type: &QueueType, args: &BackupSettings) -> Option<&'static str> {
    match Kind::of(queue_type)? {
        Kind::Quorum if args.skip_quorum => Some("--skip-quorum"),
        Kind::Stream if args.skip_streams => Some("--skip-streams"),
        _ => None,
    }
}

/// The queues to capture, in vhost and name order.
pub fn targets(queues: &[QueueStatus], args: &BackupSettings) -> Vec<Target> {
    queues
        .iter()
        .filter(|q| skipped(&q.queue_type, args).is_none())
        .filter_map(|q| {
            Some(Target {
                vhost: q.vhost.clone(),
                name: q.name.clone(),
                kind: Kind::of(&q.queue_type)?,
            })
        })
        .collect()
}

/// Captures the queues `targets` delivers (nothing if the checks failed)
/// once the writer is ready for them. Never fails: a queue that could not
/// be captured is reported as such.
pub async fn capture(
    control: &Control,
    targets: oneshot::Receiver<Vec<Target>>,
    side: Side,
) -> Vec<Captured> {
    let Ok(targets) = targets.await else {
        return Vec::new();
    };
    if targets.is_empty() || side.ready.await.is_err() {
        return Vec::new();
    }
    tracing::info!(
        "capturing {} quorum queues and streams from the running broker (read-only)",
        targets.len()
    );
    match capture::capture_all(control, &targets, side.segments).await {
        Ok(captures) => captures,
        Err(e) => {
            let why = crate::error::render(&e);
            targets
                .iter()
                .map(|t| Captured {
                    target: t.clone(),
                    outcome: Outcome::Failed(why.clone()),
                    summary: Default::default(),
                    undecodable: 0,
                    undecodable_reason: None,
                    notes: Default::default(),
                })
                .collect()
        }
    }
}

fn find<'a>(captures: &'a [Captured], vhost: &str, name: &str) -> Option<&'a Captured> {
    captures
        .iter()
        .find(|c| c.target.vhost == vhost && c.target.name == name)
}

/// Sets the manifest entry of a quorum queue or stream from its capture:
/// covered with its count when the capture started, or why not.
pub fn apply(entry: &mut QueueEntry, q: &QueueStatus, captures: &[Captured]) {
    if Kind::of(&q.queue_type).is_none() {
        return;
    }
    if let Some(Captured {
        outcome: Outcome::Captured(_),
        summary,
        ..
    }) = find(captures, &q.vhost, &q.name)
    {
        entry.covered = true;
        entry.capture = Some(Capture::Logical);
        entry.messages = summary.listed;
    } else {
        entry.covered = false;
        entry.capture = Some(Capture::None);
        // Its leader moved to another member before the capture: that
        // member's snapshot holds it, so a cluster snapshot holds it once.
        if let Some(Captured {
            outcome: Outcome::NotLeader(Some(leader)),
            ..
        }) = find(captures, &q.vhost, &q.name)
            && leader != "undefined"
        {
            entry.home_node = Some(leader.clone());
        }
    }
}

/// Why an uncovered queue's messages are not in the snapshot.
pub fn reason(q: &QueueEntry, args: &BackupSettings, captures: &[Captured]) -> Option<String> {
    if let Some(flag) = skipped(&q.queue_type, args) {
        return Some(format!("skipped ({flag})"));
    }
    match &find(captures, &q.vhost, &q.name)?.outcome {
        Outcome::Captured(_) => None,
        Outcome::NotFound => Some("deleted before its capture".into()),
        Outcome::NotLeader(leader) => Some(format!(
            "its leader is {}: that node's snapshot holds it",
            leader.as_deref().unwrap_or("another node")
        )),
        Outcome::Failed(why) => Some(format!("its capture failed: {why}")),
    }
}

/// The manifest's `logical[]`: one entry per captured queue.
pub fn entries(captures: &[Captured]) -> Vec<LogicalEntry> {
    captures
        .iter()
        .filter_map(|c| match &c.outcome {
            Outcome::Captured(w) => Some(LogicalEntry {
                path: w.dir.clone(),
                vhost: c.target.vhost.clone(),
                queue: c.target.name.clone(),
                messages: w.records,
                bytes: w.bytes,
                sha256: w.sha256.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// What the operator should know: each capture's own warnings, and queues
/// whose count changed between the count and the capture.
pub fn warnings(queues: &[QueueStatus], captures: &[Captured]) -> Vec<String> {
    let mut out = Vec::new();
    for c in captures {
        out.extend(c.warnings());
        let counted = queues
            .iter()
            .find(|q| q.vhost == c.target.vhost && q.name == c.target.name);
        if let (Outcome::Captured(_), Some(q)) = (&c.outcome, counted)
            && q.messages != c.summary.listed
        {
            out.push(format!(
                "{:?} in vhost {:?} held {} messages when counted and {} when its capture started (messages were published or consumed meanwhile); the snapshot holds the latter",
                q.name, q.vhost, q.messages, c.summary.listed
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::channel::Summary;
    use crate::capture::segments::Written;

    fn q(name: &str, kind: &str, messages: u64) -> QueueStatus {
        QueueStatus {
            vhost: "/".into(),
            name: name.into(),
            queue_type: kind.into(),
            durable: true,
            messages,
            messages_persistent: None,
            consumers: 0,
            policy: None,
            message_ttl: false,
        }
    }

    fn args(skip_quorum: bool, skip_streams: bool) -> BackupSettings {
        let mut a = BackupSettings::new(&Default::default()).unwrap();
        a.skip_quorum = skip_quorum;
        a.skip_streams = skip_streams;
        a
    }

    #[test]
    fn quorum_queues_and_streams_are_targets_unless_skipped() {
        let queues = [
            q("c", "classic", 1),
            q("qq", "quorum", 2),
            q("st", "stream", 3),
        ];
        let names = |a: &BackupSettings| -> Vec<String> {
            targets(&queues, a).into_iter().map(|t| t.name).collect()
        };
        assert_eq!(names(&args(false, false)), ["qq", "st"]);
        assert_eq!(names(&args(true, false)), ["st"]);
        assert_eq!(names(&args(false, true)), ["qq"]);
        assert!(names(&args(true, true)).is_empty());
    }

    fn captured(name: &str, listed: u64, records: u64) -> Captured {
        Captured {
            target: Target {
                vhost: "/".into(),
                name: name.into(),
                kind: Kind::Quorum,
            },
            outcome: Outcome::Captured(Written {
                dir: "logical/V/Q".into(),
                records,
                files: 1,
                bytes: 10,
                sha256: "0".repeat(64),
            }),
            summary: Summary {
                listed,
                sent: records,
                ..Summary::default()
            },
            undecodable: 0,
            undecodable_reason: None,
            notes: Default::default(),
        }
    }

    fn entry(q: &QueueStatus) -> QueueEntry {
        QueueEntry {
            vhost: q.vhost.clone(),
            name: q.name.clone(),
            queue_type: q.queue_type.clone(),
            durable: true,
            messages: q.messages,
            covered: false,
            dirs: vec![],
            capture: Some(Capture::None),
            index_version: None,
            caveats: Vec::new(),
            home_node: None,
        }
    }

    #[test]
    fn manifest_entries_say_what_was_captured_and_why_not() {
        let qq = q("qq", "quorum", 5);
        let st = q("st", "stream", 4);
        let captures = vec![captured("qq", 6, 6)];
        let mut e = entry(&qq);
        apply(&mut e, &qq, &captures);
        assert!(e.covered);
        assert_eq!(e.captured_as(), Capture::Logical);
        assert_eq!(e.messages, 6, "the count when the capture started");
        let logical = entries(&captures);
        assert_eq!(logical.len(), 1);
        assert_eq!((logical[0].queue.as_str(), logical[0].messages), ("qq", 6));
        let w = warnings(std::slice::from_ref(&qq), &captures).join("\n");
        assert!(w.contains("held 5 messages when counted and 6"), "{w}");

        let mut s = entry(&st);
        apply(&mut s, &st, &captures);
        assert!(!s.covered);
        assert_eq!(
            reason(&s, &args(false, true), &captures).as_deref(),
            Some("skipped (--skip-streams)")
        );
        let failed = Captured {
            outcome: Outcome::Failed("boom".into()),
            ..captured("st", 0, 0)
        };
        assert!(
            reason(&s, &args(false, false), &[failed])
                .unwrap()
                .contains("boom")
        );
    }

    #[test]
    fn a_queue_led_elsewhere_at_capture_names_its_leader_as_holder() {
        let qq = q("qq", "quorum", 5);
        let moved = Captured {
            outcome: Outcome::NotLeader(Some("rabbit@b".into())),
            ..captured("qq", 0, 0)
        };
        let mut e = entry(&qq);
        apply(&mut e, &qq, std::slice::from_ref(&moved));
        assert!(!e.covered);
        assert_eq!(e.home_node.as_deref(), Some("rabbit@b"));
        // An unknown leader names nobody.
        let unknown = Captured {
            outcome: Outcome::NotLeader(None),
            ..captured("qq", 0, 0)
        };
        let mut e = entry(&qq);
        apply(&mut e, &qq, &[unknown]);
        assert_eq!(e.home_node, None);
    }
}
