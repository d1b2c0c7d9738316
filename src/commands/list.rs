//! `list` and `show`.

use futures::StreamExt;
use serde::Serialize;

use crate::archive::manifest::{Consistency, Manifest};
use crate::output::{Output, bytes, count, table};
use crate::repo::{Repository, SnapshotRef};
use crate::settings::Settings;

/// One row of `list --json`.
#[derive(Debug, Serialize)]
pub struct SnapshotSummary {
    /// Snapshot id.
    pub id: String,
    /// Source node.
    pub node: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// `stop-app` or `live`.
    pub consistency: Consistency,
    /// Broker pause during the capture.
    pub pause_ms: u64,
    /// RabbitMQ version of the source node.
    pub rabbitmq_version: String,
    /// Retention tier.
    pub tier: String,
    /// Queues.
    pub queues: u64,
    /// Messages at backup time.
    pub messages: u64,
    /// Messages the snapshot holds.
    pub covered_messages: u64,
    /// Queues whose messages are not held.
    pub uncovered_queues: u64,
    /// Bytes of files archived.
    pub file_bytes: u64,
    /// Bytes stored.
    pub stored_bytes: u64,
    /// Whether the chunks are encrypted (an identity is needed to read them).
    pub encrypted: bool,
}

impl SnapshotSummary {
    /// The summary of one manifest.
    pub fn of(m: &Manifest) -> SnapshotSummary {
        SnapshotSummary {
            id: m.id.clone(),
            node: m.node.name.clone(),
            created_at: m.created_at.clone(),
            consistency: m.consistency,
            pause_ms: m.pause_ms,
            rabbitmq_version: m.node.rabbitmq_version.clone(),
            tier: m.tier.clone(),
            queues: m.queues.len() as u64,
            messages: m.totals.messages,
            covered_messages: m.totals.covered_messages,
            uncovered_queues: m.uncovered_queues().count() as u64,
            file_bytes: m.totals.file_bytes,
            stored_bytes: m.totals.stored_bytes,
            encrypted: m.encryption.is_some(),
        }
    }
}

/// `list --json` schema.
#[derive(Debug, Serialize)]
pub struct ListReport {
    /// Repository location.
    pub repository: String,
    /// Snapshots, oldest first.
    pub snapshots: Vec<SnapshotSummary>,
}

/// Reads the manifests of `snapshots`, eight at a time, in order.
pub async fn manifests(
    repo: &Repository,
    snapshots: &[SnapshotRef],
) -> anyhow::Result<Vec<Manifest>> {
    futures::stream::iter(snapshots.iter().map(|s| repo.manifest(s)))
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Runs `list`.
pub async fn list(settings: &Settings, from_node: Option<&str>, out: Output) -> anyhow::Result<()> {
    let repo = super::open_repository(settings).await?;
    let snapshots = repo.list(from_node).await?;
    let manifests = manifests(&repo, &snapshots).await?;
    let report = ListReport {
        repository: repo.url().to_string(),
        snapshots: manifests.iter().map(SnapshotSummary::of).collect(),
    };
    out.result(&report, || {
        if report.snapshots.is_empty() {
            return format!("no snapshots in {}\n", report.repository);
        }
        let rows: Vec<Vec<String>> = report
            .snapshots
            .iter()
            .map(|s| {
                vec![
                    s.id.clone(),
                    s.node.clone(),
                    s.created_at.clone(),
                    s.consistency.to_string(),
                    s.tier.clone(),
                    format!("{}/{}", s.covered_messages, s.messages),
                    bytes(s.stored_bytes),
                ]
            })
            .collect();
        table(
            &[
                "ID",
                "NODE",
                "CREATED",
                "MODE",
                "TIER",
                "MESSAGES (covered/all)",
                "STORED",
            ],
            &rows,
        )
    })
}

/// The snapshot named by `spec`: `latest` means this node's newest unless
/// `from_node` says otherwise, which needs the node's name.
pub async fn resolve(
    settings: &Settings,
    repo: &Repository,
    spec: &str,
    from_node: Option<&str>,
) -> anyhow::Result<SnapshotRef> {
    if spec == "latest" && from_node.is_none() {
        let node = match &settings.node {
            Some(n) => n.clone(),
            None => crate::rabbit::Broker::connect(settings).await.map(|b| b.identity.name).map_err(|e| {
                e.context("`latest` means this node's newest snapshot, and this node could not be asked its name; pass --from-node")
            })?,
        };
        return repo.resolve(spec, Some(&node)).await;
    }
    repo.resolve(spec, from_node).await
}

/// Runs `show`.
pub async fn show(
    settings: &Settings,
    spec: &str,
    from_node: Option<&str>,
    out: Output,
) -> anyhow::Result<()> {
    let repo = super::open_repository(settings).await?;
    let snapshot = resolve(settings, &repo, spec, from_node).await?;
    let m = repo.manifest(&snapshot).await?;
    out.result(&m, || describe(&m))
}

/// A human description of a manifest.
pub fn describe(m: &Manifest) -> String {
    let mut s = String::new();
    s.push_str(&format!("snapshot     {}\n", m.id));
    s.push_str(&format!(
        "node         {} (RabbitMQ {}, Erlang {})\n",
        m.node.name, m.node.rabbitmq_version, m.node.erlang_version
    ));
    s.push_str(&format!(
        "created      {} by rabbitmq-backup {}\n",
        m.created_at, m.tool_version
    ));
    s.push_str(&format!(
        "consistency  {} (broker paused {} ms)\n",
        m.consistency, m.pause_ms
    ));
    s.push_str(&format!("tier         {}\n", m.tier));
    let d = &m.definitions;
    s.push_str(&format!(
        "definitions  {}, {}, {}, {}, {}, {}\n",
        count(d.vhosts, "vhost"),
        count(d.queues, "queue"),
        count(d.exchanges, "exchange"),
        count(d.bindings, "binding"),
        count(d.users, "user"),
        count(d.policies, "policy")
    ));
    s.push_str(&format!(
        "data         {}, {} ({} stored in {})\n",
        count(m.totals.files, "file"),
        bytes(m.totals.file_bytes),
        bytes(m.totals.stored_bytes),
        count(m.totals.chunks, "chunk")
    ));
    if let Some(e) = &m.encryption {
        s.push_str(&format!(
            "encryption   {} to {}\n",
            e.scheme,
            e.recipients.join(", ")
        ));
    }
    s.push_str(&format!(
        "messages     {} of {} covered\n\n",
        m.totals.covered_messages, m.totals.messages
    ));
    let rows: Vec<Vec<String>> = m
        .queues
        .iter()
        .map(|q| {
            vec![
                q.vhost.clone(),
                q.name.clone(),
                q.queue_type.to_string(),
                q.messages.to_string(),
                if q.covered { "yes".into() } else { "NO".into() },
            ]
        })
        .collect();
    s.push_str(&table(
        &["VHOST", "QUEUE", "TYPE", "MESSAGES", "COVERED"],
        &rows,
    ));
    s
}
