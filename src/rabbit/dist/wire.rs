//! The distribution connection after the handshake: length-prefixed frames
//! (a zero length is a tick), each a pass-through message (tag 112, no atom
//! cache: we never offer one) of a control term and maybe a payload term.
//! One task owns the socket: it writes requests, ticks every 15 s (the node
//! gives up after its 60 s net tick time), and hands replies to their
//! callers.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

use crate::etf::{self, Pid, Ref, Term};

/// Pass-through message tag.
const PASS_THROUGH: u8 = 112;
/// Larger frames are refused rather than allocated.
const MAX_FRAME: usize = 1 << 30;
/// How often we tick: well inside the node's default 60 s net tick time.
const TICK: Duration = Duration::from_secs(15);

/// Control message operations (`erts/doc/.../erl_dist_protocol`).
const REG_SEND: i128 = 6;
const MONITOR_P_EXIT: i128 = 21;
const SPAWN_REQUEST: i128 = 29;
const SPAWN_REPLY: i128 = 31;

/// What a finished remote process left: its exit reason, encoded.
pub(super) type Reply = Result<Vec<u8>, String>;

/// A reference's id words: how replies find their callers (ours are random).
type Key = Vec<u32>;

/// A request for the connection task.
pub(super) enum Request {
    /// Send this monitored spawn request (a frame); the exit reason of the
    /// process (or why it could not start) goes to `reply`.
    Spawn {
        frame: Vec<u8>,
        id: Key,
        reply: oneshot::Sender<Reply>,
    },
    /// Send a message that expects no answer.
    Send(Vec<u8>),
}

/// A frame: length, pass-through tag, control term, payload term.
fn frame(control: &Term<'_>, payload: &Term<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 4];
    buf.push(PASS_THROUGH);
    etf::encode(control, &mut buf);
    etf::encode(payload, &mut buf);
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf
}

/// `spawn_request` of `module:function(args…)` by `from`, monitored.
pub(super) fn spawn_request(
    id: &Ref<'_>,
    from: &Pid<'_>,
    (module, function): (&str, &str),
    args: Vec<Term<'_>>,
) -> (Vec<u8>, Key) {
    let mfa = Term::Tuple(vec![
        Term::Atom(module),
        Term::Atom(function),
        Term::Int(args.len() as i128),
    ]);
    let control = Term::Tuple(vec![
        Term::Int(SPAWN_REQUEST),
        Term::Ref(id.clone()),
        Term::Pid(from.clone()),
        // Group leader: ours; nothing here answers io requests, and the
        // code switches to the node's `user` first.
        Term::Pid(from.clone()),
        mfa,
        Term::List(vec![Term::Atom("monitor")]),
    ]);
    (frame(&control, &Term::List(args)), id.id.clone())
}

/// `name ! message` from `from`.
pub(super) fn reg_send(from: &Pid<'_>, name: &str, message: &Term<'_>) -> Vec<u8> {
    let control = Term::Tuple(vec![
        Term::Int(REG_SEND),
        Term::Pid(from.clone()),
        Term::Atom(""),
        Term::Atom(name),
    ]);
    frame(&control, message)
}

/// What a frame from the node means to us.
#[derive(Debug, PartialEq)]
enum Incoming {
    /// A monitored process ended with this reason (encoded).
    Exit(Key, Vec<u8>),
    /// A spawn request failed (the reason, an atom).
    NotSpawned(Key, String),
    /// Anything else (ticks, signals we never asked for).
    Nothing,
}

/// Decodes a pass-through message body (after the tag).
fn incoming(body: &[u8]) -> Result<Incoming, String> {
    let (control, _) =
        etf::decode(body).map_err(|e| format!("cannot decode a message from the node: {e}"))?;
    let fields = control.tuple().unwrap_or(&[]);
    Ok(match fields {
        // {21, FromProc, ToPid, Ref, Reason}
        [Term::Int(MONITOR_P_EXIT), _, _, Term::Ref(r), reason] => {
            let mut encoded = Vec::new();
            etf::encode(reason, &mut encoded);
            Incoming::Exit(r.id.clone(), encoded)
        }
        // {31, ReqId, To, Flags, Result}: a pid, or an atom saying why not.
        [Term::Int(SPAWN_REPLY), Term::Ref(r), _, _, Term::Atom(why)] => {
            Incoming::NotSpawned(r.id.clone(), why.to_string())
        }
        [Term::Int(op), ..] => {
            tracing::debug!("ignoring distribution operation {op}");
            Incoming::Nothing
        }
        _ => {
            return Err(format!(
                "the node sent a control message that is not a tuple: {control}"
            ));
        }
    })
}

/// Reads one frame; `Nothing` for a tick.
async fn read_frame(reader: &mut OwnedReadHalf) -> Result<Incoming, String> {
    let len = reader
        .read_u32()
        .await
        .map_err(|e| format!("the connection closed: {e}"))? as usize;
    if len == 0 {
        return Ok(Incoming::Nothing);
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
    incoming(&buf[1..])
}

async fn write_frame(writer: &mut OwnedWriteHalf, frame: &[u8]) -> Result<(), String> {
    writer
        .write_all(frame)
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
    let (frames_tx, mut frames) = mpsc::channel::<Result<Incoming, String>>(16);
    let read_task = tokio::spawn(async move {
        loop {
            let frame = read_frame(&mut reader).await;
            let end = frame.is_err();
            if frames_tx.send(frame).await.is_err() || end {
                return;
            }
        }
    });
    let mut pending: HashMap<Key, oneshot::Sender<Reply>> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.tick().await;
    let reason = loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(Ok(message)) => dispatch(message, &mut pending),
                Some(Err(e)) => break e,
                None => break "the connection closed".to_string(),
            },
            request = requests.recv() => match request {
                Some(Request::Spawn { frame, id, reply }) => {
                    if let Err(e) = write_frame(&mut writer, &frame).await {
                        let _ = reply.send(Err(e.clone()));
                        break e;
                    }
                    pending.retain(|_, waiting| !waiting.is_closed());
                    pending.insert(id, reply);
                }
                Some(Request::Send(frame)) => {
                    if let Err(e) = write_frame(&mut writer, &frame).await {
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
fn dispatch(message: Incoming, pending: &mut HashMap<Key, oneshot::Sender<Reply>>) {
    match message {
        Incoming::Exit(id, reason) => {
            if let Some(waiting) = pending.remove(&id) {
                let _ = waiting.send(Ok(reason));
            }
        }
        Incoming::NotSpawned(id, why) => {
            if let Some(waiting) = pending.remove(&id) {
                let _ = waiting.send(Err(format!("the node could not start the call: {why}")));
            }
        }
        Incoming::Nothing => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ME: Pid<'static> = Pid {
        node: "rabbitmq-backup-1@h",
        id: 0,
        serial: 0,
        creation: 7,
    };

    fn reference() -> Ref<'static> {
        Ref {
            node: "rabbitmq-backup-1@h",
            creation: 7,
            id: vec![1, 2, 3],
        }
    }

    /// The terms of a frame made here.
    fn terms(frame: &[u8]) -> (Term<'_>, Term<'_>) {
        assert_eq!(
            u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
            frame.len() - 4
        );
        assert_eq!(frame[4], PASS_THROUGH);
        let (control, used) = etf::decode(&frame[5..]).unwrap();
        let (payload, rest) = etf::decode(&frame[5 + used..]).unwrap();
        assert_eq!(5 + used + rest, frame.len());
        (control, payload)
    }

    #[test]
    fn spawn_requests_carry_the_call_and_its_arguments() {
        let (frame, key) = spawn_request(
            &reference(),
            &ME,
            ("erpc", "execute_call"),
            vec![Term::Atom("a"), Term::Int(1)],
        );
        assert_eq!(key, vec![1, 2, 3]);
        let (control, args) = terms(&frame);
        assert_eq!(
            control.to_string(),
            "{29,#Ref<rabbitmq-backup-1@h.3.2.1>,<rabbitmq-backup-1@h.0.0>,<rabbitmq-backup-1@h.0.0>,{erpc,execute_call,2},[monitor]}"
        );
        assert_eq!(args, Term::List(vec![Term::Atom("a"), Term::Int(1)]));
        let sent = reg_send(&ME, "watchdog", &Term::Atom("pet"));
        let (control, message) = terms(&sent);
        assert_eq!(
            control.to_string(),
            "{6,<rabbitmq-backup-1@h.0.0>,'',watchdog}"
        );
        assert_eq!(message, Term::Atom("pet"));
    }

    #[test]
    fn exits_and_failed_spawns_find_their_caller() {
        let encode = |t: &Term<'_>| {
            let mut b = Vec::new();
            etf::encode(t, &mut b);
            b
        };
        let reason = Term::Tuple(vec![
            Term::Atom("tag"),
            Term::Atom("return"),
            Term::Binary(b"{}"),
        ]);
        let exit = Term::Tuple(vec![
            Term::Int(MONITOR_P_EXIT),
            Term::Pid(ME),
            Term::Pid(ME),
            Term::Ref(reference()),
            reason.clone(),
        ]);
        assert_eq!(
            incoming(&encode(&exit)).unwrap(),
            Incoming::Exit(vec![1, 2, 3], encode(&reason))
        );
        let refused = Term::Tuple(vec![
            Term::Int(SPAWN_REPLY),
            Term::Ref(reference()),
            Term::Pid(ME),
            Term::Int(0),
            Term::Atom("badopt"),
        ]);
        assert_eq!(
            incoming(&encode(&refused)).unwrap(),
            Incoming::NotSpawned(vec![1, 2, 3], "badopt".into())
        );
        let started = Term::Tuple(vec![
            Term::Int(SPAWN_REPLY),
            Term::Ref(reference()),
            Term::Pid(ME),
            Term::Int(0),
            Term::Pid(ME),
        ]);
        assert_eq!(incoming(&encode(&started)).unwrap(), Incoming::Nothing);
        assert!(incoming(&encode(&Term::Atom("x"))).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_from_the_node_are_an_error_or_a_message_never_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..256)
        ) {
            let mut body = vec![131];
            body.extend_from_slice(&bytes);
            let _ = incoming(&body);
        }
    }
}
