//! Cluster snapshots (DESIGN §13): the tool runs on every member, each
//! member's snapshot holds the queues that live on it, and the snapshots of
//! one round, one per member within a time window, form a cluster snapshot.
//!
//! Grouping reads only manifests: a member's manifest names its cluster and
//! every member, and lists each queue either as held here (no `home_node`)
//! or as held by another member (`home_node`).

pub mod journal;
pub mod machine;
pub mod swap;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::archive::manifest::Manifest;
use crate::error::{refused, usage};
use crate::repo::snapshot_id;

/// Snapshots of one cluster whose ids are at most this far apart, from
/// distinct members, form one cluster snapshot unless told otherwise.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Which cluster's snapshots a command works on, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The cluster's name.
    pub name: String,
    /// How far apart one round's member snapshots may be.
    pub window: Duration,
}

impl Selection {
    /// `--cluster` and `--window`, checked; `None` without `--cluster`.
    pub fn new(args: &crate::cli::ClusterArgs) -> anyhow::Result<Option<Selection>> {
        let Some(name) = &args.cluster else {
            return Ok(None);
        };
        if name.trim().is_empty() || name.chars().any(char::is_control) {
            return Err(usage(format!(
                "{name:?} is not a cluster name (`rabbitmqctl cluster_status` shows it)"
            )));
        }
        let minutes = args.window.unwrap_or(DEFAULT_WINDOW.as_secs() / 60);
        if !(1..=24 * 60).contains(&minutes) {
            return Err(usage(format!(
                "--window must be 1 to 1440 minutes, not {minutes}"
            )));
        }
        Ok(Some(Selection {
            name: name.clone(),
            window: Duration::from_secs(minutes * 60),
        }))
    }
}

/// One round of member snapshots of a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSnapshot {
    /// The cluster's name, as its members report it.
    pub cluster: String,
    /// The id of its earliest member snapshot: names the cluster snapshot.
    pub id: String,
    /// Every member the cluster had, as the member snapshots name them, sorted.
    pub members: Vec<String>,
    /// One manifest per member present, sorted by node name.
    pub snapshots: Vec<Manifest>,
}

/// A queue of the cluster and the member that holds its messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldQueue {
    /// Virtual host.
    pub vhost: String,
    /// Queue name.
    pub name: String,
    /// `classic`, `quorum` or `stream`.
    #[serde(rename = "type")]
    pub queue_type: crate::rabbit::queue_type::QueueType,
    /// The member whose snapshot holds (or would hold) its messages: a
    /// classic queue's home, a quorum queue's or stream's leader.
    pub held_by: String,
    /// Messages at backup time, as the holder (or, when its snapshot is
    /// missing, another member) counted them.
    pub messages: u64,
    /// Whether a member snapshot of this cluster snapshot holds the messages.
    pub covered: bool,
    /// The member snapshot listing it as held (absent when that member's
    /// snapshot is missing or does not hold it).
    pub snapshot: Option<String>,
}

/// Sums over a cluster snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterTotals {
    /// Queues of the cluster, each counted once.
    pub queues: u64,
    /// Messages of every queue at backup time, each queue counted on its holder.
    pub messages: u64,
    /// Messages the member snapshots hold.
    pub covered_messages: u64,
    /// Messages of queues held by members whose snapshot is missing.
    pub missing_messages: u64,
    /// Bytes stored, over every member snapshot.
    pub stored_bytes: u64,
}

impl ClusterSnapshot {
    /// Members without a snapshot in this round.
    pub fn missing(&self) -> Vec<&str> {
        self.members
            .iter()
            .filter(|m| !self.snapshots.iter().any(|s| s.node.name == **m))
            .map(String::as_str)
            .collect()
    }

    /// Whether every member has its snapshot.
    pub fn is_complete(&self) -> bool {
        self.missing().is_empty()
    }

    /// When its earliest member snapshot was taken (RFC 3339).
    pub fn created_at(&self) -> &str {
        self.snapshots
            .iter()
            .find(|s| s.id == self.id)
            .map_or("", |s| s.created_at.as_str())
    }

    /// Every queue once, with the member holding it, sorted by vhost and name.
    pub fn queues(&self) -> Vec<HeldQueue> {
        self.held().0
    }

    /// What makes the round unfit to restore every message exactly once,
    /// besides missing members: a queue held by two member snapshots (its
    /// leader moved between their backups: restoring both would duplicate
    /// it) or by none of the members present.
    pub fn problems(&self) -> Vec<String> {
        self.held().1
    }

    /// Sums over the member snapshots.
    pub fn totals(&self) -> ClusterTotals {
        let queues = self.queues();
        ClusterTotals {
            queues: queues.len() as u64,
            messages: queues.iter().map(|q| q.messages).sum(),
            covered_messages: self
                .snapshots
                .iter()
                .map(|s| s.totals.covered_messages)
                .sum(),
            missing_messages: queues
                .iter()
                .filter(|q| q.snapshot.is_none() && self.missing().contains(&q.held_by.as_str()))
                .map(|q| q.messages)
                .sum(),
            stored_bytes: self.snapshots.iter().map(|s| s.totals.stored_bytes).sum(),
        }
    }

    fn held(&self) -> (Vec<HeldQueue>, Vec<String>) {
        let mut held: BTreeMap<(String, String), HeldQueue> = BTreeMap::new();
        let mut problems = Vec::new();
        for s in &self.snapshots {
            for q in s.queues.iter().filter(|q| q.home_node.is_none()) {
                let key = (q.vhost.clone(), q.name.clone());
                if let Some(first) = held.get(&key) {
                    problems.push(format!(
                        "queue {:?} in vhost {:?} is held by two member snapshots, {} of {} and {} of {} (its leader moved between the backups): restoring both would duplicate its messages",
                        q.name,
                        q.vhost,
                        first.snapshot.as_deref().unwrap_or_default(),
                        first.held_by,
                        s.id,
                        s.node.name
                    ));
                    continue;
                }
                held.insert(
                    key,
                    HeldQueue {
                        vhost: q.vhost.clone(),
                        name: q.name.clone(),
                        queue_type: q.queue_type.clone(),
                        held_by: s.node.name.clone(),
                        messages: q.messages,
                        covered: q.covered,
                        snapshot: Some(s.id.clone()),
                    },
                );
            }
        }
        for s in &self.snapshots {
            for q in &s.queues {
                let Some(home) = &q.home_node else { continue };
                let key = (q.vhost.clone(), q.name.clone());
                if held.contains_key(&key) {
                    continue;
                }
                if self.snapshots.iter().any(|o| o.node.name == *home) {
                    problems.push(format!(
                        "queue {:?} in vhost {:?}: snapshot {} of {} says {home} holds it, but {home}'s snapshot does not (its leader moved between the backups): its messages are in no member snapshot",
                        q.name, q.vhost, s.id, s.node.name
                    ));
                }
                held.insert(
                    key,
                    HeldQueue {
                        vhost: q.vhost.clone(),
                        name: q.name.clone(),
                        queue_type: q.queue_type.clone(),
                        held_by: home.clone(),
                        messages: q.messages,
                        covered: false,
                        snapshot: None,
                    },
                );
            }
        }
        (held.into_values().collect(), problems)
    }
}

/// The names of the clusters whose members have snapshots among `manifests`.
pub fn names(manifests: &[Manifest]) -> Vec<String> {
    let mut out: Vec<String> = manifests
        .iter()
        .filter_map(|m| m.node.cluster_name.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Groups the member snapshots of `cluster` among `manifests` into cluster
/// snapshots, oldest first. A snapshot joins the earliest round that began
/// at most `window` before it and has no snapshot of its member yet;
/// otherwise it begins a round.
pub fn group(cluster: &str, manifests: &[Manifest], window: Duration) -> Vec<ClusterSnapshot> {
    let mut members: Vec<(i64, &Manifest)> = manifests
        .iter()
        .filter(|m| m.node.cluster_name.as_deref() == Some(cluster))
        .filter_map(|m| Some((snapshot_id::timestamp(&m.id)?.unix_timestamp(), m)))
        .collect();
    members.sort_by(|a, b| (a.0, &a.1.node.name).cmp(&(b.0, &b.1.node.name)));
    let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    let mut rounds: Vec<(i64, ClusterSnapshot)> = Vec::new();
    for (at, m) in members {
        let open = rounds.iter_mut().find(|(start, round)| {
            at - *start <= window && !round.snapshots.iter().any(|s| s.node.name == m.node.name)
        });
        match open {
            Some((_, round)) => round.snapshots.push(m.clone()),
            None => rounds.push((
                at,
                ClusterSnapshot {
                    cluster: cluster.to_string(),
                    id: m.id.clone(),
                    members: Vec::new(),
                    snapshots: vec![m.clone()],
                },
            )),
        }
    }
    rounds
        .into_iter()
        .map(|(_, mut round)| {
            round
                .snapshots
                .sort_by(|a, b| a.node.name.cmp(&b.node.name));
            let mut members: Vec<String> = round
                .snapshots
                .iter()
                .flat_map(|s| s.node.cluster_members.iter().cloned())
                .chain(round.snapshots.iter().map(|s| s.node.name.clone()))
                .collect();
            members.sort();
            members.dedup();
            round.members = members;
            round
        })
        .collect()
}

/// The cluster snapshot named by `spec`: `latest` (the newest, which must
/// be complete unless `allow_partial`), or any member snapshot's id or an
/// unambiguous prefix of one (the round holding it).
pub fn select<'a>(
    cluster: &str,
    rounds: &'a [ClusterSnapshot],
    spec: &str,
    allow_partial: bool,
    known: &[String],
) -> anyhow::Result<&'a ClusterSnapshot> {
    if rounds.is_empty() {
        let hint = if known.is_empty() {
            "the repository holds no cluster member's snapshot: back up every member first".into()
        } else {
            format!(
                "the repository holds snapshots of cluster {}",
                known.join(", ")
            )
        };
        return Err(usage(format!(
            "there are no snapshots of cluster {cluster:?}; {hint}"
        )));
    }
    let round = if spec == "latest" {
        rounds.last().expect("not empty")
    } else {
        let matching: Vec<&ClusterSnapshot> = rounds
            .iter()
            .filter(|r| r.snapshots.iter().any(|s| s.id.starts_with(spec)))
            .collect();
        match matching.as_slice() {
            [one] => *one,
            [] => {
                return Err(usage(format!(
                    "no snapshot of cluster {cluster:?} matches {spec:?}; run `rabbitmq-backup list --cluster {cluster}` to see them"
                )));
            }
            many => {
                return Err(usage(format!(
                    "{spec:?} is ambiguous in cluster {cluster:?}: it matches cluster snapshots {}; give more of the id",
                    many.iter()
                        .map(|r| r.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    };
    if !allow_partial && !round.is_complete() {
        let complete = rounds
            .iter()
            .rev()
            .find(|r| r.is_complete())
            .map(|r| format!("; the newest complete one is {}", r.id))
            .unwrap_or_default();
        return Err(refused(format!(
            "cluster snapshot {} of {cluster:?} has no snapshot of {} (of members {}): the messages living there are not in it. Pass --allow-partial to use it anyway{complete}",
            round.id,
            round.missing().join(", "),
            round.members.join(", ")
        )));
    }
    Ok(round)
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
