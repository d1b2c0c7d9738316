//! The backup's pause and how the tool reaches the node: over Erlang
//! distribution the watchdog restarts the broker as soon as the tool's
//! connection closes; a watchdog that had to act fails the backup; without
//! distribution the tool uses rabbitmqctl and says so.

use std::time::Duration;

use crate::backup::loaded_node;
use crate::harness::rabbit::RabbitNode;
use crate::harness::tool::Tool;

fn node_log(node: &RabbitNode) -> String {
    std::fs::read_to_string(node.root().join("log").join(format!("{}.log", node.name)))
        .unwrap_or_default()
}

fn snapshot_count(tool: &Tool, repo: &str) -> usize {
    tool.run(&["list", "--repo", repo, "--json"]).ok().json()["snapshots"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn a_backup_killed_in_its_pause_has_the_broker_started_at_once() {
    let mut node = loaded_node();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repo_dir.path().to_str().unwrap();
    // Ten minutes of silence would be needed to start the broker on time
    // alone; only the closed connection can explain a start in time here.
    let tool = Tool::new()
        .with(node.env())
        .var("RABBITMQ_BACKUP_PAUSE_WATCHDOG", "600");
    tool.kill_at(
        "backup:after-stop-app",
        &["backup", "--repo", repo],
        Duration::from_secs(180),
    );
    node.wait_ready();
    assert_eq!(node.counts("/")["classic"], 30);
    let log = node_log(&node);
    assert!(
        log.contains("rabbitmq-backup: the tool's connection closed during a backup pause"),
        "{log}"
    );
    assert_eq!(snapshot_count(&tool, repo), 0);
}

#[test]
fn without_distribution_rabbitmqctl_is_used_and_a_watchdog_that_acted_fails_the_backup() {
    let node = loaded_node();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repo_dir.path().to_str().unwrap();
    let tool = Tool::new().with(node.env());

    let run = tool.run(&["backup", "--repo", repo, "--json"]);
    assert_eq!(run.ok().json()["control"], "distribution");
    assert!(
        run.stderr.contains("over Erlang distribution"),
        "{}",
        run.stderr
    );

    // No cookie where the tool looks (as root without the broker's HOME),
    // but a rabbitmqctl that finds its own, like Debian's wrapper does.
    let empty_home = tempfile::tempdir().unwrap();
    let fallback = tool
        .clone()
        .var("HOME", empty_home.path().to_str().unwrap())
        .var("RABBITMQCTL", node.ctl_with_home().to_str().unwrap());
    let run = fallback.run(&["backup", "--repo", repo, "--json"]);
    let report = run.ok().json();
    assert_eq!(report["control"], "rabbitmqctl");
    // Quorum queues are captured too (logical records), over rabbitmqctl as well.
    assert_eq!(report["covered_messages"], 75, "{report}");
    assert!(run.stderr.contains("using rabbitmqctl"), "{}", run.stderr);
    assert!(run.stderr.contains(".erlang.cookie"), "{}", run.stderr);

    // The tool stalls in the pause past its watchdog (alive, connected):
    // the broker is started without it, so the copy may be inconsistent
    // and no snapshot is made.
    for tool in [&tool, &fallback] {
        let run = tool
            .clone()
            .var("RABBITMQ_BACKUP_PAUSE_WATCHDOG", "3")
            .var("RABBITMQ_BACKUP_FAILPOINT", "backup:after-stop-app=sleep:7")
            .run(&["backup", "--repo", repo]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr
                .contains("the pause watchdog started the broker again"),
            "{}",
            run.stderr
        );
        assert_eq!(node.counts("/")["classic"], 30);
    }
    assert_eq!(snapshot_count(&tool, repo), 2);
}
