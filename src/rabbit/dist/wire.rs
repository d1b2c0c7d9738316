//! The distribution connection after the handshake: length-prefixed frames
//! (a zero length is a tick), each a pass-through message (tag 112, no atom
//! cache: we never offer one). One task owns the socket: it writes requests,
//! ticks every 15 s (the node gives up after its 60 s net tick time), and
//! hands replies to their callers.

use std::collections::HashMap;
use std::time::Duration;

use erl_dist::message::Message;
use erl_dist::term::{PidOrAtom, Reference, Term};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

/// Pass-through message tag.
const PASS_THROUGH: u8 = 112;
/// Larger frames are refused rather than allocated.
const MAX_FRAME: usize = 1 << 30;
/// How often we tick: well inside the node's default 60 s net tick time.
const TICK: Duration = Duration::from_secs(15);

/// What a finished remote process left: its exit reason.
pub(super) type Reply = Result<Term, String>;

/// A request for the connection task.
pub(super) enum Request {
    /// Send this message; if it is a monitored spawn request, the exit
    /// reason of the process (or why it could not start) goes to `reply`.
    Spawn {
        message: Message,
        id: Reference,
        reply: oneshot::Sender<Reply>,
    },
    /// Send a message that expects no answer.
    Send(Message),
}

/// Reads one frame; `None` for a tick.
async fn read_frame(reader: &mut OwnedReadHalf) -> Result<Option<Message>, String> {
    let len = reader
        .read_u32()
        .await
        .map_err(|e| format!("the connection closed: {e}"))? as usize;
    if len == 0 {
        return Ok(None);
    }
    if len > MAX_FRAME {
        return Err(format!("the node sent a {len}-byte frame; refusing it"));
    }
    let mut buf = vec![0u8; len];
    reader
        .read_exact(&mut buf)
        .await
        .map_err(|e| format!("the connection closed mid-frame: {e}"))?;
    if buf[0] != PASS_THROUGH {
        return Err(format!("unexpected frame tag {}", buf[0]));
    }
    match Message::read_from(&mut &buf[1..]) {
        Ok(message) => Ok(Some(message)),
        // A kind of message we never asked for: skip it, the frame is whole.
        Err(erl_dist::message::RecvError::UnsupportedOp { op }) => {
            tracing::debug!("ignoring distribution operation {op}");
            Ok(None)
        }
        Err(e) => Err(format!("cannot decode a message from the node: {e}")),
    }
}

async fn write_message(writer: &mut OwnedWriteHalf, message: Message) -> Result<(), String> {
    let mut buf = vec![0u8; 5];
    message
        .write_into(&mut buf)
        .map_err(|e| format!("cannot encode a message: {e}"))?;
    let len = u32::try_from(buf.len() - 4).map_err(|_| "message too large".to_string())?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf[4] = PASS_THROUGH;
    writer
        .write_all(&buf)
        .await
        .map_err(|e| format!("cannot write to the node: {e}"))
}

/// Runs the connection until it fails or every handle is dropped; then
/// fails whatever is still waiting and publishes why in `closed`.
pub(super) async fn run(
    mut reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    mut requests: mpsc::Receiver<Request>,
    closed: watch::Sender<Option<String>>,
) {
    // Frames are read by their own task: a read cut short by select! would
    // lose the stream's framing.
    let (frames_tx, mut frames) = mpsc::channel::<Result<Option<Message>, String>>(16);
    let read_task = tokio::spawn(async move {
        loop {
            let frame = read_frame(&mut reader).await;
            let end = frame.is_err();
            if frames_tx.send(frame).await.is_err() || end {
                return;
            }
        }
    });
    let mut pending: HashMap<Reference, oneshot::Sender<Reply>> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.tick().await;
    let reason = loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(Ok(Some(message))) => dispatch(message, &mut pending),
                Some(Ok(None)) => {}
                Some(Err(e)) => break e,
                None => break "the connection closed".to_string(),
            },
            request = requests.recv() => match request {
                Some(Request::Spawn { message, id, reply }) => {
                    if let Err(e) = write_message(&mut writer, message).await {
                        let _ = reply.send(Err(e.clone()));
                        break e;
                    }
                    pending.retain(|_, waiting| !waiting.is_closed());
                    pending.insert(id, reply);
                }
                Some(Request::Send(message)) => {
                    if let Err(e) = write_message(&mut writer, message).await {
                        break e;
                    }
                }
                None => break "the tool closed the connection".to_string(),
            },
            _ = tick.tick() => {
                if let Err(e) = writer.write_all(&0u32.to_be_bytes()).await {
                    break format!("cannot write to the node: {e}");
                }
            }
        }
    };
    read_task.abort();
    let _ = writer.shutdown().await;
    for (_, waiting) in pending.drain() {
        let _ = waiting.send(Err(reason.clone()));
    }
    let _ = closed.send(Some(reason));
}

/// Hands a message from the node to whoever waits for it.
fn dispatch(message: Message, pending: &mut HashMap<Reference, oneshot::Sender<Reply>>) {
    match message {
        Message::MonitorPExit(exit) => {
            if let Some(waiting) = pending.remove(&exit.reference) {
                let _ = waiting.send(Ok(exit.reason));
            }
        }
        Message::SpawnReply(reply) => {
            if let PidOrAtom::Atom(reason) = reply.result
                && let Some(waiting) = pending.remove(&reply.req_id)
            {
                let _ = waiting.send(Err(format!(
                    "the node could not start the call: {}",
                    reason.name
                )));
            }
        }
        Message::Tick => {}
        other => tracing::debug!("ignoring a message from the node: {other:?}"),
    }
}
