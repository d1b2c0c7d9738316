//! THE cluster restore state machine: the steps of [`super::journal`]
//! taken against the running target (one member's management API and
//! AMQP listener; the cluster routes each message to its queue's home or
//! leader), each journalled before the next. A run and a `--resume` take
//! the same loop from wherever the journal says. A part swapped onto the
//! member the tool runs on ([`super::swap`]) goes first, before any other
//! message is touched ([`swapped`]).

mod swapped;

use std::path::Path;
use std::time::Instant;

use super::journal::{Area, PartMethod, PartState, Phase};
use crate::archive::manifest::Manifest;
use crate::exclude::Matcher;
use crate::exclude::mover::AmqpConfig;
use crate::failpoint::hit;
use crate::rabbit::Broker;
use crate::rabbit::queue_type::QueueType;
use crate::replay::{self, Options, Progress, Sources};
use crate::repo::{Repository, SnapshotRef};
use crate::restore::fetch;
use crate::restore::replay::judge_count;
use crate::restore::report::QueueOutcome;
use crate::settings::Settings;
use crate::transfer::DownloadSource;

/// What the machine works with.
pub struct Target<'a> {
    /// The member the tool talks to.
    pub broker: &'a Broker,
    /// Credentials, identity.
    pub settings: &'a Settings,
    /// Where the member snapshots are.
    pub repo: &'a Repository,
    /// Chunks downloaded at once.
    pub download_concurrency: usize,
    /// The member's data directory (a swapped part goes in there).
    pub data_dir: &'a Path,
    /// `--keep-old`: a swapped part keeps the member's previous stores.
    pub keep_old: bool,
}

/// A swapped part's failure that left the target as it was: the swap was
/// rolled back or no store moved, and no other part was touched. The
/// cluster restore then ends and removes its work area.
#[derive(Debug)]
pub struct Undone(pub String);

impl std::fmt::Display for Undone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Timings of one part, for the report.
#[derive(Debug, Clone, Default)]
pub struct PartTimes {
    /// Downloading and verifying its snapshot, in ms (0 if done earlier).
    pub fetch_ms: u64,
    /// Replaying its queues (a swapped part: swapping and replaying), in
    /// ms (0 if done earlier).
    pub replay_ms: u64,
    /// A swapped part: how long the member's broker was stopped, in ms.
    pub pause_ms: Option<u64>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every replayed queue's count, checked cluster-wide.
    pub queues: Vec<QueueOutcome>,
    /// Per part, in journal order: what the journal says of it at the end.
    pub parts: Vec<super::journal::PartJournal>,
    /// Per part, in journal order.
    pub times: Vec<PartTimes>,
    /// Anything the operator should know.
    pub warnings: Vec<String>,
}

/// Runs the restore from its journal's phase to the end, then removes the
/// work area. `definitions` (adapted to the target) are needed only in
/// phase `Staged`. A failure before any message is touched removes the
/// area; after, it keeps it for `--resume` (exit 8).
pub async fn run(
    mut area: Area,
    target: &Target<'_>,
    definitions: Option<&[u8]>,
) -> anyhow::Result<Outcome> {
    if area.journal.phase == Phase::Staged {
        let imported = import(&mut area, target, definitions).await;
        if let Err(e) = imported {
            if let Err(rm) = std::fs::remove_dir_all(area.path()) {
                tracing::warn!("could not remove {}: {rm}", area.path().display());
            }
            return Err(e);
        }
    }
    let mut outcome = Outcome::default();
    match forward(&mut area, target, &mut outcome).await {
        Ok(()) => {}
        Err(e) if e.downcast_ref::<Undone>().is_some() => {
            if let Err(rm) = std::fs::remove_dir_all(area.path()) {
                tracing::warn!("could not remove {}: {rm}", area.path().display());
            }
            return Err(e);
        }
        Err(e) => return Err(area.attention(e)),
    }
    if let Err(e) = area.remove() {
        outcome.warnings.push(format!("{e:#}"));
    }
    Ok(outcome)
}

async fn import(
    area: &mut Area,
    target: &Target<'_>,
    definitions: Option<&[u8]>,
) -> anyhow::Result<()> {
    let definitions = definitions
        .ok_or_else(|| anyhow::anyhow!("the definitions to import were not downloaded"))?;
    crate::signals::check()?;
    hit("cluster-restore:import")?;
    target
        .broker
        .import_definitions(definitions, area.path())
        .await
        .map_err(|e| {
            e.context("cannot import the cluster snapshot's definitions; no message was touched")
        })?;
    area.enter(Phase::Imported)
}

/// From `Imported` to `Done`.
async fn forward(
    area: &mut Area,
    target: &Target<'_>,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    outcome.times = vec![PartTimes::default(); area.journal.parts.len()];
    if area.journal.phase == Phase::Imported {
        crate::signals::check()?;
        // First, before any other message is touched: a swap that fails
        // rolls back and leaves the target as it was.
        if let Some(i) = area
            .journal
            .parts
            .iter()
            .position(|p| p.method == PartMethod::Swap && !p.state.done())
        {
            let (times, warnings) = swapped::run(area, i, target).await?;
            outcome.times[i] = times;
            outcome.warnings.extend(warnings);
        }
    }
    let amqp = AmqpConfig::new(
        target.broker.amqp_url(target.settings).await?,
        target.settings,
    );
    // The swapped part's queues were put back (and its logical records
    // emptied first) by the swap. Streams cannot be emptied: one holding
    // messages was refused up front, and one declared by the import is empty
    // (its message count may still show a deleted namesake's).
    let queues: Vec<(String, String)> = area
        .journal
        .parts
        .iter()
        .filter(|p| p.method == PartMethod::Replay)
        .flat_map(|p| p.queues.iter())
        .filter(|q| q.queue_type != QueueType::Stream)
        .map(|q| q.key())
        .collect();
    let all_queues = area.journal.queue_keys();
    if area.journal.phase == Phase::Imported {
        // Nothing is published yet: a crash here makes --resume purge or
        // count again, with the same result.
        if area.journal.purge {
            tracing::info!(
                "emptying {} queues first (--replace-messages)",
                queues.len()
            );
            replay::counts(&amqp, &queues, true).await?;
        }
        if area.journal.append {
            // In `Journal::queues` order (an appending restore swaps nothing).
            area.journal.before = replay::counts(&amqp, &all_queues, false).await?;
        }
        area.enter(Phase::Replaying)?;
    }
    let options = Options {
        exclude: match &area.journal.exclude {
            Some(e) => Some(Matcher::new(&e.globs)?),
            None => None,
        },
        drop_excluded: area.journal.exclude.as_ref().is_some_and(|e| e.drop),
        window: crate::failpoint::value("replay:window").map_or(replay::WINDOW, |w| w as usize),
    };
    for i in 0..area.journal.parts.len() {
        if area.journal.parts[i].method == PartMethod::Swap {
            continue;
        }
        crate::signals::check()?;
        outcome.times[i] = part(area, i, target, &amqp, &options).await?;
    }
    if area.journal.phase == Phase::Replaying {
        hit("cluster-restore:check-counts")?;
        let now = settled_counts(area, &amqp, &all_queues).await?;
        let (checked, warnings) = judge(area, &now);
        outcome.queues = checked;
        outcome.warnings.extend(warnings);
        area.enter(Phase::Done)?;
    }
    outcome.parts = area.journal.parts.clone();
    Ok(())
}

/// Downloads part `i`'s snapshot into its directory's `new/` from nothing
/// (a download a crash cut short starts again) and journals it `Fetched`;
/// `prepare` sees the files before they count as fetched. `purpose` ends
/// the log line. Returns the milliseconds it took.
pub(super) async fn fetch_part(
    area: &mut Area,
    i: usize,
    target: &Target<'_>,
    snapshot: &SnapshotRef,
    manifest: &Manifest,
    purpose: &str,
    prepare: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let dir = area.part_dir(i);
    remove(&dir);
    std::fs::create_dir_all(&dir)?;
    fetch::check_free_space(area.path(), manifest)?;
    let source = DownloadSource::for_snapshot(
        target.repo,
        snapshot,
        manifest,
        target.settings.identity.as_ref(),
        target.download_concurrency,
    )?;
    tracing::info!(
        "part {} of {}: snapshot {} of {}{purpose}",
        i + 1,
        area.journal.parts.len(),
        snapshot.id,
        snapshot.node
    );
    hit("cluster-restore:fetch")?;
    fetch::fetch_all(source, manifest, &dir.join("new"), prepare).await?;
    area.set_part(i, PartState::Fetched)?;
    Ok(started.elapsed().as_millis() as u64)
}

/// Takes part `i` from where its journal entry says to `Replayed`.
async fn part(
    area: &mut Area,
    i: usize,
    target: &Target<'_>,
    amqp: &AmqpConfig,
    options: &Options,
) -> anyhow::Result<PartTimes> {
    let mut times = PartTimes::default();
    let dir = area.part_dir(i);
    let p = area.journal.parts[i].clone();
    if p.state.done() {
        remove(&dir);
        return Ok(times);
    }
    if p.queues.is_empty() {
        tracing::info!(
            "snapshot {} of {}: no message to replay",
            p.snapshot,
            p.node
        );
        return area.set_part(i, PartState::Replayed).map(|()| times);
    }
    let snapshot = SnapshotRef {
        node: p.node.clone(),
        id: p.snapshot.clone(),
    };
    let manifest = target.repo.manifest(&snapshot).await?;
    let root = dir.join("new");
    // Fetched but gone (removed by hand): downloaded again, never taken
    // for a part without messages.
    if p.state == PartState::Todo || !root.exists() {
        // Replayed by the store reader, which needs no recovery terms: the files stay as archived.
        times.fetch_ms = fetch_part(area, i, target, &snapshot, &manifest, "", |_| Ok(())).await?;
    }
    let started = Instant::now();
    let work = replay::work_dir(&dir);
    std::fs::create_dir_all(&work)?;
    let found = tokio::task::spawn_blocking({
        let root = root.clone();
        let logical = manifest.logical.clone();
        move || replay::source::find(&root, &logical)
    })
    .await??;
    let queues = p
        .queues
        .iter()
        .filter_map(|q| {
            found
                .iter()
                .find(|s| s.vhost == q.vhost && s.queue == q.name)
        })
        .cloned()
        .collect();
    let mut progress = Progress::open(&dir)?;
    replay::run(
        amqp,
        &Sources { root, work, queues },
        options,
        &mut progress,
    )
    .await
    .map_err(|e| e.context(format!("replaying snapshot {} of {}", p.snapshot, p.node)))?;
    times.replay_ms = started.elapsed().as_millis() as u64;
    let entry = &mut area.journal.parts[i];
    entry.published = p
        .queues
        .iter()
        .map(|q| progress.get(&q.vhost, &q.name).map_or(0, |e| e.published))
        .collect();
    entry.excluded = progress.queues.iter().map(|e| e.excluded).sum();
    entry.interrupted = progress
        .queues
        .iter()
        .filter(|e| e.interrupted > 0)
        .map(|e| (e.vhost.clone(), e.queue.clone()))
        .collect();
    area.set_part(i, PartState::Replayed)?;
    remove(&dir);
    Ok(times)
}

pub(super) fn remove(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("could not remove {}: {e}", dir.display());
    }
}

/// The queues' counts once every one holds what was published into it,
/// or after [`COUNT_PATIENCE`]: a stream's (and a quorum queue's) count
/// is read from counters that follow its log by a moment.
async fn settled_counts(
    area: &Area,
    amqp: &AmqpConfig,
    queues: &[(String, String)],
) -> anyhow::Result<Vec<u64>> {
    let j = &area.journal;
    let expected: Vec<u64> = queues
        .iter()
        .enumerate()
        .map(|(i, (v, n))| j.before.get(i).copied().unwrap_or(0) + j.published(v, n).0)
        .collect();
    let deadline = Instant::now() + COUNT_PATIENCE;
    loop {
        let now = replay::counts(amqp, queues, false).await?;
        let short = now.iter().zip(&expected).any(|(n, e)| n < e);
        if !short || Instant::now() >= deadline {
            return Ok(now);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// How long counts below what was published are asked again.
const COUNT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Each queue's cluster-wide count against what was published into it:
/// a surplus is explained (a resumed queue may hold a window twice), a
/// shortfall is a warning (a consumer, a TTL or a length limit).
fn judge(area: &Area, now: &[u64]) -> (Vec<QueueOutcome>, Vec<String>) {
    let j = &area.journal;
    let mut queues = Vec::new();
    let mut warnings = Vec::new();
    for (i, q) in j.queues().into_iter().enumerate() {
        let (vhost, name) = (&q.vhost, &q.name);
        let (published, held) = j.published(vhost, name);
        let excluded = j.exclude.is_some();
        let before = j.before.get(i).copied().unwrap_or(0);
        let expected = before + published;
        let actual = now.get(i).copied().unwrap_or(0);
        if published != held && !excluded {
            warnings.push(format!(
                "queue {name:?} in vhost {vhost:?}: the member snapshots counted {held} messages at backup time, {published} were replayed"
            ));
        }
        let interrupted = j
            .parts
            .iter()
            .any(|p| p.interrupted.iter().any(|(v, n)| v == vhost && n == name));
        let status = judge_count(vhost, name, expected, actual, interrupted, &mut warnings);
        queues.push(QueueOutcome {
            vhost: vhost.clone(),
            name: name.clone(),
            queue_type: q.queue_type.clone(),
            expected,
            actual: Some(actual),
            status,
        });
    }
    queues.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
    (queues, warnings)
}
