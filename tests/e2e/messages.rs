//! `messages` and `verify --deep` on a real backup: the offline decoding
//! agrees with the manifest and with what an AMQP client receives from the
//! broker itself, message for message, in order.

use serde_json::Value;

use crate::backup::loaded_node;
use crate::harness::amqp::{Msg, drain};
use crate::harness::tool::Tool;

/// The `messages` lines of one queue.
fn lines_of<'a>(lines: &'a [Value], vhost: &str, queue: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["vhost"] == vhost && l["queue"] == queue)
        .collect()
}

/// A line against a message drained from the broker.
#[track_caller]
fn assert_line_is(line: &Value, m: &Msg, what: &str) {
    assert_eq!(
        line["routing_key"],
        m.routing_key.as_str(),
        "{what}: routing key"
    );
    assert_eq!(
        line["body"],
        std::str::from_utf8(&m.body).unwrap(),
        "{what}: body"
    );
    assert_eq!(line["body_size"], m.body.len(), "{what}: body size");
    let p = &line["properties"];
    assert_eq!(
        p["message_id"],
        m.properties.message_id().as_ref().unwrap().as_str(),
        "{what}: message id"
    );
    assert_eq!(
        p["priority"],
        *m.properties.priority().as_ref().unwrap(),
        "{what}: priority"
    );
    assert_eq!(
        p["timestamp"],
        *m.properties.timestamp().as_ref().unwrap(),
        "{what}: timestamp"
    );
    assert_eq!(p["delivery_mode"], 2, "{what}: delivery mode");
    let headers = m.properties.headers().as_ref().unwrap();
    let n = match headers.inner().get("n").unwrap() {
        lapin::types::AMQPValue::LongLongInt(n) => *n,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        p["headers"],
        serde_json::json!([
            {"name": "n", "type": "long", "value": n},
            {"name": "origin", "type": "longstr", "value": format!("test-{n}")},
        ]),
        "{what}: headers"
    );
}

#[test]
fn messages_and_verify_deep_agree_with_the_manifest_and_the_broker() {
    let node = loaded_node();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    let tool = Tool::new().with(node.env());
    let id = tool
        .run(&["backup", "--repo", repo])
        .ok()
        .stdout
        .trim()
        .to_string();
    let from = ["--repo", repo, "--from-node", node.name.as_str()];

    let run = tool.run(&[&["messages", &id, "--bodies"][..], &from].concat());
    run.ok();
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    // The broker delivers the same messages in the same order (the quorum
    // queue's from its logical records).
    for (vhost, queue, count) in [
        ("/", "classic", 30),
        ("oro", "oro.default", 40),
        ("/", "quorum", 5),
    ] {
        let decoded = lines_of(&lines, vhost, queue);
        let delivered = drain(&node, vhost, queue);
        assert_eq!(decoded.len(), count, "{queue}");
        assert_eq!(delivered.len(), count, "{queue}");
        for (i, (line, m)) in decoded.iter().zip(&delivered).enumerate() {
            assert_eq!(line["position"], i, "{queue} {i}");
            assert_line_is(line, m, &format!("{queue} message {i}"));
        }
    }
    // Priority levels are named, highest first.
    let levels: Vec<u64> = lines_of(&lines, "oro", "oro.default")
        .iter()
        .map(|l| l["priority_level"].as_u64().unwrap())
        .collect();
    assert!(levels.windows(2).all(|w| w[0] >= w[1]), "{levels:?}");
    assert_eq!(levels[0], 4);

    // A selection, a limit, no bodies.
    let run = tool.run(
        &[
            &[
                "messages", &id, "--vhost", "/", "--queue", "classic", "--limit", "2",
            ][..],
            &from,
        ]
        .concat(),
    );
    let limited: Vec<Value> = run
        .ok()
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(limited.len(), 2);
    assert!(
        limited
            .iter()
            .all(|l| l["queue"] == "classic" && l.get("body").is_none())
    );
    assert_eq!(limited[1]["body_size"], 9000);

    // A reader that stops early (`| head -1`) is not a failure (the bodies
    // make the output far larger than a pipe holds).
    let mut child = tool
        .command(&[&["messages", &id, "--bodies"][..], &from].concat())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with('{'), "{first}");
    assert!(child.wait().unwrap().success(), "messages | head -1 fails");

    // A queue the snapshot does not have is a usage error, before any download.
    let run = tool.run(&[&["messages", &id, "--queue", "nope"][..], &from].concat());
    run.expect_code(2);
    assert!(run.stderr.contains("no queue \"nope\""), "{}", run.stderr);

    // verify --deep: every covered queue decoded and counted, the quorum
    // queue's logical records too.
    let run = tool.run(&[&["verify", &id, "--deep", "--json"][..], &from].concat());
    let report = run.ok().json();
    crate::operator::assert_schema("verify-deep", &report);
    let deep = &report["snapshots"][0]["deep"];
    assert_eq!(deep["messages"], 75, "{report}");
    for q in deep["queues"].as_array().unwrap() {
        assert_eq!(q["status"], "ok", "{q}");
        assert_eq!(q["decoded"], q["expected"], "{q}");
    }

    // A manifest that promises one message more than the store holds fails, naming the queue.
    let manifest =
        std::path::Path::new(repo).join(format!("snapshots/{}/{id}/manifest.json", node.name));
    let mut m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    for q in m["queues"].as_array_mut().unwrap() {
        if q["name"] == "classic" {
            q["messages"] = 31.into();
        }
    }
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let run = tool.run(&[&["verify", &id, "--deep"][..], &from].concat());
    run.expect_code(3);
    assert!(
        run.stdout
            .contains("queue \"classic\" in vhost \"/\": 30 decoded, the manifest says 31"),
        "{}",
        run.stdout
    );
}

/// `verify --deep` and `messages` on a snapshot just taken: every covered
/// classic queue decodes to its manifest count, and the lines of the
/// standard `classic` queue are the messages published to it, in order.
/// (Called by the version tests, on a backup of each RabbitMQ version.)
pub fn decodes_as_the_manifest_says(repo: &str, id: &str, node: &str) {
    let from = ["--repo", repo, "--from-node", node];
    let tool = Tool::new();
    let report = tool
        .run(&[&["verify", id, "--deep", "--json"][..], &from].concat())
        .ok()
        .json();
    let deep = &report["snapshots"][0]["deep"];
    for q in deep["queues"].as_array().unwrap() {
        assert_eq!(q["status"], "ok", "{node}: {q}");
    }
    let run = tool.run(&[&["messages", id, "--bodies"][..], &from].concat());
    let lines: Vec<Value> = run
        .ok()
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len() as u64,
        deep["messages"].as_u64().unwrap(),
        "{node}"
    );
    let classic = lines_of(&lines, "/", "classic");
    let expected = deep["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["vhost"] == "/" && q["name"] == "classic")
        .map_or(0, |q| q["expected"].as_u64().unwrap());
    // The queue is full (30), or was drained before this backup.
    let published = crate::harness::fixtures::classic_messages("classic", expected as usize);
    assert_eq!(classic.len(), published.len(), "{node}");
    for (i, (line, m)) in classic.iter().zip(&published).enumerate() {
        assert_line_is(line, m, &format!("{node}: classic message {i}"));
    }
}
