//! Fills a private RabbitMQ node with the store fixtures' messages and
//! writes what each queue must decode to (`expected.json`). Run by
//! `scripts/make-store-fixtures`, once per RabbitMQ version:
//!
//! ```text
//! store_fixture AMQP_BASE_URL RABBITMQ_VERSION OUT/expected.json
//! ```
//!
//! Every message is one of our domain `Message`s, published through lapin
//! with publisher confirms; the expected JSON is that message as `messages`
//! prints it, with what RabbitMQ does to it on the way (it strips `BCC`
//! from the headers and routes by `CC`/`BCC`).

use bytes::Bytes;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};
use rabbitmq_backup::message::{FieldValue, Message, Properties, Table, json};
use serde_json::{Value, json};

struct Queue {
    vhost: &'static str,
    name: &'static str,
    args: Vec<(&'static str, AMQPValue)>,
    /// Published, in order, with the priority level each lands in.
    published: Vec<(Message, Option<u8>)>,
    /// How many are acknowledged (from the head), then how many delivered
    /// and left unacknowledged when the channel closes.
    acked: usize,
    unacked: usize,
}

fn s(v: &str) -> Option<Vec<u8>> {
    Some(v.as_bytes().to_vec())
}

/// Every field type RabbitMQ reads in headers, nested too.
fn rich_headers(i: usize) -> Table {
    let mut entries = vec![
        (
            b"x-array".to_vec(),
            FieldValue::Array(vec![
                FieldValue::LongStr(b"a".to_vec()),
                FieldValue::I32(-7),
                FieldValue::Table(Table(vec![(b"in".to_vec(), FieldValue::Bool(true))])),
            ]),
        ),
        (b"x-bool".to_vec(), FieldValue::Bool(i.is_multiple_of(2))),
        (
            b"x-bytes".to_vec(),
            FieldValue::Bytes(vec![0, 159, 146, 150, 255]),
        ),
        (
            b"x-decimal".to_vec(),
            FieldValue::Decimal {
                scale: 2,
                value: 31_415,
            },
        ),
        (b"x-double".to_vec(), FieldValue::F64(-2.5e-300)),
        (b"x-float".to_vec(), FieldValue::F32(1.25)),
        (b"x-i16".to_vec(), FieldValue::I16(-12_345)),
        (b"x-i32".to_vec(), FieldValue::I32(-2_000_000_000)),
        (
            b"x-i64".to_vec(),
            FieldValue::I64(-9_000_000_000_000 - i as i64),
        ),
        (b"x-i8".to_vec(), FieldValue::I8(-100)),
        (
            b"x-str".to_vec(),
            FieldValue::LongStr(format!("héllo {i}").into_bytes()),
        ),
        (
            b"x-table".to_vec(),
            FieldValue::Table(Table(vec![
                (
                    b"deep".to_vec(),
                    FieldValue::Table(Table(vec![(b"n".to_vec(), FieldValue::U8(255))])),
                ),
                (b"t".to_vec(), FieldValue::Timestamp(1_700_000_000)),
            ])),
        ),
        (
            b"x-timestamp".to_vec(),
            FieldValue::Timestamp(1_600_000_000 + i as u64),
        ),
        (b"x-u16".to_vec(), FieldValue::U16(65_000)),
        (b"x-u32".to_vec(), FieldValue::U32(4_000_000_000)),
        (b"x-u8".to_vec(), FieldValue::U8(200)),
        (b"x-void".to_vec(), FieldValue::Void),
    ];
    // lapin sends header names sorted; so does the expectation.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Table(entries)
}

fn body(tag: &str, i: usize, size: usize) -> Bytes {
    let unit = format!("{tag} message {i}. ");
    Bytes::from(unit.repeat(size / unit.len() + 1)[..size].to_string())
}

fn msg(rk: &str, body: Bytes, properties: Properties) -> Message {
    Message {
        exchange: String::new(),
        routing_keys: vec![rk.to_string()],
        properties,
        body,
    }
}

fn persistent() -> Properties {
    Properties {
        delivery_mode: Some(2),
        ..Default::default()
    }
}

fn queues(version: &str) -> Vec<Queue> {
    let v3 = version.starts_with('3');
    let v2_capable = !version.starts_with("3.8");
    let mut classic = Vec::new();
    for i in 0..12usize {
        // Two bodies above the 4 KiB embedding threshold go to the shared store.
        let size = match i {
            4 => 6_000,
            9 => 9_500,
            _ => 120 + 17 * i,
        };
        let mut p = Properties {
            content_type: s("text/plain"),
            content_encoding: s("identity"),
            // Every header type on a few messages keeps the fixtures small.
            headers: Some(if i.is_multiple_of(5) {
                rich_headers(i)
            } else {
                Table(vec![(b"x-i".to_vec(), FieldValue::I64(i as i64))])
            }),
            delivery_mode: Some(2),
            priority: Some((i % 3) as u8),
            correlation_id: s(&format!("corr-{i}")),
            reply_to: s("replies"),
            message_id: s(&format!("id-{i}")),
            timestamp: Some(1_700_000_000 + i as u64),
            kind: s("fixture"),
            user_id: s("guest"),
            app_id: s("store-fixture"),
            ..Default::default()
        };
        if i == 6 {
            p.expiration = s("2000000000");
        }
        let mut b = body("classic", i, size);
        if i == 7 {
            b = Bytes::from(vec![0xff, 0xfe, 0x00, 0x80, 0x81, 0x7f]);
        }
        classic.push((msg("fx.classic", b, p), None));
    }
    // Routed by amq.direct with CC and BCC: RabbitMQ records all three keys
    // and removes BCC from the stored headers.
    let mut cc = msg(
        "fx.classic.rk",
        body("cc", 0, 64),
        Properties {
            delivery_mode: Some(2),
            headers: Some(Table(vec![
                (
                    b"BCC".to_vec(),
                    FieldValue::Array(vec![FieldValue::LongStr(b"fx.nowhere.bcc".to_vec())]),
                ),
                (
                    b"CC".to_vec(),
                    FieldValue::Array(vec![FieldValue::LongStr(b"fx.nowhere.cc".to_vec())]),
                ),
                (b"x-n".to_vec(), FieldValue::I64(42)),
            ])),
            ..Default::default()
        },
    );
    cc.exchange = "amq.direct".into();
    classic.push((cc, None));

    let mut priority = Vec::new();
    for (i, p) in [
        Some(0u8),
        Some(3),
        Some(5),
        Some(1),
        Some(7),
        None,
        Some(3),
        Some(2),
    ]
    .into_iter()
    .enumerate()
    {
        let props = Properties {
            priority: p,
            ..persistent()
        };
        let level = Some(p.unwrap_or(0).min(5));
        let size = if i == 2 { 5_000 } else { 50 + i };
        priority.push((msg("fx.priority", body("prio", i, size), props), level));
    }

    let mut out = vec![
        Queue {
            vhost: "/",
            name: "fx.classic",
            args: vec![],
            published: classic,
            acked: 3,
            unacked: 2,
        },
        Queue {
            vhost: "/",
            name: "fx.priority",
            args: vec![("x-max-priority", AMQPValue::ShortShortUInt(5))],
            published: priority,
            acked: 0,
            unacked: 0,
        },
        Queue {
            vhost: "second",
            name: "fx.other",
            args: vec![],
            published: (0..3)
                .map(|i| {
                    (
                        msg(
                            "fx.other",
                            body("other", i, if i == 1 { 4_500 } else { 30 }),
                            persistent(),
                        ),
                        None,
                    )
                })
                .collect(),
            acked: 1,
            unacked: 0,
        },
    ];
    // Transient messages that a lazy queue (3.x) writes to its index; the
    // broker drops them at boot, so they are not expected.
    let mut mixed = Vec::new();
    for i in 0..5 {
        let mode = if i % 2 == 1 { 1 } else { 2 };
        let props = Properties {
            delivery_mode: Some(mode),
            ..Default::default()
        };
        mixed.push((msg("fx.transient", body("mixed", i, 40), props), None));
    }
    out.push(Queue {
        vhost: "/",
        name: "fx.transient",
        args: if v3 {
            vec![(
                "x-queue-mode",
                AMQPValue::LongString(LongString::from("lazy")),
            )]
        } else {
            vec![]
        },
        published: mixed,
        acked: 0,
        unacked: 0,
    });
    if v2_capable {
        out.push(Queue {
            vhost: "/",
            name: "fx.v2",
            args: if v3 {
                vec![("x-queue-version", AMQPValue::ShortShortUInt(2))]
            } else {
                vec![]
            },
            published: (0..6)
                .map(|i| {
                    (
                        msg(
                            "fx.v2",
                            body("v2", i, if i == 2 { 7_000 } else { 200 }),
                            persistent(),
                        ),
                        None,
                    )
                })
                .collect(),
            acked: 2,
            unacked: 1,
        });
    }
    out
}

/// What RabbitMQ stores for a published message.
fn as_stored(m: &Message) -> Message {
    let mut stored = m.clone();
    if let Some(h) = &mut stored.properties.headers {
        for key in ["CC", "BCC"] {
            if let Some(FieldValue::Array(keys)) = h.get(key) {
                for k in keys {
                    if let FieldValue::LongStr(k) = k {
                        stored
                            .routing_keys
                            .push(String::from_utf8(k.clone()).unwrap());
                    }
                }
            }
        }
        h.0.retain(|(k, _)| k != b"BCC");
    }
    stored
}

fn line(q: &Queue, m: &Message, level: Option<u8>) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("vhost".into(), json!(q.vhost));
    map.insert("queue".into(), json!(q.name));
    if let Some(l) = level {
        map.insert("priority_level".into(), json!(l));
    }
    json::message(&as_stored(m), true, &mut map);
    Value::Object(map)
}

async fn connect(base: &str, vhost: &str) -> Connection {
    let vhost = if vhost == "/" { "%2f" } else { vhost };
    Connection::connect(&format!("{base}/{vhost}"), ConnectionProperties::default())
        .await
        .expect("AMQP connect")
}

async fn fill(channel: &Channel, q: &Queue) {
    let mut args = FieldTable::default();
    for (k, v) in &q.args {
        args.insert(ShortString::from(*k), v.clone());
    }
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(q.name.into(), durable, args)
        .await
        .unwrap();
    channel
        .queue_bind(
            q.name.into(),
            "amq.direct".into(),
            format!("{}.rk", q.name).as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for (m, _) in &q.published {
        let (props, lost) = m.properties.to_lapin();
        assert!(
            lost.is_empty(),
            "lapin would change the fixture message: {lost:?}"
        );
        let confirm = channel
            .basic_publish(
                m.exchange.as_str().into(),
                m.routing_key().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &m.body,
                props,
            )
            .await
            .unwrap();
        match confirm.await.unwrap() {
            lapin::Confirmation::Ack(None) => {}
            other => panic!("publish to {} not confirmed: {other:?}", q.name),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, version, out] = &args[..] else {
        panic!("usage: store_fixture AMQP_BASE_URL RABBITMQ_VERSION OUT/expected.json");
    };
    let mut expected = Vec::new();
    for q in queues(version) {
        let conn = connect(base, q.vhost).await;
        let channel = conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        fill(&channel, &q).await;
        // Acknowledge some from the head, leave some delivered and unacknowledged.
        let taker = conn.create_channel().await.unwrap();
        for i in 0..q.acked + q.unacked {
            let got = taker
                .basic_get(q.name.into(), BasicGetOptions { no_ack: false })
                .await
                .unwrap()
                .expect("a message");
            if i < q.acked {
                taker
                    .basic_ack(got.delivery.delivery_tag, BasicAckOptions::default())
                    .await
                    .unwrap();
            }
        }
        taker
            .close(200, "requeue the unacknowledged".into())
            .await
            .unwrap();
        conn.close(200, "done".into()).await.unwrap();

        let persistent: Vec<&(Message, Option<u8>)> = q
            .published
            .iter()
            .filter(|(m, _)| m.properties.is_persistent())
            .collect();
        let (acked, rest) = {
            // Deliveries come in delivery order: for a priority queue, by level.
            let mut order: Vec<usize> = (0..persistent.len()).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(persistent[i].1));
            let acked: Vec<usize> = order[..q.acked].to_vec();
            let rest: Vec<usize> = order[q.acked..].to_vec();
            (acked, rest)
        };
        let render = |ids: &[usize]| -> Vec<Value> {
            ids.iter()
                .map(|&i| line(&q, &persistent[i].0, persistent[i].1))
                .collect()
        };
        expected.push(json!({
            "vhost": q.vhost,
            "name": q.name,
            "messages": render(&rest),
            "acked": render(&acked),
            "transient_published": q.published.len() - persistent.len(),
        }));
    }
    let doc = json!({ "rabbitmq": version, "queues": expected });
    std::fs::write(out, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
}
