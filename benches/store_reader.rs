//! The store reader's throughput on a real message store, side by side
//! with the raw read of the same files (the disk and page-cache limit):
//!
//! - reference: read every file of `msg_stores` sequentially, discard it;
//! - reader: open the store, scan each vhost's shared store, decode every
//!   message of every queue in delivery order.
//!
//! A private RabbitMQ node (the test harness) is loaded with `--size-mib`
//! of persistent messages of mixed sizes (small ones embedded in the queue
//! index, larger ones in the shared store) in a classic queue, a priority
//! queue and a version-2 queue; `stop_app` makes the copy consistent.
//! Runs alternate; medians are printed with MB/s, messages/s and the ratio.
//!
//! `cargo bench --bench store_reader -- [--size-mib 1024] [--runs 3]`

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

use harness::amqp::{Msg, publish};
use harness::fixtures::{body, props};
use harness::rabbit::RabbitNode;
use rabbitmq_backup::store::Store;
use serde_json::json;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sizes by count: mostly small (in the index), some medium, a few large.
fn size_of(i: usize) -> usize {
    match i % 20 {
        0 => 200_000,
        1..=5 => 5_000 + (i % 7) * 6_000,
        _ => 200 + (i % 13) * 230,
    }
}

fn load(node: &RabbitNode, bytes: u64) -> u64 {
    node.import_definitions(&json!({
        "queues": [
            {"name": "bench.classic", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}},
            {"name": "bench.priority", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {"x-max-priority": 5}},
            {"name": "bench.v2", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {"x-queue-version": 2}}
        ]
    }));
    let queues = ["bench.classic", "bench.priority", "bench.v2"];
    let (mut sent, mut count, mut i) = (0u64, 0u64, 0usize);
    while sent < bytes {
        let queue = queues[(i / 500) % 3];
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

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Reads every file once; returns the bytes read.
fn reference(root: &Path) -> (Duration, u64) {
    let started = Instant::now();
    let mut all = Vec::new();
    files(&root.join("msg_stores"), &mut all);
    let mut total = 0;
    for f in all {
        total += std::io::copy(&mut std::fs::File::open(f).unwrap(), &mut std::io::sink()).unwrap();
    }
    (started.elapsed(), total)
}

/// Decodes every message; returns (time, messages, body bytes).
fn reader(root: &Path) -> (Duration, u64, u64) {
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(root).unwrap();
    let (mut messages, mut bytes) = (0, 0);
    for vhost in store.vhosts() {
        let r = store.vhost(&vhost.name, work.path()).unwrap();
        for q in &vhost.queues {
            for item in r.queue(q) {
                let item = item.unwrap();
                messages += 1;
                bytes += item.message.body.len() as u64;
            }
        }
    }
    (started.elapsed(), messages, bytes)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let size_mib = arg("--size-mib", 1024);
    let runs = arg("--runs", 3).max(1) as usize;
    let node = RabbitNode::start();
    eprintln!("loading {size_mib} MiB into {}", node.name);
    let published = load(&node, size_mib << 20);
    node.ctl(&["stop_app"]);
    let root = node.data_dir();
    let rss_before = peak_rss_kib();
    let (mut refs, mut ours) = (Vec::new(), Vec::new());
    let (mut store_bytes, mut decoded, mut body_bytes) = (0, 0, 0);
    for run in 0..runs {
        // Who goes first alternates.
        let mut order = [true, false];
        if run % 2 == 1 {
            order.reverse();
        }
        for reference_first in order {
            if reference_first {
                let (t, b) = reference(&root);
                refs.push(t);
                store_bytes = b;
            } else {
                let (t, m, b) = reader(&root);
                ours.push(t);
                (decoded, body_bytes) = (m, b);
            }
        }
    }
    assert_eq!(decoded, published, "every published message is decoded");
    let (r, o) = (median(refs), median(ours));
    let mb = |bytes: u64, t: Duration| bytes as f64 / 1e6 / t.as_secs_f64();
    println!("## Store reader ({size_mib} MiB published, {runs} runs, medians)\n");
    println!("| | time | store MB/s | messages/s |");
    println!("|---|---|---|---|");
    println!(
        "| raw read of msg_stores ({:.0} MB) | {:.2} s | {:.0} | |",
        store_bytes as f64 / 1e6,
        r.as_secs_f64(),
        mb(store_bytes, r)
    );
    println!(
        "| store reader ({decoded} messages, {:.0} MB of bodies) | {:.2} s | {:.0} | {:.0} |",
        body_bytes as f64 / 1e6,
        o.as_secs_f64(),
        mb(store_bytes, o),
        decoded as f64 / o.as_secs_f64()
    );
    println!(
        "\nreader / raw read time: {:.2}x",
        o.as_secs_f64() / r.as_secs_f64()
    );
    println!(
        "peak resident memory: {} MiB before the runs, {} MiB after",
        rss_before / 1024,
        peak_rss_kib() / 1024
    );
}
