//! `restore --cluster NAME [SNAPSHOT]`: a cluster snapshot onto this node's
//! cluster, or onto a lone node (DESIGN §13). Every refusal comes before
//! anything is downloaded or changed: a round missing a member (unless
//! `--allow-partial`), a queue held twice or by nobody, a target member
//! that is down, consumers on or messages in the queues to restore (unless
//! `--replace-messages` / `--append`), an interrupted restore. Then the
//! definitions once, from the newest member snapshot; then the part of the
//! member whose name is the node's own by swap where it can be
//! ([`crate::cluster::swap`]), and every other part by replay
//! ([`crate::cluster::machine`]), so each message lands in its queue
//! wherever that queue now lives. `--resume` finishes an interrupted one
//! from its journal.

use std::time::Instant;

use crate::archive::manifest::Manifest;
use crate::cluster::journal::{
    self, Area, Exclusion, Journal, PartJournal, PartMethod, PartState, PlannedQueue,
};
use crate::cluster::machine::{self, Target};
use crate::cluster::swap;
use crate::cluster::{ClusterSnapshot, Selection};
use crate::error::{Kind, classified, refused, usage};
use crate::output::Output;
use crate::rabbit::ctl::{QueueStatus, with_consumers};
use crate::rabbit::definitions::Definitions;
use crate::rabbit::upgrade;
use crate::rabbit::{AppState, Broker};
use crate::repo::{Repository, SnapshotRef};
use crate::restore::fetch::{check_free_space, fetch_definitions};
use crate::restore::plan;
use crate::restore::report::{QueueOutcome, QueueState, holding_messages};
use crate::settings::{RestoreSettings, Settings};
use crate::staging::{NodeLock, Staging};
use crate::transfer::{self, DownloadSource};

mod report;

pub use report::{ClusterRestoreReport, Part};
use report::{apply, finish, overall, part_report};

/// Runs `restore --cluster` (and `restore --cluster --resume`).
pub async fn run(
    settings: &Settings,
    args: &RestoreSettings,
    selection: &Selection,
    out: Output,
) -> anyhow::Result<ClusterRestoreReport> {
    let started = Instant::now();
    let repo = super::open_repository(settings).await?;
    if args.resume {
        return resume(settings, args, selection, &repo, out, started).await;
    }
    let spec = args.snapshot.as_deref().unwrap_or("latest");
    let round = super::cluster::resolve(&repo, selection, spec, args.allow_partial).await?;
    let mut warnings = Vec::new();
    let problems = round.problems();
    if !problems.is_empty() {
        if !args.allow_partial {
            return Err(refused(format!(
                "cluster snapshot {} of {:?} would not restore every message exactly once: {}. Pass --allow-partial to restore it anyway",
                round.id,
                round.cluster,
                problems.join("; ")
            )));
        }
        warnings.extend(problems);
    }
    if !round.is_complete() {
        warnings.push(format!(
            "cluster snapshot {} has no snapshot of {}: the messages living there are not restored (--allow-partial)",
            round.id,
            round.missing().join(", ")
        ));
    }

    // Reached even when stopped: an interrupted swap of this member's part
    // may have left its broker stopped, which the refusal below explains.
    let (broker, state) = Broker::reach(settings).await?;
    let data_dir = broker.data_dir(settings.data_dir.as_deref()).await?;
    let _lock = NodeLock::acquire(&data_dir, "restore")?;
    refuse_interrupted(&data_dir, args.dry_run, &round.cluster)?;
    let broker = broker.running(state, settings, !args.dry_run).await?;
    let node = broker.identity.name.clone();
    let target_members = all_running(&broker).await?;

    // Every member snapshot must be readable (an encrypted one needs its
    // identity, which must open its first chunk) before anything changes.
    let newest = newest(&round);
    let mut newest_source = None;
    for m in &round.snapshots {
        let snapshot = SnapshotRef {
            node: m.node.name.clone(),
            id: m.id.clone(),
        };
        let source = DownloadSource::for_snapshot(
            &repo,
            &snapshot,
            m,
            settings.identity.as_ref(),
            args.download_concurrency,
        )?;
        transfer::probe(&source, &m.chunks).await.map_err(|e| {
            e.context(format!(
                "cannot decrypt snapshot {} of {}; nothing was changed",
                m.id, m.node.name
            ))
        })?;
        if m.id == newest.id && m.node.name == newest.node.name {
            newest_source = Some(source);
        }
    }
    let newest_source = newest_source.expect("the newest member snapshot has a source");
    if args.is_subset() {
        crate::selection::check_queues(newest, &args.vhosts, &args.queues)?;
    }
    let mut parts = plan_parts(&round, args);
    let mut facts = swap::gather(&broker, &round.snapshots, args, &data_dir)
        .await
        .map_err(|e| predicted(e, args.dry_run))?;
    if !args.definitions_only {
        swap::decide(&mut parts, &round.snapshots, &facts)
            .map_err(|e| predicted(e, args.dry_run))?;
    }
    let planned: Vec<(String, String)> = parts
        .iter()
        .flat_map(|p| p.queues.iter().map(PlannedQueue::key))
        .collect();
    let mut replaced = Vec::new();
    if !args.definitions_only {
        let checks = queue_checks(&broker, &planned, args, args.before.is_none())
            .await
            .map_err(|e| predicted(e, args.dry_run))?;
        replaced = checks.0;
        warnings.extend(checks.1);
        // Parts are downloaded one at a time, each removed once replayed.
        if let Some(largest) = round
            .snapshots
            .iter()
            .filter(|m| {
                parts
                    .iter()
                    .any(|p| p.snapshot == m.id && !p.queues.is_empty())
            })
            .max_by_key(|m| m.totals.file_bytes)
        {
            check_free_space(crate::staging::parent_of(&data_dir)?, largest)
                .map_err(|e| predicted(e, args.dry_run))?;
        }
    }
    let mut report = ClusterRestoreReport {
        cluster: round.cluster.clone(),
        cluster_snapshot: round.id.clone(),
        node: node.clone(),
        target_members,
        method: overall(&parts),
        dry_run: args.dry_run,
        definitions_only: args.definitions_only,
        resumed: false,
        definitions_from: format!("{} of {}", newest.id, newest.node.name),
        definitions_imported: false,
        parts: parts.iter().map(|p| part_report(p, None)).collect(),
        queues: Vec::new(),
        replaced_queues: replaced,
        missing: round.missing().into_iter().map(str::to_string).collect(),
        warnings,
        duration_ms: 0,
    };
    if args.dry_run {
        report.queues = parts
            .iter()
            .flat_map(|p| p.queues.iter())
            .map(|q| QueueOutcome {
                vhost: q.vhost.clone(),
                name: q.name.clone(),
                queue_type: q.queue_type.clone(),
                expected: q.messages,
                actual: None,
                status: QueueState::Planned,
            })
            .collect();
        return finish(report, started, out);
    }

    let definitions = Definitions::parse(fetch_definitions(newest_source, newest).await?)?;
    let adapted = upgrade::adapt(&definitions.bytes, &broker.identity.rabbitmq_version)?;
    report.warnings.extend(adapted.changes);
    // Mirroring policies the import brings (RabbitMQ 3.x) forbid a swap too.
    let imported = Definitions::parse(adapted.bytes.clone())?;
    if !args.definitions_only && !imported.mirrored_vhosts.is_empty() {
        facts
            .mirrored
            .extend(imported.mirrored_vhosts.iter().cloned());
        swap::decide(&mut parts, &round.snapshots, &facts)?;
        report.method = overall(&parts);
        report.parts = parts.iter().map(|p| part_report(p, None)).collect();
    }
    let work = async {
        if args.definitions_only {
            let staging = Staging::create(&data_dir, "restore", &round.id)?;
            crate::signals::check()?;
            broker
                .import_definitions(&adapted.bytes, staging.path())
                .await?;
            report.definitions_imported = true;
            return anyhow::Ok(());
        }
        if args.before.is_some() {
            // --before stopped the consumers (or did not: refused now).
            report.replaced_queues = queue_checks(&broker, &planned, args, true).await?.0;
        }
        let journal_parts = parts.clone();
        let mut journal = Journal::new(
            &round.cluster,
            &round.id,
            &node,
            (newest.node.name.clone(), newest.id.clone()),
            parts,
        );
        journal.purge = args.replace_messages;
        journal.keep_old = args.keep_old;
        journal.append = args.append;
        journal.exclude = args.exclude.as_ref().map(|m| Exclusion {
            globs: m.patterns().to_vec(),
            drop: args.drop_excluded,
        });
        let area = Area::create(&data_dir, journal)?;
        tracing::info!(
            "restoring cluster snapshot {} of {:?} onto {node} by {}, part by part (journal in {})",
            round.id,
            round.cluster,
            overall(&journal_parts),
            area.path().display()
        );
        let target = Target {
            broker: &broker,
            settings,
            repo: &repo,
            download_concurrency: args.download_concurrency,
            data_dir: &data_dir,
            keep_old: args.keep_old,
        };
        let outcome = machine::run(area, &target, Some(&adapted.bytes)).await?;
        report.definitions_imported = true;
        apply(&mut report, outcome);
        Ok(())
    };
    crate::hooks::around(
        args.before.as_deref(),
        args.after.as_deref(),
        &round.id,
        &node,
        &repo.url().to_string(),
        "was restored",
        work,
    )
    .await?;
    finish(report, started, out)
}

/// `restore --cluster NAME --resume`: finishes the interrupted cluster
/// restore of this node's work area from its journal.
async fn resume(
    settings: &Settings,
    args: &RestoreSettings,
    selection: &Selection,
    repo: &Repository,
    out: Output,
    started: Instant,
) -> anyhow::Result<ClusterRestoreReport> {
    // A swap of this member's part may have been interrupted with its
    // broker stopped: the machine stops and starts it as its journal says.
    let (broker, state) = Broker::reach(settings).await?;
    let node = broker.identity.name.clone();
    let data_dir = broker.data_dir(settings.data_dir.as_deref()).await?;
    let _lock = NodeLock::acquire(&data_dir, "restore")?;
    let mut pending = journal::sweep(&data_dir, args.dry_run)?;
    let swapping = pending.iter().any(|a| a.journal.swapping().is_some());
    let (broker, target_members) = match state {
        AppState::Stopped { .. } if swapping => {
            // Asked of a stopped broker: the report's list, best effort.
            let members = broker
                .cluster_members()
                .await
                .unwrap_or_else(|_| vec![node.clone()]);
            (broker, members)
        }
        state => {
            let broker = broker.running(state, settings, !args.dry_run).await?;
            let members = all_running(&broker).await?;
            (broker, members)
        }
    };
    if pending.len() > 1 {
        let areas: Vec<String> = pending
            .iter()
            .map(|a| a.path().display().to_string())
            .collect();
        return Err(classified(
            Kind::NeedsAttention,
            format!(
                "several interrupted cluster restores were found beside {}: {}; resolve them by hand",
                data_dir.display(),
                areas.join(", ")
            ),
        ));
    }
    let Some(area) = pending.pop() else {
        let report = ClusterRestoreReport {
            cluster: selection.name.clone(),
            cluster_snapshot: String::new(),
            node: node.clone(),
            target_members,
            method: "replay",
            dry_run: args.dry_run,
            definitions_only: false,
            resumed: false,
            definitions_from: String::new(),
            definitions_imported: false,
            parts: Vec::new(),
            queues: Vec::new(),
            replaced_queues: Vec::new(),
            missing: Vec::new(),
            warnings: vec!["no interrupted cluster restore was found".into()],
            duration_ms: 0,
        };
        out.result(&report, || {
            format!("no interrupted cluster restore on {node} was found; nothing to do\n")
        })?;
        return Ok(report);
    };
    let j = area.journal.clone();
    if j.cluster != selection.name {
        return Err(usage(format!(
            "the interrupted cluster restore in {} restores cluster {:?}, not {:?}: run `rabbitmq-backup restore --cluster {} --resume`",
            area.path().display(),
            j.cluster,
            selection.name,
            j.cluster
        )));
    }
    if let Some(spec) = args.snapshot.as_deref()
        && !(spec == "latest"
            || j.cluster_snapshot.starts_with(spec)
            || j.parts.iter().any(|p| p.snapshot.starts_with(spec)))
    {
        return Err(usage(format!(
            "--resume finishes the interrupted restore of cluster snapshot {}, not {spec}: leave the snapshot out",
            j.cluster_snapshot
        )));
    }
    let mut report = ClusterRestoreReport {
        cluster: j.cluster.clone(),
        cluster_snapshot: j.cluster_snapshot.clone(),
        node: node.clone(),
        target_members,
        method: overall(&j.parts),
        dry_run: args.dry_run,
        definitions_only: false,
        resumed: true,
        definitions_from: format!("{} of {}", j.definitions_from.1, j.definitions_from.0),
        definitions_imported: true,
        parts: j.parts.iter().map(|p| part_report(p, None)).collect(),
        queues: Vec::new(),
        replaced_queues: Vec::new(),
        missing: Vec::new(),
        warnings: Vec::new(),
        duration_ms: 0,
    };
    let done = j.parts.iter().filter(|p| p.state.done()).count();
    let mut next = format!(
        "replay the {} parts not yet replayed (of {}), continuing after the last confirmed message, then check the counts",
        j.parts.len() - done,
        j.parts.len()
    );
    if let Some(p) = j
        .parts
        .iter()
        .find(|p| p.method == PartMethod::Swap && !p.state.done())
    {
        next = format!(
            "first finish or undo the swap of {}'s part onto {node} ({}), then {next}",
            p.node,
            if p.state == PartState::Swapping {
                "its own journal says how far it got"
            } else {
                "not begun: no store moved"
            }
        );
    }
    if args.dry_run {
        report.warnings.push(format!(
            "the cluster restore was interrupted at phase {:?}; --resume would {next}",
            j.phase
        ));
        return finish(report, started, out);
    }
    tracing::info!(
        "resuming the restore of cluster snapshot {} onto {node}, interrupted at phase {:?}: {next}",
        j.cluster_snapshot,
        j.phase
    );
    let work = async {
        let target = Target {
            broker: &broker,
            settings,
            repo,
            download_concurrency: args.download_concurrency,
            data_dir: &data_dir,
            keep_old: j.keep_old,
        };
        let outcome = machine::run(area, &target, None).await?;
        apply(&mut report, outcome);
        anyhow::Ok(())
    };
    crate::hooks::around(
        args.before.as_deref(),
        args.after.as_deref(),
        &j.cluster_snapshot,
        &node,
        &repo.url().to_string(),
        "was restored",
        work,
    )
    .await?;
    finish(report, started, out)
}

/// The target cluster's members, refused unless every one runs: a
/// cluster restore imports definitions for the whole cluster and places
/// every queue on its members.
async fn all_running(broker: &Broker) -> anyhow::Result<Vec<String>> {
    let members = broker.cluster_members().await?;
    let running = broker.running_members().await?;
    let down: Vec<&str> = members
        .iter()
        .filter(|m| !running.contains(m))
        .map(String::as_str)
        .collect();
    if !down.is_empty() {
        return Err(refused(format!(
            "member {} of the target cluster is down: a cluster restore imports definitions for the whole cluster and places every queue on its members, so every member must run. Start it, or remove it with `rabbitmqctl forget_cluster_node`; nothing was changed",
            down.join(", ")
        )));
    }
    Ok(members)
}

/// Refuses while an interrupted restore (of this cluster snapshot kind or
/// a single node's) waits for `--resume` on this node.
fn refuse_interrupted(
    data_dir: &std::path::Path,
    look_only: bool,
    cluster: &str,
) -> anyhow::Result<()> {
    if let Some(area) = journal::sweep(data_dir, look_only)?.first() {
        return Err(refused(format!(
            "an interrupted restore of cluster snapshot {} of {:?} was found in {}; finish it first with `rabbitmq-backup restore --cluster {} --resume`",
            area.journal.cluster_snapshot,
            area.journal.cluster,
            area.path().display(),
            area.journal.cluster
        )));
    }
    if let Some(area) = crate::restore::machine::interrupted(data_dir)? {
        return Err(refused(format!(
            "an interrupted restore was found in {}; finish or undo it first with `rabbitmq-backup restore --resume` before restoring cluster {cluster:?}",
            area.display()
        )));
    }
    Ok(())
}

/// One part per member snapshot: the queues with messages it holds, that
/// no other member snapshot of the round holds (see
/// [`ClusterSnapshot::queues`]), and that the selection names.
fn plan_parts(round: &ClusterSnapshot, args: &RestoreSettings) -> Vec<PartJournal> {
    let held = round.queues();
    round
        .snapshots
        .iter()
        .map(|m| PartJournal {
            node: m.node.name.clone(),
            snapshot: m.id.clone(),
            queues: plan::replayed(m, args)
                .into_iter()
                .filter(|(v, n)| {
                    held.iter().any(|h| {
                        &h.vhost == v
                            && &h.name == n
                            && h.held_by == m.node.name
                            && h.snapshot.as_deref() == Some(m.id.as_str())
                    })
                })
                .filter_map(|(v, n)| {
                    let e = m.queues.iter().find(|q| q.vhost == v && q.name == n)?;
                    Some(PlannedQueue {
                        vhost: v,
                        name: n,
                        queue_type: e.queue_type.clone(),
                        messages: e.messages,
                    })
                })
                .collect(),
            state: PartState::Todo,
            method: PartMethod::Replay,
            reason: String::new(),
            published: Vec::new(),
            excluded: 0,
            interrupted: Vec::new(),
        })
        .collect()
}

/// The queues to restore as the whole target cluster sees them (not only
/// those living on this member): consumers on them are refused (noted
/// when `--before` may still stop them), and so are messages in them
/// unless `--replace-messages` or `--append`.
async fn queue_checks(
    broker: &Broker,
    planned: &[(String, String)],
    args: &RestoreSettings,
    refuse_consumers: bool,
) -> anyhow::Result<(Vec<QueueOutcome>, Vec<String>)> {
    let on_target = cluster_queues(broker, planned).await?;
    let mut notes = Vec::new();
    let consumed = with_consumers(&on_target);
    if !consumed.is_empty() {
        let why = format!(
            "consumers are connected to {}: they would take replayed messages before the counts are checked",
            consumed.join(", ")
        );
        if refuse_consumers {
            return Err(refused(format!(
                "{why}; stop them before restoring (for example with --before)"
            )));
        }
        notes.push(format!(
            "{why}; the restore refuses unless --before stops them"
        ));
    }
    let holding = holding_messages(&on_target, args.append);
    crate::restore::plan::refuse_holding(
        &holding,
        args.replace_messages,
        args.append,
        "the target cluster",
    )?;
    Ok((holding, notes))
}

/// The `planned` queues that exist on the target, wherever they live in
/// its cluster, with exact counts (quorum queues and streams asked of the
/// queues themselves: `list_queues` lags for them).
async fn cluster_queues(
    broker: &Broker,
    planned: &[(String, String)],
) -> anyhow::Result<Vec<QueueStatus>> {
    let target = Definitions::parse(broker.export_definitions().await?)?;
    let vhosts: Vec<String> = target
        .vhosts
        .iter()
        .filter(|v| planned.iter().any(|(pv, _)| pv == *v))
        .cloned()
        .collect();
    // Every queue wherever it lives, with exact counts, in one query.
    let out: Vec<QueueStatus> = broker
        .control
        .queues(&vhosts)
        .await?
        .into_iter()
        .map(|(q, _)| q)
        .filter(|q| planned.iter().any(|(v, n)| *v == q.vhost && *n == q.name))
        .collect();
    Ok(out)
}

/// A dry run's refusal says it is a prediction.
fn predicted(e: anyhow::Error, dry_run: bool) -> anyhow::Error {
    if dry_run && crate::error::kind_of(&e) == Kind::Refused {
        return e
            .context("dry run: the restore would be refused (nothing was downloaded or changed)");
    }
    e
}

/// The newest member snapshot: its definitions are the cluster's latest.
fn newest(round: &ClusterSnapshot) -> &Manifest {
    round
        .snapshots
        .iter()
        .max_by(|a, b| a.id.cmp(&b.id))
        .expect("a cluster snapshot has at least one member snapshot")
}
