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
mod wire;

use std::time::Duration;

use anyhow::Context;
use erl_dist::DistributionFlags;
use erl_dist::epmd::{DEFAULT_EPMD_PORT, EpmdClient};
use erl_dist::handshake::{ClientSideHandshake, HandshakeStatus};
use erl_dist::message::Message;
use erl_dist::node::{Creation, LocalNode, NodeName};
use erl_dist::term::{Atom, Binary, FixInteger, List, Mfa, Pid, Reference, Term, Tuple};
use tokio::net::TcpStream;
use tokio::sync::{OnceCell, mpsc, oneshot, watch};
use tokio_util::compat::TokioAsyncReadCompatExt;

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
    local: Atom,
    creation: u32,
    peer: String,
    bootstrap: OnceCell<Term>,
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
        let epmd = TcpStream::connect((host, DEFAULT_EPMD_PORT))
            .await
            .with_context(|| format!("epmd does not answer on {host}:{DEFAULT_EPMD_PORT}"))?;
        let entry = EpmdClient::new(epmd.compat())
            .get_node(alive)
            .await
            .map_err(|e| anyhow::anyhow!("epmd on {host}: {e}"))?
            .ok_or_else(|| anyhow::anyhow!("epmd on {host} knows no node named {alive:?}"))?;
        if entry.highest_version < erl_dist::LOWEST_DISTRIBUTION_PROTOCOL_VERSION {
            anyhow::bail!(
                "the node speaks only distribution protocol version {} (Erlang/OTP 22 or older)",
                entry.highest_version
            );
        }
        let stream = TcpStream::connect((host, entry.port))
            .await
            .with_context(|| {
                format!(
                    "the node's distribution port {host}:{} does not answer",
                    entry.port
                )
            })?;
        stream.set_nodelay(true)?;

        let name = format!(
            "rabbitmq-backup-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        );
        let mut local = LocalNode::new(
            NodeName::new(&name, host).map_err(|e| anyhow::anyhow!("{e}"))?,
            Creation::random(),
        );
        // Hidden: PUBLISHED stays unset. Calls need spawn requests and monitors.
        local.flags |= DistributionFlags::SPAWN
            | DistributionFlags::DIST_MONITOR
            | DistributionFlags::DIST_MONITOR_NAME;
        let mut handshake =
            ClientSideHandshake::new(stream.compat(), local.clone(), cookie.value.expose());
        let status = handshake
            .execute_send_name(erl_dist::LOWEST_DISTRIBUTION_PROTOCOL_VERSION)
            .await
            .map_err(|e| anyhow::anyhow!("handshake: {e}"))?;
        match status {
            HandshakeStatus::Ok | HandshakeStatus::OkSimultaneous => {}
            other => anyhow::bail!("the node refused the connection ({other:?})"),
        }
        let (stream, peer) = handshake.execute_rest(true).await.map_err(|e| {
            use erl_dist::handshake::HandshakeError;
            match e {
                HandshakeError::CookieMismatch => anyhow::anyhow!(
                    "the node's answer does not match the Erlang cookie from {}",
                    cookie.source
                ),
                // A node that rejects our digest just closes the connection.
                HandshakeError::Io(io) => anyhow::anyhow!(
                    "the node closed the connection during the handshake ({io}): the Erlang cookie from {} is probably not the node's",
                    cookie.source
                ),
                other => anyhow::anyhow!("handshake: {other}"),
            }
        })?;
        let (reader, writer) = stream.into_inner().into_split();
        let (requests, rx) = mpsc::channel(64);
        let (closed_tx, closed) = watch::channel(None);
        tokio::spawn(wire::run(reader, writer, rx, closed_tx));
        tracing::debug!(
            "connected to {} over Erlang distribution as hidden node {}",
            peer.name,
            local.name
        );
        Ok(Distribution {
            requests,
            closed,
            local: Atom::from(local.name.to_string()),
            creation: local.creation.get(),
            peer: peer.name.to_string(),
            bootstrap: OnceCell::new(),
        })
    }

    /// The tool's own node name on this connection (`name@host`).
    pub fn local_node(&self) -> &str {
        &self.local.name
    }

    /// Why the connection is closed, if it is.
    pub fn closed(&self) -> Option<String> {
        self.closed.borrow().clone()
    }

    fn pid(&self) -> Pid {
        Pid::new(self.local.clone(), 0, 0, self.creation)
    }

    fn reference(&self) -> Reference {
        Reference {
            node: self.local.clone(),
            id: vec![rand::random(), rand::random(), rand::random()],
            creation: self.creation,
        }
    }

    /// Calls `module:function(args…)` on the node and returns its value.
    pub async fn call(
        &self,
        module: &str,
        function: &str,
        args: Vec<Term>,
        patience: Duration,
    ) -> Result<Term, CallError> {
        let id = self.reference();
        let tag = self.reference();
        let message = Message::spawn_request(
            id.clone(),
            self.pid(),
            self.pid(),
            Mfa {
                module: Atom::from("erpc"),
                function: Atom::from("execute_call"),
                arity: FixInteger::from(4),
            },
            List::from(vec![Atom::from("monitor").into()]),
            List::from(vec![
                tag.into(),
                Atom::from(module).into(),
                Atom::from(function).into(),
                List::from(args).into(),
            ]),
        );
        let (reply, answer) = oneshot::channel();
        let request = Request::Spawn { message, id, reply };
        if self.requests.send(request).await.is_err() {
            return Err(CallError::Connection(
                self.closed().unwrap_or_else(|| "closed".into()),
            ));
        }
        let exit = match tokio::time::timeout(patience, answer).await {
            Err(_) => return Err(CallError::Timeout(patience)),
            Ok(Err(_)) => {
                return Err(CallError::Connection(
                    self.closed().unwrap_or_else(|| "closed".into()),
                ));
            }
            Ok(Ok(Err(e))) => return Err(CallError::Connection(e)),
            Ok(Ok(Ok(exit))) => exit,
        };
        erpc_result(exit)
    }

    /// Evaluates Erlang expressions (as `rabbitmqctl eval` takes them) on
    /// the node with `bindings` as variables; returns the last value.
    pub async fn eval(
        &self,
        text: &str,
        bindings: Vec<(&str, Term)>,
        patience: Duration,
    ) -> Result<Term, CallError> {
        let bootstrap = self
            .bootstrap
            .get_or_try_init(|| self.parse(BOOTSTRAP, patience))
            .await?
            .clone();
        let bindings: Vec<Term> = bindings
            .into_iter()
            .map(|(name, value)| Tuple::from(vec![Atom::from(name).into(), value]).into())
            .collect();
        // An orddict: sorted by name.
        let outer = List::from(vec![
            Tuple::from(vec![Atom::from("B__").into(), List::from(bindings).into()]).into(),
            Tuple::from(vec![
                Atom::from("S__").into(),
                Binary::from(text.as_bytes()).into(),
            ])
            .into(),
        ]);
        let value = self
            .call("erl_eval", "exprs", vec![bootstrap, outer.into()], patience)
            .await?;
        // {value, Value, Bindings}
        match value {
            Term::Tuple(mut t) if t.elements.len() == 3 => Ok(t.elements.swap_remove(1)),
            other => Err(CallError::Raised {
                class: "error".into(),
                reason: format!("unexpected evaluation result {other}"),
            }),
        }
    }

    /// Parses expressions on the node (`erl_scan`, `erl_parse`).
    async fn parse(&self, text: &str, patience: Duration) -> Result<Term, CallError> {
        let chars: Vec<Term> = text
            .chars()
            .map(|c| FixInteger::from(c as i32).into())
            .collect();
        let scanned = self
            .call(
                "erl_scan",
                "string",
                vec![List::from(chars).into()],
                patience,
            )
            .await?;
        let tokens = ok_element(scanned, 1, "erl_scan:string")?;
        let parsed = self
            .call("erl_parse", "parse_exprs", vec![tokens], patience)
            .await?;
        ok_element(parsed, 1, "erl_parse:parse_exprs")
    }

    /// Sends `message` to the process registered as `name` on the node.
    pub async fn send_to_registered(&self, name: &str, message: Term) -> Result<(), CallError> {
        let message = Message::reg_send(self.pid(), Atom::from(name), message);
        self.requests
            .send(Request::Send(message))
            .await
            .map_err(|_| CallError::Connection(self.closed().unwrap_or_else(|| "closed".into())))
    }
}

/// `{ok, X, …}` → X (element `index`).
fn ok_element(term: Term, index: usize, what: &str) -> Result<Term, CallError> {
    match term {
        Term::Tuple(mut t)
            if t.elements.len() > index
                && matches!(&t.elements[0], Term::Atom(a) if a.name == "ok") =>
        {
            Ok(t.elements.swap_remove(index))
        }
        other => Err(CallError::Raised {
            class: "error".into(),
            reason: format!("{what} returned {other}"),
        }),
    }
}

/// Decodes `erpc:execute_call/4`'s exit reason: `{Tag, return, Value}`,
/// `{Tag, throw|exit, Reason}`, `{Tag, error, Reason[, Stack]}`, or the
/// reason of a process that died otherwise (`killed`, `noconnection`).
fn erpc_result(exit: Term) -> Result<Term, CallError> {
    if let Term::Tuple(mut t) = exit {
        if t.elements.len() >= 3
            && let Term::Atom(class) = &t.elements[1]
        {
            let class = class.name.clone();
            if class == "return" && t.elements.len() == 3 {
                return Ok(t.elements.swap_remove(2));
            }
            return Err(CallError::Raised {
                class,
                reason: t.elements[2].to_string(),
            });
        }
        return Err(CallError::Raised {
            class: "exit".into(),
            reason: Term::Tuple(t).to_string(),
        });
    }
    Err(CallError::Raised {
        class: "exit".into(),
        reason: exit.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(elements: Vec<Term>) -> Term {
        Tuple::from(elements).into()
    }

    #[test]
    fn erpc_results_decode() {
        let a = |s: &str| -> Term { Atom::from(s).into() };
        let v = erpc_result(t(vec![a("ref"), a("return"), a("ok")])).unwrap();
        assert_eq!(v, a("ok"));
        let e = erpc_result(t(vec![
            a("ref"),
            a("error"),
            a("badarg"),
            List::nil().into(),
        ]))
        .unwrap_err();
        assert!(
            matches!(&e, CallError::Raised { class, reason } if class == "error" && reason.contains("badarg")),
            "{e}"
        );
        let e = erpc_result(a("killed")).unwrap_err();
        assert!(e.to_string().contains("killed"), "{e}");
    }

    #[test]
    fn node_names_split() {
        assert_eq!(split_node("rabbit@h").unwrap(), ("rabbit", "h"));
        assert!(split_node("rabbit").is_err());
        assert!(split_node("@h").is_err());
    }
}
