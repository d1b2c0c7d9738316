//! The domain message: what a publisher sent and a queue holds, in a form
//! that can be published again exactly (replay), written as a logical
//! record (quorum queues, streams) and shown (`messages`).
//!
//! The content properties are kept typed and without loss: encoding them
//! gives back the `properties_bin` RabbitMQ stored, byte for byte.

pub mod codec;
pub mod json;
pub mod properties;
pub mod record;
pub mod table;

use bytes::Bytes;

pub use properties::Properties;
pub use table::{FieldValue, Table};

/// One AMQP 0-9-1 message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The exchange it was published to (`""`: the default exchange).
    pub exchange: String,
    /// The routing keys RabbitMQ routed it with: the publish routing key
    /// first, then the keys of its `CC` and `BCC` headers (RabbitMQ keeps
    /// the `CC` header and strips `BCC` from the stored headers).
    pub routing_keys: Vec<String>,
    /// The content properties, headers included.
    pub properties: Properties,
    /// The body.
    pub body: Bytes,
}

impl Message {
    /// The routing key it was published with.
    pub fn routing_key(&self) -> &str {
        self.routing_keys.first().map_or("", String::as_str)
    }

    /// The keys added by its `CC`/`BCC` headers. A replay that publishes
    /// the headers as they are makes the broker route by `CC` again.
    pub fn header_routing_keys(&self) -> &[String] {
        self.routing_keys.get(1..).unwrap_or(&[])
    }
}

/// What a message store records about a message besides the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreFacts {
    /// Its sequence number in the queue (delivery order within a level).
    pub seq_id: u64,
    /// Published as persistent (the broker keeps only these at boot).
    pub persistent: bool,
    /// The index marked it delivered. RabbitMQ 3.10+ marks every message
    /// delivered as it is written, so this is only meaningful before 3.10.
    pub delivered: bool,
    /// The priority level of an `x-max-priority` queue it sits in.
    pub priority_level: Option<u8>,
    /// When it expires (milliseconds since the epoch), from a per-message
    /// or per-queue TTL, as the index records it.
    pub expires_at_ms: Option<u64>,
}
