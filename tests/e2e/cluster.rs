//! Cluster members on loopback: a member's snapshot holds its own queues,
//! and counts are per node, never cluster-wide.

use serde_json::json;

use crate::harness::amqp::{drain, publish};
use crate::harness::fixtures::classic_messages;
use crate::harness::rabbit::RabbitNode;
use crate::harness::tool::Tool;
use crate::restore::assert_same_messages;

fn queue(name: &str) -> serde_json::Value {
    json!({"queues": [{"name": name, "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}}]})
}

#[test]
fn a_members_snapshot_holds_its_own_queues_and_is_restored_only_onto_that_member() {
    let nodes = RabbitNode::cluster(2);
    let (a, b) = (&nodes[0], &nodes[1]);
    // Importing definitions puts a classic queue on the importing node.
    a.import_definitions(&queue("on-a"));
    b.import_definitions(&queue("on-b"));
    publish(a, "/", "", &classic_messages("on-a", 5));
    publish(a, "/", "", &classic_messages("on-b", 7));
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap().to_string();
    let on_a = Tool::new().with(a.env());

    let run = on_a.run(&["backup", "--repo", &repo, "--json"]);
    let report = run.ok().json();
    assert_eq!(report["covered_messages"], 5, "{report}");
    let entry = |name: &str| {
        report["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(entry("on-a")["covered"], true);
    assert_eq!(entry("on-a")["messages"], 5);
    assert_eq!(
        entry("on-b")["covered"],
        false,
        "its messages live on {}",
        b.name
    );
    assert_eq!(entry("on-b")["home_node"], b.name.as_str());
    assert!(run.stderr.contains("member of a cluster"), "{}", run.stderr);
    let id = report["id"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            dir.path()
                .join(format!("snapshots/{}/{id}/manifest.json", a.name)),
        )
        .unwrap(),
    )
    .unwrap();
    let mut members = vec![a.name.clone(), b.name.clone()];
    members.sort();
    assert_eq!(manifest["node"]["cluster_members"], json!(members));
    assert_eq!(
        manifest["format"], 2,
        "a v1 tool must refuse a member's snapshot"
    );
    assert!(
        manifest["node"]["cluster_name"].is_string(),
        "{}",
        manifest["node"]
    );

    // Onto the member itself: its queue back, counted on that node only.
    drain(a, "/", "on-a");
    publish(a, "/", "", &classic_messages("on-a", 8)[5..]);
    let run = on_a.run(&["restore", "--repo", &repo, "--replace-messages", "--json"]);
    let restored = run.ok().json();
    let statuses: Vec<(&str, &str)> = restored["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["name"].as_str().unwrap(), q["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, [("on-a", "ok")]);
    assert_same_messages(&drain(a, "/", "on-a"), &classic_messages("on-a", 5), "on-a");
    assert_eq!(
        b.counts("/")["on-b"],
        7,
        "the other member's queue is untouched"
    );

    // Swapped onto another member: refused before anything is downloaded
    // (`auto` replays instead).
    let run = Tool::new().with(b.env()).run(&[
        "restore",
        "latest",
        "--from-node",
        &a.name,
        "--repo",
        &repo,
        "--replace-messages",
        "--method",
        "swap",
    ]);
    run.expect_code(4);
    assert!(
        run.stderr.contains("is a member of a cluster"),
        "{}",
        run.stderr
    );
    assert!(b.work_areas().is_empty());
}
