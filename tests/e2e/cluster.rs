//! Cluster members on loopback: a member's snapshot holds its own queues,
//! and counts are per node, never cluster-wide.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::amqp::{Msg, drain, exact_count, publish, read_stream};
use crate::harness::fixtures::classic_messages;
use crate::harness::rabbit::RabbitNode;
use crate::harness::tool::Tool;
use crate::harness::versions::Version;
use crate::operator::assert_schema;
use crate::replay::at_most_window_duplicated;
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

fn typed_queue(name: &str, queue_type: &str) -> serde_json::Value {
    json!({"queues": [{"name": name, "vhost": "/", "durable": true, "auto_delete": false,
        "arguments": {"x-queue-type": queue_type}}]})
}

/// The manifests of a repository's snapshots, oldest first.
fn manifests(repo: &std::path::Path) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = Vec::new();
    for node in std::fs::read_dir(repo.join("snapshots")).unwrap() {
        for snap in std::fs::read_dir(node.unwrap().path()).unwrap() {
            let path = snap.unwrap().path().join("manifest.json");
            out.push(serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap());
        }
    }
    out.sort_by_key(|m| m["id"].as_str().unwrap().to_string());
    out
}

/// A 3-member cluster with a classic queue homed on each member, a quorum
/// queue led by the second and a stream led by the third, backed up on
/// every member: each queue is held by exactly one member snapshot (the
/// others name the member holding it), the pause of a member does not
/// leave its quorum queues (and, where RabbitMQ can move them, streams)
/// led elsewhere, counts are per node, and `list`/`show`/`verify
/// --cluster` see one complete cluster snapshot. Then a round missing a
/// member and a target member down are refused before anything is touched.
fn every_queue_is_held_by_exactly_one_member_snapshot(version: Version, name: Option<&str>) {
    let mut nodes = RabbitNode::cluster_of(version, 3);
    let mut names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    names.sort();
    if let Some(name) = name {
        nodes[1].ctl(&["set_cluster_name", name]);
    }
    for (i, node) in nodes.iter().enumerate() {
        node.import_definitions(&queue(&format!("cq-{i}")));
    }
    nodes[1].import_definitions(&typed_queue("qq", "quorum"));
    nodes[2].import_definitions(&typed_queue("sq", "stream"));
    for i in 0..3 {
        let q = format!("cq-{i}");
        publish(&nodes[0], "/", "", &classic_messages(&q, 3 + i));
    }
    publish(&nodes[0], "/", "", &classic_messages("qq", 4));
    publish(&nodes[0], "/", "", &classic_messages("sq", 5));
    // Asked of the queues themselves (the management API's copy lags).
    let leader = |q: &str| -> String {
        let out = nodes[0].ctl(&[
            "list_queues",
            "-q",
            "-p",
            "/",
            "--formatter",
            "json",
            "name",
            "leader",
        ]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap();
        let row = rows.iter().find(|r| r["name"] == q).unwrap();
        row["leader"]
            .as_str()
            .unwrap_or_else(|| panic!("{row}"))
            .to_string()
    };
    let (qq_leader, sq_leader) = (leader("qq"), leader("sq"));
    let expected: Vec<(&str, String, u64)> = vec![
        ("cq-0", nodes[0].name.clone(), 3),
        ("cq-1", nodes[1].name.clone(), 4),
        ("cq-2", nodes[2].name.clone(), 5),
        ("qq", qq_leader.clone(), 4),
        ("sq", sq_leader.clone(), 5),
    ];

    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap().to_string();
    for node in &nodes {
        let led: Vec<&str> = ["qq", "sq"]
            .into_iter()
            .filter(|q| leader(q) == node.name)
            .collect();
        let run = Tool::new()
            .with(node.env())
            .run(&["backup", "--repo", &repo, "--json"]);
        let report = run.ok().json();
        // Its pause moved its leaderships away; its backup took them back
        // (a stream's: RabbitMQ 4.0+ only, and said when it cannot).
        for q in led {
            let warned = report["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w.as_str().unwrap().contains(&format!("{q:?}")));
            let unnamed = report["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w.as_str().unwrap().contains("set_cluster_name"));
            assert_eq!(unnamed, name.is_none(), "{report}");
            if q == "sq" && version < Version::V4_0 {
                assert!(warned, "{report}");
            } else {
                assert_eq!(leader(q), node.name, "{q} after the backup: {report}");
                assert!(!warned, "{report}");
            }
        }
    }

    // RabbitMQ before 4.0 cannot move a stream's leader back after the
    // pause of its member (its backup says so).
    let stream_moves = version < Version::V4_0;
    let all = manifests(dir.path());
    assert_eq!(all.len(), 3);
    // Unnamed, each member would report its own name: the first stands in.
    let cluster = name.unwrap_or(&names[0]).to_string();
    for m in &all {
        assert_eq!(m["node"]["cluster_name"], cluster.as_str());
        assert_eq!(m["node"]["cluster_members"], json!(names));
        let own: u64 = m["queues"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| q["home_node"].is_null())
            .map(|q| q["messages"].as_u64().unwrap())
            .sum();
        assert_eq!(m["totals"]["messages"], own, "per node, not cluster-wide");
    }
    for (name, holder, count) in &expected {
        let mut held_by = Vec::new();
        for m in &all {
            let entry = m["queues"]
                .as_array()
                .unwrap()
                .iter()
                .find(|q| q["name"] == *name)
                .unwrap_or_else(|| panic!("{name} in {}", m["node"]["name"]))
                .clone();
            if entry["home_node"].is_null() {
                held_by.push(m["node"]["name"].as_str().unwrap().to_string());
                assert_eq!(entry["messages"], *count, "{name} counted on its holder");
            } else {
                // Where it lived when that member was backed up (leaders
                // may move between the members' backups).
                let home = entry["home_node"].as_str().unwrap();
                assert!(names.iter().any(|n| n == home), "{name}: {home}");
                assert_ne!(home, m["node"]["name"].as_str().unwrap());
                assert_eq!(entry["covered"], false);
            }
        }
        if *name == "sq" && stream_moves {
            // Its leader's pause moved it for good: the leader's snapshot
            // names the new leader, whose own pause moved it again.
            assert_eq!(held_by, Vec::<String>::new(), "{name} held by nobody");
            continue;
        }
        assert_eq!(
            held_by,
            std::slice::from_ref(holder),
            "{name} held exactly once"
        );
    }

    let tool = Tool::new();
    let listed = tool
        .run(&["list", "--cluster", &cluster, "--repo", &repo, "--json"])
        .ok()
        .json();
    let rounds = listed["cluster_snapshots"].as_array().unwrap();
    assert_eq!(rounds.len(), 1, "{listed}");
    let round = &rounds[0];
    assert_eq!(round["complete"], true);
    assert_eq!(round["members"], json!(names));
    assert_eq!(round["queues"], 5);
    if stream_moves {
        let problems = round["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 1, "{listed}");
        assert!(problems[0].as_str().unwrap().contains("\"sq\""), "{listed}");
    } else {
        assert_eq!(round["messages"], 21);
        assert_eq!(round["problems"], json!([]));
    }
    let first_id = round["id"].as_str().unwrap().to_string();
    assert_eq!(first_id, all[0]["id"].as_str().unwrap());
    let human = tool.run(&["list", "--cluster", &cluster, "--repo", &repo]);
    assert!(human.ok().stdout.contains("complete"), "{}", human.stdout);

    let shown = tool.run(&["show", "latest", "--cluster", &cluster, "--repo", &repo]);
    for (name, holder, _) in &expected {
        if *name == "sq" && stream_moves {
            continue;
        }
        let line = shown
            .ok()
            .stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("{name} in\n{}", shown.stdout));
        assert!(line.contains(holder.as_str()), "{line}");
    }
    // Any member's id names its cluster snapshot.
    let by_member = tool
        .run(&[
            "show",
            all[2]["id"].as_str().unwrap(),
            "--cluster",
            &cluster,
            "--repo",
            &repo,
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(by_member["id"], first_id.as_str());
    assert_eq!(by_member["queues"].as_array().unwrap().len(), 5);

    let verified = tool.run(&["verify", "latest", "--cluster", &cluster, "--repo", &repo]);
    if stream_moves {
        // The stream's messages are in no member snapshot: said, not hidden.
        verified.expect_code(3);
        assert!(verified.stdout.contains("\"sq\""), "{}", verified.stdout);
    } else {
        verified.ok();
    }

    // Another round, of one member only: incomplete.
    Tool::new()
        .with(nodes[0].env())
        .run(&["backup", "--repo", &repo])
        .ok();
    let listed = tool
        .run(&["list", "--cluster", &cluster, "--repo", &repo, "--json"])
        .ok()
        .json();
    let latest = &listed["cluster_snapshots"][1];
    assert_eq!(latest["complete"], false, "{listed}");
    let mut missing = names.clone();
    missing.retain(|n| *n != nodes[0].name);
    assert_eq!(latest["missing"], json!(missing));
    let run = tool.run(&["verify", "latest", "--cluster", &cluster, "--repo", &repo]);
    run.expect_code(3);
    assert!(run.stdout.contains(&missing[0]), "{}", run.stdout);
    tool.run(&[
        "verify",
        "latest",
        "--cluster",
        &cluster,
        "--allow-partial",
        "--repo",
        &repo,
    ])
    .ok();
    let run = Tool::new().with(nodes[0].env()).run(&[
        "restore",
        "latest",
        "--cluster",
        &cluster,
        "--repo",
        &repo,
    ]);
    run.expect_code(4);
    assert!(run.stderr.contains("--allow-partial"), "{}", run.stderr);
    assert!(run.stderr.contains(&missing[0]), "{}", run.stderr);

    // A target member down: refused before anything is downloaded.
    nodes[2].stop_app();
    let run = Tool::new().with(nodes[0].env()).run(&[
        "restore",
        &first_id,
        "--cluster",
        &cluster,
        "--allow-partial",
        "--repo",
        &repo,
    ]);
    run.expect_code(4);
    assert!(run.stderr.contains(&nodes[2].name), "{}", run.stderr);
    assert!(run.stderr.contains("down"), "{}", run.stderr);
    assert!(nodes.iter().all(|n| n.work_areas().is_empty()));
    nodes[2].start_app();
}

#[test]
fn every_queue_of_a_3_10_cluster_is_in_exactly_one_member_snapshot() {
    every_queue_is_held_by_exactly_one_member_snapshot(Version::V3_10, None);
}

#[test]
fn every_queue_of_a_4_3_cluster_is_in_exactly_one_member_snapshot() {
    every_queue_is_held_by_exactly_one_member_snapshot(Version::V4_3, Some("prod-4.3"));
}

/// Each queue's messages, as published.
type Loaded = Vec<(&'static str, Vec<Msg>)>;

/// The source cluster's queues, in the order the checks read them: a
/// classic queue homed on each member, a quorum queue and a stream.
const QUEUES: [&str; 5] = ["cq-0", "cq-1", "cq-2", "qq", "sq"];

/// Declares [`QUEUES`] across `nodes` (a classic queue on each member,
/// the quorum queue from the second, the stream from the third) and
/// publishes messages of mixed sizes with headers into each; returns them.
fn load(nodes: &[RabbitNode]) -> Loaded {
    for (i, node) in nodes.iter().enumerate() {
        node.import_definitions(&queue(QUEUES[i]));
    }
    nodes[1].import_definitions(&typed_queue("qq", "quorum"));
    nodes[2].import_definitions(&typed_queue("sq", "stream"));
    QUEUES
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let msgs = classic_messages(q, 6 + i);
            publish(&nodes[i % nodes.len()], "/", "", &msgs);
            (*q, msgs)
        })
        .collect()
}

/// Every message of every queue back exactly once, in order, read with a
/// real AMQP client from `node` (classic and quorum queues are drained).
fn assert_restored(node: &RabbitNode, expected: &[(&str, Vec<Msg>)], what: &str) {
    for (q, msgs) in expected {
        let found = if *q == "sq" {
            read_stream(node, "/", q, msgs.len())
        } else {
            drain(node, "/", q)
        };
        assert_same_messages(&found, msgs, &format!("{what}: {q}"));
    }
}

/// The member leading quorum queue or stream `q`, asked of the queues.
fn leader(node: &RabbitNode, q: &str) -> String {
    let out = node.ctl(&[
        "list_queues",
        "-q",
        "-p",
        "/",
        "--formatter",
        "json",
        "name",
        "leader",
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap();
    let row = rows.iter().find(|r| r["name"] == q).unwrap();
    row["leader"]
        .as_str()
        .unwrap_or_else(|| panic!("{row}"))
        .to_string()
}

/// The `--json` report's status of each queue.
fn statuses(report: &serde_json::Value) -> Vec<(String, String)> {
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

/// DESIGN §13's end to end: a 3-node cluster (classic queues homed on
/// every member, a quorum queue, a stream) backed up on every member,
/// restored by `restore --cluster` onto another 3-node cluster with other
/// node names and onto a lone node: every message back exactly once, in
/// order, read by a real client from a member other than the one the tool
/// talked to. Between the two, the refusals of non-empty queues (nothing
/// changed), then a kill at every step of the cluster restore's loop (and
/// at a replay confirm) finished by `--resume`. First, the source cluster
/// restored onto itself, one member's part swapped
/// ([`swapped_onto_its_own_member`]). Nodes are shared: the source cluster
/// is stopped before the target one starts.
#[test]
fn a_cluster_is_restored_by_replay_onto_another_cluster_and_onto_a_lone_node() {
    let cluster = "dr-src";
    let (dir, source_names, expected, source) = backed_up_cluster(Version::HOST, cluster);
    let repo = dir.path().to_str().unwrap().to_string();
    let total: usize = expected.iter().map(|(_, m)| m.len()).sum();
    swapped_onto_its_own_member(&source, cluster, &repo, &expected);
    drop(source);

    let tool = Tool::new();
    let listed = tool
        .run(&["list", "--cluster", cluster, "--repo", &repo, "--json"])
        .ok()
        .json();
    assert_schema("list-cluster", &listed);
    let round = &listed["cluster_snapshots"][0];
    assert_eq!(round["complete"], true, "{listed}");
    assert_eq!(round["messages"], total as u64, "{listed}");
    assert_eq!(round["problems"], json!([]), "{listed}");
    let shown = tool
        .run(&[
            "show",
            "latest",
            "--cluster",
            cluster,
            "--repo",
            &repo,
            "--json",
        ])
        .ok()
        .json();
    assert_schema("show-cluster", &shown);
    let held: Vec<&str> = shown["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(held, ["cq-0", "cq-1", "cq-2", "qq", "sq"], "{shown}");

    let target = RabbitNode::cluster_of(Version::HOST, 3);
    assert!(target.iter().all(|n| !source_names.contains(&n.name)));
    let on_target = Tool::new().with(target[0].env());
    let restore = ["restore", "latest", "--cluster", cluster, "--repo", &repo];
    let json_run = |extra: &[&str]| {
        let args: Vec<&str> = restore.iter().chain(extra).copied().collect();
        on_target.run(&args)
    };

    let planned = json_run(&["--dry-run", "--json"]).ok().json();
    assert_schema("restore-cluster-dry-run", &planned);
    assert_eq!(planned["method"], "replay");
    let parts = planned["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "{planned}");
    let planned_messages: u64 = parts.iter().map(|p| p["messages"].as_u64().unwrap()).sum();
    assert_eq!(planned_messages, total as u64, "{planned}");
    assert!(
        target[0].counts("/").is_empty(),
        "a dry run changes nothing"
    );
    assert!(target[0].work_areas().is_empty());

    let report = restored_onto(&target, cluster, &repo, &expected, "cluster onto cluster");
    assert_schema("restore-cluster", &report);

    // The stream still holds its messages (a stream cannot be emptied):
    // refused, with or without --replace-messages, before any change.
    for extra in [&[][..], &["--replace-messages"][..]] {
        let run = json_run(extra);
        run.expect_code(4);
        assert!(run.stderr.contains("\"sq\""), "{}", run.stderr);
        assert!(target[0].work_areas().is_empty());
        assert_eq!(target[0].counts("/")["cq-0"], 0, "{extra:?}");
    }

    // A kill at every step of the cluster loop (and at a replay confirm),
    // then --resume: each message back, at most a publisher window of them
    // twice.
    let window = 4;
    let crash = Tool::new().with(target[0].env()).var(
        "RABBITMQ_BACKUP_FAILPOINT",
        &format!("replay:window={window}"),
    );
    let subset: Vec<&str> = restore
        .iter()
        .copied()
        .chain([
            "--replace-messages",
            "--queue",
            "cq-0",
            "--queue",
            "cq-1",
            "--queue",
            "cq-2",
            "--queue",
            "qq",
        ])
        .collect();
    let replayed = &expected[..4];
    publish(&target[1], "/", "", &replayed[0].1[..2]);
    let (run, points) = crash.record(&subset);
    run.ok();
    assert_restored(&target[1], replayed, "recorded run");
    // Every step of the cluster loop; the replay's own steps are
    // enumerated by `replay::a_replay_killed_at_every_journal_step_is_finished_by_resume`:
    // one in the middle here, inside a part.
    let confirms: Vec<&String> = points
        .iter()
        .filter(|p| p.starts_with("replay:progress"))
        .collect();
    let points: Vec<&String> = points
        .iter()
        .filter(|p| p.starts_with("cluster-restore:"))
        .chain([confirms[confirms.len() / 2]])
        .collect();
    let journal_steps = points
        .iter()
        .filter(|p| p.starts_with("cluster-restore:journal:"))
        .count();
    // staged, imported, replaying, fetched and replayed per part, done.
    assert_eq!(journal_steps, 10, "{points:?}");
    let started = Instant::now();
    for point in &points {
        // The last round's drain of the quorum queue leaves it
        // asynchronously (a Raft command); the restore refuses consumers.
        target[1].wait_no_consumers("/", "qq");
        // Messages the restore must empty first (--replace-messages).
        publish(&target[1], "/", "", &replayed[0].1[..2]);
        crash.kill_at(point, &subset, Duration::from_secs(120));
        Tool::new()
            .with(target[0].env())
            .run(&["restore", "--cluster", cluster, "--resume", "--repo", &repo])
            .ok();
        assert!(target[0].work_areas().is_empty(), "{point}");
        let untouched = [
            "cluster-restore:journal:staged@",
            "cluster-restore:import@",
            "cluster-restore:journal:imported@",
        ]
        .iter()
        .any(|p| point.starts_with(p));
        if untouched {
            // Killed before the first message changed: --resume has
            // nothing to finish and the queues are as they were.
            assert_same_messages(&drain(&target[1], "/", "cq-0"), &replayed[0].1[..2], point);
            for (q, _) in &replayed[1..] {
                assert_eq!(exact_count(&target[1], "/", q), 0, "{point}: {q}");
            }
            continue;
        }
        for (q, msgs) in replayed {
            at_most_window_duplicated(
                &drain(&target[1], "/", q),
                msgs,
                window,
                &format!("killed at {point}: {q}"),
            );
        }
    }
    eprintln!(
        "timing: {} kills and resumes: {} ms",
        points.len(),
        started.elapsed().as_millis()
    );
    drop(target);

    let lone = RabbitNode::start();
    let started = Instant::now();
    let report = Tool::new()
        .with(lone.env())
        .run(&["restore", "--cluster", cluster, "--repo", &repo, "--json"])
        .ok()
        .json();
    eprintln!(
        "timing: restore --cluster of {total} messages onto a lone node: {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(report["target_members"], json!([lone.name]), "{report}");
    assert_eq!(statuses(&report), all_ok(), "{report}");
    assert_restored(&lone, &expected, "cluster onto a lone node");
}

/// Across versions: a 3.10 cluster's snapshot (version-1 queue indexes,
/// which 4.3 cannot read) restored by replay onto a 4.3 cluster.
#[test]
fn a_3_10_cluster_is_restored_by_replay_onto_a_4_3_cluster() {
    let cluster = "dr-3.10";
    let (dir, _, expected, source) = backed_up_cluster(Version::V3_10, cluster);
    drop(source);
    let repo = dir.path().to_str().unwrap().to_string();
    let target = RabbitNode::cluster_of(Version::V4_3, 3);
    restored_onto(&target, cluster, &repo, &expected, "3.10 cluster onto 4.3");
}

/// A 3-node cluster of `version` named `cluster`, loaded ([`load`]) and
/// backed up on every member into a new local repository: the repository,
/// the members' names, the messages and the cluster.
fn backed_up_cluster(
    version: Version,
    cluster: &str,
) -> (tempfile::TempDir, Vec<String>, Loaded, Vec<RabbitNode>) {
    let source = RabbitNode::cluster_of(version, 3);
    source[0].ctl(&["set_cluster_name", cluster]);
    let expected = load(&source);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap().to_string();
    let stream_leader = leader(&source[0], "sq");
    for node in &source {
        let started = Instant::now();
        // RabbitMQ before 4.0 cannot move a stream's leader back after a
        // pause: its leader is backed up without one (--live).
        let live = node.name == stream_leader && version < Version::V4_0;
        let mut args = vec!["backup", "--repo", &repo];
        if live {
            args.push("--live");
        }
        Tool::new().with(node.env()).run(&args).ok();
        eprintln!(
            "timing: backup of member {} ({version}{}): {} ms",
            node.name,
            if live { ", --live" } else { "" },
            started.elapsed().as_millis()
        );
    }
    let names = source.iter().map(|n| n.name.clone()).collect();
    (dir, names, expected, source)
}

/// The part of `report` taken on `node`.
fn part_of(report: &serde_json::Value, node: &str) -> serde_json::Value {
    report["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["from_node"] == node)
        .unwrap_or_else(|| panic!("no part of {node}: {report}"))
        .clone()
}

/// `restore --cluster` of the backed-up `source` cluster onto itself,
/// through the member leading the quorum queue: that member's part is
/// swapped in (its classic queue's store, only its broker paused; its
/// quorum queue replayed after), the others replayed. Checked: the plan
/// and its reasons (a queue the snapshot would drop makes it a replay,
/// `--method swap` refuses then, `--method replay` replays all), a failed
/// count check rolling the swap back with nothing else touched, then a
/// kill at every step of the cluster journal and of the swap's own
/// journal, each finished by `--resume`: the swapped queue exactly the
/// snapshot's, the replayed ones at most a window twice.
fn swapped_onto_its_own_member(
    source: &[RabbitNode],
    cluster: &str,
    repo: &str,
    expected: &Loaded,
) {
    let through = source
        .iter()
        .position(|n| n.name == leader(&source[0], "qq"))
        .unwrap();
    let node = &source[through];
    let (own, own_msgs) = (&expected[through].0, &expected[through].1);
    let tool = Tool::new().with(node.env());
    let args = |extra: &[&str]| -> Vec<String> {
        [
            "restore",
            "latest",
            "--cluster",
            cluster,
            "--repo",
            repo,
            "--replace-messages",
        ]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect()
    };
    let run = |tool: &Tool, extra: &[&str]| {
        let a = args(extra);
        tool.run(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // Emptied, the stream deleted (RabbitMQ cannot empty one; the import
    // declares it again), the swapped queue holding 2 messages.
    let reset = || {
        for (q, _) in &expected[..4] {
            drain(node, "/", q);
        }
        if node.counts("/").contains_key("sq") {
            node.ctl(&["delete_queue", "-p", "/", "sq"]);
        }
        publish(node, "/", "", &own_msgs[..2]);
    };
    reset();

    // A queue on that member the snapshot does not name, holding a
    // message: a swap of the vhost's store would drop it.
    node.import_definitions(&queue("extra"));
    publish(node, "/", "", &classic_messages("extra", 1));
    let planned = run(&tool, &["--dry-run", "--json"]).ok().json();
    assert_eq!(planned["method"], "replay", "{planned}");
    let reason = part_of(&planned, &node.name)["method_reason"].to_string();
    assert!(reason.contains("\\\"extra\\\""), "{reason}");
    let refused = run(&tool, &["--dry-run", "--method", "swap"]);
    refused.expect_code(4);
    assert!(refused.stderr.contains("\"extra\""), "{}", refused.stderr);
    node.ctl(&["delete_queue", "-p", "/", "extra"]);

    let planned = run(&tool, &["--dry-run", "--json"]).ok().json();
    assert_eq!(planned["method"], "swap+replay", "{planned}");
    for n in source {
        let p = part_of(&planned, &n.name);
        if n.name == node.name {
            assert_eq!(p["method"], "swap+replay", "{planned}");
        } else {
            assert_eq!(p["method"], "replay", "{planned}");
            assert!(
                p["method_reason"].as_str().unwrap().contains(&n.name),
                "{p}"
            );
        }
    }
    let human = run(&tool, &["--dry-run"]);
    assert!(
        human
            .ok()
            .stdout
            .contains(&format!("swap+replay of {}", node.name)),
        "{}",
        human.stdout
    );
    let replayed = run(&tool, &["--dry-run", "--method", "replay", "--json"])
        .ok()
        .json();
    for p in replayed["parts"].as_array().unwrap() {
        assert_eq!(p["method"], "replay", "{replayed}");
        assert_eq!(p["method_reason"], "--method replay", "{replayed}");
    }
    assert!(node.work_areas().is_empty(), "dry runs change nothing");

    // The swap's count check fails: rolled back, nothing else touched.
    let failing = Tool::new()
        .with(node.env())
        .var("RABBITMQ_BACKUP_FAILPOINT", "restore:check-counts=fail");
    let failed = run(&failing, &[]);
    failed.expect_code(7);
    assert!(failed.stderr.contains("undone"), "{}", failed.stderr);
    assert!(node.work_areas().is_empty());
    assert_same_messages(&drain(node, "/", own), &own_msgs[..2], "rolled back");
    for (q, _) in expected[..4].iter().filter(|(q, _)| q != own) {
        assert_eq!(exact_count(node, "/", q), 0, "{q} untouched");
    }
    // The failed run replayed the stream before the swap: deleted again,
    // or --replace-messages is refused (a stream cannot be emptied).
    reset();

    let window = 4;
    let crash = Tool::new().with(node.env()).var(
        "RABBITMQ_BACKUP_FAILPOINT",
        &format!("replay:window={window}"),
    );
    let started = Instant::now();
    let (recorded, points) = crash.record(
        &args(&["--json"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let report = recorded.ok().json();
    eprintln!(
        "timing: restore --cluster onto its own cluster, one part swapped: {} ms",
        started.elapsed().as_millis()
    );
    let swapped = part_of(&report, &node.name);
    assert_eq!(swapped["method"], "swap+replay", "{report}");
    assert!(swapped["pause_ms"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["method"], "swap+replay");
    assert_eq!(statuses(&report), all_ok(), "{report}");
    assert!(node.work_areas().is_empty());
    assert_restored(
        &source[(through + 1) % 3],
        expected,
        "swapped onto its own member",
    );
    // Every step of the cluster journal up to the replayed parts (whose
    // steps the loop on another cluster below enumerates), the swapped
    // part's among them, and of the swap's own journal, the broker stopped
    // and a store half moved, and a confirm of the replay after the swap.
    let s = report["parts"]
        .as_array()
        .unwrap()
        .iter()
        .position(|p| p["from_node"] == node.name.as_str())
        .unwrap();
    let confirm = points
        .iter()
        .find(|p| p.starts_with("replay:progress"))
        .cloned();
    let cluster_step = |p: &str| {
        let Some(step) = p.strip_prefix("cluster-restore:journal:") else {
            return false;
        };
        ["staged@", "imported@", "replaying@"]
            .iter()
            .any(|t| step.starts_with(t))
            || step.split('@').next().unwrap().ends_with(&format!(":{s}"))
    };
    let points: Vec<&String> = points
        .iter()
        .filter(|p| {
            cluster_step(p)
                || p.starts_with("restore:journal:")
                || p.starts_with("restore:stop-app")
                || p.starts_with("restore:in:")
        })
        .chain(confirm.as_ref())
        .collect();
    for step in ["swapping", "swapped"] {
        assert!(
            points
                .iter()
                .any(|p| p.starts_with(&format!("cluster-restore:journal:{step}:"))),
            "{step}: {points:?}"
        );
    }
    let started = Instant::now();
    for point in &points {
        reset();
        crash.kill_at(
            point,
            &args(&[]).iter().map(String::as_str).collect::<Vec<_>>(),
            Duration::from_secs(120),
        );
        if point.starts_with("restore:in:") {
            // The member's broker stopped, a store half moved: a backup
            // would copy half-restored messages, refused.
            let backup = Tool::new()
                .with(node.env())
                .run(&["backup", "--repo", repo]);
            backup.expect_code(4);
            assert!(
                backup
                    .stderr
                    .contains(&format!("restore --cluster {cluster} --resume")),
                "{point}: {}",
                backup.stderr
            );
            // So would a second cluster restore on that node.
            let again = run(&tool, &[]);
            again.expect_code(4);
            assert!(
                again.stderr.contains("--resume"),
                "{point}: {}",
                again.stderr
            );
        }
        Tool::new()
            .with(node.env())
            .run(&["restore", "--cluster", cluster, "--resume", "--repo", repo])
            .ok();
        assert!(node.work_areas().is_empty(), "{point}");
        let untouched = [
            "cluster-restore:journal:staged@",
            "cluster-restore:journal:imported@",
        ]
        .iter()
        .any(|p| point.starts_with(p));
        if untouched {
            assert_same_messages(&drain(node, "/", own), &own_msgs[..2], point);
            continue;
        }
        assert_same_messages(
            &drain(node, "/", own),
            own_msgs,
            &format!("killed at {point}: {own}"),
        );
        for (q, msgs) in expected.iter().filter(|(q, _)| q != own) {
            let found = if *q == "sq" {
                // Read where it has a replica: its leader (a stream declared
                // while a member pauses may have none there).
                let led_by = leader(node, "sq");
                let reader = source.iter().find(|n| n.name == led_by).unwrap();
                read_stream(reader, "/", q, msgs.len())
            } else {
                drain(node, "/", q)
            };
            at_most_window_duplicated(&found, msgs, window, &format!("killed at {point}: {q}"));
        }
    }
    eprintln!(
        "timing: {} kills and resumes of a swapping cluster restore: {} ms",
        points.len(),
        started.elapsed().as_millis()
    );
}

/// `restore --cluster` onto `target` through its first member: every
/// queue counted `ok`, every part published, every message read back from
/// the last member. Returns the `--json` report.
fn restored_onto(
    target: &[RabbitNode],
    cluster: &str,
    repo: &str,
    expected: &[(&str, Vec<Msg>)],
    what: &str,
) -> serde_json::Value {
    let total: usize = expected.iter().map(|(_, m)| m.len()).sum();
    let started = Instant::now();
    let report = Tool::new()
        .with(target[0].env())
        .run(&[
            "restore",
            "latest",
            "--cluster",
            cluster,
            "--repo",
            repo,
            "--json",
        ])
        .ok()
        .json();
    eprintln!(
        "timing: restore --cluster of {total} messages, {what}: {} ms",
        started.elapsed().as_millis()
    );
    let published: u64 = report["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["published"].as_u64().unwrap())
        .sum();
    assert_eq!(published, total as u64, "{what}: {report}");
    assert_eq!(statuses(&report), all_ok(), "{what}: {report}");
    assert!(target[0].work_areas().is_empty(), "{what}");
    assert_restored(target.last().unwrap(), expected, what);
    report
}

/// Every queue of [`QUEUES`] with status `ok`.
fn all_ok() -> Vec<(String, String)> {
    QUEUES
        .iter()
        .map(|q| (q.to_string(), "ok".to_string()))
        .collect()
}
