//! A decoded message made ready to publish, on the reading thread: the
//! lapin properties built there so the publisher only sends, and a
//! `user_id` RabbitMQ would refuse left out.

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::ShortString;

use crate::message::Message;

/// One message as it goes out.
#[derive(Debug)]
pub struct Outgoing {
    /// Its position in the queue (0-based, delivery order).
    pub position: u64,
    /// The routing key it was published with.
    pub routing_key: ShortString,
    /// Its properties, headers included.
    pub properties: BasicProperties,
    /// The body, shared with the bytes read from the store.
    pub body: Bytes,
}

/// Turns messages into [`Outgoing`] ones, warning once about what cannot
/// be published exactly.
#[derive(Debug)]
pub struct Preparer {
    username: String,
    warned: bool,
}

impl Preparer {
    /// For a replay that publishes as `username`.
    pub fn new(username: &str) -> Preparer {
        Preparer {
            username: username.to_string(),
            warned: false,
        }
    }

    /// The message at `position`, ready to publish. RabbitMQ refuses a
    /// `user_id` other than the publisher's (unless it is tagged
    /// `impersonator`), which would close the channel: such a `user_id` is
    /// left out, and said once.
    pub fn prepare(&mut self, position: u64, message: Message) -> Outgoing {
        let (mut properties, lost) = message.properties.to_lapin();
        if !lost.is_empty() && !self.warned {
            tracing::warn!(
                "a message's properties cannot be published exactly: {}",
                lost.join("; ")
            );
            self.warned = true;
        }
        if let Some(user) = properties.user_id().clone()
            && user.as_str() != self.username
        {
            if !self.warned {
                tracing::warn!(
                    "messages carry user_id {:?}, which RabbitMQ accepts only from that user: it is left out of the replayed messages",
                    user.as_str()
                );
                self.warned = true;
            }
            properties = without_user_id(properties);
        }
        let routing_key = match message.routing_keys.into_iter().next() {
            Some(key) => ShortString::from(key),
            None => ShortString::from(""),
        };
        Outgoing {
            position,
            routing_key,
            properties,
            body: message.body,
        }
    }
}

fn without_user_id(p: BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default();
    macro_rules! copy {
        ($($get:ident => $set:ident),*) => {
            $(if let Some(v) = p.$get().clone() { out = out.$set(v); })*
        };
    }
    copy!(content_type => with_content_type, content_encoding => with_content_encoding,
        headers => with_headers, delivery_mode => with_delivery_mode, priority => with_priority,
        correlation_id => with_correlation_id, reply_to => with_reply_to,
        expiration => with_expiration, message_id => with_message_id,
        timestamp => with_timestamp, kind => with_type, app_id => with_app_id,
        cluster_id => with_cluster_id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Properties;

    fn message(user: Option<&str>) -> Message {
        Message {
            exchange: "x".into(),
            routing_keys: vec!["rk".into(), "cc".into()],
            properties: Properties {
                user_id: user.map(|u| u.as_bytes().to_vec()),
                priority: Some(3),
                ..Properties::default()
            },
            body: Bytes::from_static(b"body"),
        }
    }

    #[test]
    fn the_publish_routing_key_and_properties_go_out_and_a_foreign_user_id_does_not() {
        let mut p = Preparer::new("guest");
        let own = p.prepare(7, message(Some("guest")));
        assert_eq!(own.position, 7);
        assert_eq!(own.routing_key.as_str(), "rk");
        assert_eq!(own.properties.user_id().as_ref().unwrap().as_str(), "guest");
        assert_eq!(*own.properties.priority(), Some(3));
        assert_eq!(&own.body[..], b"body");
        let foreign = p.prepare(8, message(Some("alice")));
        assert_eq!(*foreign.properties.user_id(), None);
        assert_eq!(*foreign.properties.priority(), Some(3));
    }
}
