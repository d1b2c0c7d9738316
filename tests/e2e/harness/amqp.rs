//! AMQP helpers: publish with confirms, drain a queue, hold a consumer.

use std::sync::OnceLock;

use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

use super::rabbit::RabbitNode;

/// A message as published or received.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    /// Routing key.
    pub routing_key: String,
    /// Properties (priority, headers, message id, ...).
    pub properties: BasicProperties,
    /// Payload.
    pub body: Vec<u8>,
}

/// The runtime AMQP helpers run on.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn url(node: &RabbitNode, vhost: &str) -> String {
    let encoded: String = vhost
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{}/{encoded}", node.amqp_url())
}

async fn connect(node: &RabbitNode, vhost: &str) -> Connection {
    Connection::connect(&url(node, vhost), ConnectionProperties::default())
        .await
        .expect("AMQP connect")
}

/// Publishes messages to `exchange` ("" = default) and waits for confirms.
pub fn publish(node: &RabbitNode, vhost: &str, exchange: &str, msgs: &[Msg]) {
    rt().block_on(async {
        let conn = connect(node, vhost).await;
        let channel = conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let mut confirms = Vec::new();
        for m in msgs {
            let c = channel
                .basic_publish(
                    exchange.into(),
                    m.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &m.body,
                    m.properties.clone(),
                )
                .await
                .unwrap();
            confirms.push(c);
        }
        for c in confirms {
            // Ack(Some(_)) is a returned (unroutable) message: a broken test setup.
            match c.await.unwrap() {
                lapin::Confirmation::Ack(None) => {}
                other => panic!("publish to {exchange:?} in {vhost:?} not delivered: {other:?}"),
            }
        }
        conn.close(200, "bye".into()).await.unwrap();
    })
}

/// Quorum queues add `x-delivery-count` on delivery, streams
/// `x-stream-offset`: not part of the message as published, so they are
/// left out of comparisons.
fn without_delivery_count(properties: BasicProperties) -> BasicProperties {
    let Some(headers) = properties.headers().clone() else {
        return properties;
    };
    let mut kept = FieldTable::default();
    for (k, v) in headers.inner() {
        if k.as_str() != "x-delivery-count" && k.as_str() != "x-stream-offset" {
            kept.insert(k.clone(), v.clone());
        }
    }
    properties.with_headers(kept)
}

/// A queue's exact message count, from the queue itself (a passive
/// declare): `rabbitmqctl list_queues` reports a quorum queue's count from
/// statistics that lag by seconds.
pub fn exact_count(node: &RabbitNode, vhost: &str, queue: &str) -> u64 {
    rt().block_on(async {
        let conn = connect(node, vhost).await;
        let channel = conn.create_channel().await.unwrap();
        let n = rabbitmq_backup::replay::message_count(&channel, vhost, queue)
            .await
            .unwrap();
        conn.close(200, "bye".into()).await.unwrap();
        n
    })
}

/// Takes every message out of a queue, in order.
pub fn drain(node: &RabbitNode, vhost: &str, queue: &str) -> Vec<Msg> {
    rt().block_on(async {
        let conn = connect(node, vhost).await;
        let channel = conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
        {
            let d = m.delivery;
            out.push(Msg {
                routing_key: d.routing_key.to_string(),
                properties: without_delivery_count(d.properties.clone()),
                body: d.data.clone(),
            });
            channel
                .basic_ack(d.delivery_tag, BasicAckOptions::default())
                .await
                .unwrap();
        }
        conn.close(200, "bye".into()).await.unwrap();
        out
    })
}

/// Reads a stream from its first offset: `n` messages, then any more that
/// arrive within a second (so a caller comparing lengths sees extras).
pub fn read_stream(node: &RabbitNode, vhost: &str, queue: &str, n: usize) -> Vec<Msg> {
    use futures::StreamExt;
    rt().block_on(async {
        let conn = connect(node, vhost).await;
        let channel = conn.create_channel().await.unwrap();
        channel
            .basic_qos(100, BasicQosOptions::default())
            .await
            .unwrap();
        let mut args = FieldTable::default();
        args.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString("first".into()),
        );
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "reader".into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        loop {
            // Up to `n` a message must come; past it, none should.
            let wait = if out.len() < n { 60 } else { 1 };
            let next =
                tokio::time::timeout(std::time::Duration::from_secs(wait), consumer.next()).await;
            let Ok(Some(d)) = next else {
                assert!(
                    out.len() >= n,
                    "stream {queue}: {} of {n} messages",
                    out.len()
                );
                break;
            };
            let d = d.unwrap();
            out.push(Msg {
                routing_key: d.routing_key.to_string(),
                properties: without_delivery_count(d.properties.clone()),
                body: d.data.clone(),
            });
            channel
                .basic_ack(d.delivery_tag, BasicAckOptions::default())
                .await
                .unwrap();
        }
        conn.close(200, "bye".into()).await.unwrap();
        out
    })
}

/// A consumer attached to a queue until dropped.
pub struct ConsumerGuard {
    conn: Option<Connection>,
    _channel: lapin::Channel,
    _consumer: lapin::Consumer,
}

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = rt().block_on(conn.close(200, "bye".into()));
        }
    }
}

/// Attaches a consumer (prefetch 1, no acks sent) to a queue.
pub fn hold_consumer(node: &RabbitNode, vhost: &str, queue: &str) -> ConsumerGuard {
    rt().block_on(async {
        let conn = connect(node, vhost).await;
        let channel = conn.create_channel().await.unwrap();
        channel.basic_qos(1, Default::default()).await.unwrap();
        let consumer = channel
            .basic_consume(
                queue.into(),
                "test-consumer".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        ConsumerGuard {
            conn: Some(conn),
            _channel: channel,
            _consumer: consumer,
        }
    })
}
