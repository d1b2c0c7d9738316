//! What `restore --cluster` reports: the `--json` schema and the text.

use std::time::Instant;

use serde::Serialize;

use crate::cluster::journal::{PartJournal, PartMethod};
use crate::cluster::machine;
use crate::output::{Output, count, table};
use crate::restore::report::{QueueOutcome, QueueState};

/// One member snapshot's part of a cluster restore.
#[derive(Debug, Serialize)]
pub struct Part {
    /// The member the snapshot was taken on.
    pub from_node: String,
    /// Its snapshot id.
    pub snapshot: String,
    /// How its messages are put back: `swap` (classic stores swapped onto
    /// the member of the same name, the node restored through), `swap+replay`
    /// (and its quorum queues and streams replayed after), or `replay`.
    pub method: &'static str,
    /// Why that method.
    pub method_reason: String,
    /// How long the broker of the node restored through was stopped for
    /// this part, in ms (0 unless it was swapped by this run).
    pub pause_ms: u64,
    /// Queues whose messages it holds and the restore puts back.
    pub queues: u64,
    /// Messages it holds of them.
    pub messages: u64,
    /// Messages published from it (a swapped part: counted after the swap;
    /// absent for a dry run).
    pub published: Option<u64>,
    /// Messages it held that `--exclude-routing-key` kept out of their queue.
    pub excluded: u64,
    /// Downloading and verifying it, in ms (0 when done by an earlier run).
    pub fetch_ms: u64,
    /// Replaying it, in ms (0 when done by an earlier run).
    pub replay_ms: u64,
}

/// `restore --cluster --json` schema.
#[derive(Debug, Serialize)]
pub struct ClusterRestoreReport {
    /// The cluster of the snapshot.
    pub cluster: String,
    /// The cluster snapshot's id.
    pub cluster_snapshot: String,
    /// The node the tool talked to.
    pub node: String,
    /// Every member of the target cluster (the node alone when it is not clustered).
    pub target_members: Vec<String>,
    /// How messages are put back: `replay`, or `swap+replay` when a part
    /// is swapped onto the node restored through (see each part's).
    pub method: &'static str,
    /// Nothing was changed.
    pub dry_run: bool,
    /// Only definitions were imported.
    pub definitions_only: bool,
    /// This run finished an interrupted restore (`--resume`).
    pub resumed: bool,
    /// The member snapshot whose definitions are imported (the newest).
    pub definitions_from: String,
    /// Definitions were imported (merged).
    pub definitions_imported: bool,
    /// One part per member snapshot.
    pub parts: Vec<Part>,
    /// Every replayed queue, counted cluster-wide afterwards.
    pub queues: Vec<QueueOutcome>,
    /// Queues of the target whose messages were (or would be) emptied
    /// first (`--replace-messages`) or kept (`--append`).
    pub replaced_queues: Vec<QueueOutcome>,
    /// Members of the source cluster without a snapshot (`--allow-partial`).
    pub missing: Vec<String>,
    /// Anything the operator should know.
    pub warnings: Vec<String>,
    /// Wall time, in milliseconds.
    pub duration_ms: u64,
}

/// A part as reported, from its journal entry and this run's times.
pub(super) fn part_report(p: &PartJournal, times: Option<&machine::PartTimes>) -> Part {
    let replayed = p.state.done();
    let logical = p.queues.iter().any(|q| !q.queue_type.is_classic());
    Part {
        from_node: p.node.clone(),
        snapshot: p.snapshot.clone(),
        method: match p.method {
            PartMethod::Swap if logical => "swap+replay",
            m => m.label(),
        },
        method_reason: p.reason.clone(),
        pause_ms: times.and_then(|t| t.pause_ms).unwrap_or(0),
        queues: p.queues.len() as u64,
        messages: p.queues.iter().map(|q| q.messages).sum(),
        published: replayed.then(|| p.published_total()),
        excluded: p.excluded,
        fetch_ms: times.map_or(0, |t| t.fetch_ms),
        replay_ms: times.map_or(0, |t| t.replay_ms),
    }
}

/// The machine's outcome into the report.
pub(super) fn apply(report: &mut ClusterRestoreReport, outcome: machine::Outcome) {
    report.parts = outcome
        .parts
        .iter()
        .enumerate()
        .map(|(i, p)| part_report(p, outcome.times.get(i)))
        .collect();
    report.queues = outcome.queues;
    report.warnings.extend(outcome.warnings);
}

/// The restore's method in reports: `swap+replay` when a part is swapped.
pub(super) fn overall(parts: &[PartJournal]) -> &'static str {
    if parts.iter().any(|p| p.method == PartMethod::Swap) {
        "swap+replay"
    } else {
        "replay"
    }
}

/// Stamps the wall time, warns, and prints the report (text or `--json`).
pub(super) fn finish(
    mut report: ClusterRestoreReport,
    started: Instant,
    out: Output,
) -> anyhow::Result<ClusterRestoreReport> {
    report.duration_ms = started.elapsed().as_millis() as u64;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    out.result(&report, || describe(&report))?;
    Ok(report)
}

/// The human report.
fn describe(r: &ClusterRestoreReport) -> String {
    let mut s = String::new();
    let verb = if r.dry_run {
        "would restore"
    } else {
        "restored"
    };
    s.push_str(&format!(
        "{verb} cluster snapshot {} of {} onto {} ({}){}\n",
        r.cluster_snapshot,
        r.cluster,
        r.node,
        count(r.target_members.len() as u64, "member"),
        if r.resumed { ", resumed" } else { "" }
    ));
    s.push_str(&format!(
        "definitions from {}{}\n",
        r.definitions_from,
        if r.definitions_imported {
            ": imported"
        } else {
            ""
        }
    ));
    if !r.definitions_only {
        s.push_str(&format!("messages by {}, part by part:\n", r.method));
        let rows: Vec<Vec<String>> = r
            .parts
            .iter()
            .map(|p| {
                vec![
                    p.from_node.clone(),
                    p.snapshot.clone(),
                    p.method.to_string(),
                    p.queues.to_string(),
                    p.messages.to_string(),
                    p.published.map_or_else(|| "-".into(), |n| n.to_string()),
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                "FROM",
                "SNAPSHOT",
                "METHOD",
                "QUEUES",
                "MESSAGES",
                "PUBLISHED",
            ],
            &rows,
        ));
        for p in &r.parts {
            s.push_str(&format!(
                "{} of {}: {}\n",
                p.method, p.from_node, p.method_reason
            ));
            if p.pause_ms > 0 {
                s.push_str(&format!("  {}'s broker paused {} ms\n", r.node, p.pause_ms));
            }
        }
        if !r.queues.is_empty() {
            let rows: Vec<Vec<String>> = r
                .queues
                .iter()
                .map(|q| {
                    vec![
                        q.vhost.clone(),
                        q.name.clone(),
                        q.queue_type.to_string(),
                        q.expected.to_string(),
                        q.actual.map_or_else(|| "-".into(), |n| n.to_string()),
                        q.status.to_string(),
                    ]
                })
                .collect();
            s.push_str(&table(
                &["VHOST", "QUEUE", "TYPE", "EXPECTED", "NOW", "STATUS"],
                &rows,
            ));
        }
        for q in &r.replaced_queues {
            s.push_str(&format!(
                "{} {:?} in vhost {:?} ({} messages)\n",
                if q.status == QueueState::AppendedTo {
                    "appended to"
                } else if r.dry_run {
                    "would empty"
                } else {
                    "emptied"
                },
                q.name,
                q.vhost,
                q.actual.unwrap_or(0)
            ));
        }
    }
    for m in &r.missing {
        s.push_str(&format!("NOT RESTORED: no snapshot of member {m}\n"));
    }
    if r.dry_run {
        s.push_str("nothing was changed\n");
    }
    s
}
