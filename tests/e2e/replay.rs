//! Restore by replay (DESIGN §6): the snapshot's messages published into a
//! running broker, checked with a real AMQP client — every message, in
//! order, with its routing key, properties, headers and priority.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::amqp::{Msg, drain, hold_consumer, publish};
use crate::harness::fixtures::{classic_messages, oro_messages, priority_order, topology};
use crate::harness::rabbit::RabbitNode;
use crate::harness::tool::Tool;
use crate::harness::versions::Version;
use crate::restore::assert_same_messages;
use crate::versions::{backup, loaded};

fn repo_of(dir: &tempfile::TempDir) -> &str {
    dir.path().to_str().unwrap()
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    report["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["name"].as_str().unwrap().to_string(),
                q["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_3_10_backup_is_restored_onto_4_3_by_auto_with_every_message() {
    let source = loaded(Version::V3_10);
    let from = source.name.clone();
    let repo = tempfile::tempdir().unwrap();
    backup(&source, &repo);
    drop(source);
    let target = RabbitNode::start_version(Version::V4_3);
    let tool = Tool::new().with(target.env());
    let args = [
        "restore",
        "--from-node",
        &from,
        "--repo",
        repo_of(&repo),
        "--json",
    ];

    // A dry run names the method and why.
    let dry = tool.run(&[&args[..], &["--dry-run"]].concat()).ok().json();
    assert_eq!(dry["method"], "replay", "{dry}");
    assert!(
        dry["method_reason"].as_str().unwrap().contains("version-1"),
        "{dry}"
    );

    let report = tool.run(&args).ok().json();
    assert_eq!(report["method"], "replay", "{report}");
    assert_eq!(report["pause_ms"], 0, "the broker never stopped");
    let mut s = statuses(&report);
    s.sort();
    assert_eq!(
        s,
        vec![
            ("classic".to_string(), "ok".to_string()),
            ("oro.default".to_string(), "ok".to_string()),
            ("quorum".to_string(), "ok".to_string())
        ],
        "{report}"
    );
    // The quorum queue's logical records are replayed too.
    assert_same_messages(
        &drain(&target, "/", "quorum"),
        &classic_messages("quorum", 5),
        "3.10 onto 4.3: quorum (logical records)",
    );
    assert_same_messages(
        &drain(&target, "/", "classic"),
        &classic_messages("classic", 30),
        "3.10 onto 4.3: classic",
    );
    assert_same_messages(
        &drain(&target, "oro", "oro.default"),
        &priority_order(&oro_messages(40)),
        "3.10 onto 4.3: oro.default (priority, topic routing keys)",
    );
    assert!(target.work_areas().is_empty(), "{:?}", target.work_areas());
    let exchanges = target.ctl(&["list_exchanges", "-q", "-p", "/", "name"]);
    assert!(
        !exchanges.contains("rabbitmq-backup.replay"),
        "the replay's exchanges are removed: {exchanges}"
    );
}

/// The host's 3.10 with a classic queue of 30 messages, backed up.
fn snapshot_3_10() -> (RabbitNode, tempfile::TempDir) {
    let source = RabbitNode::start();
    source.import_definitions(&topology());
    publish(&source, "/", "", &classic_messages("classic", 30));
    publish(&source, "oro", "oro.default", &oro_messages(40));
    let repo = tempfile::tempdir().unwrap();
    Tool::new()
        .with(source.env())
        .run(&["backup", "--repo", repo_of(&repo)])
        .ok();
    (source, repo)
}

#[test]
fn replay_onto_the_same_version_one_queue_of_a_busy_node_and_into_a_quorum_queue() {
    let (source, repo) = snapshot_3_10();
    let from = source.name.clone();
    drop(source);
    let target = RabbitNode::start();
    // The target declares "classic" as a quorum queue, and is busy: a
    // queue with messages and a consumer the restore must not touch.
    target.import_definitions(&json!({
        "queues": [
            {"name": "classic", "vhost": "/", "durable": true, "auto_delete": false,
             "arguments": {"x-queue-type": "quorum"}},
            {"name": "busy", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}}
        ]
    }));
    let busy = classic_messages("busy", 7);
    publish(&target, "/", "", &busy);
    let consumer_queue = "consumed";
    target.import_definitions(&json!({"queues": [{"name": consumer_queue, "vhost": "/",
        "durable": true, "auto_delete": false, "arguments": {}}]}));
    let _consumer = hold_consumer(&target, "/", consumer_queue);
    let tool = Tool::new().with(target.env());
    let report = tool
        .run(&[
            "restore",
            "--from-node",
            &from,
            "--repo",
            repo_of(&repo),
            "--queue",
            "classic",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(report["method"], "replay", "{report}");
    assert!(
        report["method_reason"].as_str().unwrap().contains("subset"),
        "{report}"
    );
    assert_eq!(report["pause_ms"], 0);
    assert_eq!(statuses(&report), vec![("classic".into(), "ok".into())]);
    // The consumer elsewhere was never cut off: the node never stopped.
    let consumers = target.ctl(&["list_queues", "-q", "name", "consumers", "type"]);
    let line = consumers
        .lines()
        .find(|l| l.starts_with(consumer_queue))
        .unwrap();
    assert!(line.contains('1'), "{consumers}");
    let classic_line = consumers
        .lines()
        .find(|l| l.starts_with("classic"))
        .unwrap();
    assert!(classic_line.contains("quorum"), "{consumers}");
    // Only the selected queue was restored.
    assert_eq!(
        target
            .counts("oro")
            .get("oro.default")
            .copied()
            .unwrap_or(0),
        0
    );
    assert_same_messages(&drain(&target, "/", "busy"), &busy, "busy queue untouched");
    assert_same_messages(
        &drain(&target, "/", "classic"),
        &classic_messages("classic", 30),
        "replay into a quorum queue",
    );

    // The same version, the whole snapshot, by replay (once the drain's
    // consumer has left the quorum queue).
    target.wait_no_consumers("/", "classic");
    let report = tool
        .run(&[
            "restore",
            "--from-node",
            &from,
            "--repo",
            repo_of(&repo),
            "--method",
            "replay",
            "--json",
        ])
        .ok()
        .json();
    let mut s = statuses(&report);
    s.sort();
    assert_eq!(
        s,
        vec![
            ("classic".into(), "ok".into()),
            ("oro.default".into(), "ok".into())
        ]
    );
    assert_same_messages(
        &drain(&target, "oro", "oro.default"),
        &priority_order(&oro_messages(40)),
        "replay onto 3.10: priority queue",
    );
    assert_same_messages(
        &drain(&target, "/", "classic"),
        &classic_messages("classic", 30),
        "replay onto 3.10: classic",
    );
}

#[test]
fn non_empty_target_queues_are_refused_unless_replaced_or_appended() {
    let (source, repo) = snapshot_3_10();
    let from = source.name.clone();
    let tool = Tool::new().with(source.env());
    // The source itself is the target: "classic" still holds its 30.
    let args = [
        "restore",
        "--from-node",
        &from,
        "--repo",
        repo_of(&repo),
        "--queue",
        "classic",
        "--json",
    ];
    let before = source.export_definitions();
    let run = tool.run(&args);
    run.expect_code(4);
    for part in [
        "\"classic\"",
        "30 messages",
        "--replace-messages",
        "--append",
        "Nothing was changed",
    ] {
        assert!(run.stderr.contains(part), "{part}: {}", run.stderr);
    }
    assert_eq!(source.export_definitions(), before);
    assert_eq!(source.counts("/")["classic"], 30);
    assert!(source.work_areas().is_empty());
    // --swap cannot restore a subset.
    tool.run(&[&args[..], &["--method", "swap"]].concat())
        .expect_code(2);

    // --append adds the snapshot's messages after the queue's own.
    let extra = classic_messages("classic", 33)[30..].to_vec();
    drain(&source, "/", "classic");
    publish(&source, "/", "", &extra);
    let report = tool.run(&[&args[..], &["--append"]].concat()).ok().json();
    assert_eq!(statuses(&report), vec![("classic".into(), "ok".into())]);
    let expected: Vec<Msg> = extra
        .iter()
        .chain(classic_messages("classic", 30).iter())
        .cloned()
        .collect();
    assert_same_messages(&drain(&source, "/", "classic"), &expected, "--append");

    // --replace-messages empties the queue first.
    publish(&source, "/", "", &extra);
    tool.run(&[&args[..], &["--replace-messages"]].concat())
        .ok();
    assert_same_messages(
        &drain(&source, "/", "classic"),
        &classic_messages("classic", 30),
        "--replace-messages",
    );
}

/// Checks `found` is `expected` with at most one stretch replayed twice
/// (a resumed replay), of at most `window` messages; returns how many.
pub fn at_most_window_duplicated(
    found: &[Msg],
    expected: &[Msg],
    window: usize,
    what: &str,
) -> usize {
    let mut k = 0;
    let mut rewinds = 0;
    let mut duplicates = 0;
    for (i, m) in found.iter().enumerate() {
        if k < expected.len() && *m == expected[k] {
            k += 1;
            continue;
        }
        // A rewind: the message is an earlier one, published again.
        let back = expected[..k]
            .iter()
            .rposition(|e| e == m)
            .unwrap_or_else(|| panic!("{what}: message {i} is not the snapshot's next one"));
        rewinds += 1;
        duplicates += k - back;
        k = back + 1;
    }
    assert_eq!(k, expected.len(), "{what}: a message is missing");
    assert!(rewinds <= 1, "{what}: {rewinds} rewinds");
    assert!(
        duplicates <= window,
        "{what}: {duplicates} duplicates > window {window}"
    );
    duplicates
}

#[test]
fn a_replay_killed_at_every_journal_step_is_finished_by_resume() {
    let (source, repo) = snapshot_3_10();
    let from = source.name.clone();
    drop(source);
    let target = RabbitNode::start();
    let window = 12;
    let tool = Tool::new().with(target.env()).var(
        "RABBITMQ_BACKUP_FAILPOINT",
        &format!("replay:window={window}"),
    );
    let restore = [
        "restore",
        "--from-node",
        &from,
        "--repo",
        repo_of(&repo),
        "--method",
        "replay",
        "--replace-messages",
    ];
    let expected = classic_messages("classic", 30);
    let prio = priority_order(&oro_messages(40));
    let (run, points) = tool.record(&restore);
    run.ok();
    drain(&target, "/", "classic");
    drain(&target, "oro", "oro.default");
    let points: Vec<&String> = points
        .iter()
        .filter(|p| {
            [
                "replay:",
                "restore:replay",
                "restore:journal:replaying",
                "restore:journal:cleaning",
            ]
            .iter()
            .any(|prefix| p.starts_with(prefix))
        })
        .collect();
    assert!(points.len() >= 10, "{points:?}");
    let mut duplicated = 0;
    for point in &points {
        // Half of the queues' messages are already there: --replace-messages.
        publish(&target, "/", "", &expected[..5]);
        tool.kill_at(point, &restore, Duration::from_secs(120));
        tool.run(&["restore", "--resume", "--repo", repo_of(&repo)])
            .ok();
        assert!(target.work_areas().is_empty(), "{point}");
        if point.starts_with("restore:journal:replaying") {
            // Killed before the replay was journalled: nothing was touched,
            // and --resume leaves the node as it was.
            assert_same_messages(&drain(&target, "/", "classic"), &expected[..5], point);
            assert_eq!(target.counts("oro")["oro.default"], 0, "{point}");
            continue;
        }
        duplicated += at_most_window_duplicated(
            &drain(&target, "/", "classic"),
            &expected,
            window,
            &format!("killed at {point}: classic"),
        );
        // A priority queue sorts what is published twice into its level.
        let found = drain(&target, "oro", "oro.default");
        assert!(
            found.len() <= prio.len() + window,
            "{point}: {}",
            found.len()
        );
        let mut unique: Vec<Msg> = Vec::new();
        for m in found {
            if !unique.contains(&m) {
                unique.push(m);
            }
        }
        assert_same_messages(&unique, &prio, &format!("killed at {point}: oro.default"));
    }
    // Some kills fell between confirms and their journal write.
    assert!(duplicated > 0);
}

/// The management API answers before a booting broker has started its
/// listeners (they start last): a replay onto a node in that state waits
/// for the boot to finish instead of failing for want of a listener. The
/// node is put back in that state as its boot leaves it (listener closed,
/// boot state `core_started`) and its boot's end is played 3 s later.
#[test]
fn a_replay_onto_a_node_still_booting_waits_for_its_listener() {
    let (source, repo) = snapshot_3_10();
    let from = source.name.clone();
    drop(source);
    let target = RabbitNode::start();
    let listener = format!("{{\"127.0.0.1\", {}}}", target.amqp_port);
    target.ctl(&[
        "eval",
        &format!(
            "ok = rabbit_networking:stop_tcp_listener({listener}), \
             rabbit_boot_state:set(core_started), \
             spawn(fun() -> timer:sleep(3000), \
                 ok = rabbit_networking:start_tcp_listener({listener}, 10), \
                 rabbit_boot_state:set(ready) end), ok."
        ),
    ]);
    assert!(
        !target.amqp_listening(),
        "the AMQP listener should be closed while the boot is played"
    );
    let run = Tool::new().with(target.env()).run(&[
        "restore",
        "--from-node",
        &from,
        "--repo",
        repo_of(&repo),
        "--method",
        "replay",
        "--queue",
        "classic",
    ]);
    run.ok();
    assert!(
        run.stderr
            .contains("has no AMQP listener yet; waiting for its boot to finish"),
        "{}",
        run.stderr
    );
    assert_same_messages(
        &drain(&target, "/", "classic"),
        &classic_messages("classic", 30),
        "replay onto a node that was still booting",
    );
}
