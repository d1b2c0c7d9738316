//! Every RabbitMQ version Debian ships (3.8.9, 3.10.8, 4.0.5, 4.3.6): a
//! backup restored onto a new node with another name, of the same version
//! and of the next ones, every message checked byte for byte. One test per
//! source version; each backs up once and restores that snapshot onto every
//! target it has (the same-version restore of the host's 3.10 is in
//! `restore.rs`).

use serde_json::{Value, json};

use crate::harness::amqp::{drain, publish};
use crate::harness::fixtures::{classic_messages, oro_messages, priority_order, topology};
use crate::harness::rabbit::RabbitNode;
use crate::harness::tool::Tool;
use crate::harness::versions::Version;
use crate::restore::assert_same_messages;

/// A loaded node of `version`: the standard topology and messages (a
/// classic queue, a priority queue, a quorum queue).
pub(crate) fn loaded(version: Version) -> RabbitNode {
    let node = RabbitNode::start_version(version);
    node.import_definitions(&topology());
    publish(&node, "/", "", &classic_messages("classic", 30));
    publish(&node, "oro", "oro.default", &oro_messages(40));
    publish(&node, "/", "", &classic_messages("quorum", 5));
    node
}

/// Backs `source` up into `repo` and checks what the manifest records:
/// the node's version, the format, each classic queue's directories and
/// index version (version 2 from 4.0: `INDEX: v2` in `.queue_name`).
pub(crate) fn backup(source: &RabbitNode, repo: &tempfile::TempDir) -> Value {
    let repo = repo.path().to_str().unwrap();
    let report = Tool::new()
        .with(source.env())
        .run(&["backup", "--repo", repo, "--json"])
        .ok()
        .json();
    assert_eq!(report["node"], source.name.as_str());
    let id = report["id"].as_str().unwrap();
    let manifest = Tool::new()
        .run(&["show", id, "--repo", repo, "--json"])
        .ok()
        .json();
    assert_eq!(
        manifest["node"]["rabbitmq_version"],
        source.version.number()
    );
    assert_eq!(
        manifest["format"], 2,
        "logical records (the quorum queue) need a v2 tool"
    );
    let queue = |name: &str| {
        manifest["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .unwrap()
            .clone()
    };
    let index = source.version.default_index();
    for name in ["classic", "oro.default"] {
        let q = queue(name);
        assert!(!q["dirs"].as_array().unwrap().is_empty(), "{name}: {q}");
        assert_eq!(q["index_version"], index, "{name} on {}", source.version);
        assert_eq!(q["capture"], "files");
    }
    assert!(queue("oro.default")["dirs"].as_array().unwrap().len() >= 2);
    // The quorum queue is captured from the running node on every version.
    assert_eq!(queue("quorum")["capture"], "logical", "{}", source.version);
    assert_eq!(queue("quorum")["covered"], true);
    assert_eq!(queue("quorum")["messages"], 5);
    // Decoded offline, the snapshot holds what the manifest counts.
    crate::messages::decodes_as_the_manifest_says(repo, id, &source.name);
    report
}

/// A loaded node of `version` backed up into a new repository, then
/// stopped (the old host is gone). Returns the repository and its name.
fn backed_up(version: Version) -> (tempfile::TempDir, String) {
    let source = loaded(version);
    let repo = tempfile::tempdir().unwrap();
    let report = backup(&source, &repo);
    assert_eq!(report["messages"], 75, "{report}");
    assert_eq!(report["covered_messages"], 75, "{report}");
    (repo, source.name.clone())
}

/// Restores the snapshot onto a new node of `version` and checks every
/// message, in order, with properties, headers and priorities; the quorum
/// queue is reported with its count. Returns the restore report.
fn restore_onto(version: Version, repo: &tempfile::TempDir, from: &str) -> Value {
    let target = RabbitNode::start_version(version);
    restore_checked(&target, repo, from)
}

fn restore_checked(target: &RabbitNode, repo: &tempfile::TempDir, from: &str) -> Value {
    let version = target.version;
    assert_ne!(target.name, from);
    let what = format!("{from} onto {} ({version})", target.name);
    let report = Tool::new()
        .with(target.env())
        .run(&[
            "restore",
            "latest",
            "--from-node",
            from,
            "--repo",
            repo.path().to_str().unwrap(),
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(report["node"], target.name.as_str(), "{what}");
    for q in report["queues"].as_array().unwrap() {
        assert_eq!(q["status"], "ok", "{what}: {q}");
    }
    // The quorum queue's logical records are replayed after the swap and
    // counted with the rest; nothing with messages is left out.
    assert_eq!(report["method"], "swap+replay", "{what}: {report}");
    let quorum = report["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "quorum");
    assert_eq!(
        quorum.map(|q| q["actual"].clone()),
        Some(5.into()),
        "{what}"
    );
    let uncovered: Vec<&Value> = report["uncovered_queues"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["expected"] != 0)
        .collect();
    assert!(uncovered.is_empty(), "{what}: {uncovered:?}");
    assert_same_messages(
        &drain(target, "/", "classic"),
        &classic_messages("classic", 30),
        &format!("{what}: classic"),
    );
    assert_same_messages(
        &drain(target, "oro", "oro.default"),
        &priority_order(&oro_messages(40)),
        &format!("{what}: oro.default (priority)"),
    );
    assert_same_messages(
        &drain(target, "/", "quorum"),
        &classic_messages("quorum", 5),
        &format!("{what}: quorum (replayed)"),
    );
    report
}

#[test]
fn from_3_8_onto_3_8_and_3_10() {
    let (repo, from) = backed_up(Version::V3_8);
    restore_onto(Version::V3_8, &repo, &from);
    restore_onto(Version::V3_10, &repo, &from);
}

/// Keys 4.x rejects, as a 3.10 application may have declared them.
fn legacy_definitions() -> Value {
    json!({
        "policies": [{"vhost": "/", "name": "ha-legacy", "pattern": "^legacy\\.", "apply-to": "queues",
                      "definition": {"ha-mode": "all"}, "priority": 0}],
        "queues": [
            {"name": "cq2", "vhost": "/", "durable": true, "auto_delete": false,
             "arguments": {"x-queue-version": 2}},
            {"name": "legacy.v1", "vhost": "/", "durable": true, "auto_delete": false,
             "arguments": {"x-queue-version": 1, "x-queue-master-locator": "min-masters"}},
            {"name": "legacy.reply", "vhost": "/", "durable": false, "auto_delete": false, "arguments": {}}
        ],
        "bindings": [{"source": "amq.direct", "vhost": "/", "destination": "legacy.reply",
                      "destination_type": "queue", "routing_key": "reply", "arguments": {}}]
    })
}

fn names(defs: &Value, key: &str) -> Vec<String> {
    defs[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn from_3_10_onto_4_0_and_refused_by_swap_onto_4_3_unless_version_2() {
    // Beside the standard queues, legacy keys and a version-2 queue (3.10
    // has both index versions).
    let source = loaded(Version::V3_10);
    source.import_definitions(&legacy_definitions());
    publish(&source, "/", "", &classic_messages("cq2", 20));
    let from = source.name.clone();
    let repo = tempfile::tempdir().unwrap();
    let report = backup(&source, &repo);
    let cq2 = report["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "cq2");
    assert_eq!(cq2.unwrap()["index_version"], 2);

    // 4.0 converts the version-1 index; mirroring keys leave the policies.
    let report = restore_onto(Version::V4_0, &repo, &from);
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("ha-legacy"), "{warnings}");

    // 4.3 cannot read a version-1 index: a swap is refused before anything
    // changes (`auto` replays instead: `replay.rs`).
    let target = RabbitNode::start_version(Version::V4_3);
    let before = target.export_definitions();
    let tool = Tool::new().with(target.env());
    let repo_path = repo.path().to_str().unwrap();
    let args = ["restore", "--from-node", &from, "--repo", repo_path];
    let run = tool.run(&[&args[..], &["--method", "swap"]].concat());
    run.expect_code(5);
    for part in [
        "\"classic\" in vhost \"/\" (30 messages)",
        "\"oro.default\" in vhost \"oro\" (40 messages)",
        "4.3.6",
        "--method replay",
    ] {
        assert!(run.stderr.contains(part), "{part}: {}", run.stderr);
    }
    for readable in ["legacy.v1\" in", "cq2"] {
        // An empty version-1 queue loses nothing; version 2 is read by 4.3.
        assert!(!run.stderr.contains(readable), "{readable}: {}", run.stderr);
    }
    assert_eq!(target.export_definitions(), before, "nothing changed");
    assert!(target.work_areas().is_empty(), "{:?}", target.work_areas());

    // Its definitions alone import whole: what 4.3 rejects is adapted first.
    let run = tool.run(&[&args[..], &["--definitions-only", "--json"]].concat());
    let warnings = run.ok().json()["warnings"].to_string();
    for part in [
        "ha-legacy",
        "x-queue-version 1 removed",
        "queue-leader-locator",
        "legacy.reply",
    ] {
        assert!(warnings.contains(part), "{part}: {warnings}");
    }
    let defs = target.export_definitions();
    let queues = names(&defs, "queues");
    for q in ["classic", "oro.default", "quorum", "legacy.v1"] {
        assert!(queues.contains(&q.to_string()), "{q} in {queues:?}");
    }
    assert!(!queues.contains(&"legacy.reply".to_string()));
    assert!(!names(&defs, "policies").contains(&"ha-legacy".to_string()));
    assert!(names(&defs, "policies").contains(&"oro-limit".to_string()));
    let legacy = defs["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "legacy.v1")
        .unwrap();
    assert_eq!(legacy["arguments"]["x-queue-leader-locator"], "balanced");
    assert!(legacy["arguments"].get("x-queue-version").is_none());

    // Once the version-1 queues hold nothing, a 3.10 snapshot swaps onto
    // 4.3: it reads 3.10's message store and version-2 index.
    drain(&source, "/", "classic");
    drain(&source, "oro", "oro.default");
    let repo = tempfile::tempdir().unwrap();
    assert_eq!(
        backup(&source, &repo)["covered_messages"],
        25,
        "cq2 and quorum"
    );
    drop(source);
    let report = Tool::new()
        .with(target.env())
        .run(&[
            "restore",
            "--from-node",
            &from,
            "--repo",
            repo.path().to_str().unwrap(),
            "--json",
        ])
        .ok()
        .json();
    for q in report["queues"].as_array().unwrap() {
        assert_eq!(q["status"], "ok", "{q}");
    }
    assert_same_messages(
        &drain(&target, "/", "cq2"),
        &classic_messages("cq2", 20),
        "version-2 queue from 3.10 onto 4.3",
    );
}

#[test]
fn from_4_0_onto_4_0_and_4_3() {
    let (repo, from) = backed_up(Version::V4_0);
    restore_onto(Version::V4_0, &repo, &from);
    restore_onto(Version::V4_3, &repo, &from);
}

#[test]
fn from_4_3_onto_4_3() {
    let (repo, from) = backed_up(Version::V4_3);
    restore_onto(Version::V4_3, &repo, &from);
}

#[test]
fn every_version_is_installed_from_its_debian_package() {
    for version in Version::ALL {
        match version.chroot() {
            None => assert_eq!(version, Version::HOST),
            Some(chroot) => {
                let lib = chroot.join(format!(
                    "usr/lib/rabbitmq/lib/rabbitmq_server-{}",
                    version.number()
                ));
                assert!(lib.is_dir(), "{version}: no {}", lib.display());
            }
        }
    }
}

#[test]
fn a_restarted_node_keeps_its_name_directory_and_messages() {
    let mut node = RabbitNode::start_version(Version::V4_3);
    node.import_definitions(&topology());
    publish(&node, "/", "", &classic_messages("classic", 3));
    let (name, data_dir) = (node.name.clone(), node.data_dir());
    node.restart();
    assert_eq!((node.name.clone(), node.data_dir()), (name, data_dir));
    assert_same_messages(
        &drain(&node, "/", "classic"),
        &classic_messages("classic", 3),
        "after a restart",
    );
}
