//! The tool leaves the node and the repository as it found them, and says
//! honestly what it checked: verify's verdicts, incomplete snapshots,
//! a failed broker stop, exclude's marks on the messages it keeps.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::backup::loaded_node;
use crate::harness::faults::{Fault, FaultProxy, Rule};
use crate::harness::garage::garage;
use crate::harness::rabbit::RabbitNode;
use crate::harness::tool::Tool;

#[test]
fn verify_tells_damage_from_unreachable_storage_and_says_what_it_compared() {
    let node = loaded_node();
    let g = garage();
    let bucket = g.new_bucket();
    let repo = format!("s3://{}", bucket.name);
    let proxy = FaultProxy::start(g.s3_port);
    let tool = Tool::new()
        .with(node.env())
        .with(g.env())
        .var("AWS_ENDPOINT_URL_S3", &proxy.endpoint())
        .var("RABBITMQ_BACKUP_RETRIES", "2");
    let id = tool.run(&["backup", "--repo", &repo, "--json"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Garage keeps checksums: sizes and checksums compared.
    let run = tool.run(&["verify", &id, "--repo", &repo]);
    assert!(
        run.ok()
            .stdout
            .contains("present, sizes and server checksums match"),
        "{}",
        run.stdout
    );
    let verdict = &tool
        .run(&["verify", &id, "--repo", &repo, "--json"])
        .ok()
        .json()["snapshots"][0];
    assert_eq!(verdict["checked"], "sizes-and-checksums");

    // A server that keeps none: "could not compare", never "ok, 0 compared".
    proxy.set(vec![Rule::every("HEAD", 1, Fault::StripChecksums)]);
    let run = tool.run(&["verify", &id, "--repo", &repo]);
    let out = &run.ok().stdout;
    assert!(
        out.contains("could NOT be compared") && out.contains("--read-data"),
        "{out}"
    );
    assert!(
        !out.contains("ok,") && !out.contains("0 server checksums"),
        "{out}"
    );
    let report = tool
        .run(&["verify", &id, "--repo", &repo, "--json"])
        .ok()
        .json();
    assert_eq!(report["snapshots"][0]["checked"], "sizes");
    assert_eq!(report["snapshots"][0]["checksums_compared"], 0);

    // The manifest cannot be fetched: a failure (exit 1), not damage (3).
    proxy.set(vec![Rule {
        target: Some("manifest.json".into()),
        ..Rule::every("GET", 1, Fault::Status(500, "InternalError"))
    }]);
    for args in [vec!["verify", id.as_str()], vec!["verify", "--all"]] {
        let mut args = args;
        args.extend(["--repo", repo.as_str()]);
        let run = tool.run(&args);
        run.expect_code(1);
        assert!(
            run.stderr.contains("could not verify snapshot") && run.stderr.contains("not damage"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(!run.stdout.contains("DAMAGED"), "{}", run.stdout);
    }
    // Dropped connections likewise.
    proxy.set(vec![Rule {
        target: Some("manifest.json".into()),
        ..Rule::every("GET", 1, Fault::Drop)
    }]);
    tool.run(&["verify", &id, "--repo", &repo]).expect_code(1);
    assert!(proxy.injected() >= 4);

    // A damaged manifest is damage.
    proxy.set(vec![]);
    let key = bucket
        .keys("")
        .into_iter()
        .find(|k| k.ends_with("manifest.json"))
        .unwrap();
    bucket.put(&key, b"{ not a manifest".to_vec());
    let run = tool.run(&["verify", &id, "--repo", &repo]);
    run.expect_code(3);
    assert!(run.stdout.contains("DAMAGED"), "{}", run.stdout);

    // A local directory keeps no checksums, and says so without alarm.
    let local = tempfile::tempdir().unwrap();
    let l = local.path().to_str().unwrap();
    let id = tool.run(&["backup", "--repo", l, "--json"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = tool.run(&["verify", &id, "--repo", l]);
    let out = &run.ok().stdout;
    assert!(
        out.contains("ok, ") && out.contains("(a local directory keeps no checksums"),
        "{out}"
    );
    assert!(!out.contains("server checksums compared"), "{out}");
}

/// `rabbitmqctl eval` on the node, trimmed.
fn eval(node: &RabbitNode, expr: &str) -> String {
    node.ctl(&["eval", expr]).trim().to_string()
}

fn handler_registered(node: &RabbitNode) -> String {
    eval(
        node,
        "lists:member(rabbit_mgmt_db_handler, gen_event:which_handlers(rabbit_event)).",
    )
}

#[test]
fn the_node_and_the_repository_are_left_as_found() {
    let mut node = loaded_node();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let r = repo.to_str().unwrap();
    let tool = Tool::new().with(node.env());
    assert_eq!(handler_registered(&node), "true");
    let statistics = eval(&node, "application:get_env(rabbit, collect_statistics).");

    // The stop fails on the node after the management agent's handler was
    // removed: the handler (and the statistics it turns on) are put back,
    // the broker keeps running with its messages.
    let run = tool
        .clone()
        .var("RABBITMQ_BACKUP_FAILPOINT", "ctl:stop-app=fail-on-node")
        .run(&["backup", "--repo", r]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("stopping the broker failed") && run.stderr.contains("put back"),
        "{}",
        run.stderr
    );
    assert_eq!(eval(&node, "rabbit:is_running()."), "true");
    assert_eq!(handler_registered(&node), "true");
    assert_eq!(
        eval(&node, "application:get_env(rabbit, collect_statistics)."),
        statistics
    );
    assert_eq!(node.counts("/")["classic"], 30);
    // A good stop and start bring it back too.
    tool.run(&["backup", "--repo", r]).ok();
    assert_eq!(handler_registered(&node), "true");

    // prune removes incomplete snapshots once no backup can be writing them,
    // and keeps the one a backup is writing right now.
    let old = SystemTime::now() - Duration::from_secs(3 * 24 * 3600);
    let dead = repo
        .join("snapshots")
        .join(&node.name)
        .join("20200101T000000Z-0000dead");
    std::fs::create_dir_all(dead.join("data")).unwrap();
    let chunk = dead.join("data").join("a".repeat(64));
    std::fs::write(&chunk, b"chunk of a killed backup").unwrap();
    for path in [&chunk, &dead.join("data"), &dead] {
        std::fs::File::open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let (mut running, _marker) = tool.spawn_at(
        "upload:after-first-chunk",
        &["backup", "--repo", r, "--chunk-size", "1"],
        Duration::from_secs(180),
    );
    let writing = in_progress(&repo, &node.name, "20200101T000000Z-0000dead");
    let prune = |dry: bool| {
        let mut args = vec!["prune", "--keep-last", "5", "--repo", r, "--json"];
        if dry {
            args.push("--dry-run");
        }
        tool.run(&args).ok().json()
    };
    let report = prune(true);
    let incomplete = report["incomplete"].as_array().unwrap();
    let verdicts: Vec<(Value, Value)> = incomplete
        .iter()
        .map(|o| (o["id"].clone(), o["removable"].clone()))
        .collect();
    assert_eq!(
        verdicts,
        vec![
            (json!("20200101T000000Z-0000dead"), json!(true)),
            (json!(writing), json!(false)),
        ]
    );
    assert!(dead.exists(), "a dry run removes nothing");
    prune(false);
    assert!(!dead.exists(), "the killed backup's chunks are removed");
    let writing_dir = repo.join("snapshots").join(&node.name).join(&writing);
    assert!(writing_dir.exists(), "the running backup's are kept");
    running.kill().unwrap();
    running.wait().unwrap();
    node.wait_ready();
    tool.run(&["verify", "--all", "--read-data", "--repo", r])
        .ok();

    // exclude's documented marks on the messages it keeps: redelivered,
    // and one more delivery on a quorum queue's count.
    for queue in ["classic", "quorum"] {
        tool.run(&[
            "exclude",
            "--vhost",
            "/",
            "--queue",
            queue,
            "--routing-key",
            "matches.nothing",
        ])
        .ok();
    }
    let classic = peek(&node, "classic");
    assert_eq!(classic["redelivered"], true, "{classic}");
    let quorum = peek(&node, "quorum");
    assert_eq!(quorum["redelivered"], true, "{quorum}");
    assert!(
        quorum["properties"]["headers"]["x-delivery-count"].as_u64() >= Some(1),
        "{quorum}"
    );
    let help = Tool::new().run(&["exclude", "--help"]);
    assert!(
        help.ok().stdout.contains("marked redelivered")
            && help.stdout.contains("x-delivery-count")
            && help.stdout.contains("--method replay"),
        "{}",
        help.stdout
    );
}

/// The id of the one incomplete snapshot of `node` other than `except`.
fn in_progress(repo: &Path, node: &str, except: &str) -> String {
    let ids: Vec<String> = std::fs::read_dir(repo.join("snapshots").join(node))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|id| {
            id != except
                && !repo
                    .join("snapshots")
                    .join(node)
                    .join(id)
                    .join("manifest.json")
                    .exists()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0].clone()
}

/// The first message of a queue, through the management API, requeued.
fn peek(node: &RabbitNode, queue: &str) -> Value {
    rabbitmq_backup::tls::install_default_provider();
    let messages: Value = reqwest::blocking::Client::new()
        .post(format!("{}/api/queues/%2F/{queue}/get", node.mgmt_url()))
        .basic_auth("guest", Some("guest"))
        .json(
            &json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 10}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    messages[0].clone()
}
