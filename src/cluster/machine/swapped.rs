//! The swapped part of a cluster restore ([`super::super::swap`] chose it):
//! the single-node restore machine ([`crate::restore::machine`]) run in the
//! part's directory with its own journal, on the member the tool runs on
//! only, its definitions already imported by the cluster restore. The
//! cluster journal says `Swapping` before that machine's first step, so
//! `--resume` loads the machine's journal and finishes or undoes the swap.

use super::{Area, PartTimes, Target, Undone, remove};
use crate::cluster::journal::PartState;
use crate::exclude::mover::AmqpConfig;
use crate::rabbit::recovery;
use crate::repo::SnapshotRef;
use crate::restore::machine::{self, ExcludeSpec, Machine, Phase, ReplaySpec};
use crate::restore::node::BrokerNode;

/// Takes part `i` (a swap) from where its journal entry says to `Swapped`;
/// returns its times and the operator's warnings. A failure that left the
/// node's stores as they were (rolled back, or no store moved) carries
/// [`Undone`]: no other part has been touched then.
pub(super) async fn run(
    area: &mut Area,
    i: usize,
    target: &Target<'_>,
) -> anyhow::Result<(PartTimes, Vec<String>)> {
    let mut times = PartTimes::default();
    let dir = area.part_dir(i);
    let p = area.journal.parts[i].clone();
    let snapshot = SnapshotRef {
        node: p.node.clone(),
        id: p.snapshot.clone(),
    };
    let manifest = target.repo.manifest(&snapshot).await?;
    // The machine keeps its area and final journal (`nested`) until the
    // part is journalled `Swapped`: a resume knows whether it held.
    let begun = p.state == PartState::Swapping && dir.join(machine::JOURNAL).exists();
    let mut m = if begun {
        Machine::load(&dir).map_err(|e| {
            e.context(format!(
                "the journal of the swap of {}'s part in {} cannot be read; its old/ directory may hold the member's previous message stores: inspect it",
                p.node,
                dir.display()
            ))
        })?
    } else {
        // No store of this part moved yet: a download cut short (or a
        // machine that gave up before its swap) starts again.
        if p.state != PartState::Fetched || !dir.join("new").exists() {
            let (from, to) = (
                manifest.node.rabbitmq_version.clone(),
                target.broker.identity.rabbitmq_version.clone(),
            );
            let prepare = |staged: &std::path::Path| {
                for terms in recovery::prepare(staged, &from, &to)? {
                    tracing::info!(
                        "removed {} (RabbitMQ {from}'s queue index, read by {to}, is recovered as after a crash)",
                        terms.display()
                    );
                }
                Ok(())
            };
            times.fetch_ms = super::fetch_part(
                area,
                i,
                target,
                &snapshot,
                &manifest,
                ", to be swapped in",
                prepare,
            )
            .await?;
        }
        area.set_part(i, PartState::Swapping)?;
        let j = &area.journal;
        let logical: Vec<(String, String)> = p
            .queues
            .iter()
            .filter(|q| !q.queue_type.is_classic())
            .map(|q| q.key())
            .collect();
        Machine::begin_in(
            &dir,
            &manifest,
            &j.target_node,
            target.data_dir,
            target.keep_old,
            j.exclude.as_ref().map(|e| ExcludeSpec {
                globs: e.globs.clone(),
                drop: e.drop,
            }),
            (!logical.is_empty()).then_some(ReplaySpec {
                queues: logical,
                purge: j.purge,
                append: false,
            }),
        )?
    };
    m.imported_elsewhere()?;
    if begun {
        tracing::info!(
            "resuming the swap of {}'s part onto {}: {}",
            p.node,
            area.journal.target_node,
            m.next_action()
        );
    } else {
        tracing::info!(
            "swapping the part of {} onto {} (only this member's broker pauses)",
            p.node,
            area.journal.target_node
        );
    }
    let started = std::time::Instant::now();
    let node = BrokerNode {
        broker: target.broker,
        settings: target.settings,
    };
    let outcome = match m.resume(&node).await {
        Ok(outcome) => outcome,
        Err(e) => {
            // Rolled back, given up before moving a store (its journal
            // says so), or gone before its first swap step.
            let undone = match Machine::load(&dir) {
                Ok(m) => matches!(m.journal.phase, Phase::RolledBack | Phase::Abandoned),
                Err(_) => !dir.join(machine::JOURNAL).exists(),
            };
            if undone {
                return Err(e.context(Undone(format!(
                    "the swap of {}'s part onto {} was undone or never began, and no other part was touched: the target cluster holds its previous messages (the definitions stay imported). Fix the cause and restore again, or restore with --method replay",
                    p.node, area.journal.target_node
                ))));
            }
            return Err(e);
        }
    };
    times.replay_ms = started.elapsed().as_millis() as u64;
    times.pause_ms = Some(outcome.pause_ms);
    // What the swap and its replay put back, counted now: the machine
    // checked it (a resumed machine that had already ended reports nothing).
    let amqp = AmqpConfig::new(
        target.broker.amqp_url(target.settings).await?,
        target.settings,
    );
    let keys: Vec<(String, String)> = p.queues.iter().map(|q| q.key()).collect();
    let counted = crate::replay::counts(&amqp, &keys, false).await?;
    let entry = &mut area.journal.parts[i];
    entry.published = counted;
    entry.excluded = outcome.excluded.iter().map(|e| e.excluded).sum();
    area.set_part(i, PartState::Swapped)?;
    remove(&dir);
    let mut warnings = outcome.warnings;
    if let Some(kept) = outcome.previous_store {
        warnings.push(format!(
            "the previous message stores of {} are kept in {} (--keep-old)",
            area.journal.target_node,
            kept.display()
        ));
    }
    Ok((times, warnings))
}
