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

/// Compares the shape of a `--json` output with its snapshot.
#[track_caller]
pub fn assert_schema(name: &str, output: &Value) {
    assert_snapshot(
        &format!("json/{name}.json"),
        &(serde_json::to_string_pretty(&shape(output)).unwrap() + "\n"),
    );
}

const COMMANDS: [&str; 12] = [
    "backup",
    "restore",
    "list",
    "show",
    "verify",
    "messages",
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
    for name in ["from-file", "from-env", "from-flag"] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
    }
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
            // An uncovered queue for its metric.
            "--skip-quorum",
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
    // The report's shape with an uncovered queue (and why) in it; the
    // snapshot of the default backup (the quorum queue captured) is read below.
    let skipping = tool
        .run(&["backup", "--repo", r, "--json", "--skip-quorum"])
        .ok()
        .json();
    assert_schema("backup", &skipping);
    let backup = tool.run(&["backup", "--repo", r, "--json"]).ok().json();
    let id = backup["id"].as_str().unwrap().to_string();
    assert_eq!(backup["uncovered_queues"], json!([]), "{backup}");
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
            // --method swap: the quorum queue is then named uncovered,
            // which keeps that list's items in the schema.
            .run(&[
                "restore",
                "--dry-run",
                "--replace-messages",
                "--method",
                "swap",
                "--repo",
                r,
                "--json",
            ])
            .ok()
            .json(),
    );
    node.ctl(&["purge_queue", "-p", "/", "classic"]);
    node.ctl(&["purge_queue", "-p", "oro", "oro.default"]);
    node.ctl(&["purge_queue", "-p", "/", "quorum"]);
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

/// The `value:` of each `- name: X` env entry of a YAML document.
fn env_values(doc: &str) -> std::collections::BTreeMap<String, String> {
    let lines: Vec<&str> = doc.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter_map(|w| {
            let name = w[0].strip_prefix("- name: ")?;
            let value = w[1].strip_prefix("value: ")?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

/// The text after `key: ` on the first line that has it.
fn field<'a>(doc: &'a str, key: &str) -> &'a str {
    doc.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in\n{doc}"))
}

#[test]
fn the_kubernetes_examples_back_up_each_node_beside_it_and_the_sample_config_parses() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let config = std::fs::read_to_string(root.join("rabbitmq-backup.toml")).unwrap();
    rabbitmq_backup::config::check(&config).expect("the sample config is valid");
    let yaml = std::fs::read_to_string(root.join("kubernetes/cronjob.yaml")).unwrap();
    assert!(yaml.contains("kind: CronJob") && yaml.contains("concurrencyPolicy: Forbid"));
    assert!(!yaml.contains('\t'), "YAML is indented with spaces");

    // One CronJob per node, each pointed at one pod only: its management
    // API by the pod's stable DNS name, its node name, its data directory
    // and claim, and scheduled beside that pod.
    let docs: Vec<&str> = yaml.split("\n---\n").collect();
    assert!(docs.len() >= 3, "one CronJob per node of a 3-node cluster");
    let mut pods = std::collections::BTreeSet::new();
    for doc in &docs {
        assert_eq!(field(doc, "kind"), "CronJob");
        assert_eq!(field(doc, "concurrencyPolicy"), "Forbid");
        let env = env_values(doc);
        let pod = field(doc, "statefulset.kubernetes.io/pod-name");
        let ordinal = pod.rsplit('-').next().unwrap();
        let url = &env["RABBITMQ_MANAGEMENT_URL"];
        let host = url
            .strip_prefix("http://")
            .and_then(|h| h.split(':').next())
            .unwrap();
        assert!(host.starts_with(&format!("{pod}.")), "{pod}: {url}");
        let node = &env["RABBITMQ_NODENAME"];
        assert_eq!(
            node,
            &format!("rabbit@{}", host.trim_end_matches(".svc")),
            "{pod}"
        );
        assert!(
            env["RABBITMQ_DATA_DIR"].ends_with(&format!("/{node}")),
            "{pod}"
        );
        assert!(
            field(doc, "claimName").ends_with(&format!("-{ordinal}")),
            "{pod}"
        );
        assert_eq!(field(doc, "topologyKey"), "kubernetes.io/hostname");
        assert!(pods.insert(pod.to_string()), "{pod} twice");
    }

    // The sidecar: the pod's own broker, node name and volume.
    let sidecar = std::fs::read_to_string(root.join("kubernetes/sidecar.yaml")).unwrap();
    let env = env_values(&sidecar);
    assert!(env["RABBITMQ_MANAGEMENT_URL"].starts_with("http://127.0.0.1:"));
    assert!(env["RABBITMQ_NODENAME"].contains("$(POD_NAME)"));
    assert!(env["RABBITMQ_DATA_DIR"].ends_with(&format!("/{}", env["RABBITMQ_NODENAME"])));
    // No literal `$(` in the schedule loop that Kubernetes would expand.
    for line in sidecar.lines().filter(|l| l.contains("$(")) {
        assert!(
            line.contains("$(POD_") || !line.replace("$$(", "").contains("$("),
            "{line}"
        );
    }
}

#[test]
fn install_deps_installs_python3_venv_on_a_fresh_debian() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/install-deps");
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("apt.log");
    let stub = |name: &str, body: &str| {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    };
    // apt-get records what it is asked; sudo runs the command; garage is there.
    stub("apt-get", &format!("echo \"$*\" >> {}", log.display()));
    stub("sudo", "exec \"$@\"");
    stub("garage", "exit 0");
    // Every virtualenv is already there at its pinned version, and every
    // chroot is built: only the Debian packages are in question.
    let text = std::fs::read_to_string(&script).unwrap();
    let cache = dir.path().join("cache");
    for line in text.lines().filter(|l| l.contains("ensure_venv \"$venvs/")) {
        let name = line
            .split("$venvs/")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let version = line
            .rsplit("==")
            .next()
            .unwrap()
            .split('\'')
            .next()
            .unwrap();
        let venv = cache.join("rabbitmq-backup").join(name);
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        std::fs::write(venv.join(".installed"), "").unwrap();
        std::fs::write(
            venv.join("bin/python"),
            format!("#!/bin/sh\necho {version}\n"),
        )
        .unwrap();
        std::fs::set_permissions(
            venv.join("bin/python"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
    if let Some(line) = text
        .lines()
        .find(|l| l.trim().starts_with("ensure_chroots "))
    {
        for suite in line.split_whitespace().skip(2) {
            let root = cache.join("rabbitmq-backup/chroots").join(suite);
            let server = root.join("usr/lib/rabbitmq/bin/rabbitmq-server");
            std::fs::create_dir_all(server.parent().unwrap()).unwrap();
            std::fs::create_dir_all(root.join("etc")).unwrap();
            std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
            std::fs::write(&server, "").unwrap();
            std::fs::set_permissions(&server, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
    }
    let run = |ensurepip: bool| -> String {
        // python3 without (or with) ensurepip, as Debian ships it without python3-venv.
        stub(
            "python3",
            &format!(
                "case \"$*\" in *ensurepip*) exit {};; esac\nexec /usr/bin/python3 \"$@\"",
                if ensurepip { 0 } else { 1 }
            ),
        );
        let _ = std::fs::remove_file(&log);
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg("--tests")
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("HOME", dir.path())
            .env("XDG_CACHE_HOME", &cache)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&log).unwrap_or_default()
    };
    let asked = run(false);
    assert!(
        asked
            .lines()
            .any(|l| l.contains("install") && l.contains("python3-venv")),
        "{asked}"
    );
    assert!(!run(true).contains("python3-venv"));
}
