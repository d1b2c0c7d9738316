//! `restore --resume`: finish a restore that was interrupted (crash, kill,
//! power loss) using the journal in its work area. Before the broker was
//! stopped nothing needs doing; after, the swap is completed and checked,
//! and rolled back if the checks fail.

use std::path::Path;
use std::time::Instant;

use super::restore::{RestoreReport, describe, finish, rollback, swap_and_start};
use crate::archive::manifest::Manifest;
use crate::error::{Kind, classified};
use crate::output::Output;
use crate::rabbit::Broker;
use crate::repo::Repository;
use crate::settings::{RestoreSettings, Settings};
use crate::swap::{Phase, Swapper};

/// Runs `restore --resume`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    settings: &Settings,
    args: &RestoreSettings,
    broker: &Broker,
    repo: &Repository,
    data_dir: &Path,
    mut pending: Vec<Swapper>,
    out: Output,
    started: Instant,
) -> anyhow::Result<RestoreReport> {
    let node = broker.identity.name.clone();
    if pending.len() > 1 {
        let areas: Vec<String> = pending
            .iter()
            .map(|s| s.area().display().to_string())
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
    let Some(mut swapper) = pending.pop() else {
        let report = RestoreReport {
            warnings: vec!["no interrupted restore was found".into()],
            ..empty_report(&node, repo)
        };
        out.result(&report, || {
            format!("no interrupted restore of {node} was found; nothing to do\n")
        })?;
        return Ok(report);
    };
    let manifest = Manifest::from_json(
        &std::fs::read(swapper.area().join("manifest.json"))?,
        "the work area",
    )?;
    let mut report = empty_report(&node, repo);
    report.snapshot = manifest.id.clone();
    report.from_node = manifest.node.name.clone();
    report.definitions_imported = true;
    report.vhosts_restored = manifest.vhosts.iter().map(|v| v.name.clone()).collect();
    tracing::info!(
        "resuming the restore of snapshot {} onto {node}, interrupted at phase {:?}",
        manifest.id,
        swapper.journal.phase
    );
    match swapper.journal.phase {
        Phase::Stopped | Phase::Swapped => {
            // stop_app is a no-op on a stopped broker; swap_in skips done steps.
            report.pause_ms = swap_and_start(broker, &mut swapper).await?;
            finish(settings, broker, &mut swapper, &manifest, args, &mut report).await?;
        }
        Phase::Started => {
            if let Err(e) = broker.ctl.start_app().await {
                return Err(rollback(broker, &mut swapper, e, false).await);
            }
            finish(settings, broker, &mut swapper, &manifest, args, &mut report).await?;
        }
        // swap::sweep hands over only restores between stop_app and the end.
        Phase::Imported | Phase::Done => unreachable!("not an interrupted restore"),
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    out.result(&report, || describe(&report))?;
    Ok(report)
}

fn empty_report(node: &str, repo: &Repository) -> RestoreReport {
    RestoreReport {
        node: node.to_string(),
        repository: repo.url().to_string(),
        ..RestoreReport::default()
    }
}
