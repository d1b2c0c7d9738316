//! The checks that decide whether a restore may go on, all made BEFORE the
//! snapshot is downloaded when they need no download (a dry run makes the
//! same ones and predicts the same refusals), and the consumer and
//! replaced-message checks made again after `--before` (whose job is to
//! stop consumers), just before the node changes.

use std::path::Path;

use super::report::{QueueOutcome, holding_messages, replaced};
use super::{fetch, swap};
use crate::archive::manifest::{Capture, IndexVersion, Manifest, QueueEntry};
use crate::cli::MethodArg;
use crate::error::{incompatible, refused};
use crate::rabbit::Broker;
use crate::rabbit::ctl::{QueueStatus, with_consumers};
use crate::rabbit::datadir::VhostDir;
use crate::rabbit::definitions::Definitions;
use crate::rabbit::queue_type::QueueType;
use crate::rabbit::version::older;
use crate::restore::machine::Method;
use crate::settings::RestoreSettings;

/// What the checks found that the report shows.
#[derive(Debug, Default)]
pub struct Checks {
    /// Queues on the node whose messages the restore replaces.
    pub replaced: Vec<QueueOutcome>,
    /// What the operator should know (refusals `--before` may avoid).
    pub notes: Vec<String>,
}

/// The method a restore takes, why, and what a swap replays after it.
#[derive(Debug, Clone)]
pub struct Choice {
    /// How the messages get onto the node.
    pub method: Method,
    /// Why (printed, and `method_reason` in `--json`).
    pub reason: String,
    /// A swap (`--method auto`): the quorum queues and streams the snapshot
    /// holds as logical records, `(vhost, queue)`, replayed once the
    /// swapped node runs; empty otherwise.
    pub then_replay: Vec<(String, String)>,
}

impl Choice {
    fn of(method: Method, reason: impl Into<String>) -> Choice {
        Choice {
            method,
            reason: reason.into(),
            then_replay: Vec::new(),
        }
    }

    /// The method's name in reports: `swap`, `replay` or `swap+replay`.
    pub fn label(&self) -> &'static str {
        method_label(self.method, !self.then_replay.is_empty())
    }
}

/// The name in reports of `method`, followed by a replay or not.
pub fn method_label(method: Method, then_replay: bool) -> &'static str {
    match (method, then_replay) {
        (Method::Swap, false) => "swap",
        (Method::Swap, true) => "swap+replay",
        (Method::Replay, _) => "replay",
    }
}

/// The method a restore takes and why (DESIGN §6): `--method` if given,
/// else swap where it is possible and the whole node is restored, replay
/// otherwise. Replay is never traded for a swap that would lose messages:
/// quorum queues and streams held as logical records, which no file swap
/// brings back, are replayed after the swap.
pub async fn choose(
    broker: &Broker,
    manifest: &Manifest,
    args: &RestoreSettings,
) -> anyhow::Result<Choice> {
    match args.method {
        MethodArg::Swap => return Ok(Choice::of(Method::Swap, "--method swap")),
        MethodArg::Replay => return Ok(Choice::of(Method::Replay, "--method replay")),
        MethodArg::Auto => {}
    }
    if args.is_subset() {
        return Ok(Choice::of(
            Method::Replay,
            "a subset of the snapshot is restored (--vhost/--queue); a swap replaces whole vhost stores",
        ));
    }
    if args.append {
        return Ok(Choice::of(
            Method::Replay,
            "--append keeps the target queues' messages; a swap replaces them",
        ));
    }
    let members = broker.cluster_members().await?;
    if members.len() > 1 {
        return Ok(Choice::of(
            Method::Replay,
            format!(
                "node {} is a cluster member ({} nodes); a swap could lose messages of queues living on other members",
                broker.identity.name,
                members.len()
            ),
        ));
    }
    let target = &broker.identity.rabbitmq_version;
    if let Err(e) = check_index_readable(manifest, target, &broker.identity.name) {
        tracing::debug!("{e:#}");
        return Ok(Choice::of(
            Method::Replay,
            format!(
                "the snapshot holds version-1 queue indexes, which RabbitMQ {target} cannot read: a swap would bring those queues back empty"
            ),
        ));
    }
    Ok(swap_then_replay(manifest, target))
}

/// `auto`'s swap: the classic stores swapped in, then the logical records
/// (if any) replayed into the running node.
fn swap_then_replay(manifest: &Manifest, target: &str) -> Choice {
    let mut choice = Choice::of(
        Method::Swap,
        format!(
            "the whole node is restored and RabbitMQ {target} reads the snapshot's stores: the files are swapped in (fastest; the broker pauses briefly)"
        ),
    );
    choice.then_replay = logical(manifest);
    if !choice.then_replay.is_empty() {
        choice.reason.push_str(&format!(
            "; then the {} quorum queues and streams the snapshot holds as logical records, which no file swap brings back, are replayed into the running broker",
            choice.then_replay.len()
        ));
    }
    choice
}

/// The quorum queues and streams with messages the snapshot holds as
/// logical records, `(vhost, queue)`.
pub fn logical(manifest: &Manifest) -> Vec<(String, String)> {
    manifest
        .queues
        .iter()
        .filter(|q| q.covered && q.captured_as() == Capture::Logical && q.messages > 0)
        .map(|q| (q.vhost.clone(), q.name.clone()))
        .collect()
}

/// Every check that needs no download, in the order a refusal is most
/// useful: the snapshot, the node, the disk, then the queues.
pub async fn before_download(
    broker: &Broker,
    manifest: &Manifest,
    args: &RestoreSettings,
    data_dir: &Path,
    choice: &Choice,
) -> anyhow::Result<Checks> {
    compatibility(manifest, broker, args, choice.method)?;
    if args.definitions_only {
        return Ok(Checks::default());
    }
    if choice.method == Method::Swap {
        cluster(broker, manifest).await?;
        let dirs: Vec<VhostDir> = manifest.vhosts.iter().map(|v| v.dir.clone()).collect();
        swap::check_same_filesystem(data_dir, &dirs)?;
    } else {
        check_selection(manifest, args)?;
    }
    fetch::check_free_space(crate::staging::parent_of(data_dir)?, manifest)?;
    queue_checks(broker, manifest, args, choice, args.before.is_none()).await
}

/// The method's queue checks: consumers (refused when `refuse_consumers`)
/// and messages the restore would replace.
async fn queue_checks(
    broker: &Broker,
    manifest: &Manifest,
    args: &RestoreSettings,
    choice: &Choice,
    refuse_consumers: bool,
) -> anyhow::Result<Checks> {
    match choice.method {
        Method::Swap => {
            let mut checks = queues(broker, manifest, args, refuse_consumers).await?;
            if !choice.then_replay.is_empty() {
                // The quorum queues and streams outlive the swap: the
                // replay would add to what they hold.
                let on_node = replayed_on_node(broker, &choice.then_replay).await?;
                checks
                    .replaced
                    .extend(holding_refused(broker, args, &on_node)?);
            }
            Ok(checks)
        }
        Method::Replay => replay_queues(broker, manifest, args, refuse_consumers).await,
    }
}

/// The snapshot's queues a replay restores, `(vhost, queue)`: every
/// covered queue with messages that the selection names.
pub fn replayed(manifest: &Manifest, args: &RestoreSettings) -> Vec<(String, String)> {
    manifest
        .queues
        .iter()
        .filter(|q| q.covered && q.messages > 0 && args.selects(&q.vhost, &q.name))
        .map(|q| (q.vhost.clone(), q.name.clone()))
        .collect()
}

/// Refuses `--vhost`/`--queue` naming nothing in the snapshot (exit 2).
fn check_selection(manifest: &Manifest, args: &RestoreSettings) -> anyhow::Result<()> {
    for v in &args.vhosts {
        if !manifest.queues.iter().any(|q| &q.vhost == v) {
            return Err(crate::error::usage(format!(
                "snapshot {} has no queue in vhost {v:?}: `rabbitmq-backup show {}` lists its queues",
                manifest.id, manifest.id
            )));
        }
    }
    crate::selection::check_queues(manifest, &args.vhosts, &args.queues)
}

/// Replay's queue checks: only the replayed queues matter (the rest of the
/// node keeps running, consumers and all). Consumers on them are refused;
/// messages in them too, unless `--replace-messages` or `--append`.
async fn replay_queues(
    broker: &Broker,
    manifest: &Manifest,
    args: &RestoreSettings,
    refuse_consumers: bool,
) -> anyhow::Result<Checks> {
    let on_node = replayed_on_node(broker, &replayed(manifest, args)).await?;
    let mut checks = Checks::default();
    let consumed = with_consumers(&on_node);
    if !consumed.is_empty() {
        let why = format!(
            "consumers are connected to {}: they would take replayed messages before the counts are checked",
            consumed.join(", ")
        );
        if refuse_consumers {
            return Err(refused(format!(
                "{why}; stop them before restoring (for example with --before)"
            )));
        }
        checks.notes.push(format!(
            "{why}; the restore refuses unless --before stops them"
        ));
    }
    checks.replaced = holding_refused(broker, args, &on_node)?;
    Ok(checks)
}

/// The queues of `wanted` on the node, as it reports them.
async fn replayed_on_node(
    broker: &Broker,
    wanted: &[(String, String)],
) -> anyhow::Result<Vec<QueueStatus>> {
    let target = Definitions::parse(broker.export_definitions().await?)?;
    Ok(broker
        .queues(&target.vhosts)
        .await?
        .into_iter()
        .filter(|q| wanted.iter().any(|(v, n)| v == &q.vhost && n == &q.name))
        .collect())
}

/// The replayed queues that hold messages (emptied first, or appended
/// to); refused unless `--replace-messages` or `--append`.
fn holding_refused(
    broker: &Broker,
    args: &RestoreSettings,
    on_node: &[QueueStatus],
) -> anyhow::Result<Vec<QueueOutcome>> {
    let replaced = holding_messages(on_node, args.append);
    refuse_holding(
        &replaced,
        args.replace_messages,
        args.append,
        &broker.identity.name,
    )?;
    Ok(replaced)
}

/// Refuses, before anything changes, a replay into queues of `target` (a
/// node or a cluster) that hold messages, unless `--replace-messages` or
/// `--append`; and `--replace-messages` over a stream that holds messages,
/// as RabbitMQ cannot empty a stream.
pub fn refuse_holding(
    holding: &[QueueOutcome],
    replace_messages: bool,
    append: bool,
    target: &str,
) -> anyhow::Result<()> {
    let streams: Vec<&QueueOutcome> = holding
        .iter()
        .filter(|q| q.queue_type == QueueType::Stream)
        .collect();
    if replace_messages && !streams.is_empty() {
        let streams: Vec<QueueOutcome> = streams.into_iter().cloned().collect();
        return Err(refused(format!(
            "the stream {} on {target} holds messages and RabbitMQ cannot empty a stream, so --replace-messages cannot replace them. Nothing was changed. Delete the stream (the restore declares it again from the definitions), restore without it (--queue), or pass --append",
            self::holding(&streams)
        )));
    }
    if !holding.is_empty() && !replace_messages && !append {
        return Err(refused(format!(
            "the replay would publish into queues that already hold messages: {} on {target}. Nothing was changed. Pass --replace-messages to empty them first, or --append to add the snapshot's messages after theirs",
            self::holding(holding)
        )));
    }
    Ok(())
}

/// The queue checks again, after `--before` ran: consumers are refused now.
pub async fn after_before_hook(
    broker: &Broker,
    manifest: &Manifest,
    args: &RestoreSettings,
    choice: &Choice,
) -> anyhow::Result<Checks> {
    queue_checks(broker, manifest, args, choice, true).await
}

/// `"q" in vhost "v" (n messages), …` for a refusal naming queues that hold
/// messages.
fn holding(queues: &[QueueOutcome]) -> String {
    queues
        .iter()
        .map(|q| {
            format!(
                "{:?} in vhost {:?} ({} messages)",
                q.name,
                q.vhost,
                q.actual.unwrap_or(0)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Consumers on the node's queues (refused when `refuse_consumers`, else a
/// note that `--before` must stop them), and the messages the restore
/// would replace (refused without `--replace-messages`).
async fn queues(
    broker: &Broker,
    manifest: &Manifest,
    args: &RestoreSettings,
    refuse_consumers: bool,
) -> anyhow::Result<Checks> {
    let target = Definitions::parse(broker.export_definitions().await?)?;
    let restored: Vec<String> = manifest
        .vhosts
        .iter()
        .map(|v| v.name.clone())
        .filter(|v| target.vhosts.contains(v))
        .collect();
    let on_node = broker.queues(&target.vhosts).await?;
    let mut checks = Checks::default();
    let consumed = with_consumers(&on_node);
    if !consumed.is_empty() {
        let why = format!(
            "consumers are connected to {}: they would receive restored messages before the checks{}",
            consumed.join(", "),
            if args.exclude.is_some() {
                " and the exclusion"
            } else {
                ""
            }
        );
        if refuse_consumers {
            return Err(refused(format!(
                "{why}; stop them before restoring (for example with --before)"
            )));
        }
        checks.notes.push(format!(
            "{why}; the restore refuses unless --before stops them"
        ));
    }
    checks.replaced = replaced(&on_node, &restored);
    if !checks.replaced.is_empty() && !args.replace_messages {
        return Err(refused(format!(
            "the restore would replace the messages of {} on {}; pass --replace-messages to go on, or purge those queues first",
            holding(&checks.replaced),
            broker.identity.name
        )));
    }
    Ok(checks)
}

fn compatibility(
    manifest: &Manifest,
    broker: &Broker,
    args: &RestoreSettings,
    method: Method,
) -> anyhow::Result<()> {
    let (target, source) = (
        &broker.identity.rabbitmq_version,
        &manifest.node.rabbitmq_version,
    );
    if older(target, source) && !args.force_downgrade {
        return Err(incompatible(format!(
            "snapshot {} comes from RabbitMQ {source} but node {} runs the older {target}; a downgrade can fail to read the data: upgrade the node, or pass --force-downgrade",
            manifest.id, broker.identity.name
        )));
    }
    for version in [source, target] {
        if older(NEWEST_TESTED, version) && !version.starts_with(NEWEST_TESTED) {
            tracing::warn!(
                "RabbitMQ {version} is newer than the newest version this rabbitmq-backup was tested with ({NEWEST_TESTED}.x); check the restored queues' counts in the report"
            );
        }
    }
    if !args.definitions_only && method == Method::Swap {
        check_index_readable(manifest, target, &broker.identity.name)?;
    }
    Ok(())
}

/// The newest RabbitMQ series the tool is tested with (DESIGN §15).
const NEWEST_TESTED: &str = "4.3";

/// The first version that cannot read (nor convert) a version-1 queue index.
const NO_INDEX_V1_FROM: &str = "4.3.0";

/// A queue's index version; manifests written before it was recorded fall
/// back on the source's default (version 2 from RabbitMQ 4.0).
fn index_version(manifest: &Manifest, q: &QueueEntry) -> Option<IndexVersion> {
    if q.dirs.is_empty() {
        return None;
    }
    q.index_version.or_else(|| {
        Some(if older(&manifest.node.rabbitmq_version, "4.0.0") {
            IndexVersion::V1
        } else {
            IndexVersion::V2
        })
    })
}

/// Refuses, before anything changes, a swap that would bring queues back
/// empty: RabbitMQ 4.3+ cannot read a version-1 queue index (DESIGN §2).
pub fn check_index_readable(manifest: &Manifest, target: &str, node: &str) -> anyhow::Result<()> {
    if older(target, NO_INDEX_V1_FROM) {
        return Ok(());
    }
    let unreadable: Vec<String> = manifest
        .queues
        .iter()
        .filter(|q| q.captured_as() == Capture::Files && q.messages > 0)
        .filter(|q| index_version(manifest, q) == Some(IndexVersion::V1))
        .map(|q| {
            format!(
                "{:?} in vhost {:?} ({} messages)",
                q.name, q.vhost, q.messages
            )
        })
        .collect();
    if unreadable.is_empty() {
        return Ok(());
    }
    Err(incompatible(format!(
        "snapshot {} holds queues with a version-1 queue index: {}. Node {node} runs RabbitMQ {target}, which cannot read that index (4.3 dropped it): a swap of the files would bring these queues back empty. Nothing was changed. Restore with `--method replay` (the messages are published instead of the files swapped in), or restore onto RabbitMQ 4.0-4.2 first, which converts the index, and back up from there",
        manifest.id,
        unreadable.join(", ")
    )))
}

/// A cluster member takes only its own snapshot by swap: another node's
/// classic queues may live on other members here, and their messages
/// would be lost.
async fn cluster(broker: &Broker, manifest: &Manifest) -> anyhow::Result<()> {
    let members = broker.cluster_members().await?;
    let node = &broker.identity.name;
    if members.len() > 1 && manifest.node.name != *node {
        return Err(refused(format!(
            "node {node} is a member of a cluster ({}); a snapshot of another node ({}) cannot be swapped into a cluster member, whose queues may live on the other members: restore it onto a lone node, or restore each member from its own snapshot",
            members.join(", "),
            manifest.node.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use crate::restore::report::QueueState;

    fn holding(name: &str, queue_type: QueueType) -> QueueOutcome {
        QueueOutcome {
            vhost: "/".into(),
            name: name.into(),
            queue_type,
            expected: 0,
            actual: Some(7),
            status: QueueState::Replaced,
        }
    }

    #[test]
    fn queues_holding_messages_are_refused_unless_replaced_or_appended_to() {
        let classic = [holding("jobs", QueueType::Classic)];
        let err = refuse_holding(&classic, false, false, "rabbit@a").unwrap_err();
        assert_eq!(crate::error::kind_of(&err), Kind::Refused, "{err}");
        assert!(
            err.to_string()
                .contains("\"jobs\" in vhost \"/\" (7 messages) on rabbit@a"),
            "{err}"
        );
        refuse_holding(&classic, true, false, "rabbit@a").unwrap();
        refuse_holding(&classic, false, true, "rabbit@a").unwrap();
        refuse_holding(&[], false, false, "rabbit@a").unwrap();
        // A stream cannot be emptied: --replace-messages is refused, --append is not.
        let stream = [holding("events", QueueType::Stream), classic[0].clone()];
        let err = refuse_holding(&stream, true, false, "the target cluster").unwrap_err();
        assert_eq!(crate::error::kind_of(&err), Kind::Refused, "{err}");
        assert!(err.to_string().contains("the stream \"events\""), "{err}");
        assert!(err.to_string().contains("cannot empty a stream"), "{err}");
        refuse_holding(&stream, false, true, "the target cluster").unwrap();
    }

    fn manifest(source: &str, index: Option<IndexVersion>, messages: u64) -> Manifest {
        let mut m = crate::archive::manifest::tests::sample();
        m.node.rabbitmq_version = source.into();
        m.queues[0].index_version = index;
        m.queues[0].messages = messages;
        m
    }

    #[test]
    fn version_1_queues_onto_4_3_are_refused_up_front() {
        let m = manifest("3.10.8", Some(IndexVersion::V1), 3);
        let err = check_index_readable(&m, "4.3.6", "rabbit@new").unwrap_err();
        assert_eq!(crate::error::kind_of(&err), Kind::Incompatible);
        let text = err.to_string();
        for part in [
            "\"oro.default\"",
            "3 messages",
            "4.3.6",
            "--method replay",
            "Nothing was changed",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        // 4.0-4.2 convert the index; version 2 and empty queues are fine.
        check_index_readable(&m, "4.0.5", "n").unwrap();
        check_index_readable(&m, "4.2.9", "n").unwrap();
        check_index_readable(&manifest("3.10.8", Some(IndexVersion::V2), 3), "4.3.6", "n").unwrap();
        check_index_readable(&manifest("3.10.8", Some(IndexVersion::V1), 0), "4.3.6", "n").unwrap();
        // Manifests from before index_version: the source's default decides.
        check_index_readable(&manifest("3.10.8", None, 3), "4.3.6", "n").unwrap_err();
        check_index_readable(&manifest("4.0.5", None, 3), "4.3.6", "n").unwrap();
    }
}
