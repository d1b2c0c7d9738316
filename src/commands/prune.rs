//! `prune`: apply a keep-last/daily/weekly/monthly policy to each node's
//! snapshots (for local repositories and buckets without lifecycle rules),
//! and remove the incomplete snapshots a killed backup left in a local
//! repository once no backup can still be writing them ([`orphans`]). In a
//! bucket those are left to its lifecycle rules: their chunks carry the
//! tier tag like any other, so the tier's expiry removes them.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::cli::PruneArgs;
use crate::output::{Output, bytes, count, table};
use crate::repo::orphans::{self, Orphan};
use crate::repo::url::RepoUrl;
use crate::repo::{SnapshotRef, snapshot_id};
use crate::retention::check::Support;
use crate::retention::policy::{Candidate, Policy, Verdict, decide};
use crate::retention::{TIER_TAG, Tier};
use crate::settings::Settings;

/// One node's outcome.
#[derive(Debug, Serialize)]
pub struct NodePrune {
    /// Node name.
    pub node: String,
    /// Every snapshot, newest first.
    pub snapshots: Vec<Verdict>,
    /// Objects deleted.
    pub objects_deleted: usize,
}

/// `prune --json` schema.
#[derive(Debug, Serialize)]
pub struct PruneReport {
    /// Repository location.
    pub repository: String,
    /// Nothing was deleted.
    pub dry_run: bool,
    /// The policy applied.
    pub policy: Policy,
    /// Per node.
    pub nodes: Vec<NodePrune>,
    /// Incomplete snapshots (no manifest) of a local repository; those
    /// `removable` were removed (unless `dry_run`).
    pub incomplete: Vec<Orphan>,
}

/// Runs `prune`.
pub async fn run(
    settings: &Settings,
    args: &PruneArgs,
    out: Output,
) -> anyhow::Result<PruneReport> {
    let policy = Policy::new(
        args.keep_last.unwrap_or(0),
        args.keep_daily.unwrap_or(0),
        args.keep_weekly.unwrap_or(0),
        args.keep_monthly.unwrap_or(0),
    )?;
    if let Some(node) = &args.from_node {
        crate::repo::check_node_name(node)?;
    }
    let repo = super::open_repository(settings).await?;
    let tagging = repo.tagging_support().await?;
    let mut by_node: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for listed in repo.list_with_pins(args.from_node.as_deref()).await? {
        let s = &listed.snapshot;
        let Some(time) = snapshot_id::timestamp(&s.id) else {
            continue;
        };
        // Pins live in a marker object and, where the server keeps tags, in
        // the tier tag (lifecycle rules read that one).
        let mut pinned = listed.pinned;
        if !pinned && tagging == Support::Yes {
            let tags = repo
                .storage()
                .get_tags(&repo.manifest_key(&s.node, &s.id))
                .await?;
            pinned = tags
                .iter()
                .any(|(k, v)| k == TIER_TAG && v == Tier::Keep.as_str());
        }
        by_node.entry(s.node.clone()).or_default().push(Candidate {
            id: s.id.clone(),
            time,
            pinned,
        });
    }
    let mut report = PruneReport {
        repository: repo.url().to_string(),
        dry_run: args.dry_run,
        policy,
        nodes: Vec::new(),
        incomplete: Vec::new(),
    };
    for (node, candidates) in by_node {
        let verdicts = decide(&candidates, &policy);
        let mut objects_deleted = 0;
        for v in verdicts.iter().filter(|v| !v.keep) {
            if args.dry_run {
                tracing::info!("would delete snapshot {} of {node}", v.id);
                continue;
            }
            let snapshot = SnapshotRef {
                node: node.clone(),
                id: v.id.clone(),
            };
            objects_deleted += repo.delete_snapshot(&snapshot).await?;
            tracing::info!("deleted snapshot {} of {node}", v.id);
        }
        report.nodes.push(NodePrune {
            node,
            snapshots: verdicts,
            objects_deleted,
        });
    }
    if let RepoUrl::Local { path } = repo.url() {
        report.incomplete = orphans::find(path, args.from_node.as_deref(), SystemTime::now())?;
        for o in &report.incomplete {
            let what = format!(
                "incomplete snapshot {} of {} ({}, {}, nothing written for {} h)",
                o.id,
                o.node,
                count(o.files, "file"),
                bytes(o.bytes),
                o.idle_hours
            );
            if !o.removable {
                tracing::info!(
                    "kept {what}: younger than {} h, a backup may still be writing it",
                    orphans::GRACE.as_secs() / 3600
                );
            } else if args.dry_run {
                tracing::info!("would remove {what}");
            } else {
                orphans::remove(o)?;
                tracing::info!("removed {what}");
            }
        }
    }
    let bucket = matches!(repo.url(), RepoUrl::S3 { .. });
    out.result(&report, || {
        let mut s = String::new();
        let verb = if report.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        for n in &report.nodes {
            s.push_str(&format!("{}:\n", n.node));
            let rows: Vec<Vec<String>> = n
                .snapshots
                .iter()
                .map(|v| {
                    vec![
                        v.id.clone(),
                        if v.keep { "keep".into() } else { verb.into() },
                        v.reasons.join(", "),
                    ]
                })
                .collect();
            s.push_str(&table(&["ID", "ACTION", "KEPT AS"], &rows));
        }
        if report.nodes.is_empty() {
            s.push_str("no snapshots\n");
        }
        if !report.incomplete.is_empty() {
            s.push_str(
                "incomplete snapshots (no manifest, left by a backup that did not finish):\n",
            );
            let rows: Vec<Vec<String>> = report
                .incomplete
                .iter()
                .map(|o| {
                    let action = match (o.removable, report.dry_run) {
                        (false, _) => "keep: a backup may still be writing it",
                        (true, true) => "would remove",
                        (true, false) => "removed",
                    };
                    vec![o.id.clone(), o.node.clone(), bytes(o.bytes), action.into()]
                })
                .collect();
            s.push_str(&table(&["ID", "NODE", "SIZE", "ACTION"], &rows));
        }
        if bucket {
            s.push_str("incomplete snapshots in a bucket are left to its lifecycle rules\n");
        }
        s
    })?;
    Ok(report)
}
