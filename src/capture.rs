//! Logical capture of quorum queues and streams (DESIGN §12): their files
//! are bound to the node name, so their messages are read from the running
//! broker, without changing any of them, and written as logical records
//! under `logical/` in the snapshot.
//!
//! A capture server is started on the node ([`server`], `server.erl`) and
//! the messages come back over a loopback data channel ([`channel`]) as the
//! terms the broker holds (`#basic_message{}`, `#mc{}`): the store reader's
//! decoder turns them into [`Message`]s (one decoding path for files and
//! captures), and [`segments`] writes them as record files of bounded size
//! straight into the archive. Nothing is consumed or requeued: no message
//! is marked redelivered, and no delivery count moves.

pub mod channel;
pub mod segments;
pub mod server;

use std::collections::BTreeSet;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::message::Message;
use crate::rabbit::control::Control;
use crate::rabbit::queue_type::QueueType;
use channel::{Channel, Frame, Summary};
use segments::{Segment, SegmentWriter, Written};

/// How often a long capture says how far it is.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// What kind of queue is captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A quorum queue: read through its leader's state and Raft log.
    Quorum,
    /// A stream: read from its first offset to the end at capture time.
    Stream,
}

impl Kind {
    /// The queue type as RabbitMQ names it, if it is captured logically.
    pub fn of(queue_type: &QueueType) -> Option<Kind> {
        match queue_type {
            QueueType::Quorum => Some(Kind::Quorum),
            QueueType::Stream => Some(Kind::Stream),
            _ => None,
        }
    }
}

/// A queue to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Virtual host.
    pub vhost: String,
    /// Queue name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
}

/// How one queue's capture ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its records are in the snapshot.
    Captured(Written),
    /// The queue was deleted before its turn.
    NotFound,
    /// Its leader is another node, whose own backup captures it (§13).
    NotLeader(Option<String>),
    /// It could not be captured; why. Record files already written for it
    /// stay in the archive but no manifest entry names them.
    Failed(String),
}

/// One queue's capture.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The queue.
    pub target: Target,
    /// How it ended.
    pub outcome: Outcome,
    /// What the node said (counts at capture time).
    pub summary: Summary,
    /// Messages the tool could not decode (not in the snapshot), and why.
    pub undecodable: u64,
    /// The first reason a message could not be decoded.
    pub undecodable_reason: Option<String>,
    /// Notes of the decoder (things a replay does not carry), distinct.
    pub notes: BTreeSet<String>,
}

impl Captured {
    /// Records in the snapshot.
    pub fn records(&self) -> u64 {
        match &self.outcome {
            Outcome::Captured(w) => w.records,
            _ => 0,
        }
    }

    /// What the operator should know about this capture, if anything.
    pub fn warnings(&self) -> Vec<String> {
        let q = format!(
            "{} {:?} in vhost {:?}",
            match self.target.kind {
                Kind::Quorum => "quorum queue",
                Kind::Stream => "stream",
            },
            self.target.name,
            self.target.vhost
        );
        let mut out = Vec::new();
        match &self.outcome {
            Outcome::Captured(w) => {
                let s = &self.summary;
                if s.missing > 0 {
                    out.push(format!(
                        "{q}: {} of its {} messages left the queue while it was captured (consumed, expired or dropped); {} are in the snapshot",
                        s.missing, s.listed, w.records
                    ));
                }
                if s.skipped > 0 {
                    out.push(format!(
                        "{q}: {} compressed entries (written by stream-protocol clients) are NOT in the snapshot: only the stream protocol reads them",
                        s.skipped
                    ));
                }
                if self.undecodable > 0 {
                    out.push(format!(
                        "{q}: {} messages could not be decoded and are NOT in the snapshot: {}",
                        self.undecodable,
                        self.undecodable_reason
                            .as_deref()
                            .unwrap_or("unknown reason")
                    ));
                }
                if self.target.kind == Kind::Quorum && s.converted > 0 {
                    out.push(format!(
                        "{q}: {} messages were published with another protocol (AMQP 1.0, MQTT, STOMP) and are kept as an AMQP 0-9-1 consumer receives them",
                        s.converted
                    ));
                }
                for note in &self.notes {
                    out.push(format!("{q}: some messages: {note}"));
                }
            }
            Outcome::NotFound => {
                out.push(format!("{q} was deleted before it was captured"));
            }
            Outcome::NotLeader(leader) => out.push(format!(
                "{q}: its leader is {}, not this node: that node's backup holds its messages",
                leader.as_deref().unwrap_or("another node")
            )),
            Outcome::Failed(why) => out.push(format!(
                "{q}: its messages are NOT in the snapshot: the capture failed: {why}"
            )),
        }
        out
    }
}

/// Captures `targets` in order, sending record files to `out` (the archive
/// writer, which takes them when it reaches `logical/`). A queue that
/// fails is reported as such and the others are still captured; only a
/// node that cannot be asked at all is an error.
pub async fn capture_all(
    control: &Control,
    targets: &[Target],
    out: mpsc::Sender<Segment>,
) -> anyhow::Result<Vec<Captured>> {
    let mut results = Vec::with_capacity(targets.len());
    if targets.is_empty() {
        return Ok(results);
    }
    let endpoint = server::start(control).await?;
    let mut channel = Some(Channel::connect(&endpoint).await?);
    for target in targets {
        let Some(ch) = channel.as_mut() else {
            results.push(failed(target, "the data channel to the node was lost"));
            continue;
        };
        let started = std::time::Instant::now();
        match capture_one(ch, target, out.clone()).await {
            Ok(captured) => {
                tracing::info!(
                    "captured {:?} in vhost {:?}: {} records in {:.1} s",
                    target.name,
                    target.vhost,
                    captured.records(),
                    started.elapsed().as_secs_f64()
                );
                results.push(captured);
            }
            Err(e) => {
                // The channel's state is unknown: no more queues on it.
                channel = None;
                results.push(failed(target, &crate::error::render(&e)));
            }
        }
    }
    if let Some(ch) = channel {
        ch.close().await;
    }
    Ok(results)
}

fn failed(target: &Target, why: &str) -> Captured {
    Captured {
        target: target.clone(),
        outcome: Outcome::Failed(why.to_string()),
        summary: Summary::default(),
        undecodable: 0,
        undecodable_reason: None,
        notes: BTreeSet::new(),
    }
}

/// Captures one queue over an open channel.
async fn capture_one(
    ch: &mut Channel,
    target: &Target,
    out: mpsc::Sender<Segment>,
) -> anyhow::Result<Captured> {
    ch.request(target.kind, &target.vhost, &target.name).await?;
    let mut writer = SegmentWriter::new(&target.vhost, &target.name, segments::SEGMENT_BYTES, out);
    let mut result = failed(target, "");
    let mut received = 0u64;
    let mut logged = std::time::Instant::now();
    loop {
        match ch.next().await? {
            Frame::Message { term, .. } => {
                received += 1;
                if logged.elapsed() >= PROGRESS_EVERY {
                    logged = std::time::Instant::now();
                    tracing::info!(
                        "capturing {:?} in vhost {:?}: {received} messages so far",
                        target.name,
                        target.vhost
                    );
                }
                match decode(term) {
                    Ok((message, notes)) => {
                        writer.write(&message).await?;
                        result.notes.extend(notes);
                    }
                    Err(why) => {
                        result.undecodable += 1;
                        result.undecodable_reason.get_or_insert(why);
                    }
                }
            }
            Frame::Summary(summary) => {
                result.outcome = if summary.not_found {
                    Outcome::NotFound
                } else if summary.not_leader.is_some() {
                    Outcome::NotLeader(summary.not_leader.clone())
                } else if summary.sent != received {
                    Outcome::Failed(format!(
                        "the node sent {received} messages but says {}",
                        summary.sent
                    ))
                } else {
                    Outcome::Captured(writer.finish().await?)
                };
                result.summary = summary;
                return Ok(result);
            }
            Frame::Failed(why) => {
                result.outcome = Outcome::Failed(format!("on the node: {why}"));
                return Ok(result);
            }
        }
    }
}

/// A message term as the broker holds it, through the store reader's
/// decoder.
fn decode(term: Vec<u8>) -> Result<(Message, Vec<String>), String> {
    crate::store::decode_message(&bytes::Bytes::from(term)).map(|(m, extra)| (m, extra.notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(outcome: Outcome, summary: Summary) -> Captured {
        Captured {
            target: Target {
                vhost: "/".into(),
                name: "orders".into(),
                kind: Kind::Quorum,
            },
            outcome,
            summary,
            undecodable: 0,
            undecodable_reason: None,
            notes: BTreeSet::new(),
        }
    }

    #[test]
    fn a_clean_capture_says_nothing() {
        let c = captured(
            Outcome::Captured(Written {
                records: 3,
                ..Written::default()
            }),
            Summary {
                listed: 3,
                sent: 3,
                ..Summary::default()
            },
        );
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        assert_eq!(c.records(), 3);
    }

    #[test]
    fn what_is_not_in_the_snapshot_is_named() {
        let mut c = captured(
            Outcome::Captured(Written {
                records: 7,
                ..Written::default()
            }),
            Summary {
                listed: 10,
                sent: 8,
                missing: 2,
                ..Summary::default()
            },
        );
        c.undecodable = 1;
        c.undecodable_reason = Some("bad term".into());
        let w = c.warnings().join("\n");
        assert!(w.contains("2 of its 10 messages left the queue"), "{w}");
        assert!(w.contains("1 messages could not be decoded"), "{w}");
        assert!(w.contains("bad term"), "{w}");
        let failed = captured(Outcome::Failed("boom".into()), Summary::default());
        assert!(failed.warnings()[0].contains("NOT in the snapshot"));
        assert_eq!(failed.records(), 0);
        let elsewhere = captured(
            Outcome::NotLeader(Some("rabbit@b".into())),
            Summary::default(),
        );
        assert!(elsewhere.warnings()[0].contains("rabbit@b"));
    }

    #[test]
    fn kinds_from_queue_types() {
        assert_eq!(Kind::of(&QueueType::from("quorum")), Some(Kind::Quorum));
        assert_eq!(Kind::of(&QueueType::from("stream")), Some(Kind::Stream));
        assert_eq!(Kind::of(&QueueType::from("classic")), None);
    }
}
