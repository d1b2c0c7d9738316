//! `verify`: are a snapshot's objects all there and intact?
//!
//! Without `--read-data`: every chunk exists with the recorded size and,
//! where the server keeps one, the recorded SHA-256 checksum (no download,
//! no key needed for an encrypted snapshot). With it: every chunk is
//! downloaded (and decrypted) and every chunk and file digest checked.
//!
//! Damage (exit 3) and storage that cannot be read (exit 1) are told apart:
//! a manifest that cannot be fetched says nothing about the snapshot.

use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;

use super::deep::{self, DeepReport};
use crate::archive::manifest::Manifest;
use crate::archive::reader;
use crate::cli::VerifyArgs;
use crate::cluster::{ClusterSnapshot, Selection};
use crate::crypt::Identities;
use crate::error::integrity;
use crate::output::{Output, count};
use crate::repo::url::RepoUrl;
use crate::repo::{Repository, SnapshotRef};
use crate::settings::Settings;
use crate::transfer::{self, DownloadSource};

/// One snapshot's verdict (`--json` schema).
#[derive(Debug, Serialize)]
pub struct Verdict {
    /// Snapshot id.
    pub id: String,
    /// Source node.
    pub node: String,
    /// Chunks checked.
    pub chunks: usize,
    /// Chunks whose checksum the server reported and we compared.
    pub checksums_compared: usize,
    /// Whether the data was downloaded and every digest checked.
    pub read_data: bool,
    /// What was compared: `data` (every digest), `sizes-and-checksums`,
    /// or `sizes` (the storage keeps no checksums; nothing else compared).
    pub checked: Checked,
    /// What is wrong; empty when the snapshot is intact.
    pub problems: Vec<String>,
    /// With `--deep`: each classic queue's decoded count against the manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deep: Option<DeepReport>,
}

/// How far a verdict goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Checked {
    /// Every chunk downloaded, every chunk and file digest checked.
    Data,
    /// Every chunk's size and the server's SHA-256 checksum compared.
    SizesAndChecksums,
    /// Sizes only: the storage keeps no checksum for some or all chunks.
    Sizes,
}

/// `verify --json` schema.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    /// Repository location.
    pub repository: String,
    /// True when every snapshot is intact (and, with `--cluster`, every
    /// cluster snapshot whole).
    pub ok: bool,
    /// One verdict per snapshot.
    pub snapshots: Vec<Verdict>,
    /// With `--cluster`: one verdict per cluster snapshot, over its members.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cluster_snapshots: Vec<ClusterVerdict>,
}

/// A cluster snapshot's verdict: its members' snapshots are verified one by
/// one (in `snapshots`); this says whether the round is whole.
#[derive(Debug, Serialize)]
pub struct ClusterVerdict {
    /// The cluster snapshot's id.
    pub id: String,
    /// The cluster.
    pub cluster: String,
    /// Every member has its snapshot.
    pub complete: bool,
    /// Members without a snapshot.
    pub missing: Vec<String>,
    /// The member snapshots verified.
    pub snapshots: Vec<String>,
    /// What is wrong: a missing member (unless `--allow-partial`), a queue
    /// held twice or by nobody, a damaged member snapshot.
    pub problems: Vec<String>,
}

impl ClusterVerdict {
    fn of(round: &ClusterSnapshot, allow_partial: bool, verdicts: &[Verdict]) -> ClusterVerdict {
        let missing: Vec<String> = round.missing().into_iter().map(str::to_string).collect();
        let mut problems = round.problems();
        if !missing.is_empty() && !allow_partial {
            problems.insert(
                0,
                format!(
                    "no snapshot of member {}: the messages living there are not in it (--allow-partial accepts that)",
                    missing.join(", ")
                ),
            );
        }
        for v in verdicts {
            let member = round
                .snapshots
                .iter()
                .any(|s| s.id == v.id && s.node.name == v.node);
            if member && !v.problems.is_empty() {
                problems.push(format!("member snapshot {} of {} is damaged", v.id, v.node));
            }
        }
        ClusterVerdict {
            id: round.id.clone(),
            cluster: round.cluster.clone(),
            complete: missing.is_empty(),
            missing,
            snapshots: round
                .snapshots
                .iter()
                .map(|s| format!("{} of {}", s.id, s.node.name))
                .collect(),
            problems,
        }
    }
}

/// Runs `verify`.
pub async fn run(settings: &Settings, args: &VerifyArgs, out: Output) -> anyhow::Result<()> {
    if let Some(node) = &args.from_node {
        crate::repo::check_node_name(node)?;
    }
    let (spec, all, from_node) = (
        args.snapshot.as_deref(),
        args.all,
        args.from_node.as_deref(),
    );
    let read_data = args.read_data || args.deep;
    let selection = Selection::new(&args.cluster)?;
    let repo = super::open_repository(settings).await?;
    // With --cluster: the member snapshots of one round, or of every one.
    let rounds = match (&selection, all, spec) {
        (None, _, _) => Vec::new(),
        (Some(selection), true, _) => super::cluster::rounds(&repo, selection).await?.0,
        (Some(selection), false, Some(spec)) => {
            vec![super::cluster::resolve(&repo, selection, spec, true).await?]
        }
        (Some(_), false, None) => return Err(crate::error::usage("name a snapshot or pass --all")),
    };
    let snapshots = match (&selection, all, spec) {
        (Some(_), _, _) => rounds
            .iter()
            .flat_map(|r| &r.snapshots)
            .map(|m| SnapshotRef {
                node: m.node.name.clone(),
                id: m.id.clone(),
            })
            .collect(),
        (None, true, _) => repo.list(from_node).await?,
        (None, false, Some(spec)) => {
            vec![super::list::resolve(settings, &repo, spec, from_node).await?]
        }
        (None, false, None) => return Err(crate::error::usage("name a snapshot or pass --all")),
    };
    let local = matches!(repo.url(), RepoUrl::Local { .. });
    let mut verdicts = Vec::new();
    for snapshot in &snapshots {
        let verdict = match repo.manifest(snapshot).await {
            Ok(manifest) => {
                let identity = settings.identity.as_ref();
                if args.deep {
                    deep::check(&repo, snapshot, &manifest, identity).await?
                } else {
                    check(&repo, snapshot, &manifest, read_data, identity).await?
                }
            }
            // A manifest that is missing, does not parse or belongs elsewhere.
            Err(e) if is_damage(&e) => Verdict {
                id: snapshot.id.clone(),
                node: snapshot.node.clone(),
                chunks: 0,
                checksums_compared: 0,
                read_data,
                checked: Checked::Sizes,
                problems: vec![crate::error::render(&e)],
                deep: None,
            },
            // The storage did not answer: nothing is known about the snapshot.
            Err(e) => {
                return Err(e.context(format!(
                    "could not verify snapshot {} of {}: its manifest could not be read from {} (a storage failure, not damage to the snapshot)",
                    snapshot.id,
                    snapshot.node,
                    repo.describe()
                )));
            }
        };
        if verdict.problems.is_empty() {
            tracing::info!("snapshot {} of {} is intact", verdict.id, verdict.node);
        } else {
            for p in &verdict.problems {
                tracing::error!("snapshot {} of {}: {p}", verdict.id, verdict.node);
            }
        }
        verdicts.push(verdict);
    }
    let cluster_snapshots: Vec<ClusterVerdict> = rounds
        .iter()
        .map(|round| ClusterVerdict::of(round, args.allow_partial, &verdicts))
        .collect();
    let report = VerifyReport {
        repository: repo.url().to_string(),
        ok: verdicts.iter().all(|v| v.problems.is_empty())
            && cluster_snapshots.iter().all(|c| c.problems.is_empty()),
        snapshots: verdicts,
        cluster_snapshots,
    };
    out.result(&report, || {
        let mut s = String::new();
        for v in &report.snapshots {
            let chunks = count(v.chunks as u64, "chunk");
            let line = match v.checked {
                _ if v.deep.is_some() => {
                    format!("ok, {}", v.deep.as_ref().map(|d| d.summary()).unwrap_or_default())
                }
                Checked::Data => "ok, every chunk and file digest checked".to_string(),
                Checked::SizesAndChecksums => {
                    format!("ok, {chunks} present, sizes and server checksums match")
                }
                Checked::Sizes if local => format!(
                    "ok, {chunks} present with their recorded sizes (a local directory keeps no checksums: --read-data checks every digest)"
                ),
                Checked::Sizes if v.checksums_compared == 0 => format!(
                    "{chunks} present with their recorded sizes, but their checksums could NOT be compared: the server keeps none; run verify --read-data to check the data"
                ),
                Checked::Sizes => format!(
                    "{chunks} present with their recorded sizes, but only {} of {} server checksums could be compared (the server keeps none for the others); run verify --read-data to check the data",
                    v.checksums_compared, v.chunks
                ),
            };
            if v.problems.is_empty() {
                s.push_str(&format!("{} ({}): {line}\n", v.id, v.node));
            } else {
                s.push_str(&format!("{} ({}): DAMAGED\n", v.id, v.node));
                for p in &v.problems {
                    s.push_str(&format!("  {p}\n"));
                }
            }
            if let Some(d) = &v.deep {
                // Mismatches are among the problems already.
                for q in d
                    .queues
                    .iter()
                    .filter(|q| q.status == deep::Status::Explained)
                {
                    s.push_str(&format!("  {}\n", q.describe()));
                }
            }
        }
        for c in &report.cluster_snapshots {
            let members = count(c.snapshots.len() as u64, "member snapshot");
            if c.problems.is_empty() {
                let whole = if c.complete {
                    "complete"
                } else {
                    "PARTIAL (allowed)"
                };
                s.push_str(&format!(
                    "cluster snapshot {} of {}: ok, {whole}, {members}\n",
                    c.id, c.cluster
                ));
            } else {
                s.push_str(&format!(
                    "cluster snapshot {} of {}: NOT OK ({members})\n",
                    c.id, c.cluster
                ));
                for p in &c.problems {
                    s.push_str(&format!("  {p}\n"));
                }
            }
        }
        if report.snapshots.is_empty() {
            s.push_str("no snapshots to verify\n");
        }
        s
    })?;
    if report.ok {
        return Ok(());
    }
    let damaged = report
        .snapshots
        .iter()
        .filter(|v| !v.problems.is_empty())
        .count();
    if damaged > 0 {
        return Err(integrity(format!(
            "{damaged} of {} failed verification",
            count(report.snapshots.len() as u64, "snapshot")
        )));
    }
    let unfit = report
        .cluster_snapshots
        .iter()
        .filter(|c| !c.problems.is_empty())
        .count();
    Err(integrity(format!(
        "{unfit} of {} would not restore every message exactly once",
        count(report.cluster_snapshots.len() as u64, "cluster snapshot")
    )))
}

/// `--read-data` or a plain presence check of one snapshot.
pub async fn check(
    repo: &Repository,
    snapshot: &SnapshotRef,
    manifest: &Manifest,
    read_data: bool,
    identity: Option<&Arc<Identities>>,
) -> anyhow::Result<Verdict> {
    let key_of = |hex: &str| repo.chunk_key(&snapshot.node, &snapshot.id, hex);
    let mut verdict = Verdict {
        id: snapshot.id.clone(),
        node: snapshot.node.clone(),
        chunks: manifest.chunks.len(),
        checksums_compared: 0,
        read_data,
        checked: if read_data {
            Checked::Data
        } else {
            Checked::SizesAndChecksums
        },
        problems: Vec::new(),
        deep: None,
    };
    if read_data {
        let source = DownloadSource::for_snapshot(repo, snapshot, manifest, identity, 4)?;
        let m = Arc::new(manifest.clone());
        let result = transfer::download(source, manifest.chunks.clone(), move |r| {
            reader::unpack(r, &m, None, |_| {})
        })
        .await;
        if let Err(e) = result {
            if crate::error::kind_of(&e) != crate::error::Kind::Integrity {
                return Err(e);
            }
            verdict.problems.push(crate::error::render(&e));
        }
        return Ok(verdict);
    }
    let heads: Vec<_> = futures::stream::iter(manifest.chunks.iter().map(|c| {
        let key = key_of(&c.sha256);
        async move { (key.clone(), c, repo.storage().head(&key).await) }
    }))
    .buffered(16)
    .collect()
    .await;
    for (key, chunk, head) in heads {
        match head? {
            None => verdict.problems.push(format!("chunk {key} is missing")),
            Some(meta) if meta.size != chunk.size => verdict.problems.push(format!(
                "chunk {key} is {} but the manifest says {}",
                count(meta.size, "byte"),
                chunk.size
            )),
            Some(meta) => {
                if let Some(sha) = meta.sha256 {
                    verdict.checksums_compared += 1;
                    if hex::encode(sha) != chunk.sha256 {
                        verdict.problems.push(format!(
                            "chunk {key} has checksum {} on the server, not {}",
                            hex::encode(sha),
                            chunk.sha256
                        ));
                    }
                }
            }
        }
    }
    if verdict.checksums_compared < verdict.chunks {
        verdict.checked = Checked::Sizes;
    }
    Ok(verdict)
}

/// Whether a failure to read a manifest says the snapshot is damaged (or
/// unusable), rather than that the storage could not be read.
fn is_damage(err: &anyhow::Error) -> bool {
    matches!(
        crate::error::kind_of(err),
        crate::error::Kind::Integrity | crate::error::Kind::Incompatible
    )
}
