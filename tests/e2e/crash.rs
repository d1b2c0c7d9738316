//! A crash at every instant: the tool killed (SIGKILL) at each point a
//! restore, its rollback, or a backup's pause passes, in some cases the
//! node's VM killed and booted again as a power cut would, then the state
//! checked with a real AMQP client. The points come from the tool itself
//! (`RABBITMQ_BACKUP_FAILPOINT_RECORD`), not from a list kept here.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::amqp::{Msg, drain, publish};
use crate::harness::fixtures::classic_messages;
use crate::harness::rabbit::RabbitNode;
use crate::harness::tool::Tool;
use crate::replay::at_most_window_duplicated;
use crate::restore::assert_same_messages;

/// Two vhosts, one durable queue each: a partial swap shows as one vhost
/// holding the snapshot's messages and the other its previous ones.
const QUEUES: [(&str, &str); 2] = [("/", "first"), ("second", "second")];

fn two_vhost_node() -> RabbitNode {
    let node = RabbitNode::start();
    node.import_definitions(&json!({
        "vhosts": [{"name": "/"}, {"name": "second"}],
        "permissions": [{"user": "guest", "vhost": "second", "configure": ".*", "write": ".*", "read": ".*"}],
        "queues": QUEUES.iter().map(|(vhost, name)| json!(
            {"name": name, "vhost": vhost, "durable": true, "auto_delete": false, "arguments": {}}
        )).collect::<Vec<_>>()
    }));
    node
}

/// The snapshot's messages (`snapshot`) or the node's own since (other
/// bodies, other counts) for each queue.
fn messages(snapshot: bool) -> Vec<Vec<Msg>> {
    QUEUES
        .iter()
        .map(|(_, queue)| {
            let all = classic_messages(queue, 10);
            if snapshot {
                all[..6].to_vec()
            } else {
                all[6..].to_vec()
            }
        })
        .collect()
}

fn publish_all(node: &RabbitNode, sets: &[Vec<Msg>]) {
    for ((vhost, _), msgs) in QUEUES.iter().zip(sets) {
        publish(node, vhost, "", msgs);
    }
}

/// Drains every queue and says whether ALL hold exactly the snapshot's
/// messages (true) or ALL exactly their previous ones (false), byte for
/// byte and in order; anything else fails the test.
fn holds_snapshot(node: &RabbitNode, what: &str) -> bool {
    let found: Vec<Vec<Msg>> = QUEUES
        .iter()
        .map(|(vhost, queue)| drain(node, vhost, queue))
        .collect();
    let snapshot = found[0].len() == messages(true)[0].len();
    for (i, msgs) in found.iter().enumerate() {
        let expected = &messages(snapshot)[i];
        let side = if snapshot { "snapshot" } else { "previous" };
        assert_same_messages(msgs, expected, &format!("{what}: queue {i} ({side})"));
    }
    snapshot
}

/// Entries beside the data directory whose name contains `kind`.
fn beside(node: &RabbitNode, kind: &str) -> Vec<std::path::PathBuf> {
    node.work_areas()
        .into_iter()
        .filter(|n| n.contains(kind))
        .map(|n| node.data_dir().parent().unwrap().join(n))
        .collect()
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn a_restore_killed_at_every_instant_is_finished_or_undone_by_resume() {
    let began = Instant::now();
    let mut node = two_vhost_node();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repo_dir.path().to_str().unwrap().to_string();
    let tool = Tool::new().with(node.env());
    publish_all(&node, &messages(true));
    tool.run(&["backup", "--repo", &repo]).ok();
    let restore = [
        "restore",
        "--repo",
        repo.as_str(),
        "--replace-messages",
        "--keep-old",
    ];
    let reset = |node: &RabbitNode| {
        for dir in beside(node, "-previous-")
            .into_iter()
            .chain(beside(node, "-displaced-"))
        {
            std::fs::remove_dir_all(dir).unwrap();
        }
        publish_all(node, &messages(false));
    };
    let drain_all = |node: &RabbitNode| {
        for (vhost, queue) in QUEUES {
            drain(node, vhost, queue);
        }
    };

    // The points of a restore that succeeds, and of one that rolls back.
    drain_all(&node);
    reset(&node);
    let (run, forward) = tool.record(&restore);
    run.ok();
    assert!(holds_snapshot(&node, "recorded restore"));
    reset(&node);
    let failing = "restore:check-counts";
    let (run, backward) = tool
        .clone()
        .var("RABBITMQ_BACKUP_FAILPOINT", &format!("{failing}=fail"))
        .record(&restore);
    run.expect_code(7);
    assert!(!holds_snapshot(&node, "recorded rollback"));
    reset(&node);
    let rollback: Vec<String> = backward
        .into_iter()
        .skip_while(|p| *p != format!("{failing}@1"))
        .skip(1)
        .collect();
    assert!(
        forward.iter().any(|p| p.starts_with("restore:in:1"))
            && rollback.iter().any(|p| p.starts_with("restore:back:0")),
        "{forward:?} {rollback:?}"
    );
    // The broker is stopped from its stop up to its start, both ways.
    let stopped = |points: &[String], stop: &str, start: &str| -> Vec<bool> {
        let mut down = false;
        points
            .iter()
            .map(|p| {
                if p.starts_with(&format!("{stop}@")) {
                    down = true;
                    false
                } else {
                    let now = down;
                    if p.starts_with(&format!("{start}@")) {
                        down = false;
                    }
                    now
                }
            })
            .collect()
    };
    let cases: Vec<(Option<&str>, String, bool)> = forward
        .iter()
        .cloned()
        .zip(stopped(&forward, "restore:stop-app", "restore:start-app"))
        .map(|(p, down)| (None, p, down))
        .chain(
            rollback
                .iter()
                .cloned()
                .zip(stopped(
                    &rollback,
                    "restore:rollback:stop-app",
                    "restore:rollback:start-app",
                ))
                .map(|(p, down)| (Some(failing), p, down)),
        )
        .collect();

    let (mut tried, mut rebooted, mut snapshot_side) = (0, 0, 0);
    // Where the time goes: killed runs, reboots, resumes, checks.
    let mut spent = [Duration::ZERO; 4];
    let mut clock = Instant::now();
    let mut lap = |i: usize| {
        spent[i] += clock.elapsed();
        clock = Instant::now();
    };
    for (i, (fail, point, down)) in cases.iter().enumerate() {
        // A reboot at every step taken with the broker stopped (each leaves
        // the stores in another state) and at every fifth point otherwise.
        let reboot = (*down && !point.contains(":journal:")) || i % 5 == 0;
        let what = format!("{point} (rollback: {}, reboot: {reboot})", fail.is_some());
        let killer = match fail {
            Some(f) => tool
                .clone()
                .var("RABBITMQ_BACKUP_FAILPOINT", &format!("{f}=fail")),
            None => tool.clone(),
        };
        killer.kill_at(point, &restore, Duration::from_secs(180));
        lap(0);
        if reboot {
            node.restart();
            rebooted += 1;
        }
        lap(1);
        let resumed = tool.run(&["restore", "--resume", "--repo", &repo]);
        lap(2);
        assert!(
            [0, 7].contains(&resumed.code),
            "{what}: exit {}\n{}",
            resumed.code,
            resumed.stderr
        );
        let snapshot = holds_snapshot(&node, &what);
        // The previous stores are never deleted: kept (--keep-old) when the
        // restore went through, back in place when it was undone.
        let kept = beside(&node, "-previous-");
        if snapshot {
            snapshot_side += 1;
            assert_eq!(kept.len(), 1, "{what}: {kept:?}");
            assert_eq!(entries(&kept[0]), QUEUES.len(), "{what}: {kept:?}");
        } else {
            assert!(kept.is_empty(), "{what}: {kept:?}");
        }
        assert!(
            beside(&node, "-restore-").is_empty(),
            "{what}: work area left"
        );
        if !reboot {
            assert!(beside(&node, "-displaced-").is_empty(), "{what}");
        }
        tried += 1;
        reset(&node);
        lap(3);
    }
    eprintln!(
        "restore crash points: {tried} tried, {tried} recovered ({rebooted} with a reboot; {snapshot_side} finished, {} undone) in {:.0} s (killed runs {:.0} s, reboots {:.0} s, resumes {:.0} s, checks {:.0} s)",
        tried - snapshot_side,
        began.elapsed().as_secs_f64(),
        spent[0].as_secs_f64(),
        spent[1].as_secs_f64(),
        spent[2].as_secs_f64(),
        spent[3].as_secs_f64()
    );
}

/// A classic queue and a quorum queue: `auto` swaps the one in and replays
/// the other's logical records once the classic counts are accepted.
fn classic_and_quorum_node() -> RabbitNode {
    let node = RabbitNode::start();
    node.import_definitions(&json!({
        "queues": [
            {"name": "first", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}},
            {"name": "quorum", "vhost": "/", "durable": true, "auto_delete": false,
             "arguments": {"x-queue-type": "quorum"}}
        ]
    }));
    node
}

/// The steps after the swap's counts (the replay of the logical records,
/// the cleanup) killed one by one, the first of every five with a reboot;
/// `--resume` must end with the snapshot's classic messages swapped in,
/// the quorum queue's replayed (at most one window twice), and the previous
/// stores kept. The steps before are those of the test above.
#[test]
fn a_swap_then_replay_killed_after_the_counts_is_finished_by_resume() {
    let began = Instant::now();
    let mut node = classic_and_quorum_node();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repo_dir.path().to_str().unwrap().to_string();
    let window = 4;
    let tool = Tool::new().with(node.env()).var(
        "RABBITMQ_BACKUP_FAILPOINT",
        &format!("replay:window={window}"),
    );
    let classic = classic_messages("first", 6);
    let quorum = classic_messages("quorum", 12);
    publish(&node, "/", "", &classic);
    publish(&node, "/", "", &quorum);
    tool.run(&["backup", "--repo", &repo]).ok();
    let restore = [
        "restore",
        "--repo",
        repo.as_str(),
        "--replace-messages",
        "--keep-old",
    ];
    // The node moves on; the restore replaces both queues' messages.
    let reset = |node: &RabbitNode| {
        for dir in beside(node, "-previous-")
            .into_iter()
            .chain(beside(node, "-displaced-"))
        {
            std::fs::remove_dir_all(dir).unwrap();
        }
        publish(node, "/", "", &classic_messages("first", 9)[6..]);
        publish(node, "/", "", &classic_messages("quorum", 15)[12..]);
    };
    let check = |node: &RabbitNode, what: &str| {
        assert_same_messages(&drain(node, "/", "first"), &classic, what);
        at_most_window_duplicated(&drain(node, "/", "quorum"), &quorum, window, what);
        let kept = beside(node, "-previous-");
        assert_eq!(kept.len(), 1, "{what}: {kept:?}");
        assert!(
            beside(node, "-restore-").is_empty(),
            "{what}: work area left"
        );
    };
    drain(&node, "/", "first");
    drain(&node, "/", "quorum");
    reset(&node);
    let (run, points) = tool.record(&restore);
    assert!(
        run.ok().stdout.contains("method: swap+replay"),
        "{}",
        run.stdout
    );
    check(&node, "recorded restore");
    reset(&node);
    let after: Vec<String> = points
        .into_iter()
        .skip_while(|p| !p.starts_with("restore:check-counts@"))
        .skip(1)
        .collect();
    assert!(
        after
            .first()
            .is_some_and(|p| p == "restore:journal:replaying@1")
            && after.iter().any(|p| p.starts_with("replay:")),
        "{after:?}"
    );
    for (i, point) in after.iter().enumerate() {
        let reboot = i % 5 == 0;
        let what = format!("{point} (reboot: {reboot})");
        tool.kill_at(point, &restore, Duration::from_secs(180));
        if reboot {
            node.restart();
        }
        let resumed = tool.run(&["restore", "--resume", "--repo", &repo]);
        assert_eq!(resumed.code, 0, "{what}: {}", resumed.stderr);
        check(&node, &what);
        reset(&node);
    }
    eprintln!(
        "swap-then-replay crash points: {} tried and finished in {:.0} s",
        after.len(),
        began.elapsed().as_secs_f64()
    );
}

#[test]
fn a_backup_killed_at_every_instant_leaves_no_half_snapshot_and_no_stopped_broker() {
    let mut node = two_vhost_node();
    publish_all(&node, &messages(true));
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repo_dir.path().to_str().unwrap().to_string();
    let tool = Tool::new()
        .with(node.env())
        .var("RABBITMQ_BACKUP_PAUSE_WATCHDOG", "3");
    let backup = ["backup", "--repo", repo.as_str(), "--chunk-size", "1"];
    let (run, points) = tool.record(&backup);
    run.ok();
    assert!(
        points
            .iter()
            .any(|p| p.starts_with("backup:after-stop-app")),
        "{points:?}"
    );
    let snapshots = |tool: &Tool| {
        tool.run(&["list", "--repo", &repo, "--json"]).ok().json()["snapshots"]
            .as_array()
            .unwrap()
            .len()
    };
    for point in &points {
        tool.kill_at(point, &backup, Duration::from_secs(180));
        if point.starts_with("backup:start-app") {
            // A power cut in the pause: the broker boots by itself.
            node.restart();
        } else {
            // Stopped or not, the broker runs again: the watchdog starts it.
            node.wait_ready();
        }
        assert_eq!(snapshots(&tool), 1, "{point}: only the recorded snapshot");
        assert!(holds_snapshot(&node, point), "{point}");
        publish_all(&node, &messages(true));
    }
    // The next backup succeeds and clears what the killed ones left.
    let run = tool.run(&["backup", "--repo", &repo]);
    run.ok();
    assert!(node.work_areas().is_empty(), "{:?}", node.work_areas());
    assert_eq!(snapshots(&tool), 2);
    tool.run(&["verify", "--all", "--read-data", "--repo", &repo])
        .ok();
}
