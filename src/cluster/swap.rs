//! Which part of a cluster restore may be swapped (DESIGN §6, §13): the
//! part of the member whose name is the node's own, the one the tool runs
//! on (a swap needs that member's data directory), when that node can read
//! its store (the single-node rule, [`crate::restore::plan`]), when every
//! classic queue it holds lives on that node in the target (or does not
//! exist yet: the import declares it there), and when the swap drops no
//! message the restore does not bring back. Every other part, and that
//! one otherwise, is replayed; each part's reason is reported.

use crate::archive::manifest::Manifest;
use crate::cli::MethodArg;
use crate::cluster::journal::{PartJournal, PartMethod};
use crate::error::refused;
use crate::rabbit::version::older;

/// What the target says about a swap onto the node the tool runs on.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The node the tool runs on.
    pub node: String,
    /// Its RabbitMQ version.
    pub version: String,
    /// `--method` (`None`: auto).
    pub method: Option<MethodArg>,
    /// `--vhost`/`--queue` restore a subset.
    pub subset: bool,
    /// `--append`.
    pub append: bool,
    /// Where each queue of the target lives: `(vhost, queue, node)`.
    pub homes: Vec<(String, String, String)>,
    /// Classic queues living on the node that hold messages:
    /// `(vhost, queue, messages)`.
    pub holding: Vec<(String, String, u64)>,
    /// Vhosts where a classic mirroring policy (`ha-mode`, RabbitMQ 3.x)
    /// applies, in the target or in the definitions to import.
    pub mirrored: Vec<String>,
    /// Why the stores cannot be renamed into the data directory, if so.
    pub other_filesystem: Option<String>,
}

/// The first version without classic queue mirroring.
const NO_MIRRORING_FROM: &str = "4.0.0";

/// Sets each part's method and reason. With `--method swap`, a part of
/// the node's own member that cannot be swapped is refused (exit 4).
pub fn decide(
    parts: &mut [PartJournal],
    members: &[Manifest],
    facts: &Facts,
) -> anyhow::Result<()> {
    for p in parts.iter_mut() {
        p.method = PartMethod::Replay;
        p.reason = if facts.method == Some(MethodArg::Replay) {
            "--method replay".into()
        } else {
            format!(
                "taken on {}, not on {} (the node restored through): only a member's own data directory takes its files, so its messages are published to wherever their queues live now",
                p.node, facts.node
            )
        };
    }
    if facts.method == Some(MethodArg::Replay) {
        return Ok(());
    }
    let planned: Vec<(String, String)> = parts
        .iter()
        .flat_map(|p| p.queues.iter().map(|q| q.key()))
        .collect();
    let Some(p) = parts.iter_mut().find(|p| p.node == facts.node) else {
        if facts.method == Some(MethodArg::Swap) {
            return Err(refused(format!(
                "--method swap: the cluster snapshot has no member snapshot of {}, the node restored through; a swap needs a member of the same name. Restore with --method auto or replay",
                facts.node
            )));
        }
        return Ok(());
    };
    let Some(manifest) = members
        .iter()
        .find(|m| m.id == p.snapshot && m.node.name == p.node)
    else {
        return Ok(());
    };
    match why_not(manifest, p, &planned, facts) {
        None => {
            let logical = p
                .queues
                .iter()
                .filter(|q| !q.queue_type.is_classic())
                .count();
            p.method = PartMethod::Swap;
            p.reason = format!(
                "{} is the node restored through and the member the snapshot was taken on, RabbitMQ {} reads its stores and its classic queues live there: their stores are swapped in (only this member's broker pauses){}",
                facts.node,
                facts.version,
                if logical > 0 {
                    format!(
                        ", then its {logical} quorum queues and streams are replayed into the cluster"
                    )
                } else {
                    String::new()
                }
            );
        }
        Some(why) if facts.method == Some(MethodArg::Swap) => {
            return Err(refused(format!(
                "--method swap: the part of {} cannot be swapped: {why}. Nothing was changed; restore with --method auto (which replays it) or replay",
                facts.node
            )));
        }
        Some(why) => p.reason = why,
    }
    Ok(())
}

/// Why the node's own part cannot be swapped, or `None`.
fn why_not(
    manifest: &Manifest,
    part: &PartJournal,
    planned: &[(String, String)],
    facts: &Facts,
) -> Option<String> {
    let node = &facts.node;
    if facts.subset {
        return Some(
            "a subset is restored (--vhost/--queue), and a swap replaces whole vhost stores".into(),
        );
    }
    if facts.append {
        return Some("--append keeps the target queues' messages, and a swap replaces them".into());
    }
    let classic: Vec<_> = manifest.queues.iter().filter(|q| q.in_files()).collect();
    if !part.queues.iter().any(|q| {
        classic
            .iter()
            .any(|c| c.vhost == q.vhost && c.name == q.name)
    }) {
        return Some(format!(
            "the snapshot of {node} holds no classic queue's messages: nothing to swap"
        ));
    }
    let source = &manifest.node.rabbitmq_version;
    if older(&facts.version, source) {
        return Some(format!(
            "the snapshot comes from RabbitMQ {source} and {node} runs the older {}, which may not read its stores",
            facts.version
        ));
    }
    if let Err(e) = crate::restore::plan::check_index_readable(manifest, &facts.version, node) {
        tracing::debug!("{e:#}");
        return Some(format!(
            "the snapshot holds version-1 queue indexes, which RabbitMQ {} cannot read: a swap would bring those queues back empty",
            facts.version
        ));
    }
    if older(&facts.version, NO_MIRRORING_FROM)
        && let Some(v) = manifest
            .vhosts
            .iter()
            .find(|v| facts.mirrored.contains(&v.name))
    {
        return Some(format!(
            "a classic queue mirroring policy (ha-mode) applies in vhost {:?}: when {node} stops for the swap a mirror on another member takes its queues over, and the swapped stores would be dropped when it rejoins",
            v.name
        ));
    }
    for q in &classic {
        if let Some((_, _, home)) = facts
            .homes
            .iter()
            .find(|(v, n, _)| *v == q.vhost && *n == q.name)
            .filter(|(_, _, home)| home != node)
        {
            return Some(format!(
                "classic queue {:?} in vhost {:?} lives on {home} in the target cluster, not on {node}: a swap onto {node} would not reach it",
                q.name, q.vhost
            ));
        }
    }
    let swapped: Vec<&str> = manifest.vhosts.iter().map(|v| v.name.as_str()).collect();
    if let Some((v, n, count)) = facts.holding.iter().find(|(v, n, _)| {
        swapped.contains(&v.as_str()) && !planned.iter().any(|(pv, pn)| pv == v && pn == n)
    }) {
        return Some(format!(
            "classic queue {n:?} in vhost {v:?} on {node} holds {count} messages that the cluster snapshot does not restore: a swap of the vhost's store would drop them"
        ));
    }
    if let Some(why) = &facts.other_filesystem {
        return Some(why.clone());
    }
    None
}

#[cfg(test)]
#[path = "swap_tests.rs"]
mod tests;

/// Asks the target what [`decide`] needs, only when the cluster snapshot
/// has a part of the node's own member and `--method replay` was not given.
pub async fn gather(
    broker: &crate::rabbit::Broker,
    members: &[Manifest],
    args: &crate::settings::RestoreSettings,
    data_dir: &std::path::Path,
) -> anyhow::Result<Facts> {
    let node = broker.identity.name.clone();
    let mut facts = Facts {
        node: node.clone(),
        version: broker.identity.rabbitmq_version.clone(),
        method: (args.method != MethodArg::Auto).then_some(args.method),
        subset: args.is_subset(),
        append: args.append,
        ..Facts::default()
    };
    let Some(own) = members.iter().find(|m| m.node.name == node) else {
        return Ok(facts);
    };
    if args.method == MethodArg::Replay || args.definitions_only {
        return Ok(facts);
    }
    let vhosts: Vec<String> = own.vhosts.iter().map(|v| v.name.clone()).collect();
    let target =
        crate::rabbit::definitions::Definitions::parse(broker.export_definitions().await?)?;
    let existing: Vec<String> = vhosts
        .iter()
        .filter(|v| target.vhosts.contains(v))
        .cloned()
        .collect();
    // Every queue of those vhosts with its home (a queue that is down has none).
    let queues = broker.control.queues(&existing).await?;
    facts.homes = queues
        .iter()
        .map(|(q, home)| {
            let home = home.clone().unwrap_or_else(|| "none".to_string());
            (q.vhost.clone(), q.name.clone(), home)
        })
        .collect();
    facts.holding = queues
        .into_iter()
        .filter(|(q, home)| {
            home.as_deref() == Some(node.as_str()) && q.queue_type.is_classic() && q.messages > 0
        })
        .map(|(q, _)| (q.vhost, q.name, q.messages))
        .collect();
    facts.mirrored = target.mirrored_vhosts.into_iter().collect();
    let dirs: Vec<_> = own.vhosts.iter().map(|v| v.dir.clone()).collect();
    facts.other_filesystem = crate::restore::swap::check_same_filesystem(data_dir, &dirs)
        .err()
        .map(|e| format!("{e:#}"));
    Ok(facts)
}
