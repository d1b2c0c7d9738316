//! The benchmark's data: application-like JSON messages of mixed sizes in
//! four classic queues and one priority queue.

use lapin::BasicProperties;

use crate::harness::amqp::{Msg, publish};
use crate::harness::rabbit::RabbitNode;

/// How much to load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Size {
    /// This many small messages (1-3 KB).
    Small(usize),
    /// This many messages of ~8.7 KB on average (3600 ≈ 30 MB).
    Medium(usize),
    /// About this many MiB of messages, mostly small by count, large by bytes.
    MiB(usize),
}

impl Size {
    /// Parses `200msg`, `3600msg30mb` style names: `<n>small`, `<n>medium`, `<n>mib`.
    pub fn parse(s: &str) -> Size {
        let (digits, unit): (String, String) = s.chars().partition(|c| c.is_ascii_digit());
        let n = digits.parse().expect("a number in the size");
        match unit.as_str() {
            "small" | "msg" => Size::Small(n),
            "medium" => Size::Medium(n),
            "mib" | "MiB" => Size::MiB(n),
            "gib" | "GiB" => Size::MiB(n * 1024),
            other => panic!("unknown size unit {other:?}: use 200small, 3600medium, 200mib, 1gib"),
        }
    }

    /// For headings.
    pub fn label(self) -> String {
        match self {
            Size::Small(n) => format!("{n} small messages"),
            Size::Medium(n) => format!("{n} messages (~{} MB)", n * 8_700 / 1_000_000),
            Size::MiB(n) if n % 1024 == 0 => format!("{} GiB of messages", n / 1024),
            Size::MiB(n) => format!("{n} MiB of messages"),
        }
    }

    fn sizes(self) -> &'static [usize] {
        match self {
            Size::Small(_) => &[1_000, 1_500, 2_000, 3_000],
            Size::Medium(_) => &[
                1_000, 1_500, 2_000, 3_000, 1_000, 8_000, 12_000, 2_500, 40_000, 1_200, 6_000,
                26_000,
            ],
            // Mostly small messages, as an application sends them; by bytes,
            // the large ones dominate.
            Size::MiB(_) => &[
                1_000, 1_500, 2_000, 3_000, 1_000, 8_000, 12_000, 2_500, 40_000, 1_200, 150_000,
                6_000, 500_000,
            ],
        }
    }
}

/// Application-like JSON, about 2.5x compressible with zstd -3.
fn payload(i: usize, size: usize, rng: &mut u64) -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "order",
        "customer",
        "product",
        "price",
        "quantity",
        "warehouse",
        "shipment",
        "invoice",
        "email",
        "template",
        "status",
        "pending",
        "complete",
        "search",
        "reindex",
        "integration",
        "sync",
        "channel",
        "website",
        "locale",
        "currency",
        "discount",
        "address",
        "payment",
    ];
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let mut out = format!("{{\"id\":{i},\"items\":[").into_bytes();
    while out.len() + 80 < size {
        let r = next();
        let word = WORDS[(r % 24) as usize];
        out.extend_from_slice(
            format!(
                "{{\"{word}\":\"{:016x}{:08x}\",\"n\":{}}},",
                next(),
                r >> 32,
                r % 100_000
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"{}]}");
    out.resize(size, b' ');
    out
}

/// Publishes `size` worth of persistent messages into four classic queues
/// and one priority queue. Returns the message count and the payload's
/// zstd -3 ratio.
pub fn load(node: &RabbitNode, size: Size) -> (usize, f64) {
    let queues = ["orders", "emails", "search", "integration", "prio"];
    let defs = serde_json::json!({
        "queues": queues.iter().map(|q| {
            let args = if *q == "prio" { serde_json::json!({"x-max-priority": 4}) } else { serde_json::json!({}) };
            serde_json::json!({"name": q, "vhost": "/", "durable": true, "auto_delete": false, "arguments": args})
        }).collect::<Vec<_>>()
    });
    node.import_definitions(&defs);
    let sizes = size.sizes();
    let (target_bytes, target_count) = match size {
        Size::MiB(mib) => (mib << 20, usize::MAX),
        Size::Small(n) | Size::Medium(n) => (usize::MAX, n),
    };
    let (mut total, mut count, mut rng) = (0usize, 0usize, 0x9e37_79b9_7f4a_7c15u64);
    let mut sample = Vec::new();
    while total < target_bytes && count < target_count {
        let mut batch = Vec::new();
        while batch.len() < 200 && total < target_bytes && count < target_count {
            let size = sizes[count % sizes.len()];
            let body = payload(count, size, &mut rng);
            if sample.len() < 4 << 20 {
                sample.extend_from_slice(&body);
            }
            let queue = queues[count % queues.len()];
            batch.push(Msg {
                routing_key: queue.into(),
                properties: BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_priority((count % 5) as u8),
                body,
            });
            total += size;
            count += 1;
        }
        publish(node, "/", "", &batch);
    }
    let ratio = sample.len() as f64 / zstd::bulk::compress(&sample, 3).unwrap().len() as f64;
    (count, ratio)
}

/// Total size of the files below `dir`.
pub fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}
