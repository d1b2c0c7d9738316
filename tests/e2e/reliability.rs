//! The bad day: storage faults, hostile archives, secrets, two backups at
//! once (the tool killed at every instant: `crash.rs`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::backup::loaded_node;
use crate::harness::amqp::{drain, publish};
use crate::harness::faults::{Fault, FaultProxy, Rule};
use crate::harness::fixtures::classic_messages;
use crate::harness::garage::garage;
use crate::harness::rabbit::RabbitNode;
use crate::harness::tool::Tool;
use crate::restore::assert_same_messages;

/// The tool pointed at Garage through a fault proxy.
fn through(proxy: &FaultProxy, node: &RabbitNode) -> Tool {
    Tool::new()
        .with(node.env())
        .with(garage().env())
        .var("AWS_ENDPOINT_URL_S3", &proxy.endpoint())
}

#[test]
fn storage_faults_are_retried_or_fail_cleanly() {
    let node = loaded_node();
    let g = garage();
    let bucket = g.new_bucket();
    let repo = format!("s3://{}", bucket.name);
    let proxy = FaultProxy::start(g.s3_port);
    let tool = through(&proxy, &node).var("RABBITMQ_BACKUP_S3_TIMEOUT", "2");

    // 503 SlowDown on every third upload, a stall on the first, dropped
    // connections on every fifth request of any kind.
    proxy.set(vec![
        Rule {
            limit: Some(1),
            ..Rule::every("PUT", 1, Fault::Stall(Duration::from_secs(120)))
        },
        Rule::every("PUT", 3, Fault::Status(503, "SlowDown")),
        Rule {
            method: None,
            ..Rule::every("GET", 5, Fault::Drop)
        },
    ]);
    let started = Instant::now();
    let report = tool
        .run(&["backup", "--repo", &repo, "--chunk-size", "1", "--json"])
        .ok()
        .json();
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "the stall was cut short by the timeout"
    );
    assert!(
        proxy.injected() >= 3,
        "faults were injected: {}",
        proxy.injected()
    );
    let id = report["id"].as_str().unwrap().to_string();

    // Downloads cut in half, corrupted in transit, dropped: retried, and no
    // unverified byte is unpacked (the result is byte-for-byte right).
    // At most two corruptions, so that each chunk's third read is clean.
    let corrupt = || Rule {
        limit: Some(2),
        ..Rule::every("GET", 2, Fault::Corrupt)
    };
    let faults = || {
        vec![
            corrupt(),
            Rule::every("GET", 3, Fault::Truncate),
            Rule::every("GET", 7, Fault::Status(500, "InternalError")),
        ]
    };
    proxy.set(faults());
    tool.run(&["verify", &id, "--read-data", "--repo", &repo])
        .ok();
    assert!(proxy.injected() >= 3);
    proxy.set(faults());
    node.ctl(&["purge_queue", "-p", "/", "classic"]);
    tool.run(&["restore", &id, "--repo", &repo, "--replace-messages"])
        .ok();
    assert_same_messages(
        &drain(&node, "/", "classic"),
        &classic_messages("classic", 30),
        "restored through faults",
    );

    // A storage that keeps failing: a clean failure, no manifest, no
    // incomplete multipart upload, the broker running with its messages.
    publish(&node, "/", "", &classic_messages("classic", 30));
    proxy.set(vec![Rule::every(
        "PUT",
        1,
        Fault::Status(500, "InternalError"),
    )]);
    let before = bucket
        .keys("")
        .iter()
        .filter(|k| k.ends_with("manifest.json"))
        .count();
    let run = tool
        .clone()
        .var("RABBITMQ_BACKUP_RETRIES", "3")
        .run(&["backup", "--repo", &repo]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("after 3 attempts") && run.stderr.contains("no manifest was written"),
        "{}",
        run.stderr
    );
    let after = bucket
        .keys("")
        .iter()
        .filter(|k| k.ends_with("manifest.json"))
        .count();
    assert_eq!(before, after, "no manifest written");
    let uploads = crate::harness::amqp::rt().block_on(async {
        bucket
            .client
            .list_multipart_uploads()
            .bucket(&bucket.name)
            .send()
            .await
            .unwrap()
    });
    assert!(
        uploads.uploads().is_empty(),
        "no incomplete multipart upload"
    );
    assert_eq!(node.counts("/")["classic"], 30);
    proxy.set(vec![]);
    let list = tool.run(&["list", "--repo", &repo, "--json"]).ok().json();
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 1);
}

fn snapshots(tool: &Tool, repo: &str) -> usize {
    tool.run(&["list", "--repo", repo, "--json"]).ok().json()["snapshots"]
        .as_array()
        .unwrap()
        .len()
}

/// A copy of a real snapshot under another id with its manifest changed by `f`.
fn tamper(repo: &Path, node: &str, real_id: &str, f: impl FnOnce(&mut Value, &Path)) -> String {
    let id = rabbitmq_backup::repo::snapshot_id::new_id(
        time::OffsetDateTime::now_utc() + time::Duration::hours(1),
    );
    let from = repo.join("snapshots").join(node).join(real_id);
    let to = repo.join("snapshots").join(node).join(&id);
    std::fs::create_dir_all(to.join("data")).unwrap();
    for e in std::fs::read_dir(from.join("data")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join("data").join(e.file_name())).unwrap();
    }
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(from.join("manifest.json")).unwrap()).unwrap();
    manifest["id"] = id.clone().into();
    f(&mut manifest, &to);
    std::fs::write(
        to.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    id
}

/// One chunk holding a tar stream with `definitions.json` then `entry`.
fn hostile_chunk(
    dir: &Path,
    manifest: &mut Value,
    entry: tar::EntryType,
    path: &str,
    link: Option<&str>,
) {
    let defs = br#"{"vhosts":[]}"#;
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(defs.len() as u64);
    h.set_mode(0o600);
    builder
        .append_data(&mut h, "definitions.json", &defs[..])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(entry);
    h.set_size(0);
    h.set_mode(0o644);
    if let Some(link) = link {
        h.set_link_name(link).unwrap();
    }
    let name = &mut h.as_old_mut().name;
    name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_cksum();
    builder.append(&h, std::io::empty()).unwrap();
    let tar = builder.into_inner().unwrap();
    let stored = zstd::encode_all(&tar[..], 3).unwrap();
    let sha = hex::encode(Sha256::digest(&stored));
    std::fs::remove_dir_all(dir.join("data")).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data").join(&sha), &stored).unwrap();
    let defs_sha = hex::encode(Sha256::digest(defs));
    manifest["definitions"]["sha256"] = defs_sha.clone().into();
    manifest["files"] = serde_json::json!([{"path": "definitions.json", "size": defs.len(), "sha256": defs_sha, "mode": 384}]);
    manifest["dirs"] = serde_json::json!([]);
    manifest["chunks"] =
        serde_json::json!([{"sha256": sha, "size": stored.len(), "uncompressed_size": tar.len()}]);
    manifest["totals"]["tar_bytes"] = tar.len().into();
}

#[test]
fn hostile_or_broken_archives_are_refused_before_anything_is_written() {
    let node = loaded_node();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo: PathBuf = repo_dir.path().into();
    let repo_s = repo.to_str().unwrap().to_string();
    let tool = Tool::new().with(node.env());
    let real = tool
        .run(&["backup", "--repo", &repo_s, "--json"])
        .ok()
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let n = node.name.clone();
    let parent_before = std::fs::read_dir(node.data_dir().parent().unwrap())
        .unwrap()
        .count();
    let defs_before = node.export_definitions();

    let file_path =
        |path: &'static str| move |m: &mut Value, _: &Path| m["files"][1]["path"] = path.into();
    let cases: Vec<(String, i32, &str)> = vec![
        (
            tamper(&repo, &n, &real, file_path("../../evil")),
            3,
            "../../evil",
        ),
        (
            tamper(&repo, &n, &real, file_path("/etc/evil")),
            3,
            "/etc/evil",
        ),
        (
            tamper(&repo, &n, &real, |m, _| m["format"] = 3.into()),
            5,
            "format version 3",
        ),
        (
            tamper(&repo, &n, &real, |m, d| {
                let chunk = m["chunks"][0]["sha256"].as_str().unwrap().to_string();
                std::fs::write(d.join("data").join(&chunk), b"other bytes").unwrap();
            }),
            3,
            "is 11 bytes but the manifest says",
        ),
        (
            tamper(&repo, &n, &real, |m, d| {
                let chunk = m["chunks"][0]["sha256"].as_str().unwrap().to_string();
                let p = d.join("data").join(&chunk);
                let mut bytes = std::fs::read(&p).unwrap();
                bytes[10] ^= 1;
                std::fs::write(&p, bytes).unwrap();
            }),
            3,
            "is corrupt",
        ),
        (
            tamper(&repo, &n, &real, |m, d| {
                hostile_chunk(d, m, tar::EntryType::Symlink, "msg_stores/x", Some("/etc"))
            }),
            3,
            "not Symlink entries",
        ),
        (
            tamper(&repo, &n, &real, |m, d| {
                hostile_chunk(
                    d,
                    m,
                    tar::EntryType::Link,
                    "msg_stores/y",
                    Some("/etc/passwd"),
                )
            }),
            3,
            "not Link entries",
        ),
        (
            tamper(&repo, &n, &real, |m, d| {
                hostile_chunk(d, m, tar::EntryType::Char, "msg_stores/z", None)
            }),
            3,
            "not Char entries",
        ),
        (
            tamper(&repo, &n, &real, |m, d| {
                hostile_chunk(d, m, tar::EntryType::Regular, "../escape", None)
            }),
            3,
            "../escape",
        ),
    ];
    for (id, code, expected) in &cases {
        let run = tool.run(&["restore", id, "--repo", &repo_s, "--replace-messages"]);
        run.expect_code(*code);
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
    }
    // A manifest copied from another node's snapshot.
    let other = repo.join("snapshots/rabbit@elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(repo.join("snapshots").join(&n).join(&real))
        .arg(&other)
        .status()
        .unwrap();
    assert!(copy.success());
    let run = tool.run(&[
        "restore",
        "latest",
        "--from-node",
        "rabbit@elsewhere",
        "--repo",
        &repo_s,
    ]);
    run.expect_code(3);
    assert!(
        run.stderr.contains("copied from elsewhere"),
        "{}",
        run.stderr
    );

    // Nothing was written outside the work area, which is gone again, and
    // the broker is untouched.
    assert!(!repo.join("evil").exists() && !Path::new("/etc/evil").exists());
    let parent = node.data_dir().parent().unwrap().to_path_buf();
    assert!(!parent.join("escape").exists() && !parent.join("msg_stores").exists());
    assert_eq!(
        std::fs::read_dir(&parent).unwrap().count(),
        parent_before,
        "{:?}",
        node.work_areas()
    );
    assert_eq!(node.export_definitions()["vhosts"], defs_before["vhosts"]);
    assert_eq!(node.counts("/")["classic"], 30);
}

#[test]
fn secrets_never_reach_logs_errors_output_or_the_manifest() {
    let node = RabbitNode::start();
    let password = "Sup3r-Secret-PW-4711";
    let hash = crate::harness::fixtures::password_hash(password);
    node.import_definitions(&serde_json::json!({
        "users": [{"name": "backupadmin", "password_hash": hash, "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "administrator"}],
        "permissions": [{"user": "backupadmin", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]
    }));
    let g = garage();
    let bucket = g.new_bucket();
    let repo = format!("s3://{}", bucket.name);
    let tool = Tool::new()
        .with(node.env())
        .with(g.env())
        .var("RABBITMQ_USERNAME", "backupadmin")
        .var("RABBITMQ_PASSWORD", password);
    let secrets = [
        password,
        g.secret.as_str(),
        g.key_id.as_str(),
        hash.as_str(),
    ];
    let check = |what: &str, text: &str| {
        for s in secrets {
            assert!(!text.contains(s), "{what} reveals a secret");
        }
    };
    for args in [
        vec!["backup", "--repo", &repo, "-vv", "--json"],
        vec![
            "backup",
            "--repo",
            &repo,
            "--log-format",
            "json",
            "-v",
            "--json",
        ],
        vec!["list", "--repo", &repo, "--json", "-vv"],
        vec!["show", "latest", "--repo", &repo, "--json"],
        vec!["check-repo", "--repo", &repo, "--json"],
        vec!["restore", "--dry-run", "--repo", &repo, "-vv", "--json"],
        vec!["backup", "--help"],
    ] {
        let run = tool.run(&args);
        check(&format!("{args:?} stdout"), &run.stdout);
        check(&format!("{args:?} stderr"), &run.stderr);
    }
    // Errors: a wrong password and a wrong S3 secret are not echoed.
    for (k, v) in [
        ("RABBITMQ_PASSWORD", "Wr0ng-PW-9931"),
        ("AWS_SECRET_ACCESS_KEY", "Wr0ng-S3-Secret-5521"),
    ] {
        let run = tool
            .clone()
            .var(k, v)
            .run(&["backup", "--repo", &repo, "-vv", "--json"]);
        assert_ne!(run.code, 0);
        assert!(
            !run.stdout.contains(v) && !run.stderr.contains(v),
            "{k} echoed"
        );
    }
    // The manifests hold no password hash; the archive's definitions do.
    for key in bucket
        .keys("")
        .iter()
        .filter(|k| k.ends_with("manifest.json"))
    {
        check(key, &String::from_utf8_lossy(&bucket.get(key)));
    }
}

#[test]
fn two_backups_at_once_give_one_snapshot_and_one_clear_refusal() {
    let node = loaded_node();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repo_dir.path().to_str().unwrap().to_string();
    let tool = Tool::new().with(node.env());
    let (mut first, _marker) = tool.spawn_at(
        "upload:after-first-chunk",
        &["backup", "--repo", &repo],
        Duration::from_secs(120),
    );
    for live in [false, true] {
        let args: Vec<&str> = if live {
            vec!["backup", "--live", "--repo", &repo]
        } else {
            vec!["backup", "--repo", &repo]
        };
        let run = tool.run(&args);
        run.expect_code(4);
        assert!(
            run.stderr.contains("another rabbitmq-backup")
                && run.stderr.contains(&format!("pid {}", first.id())),
            "{}",
            run.stderr
        );
    }
    first.kill().unwrap();
    first.wait().unwrap();
    tool.run(&["backup", "--repo", &repo]).ok();
    assert_eq!(snapshots(&tool, &repo), 1);
    tool.run(&["verify", "--all", "--read-data", "--repo", &repo])
        .ok();
}
