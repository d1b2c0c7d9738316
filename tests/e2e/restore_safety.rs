//! What a restore must never do: start a broker on half-swapped stores,
//! let a backup's watchdog start it mid-swap, stop it before finding out
//! that the disk cannot take the swap, run `--after` after a failed
//! exclusion, roll back an expected shortfall, reuse a kept store's name;
//! and what a dry run must predict.

use std::path::Path;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use serde_json::{Value, json};

use crate::backup::loaded_node;
use crate::harness::amqp::{Msg, drain, hold_consumer, publish};
use crate::harness::fixtures::{classic_messages, oro_messages, priority_order};
use crate::harness::free_port;
use crate::harness::rabbit::RabbitNode;
use crate::harness::tool::Tool;
use crate::restore::assert_same_messages;

fn eval(node: &RabbitNode, expr: &str) -> String {
    node.ctl(&["eval", expr]).trim().to_string()
}

fn running(node: &RabbitNode) -> bool {
    eval(node, "rabbit:is_running().") == "true"
}

fn watchdog_waits(node: &RabbitNode) -> bool {
    eval(node, "is_pid(whereis(rabbitmq_backup_watchdog)).") == "true"
}

/// A local repository with one snapshot of a loaded node.
fn backed_up() -> (RabbitNode, tempfile::TempDir, String, Tool) {
    let node = loaded_node();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap().to_string();
    let tool = Tool::new().with(node.env());
    tool.run(&["backup", "--repo", &repo]).ok();
    (node, dir, repo, tool)
}

/// Other messages in the classic queue than the snapshot's.
fn move_on(node: &RabbitNode) {
    drain(node, "/", "classic");
    publish(node, "/", "", &classic_messages("classic", 33)[30..]);
}

#[test]
fn an_interrupted_restore_is_shown_by_a_dry_run_and_never_started_half_swapped() {
    let (node, _dir, repo, tool) = backed_up();
    move_on(&node);
    let restore = ["restore", "--repo", repo.as_str(), "--replace-messages"];
    // Killed with the first vhost's store aside and the snapshot's not yet in.
    tool.kill_at("restore:in:0", &restore, Duration::from_secs(180));
    let areas = node.work_areas();

    // A dry run says what --resume would do, and changes nothing.
    let run = tool.run(&["restore", "--resume", "--dry-run", "--repo", &repo]);
    run.ok();
    assert!(
        run.stdout.contains("--resume would stop the broker"),
        "{}",
        run.stdout
    );
    assert!(!running(&node));
    assert_eq!(node.work_areas(), areas);
    // --resume finishes the restore it finds, not another snapshot.
    let run = tool.run(&[
        "restore",
        "--resume",
        "20000101T000000Z-00000000",
        "--repo",
        &repo,
    ]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("leave the snapshot out"),
        "{}",
        run.stderr
    );

    // The node cannot stop the broker (the stop fails on the node, over
    // either transport): nothing moves, nothing starts.
    let run = tool
        .clone()
        .var("RABBITMQ_BACKUP_FAILPOINT", "ctl:stop-app=fail-on-node")
        .run(&["restore", "--resume", "--repo", &repo]);
    run.expect_code(8);
    assert!(run.stderr.contains("restore --resume"), "{}", run.stderr);
    assert!(!running(&node), "never started on half-swapped stores");
    assert_eq!(node.work_areas(), areas, "the previous stores are kept");

    tool.run(&["restore", "--resume", "--repo", &repo]).ok();
    assert_same_messages(
        &drain(&node, "/", "classic"),
        &classic_messages("classic", 30),
        "classic",
    );
    assert!(node.work_areas().is_empty(), "{:?}", node.work_areas());

    // Killed with the broker running on restored stores, not yet checked: a
    // backup would copy a half-finished restore, and is refused.
    move_on(&node);
    tool.kill_at("restore:check-counts", &restore, Duration::from_secs(180));
    let run = tool.run(&["backup", "--repo", &repo]);
    run.expect_code(4);
    assert!(run.stderr.contains("interrupted restore"), "{}", run.stderr);
    tool.run(&["restore", "--resume", "--repo", &repo]).ok();
}

#[test]
fn a_watchdog_left_by_a_killed_backup_never_starts_the_broker_during_a_restore() {
    let (node, _dir, repo, tool) = backed_up();
    let backup = ["backup", "--repo", repo.as_str()];
    let restore = ["restore", "--repo", repo.as_str(), "--replace-messages"];
    // Backups over rabbitmqctl (no cookie where the tool looks): over Erlang
    // distribution the watchdog would start the broker as soon as the
    // killed tool's connection closed.
    let empty_home = tempfile::tempdir().unwrap();
    let patient = tool
        .clone()
        .var("RABBITMQ_BACKUP_PAUSE_WATCHDOG", "900")
        .var("HOME", empty_home.path().to_str().unwrap())
        .var("RABBITMQCTL", node.ctl_with_home().to_str().unwrap());

    // A backup killed in its pause: the broker stays stopped, a watchdog waits.
    patient.kill_at("backup:after-stop-app", &backup, Duration::from_secs(180));
    assert!(!running(&node) && watchdog_waits(&node));
    // The restore holds the lock, so that backup is dead: it starts the
    // broker (standing the watchdog down) and goes on.
    let run = tool.run(&restore);
    run.ok();
    assert!(
        run.stderr.contains("killed during its pause"),
        "{}",
        run.stderr
    );
    assert!(!watchdog_waits(&node));

    // Killed again, and started by hand: the watchdog still waits.
    patient.kill_at("backup:after-stop-app", &backup, Duration::from_secs(180));
    node.ctl(&["start_app"]);
    assert!(running(&node) && watchdog_waits(&node));
    move_on(&node);
    // The restore's stop stands it down: nothing can start the broker on
    // half-swapped stores.
    let (mut child, _marker) = tool.spawn_at("restore:in:0", &restore, Duration::from_secs(180));
    assert!(!watchdog_waits(&node), "the watchdog was stood down");
    assert!(!running(&node));
    child.kill().unwrap();
    child.wait().unwrap();
    tool.run(&["restore", "--resume", "--repo", &repo]).ok();
    assert_same_messages(
        &drain(&node, "/", "classic"),
        &classic_messages("classic", 30),
        "classic",
    );
}

/// Lines of the node's log saying the broker stopped.
fn stops(node: &RabbitNode) -> usize {
    std::fs::read_to_string(node.root().join("log").join(format!("{}.log", node.name)))
        .unwrap_or_default()
        .matches("Successfully stopped RabbitMQ")
        .count()
}

#[test]
fn disk_problems_are_refused_before_the_broker_stops() {
    let elsewhere = tempfile::tempdir_in("/dev/shm").unwrap();
    let (node, _dir, repo, tool) = backed_up();
    let stopped = stops(&node);

    // The stop-app copy would not fit beside the data directory.
    let run = tool
        .clone()
        .var("RABBITMQ_BACKUP_FAILPOINT", "staging:free-bytes=1000")
        .run(&["backup", "--repo", &repo]);
    run.expect_code(4);
    assert!(
        run.stderr.contains("free") && run.stderr.contains("--live"),
        "{}",
        run.stderr
    );
    assert_eq!(stops(&node), stopped, "the broker was not stopped");

    // The message stores live on another filesystem (msg_stores is a
    // symlink to a tmpfs): a rename cannot move them.
    node.ctl(&["stop_app"]);
    let stores = node.data_dir().join("msg_stores");
    let moved = elsewhere.path().join("msg_stores");
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(&stores)
        .arg(&moved)
        .status()
        .unwrap();
    assert!(copy.success());
    std::fs::remove_dir_all(&stores).unwrap();
    std::os::unix::fs::symlink(&moved, &stores).unwrap();
    node.ctl(&["start_app"]);
    let stopped = stops(&node);
    let before = node.export_definitions();
    node.ctl(&["purge_queue", "-p", "/", "classic"]);
    let run = tool.run(&["restore", "--repo", &repo, "--replace-messages"]);
    run.expect_code(4);
    assert!(run.stderr.contains("another filesystem"), "{}", run.stderr);
    assert_eq!(stops(&node), stopped, "the broker was not stopped");
    assert_eq!(node.export_definitions()["users"], before["users"]);
    assert_eq!(node.counts("oro")["oro.default"], 40);
    assert!(node.work_areas().is_empty(), "{:?}", node.work_areas());
    drop(node);
}

#[test]
fn restoring_the_same_snapshot_twice_keeping_the_previous_stores_keeps_both() {
    let (node, _dir, repo, tool) = backed_up();
    let mut kept = Vec::new();
    for _ in 0..2 {
        let report = tool
            .run(&[
                "restore",
                "--repo",
                &repo,
                "--replace-messages",
                "--keep-old",
                "--json",
            ])
            .ok()
            .json();
        kept.push(report["previous_store"].as_str().unwrap().to_string());
    }
    assert_ne!(kept[0], kept[1]);
    for k in &kept {
        assert!(Path::new(k).join(node_vhost_dir("oro")).is_dir(), "{k}");
    }
    assert_eq!(node.counts("/")["classic"], 30);
}

/// A vhost's store directory name (`<VH>`).
fn node_vhost_dir(vhost: &str) -> String {
    rabbitmq_backup::rabbit::datadir::VhostDir::of(vhost)
        .name()
        .to_string()
}

#[test]
fn a_failed_exclusion_does_not_run_after_and_resume_finishes_it() {
    let (node, _dir, repo, tool) = backed_up();
    let marker = tempfile::tempdir().unwrap();
    let after_ran = marker.path().join("after-ran");
    let after = format!("touch {}", after_ran.display());
    // No AMQP listener where the exclusion is told to connect.
    let run = tool
        .clone()
        .var(
            "RABBITMQ_AMQP_URL",
            &format!("amqp://127.0.0.1:{}/", free_port()),
        )
        .run(&[
            "restore",
            "--repo",
            &repo,
            "--replace-messages",
            "--exclude-routing-key",
            "oro.email.*",
            "--after",
            &after,
        ]);
    run.expect_code(8);
    assert!(run.stderr.contains("--after was not run"), "{}", run.stderr);
    assert!(!after_ran.exists(), "--after must not start the consumers");
    assert_eq!(
        node.counts("oro")["oro.default"],
        40,
        "restored, not yet filtered"
    );

    // Without --amqp-url the tool asks the node for its listener.
    tool.run(&["restore", "--resume", "--repo", &repo, "--after", &after])
        .ok();
    assert!(after_ran.exists());
    let order = priority_order(&oro_messages(40));
    let email = |m: &Msg| m.routing_key.starts_with("oro.email.");
    let kept: Vec<Msg> = order.iter().filter(|m| !email(m)).cloned().collect();
    let mail: Vec<Msg> = order.iter().filter(|m| email(m)).cloned().collect();
    assert_same_messages(&drain(&node, "oro", "oro.default"), &kept, "kept");
    assert_same_messages(
        &drain(&node, "oro", "oro.default.excluded"),
        &mail,
        "excluded",
    );
}

#[test]
fn consumers_are_checked_after_before_which_stops_them() {
    let (node, _dir, repo, tool) = backed_up();
    let _consumer = hold_consumer(&node, "/", "classic");
    let restore = ["restore", "--repo", repo.as_str(), "--replace-messages"];
    let run = tool.run(&restore);
    run.expect_code(4);
    assert!(run.stderr.contains("consumers"), "{}", run.stderr);
    // --before stops them (here: closes every client connection).
    let before = "$RABBITMQCTL -n $RABBITMQ_NODENAME close_all_connections 'restore'";
    let mut args = restore.to_vec();
    args.extend(["--before", before]);
    tool.run(&args).ok();
    assert_eq!(node.counts("/")["classic"], 30);
}

#[test]
fn a_dry_run_predicts_the_refusals_before_downloading() {
    let (node, dir, repo, tool) = backed_up();
    // Without chunks, a download would fail (exit 3): a refusal (exit 4)
    // shows the check came first.
    for data in walk(dir.path()).filter(|p| p.ends_with("data")) {
        std::fs::remove_dir_all(data).unwrap();
    }
    for args in [
        vec!["restore", "--dry-run", "--repo", &repo],
        vec!["restore", "--repo", &repo],
    ] {
        let run = tool.run(&args);
        run.expect_code(4);
        assert!(
            run.stderr.contains("--replace-messages"),
            "{args:?}: {}",
            run.stderr
        );
    }
    let run = tool.run(&["restore", "--dry-run", "--repo", &repo]);
    assert!(
        run.stderr.contains("dry run: the restore would be refused"),
        "{}",
        run.stderr
    );
    let consumer = hold_consumer(&node, "/", "classic");
    let run = tool.run(&[
        "restore",
        "--dry-run",
        "--replace-messages",
        "--repo",
        &repo,
    ]);
    run.expect_code(4);
    assert!(run.stderr.contains("consumers"), "{}", run.stderr);
    drop(consumer);
    assert_eq!(node.counts("/")["classic"], 30);
    assert!(node.work_areas().is_empty());
}

fn walk(dir: &Path) -> impl Iterator<Item = std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
                out.push(e.path());
            }
        }
    }
    out.into_iter()
}

#[test]
fn expected_shortfalls_are_reported_not_rolled_back() {
    let node = RabbitNode::start();
    node.import_definitions(&json!({
        "policies": [{"vhost": "/", "name": "expire", "pattern": "^expiring$", "apply-to": "queues",
                      "definition": {"message-ttl": 40000}, "priority": 0}],
        "queues": [
            {"name": "expiring", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}},
            {"name": "mixed", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}}
        ]
    }));
    publish(&node, "/", "", &classic_messages("expiring", 4));
    let mut mixed = classic_messages("mixed", 5);
    for m in &mut mixed[3..] {
        m.properties = BasicProperties::default().with_delivery_mode(1);
    }
    publish(&node, "/", "", &mixed);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap().to_string();
    let tool = Tool::new().with(node.env());
    let backup = tool
        .run(&[
            "backup",
            "--repo",
            &repo,
            "--allow-transient-loss",
            "--json",
        ])
        .ok()
        .json();
    let caveats = |name: &str| -> Value {
        let q = backup["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name);
        q.unwrap()["caveats"].clone()
    };
    assert_eq!(caveats("expiring"), json!(["ttl"]));
    assert_eq!(caveats("mixed"), json!(["transient"]));
    // The TTL passes on the node too.
    let deadline = Instant::now() + Duration::from_secs(180);
    while node.counts("/")["expiring"] > 0 {
        assert!(Instant::now() < deadline, "the messages never expired");
        std::thread::sleep(Duration::from_millis(500));
    }
    let run = tool.run(&["restore", "--repo", &repo, "--replace-messages", "--json"]);
    let report = run.ok().json();
    for q in report["queues"].as_array().unwrap() {
        assert_eq!(q["status"], "expected-shortfall", "{q}");
    }
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("TTL") && warnings.contains("non-persistent"),
        "{warnings}"
    );
    assert_same_messages(&drain(&node, "/", "mixed"), &mixed[..3], "persistent ones");
}
