//! Oro-like test data: a topology and messages with every property that
//! must survive a backup.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde_json::{Value, json};

use super::amqp::Msg;

/// Routing keys an Oro application uses.
pub const ORO_KEYS: [&str; 3] = [
    "oro.email.send_email_template",
    "oro.search.reindex",
    "oro.integration.sync",
];

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt ++
/// SHA-256(salt ++ password)) with a 4-byte salt.
pub fn password_hash(password: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let salt: [u8; 4] = rand::random();
    let digest = Sha256::new()
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    base64::engine::general_purpose::STANDARD.encode([&salt[..], &digest[..]].concat())
}

/// Two vhosts, a user, a policy, a topic exchange with a binding, a priority
/// queue, a classic queue and a quorum queue.
pub fn topology() -> Value {
    let hash = password_hash("oro-secret");
    json!({
        "users": [{"name": "oro", "password_hash": hash, "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""}],
        "vhosts": [{"name": "/"}, {"name": "oro"}],
        "permissions": [
            {"user": "guest", "vhost": "oro", "configure": ".*", "write": ".*", "read": ".*"},
            {"user": "oro", "vhost": "oro", "configure": ".*", "write": ".*", "read": ".*"}
        ],
        "policies": [{"vhost": "oro", "name": "oro-limit", "pattern": "^oro\\.", "apply-to": "queues",
                      "definition": {"max-length": 1000000}, "priority": 0}],
        "exchanges": [{"name": "oro.default", "vhost": "oro", "type": "topic", "durable": true,
                       "auto_delete": false, "internal": false, "arguments": {}}],
        "queues": [
            {"name": "oro.default", "vhost": "oro", "durable": true, "auto_delete": false, "arguments": {"x-max-priority": 4}},
            {"name": "classic", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}},
            {"name": "quorum", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {"x-queue-type": "quorum"}}
        ],
        "bindings": [{"source": "oro.default", "vhost": "oro", "destination": "oro.default",
                      "destination_type": "queue", "routing_key": "oro.#", "arguments": {}}]
    })
}

/// Persistent message properties with a header, id, type and timestamp.
pub fn props(i: usize, priority: u8) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(ShortString::from("n"), AMQPValue::LongLongInt(i as i64));
    headers.insert(
        ShortString::from("origin"),
        AMQPValue::LongString(format!("test-{i}").into()),
    );
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_priority(priority)
        .with_headers(headers)
        .with_message_id(format!("msg-{i}").into())
        .with_content_type("application/json".into())
        .with_timestamp(1_700_000_000 + i as u64)
}

/// A payload of `size` bytes, compressible like application JSON.
pub fn body(i: usize, size: usize) -> Vec<u8> {
    let mut out = format!("{{\"n\":{i},\"data\":\"").into_bytes();
    let filler = b"lorem ipsum dolor sit amet, order #";
    while out.len() + 2 < size {
        out.extend_from_slice(filler);
        out.extend_from_slice(i.to_string().as_bytes());
    }
    out.truncate(size.saturating_sub(2));
    out.extend_from_slice(b"\"}");
    out
}

/// Messages for the default exchange to `queue`: small (< 4 KiB, in the
/// queue index) and large (in the message store), alternately.
pub fn classic_messages(queue: &str, count: usize) -> Vec<Msg> {
    (0..count)
        .map(|i| Msg {
            routing_key: queue.into(),
            properties: props(i, 0),
            body: body(i, [200, 9000, 100_000][i % 3]),
        })
        .collect()
}

/// Messages for the `oro.default` topic exchange with Oro routing keys and
/// priorities 0..4.
pub fn oro_messages(count: usize) -> Vec<Msg> {
    (0..count)
        .map(|i| Msg {
            routing_key: ORO_KEYS[i % 3].into(),
            properties: props(1000 + i, (i % 5) as u8),
            body: body(1000 + i, if i % 4 == 0 { 6000 } else { 300 }),
        })
        .collect()
}

/// The order a priority queue delivers `published` in: highest priority
/// first, publication order within a priority.
pub fn priority_order(published: &[Msg]) -> Vec<Msg> {
    let mut out = published.to_vec();
    out.sort_by_key(|m| std::cmp::Reverse(m.properties.priority().unwrap_or(0)));
    out
}
