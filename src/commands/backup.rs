//! `backup`: preflight, hooks, definitions and counts, capture (stop-app
//! copy or live), streamed upload, manifest last (§5).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::archive::chunker::ChunkOptions;
use crate::archive::manifest::{
    Chunking, Consistency, FORMAT, Manifest, NodeInfo, Totals, VhostEntry,
};
use crate::archive::writer::write_archive;
use crate::crypt::Recipients;
use crate::error::refused;
use crate::output::{Output, bytes, count};
use crate::progress::Progress;
use crate::rabbit::Broker;
use crate::rabbit::datadir::{self, VhostDir};
use crate::rabbit::definitions::Definitions;
use crate::repo::url::RepoUrl;
use crate::repo::{Repository, local, snapshot_id};
use crate::retention::tier_for;
use crate::settings::{BackupSettings, Settings};
use crate::staging::{NodeLock, Staging};
use crate::transfer::{self, UploadTarget};
use crate::{hooks, signals};

mod leaders;
mod logical;
mod pause;
mod queues;
mod report;

use pause::pause_and_copy;
use queues::{queue_entries, safety_checks};
pub use report::{BackupReport, Phases, UncoveredQueue};

/// Runs `backup`.
pub async fn run(
    settings: &Settings,
    args: &BackupSettings,
    out: Output,
) -> anyhow::Result<BackupReport> {
    let started = Instant::now();
    let created = OffsetDateTime::now_utc();
    // Independent questions are asked at once: every round trip here is a
    // fixed cost of every backup. Their errors are still reported in order.
    let (repo, broker) = tokio::join!(
        super::open_repository_for_backup(settings),
        // The broker may be stopped by an earlier backup killed in its pause.
        Broker::reach(settings)
    );
    let repo = repo?;
    // A missing local repository whose parent is missing too is a typo or an
    // unmounted filesystem: refused before anything else is reported.
    let creation = match settings.repo {
        RepoUrl::Local { ref path } => Some(local::plan_creation(path)?),
        RepoUrl::S3 { .. } => None,
    };
    let (broker, state) = broker?;
    // The bucket's retention report is read meanwhile (it never fails a backup).
    let retention = tokio::spawn({
        let repo = repo.clone();
        async move { retention_warnings(&repo).await }
    });
    let (data_dir, usable) = tokio::join!(
        broker.data_dir(settings.data_dir.as_deref()),
        repo.storage().check()
    );
    let data_dir = data_dir?;
    usable.with_context(|| format!("the repository {} is not usable", repo.url()))?;
    let _lock = NodeLock::acquire(&data_dir, "backup")?;
    if let Some(area) = crate::restore::machine::interrupted(&data_dir)? {
        return Err(refused(format!(
            "an interrupted restore was found in {}: the node may hold half-restored stores. Finish or undo it first with `rabbitmq-backup restore --resume`",
            area.display()
        )));
    }
    // Its parts may be half-replayed, or a member's stores half-swapped.
    if let Some(area) = crate::cluster::journal::sweep(&data_dir, true)?.first() {
        return Err(refused(format!(
            "an interrupted restore of cluster snapshot {} of {:?} was found in {}: the node may hold half-restored messages. Finish it first with `rabbitmq-backup restore --cluster {} --resume`",
            area.journal.cluster_snapshot,
            area.journal.cluster,
            area.path().display(),
            area.journal.cluster
        )));
    }
    let broker = broker.running(state, settings, true).await?;
    for stale in crate::staging::remove_stale(&data_dir, "backup", |_| Ok(false))? {
        tracing::warn!("removed {}, left by an interrupted backup", stale.display());
    }
    // The id is announced only once the snapshot is being written (after
    // the safety checks): a refused backup names no snapshot.
    let id = snapshot_id::new_id(created);
    tracing::info!(
        "backing up node {} (RabbitMQ {}) into {}",
        broker.identity.name,
        broker.identity.rabbitmq_version,
        repo.describe()
    );
    if let Some(recipients) = &settings.encrypt_to {
        tracing::info!(
            "encrypting every chunk (age) to {}",
            recipients.names().join(", ")
        );
    }

    let mut report = hooks::around(
        args.before.as_deref(),
        args.after.as_deref(),
        &id,
        &broker.identity.name,
        &repo.url().to_string(),
        "was written and is usable",
        capture(
            &broker,
            &repo,
            &data_dir,
            args,
            settings.encrypt_to.clone(),
            Start {
                id: &id,
                creation: creation.as_ref(),
                created,
                started,
            },
        ),
    )
    .await?;
    report.repository_warnings = retention.await.unwrap_or_default();
    for warning in report.warnings.iter().chain(&report.repository_warnings) {
        tracing::warn!("{warning}");
    }
    for q in &report.uncovered_queues {
        tracing::warn!(
            "queue {:?} in vhost {:?} ({}, {}): its messages are NOT in the snapshot{}",
            q.name,
            q.vhost,
            q.queue_type,
            count(q.messages, "message"),
            q.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    tracing::info!(
        "snapshot {} done in {:.1} s: {}, {} stored in {}, {} of {} covered, broker paused {} ms",
        report.id,
        report.duration_ms as f64 / 1000.0,
        count(report.files, "file"),
        bytes(report.stored_bytes),
        count(report.chunks, "chunk"),
        report.covered_messages,
        count(report.messages, "message"),
        report.pause_ms
    );
    tracing::info!("snapshot {} is in {}", report.id, report.location);
    out.result(&report, || report.id.clone())?;
    Ok(report)
}

/// What a backup starts from: the snapshot's id and times, and the local
/// repository directory to create once writing begins.
struct Start<'a> {
    id: &'a str,
    creation: Option<&'a local::Creation>,
    created: OffsetDateTime,
    started: Instant,
}

impl Start<'_> {
    /// Writing begins (the safety checks passed): the repository directory
    /// is made if needed, and only now is the snapshot's id announced.
    fn begin_writing(&self) -> anyhow::Result<()> {
        if let Some(creation) = self.creation {
            local::create(creation)?;
        }
        tracing::info!("writing snapshot {}", self.id);
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn capture(
    broker: &Broker,
    repo: &Repository,
    data_dir: &Path,
    args: &BackupSettings,
    encrypt_to: Option<Arc<Recipients>>,
    start: Start<'_>,
) -> anyhow::Result<BackupReport> {
    let (id, created, started) = (start.id, start.created, start.started);
    let node = broker.identity.name.clone();
    let (exported, earlier, members) = tokio::join!(
        broker.export_definitions(),
        repo.list(Some(&node)),
        broker.cluster_members()
    );
    let definitions = Definitions::parse(exported?)?;
    let members = members?;
    let mut warnings = Vec::new();
    let (members, cluster_name) = if members.len() > 1 {
        let (name, unset) = broker.cluster_name(&members).await;
        warnings.extend(unset);
        (members, Some(name))
    } else {
        (Vec::new(), None)
    };
    let elsewhere = if members.is_empty() {
        Vec::new()
    } else {
        broker.queues_elsewhere(&definitions.vhosts).await?
    };
    let check_queues = || async {
        let queues = broker.queues(&definitions.vhosts).await?;
        safety_checks(&queues, args)?;
        anyhow::Ok(queues)
    };
    // Before a pause, the counts and checks come first. A live capture
    // starts archiving meanwhile; uploads wait for the checks (below).
    let early_queues = if args.live {
        None
    } else {
        Some(check_queues().await?)
    };
    let vhosts: Vec<VhostEntry> = definitions
        .vhosts
        .iter()
        .filter_map(|name| {
            let dir = VhostDir::of(name);
            if data_dir.join(&dir).is_dir() {
                Some(VhostEntry { name: name.clone(), dir })
            } else {
                warnings.push(format!("vhost {name:?} has no message store directory yet; it has no messages to back up"));
                None
            }
        })
        .collect();
    let vhost_dirs: Vec<VhostDir> = vhosts.iter().map(|v| v.dir.clone()).collect();
    let earlier: Vec<String> = earlier?.into_iter().map(|s| s.id).collect();
    let tier = tier_for(created, &earlier);
    signals::check()?;

    if !members.is_empty() {
        warnings.push(format!(
            "node {node} is a member of a cluster ({}): this snapshot holds the messages of the queues whose home (classic) or leader (quorum, stream) is {node} only; back up every member",
            members.join(", ")
        ));
    }
    if !args.live {
        start.begin_writing()?;
    }
    let (source, _staging, pause_ms, consistency) = if args.live {
        warnings.push(
            "live capture: files were read from the running node and may be inconsistent".into(),
        );
        (data_dir.to_path_buf(), None, 0, Consistency::Live)
    } else {
        let store_bytes: u64 = vhost_dirs
            .iter()
            .map(|d| tree_size(&data_dir.join(d)))
            .sum();
        let staging = Staging::create(data_dir, "backup", id)?;
        // Before the pause: running out of space with the broker stopped is
        // the failure to avoid.
        crate::staging::check_free_space(
            staging.path(),
            store_bytes + store_bytes / 10,
            "the stop-app copy of the message store (or use --live)",
        )?;
        let pause_ms = pause_and_copy(
            &broker.control,
            &node,
            data_dir,
            staging.path(),
            &vhost_dirs,
            args,
        )
        .await?;
        if !members.is_empty() {
            let before = leaders::before_pause(
                &node,
                early_queues.as_deref().unwrap_or_default(),
                &elsewhere,
            );
            warnings.extend(leaders::restore(broker, &before).await);
        }
        (
            staging.path().to_path_buf(),
            Some(staging),
            pause_ms,
            Consistency::StopApp,
        )
    };

    let source_total = tree_size(&source.join("msg_stores"));
    let read_progress = Progress::new("archiving", source_total);
    let reading = read_progress.clone();
    let definitions_bytes = definitions.bytes.clone();
    let live = args.live;
    let producer_source: PathBuf = source.clone();
    let selected: BTreeSet<VhostDir> = vhost_dirs.iter().cloned().collect();
    // When the first store byte is read and the last chunk is stored (ms
    // since the start), for the report's fixed-cost breakdown.
    let first_read = Arc::new(AtomicU64::new(0));
    let last_upload = Arc::new(AtomicU64::new(0));
    let uploaded_at = last_upload.clone();
    let target = UploadTarget {
        storage: repo.storage().clone(),
        key_of: repo.chunk_keys(&node, id),
        tags: tier.tags(),
        concurrency: args.upload_concurrency,
        on_uploaded: Box::new(move |_| {
            uploaded_at.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }),
    };
    let encryption = encrypt_to.as_ref().map(|r| r.encryption());
    let options = ChunkOptions {
        chunk_size: args.chunk_size,
        level: args.level,
        workers: args.threads,
        encrypt_to,
    };
    let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<bool>();
    let (targets_tx, targets_rx) = tokio::sync::oneshot::channel();
    let checked = async {
        let result = match early_queues {
            Some(queues) => Ok(queues),
            None => check_queues().await,
        };
        let result = match result {
            Ok(queues) if args.live => start.begin_writing().map(|()| queues),
            other => other,
        };
        let _ = gate_tx.send(result.is_ok());
        if let Ok(queues) = &result {
            let _ = targets_tx.send(logical::targets(queues, args));
        }
        result
    };
    let gate = async move {
        match gate_rx.await {
            Ok(true) => Ok(()),
            _ => Err(anyhow::anyhow!("the safety checks did not pass")),
        }
    };
    let (feed, side) = logical::link();
    let read_at = first_read.clone();
    let uploading = transfer::upload(options, target, gate, move |sink| {
        read_at.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let (_, written) = write_archive(
            sink,
            &definitions_bytes,
            &producer_source,
            live,
            &selected,
            Some(feed),
            |n| {
                reading.inc(n);
            },
        )?;
        Ok(written)
    });
    let capturing = logical::capture(&broker.control, targets_rx, side);
    let (queues, uploaded, captures) = tokio::join!(checked, uploading, capturing);
    // A refusal is the reason to report, not the upload it stopped.
    let queues = queues?;
    let (chunks, written, tar_bytes) = uploaded.with_context(|| {
        format!("snapshot {id} was not completed (no manifest was written, so it is invisible)")
    })?;
    let queue_dirs =
        datadir::scan_queue_dirs(&source).context("cannot read the captured queue directories")?;
    let mut queue_entries = queue_entries(&queues, &elsewhere, &queue_dirs, &definitions, args);
    // The node's own queues come first, in the order of `queues`.
    for (entry, q) in queue_entries.iter_mut().zip(&queues) {
        logical::apply(entry, q, &captures);
    }
    read_progress.finish();
    warnings.extend(written.warnings);
    warnings.extend(logical::warnings(&queues, &captures));
    let logical_entries = logical::entries(&captures);

    let totals = Totals {
        files: written.files.len() as u64,
        file_bytes: written.files.iter().map(|f| f.size).sum(),
        tar_bytes,
        stored_bytes: chunks.iter().map(|c| c.size).sum(),
        chunks: chunks.len() as u64,
        // Per node: a queue living on another member is counted there.
        messages: queue_entries
            .iter()
            .filter(|q| q.home_node.is_none())
            .map(|q| q.messages)
            .sum(),
        // Logical captures count the records written, which a queue that
        // lost messages during its capture has fewer of.
        covered_messages: queue_entries
            .iter()
            .filter(|q| q.in_files())
            .map(|q| q.messages)
            .sum::<u64>()
            + logical_entries.iter().map(|l| l.messages).sum::<u64>(),
    };
    let mut manifest = Manifest {
        format: FORMAT,
        id: id.to_string(),
        created_at: rfc3339(created),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        node: NodeInfo {
            name: node.clone(),
            rabbitmq_version: broker.identity.rabbitmq_version.clone(),
            erlang_version: broker.identity.erlang_version.clone(),
            data_dir: data_dir.display().to_string(),
            cluster_name,
            cluster_members: members,
        },
        consistency,
        pause_ms,
        definitions: definitions.info.clone(),
        vhosts,
        queues: queue_entries,
        files: written.files,
        dirs: written.dirs,
        chunks,
        totals,
        tier: tier.as_str().to_string(),
        chunking: Chunking {
            chunk_size: args.chunk_size,
            compression: "zstd".into(),
            level: args.level,
        },
        logical: logical_entries,
        encryption,
    };
    // Encrypted (or other format-2 content): format 2, which a version-1
    // tool refuses instead of restoring it wrongly.
    manifest.format = manifest.required_format();
    let body = manifest.to_json();
    let digest: [u8; 32] = Sha256::digest(&body).into();
    crate::failpoint::hit("backup:before-manifest")?;
    // The commit marker: only now does the snapshot exist for list/restore.
    repo.storage()
        .put(
            &repo.manifest_key(&node, id),
            Bytes::from(body),
            &digest,
            &tier.tags(),
        )
        .await
        .with_context(|| format!("cannot write the manifest of snapshot {id}; the snapshot is incomplete and invisible"))?;

    let uncovered_queues = manifest
        .uncovered_queues()
        .map(|q| UncoveredQueue {
            vhost: q.vhost.clone(),
            name: q.name.clone(),
            queue_type: q.queue_type.clone(),
            messages: q.messages,
            reason: logical::reason(q, args, &captures),
        })
        .collect();
    Ok(BackupReport {
        id: id.to_string(),
        location: repo.snapshot_location(&node, id),
        node,
        control: broker.control.transport().as_str(),
        repository: repo.url().to_string(),
        consistency,
        pause_ms,
        duration_ms: started.elapsed().as_millis() as u64,
        phases: Phases {
            first_read_ms: first_read.load(Ordering::Relaxed),
            last_upload_ms: last_upload.load(Ordering::Relaxed),
        },
        tier: tier.as_str(),
        files: manifest.totals.files,
        file_bytes: manifest.totals.file_bytes,
        stored_bytes: manifest.totals.stored_bytes,
        chunks: manifest.totals.chunks,
        messages: manifest.totals.messages,
        covered_messages: manifest.totals.covered_messages,
        queues: manifest.queues,
        uncovered_queues,
        encrypted_to: manifest
            .encryption
            .as_ref()
            .map(|e| e.recipients.clone())
            .unwrap_or_default(),
        warnings,
        repository_warnings: Vec::new(),
    })
}

/// The bucket's retention report; never fails the backup (the writer may
/// lack permission to read lifecycle rules).
async fn retention_warnings(repo: &Repository) -> Vec<String> {
    if matches!(repo.url(), crate::repo::url::RepoUrl::Local { .. }) {
        return Vec::new();
    }
    match super::check_repo::inspect(repo).await {
        Ok(check) => check.warnings,
        Err(e) => vec![format!(
            "cannot read the bucket's tag support and lifecycle rules: {}",
            crate::error::render(&e)
        )],
    }
}

/// RFC 3339 in UTC with whole seconds (`2026-11-21T05:15:00Z`).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Total size of the regular files below `dir` (for progress only).
fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}
