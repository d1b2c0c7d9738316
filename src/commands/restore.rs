//! `restore` and `restore --resume`: orchestration only. The checks, the
//! download, the state machine and the report live in `crate::restore`.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use crate::error::{Kind, classified, refused, usage};
use crate::hooks;
use crate::output::{Output, bytes};
use crate::rabbit::definitions::Definitions;
use crate::rabbit::{Broker, Imported};
use crate::rabbit::{recovery, upgrade};
use crate::repo::Repository;
use crate::restore::fetch::{fetch_all, fetch_definitions};
use crate::restore::machine::{ExcludeSpec, Machine, Method, ReplaySpec, sweep};
use crate::restore::node::BrokerNode;
use crate::restore::plan::{self, Choice, method_label};
use crate::restore::report::{RestoreReport, describe, planned, uncovered};
use crate::settings::{RestoreSettings, Settings};
use crate::staging::{NodeLock, Staging};
use crate::transfer::{self, DownloadSource};

/// Runs `restore`.
pub async fn run(
    settings: &Settings,
    args: &RestoreSettings,
    out: Output,
) -> anyhow::Result<RestoreReport> {
    let started = Instant::now();
    // The broker may be stopped: by an interrupted restore, or a backup
    // killed during its pause. Both are asked at once (fixed costs).
    let (repo, broker) = tokio::join!(super::open_repository(settings), Broker::reach(settings));
    let repo = repo?;
    let (broker, state) = broker?;
    let data_dir = broker.data_dir(settings.data_dir.as_deref()).await?;
    let _lock = NodeLock::acquire(&data_dir, "restore")?;
    // A cluster restore keeps its own journal: only `--cluster` resumes it.
    if let Some(area) = crate::cluster::journal::sweep(&data_dir, true)?.first() {
        return Err(refused(format!(
            "an interrupted restore of cluster snapshot {} of {:?} was found in {}; finish it first with `rabbitmq-backup restore --cluster {} --resume`",
            area.journal.cluster_snapshot,
            area.journal.cluster,
            area.path().display(),
            area.journal.cluster
        )));
    }
    if args.resume {
        return resume(settings, args, &broker, &repo, &data_dir, out, started).await;
    }
    let (pending, removed) = sweep(&data_dir, args.dry_run)?;
    for stale in removed {
        tracing::warn!(
            "removed {}, left by an interrupted restore that had not touched the messages",
            stale.display()
        );
    }
    if let Some(p) = pending.first() {
        return Err(refused(format!(
            "an interrupted restore of snapshot {} (stopped at phase {:?}) was found in {}; the broker may be stopped. Finish or undo it first with `rabbitmq-backup restore --resume`",
            p.journal.snapshot_id,
            p.journal.phase,
            p.area().display()
        )));
    }
    let broker = broker.running(state, settings, !args.dry_run).await?;
    let node = broker.identity.name.clone();

    let snapshot = match args.snapshot.as_deref().unwrap_or("latest") {
        "latest" => {
            let from = args.from_node.clone().unwrap_or_else(|| node.clone());
            repo.resolve("latest", Some(&from)).await?
        }
        spec => repo.resolve(spec, args.from_node.as_deref()).await?,
    };
    let manifest = repo.manifest(&snapshot).await?;
    // An encrypted snapshot without its identity is refused here already.
    let source = DownloadSource::for_snapshot(
        &repo,
        &snapshot,
        &manifest,
        settings.identity.as_ref(),
        args.download_concurrency,
    )?;
    let choice = if args.definitions_only {
        Choice {
            method: Method::Swap,
            reason: String::new(),
            then_replay: Vec::new(),
        }
    } else {
        plan::choose(&broker, &manifest, args).await?
    };
    let method = choice.method;
    // Logical records are brought back: by the replay, or after the swap.
    let replays_logical = method == Method::Replay || !choice.then_replay.is_empty();
    if !args.definitions_only {
        tracing::info!("method: {} ({})", choice.label(), choice.reason);
    }
    let checks = plan::before_download(&broker, &manifest, args, &data_dir, &choice)
        .await
        .map_err(|e| predicted(e, args.dry_run))?;
    // The identity must open the first chunk before anything is written
    // beside the node's data.
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
        method: choice.label(),
        method_reason: choice.reason.clone(),
        repository: repo.url().to_string(),
        dry_run: args.dry_run,
        definitions_only: args.definitions_only,
        uncovered_queues: uncovered(&manifest, replays_logical && !args.definitions_only),
        replaced_queues: checks.replaced,
        warnings: checks.notes,
        ..RestoreReport::default()
    };

    // Everything downloaded and verified before the node changes.
    let mut staging = Staging::create(&data_dir, "restore", &manifest.id)?;
    let definitions = if args.definitions_only {
        fetch_definitions(source, &manifest).await?
    } else {
        let (from, to) = (
            manifest.node.rabbitmq_version.as_str(),
            broker.identity.rabbitmq_version.as_str(),
        );
        fetch_all(source, &manifest, &staging.path().join("new"), |staged| {
            for terms in recovery::prepare(staged, from, to)? {
                tracing::info!(
                    "removed {} (RabbitMQ {from}'s queue index, read by {to}, is recovered as after a crash)",
                    terms.display()
                );
            }
            Ok(())
        })
        .await?
    };
    let definitions = Definitions::parse(definitions)?;
    // What the target would reject is adapted now, so the import cannot
    // stop half-way on it.
    let adapted = upgrade::adapt(&definitions.bytes, &broker.identity.rabbitmq_version)?;
    report.warnings.extend(adapted.changes);
    let definitions = Definitions::parse(adapted.bytes)?;
    if !args.definitions_only {
        report.vhosts_restored = manifest
            .vhosts
            .iter()
            .map(|v| v.name.clone())
            .filter(|v| args.vhosts.is_empty() || args.vhosts.contains(v))
            .collect();
    }
    if args.dry_run {
        report.queues = planned(&manifest, replays_logical)
            .into_iter()
            .filter(|q| method == Method::Swap || args.selects(&q.vhost, &q.name))
            .collect();
        return finish(report, started, out);
    }

    let work = async {
        if args.before.is_some() && !args.definitions_only {
            report.replaced_queues = plan::after_before_hook(&broker, &manifest, args, &choice)
                .await?
                .replaced;
        }
        tracing::info!(
            "importing definitions ({} vhosts, {} queues, {} exchanges, {} bindings, {} users, {} policies)",
            definitions.info.vhosts,
            definitions.info.queues,
            definitions.info.exchanges,
            definitions.info.bindings,
            definitions.info.users,
            definitions.info.policies
        );
        if args.definitions_only {
            crate::signals::check()?;
            let imported = broker
                .import_definitions(&definitions.bytes, staging.path())
                .await?;
            report.definitions_imported = true;
            report.definitions_already_held = imported == Imported::AlreadyHeld;
            return anyhow::Ok(());
        }
        let exclude = args.exclude.as_ref().map(|m| ExcludeSpec {
            globs: m.patterns().to_vec(),
            drop: args.drop_excluded,
        });
        let mut machine = match method {
            Method::Swap => Machine::begin(
                &mut staging,
                &manifest,
                &node,
                &data_dir,
                args.keep_old,
                exclude,
                (!choice.then_replay.is_empty()).then(|| ReplaySpec {
                    queues: choice.then_replay.clone(),
                    purge: args.replace_messages,
                    append: false,
                }),
            )?,
            Method::Replay => Machine::begin_replay(
                &mut staging,
                &manifest,
                &node,
                &data_dir,
                exclude,
                ReplaySpec {
                    queues: plan::replayed(&manifest, args),
                    purge: args.replace_messages,
                    append: args.append,
                },
            )?,
        };
        let node = BrokerNode {
            broker: &broker,
            settings,
        };
        let outcome = machine.run(&node, &definitions.bytes).await;
        report.definitions_imported = true;
        let outcome = outcome?;
        report.definitions_already_held = outcome.definitions_already_held;
        report.pause_ms = outcome.pause_ms;
        report.queues = outcome.queues;
        report.excluded = outcome.excluded;
        report.previous_store = outcome.previous_store.map(|p| p.display().to_string());
        report.warnings.extend(outcome.warnings);
        Ok(())
    };
    hooks::around(
        args.before.as_deref(),
        args.after.as_deref(),
        &manifest.id,
        &node,
        &repo.url().to_string(),
        "was restored",
        work,
    )
    .await?;
    finish(report, started, out)
}

/// A dry run's refusal says it is a prediction.
fn predicted(e: anyhow::Error, dry_run: bool) -> anyhow::Error {
    if dry_run
        && matches!(
            crate::error::kind_of(&e),
            Kind::Refused | Kind::Incompatible
        )
    {
        return e
            .context("dry run: the restore would be refused (nothing was downloaded or changed)");
    }
    e
}

fn finish(
    mut report: RestoreReport,
    started: Instant,
    out: Output,
) -> anyhow::Result<RestoreReport> {
    report.duration_ms = started.elapsed().as_millis() as u64;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    out.result(&report, || describe(&report))?;
    Ok(report)
}

/// `restore --resume`: finishes or undoes the interrupted restore from its
/// journal (with `--dry-run`, says what it would do).
async fn resume(
    settings: &Settings,
    args: &RestoreSettings,
    broker: &Broker,
    repo: &Repository,
    data_dir: &Path,
    out: Output,
    started: Instant,
) -> anyhow::Result<RestoreReport> {
    let node = broker.identity.name.clone();
    let (mut pending, removed) = sweep(data_dir, args.dry_run)?;
    for stale in &removed {
        tracing::warn!(
            "{} {}, left by an interrupted restore that had not touched the messages",
            if args.dry_run {
                "would remove"
            } else {
                "removed"
            },
            stale.display()
        );
    }
    let mut report = RestoreReport {
        node: node.clone(),
        method: pending.first().map_or("swap", |m| {
            method_label(m.journal.method, m.replays_after_swap())
        }),
        repository: repo.url().to_string(),
        dry_run: args.dry_run,
        ..RestoreReport::default()
    };
    if pending.len() > 1 {
        let areas: Vec<String> = pending
            .iter()
            .map(|m| m.area().display().to_string())
            .collect();
        return Err(classified(
            Kind::NeedsAttention,
            format!(
                "several interrupted restores were found for {}: {}; resolve them by hand",
                data_dir.display(),
                areas.join(", ")
            ),
        ));
    }
    let Some(mut machine) = pending.pop() else {
        report
            .warnings
            .push("no interrupted restore was found".into());
        out.result(&report, || {
            format!("no interrupted restore of {node} was found; nothing to do\n")
        })?;
        return Ok(report);
    };
    let manifest = machine.manifest().clone();
    if let Some(spec) = args.snapshot.as_deref()
        && !(spec == "latest" || manifest.id.starts_with(spec))
    {
        return Err(usage(format!(
            "--resume finishes the interrupted restore of snapshot {}, not {spec}: leave the snapshot out",
            manifest.id
        )));
    }
    report.snapshot = manifest.id.clone();
    report.from_node = manifest.node.name.clone();
    report.definitions_imported = true;
    report.vhosts_restored = manifest.vhosts.iter().map(|v| v.name.clone()).collect();
    let next = machine.next_action();
    if args.dry_run {
        report.warnings.push(format!(
            "the restore was interrupted at phase {:?}; --resume would {next}",
            machine.journal.phase
        ));
        out.result(&report, || {
            format!(
                "an interrupted restore of snapshot {} onto {node} was found in {} (phase {:?})\n  --resume would {next}\n  nothing was changed\n",
                manifest.id,
                machine.area().display(),
                machine.journal.phase
            )
        })?;
        return Ok(report);
    }
    tracing::info!(
        "resuming the restore of snapshot {} onto {node}, interrupted at phase {:?}: {next}",
        manifest.id,
        machine.journal.phase
    );
    let work = async {
        let outcome = machine.resume(&BrokerNode { broker, settings }).await?;
        report.pause_ms = outcome.pause_ms;
        report.queues = outcome.queues;
        report.excluded = outcome.excluded;
        report.previous_store = outcome.previous_store.map(|p| p.display().to_string());
        report.warnings.extend(outcome.warnings);
        anyhow::Ok(())
    };
    hooks::around(
        args.before.as_deref(),
        args.after.as_deref(),
        &manifest.id,
        &node,
        &repo.url().to_string(),
        "was restored",
        work,
    )
    .await?;
    finish(report, started, out)
}
