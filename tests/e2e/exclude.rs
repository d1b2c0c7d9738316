//! Excluding messages by routing key (§8), on a running node and after a
//! restore; interruption loses nothing; bad input moves nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::backup::loaded_node;
use crate::harness::amqp::{Msg, drain, hold_consumer, publish};
use crate::harness::fixtures::{classic_messages, oro_messages, priority_order, topology};
use crate::harness::rabbit::RabbitNode;
use crate::harness::tool::Tool;
use crate::restore::assert_same_messages;

/// `exclude` of the e-mail messages from the Oro queue.
const EXCLUDE_EMAIL: &[&str] = &[
    "exclude",
    "--vhost",
    "oro",
    "--queue",
    "oro.default",
    "--routing-key",
    "oro.email.*",
];

fn is_email(m: &Msg) -> bool {
    m.routing_key.starts_with("oro.email.")
}

fn oro_node() -> RabbitNode {
    let node = RabbitNode::start();
    node.import_definitions(&topology());
    node
}

#[test]
fn exclude_moves_matching_messages_and_keeps_the_others_in_order() {
    let node = oro_node();
    let published = oro_messages(60);
    publish(&node, "oro", "oro.default", &published);
    let tool = Tool::new().with(node.env());

    let run = tool.run(&[EXCLUDE_EMAIL, &["--json"]].concat());
    let outcome = run.ok().json();
    assert_eq!(outcome["excluded"], 20);
    assert_eq!(outcome["kept"], 40);
    assert_eq!(outcome["to_queue"], "oro.default.excluded");

    // The priority queue delivers by priority, then in publication order.
    let order = priority_order(&published);
    let kept: Vec<Msg> = order.iter().filter(|m| !is_email(m)).cloned().collect();
    let excluded: Vec<Msg> = order.iter().filter(|m| is_email(m)).cloned().collect();
    assert_same_messages(&drain(&node, "oro", "oro.default"), &kept, "kept");
    assert_same_messages(
        &drain(&node, "oro", "oro.default.excluded"),
        &excluded,
        "excluded",
    );

    // --drop deletes matches; several globs; a custom destination otherwise.
    publish(&node, "oro", "oro.default", &published);
    let run = tool.run(&[
        "exclude",
        "--vhost",
        "oro",
        "--queue",
        "oro.default",
        "--routing-key",
        "oro.email.*",
        "--routing-key",
        "oro.integration.?ync",
        "--drop",
    ]);
    assert!(
        run.ok().stdout.contains("dropped 40 messages, kept 20"),
        "{}",
        run.stdout
    );
    let search: Vec<Msg> = order
        .iter()
        .filter(|m| m.routing_key == "oro.search.reindex")
        .cloned()
        .collect();
    assert_same_messages(&drain(&node, "oro", "oro.default"), &search, "after --drop");
    assert!(
        node.counts("oro")
            .get("oro.default.excluded")
            .is_some_and(|n| *n == 0)
    );
}

#[test]
fn exclude_works_on_quorum_queues() {
    let node = oro_node();
    node.import_definitions(&json!({
        "exchanges": [{"name": "events", "vhost": "/", "type": "topic", "durable": true,
                       "auto_delete": false, "internal": false, "arguments": {}}],
        "bindings": [{"source": "events", "vhost": "/", "destination": "quorum",
                      "destination_type": "queue", "routing_key": "#", "arguments": {}}]
    }));
    let published: Vec<Msg> = oro_messages(30);
    publish(&node, "/", "events", &published);
    let run = Tool::new().with(node.env()).run(&[
        "exclude",
        "--vhost",
        "/",
        "--queue",
        "quorum",
        "--routing-key",
        "oro.email.*",
        "--to-queue",
        "mail",
    ]);
    run.ok();
    let kept: Vec<Msg> = published.iter().filter(|m| !is_email(m)).cloned().collect();
    let excluded: Vec<Msg> = published.iter().filter(|m| is_email(m)).cloned().collect();
    assert_same_messages(&drain(&node, "/", "quorum"), &kept, "quorum kept");
    assert_same_messages(&drain(&node, "/", "mail"), &excluded, "moved to --to-queue");
}

#[test]
fn restore_excludes_in_every_restored_queue() {
    let source = loaded_node();
    let repo = tempfile::tempdir().unwrap();
    let repo = repo.path().to_str().unwrap().to_string();
    Tool::new()
        .with(source.env())
        .run(&["backup", "--repo", &repo])
        .ok();
    let from = source.name.clone();
    drop(source);

    let target = RabbitNode::start();
    let run = Tool::new().with(target.env()).run(&[
        "restore",
        "--repo",
        &repo,
        "--from-node",
        &from,
        "--exclude-routing-key",
        "oro.email.*",
        "--json",
    ]);
    let report = run.ok().json();
    let excluded: BTreeMap<String, (u64, u64)> = report["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["queue"].as_str().unwrap().to_string(),
                (e["excluded"].as_u64().unwrap(), e["kept"].as_u64().unwrap()),
            )
        })
        .collect();
    assert_eq!(excluded["oro.default"], (14, 26));
    assert_eq!(excluded["classic"], (0, 30));
    let order = priority_order(&oro_messages(40));
    let kept: Vec<Msg> = order.iter().filter(|m| !is_email(m)).cloned().collect();
    let mail: Vec<Msg> = order.iter().filter(|m| is_email(m)).cloned().collect();
    assert_same_messages(
        &drain(&target, "oro", "oro.default"),
        &kept,
        "restored, kept",
    );
    assert_same_messages(
        &drain(&target, "oro", "oro.default.excluded"),
        &mail,
        "restored, excluded",
    );
    assert_same_messages(
        &drain(&target, "/", "classic"),
        &classic_messages("classic", 30),
        "untouched",
    );
    assert!(
        !target.counts("/").contains_key("classic.excluded"),
        "no empty companion queue"
    );
}

/// Runs exclude with a `wait` failpoint, kills it when the point is reached.
fn ids(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect()
}

#[test]
fn a_killed_exclude_loses_no_message() {
    let node = oro_node();
    let published = oro_messages(1000);
    let all: std::collections::BTreeSet<String> = ids(&published).into_iter().collect();
    for point in ["exclude:before-ack", "exclude:after-batch"] {
        publish(&node, "oro", "oro.default", &published);
        Tool::new()
            .with(node.env())
            .kill_at(point, EXCLUDE_EMAIL, Duration::from_secs(120));
        // The broker requeues what the dead connection had not acknowledged.
        let mut seen = ids(&drain(&node, "oro", "oro.default"));
        seen.extend(ids(&drain(&node, "oro", "oro.default.excluded")));
        let unique: std::collections::BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique, all, "{point}: every message is still there");
        if point == "exclude:before-ack" {
            // Killed between confirms and ack: the first batch exists twice.
            assert!(seen.len() > all.len(), "{point}: duplicates, not losses");
        } else {
            assert_eq!(
                seen.len(),
                all.len(),
                "{point}: acknowledged batches are not duplicated"
            );
        }
    }
}

#[test]
fn bad_exclude_input_is_refused_and_nothing_moves() {
    let node = oro_node();
    publish(&node, "oro", "oro.default", &oro_messages(10));
    let tool = Tool::new().with(node.env());
    let base = ["exclude", "--routing-key", "oro.email.*"];
    let cases: [(&[&str], i32, &str); 4] = [
        (
            &["--vhost", "nope", "--queue", "oro.default"],
            2,
            "\"nope\"",
        ),
        (&["--vhost", "oro", "--queue", "missing"], 2, "\"missing\""),
        (
            &[
                "--vhost",
                "oro",
                "--queue",
                "oro.default",
                "--routing-key",
                "oro.[email",
            ],
            2,
            "oro.[email",
        ),
        (
            &[
                "--vhost",
                "oro",
                "--queue",
                "oro.default",
                "--to-queue",
                "oro.default",
            ],
            2,
            "--to-queue",
        ),
    ];
    for (args, code, named) in cases {
        let mut all: Vec<&str> = base.to_vec();
        all.extend_from_slice(args);
        let run = tool.run(&all);
        run.expect_code(code);
        assert!(run.stderr.contains(named), "{args:?}: {}", run.stderr);
    }
    {
        let _consumer = hold_consumer(&node, "oro", "oro.default");
        let run = tool.run(EXCLUDE_EMAIL);
        run.expect_code(4);
        assert!(run.stderr.contains("consumers"), "{}", run.stderr);
    }
    // Ten messages, the consumer held one unacknowledged and gave it back.
    assert_eq!(node.counts("oro")["oro.default"], 10);
    assert!(!node.counts("oro").contains_key("oro.default.excluded"));
}
