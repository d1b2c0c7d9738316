//! The counts check after the broker started on the restored stores: every
//! covered queue against the manifest, per node. A shortfall the backup
//! knew could happen (a message TTL, consumers attached, non-persistent
//! messages, a live capture) is reported as such; any other fails the
//! restore, which then rolls back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::report::{QueueOutcome, QueueState};
use crate::archive::manifest::{Consistency, Manifest};
use crate::rabbit::Broker;
use crate::rabbit::control::Transport;

/// How long queues may take to report their recovered counts.
const PATIENCE: Duration = Duration::from_secs(120);

/// The outcome of one look at the counts.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Per covered queue.
    pub queues: Vec<QueueOutcome>,
    /// Expected shortfalls, explained.
    pub warnings: Vec<String>,
    /// Unexpected shortfalls.
    pub failures: Vec<String>,
}

/// Compares the counts now on the node with the manifest.
pub fn judge(manifest: &Manifest, now: &BTreeMap<(String, String), u64>) -> Verdict {
    let live = manifest.consistency == Consistency::Live;
    let mut verdict = Verdict::default();
    // Logical records are not brought back by a swap (see `report::uncovered`).
    for q in manifest.queues.iter().filter(|q| q.in_files()) {
        let actual = now.get(&(q.vhost.clone(), q.name.clone())).copied();
        let found = actual.unwrap_or(0);
        let status = if found == q.messages && actual.is_some() {
            QueueState::Ok
        } else if found > q.messages {
            QueueState::More
        } else if actual.is_some() && (live || !q.caveats.is_empty()) {
            let why: Vec<&str> = if live {
                vec!["the snapshot is a live capture, which can be inconsistent"]
            } else {
                q.caveats.iter().map(|c| c.reason()).collect()
            };
            verdict.warnings.push(format!(
                "queue {:?} in vhost {:?} has {found} of its {} messages, as expected: {}",
                q.name,
                q.vhost,
                q.messages,
                why.join("; ")
            ));
            QueueState::ExpectedShortfall
        } else {
            verdict.failures.push(format!(
                "{:?} in vhost {:?} has {found} of {} messages",
                q.name, q.vhost, q.messages
            ));
            QueueState::Missing
        };
        verdict.queues.push(QueueOutcome::of(q, actual, status));
    }
    verdict
}

/// Waits for the restored queues to report counts, then judges them; an
/// unexpected shortfall is an error (the restore rolls back).
pub async fn counts(
    broker: &Broker,
    manifest: &Manifest,
) -> anyhow::Result<(Vec<QueueOutcome>, Vec<String>)> {
    let vhosts: Vec<String> = manifest.vhosts.iter().map(|v| v.name.clone()).collect();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now: BTreeMap<(String, String), u64> = broker
            .queues(&vhosts)
            .await?
            .into_iter()
            .map(|q| ((q.vhost, q.name), q.messages))
            .collect();
        let verdict = judge(manifest, &now);
        if verdict.failures.is_empty() {
            return Ok((verdict.queues, verdict.warnings));
        }
        // Queues recover in the background after start_app: give them time.
        if Instant::now() > deadline {
            anyhow::bail!(
                "messages are missing after the restore: {}",
                verdict.failures.join(", ")
            );
        }
        // A question over distribution is a round trip, worth asking often;
        // over rabbitmqctl each boots a VM.
        let pause = match broker.control.transport() {
            Transport::Distribution => Duration::from_millis(50),
            Transport::Rabbitmqctl => Duration::from_millis(500),
        };
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::manifest::Caveat;

    fn now(pairs: &[(&str, u64)]) -> BTreeMap<(String, String), u64> {
        pairs
            .iter()
            .map(|(n, c)| (("/".to_string(), n.to_string()), *c))
            .collect()
    }

    fn manifest() -> Manifest {
        let mut m = crate::archive::manifest::tests::sample();
        let q = m.queues[0].clone();
        m.queues = ["exact", "ttl", "plain"]
            .iter()
            .map(|name| {
                let mut q = q.clone();
                q.vhost = "/".into();
                q.name = name.to_string();
                q.messages = 5;
                q
            })
            .collect();
        m.queues[1].caveats = vec![Caveat::Ttl];
        m
    }

    #[test]
    fn expected_shortfalls_are_reported_and_others_fail() {
        let v = judge(&manifest(), &now(&[("exact", 5), ("ttl", 2), ("plain", 5)]));
        let statuses: Vec<QueueState> = v.queues.iter().map(|q| q.status).collect();
        assert_eq!(
            statuses,
            [
                QueueState::Ok,
                QueueState::ExpectedShortfall,
                QueueState::Ok
            ]
        );
        assert!(v.failures.is_empty());
        assert!(v.warnings[0].contains("TTL"), "{:?}", v.warnings);

        let v = judge(&manifest(), &now(&[("exact", 5), ("ttl", 5), ("plain", 4)]));
        assert_eq!(v.failures.len(), 1, "{v:?}");
        assert!(v.failures[0].contains("\"plain\""));
        // A queue that is gone is missing, caveat or not.
        let v = judge(&manifest(), &now(&[("exact", 6), ("plain", 5)]));
        assert_eq!(v.queues[0].status, QueueState::More);
        assert_eq!(v.failures.len(), 1, "{v:?}");
    }

    #[test]
    fn a_live_capture_expects_shortfalls_everywhere() {
        let mut m = manifest();
        m.consistency = Consistency::Live;
        let v = judge(&m, &now(&[("exact", 1), ("ttl", 1), ("plain", 1)]));
        assert!(v.failures.is_empty());
        assert_eq!(v.warnings.len(), 3);
    }
}
