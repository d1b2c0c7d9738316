//! Operator experience: help texts and JSON schemas (snapshot tests),
//! config-file precedence, the metrics file, completions, man page, and the
//! contrib units.
//!
//! Snapshots live in tests/snapshots/; after an intended change, rerun with
//! `RABBITMQ_BACKUP_UPDATE_SNAPSHOTS=1` and review the diff.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::backup::loaded_node;
use crate::harness::tool::Tool;

fn snapshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

/// Compares `actual` with the stored snapshot `name` (or rewrites it).
#[track_caller]
fn assert_snapshot(name: &str, actual: &str) {
    let path = snapshot_dir().join(name);
    if std::env::var("RABBITMQ_BACKUP_UPDATE_SNAPSHOTS").is_ok() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}; run with RABBITMQ_BACKUP_UPDATE_SNAPSHOTS=1 to create it",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{name} changed; if intended, rerun with RABBITMQ_BACKUP_UPDATE_SNAPSHOTS=1 and review.\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

/// The shape of a JSON document: keys and value types, arrays by their
/// first element. Values (ids, times, sizes) are left out.
fn shape(v: &Value) -> Value {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
    }
}

#[track_caller]
fn assert_schema(name: &str, output: &Value) {
    assert_snapshot(
        &format!("json/{name}.json"),
        &(serde_json::to_string_pretty(&shape(output)).unwrap() + "\n"),
    );
}

const COMMANDS: [&str; 11] = [
    "backup",
    "restore",
    "list",
    "show",
    "verify",
    "exclude",
    "prune",
    "pin",
    "check-repo",
    "completions",
    "man",
];

#[test]
fn help_texts_are_stable_and_show_examples() {
    let tool = Tool::new();
    let top = tool.run(&["--help"]);
    assert_snapshot("help/rabbitmq-backup.txt", &top.ok().stdout);
    for cmd in COMMANDS {
        let run = tool.run(&[cmd, "--help"]);
        assert!(
            run.ok().stdout.contains("Example"),
            "{cmd} --help shows an example"
        );
        assert_snapshot(&format!("help/{cmd}.txt"), &run.stdout);
    }
    // Secrets from the environment are never shown in help.
    let run = tool
        .clone()
        .var("RABBITMQ_PASSWORD", "help-secret-77")
        .var("RABBITMQ_AMQP_URL", "amqp://u:p-secret-88@h/")
        .run(&["backup", "--help"]);
    assert!(!run.stdout.contains("help-secret-77") && !run.stdout.contains("p-secret-88"));
    // Usage errors exit 2 and say what is wrong.
    let run = tool.run(&["backup", "--chunk-size", "0"]);
    run.expect_code(2);
    assert!(run.stderr.contains("--chunk-size"), "{}", run.stderr);
    tool.run(&["no-such-command"]).expect_code(2);
    let run = tool.run(&["backup", "--no-such-flag", "--json"]);
    run.expect_code(2);
    assert_eq!(run.json()["error"]["kind"], "usage");
}

#[test]
fn completions_and_man_page_come_from_the_command_definitions() {
    let tool = Tool::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = tool.run(&["completions", shell]);
        assert!(run.ok().stdout.contains("exclude-routing-key"), "{shell}");
    }
    let man = tool.run(&["man"]);
    assert!(
        man.ok().stdout.starts_with(".ie") || man.stdout.contains(".TH"),
        "roff output"
    );
    assert!(man.stdout.contains("rabbitmq\\-backup") || man.stdout.contains("rabbitmq-backup"));
}

#[test]
fn flags_beat_environment_beat_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let repo = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let config = dir.path().join("rabbitmq-backup.toml");
    std::fs::write(
        &config,
        format!(
            "repo = \"{}\"\n[backup]\nchunk_size = 0\n",
            repo("from-file")
        ),
    )
    .unwrap();
    let tool = Tool::new();
    let c = config.to_str().unwrap();
    let used =
        |run: &crate::harness::tool::Run| run.json()["repository"].as_str().unwrap().to_string();
    assert_eq!(
        used(tool.run(&["list", "--config", c, "--json"]).ok()),
        repo("from-file")
    );
    let env = tool.clone().var("RABBITMQ_BACKUP_REPO", &repo("from-env"));
    assert_eq!(
        used(env.run(&["list", "--config", c, "--json"]).ok()),
        repo("from-env")
    );
    assert_eq!(
        used(
            env.run(&[
                "list",
                "--config",
                c,
                "--repo",
                &repo("from-flag"),
                "--json"
            ])
            .ok()
        ),
        repo("from-flag")
    );
    // The config file is validated like flags: its bad chunk size is named.
    let run = tool.run(&["backup", "--config", c]);
    run.expect_code(2);
    assert!(run.stderr.contains("--chunk-size"), "{}", run.stderr);
    // ... and a flag overrides it.
    let run = tool.run(&[
        "backup",
        "--config",
        c,
        "--chunk-size",
        "8",
        "--management-url",
        "http://127.0.0.1:1",
        "--rabbitmqctl",
        "/nonexistent",
    ]);
    assert!(!run.stderr.contains("--chunk-size"), "{}", run.stderr);
    // Unknown keys are named.
    std::fs::write(&config, "repositry = \"x\"\n").unwrap();
    let run = tool.run(&["list", "--config", c]);
    run.expect_code(2);
    assert!(run.stderr.contains("repositry"), "{}", run.stderr);
}

#[test]
fn the_metrics_file_tells_what_the_last_backup_did() {
    let node = loaded_node();
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("rabbitmq_backup.prom");
    let repo = dir.path().join("repo");
    let tool = Tool::new().with(node.env());
    let m = metrics.to_str().unwrap();
    let report = tool
        .run(&[
            "backup",
            "--repo",
            repo.to_str().unwrap(),
            "--metrics-file",
            m,
            "--json",
        ])
        .ok()
        .json();
    let text = std::fs::read_to_string(&metrics).unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("rabbitmq_backup_last_run_success"), 1.0);
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    let success = value("rabbitmq_backup_last_success_timestamp_seconds");
    assert!((now - success).abs() < 120.0, "{success} vs {now}");
    assert_eq!(
        value("rabbitmq_backup_stored_bytes"),
        report["stored_bytes"].as_f64().unwrap()
    );
    assert_eq!(value("rabbitmq_backup_messages"), 75.0);
    assert_eq!(
        value("rabbitmq_backup_pause_seconds"),
        report["pause_ms"].as_f64().unwrap() / 1000.0
    );
    assert!(
        text.contains(&format!("rabbitmq_backup_uncovered_messages{{node=\"{}\",vhost=\"/\",queue=\"quorum\",type=\"quorum\"}} 5", node.name)),
        "{text}"
    );
    // A failed run says so and keeps the last success time.
    tool.run(&[
        "backup",
        "--repo",
        repo.to_str().unwrap(),
        "--metrics-file",
        m,
        "--before",
        "exit 1",
    ])
    .expect_code(1);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("rabbitmq_backup_last_run_success{"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("rabbitmq_backup_last_run_success") && l.ends_with(" 0")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{success}")),
        "last success kept: {text}"
    );
}

#[test]
fn every_json_output_keeps_its_schema() {
    let node = loaded_node();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let r = repo.to_str().unwrap();
    let tool = Tool::new().with(node.env());
    let backup = tool.run(&["backup", "--repo", r, "--json"]).ok().json();
    let id = backup["id"].as_str().unwrap().to_string();
    assert_schema("backup", &backup);
    assert_schema(
        "list",
        &tool.run(&["list", "--repo", r, "--json"]).ok().json(),
    );
    assert_schema(
        "show",
        &tool.run(&["show", &id, "--repo", r, "--json"]).ok().json(),
    );
    assert_schema(
        "verify",
        &tool
            .run(&["verify", &id, "--read-data", "--repo", r, "--json"])
            .ok()
            .json(),
    );
    assert_schema(
        "check-repo",
        &tool.run(&["check-repo", "--repo", r, "--json"]).ok().json(),
    );
    assert_schema(
        "restore-dry-run",
        &tool
            .run(&["restore", "--dry-run", "--repo", r, "--json"])
            .ok()
            .json(),
    );
    node.ctl(&["purge_queue", "-p", "/", "classic"]);
    node.ctl(&["purge_queue", "-p", "oro", "oro.default"]);
    let restore = tool
        .run(&[
            "restore",
            "--repo",
            r,
            "--exclude-routing-key",
            "oro.email.*",
            "--json",
        ])
        .ok()
        .json();
    assert_schema("restore", &restore);
    assert_schema(
        "exclude",
        &tool
            .run(&[
                "exclude",
                "--vhost",
                "oro",
                "--queue",
                "oro.default",
                "--routing-key",
                "oro.search.*",
                "--json",
            ])
            .ok()
            .json(),
    );
    assert_schema(
        "pin",
        &tool.run(&["pin", &id, "--repo", r, "--json"]).ok().json(),
    );
    assert_schema(
        "prune",
        &tool
            .run(&["prune", "--keep-last", "1", "--repo", r, "--json"])
            .ok()
            .json(),
    );
    let error = tool.run(&["show", "nosuch", "--repo", r, "--json"]);
    error.expect_code(2);
    assert_schema("error", &error.json());
    assert_eq!(error.json()["error"]["kind"], json!("usage"));
}

#[test]
fn the_systemd_units_pass_systemd_analyze() {
    let dir = tempfile::tempdir().unwrap();
    let contrib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    for unit in ["rabbitmq-backup.service", "rabbitmq-backup.timer"] {
        let text = std::fs::read_to_string(contrib.join(unit)).unwrap();
        // Point ExecStart at the binary this test built (it is not installed).
        let text = text.replace(
            "/usr/local/bin/rabbitmq-backup",
            env!("CARGO_BIN_EXE_rabbitmq-backup"),
        );
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("rabbitmq-backup.service"))
        .arg(dir.path().join("rabbitmq-backup.timer"))
        .output()
        .expect(
            "systemd-analyze (Debian package systemd; scripts/install-deps --tests installs it)",
        );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("rabbitmq-backup"),
        "warnings about the units: {stderr}"
    );
}

#[test]
fn the_kubernetes_example_and_the_sample_config_parse() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let config = std::fs::read_to_string(root.join("rabbitmq-backup.toml")).unwrap();
    rabbitmq_backup::config::parse(&config).expect("the sample config is valid");
    let yaml = std::fs::read_to_string(root.join("kubernetes/cronjob.yaml")).unwrap();
    assert!(yaml.contains("kind: CronJob") && yaml.contains("concurrencyPolicy: Forbid"));
}
