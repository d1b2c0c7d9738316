//! One connection to the node over Erlang distribution, for the whole run:
//! a question costs a message round trip instead of a `rabbitmqctl` VM boot
//! (~0.3 s each).
//!
//! The tool connects as a hidden node (it joins no cluster view) named
//! `rabbitmq-backup-<pid>-<random>@<the node's host>`, after finding the
//! node's port with epmd and proving the cookie. A call is a monitored
//! `spawn_request` of `erpc:execute_call/4` (OTP 23+): the process's exit
//! reason is the answer. Erlang expressions (the same text `rabbitmqctl
//! eval` takes) are parsed and evaluated on the node by a small bootstrap
//! expression, with named values passed as bindings, never spliced into text.

pub mod cookie;
mod handshake;
mod wire;

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpStream;
use tokio::sync::{OnceCell, mpsc, oneshot, watch};

use crate::etf::{self, Pid, Ref, Term};
pub use cookie::{Cookie, CookieSource};
use wire::Request;

/// Patience for finding the node and shaking hands.
const CONNECT: Duration = Duration::from_secs(10);

/// Evaluates `S__` (UTF-8 text of Erlang expressions) with the bindings in
/// `B__` (`[{Name, Value}]`). Output of the evaluated code goes to the
/// node's own `user`, not to this tool (nothing here answers io requests).
/// The work happens inside a fun so only `S__` and `B__` come back with the
/// value.
const BOOTSTRAP: &str = "(fun() -> \
    case whereis(user) of undefined -> ok; U__ -> group_leader(U__, self()) end, \
    {ok, T__, _} = erl_scan:string(unicode:characters_to_list(S__)), \
    {ok, E__} = erl_parse:parse_exprs(T__), \
    Bs__ = lists:foldl(fun({K__, V__}, A__) -> erl_eval:add_binding(K__, V__, A__) end, \
        erl_eval:new_bindings(), B__), \
    {value, R__, _} = erl_eval:exprs(E__, Bs__), \
    R__ end)().";

/// A failed call: the connection, or the code on the node.
#[derive(Debug)]
pub enum CallError {
    /// The connection is gone (the node or the network); nothing ran, or
    /// its outcome is unknown.
    Connection(String),
    /// No answer within the patience given; the call may still run.
    Timeout(Duration),
    /// The code ran and raised (`class`: error, exit or throw).
    Raised {
        /// error, exit or throw.
        class: String,
        /// The reason, printed as Erlang terms.
        reason: String,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connection(e) => write!(f, "the distribution connection failed: {e}"),
            CallError::Timeout(d) => write!(f, "no answer within {} s", d.as_secs()),
            CallError::Raised { class, reason } => write!(f, "the node raised {class}: {reason}"),
        }
    }
}

impl std::error::Error for CallError {}

/// A connection to one node. Cheap to share by reference; dropped, it
/// closes (the node then sees `nodedown` for us).
#[derive(Debug)]
pub struct Distribution {
    requests: mpsc::Sender<Request>,
    closed: watch::Receiver<Option<String>>,
    local: String,
    creation: u32,
    peer: String,
    /// The bootstrap's parse tree, encoded once per connection.
    bootstrap: OnceCell<Value>,
}

/// A term the node answered, kept encoded; [`Value::term`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Value(Vec<u8>);

impl Value {
    fn of(term: &Term<'_>) -> Value {
        let mut bytes = Vec::new();
        etf::encode(term, &mut bytes);
        Value(bytes)
    }

    /// The term.
    pub fn term(&self) -> Result<Term<'_>, CallError> {
        etf::decode(&self.0)
            .map(|(term, _)| term)
            .map_err(|e| CallError::Connection(format!("cannot decode the node's answer: {e}")))
    }

    /// The encoded term without its version byte: sent on as it is.
    fn raw(&self) -> Term<'_> {
        Term::Other(self.0.get(1..).unwrap_or_default())
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        tracing::debug!("closing the distribution connection to {}", self.peer);
    }
}

/// Splits `name@host`.
fn split_node(node: &str) -> anyhow::Result<(&str, &str)> {
    match node.split_once('@') {
        Some((name, host)) if !name.is_empty() && !host.is_empty() => Ok((name, host)),
        _ => anyhow::bail!("{node:?} is not a node name of the form name@host"),
    }
}

impl Distribution {
    /// Finds `node` with epmd on its host and connects as a hidden node.
    pub async fn connect(node: &str, cookie: &Cookie) -> anyhow::Result<Distribution> {
        tokio::time::timeout(CONNECT, Self::connect_now(node, cookie))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {} s", CONNECT.as_secs()))?
            .with_context(|| format!("cannot connect to node {node} over Erlang distribution"))
    }

    async fn connect_now(node: &str, cookie: &Cookie) -> anyhow::Result<Distribution> {
        let (alive, host) = split_node(node)?;
        let port = handshake::port_please(host, alive).await?;
        let mut stream = TcpStream::connect((host, port)).await.with_context(|| {
            format!("the node's distribution port {host}:{port} does not answer")
        })?;
        stream.set_nodelay(true)?;
        let local = format!(
            "rabbitmq-backup-{}-{:04x}@{host}",
            std::process::id(),
            rand::random::<u16>()
        );
        // Any creation but 0 (which means "unknown" to the node).
        let creation = rand::random::<u32>().max(1);
        let peer = handshake::shake(&mut stream, &local, creation, cookie)
            .await
            .context("handshake")?;
        let (reader, writer) = stream.into_split();
        let (requests, rx) = mpsc::channel(64);
        let (closed_tx, closed) = watch::channel(None);
        tokio::spawn(wire::run(reader, writer, rx, closed_tx));
        tracing::debug!("connected to {peer} over Erlang distribution as hidden node {local}");
        Ok(Distribution {
            requests,
            closed,
            local,
            creation,
            peer,
            bootstrap: OnceCell::new(),
        })
    }

    /// The tool's own node name on this connection (`name@host`).
    pub fn local_node(&self) -> &str {
        &self.local
    }

    /// Why the connection is closed, if it is.
    pub fn closed(&self) -> Option<String> {
        self.closed.borrow().clone()
    }

    fn pid(&self) -> Pid<'_> {
        Pid {
            node: &self.local,
            id: 0,
            serial: 0,
            creation: self.creation,
        }
    }

    /// A fresh reference: random words, so replies are told apart by them.
    fn reference(&self) -> Ref<'_> {
        Ref {
            node: &self.local,
            creation: self.creation,
            id: vec![rand::random(), rand::random(), rand::random()],
        }
    }

    fn gone(&self) -> CallError {
        CallError::Connection(self.closed().unwrap_or_else(|| "closed".into()))
    }

    /// Calls `module:function(args…)` on the node and returns its value.
    pub async fn call(
        &self,
        module: &str,
        function: &str,
        args: Vec<Term<'_>>,
        patience: Duration,
    ) -> Result<Value, CallError> {
        let tag = self.reference();
        let (frame, id) = wire::spawn_request(
            &self.reference(),
            &self.pid(),
            ("erpc", "execute_call"),
            vec![
                Term::Ref(tag),
                Term::Atom(module),
                Term::Atom(function),
                Term::List(args),
            ],
        );
        let (reply, answer) = oneshot::channel();
        let request = Request::Spawn { frame, id, reply };
        if self.requests.send(request).await.is_err() {
            return Err(self.gone());
        }
        let exit = match tokio::time::timeout(patience, answer).await {
            Err(_) => return Err(CallError::Timeout(patience)),
            Ok(Err(_)) => return Err(self.gone()),
            Ok(Ok(Err(e))) => return Err(CallError::Connection(e)),
            Ok(Ok(Ok(exit))) => Value(exit),
        };
        erpc_result(&exit.term()?)
    }

    /// Evaluates Erlang expressions (as `rabbitmqctl eval` takes them) on
    /// the node with `bindings` as variables; returns the last value.
    pub async fn eval(
        &self,
        text: &str,
        bindings: Vec<(&str, Term<'_>)>,
        patience: Duration,
    ) -> Result<Value, CallError> {
        let bootstrap = self
            .bootstrap
            .get_or_try_init(|| self.parse(BOOTSTRAP, patience))
            .await?;
        let bindings: Vec<Term<'_>> = bindings
            .into_iter()
            .map(|(name, value)| Term::Tuple(vec![Term::Atom(name), value]))
            .collect();
        // An orddict: sorted by name.
        let outer = Term::List(vec![
            Term::Tuple(vec![Term::Atom("B__"), Term::List(bindings)]),
            Term::Tuple(vec![Term::Atom("S__"), Term::Binary(text.as_bytes())]),
        ]);
        let value = self
            .call("erl_eval", "exprs", vec![bootstrap.raw(), outer], patience)
            .await?;
        // {value, Value, Bindings}
        match value.term()? {
            Term::Tuple(t) if t.len() == 3 && t[0] == Term::Atom("value") => Ok(Value::of(&t[1])),
            other => Err(CallError::Raised {
                class: "error".into(),
                reason: format!("unexpected evaluation result {other}"),
            }),
        }
    }

    /// Parses expressions on the node (`erl_scan`, `erl_parse`).
    async fn parse(&self, text: &str, patience: Duration) -> Result<Value, CallError> {
        // The text is ASCII: a string of bytes is the same list of characters.
        debug_assert!(text.is_ascii());
        let scanned = self
            .call(
                "erl_scan",
                "string",
                vec![Term::Bytes(text.as_bytes())],
                patience,
            )
            .await?;
        let tokens = ok_element(&scanned, 1, "erl_scan:string")?;
        let parsed = self
            .call("erl_parse", "parse_exprs", vec![tokens.raw()], patience)
            .await?;
        ok_element(&parsed, 1, "erl_parse:parse_exprs")
    }

    /// Sends `message` to the process registered as `name` on the node.
    pub async fn send_to_registered(
        &self,
        name: &str,
        message: &Term<'_>,
    ) -> Result<(), CallError> {
        let frame = wire::reg_send(&self.pid(), name, message);
        self.requests
            .send(Request::Send(frame))
            .await
            .map_err(|_| self.gone())
    }
}

/// `{ok, X, …}` → X (element `index`).
fn ok_element(value: &Value, index: usize, what: &str) -> Result<Value, CallError> {
    match value.term()? {
        Term::Tuple(t) if t.len() > index && t[0] == Term::Atom("ok") => Ok(Value::of(&t[index])),
        other => Err(CallError::Raised {
            class: "error".into(),
            reason: format!("{what} returned {other}"),
        }),
    }
}

/// Decodes `erpc:execute_call/4`'s exit reason: `{Tag, return, Value}`,
/// `{Tag, throw|exit, Reason}`, `{Tag, error, Reason[, Stack]}`, or the
/// reason of a process that died otherwise (`killed`, `noconnection`).
fn erpc_result(exit: &Term<'_>) -> Result<Value, CallError> {
    match exit {
        Term::Tuple(t) if t.len() >= 3 => match &t[1] {
            Term::Atom("return") if t.len() == 3 => Ok(Value::of(&t[2])),
            Term::Atom(class) => Err(CallError::Raised {
                class: class.to_string(),
                reason: t[2].to_string(),
            }),
            _ => Err(CallError::Raised {
                class: "exit".into(),
                reason: exit.to_string(),
            }),
        },
        _ => Err(CallError::Raised {
            class: "exit".into(),
            reason: exit.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erpc_results_decode() {
        let t = |items: Vec<Term<'static>>| Term::Tuple(items);
        let a = Term::Atom;
        let v = erpc_result(&t(vec![a("ref"), a("return"), a("ok")])).unwrap();
        assert_eq!(v.term().unwrap(), a("ok"));
        let e = erpc_result(&t(vec![a("ref"), a("error"), a("badarg"), Term::Nil])).unwrap_err();
        assert!(
            matches!(&e, CallError::Raised { class, reason } if class == "error" && reason.contains("badarg")),
            "{e}"
        );
        let e = erpc_result(&a("killed")).unwrap_err();
        assert!(e.to_string().contains("killed"), "{e}");
    }

    #[test]
    fn values_are_sent_on_as_they_came() {
        let tree = Term::List(vec![Term::Tuple(vec![
            Term::Atom("var"),
            Term::Int(1),
            Term::Atom("S__"),
        ])]);
        let value = Value::of(&tree);
        let mut outer = Vec::new();
        etf::encode(&Term::Tuple(vec![value.raw()]), &mut outer);
        assert_eq!(etf::decode(&outer).unwrap().0, Term::Tuple(vec![tree]));
        assert!(ok_element(&value, 1, "x").is_err());
    }

    #[test]
    fn node_names_split() {
        assert_eq!(split_node("rabbit@h").unwrap(), ("rabbit", "h"));
        assert!(split_node("rabbit").is_err());
        assert!(split_node("@h").is_err());
    }
}
