//! Tier tags, the bucket check, pin and prune, on Garage (no tags, drops tag
//! filters), moto (tags work) and a local directory.

use rabbitmq_backup::repo::snapshot_id;
use serde_json::Value;

use crate::backup::loaded_node;
use crate::harness::bucket::Bucket;
use crate::harness::garage::garage;
use crate::harness::moto::moto;
use crate::harness::rabbit::RabbitNode;
use crate::harness::tool::Tool;

fn warnings(report: &Value, key: &str) -> Vec<String> {
    report[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn tier_tags_pins_and_the_bucket_check_where_tags_work() {
    let node = loaded_node();
    let m = moto();
    let bucket = m.new_bucket();
    bucket.set_lifecycle(&[
        ("tier-daily", "snapshots/", Some("daily"), 7),
        ("tier-weekly", "snapshots/", Some("weekly"), 35),
        ("tier-monthly", "snapshots/", Some("monthly"), 365),
    ]);
    let repo = format!("s3://{}", bucket.name);
    let tool = Tool::new().with(node.env()).with(m.env());

    // The node's first snapshot of the month is monthly, the next one daily.
    let first = tool.run(&["backup", "--repo", &repo, "--json"]).ok().json();
    assert_eq!(first["tier"], "monthly");
    assert!(
        warnings(&first, "repository_warnings").is_empty(),
        "{first}"
    );
    let second = tool.run(&["backup", "--repo", &repo, "--json"]).ok().json();
    assert_eq!(second["tier"], "daily");
    for (report, tier) in [(&first, "monthly"), (&second, "daily")] {
        let prefix = format!(
            "snapshots/{}/{}/",
            node.name,
            report["id"].as_str().unwrap()
        );
        let keys = bucket.keys(&prefix);
        assert!(keys.len() >= 2);
        for key in keys {
            assert_eq!(
                bucket.tags(&key),
                vec![("tier".to_string(), tier.to_string())],
                "{key}"
            );
        }
    }

    // pin: every object re-tagged tier=keep, and a marker for prune.
    let id = second["id"].as_str().unwrap();
    let pinned = tool
        .run(&["pin", id, "--repo", &repo, "--json"])
        .ok()
        .json();
    assert!(pinned["objects_tagged"].as_u64().unwrap() >= 3);
    let prefix = format!("snapshots/{}/{id}/", node.name);
    for key in bucket.keys(&prefix) {
        assert_eq!(
            bucket.tags(&key),
            vec![("tier".to_string(), "keep".to_string())],
            "{key}"
        );
    }
    assert!(bucket.keys(&prefix).contains(&format!("{prefix}pinned")));

    // check-repo: tags and lifecycle supported, rules as the tool expects.
    let check = tool
        .run(&["check-repo", "--repo", &repo, "--json"])
        .ok()
        .json();
    assert_eq!(check["tagging"], "yes");
    assert_eq!(check["lifecycle"], "yes");
    assert_eq!(check["rules"].as_array().unwrap().len(), 3);
    assert!(warnings(&check, "warnings").is_empty(), "{check}");

    // A prefix-wide rule shorter than the monthly tier is a problem.
    bucket.set_lifecycle(&[
        ("tier-monthly", "snapshots/", Some("monthly"), 365),
        ("everything", "", None, 30),
    ]);
    let check = tool
        .run(&["check-repo", "--repo", &repo, "--json"])
        .ok()
        .json();
    let w = warnings(&check, "warnings");
    assert!(
        w.iter()
            .any(|w| w.contains("\"everything\"") && w.contains("EVERY snapshot")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("monthly snapshots are meant to live 365 days")),
        "{w:?}"
    );
}

#[test]
fn garage_drops_tag_filters_and_the_report_says_so() {
    let node = loaded_node();
    let g = garage();
    let bucket = g.new_bucket();
    // Garage accepts these rules but silently drops their tag filters.
    bucket.set_lifecycle(&[
        ("tier-daily", "snapshots/", Some("daily"), 7),
        ("tier-monthly", "snapshots/", Some("monthly"), 365),
    ]);
    let repo = format!("s3://{}", bucket.name);
    let tool = Tool::new().with(node.env()).with(g.env());

    let check = tool
        .run(&["check-repo", "--repo", &repo, "--json"])
        .ok()
        .json();
    assert_eq!(check["tagging"], "no");
    let w = warnings(&check, "warnings");
    assert!(
        w.iter().any(|w| w.contains("does not support object tags")),
        "{w:?}"
    );
    assert!(
        w.iter().any(|w| w.contains("\"tier-daily\"")
            && w.contains("EVERY snapshot")
            && w.contains("7 days")
            && w.contains("dropped")),
        "{w:?}"
    );
    let human = tool.run(&["check-repo", "--repo", &repo]);
    assert!(
        human.ok().stdout.contains("NOT supported by this server"),
        "{}",
        human.stdout
    );

    // The backup itself succeeds and carries the same warnings.
    let backup = tool.run(&["backup", "--repo", &repo, "--json"]);
    let report = backup.ok().json();
    assert!(
        warnings(&report, "repository_warnings")
            .iter()
            .any(|w| w.contains("dropped"))
    );
    assert!(
        backup.stderr.contains("does not support object tags"),
        "{}",
        backup.stderr
    );

    // pin still works, through the marker, and says what it cannot do.
    let pin = tool
        .run(&[
            "pin",
            report["id"].as_str().unwrap(),
            "--repo",
            &repo,
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(pin["objects_tagged"], 0);
    assert!(warnings(&pin, "warnings")[0].contains("only `prune` honours it"));
}

/// Copies a real snapshot under older ids: a month and a half of dailies.
fn fake_history(
    node: &str,
    real_manifest: &[u8],
    put: &dyn Fn(&str, Vec<u8>),
    days: i64,
) -> Vec<String> {
    let mut manifest: Value = serde_json::from_slice(real_manifest).unwrap();
    let now = time::OffsetDateTime::now_utc();
    (1..=days)
        .map(|d| {
            let id = snapshot_id::new_id(now - time::Duration::days(d));
            manifest["id"] = id.clone().into();
            put(
                &format!("snapshots/{node}/{id}/manifest.json"),
                serde_json::to_vec(&manifest).unwrap(),
            );
            put(
                &format!("snapshots/{node}/{id}/data/{}", "0".repeat(64)),
                vec![1, 2, 3],
            );
            id
        })
        .collect()
}

/// Runs the prune scenario against a repository; `keys` lists its objects.
fn prune_scenario(
    tool: &Tool,
    repo: &str,
    node: &RabbitNode,
    keys: &dyn Fn() -> Vec<String>,
    put: &dyn Fn(&str, Vec<u8>),
    get: &dyn Fn(&str) -> Vec<u8>,
) {
    let real = tool.run(&["backup", "--repo", repo, "--json"]).ok().json();
    let real_id = real["id"].as_str().unwrap().to_string();
    let manifest = get(&format!("snapshots/{}/{real_id}/manifest.json", node.name));
    let fakes = fake_history(&node.name, &manifest, put, 45);
    // Pin an old one by hand (a marker, as `pin` writes).
    put(
        &format!("snapshots/{}/{}/pinned", node.name, fakes[39]),
        b"{}".to_vec(),
    );
    let before = keys();

    let dry = tool
        .run(&[
            "prune",
            "--repo",
            repo,
            "--keep-daily",
            "7",
            "--keep-weekly",
            "3",
            "--dry-run",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(keys(), before, "a dry run deletes nothing");
    let verdicts = dry["nodes"][0]["snapshots"].as_array().unwrap().clone();
    assert_eq!(verdicts.len(), 46);
    let kept: Vec<String> = verdicts
        .iter()
        .filter(|v| v["keep"] == true)
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    assert!(kept.contains(&real_id), "the newest is kept");
    assert!(kept.contains(&fakes[39]), "the pinned one is kept");
    for fake in &fakes[..6] {
        assert!(kept.contains(fake), "every one of the last 7 days is kept");
    }
    assert!(kept.len() <= 7 + 3 + 1, "{kept:?}");

    let run = tool.run(&[
        "prune",
        "--repo",
        repo,
        "--keep-daily",
        "7",
        "--keep-weekly",
        "3",
    ]);
    run.ok();
    let after = keys();
    for id in fakes.iter().chain([&real_id]) {
        let present = after.iter().any(|k| k.contains(id.as_str()));
        assert_eq!(present, kept.contains(id), "{id}");
    }
    // What remains is still whole and listed.
    let list = tool.run(&["list", "--repo", repo, "--json"]).ok().json();
    assert_eq!(list["snapshots"].as_array().unwrap().len(), kept.len());
    tool.run(&["verify", &real_id, "--read-data", "--repo", repo])
        .ok();
}

#[test]
fn prune_on_a_garage_bucket_and_a_local_directory() {
    let node = loaded_node();
    let g = garage();
    let bucket: Bucket = g.new_bucket();
    let repo = format!("s3://{}", bucket.name);
    let tool = Tool::new().with(node.env()).with(g.env());
    prune_scenario(
        &tool,
        &repo,
        &node,
        &|| bucket.keys(""),
        &|k, v| bucket.put(k, v),
        &|k| bucket.get(k),
    );

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let local = Tool::new().with(node.env());
    let walk = |root: &std::path::Path| -> Vec<String> {
        fn go(base: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    go(base, &e.path(), out);
                } else {
                    out.push(
                        e.path()
                            .strip_prefix(base)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            }
        }
        let mut out = Vec::new();
        go(root, root, &mut out);
        out.sort();
        out
    };
    let put = |k: &str, v: Vec<u8>| {
        let path = root.join(k);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, v).unwrap();
    };
    prune_scenario(
        &local,
        root.to_str().unwrap(),
        &node,
        &|| walk(&root),
        &put,
        &|k| std::fs::read(root.join(k)).unwrap(),
    );
}
