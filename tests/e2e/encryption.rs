//! Client-side encryption with age (§14): sealed chunks in Garage, restore
//! with the identity onto a new node, the by-hand restore with Debian's
//! `age` and `zstd`, refusals before the node is touched, and no key
//! material in any output.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::backup::loaded_node;
use crate::harness::amqp::{Msg, drain, publish};
use crate::harness::fixtures::{classic_messages, oro_messages, priority_order, props};
use crate::harness::garage::garage;
use crate::harness::rabbit::RabbitNode;
use crate::harness::tool::Tool;
use crate::restore::assert_same_messages;

/// A key made by Debian's `age-keygen`: (identity file, public key, secret).
fn age_keygen(dir: &Path, name: &str) -> (PathBuf, String, String) {
    let path = dir.join(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen (Debian package age; scripts/install-deps --tests)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let secret = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .unwrap()
        .to_string();
    (path, public, secret)
}

/// 300 KB that zstd cannot compress: stored verbatim by zstd, so a plain
/// chunk would show it.
fn random_body() -> Vec<u8> {
    (0..300_000).map(|_| rand::random::<u8>()).collect()
}

/// The node's message stores as a swap would change them: each vhost
/// store directory with its inode (the node's own index flushes change file
/// contents at any time, so contents are not compared).
fn stores(data_dir: &Path) -> BTreeMap<String, u64> {
    let vhosts = data_dir.join("msg_stores/vhosts");
    let mut out: BTreeMap<String, u64> = std::fs::read_dir(&vhosts)
        .unwrap()
        .flatten()
        .map(|e| {
            let inode = std::os::unix::fs::MetadataExt::ino(&e.metadata().unwrap());
            (e.file_name().to_string_lossy().into_owned(), inode)
        })
        .collect();
    let top = std::fs::metadata(data_dir.join("msg_stores")).unwrap();
    out.insert(
        "msg_stores".into(),
        std::os::unix::fs::MetadataExt::ino(&top),
    );
    out
}

fn cat<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
    a.iter().chain(b).copied().collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The README's by-hand restore, run by the shell with Debian's tools:
/// `age -d -i KEY` each chunk in manifest order, then `zstd -d | tar -x`.
fn restore_by_hand(snapshot: &Path, key: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let script = r#"
jq -r '.chunks[].sha256' "$SNAP/manifest.json" | while read -r c; do
    age -d -i "$KEY" "$SNAP/data/$c" || exit 1
done | zstd -d | tar -x -C "$INTO"
"#;
    let out = Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", script])
        .env("KEY", key)
        .env("SNAP", snapshot)
        .env("INTO", into)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "by-hand restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_encrypted_backup_hides_bodies_and_hashes_and_restores_with_the_identity() {
    let source = loaded_node();
    source.import_definitions(&json!({"queues": [
        {"name": "secret", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}}
    ]}));
    let body = random_body();
    let secret_msgs = vec![Msg {
        routing_key: "secret".into(),
        properties: props(7, 0),
        body: body.clone(),
    }];
    publish(&source, "/", "", &secret_msgs);
    let hash = source.export_definitions()["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "oro")
        .unwrap()["password_hash"]
        .as_str()
        .unwrap()
        .to_string();

    let keys = tempfile::tempdir().unwrap();
    let (key, public, secret) = age_keygen(keys.path(), "key.txt");
    let (wrong_key, wrong_public, wrong_secret) = age_keygen(keys.path(), "wrong.txt");
    let g = garage();
    let bucket = g.new_bucket();
    let repo = format!("s3://{}/enc", bucket.name);

    // The backup host knows only the public key (here from the environment).
    let run = Tool::new()
        .with(source.env())
        .with(g.env())
        .var("RABBITMQ_BACKUP_RECIPIENTS", &public)
        .run(&[
            "backup",
            "--repo",
            &repo,
            "--chunk-size",
            "1",
            "--json",
            "-vv",
        ]);
    let report = run.ok().json();
    assert_eq!(report["encrypted_to"], json!([public]));
    assert!(!run.stderr.contains(&hash) && !run.stdout.contains(&hash));
    let id = report["id"].as_str().unwrap().to_string();
    let source_name = source.name.clone();
    drop(source);

    // The manifest: plaintext, format 2, names the recipient, no secret.
    let prefix = format!("enc/snapshots/{source_name}/{id}/");
    let manifest_bytes = bucket.get(&format!("{prefix}manifest.json"));
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(manifest["format"], 2);
    assert_eq!(
        manifest["encryption"],
        json!({"scheme": "age", "recipients": [public]})
    );
    let chunks: Vec<String> = manifest["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["sha256"].as_str().unwrap().to_string())
        .collect();
    assert!(chunks.len() > 1, "1 MiB chunks: several expected");

    // The raw objects, read from the bucket: age files, named by their
    // bytes, holding neither the body nor the password hash.
    let snap = tempfile::tempdir().unwrap();
    std::fs::create_dir(snap.path().join("data")).unwrap();
    let window = &body[100_000..100_064];
    let mut opened = Vec::new();
    for name in &chunks {
        let bytes = bucket.get(&format!("{prefix}data/{name}"));
        assert!(bytes.starts_with(b"age-encryption.org/v1\n"), "{name}");
        assert_eq!(hex::encode(Sha256::digest(&bytes)), *name);
        assert!(
            !contains(&bytes, window),
            "chunk {name} shows a message body"
        );
        assert!(
            !contains(&bytes, hash.as_bytes()),
            "chunk {name} shows a password hash"
        );
        std::fs::write(snap.path().join("data").join(name), &bytes).unwrap();
        let plain = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&key)
            .arg(snap.path().join("data").join(name))
            .output()
            .unwrap();
        assert!(plain.status.success());
        opened.extend_from_slice(&plain.stdout);
    }
    // Decrypted but still compressed, the body is there: the check above
    // would have caught a plain chunk.
    assert!(contains(&opened, window));

    // By hand with Debian's age and zstd: the archive comes back whole.
    std::fs::write(snap.path().join("manifest.json"), &manifest_bytes).unwrap();
    let by_hand = snap.path().join("restored");
    restore_by_hand(snap.path(), &key, &by_hand);
    let definitions = std::fs::read(by_hand.join("definitions.json")).unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&definitions)),
        manifest["definitions"]["sha256"].as_str().unwrap()
    );
    assert!(contains(&definitions, hash.as_bytes()));
    for file in manifest["files"].as_array().unwrap() {
        let bytes = std::fs::read(by_hand.join(file["path"].as_str().unwrap())).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            file["sha256"].as_str().unwrap()
        );
    }

    // Verifying the objects needs no key; reading them does.
    let tool = Tool::new().with(g.env());
    let verify = ["verify", &id, "--from-node", &source_name, "--repo", &repo];
    tool.run(&verify).ok();
    let run = tool.run(&cat(&verify, &["--read-data"]));
    run.expect_code(2);
    assert!(run.stderr.contains(&public), "{}", run.stderr);
    tool.run(&cat(
        &verify,
        &["--read-data", "--identity", key.to_str().unwrap()],
    ))
    .ok();

    // A new node, with a vhost of its own holding messages.
    let target = RabbitNode::start();
    assert_ne!(target.name, source_name);
    target.import_definitions(&json!({
        "vhosts": [{"name": "keep"}],
        "permissions": [{"user": "guest", "vhost": "keep", "configure": ".*", "write": ".*", "read": ".*"}],
        "queues": [{"name": "mine", "vhost": "keep", "durable": true, "auto_delete": false, "arguments": {}}]
    }));
    let mine = classic_messages("mine", 3);
    publish(&target, "keep", "", &mine);
    let defs_before = target.export_definitions();
    let store_before = stores(&target.data_dir());
    let tool = Tool::new().with(target.env()).with(g.env());
    let restore = [
        "restore",
        "latest",
        "--from-node",
        &source_name,
        "--repo",
        &repo,
    ];

    // Missing, then wrong identity: refused, naming the recipient, with
    // nothing touched.
    let missing = tool.run(&cat(&restore, &["--json", "-vv"]));
    let wrong = tool
        .clone()
        .var("RABBITMQ_BACKUP_IDENTITY_FILE", wrong_key.to_str().unwrap())
        .run(&cat(&restore, &["--json", "-vv"]));
    for (what, run) in [("missing", &missing), ("wrong", &wrong)] {
        run.expect_code(2);
        assert!(run.stderr.contains(&public), "{what}: {}", run.stderr);
        assert_eq!(run.json()["error"]["kind"], "usage", "{what}");
        assert!(!run.stderr.contains(&wrong_secret) && !run.stdout.contains(&wrong_secret));
        assert!(
            !run.stderr.contains("downloading"),
            "{what}: nothing downloaded"
        );
        assert_eq!(target.export_definitions(), defs_before, "{what}");
        assert_eq!(stores(&target.data_dir()), store_before, "{what}");
        assert!(
            target.work_areas().is_empty(),
            "{what}: {:?}",
            target.work_areas()
        );
        assert_eq!(target.counts("keep")["mine"], 3, "{what}");
    }
    assert!(missing.stderr.contains("--identity"), "{}", missing.stderr);
    assert!(wrong.stderr.contains(&wrong_public), "{}", wrong.stderr);

    // With the identity: every message back, byte for byte.
    let run = tool.run(&cat(
        &restore,
        &["--identity", key.to_str().unwrap(), "--json", "-vv"],
    ));
    let report = run.ok().json();
    for q in report["queues"].as_array().unwrap() {
        assert_eq!(q["status"], "ok", "{q}");
    }
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(&secret), "the identity leaked");
        assert!(
            !text.contains(&secret.to_lowercase()[15..]),
            "the identity leaked"
        );
        assert!(!text.contains(&hash), "a password hash leaked");
    }
    assert_same_messages(&drain(&target, "/", "secret"), &secret_msgs, "secret");
    assert_same_messages(
        &drain(&target, "/", "classic"),
        &classic_messages("classic", 30),
        "classic",
    );
    assert_same_messages(
        &drain(&target, "oro", "oro.default"),
        &priority_order(&oro_messages(40)),
        "oro.default (priority)",
    );
    assert_same_messages(
        &drain(&target, "keep", "mine"),
        &mine,
        "the node's own vhost",
    );
    assert!(target.work_areas().is_empty(), "{:?}", target.work_areas());

    // Neither the manifest nor `show`/`list` hold key material or hashes.
    for text in [
        String::from_utf8_lossy(&manifest_bytes).into_owned(),
        tool.run(&[
            "show",
            &id,
            "--from-node",
            &source_name,
            "--repo",
            &repo,
            "--json",
        ])
        .ok()
        .stdout
        .clone(),
        tool.run(&["list", "--repo", &repo, "--json", "-vv"])
            .ok()
            .stdout
            .clone(),
    ] {
        assert!(!text.contains(&secret) && !text.contains(&hash));
    }
}

#[test]
fn bad_recipients_and_identity_files_are_refused_before_any_io() {
    let keys = tempfile::tempdir().unwrap();
    let (key, _, secret) = age_keygen(keys.path(), "key.txt");
    let repo = keys.path().join("repo");
    let r = repo.to_str().unwrap();
    // Nothing listens there: reaching the network would be exit 1, not 2.
    let nowhere = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let tool = Tool::new().var("RABBITMQ_MANAGEMENT_URL", &nowhere);
    let bad = "age1thisisnotarecipient";
    let run = tool.run(&["backup", "--repo", r, "--encrypt-to", bad, "--json"]);
    run.expect_code(2);
    assert!(run.stderr.contains(bad), "{}", run.stderr);
    // A secret key given as the recipient is refused and never echoed.
    let run = tool
        .clone()
        .var("RABBITMQ_BACKUP_RECIPIENTS", &secret)
        .run(&["backup", "--repo", r, "-vv", "--json"]);
    run.expect_code(2);
    assert!(run.stderr.contains("age-keygen -y"), "{}", run.stderr);
    assert!(!run.stderr.contains(&secret[20..]) && !run.stdout.contains(&secret[20..]));
    // An identity file every user can read is refused (ssh does the same).
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let run = tool.run(&["restore", "--repo", r, "--identity", key.to_str().unwrap()]);
    run.expect_code(2);
    assert!(run.stderr.contains("chmod 600"), "{}", run.stderr);
    // Something else than an identity: the line is named, not shown.
    let mut f = std::fs::File::create(keys.path().join("notakey")).unwrap();
    writeln!(f, "# a comment\n{}", &secret[..secret.len() - 2]).unwrap();
    drop(f);
    let notakey = keys.path().join("notakey");
    std::fs::set_permissions(
        &notakey,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let run = tool.run(&[
        "restore",
        "--repo",
        r,
        "--identity",
        notakey.to_str().unwrap(),
    ]);
    run.expect_code(2);
    assert!(run.stderr.contains("line 2"), "{}", run.stderr);
    assert!(!run.stderr.contains(&secret[20..40]), "{}", run.stderr);
    assert!(!repo.exists(), "nothing was written");
}
