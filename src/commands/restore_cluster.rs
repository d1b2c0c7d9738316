//! `restore --cluster NAME [SNAPSHOT]`: a cluster snapshot onto this node's
//! cluster, or onto a lone node (DESIGN §13). Every refusal comes before
//! anything is downloaded or changed: a round missing a member (unless
//! `--allow-partial`), a queue held twice or by nobody, a target member
//! that is down. Then the definitions once, from the newest member
//! snapshot; then every member's part by replay, so each message lands in
//! its queue wherever that queue now lives.

use std::time::Instant;

use serde::Serialize;

use crate::archive::manifest::Manifest;
use crate::cluster::{ClusterSnapshot, Selection};
use crate::error::{Kind, classified, refused};
use crate::output::{Output, count, table};
use crate::rabbit::Broker;
use crate::rabbit::definitions::Definitions;
use crate::rabbit::upgrade;
use crate::repo::SnapshotRef;
use crate::restore::fetch::fetch_definitions;
use crate::settings::{RestoreSettings, Settings};
use crate::staging::Staging;
use crate::transfer::DownloadSource;

/// One member snapshot's part of a cluster restore.
#[derive(Debug, Serialize)]
pub struct Part {
    /// The member the snapshot was taken on.
    pub from_node: String,
    /// Its snapshot id.
    pub snapshot: String,
    /// Queues whose messages it holds.
    pub queues: u64,
    /// Messages it holds.
    pub messages: u64,
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
    /// How messages are put back: `replay`.
    pub method: &'static str,
    /// Nothing was changed.
    pub dry_run: bool,
    /// Only definitions were imported.
    pub definitions_only: bool,
    /// The member snapshot whose definitions are imported (the newest).
    pub definitions_from: String,
    /// Definitions were imported (merged).
    pub definitions_imported: bool,
    /// One part per member snapshot.
    pub parts: Vec<Part>,
    /// Members of the source cluster without a snapshot (`--allow-partial`).
    pub missing: Vec<String>,
    /// Anything the operator should know.
    pub warnings: Vec<String>,
    /// Wall time, in milliseconds.
    pub duration_ms: u64,
}

/// Runs `restore --cluster`.
pub async fn run(
    settings: &Settings,
    args: &RestoreSettings,
    selection: &Selection,
    out: Output,
) -> anyhow::Result<ClusterRestoreReport> {
    let started = Instant::now();
    let repo = super::open_repository(settings).await?;
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

    let broker = Broker::connect(settings).await?;
    let node = broker.identity.name.clone();
    let target_members = broker.cluster_members().await?;
    let running = broker.running_members().await?;
    let down: Vec<&str> = target_members
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

    // Every member snapshot must be readable (an encrypted one needs its
    // identity) before anything changes.
    let newest = newest(&round);
    let mut sources = Vec::new();
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
        sources.push((m, source));
    }
    let parts: Vec<Part> = round
        .snapshots
        .iter()
        .map(|m| Part {
            from_node: m.node.name.clone(),
            snapshot: m.id.clone(),
            queues: m
                .queues
                .iter()
                .filter(|q| q.home_node.is_none() && q.covered)
                .count() as u64,
            messages: m.totals.covered_messages,
        })
        .collect();
    let mut report = ClusterRestoreReport {
        cluster: round.cluster.clone(),
        cluster_snapshot: round.id.clone(),
        node: node.clone(),
        target_members,
        method: "replay",
        dry_run: args.dry_run,
        definitions_only: args.definitions_only,
        definitions_from: format!("{} of {}", newest.id, newest.node.name),
        definitions_imported: false,
        parts,
        missing: round.missing().into_iter().map(str::to_string).collect(),
        warnings,
        duration_ms: 0,
    };
    if args.dry_run {
        return finish(report, started, out);
    }
    if !args.definitions_only {
        // Replay (the store reader's publisher) is what puts a member's
        // messages into a cluster; until this build has it, refuse before
        // the definitions change anything.
        return Err(classified(
            Kind::Incompatible,
            format!(
                "restoring the messages of cluster snapshot {} needs the replay method, which this build of rabbitmq-backup does not have yet; `--definitions-only` restores its definitions, `--dry-run` shows the plan. Nothing was changed",
                round.id
            ),
        ));
    }
    let source = sources
        .into_iter()
        .find(|(m, _)| m.id == newest.id && m.node.name == newest.node.name)
        .map(|(_, s)| s)
        .expect("the newest member snapshot has a source");
    let definitions = Definitions::parse(fetch_definitions(source, newest).await?)?;
    let adapted = upgrade::adapt(&definitions.bytes, &broker.identity.rabbitmq_version)?;
    report.warnings.extend(adapted.changes);
    let data_dir = broker.data_dir(settings.data_dir.as_deref()).await?;
    let staging = Staging::create(&data_dir, "restore", &round.id)?;
    crate::signals::check()?;
    broker
        .import_definitions(&adapted.bytes, staging.path())
        .await?;
    report.definitions_imported = true;
    finish(report, started, out)
}

/// The newest member snapshot: its definitions are the cluster's latest.
fn newest(round: &ClusterSnapshot) -> &Manifest {
    round
        .snapshots
        .iter()
        .max_by(|a, b| a.id.cmp(&b.id))
        .expect("a cluster snapshot has at least one member snapshot")
}

fn finish(
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

fn describe(r: &ClusterRestoreReport) -> String {
    let mut s = String::new();
    let verb = if r.dry_run {
        "would restore"
    } else {
        "restored"
    };
    s.push_str(&format!(
        "{verb} cluster snapshot {} of {} onto {} ({})\n",
        r.cluster_snapshot,
        r.cluster,
        r.node,
        count(r.target_members.len() as u64, "member")
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
        s.push_str(&format!("messages by {}:\n", r.method));
        let rows: Vec<Vec<String>> = r
            .parts
            .iter()
            .map(|p| {
                vec![
                    p.from_node.clone(),
                    p.snapshot.clone(),
                    p.queues.to_string(),
                    p.messages.to_string(),
                ]
            })
            .collect();
        s.push_str(&table(&["FROM", "SNAPSHOT", "QUEUES", "MESSAGES"], &rows));
    }
    for m in &r.missing {
        s.push_str(&format!("NOT RESTORED: no snapshot of member {m}\n"));
    }
    if r.dry_run {
        s.push_str("nothing was changed\n");
    }
    s
}
