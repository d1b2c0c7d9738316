//! Moves messages whose routing key matches out of a queue over AMQP.
//!
//! Exactly the `M` messages ready when it starts are taken (basic.get, in
//! queue order). Matching ones are republished, with their routing key and
//! properties, through a private fanout exchange bound only to the
//! destination queue; they are acknowledged only after the broker has
//! confirmed every copy of the batch. Kept messages never leave the queue:
//! they stay unacknowledged and are requeued at the end, which puts them
//! back in their original places (also in priority queues, where a
//! republished message would overtake lower priorities). A crash requeues
//! everything unacknowledged: at worst a moved message exists twice, none is
//! ever lost.

use std::str::FromStr;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::uri::{AMQPUri, AMQPUserInfo};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use serde::Serialize;

use super::Matcher;
use crate::error::{refused, usage};
use crate::output::count;
use crate::settings::{Secret, redact_url};

/// Messages handled per confirm round trip.
const BATCH: u64 = 200;

/// How to reach the broker over AMQP.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// Base URL (`amqp://host:port/`); its vhost part is replaced.
    pub url: String,
    /// User, unless the URL has one.
    pub username: String,
    /// Password, unless the URL has one.
    pub password: Secret,
}

impl AmqpConfig {
    /// `url` with the command line's credentials.
    pub fn new(url: String, settings: &crate::settings::Settings) -> AmqpConfig {
        AmqpConfig {
            url,
            username: settings.username.clone(),
            password: settings.password.clone(),
        }
    }
}

/// Where matching messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Into this queue (declared durable if missing).
    Queue(String),
    /// Nowhere: they are deleted.
    Drop,
}

/// The counts of one exclusion (`--json` schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Virtual host.
    pub vhost: String,
    /// The filtered queue.
    pub queue: String,
    /// Messages that matched.
    pub excluded: u64,
    /// Messages put back.
    pub kept: u64,
    /// Where matches went; absent when dropped.
    pub to_queue: Option<String>,
}

/// The default destination for excluded messages of `queue`.
pub fn excluded_queue_name(queue: &str) -> String {
    format!("{queue}.excluded")
}

fn uri_for(config: &AmqpConfig, vhost: &str) -> anyhow::Result<AMQPUri> {
    let mut uri = AMQPUri::from_str(&config.url).map_err(|e| {
        usage(format!(
            "invalid --amqp-url {}: {e}",
            redact_url(&config.url)
        ))
    })?;
    uri.vhost = vhost.to_string();
    if !has_userinfo(&config.url) {
        uri.authority.userinfo = AMQPUserInfo {
            username: config.username.clone(),
            password: config.password.expose().to_string(),
        };
    }
    Ok(uri)
}

/// Whether an AMQP URL carries `user[:password]@`.
fn has_userinfo(url: &str) -> bool {
    url.rfind('@')
        .is_some_and(|at| at > url.find("://").unwrap_or(0))
}

/// Opens an AMQP connection to `vhost`, turning the broker's refusals into
/// messages that name the vhost or the user.
pub(crate) async fn connect(config: &AmqpConfig, vhost: &str) -> anyhow::Result<Connection> {
    let uri = uri_for(config, vhost)?;
    let user = uri.authority.userinfo.username.clone();
    let endpoint = format!("{}:{}", uri.authority.host, uri.authority.port);
    let user_in_url = has_userinfo(&config.url).then_some("--amqp-url (RABBITMQ_AMQP_URL)");
    Connection::connect_uri(uri, ConnectionProperties::default())
        .await
        .map_err(|e| {
            let text = e.to_string();
            if text.contains("ACCESS_REFUSED") || text.contains("auth") {
                crate::error::rejected_credentials(
                    &format!("the AMQP listener at {endpoint}"),
                    &user,
                    user_in_url,
                )
            } else if text.contains("NOT_ALLOWED") || text.contains("vhost") {
                usage(format!(
                    "vhost {vhost:?} does not exist on {endpoint}, or user {user:?} may not use it ({text})"
                ))
            } else {
                anyhow::anyhow!("cannot open an AMQP connection to {endpoint} (vhost {vhost:?}): {text}; set --amqp-url")
            }
        })
}

/// Checks a queue exists and has no consumers; returns its ready messages.
async fn inspect(channel: &Channel, vhost: &str, queue: &str) -> anyhow::Result<(u64, u32)> {
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            if e.to_string().contains("NOT_FOUND") {
                usage(format!("queue {queue:?} does not exist in vhost {vhost:?}"))
            } else {
                anyhow::anyhow!("cannot inspect queue {queue:?} in vhost {vhost:?}: {e}")
            }
        })?;
    Ok((
        u64::from(declared.message_count()),
        declared.consumer_count(),
    ))
}

/// A private fanout exchange bound only to `queue`: publishing to it reaches
/// that queue alone while keeping the message's own routing key.
async fn route_to(channel: &Channel, queue: &str) -> anyhow::Result<String> {
    let name = format!("rabbitmq-backup.exclude.{:016x}", rand::random::<u64>());
    channel
        .exchange_declare(
            name.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.into(),
            name.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(name)
}

/// Drops headers the broker adds on delivery (quorum queues count
/// deliveries in `x-delivery-count`), so a moved message looks as published.
fn without_broker_headers(properties: BasicProperties) -> BasicProperties {
    let Some(headers) = properties.headers().clone() else {
        return properties;
    };
    let mut kept = FieldTable::default();
    for (key, value) in headers.inner() {
        if key.as_str() != "x-delivery-count" {
            kept.insert(key.clone(), value.clone());
        }
    }
    properties.with_headers(kept)
}

/// Declares the durable queue excluded messages go to (if missing).
async fn declare_destination(channel: &Channel, vhost: &str, name: &str) -> anyhow::Result<()> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot declare the destination queue {name:?} in vhost {vhost:?}: {e}")
        })?;
    Ok(())
}

/// Filters one queue. Refuses a queue with consumers; nothing is moved when
/// the checks fail.
pub async fn exclude(
    config: &AmqpConfig,
    vhost: &str,
    queue: &str,
    matcher: &Matcher,
    destination: &Destination,
) -> anyhow::Result<Outcome> {
    if let Destination::Queue(to) = destination
        && to == queue
    {
        return Err(usage(format!(
            "--to-queue must differ from the queue being filtered ({queue:?})"
        )));
    }
    let connection = connect(config, vhost).await?;
    let result = run(&connection, vhost, queue, matcher, destination).await;
    let _ = connection.close(200, "done".into()).await;
    result
}

async fn run(
    connection: &Connection,
    vhost: &str,
    queue: &str,
    matcher: &Matcher,
    destination: &Destination,
) -> anyhow::Result<Outcome> {
    let channel = connection.create_channel().await?;
    let (present, consumers) = inspect(&channel, vhost, queue).await?;
    if consumers > 0 {
        return Err(refused(format!(
            "queue {queue:?} in vhost {vhost:?} has {}: stop the consumers first, or they would take messages while the queue is filtered",
            count(consumers, "consumer")
        )));
    }
    let to_queue = match destination {
        Destination::Queue(name) => Some(name.clone()),
        Destination::Drop => None,
    };
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    // Made on the first match, so a queue with nothing to exclude gets no
    // empty `.excluded` companion.
    let mut move_exchange: Option<String> = None;
    tracing::info!(
        "filtering {} of queue {queue:?} in vhost {vhost:?} by routing keys {:?}",
        count(present, "message"),
        matcher.patterns()
    );
    let mut outcome = Outcome {
        vhost: vhost.to_string(),
        queue: queue.to_string(),
        excluded: 0,
        kept: 0,
        to_queue: to_queue.clone(),
    };
    let mut remaining = present;
    let mut last_kept = None;
    while remaining > 0 {
        let mut confirms = Vec::new();
        let mut excluded_tags = Vec::new();
        for _ in 0..remaining.min(BATCH) {
            let Some(message) = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await?
            else {
                // Someone else took messages: stop at what is there.
                remaining = 0;
                break;
            };
            remaining -= 1;
            let delivery = message.delivery;
            if !matcher.matches(delivery.routing_key.as_str()) {
                // Kept messages never leave the queue: they stay unacknowledged
                // and are requeued, in their original places, at the end.
                outcome.kept += 1;
                last_kept = Some(delivery.delivery_tag);
                continue;
            }
            outcome.excluded += 1;
            excluded_tags.push(delivery.delivery_tag);
            if let Some(to) = &to_queue {
                if move_exchange.is_none() {
                    declare_destination(&channel, vhost, to).await?;
                    move_exchange = Some(route_to(&channel, to).await?);
                }
                let exchange = move_exchange.as_deref().unwrap_or_default();
                let confirm = channel
                    .basic_publish(
                        exchange.into(),
                        delivery.routing_key.clone(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &delivery.data,
                        without_broker_headers(delivery.properties.clone()),
                    )
                    .await?;
                confirms.push(confirm);
            }
        }
        for confirm in confirms {
            match confirm.await? {
                Confirmation::Ack(None) => {}
                other => anyhow::bail!(
                    "the broker did not accept a moved message ({other:?}); nothing of this batch was removed from {queue:?}"
                ),
            }
        }
        crate::failpoint::hit("exclude:before-ack")?;
        // Every copy is confirmed: only now may the originals go.
        for tag in excluded_tags {
            channel
                .basic_ack(tag, BasicAckOptions { multiple: false })
                .await?;
        }
        crate::failpoint::hit("exclude:after-batch")?;
        crate::signals::check()?;
    }
    if let Some(tag) = last_kept {
        // Every unacknowledged message up to `tag` is a kept one.
        channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await?;
    }
    if let Some(exchange) = move_exchange {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = channel.close(200, "done".into()).await;
    tracing::info!(
        "queue {queue:?} in vhost {vhost:?}: {} {}, {} kept",
        count(outcome.excluded, "message"),
        match &to_queue {
            Some(to) => format!("moved to {to:?}"),
            None => "dropped".into(),
        },
        outcome.kept
    );
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> AmqpConfig {
        AmqpConfig {
            url: url.into(),
            username: "u".into(),
            password: Secret::new("p"),
        }
    }

    #[test]
    fn credentials_come_from_settings_unless_in_the_url() {
        let uri = uri_for(&config("amqp://127.0.0.1:5673/"), "second").unwrap();
        assert_eq!(uri.authority.userinfo.username, "u");
        assert_eq!(uri.authority.port, 5673);
        assert_eq!(uri.vhost, "second");
        let uri = uri_for(&config("amqp://x:y@127.0.0.1:5673/"), "/").unwrap();
        assert_eq!(uri.authority.userinfo.username, "x");
        assert_eq!(uri.vhost, "/");
    }

    #[test]
    fn default_destination() {
        assert_eq!(excluded_queue_name("oro.default"), "oro.default.excluded");
    }
}
