//! Restores: onto a new node with another name, onto the same node,
//! refusals before the node is touched, and rollback after `stop_app`.

use serde_json::Value;

use crate::backup::loaded_node;
use crate::harness::amqp::{Msg, drain, exact_count, publish};
use crate::harness::fixtures::{classic_messages, oro_messages, priority_order};
use crate::harness::garage::garage;
use crate::harness::rabbit::RabbitNode;
use crate::harness::tool::Tool;

/// Message-for-message equality with a readable failure.
#[track_caller]
pub fn assert_same_messages(actual: &[Msg], expected: &[Msg], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: number of messages");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(
            a.routing_key, e.routing_key,
            "{what}: routing key of message {i}"
        );
        assert_eq!(
            a.properties, e.properties,
            "{what}: properties of message {i}"
        );
        assert!(a.body == e.body, "{what}: body of message {i} differs");
    }
}

fn names(defs: &Value, key: &str, field: &str) -> Vec<String> {
    defs[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[field].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn restore_onto_a_new_node_with_another_name_brings_every_message_back() {
    let source = loaded_node();
    let g = garage();
    let bucket = g.bucket();
    let repo = format!("s3://{bucket}/dr");
    Tool::new()
        .with(source.env())
        .with(g.env())
        .run(&["backup", "--repo", &repo])
        .ok();
    let source_name = source.name.clone();
    drop(source); // the old host is gone

    let target = RabbitNode::start();
    assert_ne!(target.name, source_name);
    let tool = Tool::new().with(target.env()).with(g.env());
    let run = tool.run(&[
        "restore",
        "latest",
        "--from-node",
        &source_name,
        "--repo",
        &repo,
        "--json",
    ]);
    let report = run.ok().json();
    assert_eq!(report["from_node"], source_name.as_str());
    assert_eq!(report["node"], target.name.as_str());
    // auto swaps the classic stores in, then replays the quorum queue's
    // logical records (which no swap brings back), and says so.
    assert_eq!(report["method"], "swap+replay", "{report}");
    // A new node lacks the definitions: they were imported.
    assert_eq!(report["definitions_imported"], true, "{report}");
    assert_eq!(report["definitions_already_held"], false, "{report}");
    assert!(
        report["method_reason"]
            .as_str()
            .unwrap()
            .contains("logical records"),
        "{report}"
    );
    let mut statuses: Vec<(String, String)> = report["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["name"].as_str().unwrap().to_string(),
                q["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [("classic", "ok"), ("oro.default", "ok"), ("quorum", "ok")]
            .map(|(n, s)| (n.to_string(), s.to_string())),
        "every queue's count is checked: {report}"
    );
    assert_eq!(
        report["uncovered_queues"],
        serde_json::json!([]),
        "{report}"
    );
    assert!(run.stderr.contains("pause"), "{}", run.stderr);

    // Byte for byte, in order, with routing keys, headers and priorities.
    assert_same_messages(
        &drain(&target, "/", "classic"),
        &classic_messages("classic", 30),
        "classic",
    );
    assert_same_messages(
        &drain(&target, "oro", "oro.default"),
        &priority_order(&oro_messages(40)),
        "oro.default (priority)",
    );
    assert_same_messages(
        &drain(&target, "/", "quorum"),
        &classic_messages("quorum", 5),
        "quorum (logical records, replayed after the swap)",
    );

    // A dry run predicts the same; `--method swap` alone leaves the quorum
    // queue out and names the command that replays it.
    let id = report["snapshot"].as_str().unwrap();
    let args = ["restore", id, "--from-node", &source_name, "--repo", &repo];
    let dry = tool
        .run(&[&args[..], &["--dry-run", "--json"]].concat())
        .ok()
        .json();
    assert_eq!(dry["method"], "swap+replay", "{dry}");
    let planned = dry["queues"].as_array().unwrap();
    assert!(
        planned
            .iter()
            .any(|q| q["name"] == "quorum" && q["status"] == "planned"),
        "{dry}"
    );
    let swap = tool
        .run(&[&args[..], &["--dry-run", "--method", "swap", "--json"]].concat())
        .ok()
        .json();
    assert_eq!(swap["method"], "swap", "{swap}");
    let uncovered = swap["uncovered_queues"].as_array().unwrap();
    assert_eq!(uncovered.len(), 1, "{swap}");
    assert_eq!(uncovered[0]["name"], "quorum");
    assert_eq!(uncovered[0]["expected"], 5);
    assert_eq!(uncovered[0]["status"], "logical-records");
    let human = tool.run(&[&args[..], &["--dry-run", "--method", "swap"]].concat());
    assert!(
        human.ok().stdout.contains("--method replay --vhost"),
        "{}",
        human.stdout
    );

    // Definitions: users, vhosts, policies, exchanges, bindings.
    let defs = target.export_definitions();
    assert!(names(&defs, "users", "name").contains(&"oro".to_string()));
    assert!(names(&defs, "vhosts", "name").contains(&"oro".to_string()));
    assert!(names(&defs, "policies", "name").contains(&"oro-limit".to_string()));
    assert!(names(&defs, "exchanges", "name").contains(&"oro.default".to_string()));
    let binding = defs["bindings"].as_array().unwrap().iter().any(|b| {
        b["source"] == "oro.default"
            && b["destination"] == "oro.default"
            && b["routing_key"] == "oro.#"
    });
    assert!(binding, "binding restored");
    // No work area is left beside the data directory.
    let leftovers: Vec<String> = target
        .work_areas()
        .into_iter()
        .filter(|n| n.starts_with(".rabbitmq-backup-restore"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn restore_onto_the_same_node_after_a_purge_and_refusal_to_overwrite() {
    let node = loaded_node();
    let repo = tempfile::tempdir().unwrap();
    let repo = repo.path().to_str().unwrap().to_string();
    let tool = Tool::new().with(node.env());
    tool.run(&["backup", "--repo", &repo]).ok();
    node.ctl(&["purge_queue", "-p", "/", "classic"]);
    node.ctl(&["purge_queue", "-p", "oro", "oro.default"]);

    // The quorum queue outlives a swap: the replay after it would add to
    // its messages, so it is refused too.
    let run = tool.run(&["restore", "--repo", &repo]);
    run.expect_code(4);
    assert!(
        run.stderr
            .contains("\"quorum\" in vhost \"/\" (5 messages)"),
        "{}",
        run.stderr
    );
    node.ctl(&["purge_queue", "-p", "/", "quorum"]);
    let run = tool.run(&["restore", "--repo", &repo]);
    run.ok();
    assert!(run.stdout.contains("restored snapshot"), "{}", run.stdout);
    // The node still held every definition unchanged: nothing was imported.
    assert!(
        run.stdout
            .contains("definitions already on the node, unchanged (nothing imported)"),
        "{}",
        run.stdout
    );
    assert_eq!(node.counts("/")["classic"], 30);
    assert_eq!(node.counts("oro")["oro.default"], 40);
    assert_eq!(exact_count(&node, "/", "quorum"), 5, "{}", run.stdout);

    // Now the node holds messages the restore would overwrite: refused.
    let newer = classic_messages("classic", 31);
    publish(&node, "/", "", &newer[30..]);
    let run = tool.run(&["restore", "--repo", &repo]);
    run.expect_code(4);
    assert!(
        run.stderr.contains("\"classic\"") && run.stderr.contains("--replace-messages"),
        "{}",
        run.stderr
    );
    assert_eq!(node.counts("/")["classic"], 31, "nothing changed");
    // Told to, it replaces them with the snapshot's; a policy removed
    // meanwhile makes the definitions differ, so they are imported again.
    node.ctl(&["clear_policy", "-p", "oro", "oro-limit"]);
    let run = tool.run(&["restore", "--repo", &repo, "--replace-messages"]);
    run.ok();
    assert!(
        run.stdout.contains("definitions imported (merged)"),
        "{}",
        run.stdout
    );
    assert!(
        names(&node.export_definitions(), "policies", "name").contains(&"oro-limit".to_string())
    );
    assert_same_messages(
        &drain(&node, "/", "classic"),
        &classic_messages("classic", 30),
        "classic",
    );
    // The quorum queue was emptied before its replay: no duplicates.
    assert_same_messages(
        &drain(&node, "/", "quorum"),
        &classic_messages("quorum", 5),
        "quorum",
    );
}

#[test]
fn a_corrupted_chunk_is_refused_before_the_node_is_touched() {
    let source = loaded_node();
    let g = garage();
    let bucket = g.new_bucket();
    let repo = format!("s3://{}", bucket.name);
    let run = Tool::new().with(source.env()).with(g.env()).run(&[
        "backup",
        "--repo",
        &repo,
        "--chunk-size",
        "1",
        "--json",
    ]);
    let id = run.ok().json()["id"].as_str().unwrap().to_string();

    // Overwrite one chunk with other bytes of the same length.
    let chunk = bucket
        .keys("")
        .into_iter()
        .filter(|k| k.contains("/data/"))
        .nth(1)
        .unwrap();
    let mut bytes = bucket.get(&chunk);
    for b in bytes.iter_mut().take(64) {
        *b ^= 0x5a;
    }
    bucket.put(&chunk, bytes);

    let target = RabbitNode::start();
    let before = target.export_definitions();
    let tool = Tool::new().with(target.env()).with(g.env());
    let run = tool.run(&["restore", &id, "--repo", &repo]);
    run.expect_code(3);
    assert!(
        run.stderr.contains(&chunk),
        "the message names the chunk: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("the node was not touched"),
        "{}",
        run.stderr
    );
    // Nothing changed on the node: no definitions imported, no work area left.
    assert_eq!(target.export_definitions()["vhosts"], before["vhosts"]);
    assert!(target.counts("/").is_empty());
    let leftovers = target
        .work_areas()
        .iter()
        .filter(|n| n.starts_with(".rabbitmq-backup-restore"))
        .count();
    assert_eq!(leftovers, 0);
    // verify --read-data finds it too.
    let run = tool.run(&["verify", &id, "--read-data", "--repo", &repo]);
    run.expect_code(3);
    assert!(
        run.stderr.contains(&chunk) || run.stdout.contains(&chunk),
        "{}{}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn a_failure_after_stop_app_rolls_back_to_the_previous_messages() {
    let node = loaded_node();
    let repo = tempfile::tempdir().unwrap();
    let repo = repo.path().to_str().unwrap().to_string();
    let tool = Tool::new().with(node.env());
    tool.run(&["backup", "--repo", &repo]).ok();
    // The node moves on: the classic queue now holds other messages.
    drain(&node, "/", "classic");
    let current = classic_messages("other", 3)
        .into_iter()
        .map(|mut m| {
            m.routing_key = "classic".into();
            m
        })
        .collect::<Vec<_>>();
    publish(&node, "/", "", &current);

    for point in ["restore:start-app", "restore:check-counts"] {
        let run = tool
            .clone()
            .var("RABBITMQ_BACKUP_FAILPOINT", &format!("{point}=fail"))
            .run(&["restore", "--repo", &repo, "--replace-messages"]);
        run.expect_code(7);
        assert!(
            run.stderr.contains("rolled back"),
            "{point}: {}",
            run.stderr
        );
        // The broker runs, on its previous messages.
        assert_same_messages(&drain(&node, "/", "classic"), &current, point);
        publish(&node, "/", "", &current);
        assert_eq!(node.counts("oro")["oro.default"], 40);
    }
}

#[test]
fn backup_and_restore_work_without_the_management_api() {
    let source = loaded_node();
    let repo = tempfile::tempdir().unwrap();
    let repo = repo.path().to_str().unwrap().to_string();
    let no_api = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let run = Tool::new()
        .with(source.env())
        .var("RABBITMQ_MANAGEMENT_URL", &no_api)
        .run(&["backup", "--repo", &repo, "--json"]);
    assert!(
        run.stderr.contains("asking the node itself instead"),
        "{}",
        run.stderr
    );
    let report = run.ok().json();
    assert_eq!(report["messages"], 75);
    let from = source.name.clone();
    drop(source);

    let target = RabbitNode::start();
    let run = Tool::new()
        .with(target.env())
        .var("RABBITMQ_MANAGEMENT_URL", &no_api)
        .run(&["restore", "--repo", &repo, "--from-node", &from, "--json"]);
    run.ok();
    // Definitions came in through rabbitmqctl import_definitions.
    assert!(names(&target.export_definitions(), "users", "name").contains(&"oro".to_string()));
    assert_same_messages(
        &drain(&target, "/", "classic"),
        &classic_messages("classic", 30),
        "classic",
    );
}
