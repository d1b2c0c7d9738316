//! Replay's throughput side by side with the broker's own limit: the
//! fastest plain publisher of the same messages, with confirms on, on the
//! same broker (DESIGN §10).
//!
//! - reference: every message decoded into memory first, then published
//!   through the default exchange with confirms, all in flight, confirms
//!   awaited at the end;
//! - replay: `rabbitmq_backup::replay::run` from the store files (decoding
//!   included), window 1024, progress journalled and synced.
//!
//! A private node (the test harness) is loaded with `--size-mib` of
//! persistent messages in a classic queue, a priority queue and a
//! version-2 queue; `stop_app` and a copy of `msg_stores` make the source.
//! Runs alternate, queues purged between; medians and the ratio printed.
//!
//! `cargo bench --bench replay -- [--size-mib 128] [--runs 3]`

/// The end-to-end tests' harness (nodes), shared as source.
#[path = "../tests/e2e/harness"]
#[allow(dead_code)]
mod harness {
    pub mod amqp;
    pub mod fixtures;
    pub mod process;
    pub mod rabbit;
    pub mod versions;
    pub use process::{free_port, set_parent_death_signal};
}

use std::path::Path;
use std::time::{Duration, Instant};

use harness::amqp::{Msg, publish, rt};
use harness::fixtures::{body, props};
use harness::rabbit::RabbitNode;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Connection, ConnectionProperties};
use rabbitmq_backup::exclude::mover::AmqpConfig;
use rabbitmq_backup::message::Message;
use rabbitmq_backup::replay::{self, Options, Progress, Sources};
use rabbitmq_backup::settings::Secret;
use rabbitmq_backup::store::Store;
use serde_json::json;

const QUEUES: [&str; 3] = ["bench.classic", "bench.priority", "bench.v2"];

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn size_of(i: usize) -> usize {
    match i % 20 {
        0 => 50_000,
        1..=5 => 5_000 + (i % 7) * 3_000,
        _ => 200 + (i % 13) * 230,
    }
}

fn load(node: &RabbitNode, bytes: u64) -> u64 {
    node.import_definitions(&json!({
        "queues": [
            {"name": QUEUES[0], "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}},
            {"name": QUEUES[1], "vhost": "/", "durable": true, "auto_delete": false, "arguments": {"x-max-priority": 5}},
            {"name": QUEUES[2], "vhost": "/", "durable": true, "auto_delete": false, "arguments": {"x-queue-version": 2}}
        ]
    }));
    let (mut sent, mut count, mut i) = (0u64, 0u64, 0usize);
    while sent < bytes {
        let queue = QUEUES[(i / 500) % 3];
        let batch: Vec<Msg> = (i..i + 500)
            .map(|n| Msg {
                routing_key: queue.into(),
                properties: props(n, (n % 6) as u8),
                body: body(n, size_of(n)),
            })
            .collect();
        sent += batch.iter().map(|m| m.body.len() as u64).sum::<u64>();
        count += batch.len() as u64;
        publish(node, "/", "", &batch);
        i += 500;
    }
    count
}

/// Every message of the copy, per queue, decoded.
fn decode_all(root: &Path) -> Vec<(String, Vec<Message>)> {
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(root).unwrap();
    let mut out = Vec::new();
    for vhost in store.vhosts() {
        let r = store.vhost(&vhost.name, work.path()).unwrap();
        for q in &vhost.queues {
            let messages = r.queue(q).map(|i| i.unwrap().message).collect();
            out.push((q.name.clone(), messages));
        }
    }
    out
}

/// The plain publisher: default exchange, confirms, everything in flight.
fn plain(node: &RabbitNode, all: &[(String, Vec<Message>)]) -> (Duration, u64) {
    rt().block_on(async {
        let conn = Connection::connect(
            &format!("{}/%2F", node.amqp_url()),
            ConnectionProperties::default(),
        )
        .await
        .unwrap();
        let channel = conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let started = Instant::now();
        let mut confirms = Vec::new();
        for (queue, messages) in all {
            for m in messages {
                let (p, _) = m.properties.to_lapin();
                confirms.push(
                    channel
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions::default(),
                            &m.body,
                            p,
                        )
                        .await
                        .unwrap(),
                );
            }
        }
        let n = confirms.len() as u64;
        for c in confirms {
            assert!(c.await.unwrap().is_ack());
        }
        let t = started.elapsed();
        conn.close(200, "bye".into()).await.unwrap();
        (t, n)
    })
}

fn ours(node: &RabbitNode, root: &Path, window: usize) -> (Duration, u64) {
    let area = tempfile::tempdir().unwrap();
    let target = AmqpConfig {
        url: node.amqp_url(),
        username: "guest".into(),
        password: Secret::new("guest"),
    };
    let sources = Sources {
        root: root.to_path_buf(),
        work: area.path().to_path_buf(),
        queues: replay::source::find(root, &[]).unwrap(),
    };
    let mut progress = Progress::open(area.path()).unwrap();
    let started = Instant::now();
    let options = Options {
        window,
        ..Options::default()
    };
    rt().block_on(replay::run(&target, &sources, &options, &mut progress))
        .unwrap();
    let t = started.elapsed();
    (t, progress.queues.iter().map(|q| q.published).sum())
}

fn purge(node: &RabbitNode) {
    for q in QUEUES {
        node.ctl(&["purge_queue", q]);
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let size_mib = arg("--size-mib", 128);
    let runs = arg("--runs", 3).max(1) as usize;
    let window = arg("--window", replay::WINDOW as u64).max(1) as usize;
    let node = RabbitNode::start();
    eprintln!("loading {size_mib} MiB into {}", node.name);
    let published = load(&node, size_mib << 20);
    node.ctl(&["stop_app"]);
    let copy = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(node.data_dir().join("msg_stores"))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    node.ctl(&["start_app"]);
    node.ctl(&["await_startup"]);
    purge(&node);
    let decoding = Instant::now();
    let all = decode_all(copy.path());
    let decoding = decoding.elapsed();
    let bytes: u64 = all
        .iter()
        .flat_map(|(_, m)| m.iter())
        .map(|m| m.body.len() as u64)
        .sum();
    let (mut refs, mut replays) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let mut order = [true, false];
        if run % 2 == 1 {
            order.reverse();
        }
        for reference_first in order {
            if reference_first {
                let (t, n) = plain(&node, &all);
                assert_eq!(n, published);
                refs.push(t);
            } else {
                let (t, n) = ours(&node, copy.path(), window);
                assert_eq!(n, published, "every message replayed");
                replays.push(t);
            }
            purge(&node);
        }
    }
    let (r, o) = (median(refs), median(replays));
    let rate = |t: Duration| published as f64 / t.as_secs_f64();
    let mb = |t: Duration| bytes as f64 / 1e6 / t.as_secs_f64();
    println!("## Replay ({size_mib} MiB, {published} messages, {runs} runs, medians)\n");
    println!("| | time | messages/s | body MB/s |");
    println!("|---|---|---|---|");
    println!(
        "| plain publisher, confirms, decoded in memory first | {:.2} s | {:.0} | {:.1} |",
        r.as_secs_f64(),
        rate(r),
        mb(r)
    );
    println!(
        "| replay (decoding, window {window}, journal synced) | {:.2} s | {:.0} | {:.1} |",
        o.as_secs_f64(),
        rate(o),
        mb(o)
    );
    println!(
        "\nreplay / plain publisher throughput: {:.2}",
        r.as_secs_f64() / o.as_secs_f64()
    );
    println!(
        "decoding alone (store reader, once, not in either time above): {:.2} s",
        decoding.as_secs_f64()
    );
}
