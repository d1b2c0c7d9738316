//! Logical capture's throughput (DESIGN §12), side by side with a plain
//! AMQP client reading the same messages out of the same broker:
//!
//! - reference: a consumer with a prefetch of 1000, acknowledging, until it
//!   has every message (a stream's from offset `first`): how fast the broker
//!   hands the queue to a client. It empties a quorum queue, which is purged
//!   and loaded again (untimed) before the next run;
//! - capture: `capture::capture_all` over the node's capture server, every
//!   message decoded and written as logical records (discarded here).
//!
//! A private RabbitMQ node (the test harness, the host's version) holds a
//! quorum queue and a stream of `--messages` each (bodies 200 B to 6 KB,
//! every property and a few headers). Runs alternate who goes first;
//! medians are printed with messages/s and the ratio to the reference.
//!
//! `cargo bench --bench capture -- [--messages 10000] [--runs 3]`

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

use std::time::{Duration, Instant};

use futures::StreamExt;
use harness::amqp::{Msg, publish, rt};
use harness::fixtures::{body, props};
use harness::rabbit::RabbitNode;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use rabbitmq_backup::capture::{self, Kind, Target};
use rabbitmq_backup::rabbit::control::Control;
use rabbitmq_backup::rabbit::ctl::Ctl;
use serde_json::json;

const QUORUM: &str = "bench.quorum";
const STREAM: &str = "bench.stream";
const EMPTY: &str = "bench.empty";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn declare(node: &RabbitNode) {
    node.import_definitions(&json!({
        "queues": [
            {"name": QUORUM, "vhost": "/", "durable": true, "auto_delete": false,
             "arguments": {"x-queue-type": "quorum"}},
            {"name": STREAM, "vhost": "/", "durable": true, "auto_delete": false,
             "arguments": {"x-queue-type": "stream"}},
            {"name": EMPTY, "vhost": "/", "durable": true, "auto_delete": false,
             "arguments": {"x-queue-type": "quorum"}}
        ]
    }));
}

fn load(node: &RabbitNode, queue: &str, count: usize) {
    for start in (0..count).step_by(1000) {
        let batch: Vec<Msg> = (start..(start + 1000).min(count))
            .map(|n| Msg {
                routing_key: queue.into(),
                properties: props(n, 0),
                body: body(n, 200 + (n % 30) * 200),
            })
            .collect();
        publish(node, "/", "", &batch);
    }
}

/// A plain client receives `count` messages of `queue`.
fn reference(node: &RabbitNode, queue: &str, count: usize) -> Duration {
    rt().block_on(async {
        let started = Instant::now();
        let conn = Connection::connect(
            &format!("{}/%2F", node.amqp_url()),
            ConnectionProperties::default(),
        )
        .await
        .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.basic_qos(1000, BasicQosOptions::default())
            .await
            .unwrap();
        let mut args = FieldTable::default();
        if queue == STREAM {
            args.insert(
                "x-stream-offset".into(),
                AMQPValue::LongString("first".into()),
            );
        }
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                "bench".into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .unwrap();
        let mut got = 0;
        while got < count {
            let d = consumer.next().await.unwrap().unwrap();
            got += 1;
            ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
                .await
                .unwrap();
        }
        ch.close(200, "done".into()).await.unwrap();
        conn.close(200, "done".into()).await.unwrap();
        started.elapsed()
    })
}

/// The capture of `queue`; returns its time and the records written.
fn ours(control: &Control, queue: &str, kind: Kind) -> (Duration, u64) {
    rt().block_on(async {
        let started = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let target = Target {
            vhost: "/".into(),
            name: queue.into(),
            kind,
        };
        let captured = capture::capture_all(control, &[target], tx).await.unwrap();
        drain.await.unwrap();
        (started.elapsed(), captured[0].records())
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let count = arg("--messages", 10_000) as usize;
    let runs = arg("--runs", 3).max(1) as usize;
    let node = RabbitNode::start();
    eprintln!(
        "loading {count} messages into a quorum queue and a stream of {}",
        node.name
    );
    declare(&node);
    load(&node, QUORUM, count);
    load(&node, STREAM, count);
    // The tool's rabbitmqctl finds the node's cookie through HOME.
    // SAFETY: set before any other thread of ours reads the environment.
    unsafe { std::env::set_var("HOME", node.home()) };
    let ctl = Ctl::new(node.ctl_program(), Some(node.name.clone()));
    // As the tool does: over Erlang distribution, else rabbitmqctl.
    let control = rt().block_on(Control::connect(ctl, &node.name, None, Some(&node.home())));
    let transport = control.transport().as_str();
    // The fixed cost: the capture server started over that transport and
    // an empty queue.
    let fixed = median(
        (0..runs)
            .map(|_| ours(&control, EMPTY, Kind::Quorum).0)
            .collect(),
    );
    println!("## Logical capture ({count} messages per queue, {runs} runs, medians)\n");
    println!(
        "fixed cost of a capture (server start over {transport}, an empty queue): {:.2} s\n",
        fixed.as_secs_f64()
    );
    println!(
        "| queue | plain AMQP client | capture | client msgs/s | capture msgs/s | capture msgs/s without the fixed cost | capture / client time |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (queue, kind) in [(QUORUM, Kind::Quorum), (STREAM, Kind::Stream)] {
        let (mut refs, mut caps) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let mut order = [true, false];
            if run % 2 == 1 {
                order.reverse();
            }
            for reference_first in order {
                if reference_first {
                    refs.push(reference(&node, queue, count));
                    if kind == Kind::Quorum {
                        // Acknowledgements still in flight at the close
                        // leave messages behind: start again from empty.
                        node.ctl(&["purge_queue", QUORUM]);
                        load(&node, QUORUM, count);
                    }
                } else {
                    let (t, records) = ours(&control, queue, kind);
                    assert_eq!(records, count as u64, "{queue}: every message captured");
                    caps.push(t);
                }
            }
        }
        let (r, c) = (median(refs), median(caps));
        let rate = |t: Duration| count as f64 / t.as_secs_f64();
        println!(
            "| {queue} | {:.2} s | {:.2} s | {:.0} | {:.0} | {:.0} | {:.2}x |",
            r.as_secs_f64(),
            c.as_secs_f64(),
            rate(r),
            rate(c),
            rate(c.saturating_sub(fixed).max(Duration::from_millis(1))),
            c.as_secs_f64() / r.as_secs_f64()
        );
    }
}
