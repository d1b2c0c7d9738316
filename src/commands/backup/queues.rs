//! Which queues a backup covers, and what it refuses to back up: the
//! manifest's queue list, and the consumers and losses a stop forbids.

use crate::archive::manifest::{Capture, Caveat, QueueEntry};
use crate::error::refused;
use crate::output::count;
use crate::rabbit::ctl::QueueStatus;
use crate::rabbit::datadir::QueueDir;
use crate::rabbit::definitions::Definitions;
use crate::settings::BackupSettings;

/// Refuses what the procedure forbids: consumers connected, and (for a stop)
/// messages a stop would lose.
pub(super) fn safety_checks(queues: &[QueueStatus], args: &BackupSettings) -> anyhow::Result<()> {
    let consumed = crate::rabbit::ctl::with_consumers(queues);
    if !consumed.is_empty() && !args.allow_consumers {
        return Err(refused(format!(
            "consumers are connected to {}: stop them first (for example with --before), or pass --allow-consumers",
            consumed.join(", ")
        )));
    }
    if args.live || args.allow_transient_loss {
        return Ok(());
    }
    let lost: Vec<String> = queues
        .iter()
        .filter_map(|q| {
            if !q.queue_type.is_classic() || q.messages == 0 {
                return None;
            }
            if !q.durable {
                return Some(format!(
                    "non-durable queue {:?} in vhost {:?} ({})",
                    q.name,
                    q.vhost,
                    count(q.messages, "message")
                ));
            }
            let transient = q
                .messages
                .saturating_sub(q.messages_persistent.unwrap_or(q.messages));
            (transient > 0).then(|| {
                format!(
                    "{transient} non-persistent messages in queue {:?} in vhost {:?}",
                    q.name, q.vhost
                )
            })
        })
        .collect();
    if !lost.is_empty() {
        return Err(refused(format!(
            "stopping the broker would lose {}: use --live, or pass --allow-transient-loss",
            lost.join(", ")
        )));
    }
    Ok(())
}

/// Builds the manifest's queue list: every queue of this node, its
/// directories and their index version, whether the archive covers its
/// messages (durable classic queues), why its restored count may be lower;
/// then the queues living on other cluster members, never covered.
pub(super) fn queue_entries(
    here: &[QueueStatus],
    elsewhere: &[(QueueStatus, String)],
    dirs: &[QueueDir],
    definitions: &Definitions,
    args: &BackupSettings,
) -> Vec<QueueEntry> {
    let local = here.iter().map(|q| {
        let covered = q.queue_type.is_classic() && q.durable;
        let own: Vec<&QueueDir> = dirs
            .iter()
            .filter(|d| d.vhost == q.vhost && d.queue == q.name)
            .collect();
        let ttl = q.message_ttl
            || q.policy.as_ref().is_some_and(|p| {
                definitions
                    .ttl_policies
                    .contains(&(q.vhost.clone(), p.clone()))
            });
        let caveats = [
            (ttl, Caveat::Ttl),
            (q.consumers > 0, Caveat::Consumers),
            (
                args.allow_transient_loss && q.messages_persistent.is_some_and(|p| p < q.messages),
                Caveat::Transient,
            ),
        ]
        .into_iter()
        .filter_map(|(applies, caveat)| applies.then_some(caveat))
        .collect();
        QueueEntry {
            vhost: q.vhost.clone(),
            name: q.name.clone(),
            queue_type: q.queue_type.clone(),
            durable: q.durable,
            messages: q.messages,
            covered,
            dirs: own.iter().map(|d| d.dir.clone()).collect(),
            capture: Some(if covered {
                Capture::Files
            } else {
                Capture::None
            }),
            // The oldest level decides what a target must be able to read.
            index_version: own.iter().map(|d| d.index).min(),
            caveats,
            home_node: None,
        }
    });
    let remote = elsewhere.iter().map(|(q, home)| QueueEntry {
        vhost: q.vhost.clone(),
        name: q.name.clone(),
        queue_type: q.queue_type.clone(),
        durable: q.durable,
        messages: q.messages,
        covered: false,
        dirs: Vec::new(),
        capture: Some(Capture::None),
        index_version: None,
        caveats: Vec::new(),
        home_node: Some(home.clone()),
    });
    local.chain(remote).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::manifest::IndexVersion;
    use crate::error::Kind;

    fn q(
        name: &str,
        kind: &str,
        durable: bool,
        messages: u64,
        persistent: Option<u64>,
        consumers: u64,
    ) -> QueueStatus {
        QueueStatus {
            vhost: "/".into(),
            name: name.into(),
            queue_type: kind.into(),
            durable,
            messages,
            messages_persistent: persistent,
            consumers,
            policy: None,
            message_ttl: false,
        }
    }

    fn args() -> BackupSettings {
        BackupSettings::new(&Default::default()).unwrap()
    }

    #[test]
    fn consumers_are_refused_unless_allowed() {
        let queues = [q("a", "classic", true, 1, Some(1), 2)];
        let err = safety_checks(&queues, &args()).unwrap_err();
        assert_eq!(crate::error::kind_of(&err), Kind::Refused);
        assert!(err.to_string().contains("\"a\""), "{err}");
        let mut allowed = args();
        allowed.allow_consumers = true;
        safety_checks(&queues, &allowed).unwrap();
    }

    #[test]
    fn a_stop_that_loses_messages_is_refused() {
        for queues in [
            vec![q("t", "classic", true, 5, Some(3), 0)],
            vec![q("nd", "classic", false, 1, Some(0), 0)],
        ] {
            let err = safety_checks(&queues, &args()).unwrap_err();
            assert_eq!(crate::error::kind_of(&err), Kind::Refused, "{err}");
        }
        let mut live = args();
        live.live = true;
        safety_checks(&[q("t", "classic", true, 5, Some(3), 0)], &live).unwrap();
        // Quorum queues keep their messages across a stop.
        safety_checks(&[q("qq", "quorum", true, 5, None, 0)], &args()).unwrap();
    }

    #[test]
    fn coverage_by_type() {
        let queues = [
            q("c", "classic", true, 1, Some(1), 0),
            q("qq", "quorum", true, 2, None, 0),
        ];
        let dir = |name: &str, priority, index| QueueDir {
            vhost: "/".into(),
            queue: "c".into(),
            priority,
            index,
            dir: crate::rabbit::datadir::QueuePath::parse(&format!(
                "msg_stores/vhosts/V/queues/{name}"
            ))
            .unwrap(),
        };
        let dirs = [
            dir("X", Some(0), IndexVersion::V2),
            dir("Y", Some(1), IndexVersion::V1),
        ];
        let defs = Definitions::parse(b"{}".to_vec()).unwrap();
        let elsewhere = [(
            q("remote", "classic", true, 3, Some(3), 0),
            "rabbit@b".into(),
        )];
        let entries = queue_entries(&queues, &elsewhere, &dirs, &defs, &args());
        assert!(entries[0].covered);
        assert_eq!(
            entries[0]
                .dirs
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>(),
            vec![
                "msg_stores/vhosts/V/queues/X",
                "msg_stores/vhosts/V/queues/Y"
            ]
        );
        assert_eq!(entries[0].captured_as(), Capture::Files);
        assert_eq!(entries[0].index_version, Some(IndexVersion::V1));
        assert!(!entries[1].covered);
        assert_eq!(entries[1].captured_as(), Capture::None);
        assert_eq!(entries[1].index_version, None);
        // A queue homed on another member: listed, never covered.
        assert!(!entries[2].covered);
        assert_eq!(entries[2].home_node.as_deref(), Some("rabbit@b"));
    }

    #[test]
    fn the_manifest_records_expected_shortfalls() {
        let mut ttl = q("ttl", "classic", true, 4, Some(4), 0);
        ttl.policy = Some("expire".into());
        let mut own_ttl = q("own", "classic", true, 4, Some(4), 0);
        own_ttl.message_ttl = true;
        let queues = [
            ttl,
            own_ttl,
            q("consumed", "classic", true, 4, Some(4), 1),
            q("transient", "classic", true, 4, Some(1), 0),
            q("plain", "classic", true, 4, Some(4), 0),
        ];
        let defs = Definitions::parse(
            br#"{"policies":[{"vhost":"/","name":"expire","definition":{"message-ttl":1000}}]}"#
                .to_vec(),
        )
        .unwrap();
        let mut allow = args();
        allow.allow_transient_loss = true;
        let caveats: Vec<Vec<Caveat>> = queue_entries(&queues, &[], &[], &defs, &allow)
            .into_iter()
            .map(|e| e.caveats)
            .collect();
        assert_eq!(
            caveats,
            vec![
                vec![Caveat::Ttl],
                vec![Caveat::Ttl],
                vec![Caveat::Consumers],
                vec![Caveat::Transient],
                vec![]
            ]
        );
    }
}
