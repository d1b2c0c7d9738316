//! `restore` (§6): verify everything into staging before touching the node,
//! import definitions, swap message stores in by rename while the broker is
//! stopped, check the counts, roll back on failure.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::archive::manifest::{Capture, Consistency, IndexVersion, Manifest, QueueEntry};
use crate::error::{Kind, class, incompatible, refused};
use crate::output::{Output, bytes};
use crate::rabbit::Broker;
use crate::rabbit::definitions::Definitions;
use crate::rabbit::upgrade;
use crate::settings::{RestoreSettings, Settings};
use crate::staging::{NodeLock, Staging};
use crate::swap::{self, Journal, Phase, Swapper};
use crate::transfer::{self, DownloadSource};
use crate::{hooks, signals};

mod fetch;
mod report;

use fetch::{check_free_space, fetch_all, fetch_definitions};
pub use report::{ExclusionOutcome, QueueOutcome, RestoreReport, describe};
use report::{planned, replaced, uncovered};

pub use crate::rabbit::version::older as version_older;

/// Runs `restore`.
pub async fn run(
    settings: &Settings,
    args: &RestoreSettings,
    out: Output,
) -> anyhow::Result<RestoreReport> {
    let started = Instant::now();
    let repo = super::open_repository(settings).await?;
    // Finishing an interrupted restore must work while the broker is stopped.
    let broker = if args.resume {
        Broker::stopped(settings).await?
    } else {
        Broker::connect(settings).await?
    };
    let node = broker.identity.name.clone();
    let data_dir = broker.data_dir(settings.data_dir.as_deref()).await?;
    let _lock = NodeLock::acquire(&data_dir, "restore")?;

    // A restore killed before the broker was stopped changed no message:
    // its work area only wastes space. Later ones are for --resume.
    let (pending, removed) = swap::sweep(&data_dir)?;
    for stale in removed {
        tracing::warn!(
            "removed {}, left by an interrupted restore that had not touched the broker",
            stale.display()
        );
    }
    if args.resume {
        return super::resume::run(
            settings, args, &broker, &repo, &data_dir, pending, out, started,
        )
        .await;
    }
    if let Some(p) = pending.first() {
        return Err(refused(format!(
            "an interrupted restore of snapshot {} (stopped at phase {:?}) was found in {}; the broker may be stopped. Finish or undo it first with `rabbitmq-backup restore --resume`",
            p.journal.snapshot_id,
            p.journal.phase,
            p.area().display()
        )));
    }

    let from_node = args.from_node.clone().unwrap_or_else(|| node.clone());
    let snapshot = if args.snapshot == "latest" {
        repo.resolve("latest", Some(&from_node)).await?
    } else {
        repo.resolve(&args.snapshot, args.from_node.as_deref())
            .await?
    };
    let manifest = repo.manifest(&snapshot).await?;
    check_compatibility(&manifest, &broker, args)?;
    // An encrypted snapshot: the identity must open its first chunk before
    // anything is written beside the node's data.
    let source = DownloadSource::for_snapshot(
        &repo,
        &snapshot,
        &manifest,
        settings.identity.as_ref(),
        args.download_concurrency,
    )?;
    transfer::probe(&source, &manifest.chunks)
        .await
        .with_context(|| {
            format!(
                "cannot decrypt snapshot {}; the node was not touched",
                manifest.id
            )
        })?;
    tracing::info!(
        "restoring snapshot {} of {} ({}, {}) onto {node}",
        manifest.id,
        manifest.node.name,
        manifest.consistency.as_str(),
        bytes(manifest.totals.file_bytes)
    );

    let mut report = RestoreReport {
        snapshot: manifest.id.clone(),
        from_node: manifest.node.name.clone(),
        node: node.clone(),
        repository: repo.url().to_string(),
        dry_run: args.dry_run,
        definitions_only: args.definitions_only,
        uncovered_queues: uncovered(&manifest),
        ..RestoreReport::default()
    };

    // Steps 1-2: everything downloaded and verified before the node changes.
    let mut staging = Staging::create(&data_dir, "restore", &manifest.id)?;
    let definitions = if args.definitions_only {
        fetch_definitions(source, &manifest).await?
    } else {
        check_free_space(staging.path(), &manifest)?;
        fetch_all(source, &manifest, &staging.path().join("new")).await?
    };
    let definitions = Definitions::parse(definitions)?;
    // What the target would reject is adapted now, so the import cannot
    // stop half-way on it.
    let adapted = upgrade::adapt(&definitions.bytes, &broker.identity.rabbitmq_version)?;
    report.warnings.extend(adapted.changes);
    let definitions = Definitions::parse(adapted.bytes)?;
    crate::failpoint::hit("restore:staged")?;

    // The plan: which queues on this node lose messages, and may we go on.
    let target_defs = Definitions::parse(broker.export_definitions().await?)?;
    let existing: Vec<String> = manifest
        .vhosts
        .iter()
        .map(|v| v.name.clone())
        .filter(|v| target_defs.vhosts.contains(v))
        .collect();
    let target_queues = broker
        .queues(&target_defs.vhosts, target_defs.non_classic)
        .await?;
    let consumed = crate::rabbit::ctl::with_consumers(&target_queues);
    if !consumed.is_empty() && !args.definitions_only {
        return Err(refused(format!(
            "consumers are connected to {}: stop them before restoring (for example with --before), or they would receive restored messages before the checks{}",
            consumed.join(", "),
            if args.exclude.is_some() {
                " and the exclusion"
            } else {
                ""
            }
        )));
    }
    if !args.definitions_only {
        report.replaced_queues = replaced(&target_queues, &existing);
        let lost: Vec<String> = report
            .replaced_queues
            .iter()
            .map(|q| {
                format!(
                    "{:?} in vhost {:?} ({} messages)",
                    q.name,
                    q.vhost,
                    q.actual.unwrap_or(0)
                )
            })
            .collect();
        if !lost.is_empty() && !args.replace_messages && !args.dry_run {
            return Err(refused(format!(
                "the restore would replace the messages of {} on {node}; pass --replace-messages to go on, or purge those queues first",
                lost.join(", ")
            )));
        }
    }
    report.vhosts_restored = if args.definitions_only {
        Vec::new()
    } else {
        manifest.vhosts.iter().map(|v| v.name.clone()).collect()
    };

    if args.dry_run {
        for w in &report.warnings {
            tracing::warn!("{w}");
        }
        report.queues = planned(&manifest);
        report.duration_ms = started.elapsed().as_millis() as u64;
        out.result(&report, || describe(&report))?;
        return Ok(report);
    }

    hooks::around(
        args.before.as_deref(),
        args.after.as_deref(),
        &manifest.id,
        &node,
        &repo.url().to_string(),
        "was restored",
        apply(
            settings,
            &broker,
            &data_dir,
            &mut staging,
            &manifest,
            &definitions,
            args,
            &mut report,
        ),
    )
    .await?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    out.result(&report, || describe(&report))?;
    Ok(report)
}

/// Steps 3-7 on a verified staging area.
#[allow(clippy::too_many_arguments)]
async fn apply(
    settings: &Settings,
    broker: &Broker,
    data_dir: &Path,
    staging: &mut Staging,
    manifest: &Manifest,
    definitions: &Definitions,
    args: &RestoreSettings,
    report: &mut RestoreReport,
) -> anyhow::Result<()> {
    signals::check()?;
    tracing::info!(
        "importing definitions ({} vhosts, {} queues, {} exchanges, {} bindings, {} users, {} policies)",
        definitions.info.vhosts,
        definitions.info.queues,
        definitions.info.exchanges,
        definitions.info.bindings,
        definitions.info.users,
        definitions.info.policies
    );
    broker
        .import_definitions(&definitions.bytes, staging.path())
        .await
        .context("cannot import the snapshot's definitions; the node's messages are untouched")?;
    report.definitions_imported = true;
    if args.definitions_only {
        return Ok(());
    }

    crate::failpoint::hit("restore:after-import")?;
    // From here on the work area must survive a crash: it holds the journal.
    staging.keep();
    std::fs::write(staging.path().join("manifest.json"), manifest.to_json())?;
    let mut swapper = Swapper::create(
        staging.path(),
        Journal {
            snapshot_id: manifest.id.clone(),
            source_node: manifest.node.name.clone(),
            target_node: broker.identity.name.clone(),
            data_dir: data_dir.to_path_buf(),
            vhost_dirs: manifest.vhosts.iter().map(|v| v.dir.clone()).collect(),
            phase: Phase::Imported,
            moved_aside: Vec::new(),
            swapped_in: Vec::new(),
        },
    )?;
    let pause_ms = swap_and_start(broker, &mut swapper).await?;
    report.pause_ms = pause_ms;
    finish(settings, broker, &mut swapper, manifest, args, report).await
}

/// Stops the broker, swaps the stores in, starts it; rolls back if the
/// swap or the start fails. Returns the pause in ms.
pub async fn swap_and_start(broker: &Broker, swapper: &mut Swapper) -> anyhow::Result<u64> {
    let node = broker.identity.name.clone();
    tracing::info!("stopping the broker (rabbitmqctl stop_app) to swap the message stores in");
    let paused = Instant::now();
    swapper.set_phase(Phase::Stopped)?;
    if let Err(e) = broker.ctl.stop_app(None).await {
        let _ = broker.ctl.start_app().await;
        swapper.set_phase(Phase::Done)?;
        return Err(e.context("stop_app failed; nothing was swapped"));
    }
    let swapped = crate::failpoint::hit("restore:after-stop-app")
        .and_then(|()| swapper.swap_in())
        .and_then(|()| swapper.fix_owner())
        .and_then(|()| crate::failpoint::hit("restore:after-swap"));
    if let Err(e) = swapped {
        return Err(rollback(
            broker,
            swapper,
            e.context("swapping the message stores in failed"),
            false,
        )
        .await);
    }
    swapper.set_phase(Phase::Swapped)?;
    if let Err(e) = broker.ctl.start_app().await {
        return Err(rollback(
            broker,
            swapper,
            e.context(format!("node {node} did not start on the restored data")),
            true,
        )
        .await);
    }
    swapper.set_phase(Phase::Started)?;
    let pause_ms = paused.elapsed().as_millis() as u64;
    tracing::info!(
        "the broker is running again on the restored data after a pause of {pause_ms} ms"
    );
    Ok(pause_ms)
}

/// Checks counts, excludes, cleans up (steps 5-7).
pub async fn finish(
    settings: &Settings,
    broker: &Broker,
    swapper: &mut Swapper,
    manifest: &Manifest,
    args: &RestoreSettings,
    report: &mut RestoreReport,
) -> anyhow::Result<()> {
    let checked = match crate::failpoint::hit("restore:after-start") {
        Ok(()) => check_counts(broker, manifest).await,
        Err(e) => Err(e),
    };
    let outcomes = match checked {
        Ok(outcomes) => outcomes,
        Err(e) => return Err(rollback(broker, swapper, e, true).await),
    };
    let missing: Vec<String> = outcomes
        .iter()
        .filter(|q| q.status == "missing")
        .map(|q| {
            format!(
                "{:?} in vhost {:?} has {} of {} messages",
                q.name,
                q.vhost,
                q.actual.unwrap_or(0),
                q.expected
            )
        })
        .collect();
    report.queues = outcomes;
    if !missing.is_empty() {
        let message = format!(
            "messages are missing after the restore: {}",
            missing.join(", ")
        );
        if manifest.consistency == Consistency::Live {
            report.warnings.push(format!(
                "{message} (the snapshot is a live capture, which can be inconsistent)"
            ));
        } else {
            return Err(rollback(broker, swapper, anyhow::anyhow!(message), true).await);
        }
    }
    report.previous_store = swapper
        .finish(args.keep_old)?
        .map(|p| p.display().to_string());
    let area = swapper.area().to_path_buf();
    if let Err(e) = std::fs::remove_dir_all(&area) {
        report.warnings.push(format!(
            "could not remove the work area {}: {e}",
            area.display()
        ));
    }
    if let Some(matcher) = &args.exclude {
        report.excluded =
            super::exclude::after_restore(settings, manifest, matcher, args.drop_excluded).await?;
    }
    Ok(())
}

/// Puts the previous stores back and starts the broker. Returns the error
/// to report: `RolledBack` (7) if that worked, `NeedsAttention` (8) if not.
pub async fn rollback(
    broker: &Broker,
    swapper: &mut Swapper,
    cause: anyhow::Error,
    started: bool,
) -> anyhow::Error {
    let node = broker.identity.name.clone();
    tracing::error!("{cause:#}; rolling back to the previous message store");
    let outcome: anyhow::Result<()> = async {
        if started {
            broker.ctl.stop_app(None).await?;
        }
        swapper.swap_back()?;
        broker.ctl.start_app().await?;
        swapper.set_phase(Phase::Done)?;
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(swapper.area());
            cause.context(class(
                Kind::RolledBack,
                format!("the restore failed and node {node} was rolled back to its previous messages (definitions stay imported)"),
            ))
        }
        Err(e) => cause.context(class(
            Kind::NeedsAttention,
            format!(
                "the restore failed AND the rollback failed ({e:#}); node {node} may be stopped. The work area {} holds the journal: run `rabbitmq-backup restore --resume` to finish or undo it",
                swapper.area().display()
            ),
        )),
    }
}

fn check_compatibility(
    manifest: &Manifest,
    broker: &Broker,
    args: &RestoreSettings,
) -> anyhow::Result<()> {
    let (target, source) = (
        &broker.identity.rabbitmq_version,
        &manifest.node.rabbitmq_version,
    );
    if version_older(target, source) && !args.force_downgrade {
        return Err(incompatible(format!(
            "snapshot {} comes from RabbitMQ {source} but node {} runs the older {target}; a downgrade can fail to read the data: upgrade the node, or pass --force-downgrade",
            manifest.id, broker.identity.name
        )));
    }
    for version in [source, target] {
        if version_older(NEWEST_TESTED, version) && !version.starts_with(NEWEST_TESTED) {
            tracing::warn!(
                "RabbitMQ {version} is newer than the newest version this rabbitmq-backup was tested with ({NEWEST_TESTED}.x); check the restored queues' counts in the report"
            );
        }
    }
    if !args.definitions_only {
        check_index_readable(manifest, target, &broker.identity.name)?;
    }
    Ok(())
}

/// The newest RabbitMQ series the tool is tested with (DESIGN §15).
const NEWEST_TESTED: &str = "4.3";

/// The first version that cannot read (nor convert) a version-1 queue index.
const NO_INDEX_V1_FROM: &str = "4.3.0";

/// A queue's index version; manifests written before it was recorded fall
/// back on the source's default (version 2 from RabbitMQ 4.0).
fn index_version(manifest: &Manifest, q: &QueueEntry) -> Option<IndexVersion> {
    if q.dirs.is_empty() {
        return None;
    }
    q.index_version.or_else(|| {
        Some(if version_older(&manifest.node.rabbitmq_version, "4.0.0") {
            IndexVersion::V1
        } else {
            IndexVersion::V2
        })
    })
}

/// Refuses, before anything changes, a swap that would bring queues back
/// empty: RabbitMQ 4.3+ cannot read a version-1 queue index (DESIGN §2).
fn check_index_readable(manifest: &Manifest, target: &str, node: &str) -> anyhow::Result<()> {
    if version_older(target, NO_INDEX_V1_FROM) {
        return Ok(());
    }
    let unreadable: Vec<String> = manifest
        .queues
        .iter()
        .filter(|q| q.captured_as() == Capture::Files && q.messages > 0)
        .filter(|q| index_version(manifest, q) == Some(IndexVersion::V1))
        .map(|q| {
            format!(
                "{:?} in vhost {:?} ({} messages)",
                q.name, q.vhost, q.messages
            )
        })
        .collect();
    if unreadable.is_empty() {
        return Ok(());
    }
    Err(incompatible(format!(
        "snapshot {} holds queues with a version-1 queue index: {}. Node {node} runs RabbitMQ {target}, which cannot read that index (4.3 dropped it): a swap of the files would bring these queues back empty. Nothing was changed. Restore with `--method replay` (the messages are published instead of the files swapped in), or restore onto RabbitMQ 4.0-4.2 first, which converts the index, and back up from there",
        manifest.id,
        unreadable.join(", ")
    )))
}

/// Waits for the restored queues to report counts, then compares them with
/// the manifest.
async fn check_counts(broker: &Broker, manifest: &Manifest) -> anyhow::Result<Vec<QueueOutcome>> {
    let vhosts: Vec<String> = manifest.vhosts.iter().map(|v| v.name.clone()).collect();
    let expected: BTreeMap<(String, String), &QueueEntry> = manifest
        .queues
        .iter()
        .filter(|q| q.covered)
        .map(|q| ((q.vhost.clone(), q.name.clone()), q))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now: BTreeMap<(String, String), u64> = broker
            // Only classic queues are checked: no extra query for the others.
            .queues(&vhosts, false)
            .await?
            .into_iter()
            .map(|q| ((q.vhost, q.name), q.messages))
            .collect();
        let outcomes: Vec<QueueOutcome> = expected
            .iter()
            .map(|((vhost, name), q)| {
                let actual = now.get(&(vhost.clone(), name.clone())).copied();
                let status = match actual {
                    Some(a) if a == q.messages => "ok",
                    Some(a) if a > q.messages => "more",
                    _ => "missing",
                };
                QueueOutcome::of(q, actual, status)
            })
            .collect();
        // Queues recover in the background after start_app: give them time.
        if outcomes.iter().all(|o| o.status != "missing") || Instant::now() > deadline {
            return Ok(outcomes);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(source: &str, index: Option<IndexVersion>, messages: u64) -> Manifest {
        let mut m = crate::archive::manifest::tests::sample();
        m.node.rabbitmq_version = source.into();
        m.queues[0].index_version = index;
        m.queues[0].messages = messages;
        m
    }

    #[test]
    fn version_1_queues_onto_4_3_are_refused_up_front() {
        let m = manifest("3.10.8", Some(IndexVersion::V1), 3);
        let err = check_index_readable(&m, "4.3.6", "rabbit@new").unwrap_err();
        assert_eq!(crate::error::kind_of(&err), Kind::Incompatible);
        let text = err.to_string();
        for part in [
            "\"oro.default\"",
            "3 messages",
            "4.3.6",
            "--method replay",
            "Nothing was changed",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        // 4.0-4.2 convert the index; version 2 and empty queues are fine.
        check_index_readable(&m, "4.0.5", "n").unwrap();
        check_index_readable(&m, "4.2.9", "n").unwrap();
        check_index_readable(&manifest("3.10.8", Some(IndexVersion::V2), 3), "4.3.6", "n").unwrap();
        check_index_readable(&manifest("3.10.8", Some(IndexVersion::V1), 0), "4.3.6", "n").unwrap();
        // Manifests from before index_version: the source's default decides.
        check_index_readable(&manifest("3.10.8", None, 3), "4.3.6", "n").unwrap_err();
        check_index_readable(&manifest("4.0.5", None, 3), "4.3.6", "n").unwrap();
    }
}
