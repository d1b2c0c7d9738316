//! The replay method's work inside the restore state machine: the queues
//! of the journal's [`ReplaySpec`] published from the unpacked snapshot
//! (`area/new`) by [`crate::replay::run`], then their counts checked. After
//! a swap (`--method auto`), the same for the quorum queues and streams the
//! snapshot holds as logical records.

use std::path::Path;

use super::machine::{Journal, Method, ReplaySpec};
use super::report::{QueueOutcome, QueueState};
use crate::archive::manifest::Manifest;
use crate::exclude::Matcher;
use crate::exclude::mover::AmqpConfig;
use crate::rabbit::Broker;
use crate::rabbit::queue_type::QueueType;
use crate::replay::{self, Options, Origin, Progress, QueueSource, Sources};
use crate::settings::Settings;

/// Publishes what is left of the replay and checks the counts.
pub async fn run(
    broker: &Broker,
    settings: &Settings,
    area: &Path,
    manifest: &Manifest,
    journal: &Journal,
) -> anyhow::Result<(Vec<QueueOutcome>, Vec<String>)> {
    let spec = journal.replay.clone().unwrap_or_default();
    let target = AmqpConfig::new(broker.amqp_url(settings).await?, settings);
    let root = area.join("new");
    let work = replay::work_dir(area);
    std::fs::create_dir_all(&work)?;
    // After a swap, only the logical records are left in the area (the
    // classic stores went into the data directory).
    let after_swap = journal.method == Method::Swap;
    let found = tokio::task::spawn_blocking({
        let root = root.clone();
        let logical = manifest.logical.clone();
        move || {
            if after_swap {
                return Ok(crate::logical::find(&root, &logical)?
                    .into_iter()
                    .map(|f| QueueSource {
                        vhost: f.vhost.clone(),
                        queue: f.queue.clone(),
                        origin: Origin::Logical(f),
                    })
                    .collect());
            }
            replay::source::find(&root, &logical)
        }
    })
    .await??;
    let queues = select(&found, &spec);
    let mut progress = Progress::open(area)?;
    if spec.purge && !progress.purged {
        // A stream cannot be emptied (RabbitMQ refuses a purge, even of an
        // empty one): one holding messages is refused before the restore.
        let emptied: Vec<(String, String)> = spec
            .queues
            .iter()
            .filter(|(v, n)| !is_stream(manifest, v, n))
            .cloned()
            .collect();
        tracing::info!(
            "emptying {} queues first (--replace-messages)",
            emptied.len()
        );
        replay::counts(&target, &emptied, true).await?;
        progress.purged = true;
        progress.save()?;
    }
    if spec.append && progress.before.is_empty() {
        progress.before = counts(broker, &target, manifest, &spec.queues).await?;
        progress.save()?;
    }
    let options = Options {
        exclude: match &journal.exclude {
            Some(e) => Some(Matcher::new(&e.globs)?),
            None => None,
        },
        drop_excluded: journal.exclude.as_ref().is_some_and(|e| e.drop),
        window: crate::failpoint::value("replay:window").map_or(replay::WINDOW, |w| w as usize),
    };
    let sources = Sources {
        root,
        work: work.clone(),
        queues,
    };
    replay::run(&target, &sources, &options, &mut progress).await?;
    let _ = std::fs::remove_dir_all(&work);
    let now = counts(broker, &target, manifest, &spec.queues).await?;
    Ok(judge(manifest, &spec, &progress, &now))
}

/// Each queue's message count, asked over AMQP, except a stream's: its
/// declare-ok always says 0, so the node's exact count stands in.
async fn counts(
    broker: &Broker,
    target: &AmqpConfig,
    manifest: &Manifest,
    queues: &[(String, String)],
) -> anyhow::Result<Vec<u64>> {
    let mut counts = replay::counts(target, queues, false).await?;
    if !queues.iter().any(|(v, n)| is_stream(manifest, v, n)) {
        return Ok(counts);
    }
    let mut vhosts: Vec<String> = queues.iter().map(|(v, _)| v.clone()).collect();
    vhosts.sort();
    vhosts.dedup();
    let listed = broker.control.queues(&vhosts).await?;
    for (count, queue) in counts.iter_mut().zip(queues) {
        if is_stream(manifest, &queue.0, &queue.1)
            && let Some((q, _)) = listed
                .iter()
                .find(|(q, _)| q.vhost == queue.0 && q.name == queue.1)
        {
            *count = q.messages;
        }
    }
    Ok(counts)
}

/// Whether the snapshot records `queue` of `vhost` as a stream.
fn is_stream(manifest: &Manifest, vhost: &str, queue: &str) -> bool {
    manifest
        .queues
        .iter()
        .any(|q| q.vhost == vhost && q.name == queue && q.queue_type == QueueType::Stream)
}

/// The snapshot's queues the spec names, in its order; a named queue the
/// snapshot holds no message of is simply absent.
fn select(found: &[QueueSource], spec: &ReplaySpec) -> Vec<QueueSource> {
    spec.queues
        .iter()
        .filter_map(|(v, q)| found.iter().find(|s| &s.vhost == v && &s.queue == q))
        .cloned()
        .collect()
}

/// Each queue's count against what was published: a shortfall fails, a
/// surplus is explained (a resumed queue may hold a window twice).
fn judge(
    manifest: &Manifest,
    spec: &ReplaySpec,
    progress: &Progress,
    now: &[u64],
) -> (Vec<QueueOutcome>, Vec<String>) {
    let mut queues = Vec::new();
    let mut warnings = Vec::new();
    for (i, (vhost, name)) in spec.queues.iter().enumerate() {
        let entry = manifest
            .queues
            .iter()
            .find(|q| &q.vhost == vhost && &q.name == name);
        let p = progress.get(vhost, name).cloned().unwrap_or_default();
        let before = progress.before.get(i).copied().unwrap_or(0);
        let expected = before + p.published;
        let actual = now.get(i).copied().unwrap_or(0);
        if let Some(e) = entry
            && p.total.is_some_and(|t| t != e.messages)
        {
            warnings.push(format!(
                "queue {name:?} in vhost {vhost:?}: the snapshot's files hold {} messages, the manifest counted {} at backup time",
                p.total.unwrap_or(0),
                e.messages
            ));
        }
        let status = judge_count(
            vhost,
            name,
            expected,
            actual,
            p.interrupted > 0,
            &mut warnings,
        );
        queues.push(QueueOutcome {
            vhost: vhost.clone(),
            name: name.clone(),
            queue_type: entry.map_or_else(|| "classic".into(), |e| e.queue_type.clone()),
            expected,
            actual: Some(actual),
            status,
        });
    }
    (queues, warnings)
}

/// One queue's count after a replay against what was published into it:
/// a surplus is explained (a resumed replay publishes its unconfirmed
/// window twice), a shortfall is a warning (a consumer, a TTL or a length
/// limit). Shared by the single-node and the cluster replay.
pub fn judge_count(
    vhost: &str,
    name: &str,
    expected: u64,
    actual: u64,
    interrupted: bool,
    warnings: &mut Vec<String>,
) -> QueueState {
    if actual == expected {
        QueueState::Ok
    } else if actual > expected {
        warnings.push(if interrupted {
            format!(
                "queue {name:?} in vhost {vhost:?} has {actual} messages, {} more than replayed: the replay was interrupted and resumed, and messages in flight then are published twice",
                actual - expected
            )
        } else {
            format!(
                "queue {name:?} in vhost {vhost:?} has {actual} messages, {} more than replayed: something else published into it",
                actual - expected
            )
        });
        QueueState::More
    } else {
        warnings.push(format!(
            "queue {name:?} in vhost {vhost:?} has {actual} messages but {expected} were replayed into it: a consumer, a TTL or a length limit took some"
        ));
        QueueState::Fewer
    }
}
