//! `list --cluster`, `show --cluster`: cluster snapshots read from the
//! member snapshots' manifests (see [`crate::cluster`]).

use futures::StreamExt;
use serde::Serialize;

use super::list::SnapshotSummary;
use crate::archive::manifest::Manifest;
use crate::cluster::{self, ClusterSnapshot, ClusterTotals, HeldQueue, Selection};
use crate::output::{Output, bytes, table};
use crate::repo::Repository;
use crate::settings::Settings;

/// One cluster snapshot (`list --cluster --json` rows, `show --cluster --json`).
#[derive(Debug, Serialize)]
pub struct ClusterSummary {
    /// The earliest member snapshot's id: names the cluster snapshot.
    pub id: String,
    /// The cluster's name.
    pub cluster: String,
    /// When the earliest member snapshot was taken.
    pub created_at: String,
    /// Whether every member has its snapshot.
    pub complete: bool,
    /// Every member of the cluster, as the snapshots name them.
    pub members: Vec<String>,
    /// Members without a snapshot in this round.
    pub missing: Vec<String>,
    /// Sums over the member snapshots.
    #[serde(flatten)]
    pub totals: ClusterTotals,
    /// Queues held twice or by nobody present (a leader moved between backups).
    pub problems: Vec<String>,
    /// The member snapshots, by node name.
    pub snapshots: Vec<SnapshotSummary>,
}

impl ClusterSummary {
    /// The summary of one round.
    pub fn of(round: &ClusterSnapshot) -> ClusterSummary {
        ClusterSummary {
            id: round.id.clone(),
            cluster: round.cluster.clone(),
            created_at: round.created_at().to_string(),
            complete: round.is_complete(),
            members: round.members.clone(),
            missing: round.missing().into_iter().map(str::to_string).collect(),
            totals: round.totals(),
            problems: round.problems(),
            snapshots: round.snapshots.iter().map(SnapshotSummary::of).collect(),
        }
    }
}

/// `list --cluster --json` schema.
#[derive(Debug, Serialize)]
pub struct ClusterListReport {
    /// Repository location.
    pub repository: String,
    /// The cluster listed.
    pub cluster: String,
    /// Minutes within which one round's member snapshots were taken.
    pub window_minutes: u64,
    /// Cluster snapshots, oldest first.
    pub cluster_snapshots: Vec<ClusterSummary>,
}

/// `show --cluster --json` schema.
#[derive(Debug, Serialize)]
pub struct ClusterShowReport {
    /// The cluster snapshot.
    #[serde(flatten)]
    pub summary: ClusterSummary,
    /// Every queue once, with the member holding its messages.
    pub queues: Vec<HeldQueue>,
}

/// Every readable manifest in the repository. A damaged or unreadable-format
/// manifest is skipped with a warning (its member then shows as missing);
/// a storage failure fails the command.
pub async fn all_manifests(repo: &Repository) -> anyhow::Result<Vec<Manifest>> {
    let snapshots = repo.list(None).await?;
    let results: Vec<_> = futures::stream::iter(snapshots.iter().map(|s| repo.manifest(s)))
        .buffered(8)
        .collect()
        .await;
    let mut out = Vec::new();
    for (snapshot, result) in snapshots.iter().zip(results) {
        match result {
            Ok(m) => out.push(m),
            Err(e)
                if matches!(
                    crate::error::kind_of(&e),
                    crate::error::Kind::Integrity | crate::error::Kind::Incompatible
                ) =>
            {
                tracing::warn!(
                    "snapshot {} of {} is left out: {}",
                    snapshot.id,
                    snapshot.node,
                    crate::error::render(&e)
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The cluster's rounds, oldest first, and the names of every cluster with
/// snapshots in the repository (for "no such cluster" hints).
pub async fn rounds(
    repo: &Repository,
    selection: &Selection,
) -> anyhow::Result<(Vec<ClusterSnapshot>, Vec<String>)> {
    let manifests = all_manifests(repo).await?;
    Ok((
        cluster::group(&selection.name, &manifests, selection.window),
        cluster::names(&manifests),
    ))
}

/// The cluster snapshot named by `spec` (see [`cluster::select`]).
pub async fn resolve(
    repo: &Repository,
    selection: &Selection,
    spec: &str,
    allow_partial: bool,
) -> anyhow::Result<ClusterSnapshot> {
    let (rounds, known) = rounds(repo, selection).await?;
    cluster::select(&selection.name, &rounds, spec, allow_partial, &known).cloned()
}

/// Runs `list --cluster`.
pub async fn list(settings: &Settings, selection: &Selection, out: Output) -> anyhow::Result<()> {
    let repo = super::open_repository(settings).await?;
    let (rounds, known) = rounds(&repo, selection).await?;
    let report = ClusterListReport {
        repository: repo.url().to_string(),
        cluster: selection.name.clone(),
        window_minutes: selection.window.as_secs() / 60,
        cluster_snapshots: rounds.iter().map(ClusterSummary::of).collect(),
    };
    out.result(&report, || {
        if report.cluster_snapshots.is_empty() {
            let others = if known.is_empty() {
                String::new()
            } else {
                format!(" (it holds snapshots of cluster {})", known.join(", "))
            };
            return format!(
                "no snapshots of cluster {} in {}{others}\n",
                report.cluster, report.repository
            );
        }
        let rows: Vec<Vec<String>> = report
            .cluster_snapshots
            .iter()
            .map(|c| {
                vec![
                    c.id.clone(),
                    c.created_at.clone(),
                    format!("{}/{}", c.snapshots.len(), c.members.len()),
                    state(c),
                    format!("{}/{}", c.totals.covered_messages, c.totals.messages),
                    bytes(c.totals.stored_bytes),
                ]
            })
            .collect();
        table(
            &[
                "CLUSTER SNAPSHOT",
                "CREATED",
                "MEMBERS",
                "STATE",
                "MESSAGES (covered/all)",
                "STORED",
            ],
            &rows,
        )
    })
}

/// `complete`, or what is wrong, in a few words.
fn state(c: &ClusterSummary) -> String {
    match (c.missing.as_slice(), c.problems.len()) {
        ([], 0) => "complete".into(),
        ([], n) => format!("complete, {n} problem(s)"),
        (missing, _) => format!("INCOMPLETE: no {}", missing.join(", ")),
    }
}

/// Runs `show --cluster`: any round, complete or not, is shown.
pub async fn show(
    settings: &Settings,
    selection: &Selection,
    spec: &str,
    out: Output,
) -> anyhow::Result<()> {
    let repo = super::open_repository(settings).await?;
    let round = resolve(&repo, selection, spec, true).await?;
    let report = ClusterShowReport {
        summary: ClusterSummary::of(&round),
        queues: round.queues(),
    };
    out.result(&report, || describe(&report))
}

/// A human description of a cluster snapshot.
pub fn describe(r: &ClusterShowReport) -> String {
    let c = &r.summary;
    let mut s = String::new();
    s.push_str(&format!("cluster snapshot  {} of {}\n", c.id, c.cluster));
    s.push_str(&format!("created           {}\n", c.created_at));
    s.push_str(&format!("members           {}\n", c.members.join(", ")));
    if c.missing.is_empty() {
        s.push_str("complete          yes: one snapshot per member\n");
    } else {
        s.push_str(&format!(
            "complete          NO: no snapshot of {} ({} messages not in it)\n",
            c.missing.join(", "),
            c.totals.missing_messages
        ));
    }
    s.push_str(&format!(
        "messages          {} of {} covered, {} stored\n",
        c.totals.covered_messages,
        c.totals.messages,
        bytes(c.totals.stored_bytes)
    ));
    for p in &c.problems {
        s.push_str(&format!("PROBLEM           {p}\n"));
    }
    s.push('\n');
    let rows: Vec<Vec<String>> = c
        .snapshots
        .iter()
        .map(|m| {
            vec![
                m.node.clone(),
                m.id.clone(),
                m.created_at.clone(),
                m.rabbitmq_version.clone(),
                format!("{}/{}", m.covered_messages, m.messages),
            ]
        })
        .collect();
    s.push_str(&table(
        &["MEMBER", "SNAPSHOT", "CREATED", "VERSION", "MESSAGES"],
        &rows,
    ));
    s.push('\n');
    let rows: Vec<Vec<String>> = r
        .queues
        .iter()
        .map(|q| {
            vec![
                q.vhost.clone(),
                q.name.clone(),
                q.queue_type.to_string(),
                q.held_by.clone(),
                q.messages.to_string(),
                if q.covered { "yes".into() } else { "NO".into() },
            ]
        })
        .collect();
    s.push_str(&table(
        &["VHOST", "QUEUE", "TYPE", "HELD BY", "MESSAGES", "COVERED"],
        &rows,
    ));
    s
}
