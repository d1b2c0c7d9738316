//! Replay (DESIGN §6): publishes a snapshot's messages into a RUNNING
//! broker, every message into exactly its queue, in queue order, with its
//! original routing key, properties, headers and priority, under
//! publisher confirms.
//!
//! Each queue gets a private fanout exchange (`rabbitmq-backup.replay.<hash>`,
//! non-durable) bound to it alone: a fanout ignores the routing key, so the
//! message is published with its ORIGINAL routing key and still reaches
//! exactly that queue, whatever its type (classic, quorum, stream) and
//! whatever bindings the application has. The exchange is deleted when the
//! queue is done. Consumers see the tool's exchange as `exchange` and the
//! original routing key as `routing_key`.
//!
//! Publishing is pipelined: messages come decoded and ready from a reading
//! thread ([`source`]), each publish only queues its frames on the
//! connection, and up to `window` messages (and [`BYTES_IN_FLIGHT`] of
//! bodies) are unconfirmed at a time; confirms are settled in batches and
//! each batch's position is journalled ([`progress`]) so `--resume`
//! continues after the last confirmed message. The entry point for other commands (e.g. `restore
//! --cluster`) is [`run`].

pub mod outgoing;
pub mod progress;
pub mod source;

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection, ExchangeKind, PublisherConfirm};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::exclude::Matcher;
use crate::exclude::mover::{AmqpConfig, connect, excluded_queue_name};
use outgoing::{Outgoing, Preparer};
pub use progress::Progress;
pub use source::{Origin, QueueSource};

/// Default number of unconfirmed messages in flight.
pub const WINDOW: usize = 1024;

/// How a replay runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Unconfirmed messages in flight at most (also the most a crash can
    /// duplicate per queue).
    pub window: usize,
    /// `--exclude-routing-key`: matching messages are not published into
    /// their queue.
    pub exclude: Option<Matcher>,
    /// Excluded messages are dropped instead of going to `<queue>.excluded`.
    pub drop_excluded: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            window: WINDOW,
            exclude: None,
            drop_excluded: false,
        }
    }
}

/// Where the snapshot's messages are: the unpacked archive and a scratch
/// directory for the store reader's location tables.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The directory holding `msg_stores/` and `logical/`.
    pub root: PathBuf,
    /// Scratch space (on the same filesystem as `root` is best).
    pub work: PathBuf,
    /// The queues to replay, in order.
    pub queues: Vec<QueueSource>,
}

/// Rate and totals for the log.
struct Meter {
    started: Instant,
    last: Instant,
    published: u64,
}

impl Meter {
    fn tick(&mut self, n: u64) {
        self.published += n;
        if self.last.elapsed() >= Duration::from_secs(2) {
            self.last = Instant::now();
            tracing::info!(
                "replayed {} messages ({:.0} messages/s)",
                self.published,
                self.rate()
            );
        }
    }

    fn rate(&self) -> f64 {
        self.published as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }
}

/// Bytes of unconfirmed bodies at most (besides the window's count): the
/// connection holds the frames of every message not written yet.
pub const BYTES_IN_FLIGHT: usize = 64 << 20;

/// A publish on its way: its frames queued on the connection; the write,
/// then the broker's confirm, awaited when it is settled.
enum Sending {
    Queued(Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + Send>>),
    Done(lapin::Result<PublisherConfirm>),
}

/// A message published (or excluded) and not yet settled.
struct Pending {
    position: u64,
    sending: Option<Sending>,
    excluded: bool,
    bytes: usize,
}

/// The queue being replayed.
struct Current {
    index: usize,
    exchange: ShortString,
    excluded_exchange: Option<ShortString>,
}

/// An open connection to one vhost.
struct Link {
    vhost: String,
    connection: Connection,
    channel: Arc<Channel>,
}

/// The messages published and not yet settled, oldest first.
#[derive(Default)]
struct InFlight {
    queue: VecDeque<Pending>,
    bytes: usize,
}

impl InFlight {
    fn push(&mut self, p: Pending) {
        self.bytes += p.bytes;
        self.queue.push_back(p);
    }

    fn pop(&mut self) -> Option<Pending> {
        let p = self.queue.pop_front()?;
        self.bytes -= p.bytes;
        Some(p)
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    /// The window (by count or bytes) is full.
    fn full(&self, window: usize) -> bool {
        self.queue.len() >= window || self.bytes >= BYTES_IN_FLIGHT
    }
}

/// Replays `sources.queues` into the broker at `target`, skipping what
/// `progress` says is confirmed and journalling new confirms there.
/// Returns the messages published per second. Queues must exist on the
/// target (definitions imported); a missing one is an error naming it.
pub async fn run(
    target: &AmqpConfig,
    sources: &Sources,
    options: &Options,
    progress: &mut Progress,
) -> anyhow::Result<f64> {
    let window = options.window.max(1);
    let todo: Vec<QueueSource> = sources
        .queues
        .iter()
        .filter(|q| !progress.get(&q.vhost, &q.queue).is_some_and(|p| p.done))
        .cloned()
        .collect();
    let mut resumed = false;
    for q in &todo {
        let p = progress.entry(&q.vhost, &q.queue);
        if p.started {
            p.interrupted += 1;
            resumed = true;
        }
    }
    if resumed {
        progress.save()?;
    }
    let skip: Vec<u64> = todo
        .iter()
        .map(|q| progress.get(&q.vhost, &q.queue).map_or(0, |p| p.confirmed))
        .collect();
    let (tx, mut rx) = mpsc::channel(source::CHANNEL_BATCHES);
    let (root, work, queues) = (sources.root.clone(), sources.work.clone(), todo.clone());
    let prepare = Preparer::new(&target.username);
    let reader = tokio::task::spawn_blocking(move || {
        source::produce(&root, &work, &queues, &skip, prepare, tx);
    });
    let mut link: Option<Link> = None;
    let mut current: Option<Current> = None;
    let mut pending = InFlight::default();
    let mut meter = Meter {
        started: Instant::now(),
        last: Instant::now(),
        published: 0,
    };
    let result = async {
        while let Some(item) = rx.recv().await {
            match item? {
                source::Item::Messages { index, messages } => {
                    let q = &todo[index];
                    if current.as_ref().is_none_or(|c| c.index != index) {
                        let l = open_link(target, &mut link, &q.vhost).await?;
                        current = Some(begin_queue(&l.channel, q, index, progress).await?);
                    }
                    for message in messages {
                        let (l, c) = (link.as_ref().expect("open"), current.as_mut().expect("set"));
                        let excluded = options
                            .exclude
                            .as_ref()
                            .is_some_and(|m| m.matches(message.routing_key.as_str()));
                        let exchange = if !excluded {
                            Some(c.exchange.clone())
                        } else if options.drop_excluded {
                            None
                        } else {
                            if c.excluded_exchange.is_none() {
                                c.excluded_exchange =
                                    Some(excluded_destination(&l.channel, q).await?);
                            }
                            c.excluded_exchange.clone()
                        };
                        let (position, bytes) = (message.position, message.body.len());
                        let sending = exchange.map(|e| publish(&l.channel, e, message));
                        pending.push(Pending {
                            position,
                            sending,
                            excluded,
                            bytes,
                        });
                        if pending.full(window) {
                            // Half the window settles at once: fewer journal
                            // writes, and the pipe never runs dry.
                            let n = (pending.len() / 2).max(1);
                            settle(&mut pending, n, q, progress, &mut meter).await?;
                            progress.save()?;
                            crate::signals::check()?;
                        }
                    }
                }
                source::Item::End {
                    index,
                    total,
                    notes,
                } => {
                    let q = &todo[index];
                    let n = pending.len();
                    settle(&mut pending, n, q, progress, &mut meter).await?;
                    for note in notes {
                        tracing::warn!("queue {:?} in vhost {:?}: {note}", q.queue, q.vhost);
                    }
                    let p = progress.entry(&q.vhost, &q.queue);
                    p.done = true;
                    p.confirmed = total;
                    p.total = Some(total);
                    if let Some(c) = current.take()
                        && let Some(l) = &link
                    {
                        end_queue(&l.channel, &c).await;
                    }
                    progress.save()?;
                    let p = progress.get(&q.vhost, &q.queue).expect("entry");
                    tracing::info!(
                        "queue {:?} in vhost {:?}: {} messages replayed{}",
                        q.queue,
                        q.vhost,
                        p.published,
                        if p.excluded > 0 {
                            format!(", {} excluded", p.excluded)
                        } else {
                            String::new()
                        }
                    );
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    drop(rx);
    let _ = reader.await;
    if let Some(l) = link {
        let _ = l.connection.close(200, "done".into()).await;
    }
    result?;
    let rate = meter.rate();
    tracing::info!(
        "replay finished: {} messages published ({rate:.0} messages/s)",
        meter.published
    );
    Ok(rate)
}

fn name(e: anyhow::Error, q: &QueueSource) -> anyhow::Error {
    e.context(format!(
        "replaying into queue {:?} in vhost {:?} failed",
        q.queue, q.vhost
    ))
}

/// The link to `vhost`, opened (with confirms on) if the current one is
/// to another vhost.
async fn open_link<'a>(
    target: &AmqpConfig,
    link: &'a mut Option<Link>,
    vhost: &str,
) -> anyhow::Result<&'a Link> {
    if link.as_ref().is_none_or(|l| l.vhost != vhost) {
        if let Some(old) = link.take() {
            let _ = old.connection.close(200, "next vhost".into()).await;
        }
        let connection = connect(target, vhost).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        *link = Some(Link {
            vhost: vhost.to_string(),
            connection,
            channel: Arc::new(channel),
        });
    }
    Ok(link.as_ref().expect("opened"))
}

/// The private exchange that reaches only `queue` (named from vhost and
/// queue, so a resumed run finds the same one).
pub fn exchange_for(vhost: &str, queue: &str) -> String {
    let digest = Sha256::digest(format!("{vhost}\0{queue}").as_bytes());
    format!("rabbitmq-backup.replay.{}", hex::encode(&digest[..8]))
}

async fn fanout_to(channel: &Channel, exchange: &str, queue: &str) -> anyhow::Result<()> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Checks the queue exists, binds its exchange, journals that publishing
/// begins.
async fn begin_queue(
    channel: &Channel,
    q: &QueueSource,
    index: usize,
    progress: &mut Progress,
) -> anyhow::Result<Current> {
    message_count(channel, &q.vhost, &q.queue).await?;
    let exchange = exchange_for(&q.vhost, &q.queue);
    fanout_to(channel, &exchange, &q.queue)
        .await
        .map_err(|e| name(e, q))?;
    let p = progress.entry(&q.vhost, &q.queue);
    if !p.started {
        p.started = true;
        progress.save()?;
    }
    tracing::info!("replaying queue {:?} in vhost {:?}", q.queue, q.vhost);
    Ok(Current {
        index,
        exchange: exchange.into(),
        excluded_exchange: None,
    })
}

async fn end_queue(channel: &Channel, c: &Current) {
    for exchange in std::iter::once(&c.exchange).chain(c.excluded_exchange.iter()) {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
}

/// Declares `<queue>.excluded` (durable) and its private exchange.
async fn excluded_destination(channel: &Channel, q: &QueueSource) -> anyhow::Result<ShortString> {
    let to = excluded_queue_name(&q.queue);
    channel
        .queue_declare(
            to.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot declare the queue {to:?} for excluded messages in vhost {:?}: {e}",
                q.vhost
            )
        })?;
    let exchange = exchange_for(&q.vhost, &to);
    fanout_to(channel, &exchange, &to).await?;
    Ok(exchange.into())
}

/// Publishes one message with its routing key and properties through
/// `exchange`. The publish is polled once here, which queues its frames
/// on the connection in call order; its write is awaited only when it is
/// settled, so publishing never waits for the socket message by message.
fn publish(channel: &Arc<Channel>, exchange: ShortString, message: Outgoing) -> Sending {
    let channel = Arc::clone(channel);
    let mut sending = Box::pin(async move {
        channel
            .basic_publish(
                exchange,
                message.routing_key,
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &message.body,
                message.properties,
            )
            .await
    });
    match sending
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(done) => Sending::Done(done),
        Poll::Pending => Sending::Queued(sending),
    }
}

/// Awaits the `n` oldest confirms and records them in `progress`.
async fn settle(
    pending: &mut InFlight,
    n: usize,
    q: &QueueSource,
    progress: &mut Progress,
    meter: &mut Meter,
) -> anyhow::Result<()> {
    let mut published = 0;
    let mut excluded = 0;
    let mut last = None;
    for _ in 0..n {
        let Some(p) = pending.pop() else { break };
        if let Some(sending) = p.sending {
            let confirm = match sending {
                Sending::Queued(written) => written.await,
                Sending::Done(done) => done,
            };
            let confirm = confirm.map_err(|e| name(e.into(), q))?;
            match confirm.await.map_err(|e| name(e.into(), q))? {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_)) => {
                    return Err(name(
                        anyhow::anyhow!(
                            "the broker could not route a message to the queue (was it deleted?)"
                        ),
                        q,
                    ));
                }
                other => {
                    return Err(name(
                        anyhow::anyhow!(
                            "the broker refused a message ({other:?}); a queue length limit or a full disk?"
                        ),
                        q,
                    ));
                }
            }
        }
        if p.excluded {
            excluded += 1;
        } else {
            published += 1;
        }
        last = Some(p.position);
    }
    if let Some(last) = last {
        let e = progress.entry(&q.vhost, &q.queue);
        e.confirmed = last + 1;
        e.published += published;
        e.excluded += excluded;
        meter.tick(published);
    }
    Ok(())
}

/// The messages in a queue (ready ones: the replay refuses consumers).
pub async fn message_count(channel: &Channel, vhost: &str, queue: &str) -> anyhow::Result<u64> {
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
            anyhow::anyhow!(
                "queue {queue:?} does not exist in vhost {vhost:?} on the target ({e}); the snapshot's definitions should have declared it"
            )
        })?;
    Ok(u64::from(declared.message_count()))
}

/// Counts (and with `purge`, empties first) the given queues, one
/// connection per vhost.
pub async fn counts(
    target: &AmqpConfig,
    queues: &[(String, String)],
    purge: bool,
) -> anyhow::Result<Vec<u64>> {
    let mut link = None;
    let mut out = Vec::new();
    for (vhost, queue) in queues {
        let l = open_link(target, &mut link, vhost).await?;
        if purge {
            crate::failpoint::hit("replay:purge")?;
            l.channel
                .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot purge queue {queue:?} in vhost {vhost:?}: {e}")
                })?;
        }
        out.push(message_count(&l.channel, vhost, queue).await?);
    }
    if let Some(l) = link {
        let _ = l.connection.close(200, "done".into()).await;
    }
    Ok(out)
}

/// The path of the work directory for the reader inside a restore area.
pub fn work_dir(area: &Path) -> PathBuf {
    area.join("replay-work")
}
