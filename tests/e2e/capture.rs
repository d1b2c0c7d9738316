//! Quorum queues and streams captured from the running broker (DESIGN §12):
//! backed up 25 times in a row, their messages are in every snapshot
//! exactly as a consumer receives them, and on the source not one message
//! was redelivered, dead-lettered or had its delivery count moved; a replay
//! brings them back onto a new node with another name.

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, DecimalValue, FieldArray, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};

use crate::harness::amqp::{Msg, publish, rt};
use crate::harness::fixtures::body;
use crate::harness::rabbit::RabbitNode;
use crate::harness::tool::Tool;
use crate::harness::versions::Version;

const QUORUM: &str = "orders";
const DEAD: &str = "orders.dead";
const STREAM: &str = "events";
const BACKUPS: usize = 25;

/// A quorum queue that dead-letters after 3 deliveries (4.x would after
/// 20 by default), its dead-letter queue, and a stream.
fn declare(node: &RabbitNode) {
    node.import_definitions(&json!({
        "vhosts": [{"name": "/"}],
        "queues": [
            {"name": QUORUM, "vhost": "/", "durable": true, "auto_delete": false,
             "arguments": {"x-queue-type": "quorum", "x-delivery-limit": 3,
                           "x-dead-letter-exchange": "", "x-dead-letter-routing-key": DEAD}},
            {"name": DEAD, "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}},
            {"name": STREAM, "vhost": "/", "durable": true, "auto_delete": false,
             "arguments": {"x-queue-type": "stream"}}
        ]
    }));
}

/// Headers of many AMQP types. Streams store AMQP 1.0, which has no
/// decimal: RabbitMQ refuses such a header on a stream, so only the quorum
/// queue's messages carry one.
fn headers(i: usize, decimal: bool) -> FieldTable {
    let mut h = FieldTable::default();
    let mut put = |k: &str, v: AMQPValue| {
        h.insert(ShortString::from(k), v);
    };
    put("n", AMQPValue::LongLongInt(i as i64));
    put("text", AMQPValue::LongString(format!("order-{i}").into()));
    put("flag", AMQPValue::Boolean(i.is_multiple_of(2)));
    put("byte", AMQPValue::ShortShortInt(-(i as i8)));
    put("short", AMQPValue::ShortInt(i as i16 * 100));
    put("int", AMQPValue::LongInt(-(i as i32) * 1000));
    put("double", AMQPValue::Double(i as f64 + 0.5));
    put("when", AMQPValue::Timestamp(1_700_000_000 + i as u64));
    put("bytes", AMQPValue::ByteArray(vec![0, 255, i as u8].into()));
    put("none", AMQPValue::Void);
    let mut list = FieldArray::default();
    list.push(AMQPValue::LongInt(i as i32));
    list.push(AMQPValue::LongString("item".into()));
    put("list", AMQPValue::FieldArray(list));
    let mut table = FieldTable::default();
    table.insert("nested".into(), AMQPValue::Boolean(true));
    put("table", AMQPValue::FieldTable(table));
    if decimal {
        put(
            "price",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 1999 + i as u32,
            }),
        );
    }
    h
}

/// `count` messages for `queue` (default exchange): every property set,
/// priorities 0-9, bodies of 6000 bytes (over 4 KiB) and 200, alternately.
fn messages(queue: &str, count: usize, decimal: bool) -> Vec<Msg> {
    (0..count)
        .map(|i| Msg {
            routing_key: queue.into(),
            properties: BasicProperties::default()
                .with_delivery_mode(2)
                .with_priority((i % 10) as u8)
                .with_headers(headers(i, decimal))
                .with_message_id(format!("{queue}-{i}").into())
                .with_correlation_id(format!("corr-{i}").into())
                .with_content_type("application/json".into())
                .with_content_encoding("identity".into())
                .with_reply_to("replies".into())
                .with_type("order.created".into())
                .with_app_id("shop".into())
                .with_user_id("guest".into())
                .with_timestamp(1_700_000_000 + i as u64),
            body: body(i, if i.is_multiple_of(2) { 6000 } else { 200 }),
        })
        .collect()
}

async fn connect(node: &RabbitNode) -> Connection {
    Connection::connect(
        &format!("{}/%2F", node.amqp_url()),
        ConnectionProperties::default(),
    )
    .await
    .expect("AMQP connect")
}

/// Delivers the first `n` messages of a quorum queue and requeues them: a
/// history (redelivered, a delivery count of 1) the backups must keep.
/// Returns their message ids.
fn requeue_first(node: &RabbitNode, queue: &str, n: usize) -> Vec<String> {
    rt().block_on(async {
        let conn = connect(node).await;
        let ch = conn.create_channel().await.unwrap();
        let mut got = Vec::new();
        while got.len() < n {
            if let Some(m) = ch
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await
                .unwrap()
            {
                let id = m
                    .delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .unwrap()
                    .to_string();
                got.push((m.delivery.delivery_tag, id));
            }
        }
        for (tag, _) in &got {
            ch.basic_nack(
                *tag,
                BasicNackOptions {
                    multiple: false,
                    requeue: true,
                },
            )
            .await
            .unwrap();
        }
        conn.close(200, "bye".into()).await.unwrap();
        got.into_iter().map(|(_, id)| id).collect()
    })
}

/// A message as a consumer received it, with its delivery state.
struct Delivered {
    msg: Msg,
    redelivered: bool,
}

/// Takes every message out of a queue with a real client, in order.
fn consume(node: &RabbitNode, queue: &str) -> Vec<Delivered> {
    rt().block_on(async {
        let conn = connect(node).await;
        let ch = conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
        {
            let d = m.delivery;
            out.push(Delivered {
                msg: Msg {
                    routing_key: d.routing_key.to_string(),
                    properties: d.properties.clone(),
                    body: d.data.clone(),
                },
                redelivered: d.redelivered,
            });
            ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
                .await
                .unwrap();
        }
        conn.close(200, "bye".into()).await.unwrap();
        out
    })
}

/// Reads the first `n` messages of a stream (offset `first`).
fn read_stream(node: &RabbitNode, queue: &str, n: usize) -> Vec<Msg> {
    rt().block_on(async {
        let conn = connect(node).await;
        let ch = conn.create_channel().await.unwrap();
        ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
        let mut args = FieldTable::default();
        args.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString("first".into()),
        );
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                "reader".into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        while out.len() < n {
            let d = consumer.next().await.unwrap().unwrap();
            out.push(Msg {
                routing_key: d.routing_key.to_string(),
                properties: d.properties.clone(),
                body: d.data.clone(),
            });
            ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
                .await
                .unwrap();
        }
        conn.close(200, "bye".into()).await.unwrap();
        out
    })
}

/// A header value as `messages` prints it (`{"type", "value"}`).
fn value_json(v: &AMQPValue) -> Value {
    let (kind, value) = match v {
        AMQPValue::Boolean(b) => ("bool", json!(b)),
        AMQPValue::ShortShortInt(i) => ("byte", json!(i)),
        AMQPValue::ShortShortUInt(i) => ("unsignedbyte", json!(i)),
        AMQPValue::ShortInt(i) => ("short", json!(i)),
        AMQPValue::ShortUInt(i) => ("unsignedshort", json!(i)),
        AMQPValue::LongInt(i) => ("signedint", json!(i)),
        AMQPValue::LongUInt(i) => ("unsignedint", json!(i)),
        AMQPValue::LongLongInt(i) => ("long", json!(i)),
        AMQPValue::Float(f) => ("float", json!(f)),
        AMQPValue::Double(f) => ("double", json!(f)),
        AMQPValue::DecimalValue(d) => ("decimal", json!({"scale": d.scale, "value": d.value})),
        AMQPValue::LongString(s) => ("longstr", bytes_json(s.as_bytes())),
        AMQPValue::ShortString(s) => ("longstr", json!(s.as_str())),
        AMQPValue::ByteArray(b) => ("binary", bytes_json(b.as_slice())),
        AMQPValue::Timestamp(t) => ("timestamp", json!(t)),
        AMQPValue::FieldArray(a) => (
            "array",
            Value::Array(a.as_slice().iter().map(value_json).collect()),
        ),
        AMQPValue::FieldTable(t) => ("table", table_json(t, &[])),
        AMQPValue::Void => ("void", Value::Null),
    };
    json!({"type": kind, "value": value})
}

fn bytes_json(b: &[u8]) -> Value {
    use base64::Engine;
    match std::str::from_utf8(b) {
        Ok(s) => json!(s),
        Err(_) => json!({"base64": base64::engine::general_purpose::STANDARD.encode(b)}),
    }
}

/// A table as `messages` prints it, in wire order, without `skip`ped names.
fn table_json(t: &FieldTable, skip: &[&str]) -> Value {
    Value::Array(
        t.inner()
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| {
                let mut e = value_json(v);
                e["name"] = json!(k.as_str());
                e
            })
            .collect(),
    )
}

/// A received message in the form of a `messages --bodies` line (routing
/// key, properties, body), leaving out the headers a delivery adds.
fn line_of(m: &Msg, added_on_delivery: &[&str]) -> Value {
    let p = &m.properties;
    let mut props = serde_json::Map::new();
    let mut short = |name: &str, v: Option<&ShortString>| {
        if let Some(v) = v {
            props.insert(name.into(), json!(v.as_str()));
        }
    };
    short("content_type", p.content_type().as_ref());
    short("content_encoding", p.content_encoding().as_ref());
    short("correlation_id", p.correlation_id().as_ref());
    short("reply_to", p.reply_to().as_ref());
    short("expiration", p.expiration().as_ref());
    short("message_id", p.message_id().as_ref());
    short("type", p.kind().as_ref());
    short("user_id", p.user_id().as_ref());
    short("app_id", p.app_id().as_ref());
    short("cluster_id", p.cluster_id().as_ref());
    if let Some(v) = p.delivery_mode() {
        props.insert("delivery_mode".into(), json!(v));
    }
    if let Some(v) = p.priority() {
        props.insert("priority".into(), json!(v));
    }
    if let Some(v) = p.timestamp() {
        props.insert("timestamp".into(), json!(v));
    }
    if let Some(h) = p.headers() {
        let t = table_json(h, added_on_delivery);
        if t.as_array().is_some_and(|a| !a.is_empty()) {
            props.insert("headers".into(), t);
        }
    }
    json!({
        "routing_key": m.routing_key,
        "properties": Value::Object(props),
        "body": bytes_json(&m.body),
    })
}

/// The parts of a `messages` line a consumer can see, headers by name
/// (the client keeps a table sorted).
fn visible(line: &Value) -> Value {
    let mut props = line["properties"].clone();
    if let Some(headers) = props["headers"].as_array_mut() {
        headers.sort_by(|a, b| a["name"].to_string().cmp(&b["name"].to_string()));
    }
    if props["headers"].as_array().is_some_and(|a| a.is_empty()) {
        props.as_object_mut().unwrap().remove("headers");
    }
    json!({
        "routing_key": line["routing_key"],
        "properties": props,
        "body": line["body"],
    })
}

/// The delivery count a consumer is shown (`x-delivery-count` up to 4.2,
/// `x-acquired-count` on 4.3); 3.x shows 0 for a first delivery.
fn delivery_count(m: &Msg) -> u64 {
    let h = m.properties.headers().clone().unwrap_or_default();
    ["x-delivery-count", "x-acquired-count"]
        .iter()
        .filter_map(|k| match h.inner().get(*k) {
            Some(AMQPValue::LongLongInt(n)) => Some(*n as u64),
            Some(AMQPValue::LongInt(n)) => Some(*n as u64),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

const COUNT_HEADERS: [&str; 2] = ["x-delivery-count", "x-acquired-count"];

/// Readers the capture might leave behind on the node (stream reader
/// counters).
fn leftover_readers(node: &RabbitNode) -> String {
    node.ctl(&[
        "eval",
        "[K || {K, _} <- maps:to_list(osiris_counters:overview()), is_tuple(K), element(1, K) =:= rabbitmq_backup].",
    ])
    .trim()
    .to_string()
}

fn twenty_five_backups_change_nothing(version: Version) {
    let node = RabbitNode::start_version(version);
    declare(&node);
    let quorum = messages(QUORUM, 40, true);
    let stream = messages(STREAM, 30, false);
    publish(&node, "/", "", &quorum);
    publish(&node, "/", "", &stream);
    let requeued = requeue_first(&node, QUORUM, 2);

    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    let tool = Tool::new().with(node.env());
    let mut last = Value::Null;
    for i in 0..BACKUPS {
        let report = tool
            .run(&["backup", "--repo", repo, "--live", "--json"])
            .ok()
            .json();
        assert_eq!(report["messages"], 70, "backup {i}: {report}");
        assert_eq!(report["covered_messages"], 70, "backup {i}: {report}");
        assert_eq!(
            report["uncovered_queues"],
            json!([]),
            "backup {i}: {report}"
        );
        last = report;
    }
    let id = last["id"].as_str().unwrap();
    let from = ["--repo", repo, "--from-node", node.name.as_str()];

    // The snapshot: format 2, both queues as logical records.
    let manifest = tool
        .run(&[&["show", id, "--json"][..], &from].concat())
        .ok()
        .json();
    assert_eq!(manifest["format"], 2);
    for (name, count) in [(QUORUM, 40), (STREAM, 30)] {
        let q = manifest["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .unwrap();
        assert_eq!(q["capture"], "logical", "{q}");
        assert_eq!(q["covered"], true, "{q}");
        assert_eq!(q["messages"], count, "{q}");
        let l = manifest["logical"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["queue"] == name)
            .unwrap();
        assert_eq!(l["messages"], count, "{l}");
    }
    let deep = tool
        .run(&[&["verify", id, "--deep", "--json"][..], &from].concat())
        .ok()
        .json();
    assert_eq!(deep["snapshots"][0]["deep"]["messages"], 70, "{deep}");
    let lines: Vec<Value> = tool
        .run(&[&["messages", id, "--bodies"][..], &from].concat())
        .ok()
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |queue: &str| -> Vec<Value> {
        lines
            .iter()
            .filter(|l| l["queue"] == queue)
            .map(visible)
            .collect()
    };

    // The source after 25 backups: nothing dead-lettered, nothing
    // redelivered but what was requeued before, no count moved; every
    // message as published, in the order the snapshot holds them.
    assert_eq!(node.counts("/")[DEAD], 0, "{version}: dead-lettered");
    let delivered = consume(&node, QUORUM);
    assert_eq!(delivered.len(), 40, "{version}");
    let snapshot = of(QUORUM);
    assert_eq!(snapshot.len(), 40, "{version}");
    for (i, (d, line)) in delivered.iter().zip(&snapshot).enumerate() {
        let id = d.msg.properties.message_id().as_ref().unwrap().to_string();
        let was_requeued = requeued.contains(&id);
        assert_eq!(d.redelivered, was_requeued, "{version}: {id} redelivered");
        assert_eq!(
            delivery_count(&d.msg),
            u64::from(was_requeued),
            "{version}: {id} delivery count"
        );
        assert_eq!(
            &line_of(&d.msg, &COUNT_HEADERS),
            line,
            "{version}: message {i} ({id}) in the snapshot"
        );
        let published = quorum
            .iter()
            .find(|m| m.properties.message_id().as_ref().unwrap().as_str() == id)
            .unwrap();
        assert_eq!(
            line_of(published, &[]),
            line_of(&d.msg, &COUNT_HEADERS),
            "{version}: {id} as published"
        );
    }
    assert_eq!(node.counts("/")[DEAD], 0, "{version}: dead-lettered");

    // The stream: what a consumer from the first offset reads, without the
    // offset header its delivery adds; no reader left behind.
    let read = read_stream(&node, STREAM, 30);
    let snapshot = of(STREAM);
    assert_eq!(snapshot.len(), 30, "{version}");
    for (i, (m, line)) in read.iter().zip(&snapshot).enumerate() {
        assert_eq!(
            &line_of(m, &["x-stream-offset"]),
            line,
            "{version}: stream message {i}"
        );
        assert_eq!(m.body, stream[i].body, "{version}: stream body {i}");
    }
    assert_eq!(leftover_readers(&node), "[]", "{version}");

    // Restored by replay onto a new node with another name: every message
    // back byte for byte, in the snapshot's order, none redelivered.
    let target = RabbitNode::start_version(version);
    let restore = [
        "restore",
        id,
        "--repo",
        repo,
        "--from-node",
        node.name.as_str(),
        "--method",
        "replay",
    ];
    Tool::new().with(target.env()).run(&restore).ok();
    // Replacing the messages of a stream that holds some is refused before
    // anything changes: RabbitMQ cannot empty a stream.
    let mut again = restore.to_vec();
    again.push("--replace-messages");
    let run = Tool::new().with(target.env()).run(&again);
    run.expect_code(4);
    assert!(
        run.stderr.contains("cannot empty a stream") && run.stderr.contains(STREAM),
        "{version}: {}",
        run.stderr
    );
    // (What follows reads both queues back: the refusal changed neither.)
    let back = consume(&target, QUORUM);
    let snapshot = of(QUORUM);
    assert_eq!(back.len(), 40, "{version}: restored quorum messages");
    for (i, (d, line)) in back.iter().zip(&snapshot).enumerate() {
        assert!(
            !d.redelivered,
            "{version}: restored message {i} redelivered"
        );
        assert_eq!(
            &line_of(&d.msg, &COUNT_HEADERS),
            line,
            "{version}: restored quorum message {i}"
        );
    }
    let read = read_stream(&target, STREAM, 30);
    let snapshot = of(STREAM);
    assert_eq!(read.len(), 30, "{version}: restored stream messages");
    for (i, (m, line)) in read.iter().zip(&snapshot).enumerate() {
        assert_eq!(
            &line_of(m, &["x-stream-offset"]),
            line,
            "{version}: restored stream message {i}"
        );
    }
}

#[test]
fn quorum_queue_and_stream_backed_up_25_times_on_3_10_are_untouched() {
    twenty_five_backups_change_nothing(Version::V3_10);
}

#[test]
fn quorum_queue_and_stream_backed_up_25_times_on_4_3_are_untouched() {
    twenty_five_backups_change_nothing(Version::V4_3);
}

#[test]
fn quorum_queue_and_stream_backed_up_25_times_on_4_0_are_untouched() {
    twenty_five_backups_change_nothing(Version::V4_0);
}
