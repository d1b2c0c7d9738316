//! `verify --deep`: download, verify, decode every message of every
//! covered classic queue and compare each queue's count with the manifest.

use serde::Serialize;

use super::decode;
use super::verify::Verdict;
use crate::archive::manifest::{Capture, Consistency, Manifest, QueueEntry};
use crate::crypt::Identities;
use crate::error::{Kind, kind_of, render};
use crate::logical::LogicalQueue;
use crate::repo::{Repository, SnapshotRef};
use crate::store::{QueueDirs, Store};

/// How a queue's decoded count compares with the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// As many messages as the manifest says.
    Ok,
    /// A difference the snapshot explains (see `explanation`).
    Explained,
    /// A difference nothing explains, or messages that cannot be decoded.
    Mismatch,
}

/// One queue's check (`verify --deep --json`).
#[derive(Debug, Clone, Serialize)]
pub struct QueueCheck {
    /// Vhost.
    pub vhost: String,
    /// Queue.
    pub name: String,
    /// Messages the manifest records.
    pub expected: u64,
    /// Messages decoded from the store.
    pub decoded: u64,
    /// Transient messages found in the index (discarded by RabbitMQ at boot).
    pub transient_skipped: u64,
    /// Persistent messages RabbitMQ would drop at recovery.
    pub dropped: u64,
    /// The verdict.
    pub status: Status,
    /// Why it differs, or what failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
}

impl QueueCheck {
    /// One line for the human report.
    pub fn describe(&self) -> String {
        let head = format!(
            "queue {:?} in vhost {:?}: {} decoded, the manifest says {}",
            self.name, self.vhost, self.decoded, self.expected
        );
        match &self.explanation {
            Some(why) => format!("{head} ({why})"),
            None => head,
        }
    }
}

/// The decoded side of a deep verification.
#[derive(Debug, Clone, Serialize)]
pub struct DeepReport {
    /// Messages decoded in all queues.
    pub messages: u64,
    /// Every covered classic queue.
    pub queues: Vec<QueueCheck>,
}

impl DeepReport {
    /// A one-line summary.
    pub fn summary(&self) -> String {
        let count = |s: Status| self.queues.iter().filter(|q| q.status == s).count();
        format!(
            "every digest checked, {} messages decoded in {} queues ({} match, {} explained, {} mismatched)",
            self.messages,
            self.queues.len(),
            count(Status::Ok),
            count(Status::Explained),
            count(Status::Mismatch)
        )
    }
}

/// Verifies one snapshot deeply.
pub async fn check(
    repo: &Repository,
    snapshot: &SnapshotRef,
    manifest: &Manifest,
    identity: Option<&std::sync::Arc<Identities>>,
) -> anyhow::Result<Verdict> {
    let mut verdict = Verdict {
        id: snapshot.id.clone(),
        node: snapshot.node.clone(),
        chunks: manifest.chunks.len(),
        checksums_compared: 0,
        read_data: true,
        checked: super::verify::Checked::Data,
        problems: Vec::new(),
        deep: None,
    };
    let staged = match decode::stage(repo, snapshot, manifest, &[], identity, 4).await {
        Ok(s) => s,
        Err(e) if kind_of(&e) == Kind::Integrity => {
            verdict.problems.push(render(&e));
            return Ok(verdict);
        }
        Err(e) => return Err(e),
    };
    let m = manifest.clone();
    let report = tokio::task::spawn_blocking(move || {
        let mut report = count_all(&staged.store, &staged.work(), &m);
        count_logical(&staged.logical, &m, &mut report);
        drop(staged);
        report
    })
    .await?;
    for q in report
        .queues
        .iter()
        .filter(|q| q.status == Status::Mismatch)
    {
        verdict.problems.push(q.describe());
    }
    verdict.deep = Some(report);
    Ok(verdict)
}

/// Decodes every covered classic queue of `manifest` found in `store`.
pub fn count_all(store: &Store, work: &std::path::Path, manifest: &Manifest) -> DeepReport {
    let mut report = DeepReport {
        messages: 0,
        queues: Vec::new(),
    };
    let live = manifest.consistency == Consistency::Live;
    let covered: Vec<&QueueEntry> = manifest
        .queues
        .iter()
        .filter(|q| q.captured_as() == Capture::Files)
        .collect();
    let mut vhosts: Vec<&str> = covered.iter().map(|q| q.vhost.as_str()).collect();
    vhosts.dedup();
    vhosts.sort_unstable();
    vhosts.dedup();
    for vhost in vhosts {
        let in_vhost = covered.iter().filter(|q| q.vhost == vhost);
        let reader = match store.vhosts().iter().any(|v| v.name == vhost) {
            true => Some(store.vhost(vhost, work)),
            false => None,
        };
        for entry in in_vhost {
            let dirs = store
                .queues()
                .find(|d| d.vhost == entry.vhost && d.name == entry.name);
            let check = match (&reader, dirs) {
                (Some(Err(e)), _) => {
                    failed(entry, format!("the vhost's store cannot be read: {e}"))
                }
                (Some(Ok(reader)), Some(dirs)) => count_queue(reader, dirs, entry, live),
                _ => compare(entry, 0, 0, 0, false, live, Vec::new()),
            };
            report.messages += check.decoded;
            report.queues.push(check);
        }
    }
    report
}

/// Counts the records of every queue captured as logical records (quorum
/// queues and streams) against the number the manifest says were written.
pub fn count_logical(files: &[LogicalQueue], manifest: &Manifest, report: &mut DeepReport) {
    let live = manifest.consistency == Consistency::Live;
    for queue in manifest
        .queues
        .iter()
        .filter(|q| q.captured_as() == Capture::Logical)
    {
        // The records written are exact; the queue's count was taken before.
        let mut entry = queue.clone();
        if let Some(l) = manifest
            .logical
            .iter()
            .find(|l| l.vhost == queue.vhost && l.queue == queue.name)
        {
            entry.messages = l.messages;
        }
        let entry = &entry;
        let Some(file) = files
            .iter()
            .find(|f| f.vhost == entry.vhost && f.queue == entry.name)
        else {
            report
                .queues
                .push(failed(entry, "no logical records in the snapshot".into()));
            continue;
        };
        let mut count = 0u64;
        let outcome = file.messages().try_for_each(|m| m.map(|_| count += 1));
        let check = match outcome {
            Ok(()) => compare(entry, count, 0, 0, false, live, Vec::new()),
            Err(e) => {
                let mut check = failed(entry, render(&e));
                check.decoded = count;
                check
            }
        };
        report.messages += check.decoded;
        report.queues.push(check);
    }
}

fn failed(entry: &QueueEntry, why: String) -> QueueCheck {
    QueueCheck {
        vhost: entry.vhost.clone(),
        name: entry.name.clone(),
        expected: entry.messages,
        decoded: 0,
        transient_skipped: 0,
        dropped: 0,
        status: Status::Mismatch,
        explanation: Some(why),
    }
}

fn count_queue(
    reader: &crate::store::VhostReader,
    dirs: &QueueDirs,
    entry: &QueueEntry,
    live: bool,
) -> QueueCheck {
    let mut messages = reader.queue(dirs);
    let mut with_ttl = false;
    for item in messages.by_ref() {
        match item {
            Ok(item) => with_ttl |= item.facts.expires_at_ms.is_some(),
            Err(e) => {
                let mut check = failed(entry, format!("cannot be decoded: {e}"));
                check.decoded = messages.summary().messages;
                return check;
            }
        }
    }
    let s = messages.summary();
    compare(
        entry,
        s.messages,
        s.transient_skipped,
        s.dropped.len() as u64,
        with_ttl,
        live,
        s.dropped.clone(),
    )
}

fn compare(
    entry: &QueueEntry,
    decoded: u64,
    transient: u64,
    dropped: u64,
    with_ttl: bool,
    live: bool,
    dropped_why: Vec<String>,
) -> QueueCheck {
    let expected = entry.messages;
    let (status, explanation) = if decoded == expected {
        (Status::Ok, None)
    } else if live {
        (
            Status::Explained,
            Some("a --live snapshot: its files were copied while the broker ran".to_string()),
        )
    } else if decoded < expected && expected - decoded <= transient {
        (
            Status::Explained,
            Some(format!(
                "{transient} transient messages, which RabbitMQ discards at boot"
            )),
        )
    } else if decoded < expected && with_ttl {
        (
            Status::Explained,
            Some("messages with a TTL may have expired between the count and the copy".to_string()),
        )
    } else {
        let mut why = Vec::new();
        if transient > 0 {
            why.push(format!("{transient} transient skipped"));
        }
        why.extend(dropped_why.into_iter().take(3));
        (Status::Mismatch, (!why.is_empty()).then(|| why.join("; ")))
    };
    QueueCheck {
        vhost: entry.vhost.clone(),
        name: entry.name.clone(),
        expected,
        decoded,
        transient_skipped: transient,
        dropped,
        status,
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::manifest::tests::sample;
    use crate::message::record::RecordWriter;
    use crate::message::{Message, Properties};

    fn quorum(messages: u64) -> QueueEntry {
        QueueEntry {
            vhost: "/".into(),
            name: "orders".into(),
            queue_type: "quorum".into(),
            durable: true,
            messages,
            covered: true,
            dirs: Vec::new(),
            capture: Some(Capture::Logical),
            index_version: None,
            caveats: Vec::new(),
            home_node: None,
        }
    }

    fn records(dir: &std::path::Path, count: usize) -> LogicalQueue {
        let path = dir.join("logical/orders.rblr");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut w =
            RecordWriter::new(std::fs::File::create(&path).unwrap(), "/", "orders").unwrap();
        for i in 0..count {
            w.write(&Message {
                exchange: String::new(),
                routing_keys: vec!["orders".into()],
                properties: Properties::default(),
                body: bytes::Bytes::from(format!("m{i}")),
            })
            .unwrap();
        }
        LogicalQueue {
            vhost: "/".into(),
            queue: "orders".into(),
            paths: vec![path],
        }
    }

    #[test]
    fn logical_records_are_counted_against_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let file = records(dir.path(), 3);
        for (expected, status) in [(3, Status::Ok), (4, Status::Mismatch)] {
            let mut m = sample();
            m.queues = vec![quorum(expected)];
            let mut report = DeepReport {
                messages: 0,
                queues: Vec::new(),
            };
            count_logical(std::slice::from_ref(&file), &m, &mut report);
            assert_eq!(report.queues[0].status, status);
            assert_eq!(report.queues[0].decoded, 3);
        }
        // A covered queue without records is a mismatch, named.
        let mut m = sample();
        m.queues = vec![quorum(1)];
        let mut report = DeepReport {
            messages: 0,
            queues: Vec::new(),
        };
        count_logical(&[], &m, &mut report);
        assert_eq!(report.queues[0].status, Status::Mismatch);
        assert!(
            report.queues[0].describe().contains("no logical records"),
            "{:?}",
            report.queues[0]
        );
    }

    #[test]
    fn shortfalls_are_explained_only_by_what_explains_them() {
        let e = QueueEntry {
            queue_type: "classic".into(),
            ..quorum(10)
        };
        assert_eq!(
            compare(&e, 10, 0, 0, false, false, Vec::new()).status,
            Status::Ok
        );
        assert_eq!(
            compare(&e, 7, 0, 0, false, true, Vec::new()).status,
            Status::Explained
        );
        assert_eq!(
            compare(&e, 8, 2, 0, false, false, Vec::new()).status,
            Status::Explained
        );
        assert_eq!(
            compare(&e, 7, 2, 0, false, false, Vec::new()).status,
            Status::Mismatch
        );
        assert_eq!(
            compare(&e, 7, 0, 0, true, false, Vec::new()).status,
            Status::Explained
        );
        assert_eq!(
            compare(&e, 11, 0, 0, true, false, Vec::new()).status,
            Status::Mismatch
        );
    }
}
