//! Backups of a real node into Garage and a local directory.

use std::io::Write;
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::harness::amqp::{hold_consumer, publish};
use crate::harness::fixtures::{classic_messages, oro_messages, topology};
use crate::harness::garage::garage;
use crate::harness::rabbit::RabbitNode;
use crate::harness::tool::Tool;

/// A node with the Oro-like topology and messages in every kind of queue.
pub fn loaded_node() -> RabbitNode {
    let node = RabbitNode::start();
    node.import_definitions(&topology());
    publish(&node, "/", "", &classic_messages("classic", 30));
    publish(&node, "oro", "oro.default", &oro_messages(40));
    publish(&node, "/", "", &classic_messages("quorum", 5));
    node
}

#[test]
fn backup_to_garage_stores_content_addressed_chunks_that_decode_by_hand() {
    let node = loaded_node();
    let g = garage();
    let bucket = g.new_bucket();
    let repo = format!("s3://{}/prod/rmq", bucket.name);
    let tool = Tool::new().with(node.env()).with(g.env());

    // Quorum queues are skipped here (tests/e2e/capture.rs captures them).
    let run = tool.run(&[
        "backup",
        "--repo",
        &repo,
        "--json",
        "--chunk-size",
        "1",
        "--skip-quorum",
    ]);
    run.ok();
    let report = run.json();
    let id = report["id"].as_str().unwrap().to_string();
    assert_eq!(report["consistency"], "stop-app");
    assert_eq!(report["node"], node.name.as_str());
    assert_eq!(report["messages"], 75);
    assert_eq!(report["covered_messages"], 70);
    // The quorum queue is named, with its count, in the report and the log.
    let uncovered = report["uncovered_queues"].as_array().unwrap();
    assert_eq!(uncovered.len(), 1, "{uncovered:?}");
    assert_eq!(uncovered[0]["name"], "quorum");
    assert_eq!(uncovered[0]["type"], "quorum");
    assert_eq!(uncovered[0]["messages"], 5);
    assert!(
        run.stderr.contains("\"quorum\"")
            && run.stderr.contains("5 messages")
            && run.stderr.contains("skipped (--skip-quorum)"),
        "{}",
        run.stderr
    );

    // The objects: chunks named by the SHA-256 of their bytes, manifest last.
    let prefix = format!("prod/rmq/snapshots/{}/{id}/", node.name);
    let objects = bucket.keys(&prefix);
    let manifest_key = format!("{prefix}manifest.json");
    assert!(objects.contains(&manifest_key), "{objects:?}");
    let manifest: serde_json::Value = serde_json::from_slice(&bucket.get(&manifest_key)).unwrap();
    let chunks = manifest["chunks"].as_array().unwrap();
    assert!(chunks.len() > 1, "1 MiB chunks: several expected");
    assert_eq!(
        objects.len(),
        chunks.len() + 1,
        "nothing but chunks and the manifest"
    );
    let mut stream = Vec::new();
    for chunk in chunks {
        let name = chunk["sha256"].as_str().unwrap();
        let bytes = bucket.get(&format!("{prefix}data/{name}"));
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            name,
            "chunk named by its bytes"
        );
        assert_eq!(bytes.len() as u64, chunk["size"].as_u64().unwrap());
        stream.extend_from_slice(&bytes);
    }
    // By hand: cat data/* (manifest order) | zstd -d | tar -t
    let listing = decode_by_hand(&stream);
    assert_eq!(listing[0], "definitions.json");
    assert!(
        listing[1..].iter().all(|p| p.starts_with("msg_stores")),
        "{listing:?}"
    );
    for file in manifest["files"].as_array().unwrap() {
        let path = file["path"].as_str().unwrap();
        assert!(
            listing.iter().any(|l| l.trim_end_matches('/') == path),
            "{path} not in the tar"
        );
    }
    // Every queue is recorded with type, count, coverage and directories.
    let queues = manifest["queues"].as_array().unwrap();
    let find = |name: &str| queues.iter().find(|q| q["name"] == name).unwrap().clone();
    assert_eq!(find("classic")["messages"], 30);
    assert_eq!(find("classic")["covered"], true);
    assert_eq!(find("oro.default")["messages"], 40);
    assert!(
        find("oro.default")["dirs"].as_array().unwrap().len() >= 2,
        "one dir per priority level in use"
    );
    assert_eq!(find("quorum")["covered"], false);
    assert_eq!(find("quorum")["type"], "quorum");

    // The broker is back and still holds its messages.
    assert_eq!(node.counts("/")["classic"], 30);
    assert_eq!(node.counts("oro")["oro.default"], 40);

    // list and show read it back.
    let list = tool.run(&["list", "--repo", &repo, "--json"]);
    let snapshots = list.ok().json()["snapshots"].as_array().unwrap().clone();
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0]["id"], id.as_str());
    let show = tool.run(&["show", &id[..12], "--repo", &repo]);
    assert!(
        show.ok().stdout.contains("quorum") && show.stdout.contains("NO"),
        "{}",
        show.stdout
    );
}

/// `zstd -d | tar -t` on the concatenated chunks, with the real tools.
fn decode_by_hand(stream: &[u8]) -> Vec<String> {
    let mut zstd = Command::new("zstd")
        .args(["-d", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("zstd (Debian package zstd)");
    let mut stdin = zstd.stdin.take().unwrap();
    let data = stream.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let tar = Command::new("tar")
        .arg("-t")
        .stdin(zstd.stdout.take().unwrap())
        .output()
        .unwrap();
    writer.join().unwrap().unwrap();
    assert!(zstd.wait().unwrap().success());
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    String::from_utf8(tar.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn backup_into_the_default_local_repository_and_live() {
    let node = loaded_node();
    let cwd = tempfile::tempdir().unwrap();
    let tool = Tool::new().with(node.env());
    let run = tool
        .command(&["backup"])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let id = String::from_utf8(run.stdout).unwrap().trim().to_string();
    let manifest = cwd
        .path()
        .join("rabbitmq-backups/snapshots")
        .join(&node.name)
        .join(&id)
        .join("manifest.json");
    assert!(manifest.is_file(), "{}", manifest.display());

    let repo = cwd.path().join("rabbitmq-backups");
    let repo = repo.to_str().unwrap();
    let live = tool.run(&["backup", "--live", "--repo", repo, "--json"]);
    let report = live.ok().json();
    assert_eq!(report["consistency"], "live");
    assert_eq!(report["pause_ms"], 0);
    assert!(live.stderr.contains("live capture"), "{}", live.stderr);
    let list = tool.run(&["list", "--repo", repo, "--json"]).ok().json();
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 2);
}

/// Every bad input is refused clearly, with a non-zero exit, writing nothing.
#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let node = loaded_node();
    let g = garage();
    let bucket = g.new_bucket();
    let repo = format!("s3://{}", bucket.name);
    let tool = Tool::new().with(node.env()).with(g.env());
    let nothing_written = || assert!(bucket.keys("").is_empty(), "objects were written");

    // Unreachable node: no management API, rabbitmqctl cannot reach it either.
    let dead = tool
        .clone()
        .var(
            "RABBITMQ_MANAGEMENT_URL",
            &format!("http://127.0.0.1:{}", crate::harness::free_port()),
        )
        .var("RABBITMQ_NODENAME", "nosuchnode@localhost");
    let run = dead.run(&["backup", "--repo", &repo]);
    run.expect_code(1);
    assert!(run.stderr.contains("cannot reach"), "{}", run.stderr);
    nothing_written();

    // Wrong credentials: named, never silently bypassed, password never shown.
    let run = tool
        .clone()
        .var("RABBITMQ_PASSWORD", "not-the-password-42")
        .run(&["backup", "--repo", &repo]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("rejected the credentials of user \"guest\""),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("not-the-password-42") && !run.stdout.contains("not-the-password-42")
    );
    nothing_written();

    // A bucket that does not exist.
    let run = tool.run(&["backup", "--repo", "s3://no-such-bucket-here"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("no-such-bucket-here") && run.stderr.contains("does not exist"),
        "{}",
        run.stderr
    );

    // A malformed repository URL is a usage error.
    for bad in ["gs://bucket", "s3://Bad_Bucket", "file://relative"] {
        let run = tool.run(&["backup", "--repo", bad]);
        run.expect_code(2);
        assert!(
            run.stderr.contains("repository") || run.stderr.contains("bucket"),
            "{}",
            run.stderr
        );
    }

    // A data directory that cannot be read.
    let run = tool.run(&[
        "backup",
        "--repo",
        &repo,
        "--data-dir",
        "/nonexistent/rabbit@x",
    ]);
    run.expect_code(6);
    assert!(
        run.stderr.contains("/nonexistent/rabbit@x"),
        "{}",
        run.stderr
    );
    nothing_written();

    // Consumers connected: refused for safety, naming the queue.
    {
        let _consumer = hold_consumer(&node, "/", "classic");
        let run = tool.run(&["backup", "--repo", &repo]);
        run.expect_code(4);
        assert!(
            run.stderr.contains("\"classic\"") && run.stderr.contains("--allow-consumers"),
            "{}",
            run.stderr
        );
        nothing_written();
    }

    // A --before command that fails stops everything.
    let run = tool.run(&["backup", "--repo", &repo, "--before", "exit 7"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("--before") && run.stderr.contains("exit 7"),
        "{}",
        run.stderr
    );
    nothing_written();

    // --before and --after run around a good backup, in that order.
    let trace = tempfile::NamedTempFile::new().unwrap();
    let t = trace.path().display();
    let run = tool.run(&[
        "backup",
        "--repo",
        &repo,
        "--before",
        &format!("echo before >> {t}"),
        "--after",
        &format!("echo \"after $RABBITMQ_BACKUP_STATUS\" >> {t}"),
    ]);
    run.ok();
    assert_eq!(
        std::fs::read_to_string(trace.path()).unwrap(),
        "before\nafter success\n"
    );
    assert_eq!(
        node.counts("/")["classic"],
        30,
        "messages untouched by the failed attempts"
    );
}

/// S3 over HTTPS with a private CA given the AWS way (`AWS_CA_BUNDLE`):
/// uploads, listing and downloads go through rustls; without the bundle
/// the certificate is refused.
#[test]
fn s3_over_https_trusts_the_aws_ca_bundle_and_nothing_else() {
    let node = RabbitNode::start();
    let g = garage();
    let bucket = g.new_bucket();
    let front = crate::harness::tls::tls_front(g.s3_port);
    let repo = format!("s3://{}", bucket.name);
    let https = Tool::new().with(node.env()).with(g.env()).var(
        "AWS_ENDPOINT_URL_S3",
        &format!("https://127.0.0.1:{}", front.port),
    );
    let trusted = https
        .clone()
        .var("AWS_CA_BUNDLE", front.ca.to_str().unwrap());
    let id = trusted
        .run(&["backup", "--repo", &repo, "--json"])
        .ok()
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = trusted
        .run(&["list", "--repo", &repo, "--json"])
        .ok()
        .json();
    assert_eq!(listed["snapshots"][0]["id"], id.as_str());
    let verified = trusted
        .run(&["verify", &id, "--read-data", "--repo", &repo, "--json"])
        .ok()
        .json();
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(
        bucket
            .keys("")
            .iter()
            .any(|k| k.ends_with("/manifest.json"))
    );

    // An untrusted certificate is named, with the fix, and not retried.
    let refused = https.run(&["list", "--repo", &repo]);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("certificate")
            && refused.stderr.contains("AWS_CA_BUNDLE")
            && !refused.stderr.contains("attempt 2"),
        "{}",
        refused.stderr
    );
    let missing = https
        .clone()
        .var("AWS_CA_BUNDLE", "/nonexistent/ca.pem")
        .run(&["list", "--repo", &repo]);
    missing.expect_code(2);
    assert!(
        missing.stderr.contains("AWS_CA_BUNDLE"),
        "{}",
        missing.stderr
    );
}
