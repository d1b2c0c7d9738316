//! `messages`: a snapshot's messages, decoded without a broker, as JSON
//! lines on standard output (README "Message lines").

use std::io::{self, BufWriter, Write};

use serde_json::{Map, Value, json};

use super::decode::{self, Staged};
use crate::archive::manifest::Manifest;
use crate::logical::LogicalQueue;
use crate::message::{self, Message};
use crate::settings::{MessagesSettings, Settings};
use crate::store::{QueueDirs, QueueItem, QueueSummary};

/// Runs `messages`.
pub async fn run(settings: &Settings, args: &MessagesSettings) -> anyhow::Result<()> {
    let repo = super::open_repository(settings).await?;
    let snapshot =
        super::list::resolve(settings, &repo, &args.snapshot, args.from_node.as_deref()).await?;
    let manifest = repo.manifest(&snapshot).await?;
    check_selection(&manifest, args)?;
    for q in manifest
        .queues
        .iter()
        .filter(|q| !q.covered && selected(args, &q.vhost, &q.name))
    {
        tracing::warn!(
            "queue {:?} in vhost {:?} ({}, {} messages): its messages are not in the snapshot",
            q.name,
            q.vhost,
            q.queue_type,
            q.messages
        );
    }
    let staged = decode::stage(
        &repo,
        &snapshot,
        &manifest,
        &args.vhosts,
        settings.identity.as_ref(),
        4,
    )
    .await?;
    let args = args.clone();
    tokio::task::spawn_blocking(move || print(&staged, &args)).await?
}

fn selected(args: &MessagesSettings, vhost: &str, queue: &str) -> bool {
    crate::selection::selects(&args.vhosts, &args.queues, vhost, queue)
}

/// Refuses vhosts and queues the snapshot does not have (exit 2).
fn check_selection(manifest: &Manifest, args: &MessagesSettings) -> anyhow::Result<()> {
    for v in &args.vhosts {
        if !manifest.queues.iter().any(|q| &q.vhost == v)
            && !manifest.vhosts.iter().any(|x| &x.name == v)
        {
            return Err(crate::error::usage(format!(
                "snapshot {} has no vhost {v:?}: `rabbitmq-backup show {}` lists its queues",
                manifest.id, manifest.id
            )));
        }
    }
    crate::selection::check_queues(manifest, &args.vhosts, &args.queues)
}

/// One message line of a classic queue.
pub fn line(queue: &QueueDirs, item: &QueueItem, bodies: bool) -> Value {
    let mut m = Map::new();
    m.insert("vhost".into(), json!(queue.vhost));
    m.insert("queue".into(), json!(queue.name));
    m.insert("position".into(), json!(item.position));
    if let Some(p) = item.facts.priority_level {
        m.insert("priority_level".into(), json!(p));
    }
    message::json::message(&item.message, bodies, &mut m);
    if let Some(e) = item.facts.expires_at_ms {
        m.insert("expires_at_ms".into(), json!(e));
    }
    m.insert("delivered".into(), json!(item.facts.delivered));
    if !item.notes.is_empty() {
        m.insert("notes".into(), json!(item.notes));
    }
    Value::Object(m)
}

/// One message line of a queue captured as logical records.
pub fn logical_line(file: &LogicalQueue, position: u64, message: &Message, bodies: bool) -> Value {
    let mut m = Map::new();
    m.insert("vhost".into(), json!(file.vhost));
    m.insert("queue".into(), json!(file.queue));
    m.insert("position".into(), json!(position));
    message::json::message(message, bodies, &mut m);
    Value::Object(m)
}

/// Writes one line; `false` when the reader went away (`| head`).
fn emit(out: &mut impl Write, line: &Value) -> anyhow::Result<bool> {
    let written = serde_json::to_writer(&mut *out, line)
        .map_err(io::Error::from)
        .and_then(|()| out.write_all(b"\n"));
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn print(staged: &Staged, args: &MessagesSettings) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let work = staged.work();
    for vhost in staged.store.vhosts() {
        let queues: Vec<&QueueDirs> = vhost
            .queues
            .iter()
            .filter(|q| selected(args, &q.vhost, &q.name))
            .collect();
        if queues.is_empty() {
            continue;
        }
        let reader = staged
            .store
            .vhost(&vhost.name, &work)
            .map_err(|e| e.into_anyhow())?;
        for queue in queues {
            let mut messages = reader.queue(queue);
            let mut shown = 0u64;
            while args.limit.is_none_or(|limit| shown < limit) {
                let Some(item) = messages.next() else { break };
                let item = item.map_err(|e| e.into_anyhow())?;
                // A reader that stopped (`| head`) is not a failure.
                if !emit(&mut out, &line(queue, &item, args.bodies))? {
                    return Ok(());
                }
                shown += 1;
            }
            log_summary(
                queue,
                messages.summary(),
                args.limit.is_some_and(|l| shown >= l),
            );
        }
    }
    for file in staged
        .logical
        .iter()
        .filter(|f| selected(args, &f.vhost, &f.queue))
    {
        let mut records = file.messages();
        let mut shown = 0u64;
        while args.limit.is_none_or(|limit| shown < limit) {
            let Some(message) = records.next_message()? else {
                break;
            };
            if !emit(&mut out, &logical_line(file, shown, &message, args.bodies))? {
                return Ok(());
            }
            shown += 1;
        }
        tracing::info!(
            "queue {:?} in vhost {:?}: {shown} messages (logical records)",
            file.queue,
            file.vhost
        );
    }
    match out.flush() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn log_summary(queue: &QueueDirs, s: &QueueSummary, limited: bool) {
    let more = if limited { " (stopped at --limit)" } else { "" };
    let transient = if s.transient_skipped > 0 {
        format!(
            ", {} transient skipped (RabbitMQ discards them at boot)",
            s.transient_skipped
        )
    } else {
        String::new()
    };
    tracing::info!(
        "queue {:?} in vhost {:?}: {} messages{more}{transient}",
        queue.name,
        queue.vhost,
        s.messages
    );
    for d in &s.dropped {
        tracing::warn!("queue {:?} in vhost {:?}: {d}", queue.name, queue.vhost);
    }
    for w in &s.warnings {
        tracing::warn!("{w}");
    }
}
