//! How the tool asks the node things and stops and starts its broker: over
//! one Erlang distribution connection for the whole run when it can, else
//! with `rabbitmqctl` (an Erlang VM booted per call, ~0.3 s each). Both
//! evaluate the same named expressions ([`super::exprs`]); which one is
//! used is logged and reported.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::ctl::{Ctl, QueueStatus};
use super::dist::{CallError, Distribution, cookie};
use super::exprs::{self, Expr};
use super::queue_type::QueueType;
use crate::etf::Term;
use crate::settings::Secret;

/// Patience for commands that stop or start the broker.
const SLOW: Duration = Duration::from_secs(600);
/// Patience for queries.
const QUERY: Duration = Duration::from_secs(180);
/// How long the node waits for a start or stop of the broker under way
/// (and for its own start) before it answers: inside [`SLOW`], so the
/// node explains rather than the call timing out.
const SETTLE: Duration = Duration::from_secs(540);
/// The same wait for the probe, inside [`QUERY`].
const PROBE_SETTLE: Duration = Duration::from_secs(120);

/// The way the tool talks to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One Erlang distribution connection for the whole run.
    Distribution,
    /// A `rabbitmqctl` process per call.
    Rabbitmqctl,
}

impl Transport {
    /// As in `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Distribution => "distribution",
            Transport::Rabbitmqctl => "rabbitmqctl",
        }
    }
}

/// A value bound to an expression's input variable.
#[derive(Debug, Clone)]
pub enum Arg {
    /// An Erlang binary.
    Bin(Vec<u8>),
    /// An integer.
    Int(i64),
    /// An atom.
    Atom(String),
    /// A list.
    List(Vec<Arg>),
}

impl Arg {
    fn term(&self) -> Term<'_> {
        match self {
            Arg::Bin(b) => Term::Binary(b),
            Arg::Int(i) => Term::Int(i128::from(*i)),
            Arg::Atom(a) => Term::Atom(a),
            Arg::List(items) => Term::List(items.iter().map(Arg::term).collect()),
        }
    }

    /// Erlang source text for the same value (bytes as numbers: no quoting
    /// or encoding question can arise).
    fn literal(&self) -> String {
        match self {
            Arg::Bin(b) => {
                let bytes: Vec<String> = b.iter().map(u8::to_string).collect();
                format!("<<{}>>", bytes.join(","))
            }
            Arg::Int(i) => i.to_string(),
            Arg::Atom(a) => format!("'{}'", a.replace('\\', "\\\\").replace('\'', "\\'")),
            Arg::List(items) => {
                let items: Vec<String> = items.iter().map(Arg::literal).collect();
                format!("[{}]", items.join(","))
            }
        }
    }
}

/// What the node's Erlang VM says about itself; answers whether or not
/// the RabbitMQ application runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Probe {
    /// Node name.
    pub node: String,
    /// RabbitMQ version.
    pub rabbitmq: String,
    /// Erlang/OTP release.
    pub erlang: String,
    /// Whether the broker application runs.
    pub running: bool,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Whether a backup's pause watchdog waits on the node.
    pub watchdog: bool,
}

/// The node's cluster as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Cluster {
    /// Every member (the node alone when it is not clustered), sorted.
    pub members: Vec<String>,
    /// The members whose RabbitMQ application runs, sorted.
    pub running: Vec<String>,
    /// The name set with `set_cluster_name`, if one is.
    pub name: Option<String>,
}

#[derive(Deserialize)]
struct Leader {
    vhost: String,
    name: String,
    leader: Option<String>,
}

#[derive(Deserialize)]
struct Listener {
    protocol: String,
    ip: String,
    port: u16,
}

/// What the pause watchdog had done when the broker was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchdogOutcome {
    /// There was none.
    None,
    /// It was told to stand down before it acted.
    StoodDown,
    /// It had already started the broker, during the pause.
    Fired,
}

#[derive(Deserialize)]
struct Stopped {
    stop_failed: Option<String>,
}

#[derive(Deserialize)]
struct Started {
    watchdog: WatchdogOutcome,
    /// The boot state when the patience ran out.
    timeout: Option<String>,
    start_failed: Option<String>,
}

#[derive(Deserialize)]
struct QueueRow {
    vhost: String,
    name: String,
    #[serde(rename = "type")]
    queue_type: QueueType,
    durable: bool,
    messages: Option<u64>,
    messages_persistent: Option<u64>,
    consumers: Option<u64>,
    policy: Option<String>,
    message_ttl: bool,
    home: Option<String>,
}

/// Talks to one node.
#[derive(Debug)]
pub struct Control {
    dist: Option<Distribution>,
    ctl: Ctl,
    /// Set once the distribution connection failed mid-run.
    lost: AtomicBool,
}

impl Control {
    /// Connects over Erlang distribution to `node` with the cookie found as
    /// `rabbitmqctl` finds it; if that is not possible, says why and uses
    /// `rabbitmqctl`.
    pub async fn connect(
        ctl: Ctl,
        node: &str,
        env_cookie: Option<&Secret>,
        home: Option<&Path>,
    ) -> Control {
        Control::new(ctl, node, attempt(node, env_cookie, home).await)
    }

    /// A control over `dist` if that connection was made (else rabbitmqctl),
    /// saying which.
    pub fn new(ctl: Ctl, node: &str, dist: anyhow::Result<Distribution>) -> Control {
        let dist = match dist {
            Ok(dist) => {
                tracing::info!(
                    "talking to node {node} over Erlang distribution (one connection, as hidden node {})",
                    dist.local_node()
                );
                Some(dist)
            }
            Err(e) => {
                tracing::info!("{e:#}; using rabbitmqctl instead (an Erlang VM per call, slower)");
                None
            }
        };
        Control {
            dist,
            ctl,
            lost: AtomicBool::new(false),
        }
    }

    /// Uses `rabbitmqctl` only.
    pub fn rabbitmqctl(ctl: Ctl) -> Control {
        Control {
            dist: None,
            ctl,
            lost: AtomicBool::new(false),
        }
    }

    /// The transport in use now.
    pub fn transport(&self) -> Transport {
        match &self.dist {
            Some(_) if !self.lost.load(Ordering::Relaxed) => Transport::Distribution,
            _ => Transport::Rabbitmqctl,
        }
    }

    /// The rabbitmqctl behind this control (definitions without the
    /// management API).
    pub fn ctl(&self) -> &Ctl {
        &self.ctl
    }

    /// Evaluates `expr` with `args` bound to its inputs and decodes its JSON.
    /// A query whose distribution connection breaks is asked again with
    /// rabbitmqctl; with `retry_on_loss` false (stopping the broker) the
    /// error is returned instead, as the outcome is unknown.
    async fn eval<T: DeserializeOwned>(
        &self,
        expr: &Expr,
        args: &[(&str, Arg)],
        patience: Duration,
        retry_on_loss: bool,
    ) -> anyhow::Result<T> {
        debug_assert_eq!(
            expr.inputs,
            args.iter().map(|(n, _)| *n).collect::<Vec<_>>().as_slice()
        );
        if let (Some(dist), Transport::Distribution) = (&self.dist, self.transport()) {
            let bindings = args.iter().map(|(n, a)| (*n, a.term())).collect();
            let answer = dist
                .eval(&format!("{}.", expr.text), bindings, patience)
                .await;
            match answer {
                Ok(value) => {
                    let term = value
                        .term()
                        .with_context(|| format!("{} failed", expr.name))?;
                    let Term::Binary(json) = term else {
                        anyhow::bail!("unexpected answer to the {} query: {term}", expr.name)
                    };
                    return serde_json::from_slice(json).with_context(|| {
                        format!(
                            "unexpected answer to the {} query: {}",
                            expr.name,
                            String::from_utf8_lossy(json)
                        )
                    });
                }
                Err(CallError::Connection(e)) if retry_on_loss => {
                    self.lost.store(true, Ordering::Relaxed);
                    tracing::warn!(
                        "the Erlang distribution connection to the node failed ({e}); using rabbitmqctl from now on"
                    );
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("{} failed", expr.name)));
                }
            }
        }
        let text = ctl_text(expr, args);
        let out = self.ctl.eval(&text, patience).await.map_err(|e| {
            // A wrong cookie is the whole story, whatever was asked.
            if super::ctl::is_cookie_mismatch(&e) {
                e
            } else {
                e.context(format!("{} failed", expr.name))
            }
        })?;
        let json = decode_hex_output(&out)
            .with_context(|| format!("unexpected answer to the {} query: {out:?}", expr.name))?;
        serde_json::from_slice(&json).with_context(|| {
            format!(
                "unexpected answer to the {} query: {}",
                expr.name,
                String::from_utf8_lossy(&json)
            )
        })
    }

    /// Name, versions, data directory, whether the broker runs and whether
    /// a pause watchdog waits: one question, which works while the broker
    /// is stopped.
    pub async fn probe(&self) -> anyhow::Result<Probe> {
        let patience = ms(PROBE_SETTLE);
        self.eval(&exprs::PROBE, &[("Patience", patience)], QUERY, true)
            .await
    }

    /// The node's data directory.
    pub async fn data_dir(&self) -> anyhow::Result<PathBuf> {
        let dir: String = self.eval(&exprs::DATA_DIR, &[], QUERY, true).await?;
        Ok(PathBuf::from(dir))
    }

    /// The node's cluster: members, those running, and its set name.
    pub async fn cluster(&self) -> anyhow::Result<Cluster> {
        let mut cluster: Cluster = self.eval(&exprs::CLUSTER, &[], QUERY, true).await?;
        cluster.members.sort();
        cluster.running.sort();
        Ok(cluster)
    }

    /// The node's AMQP listener: (`amqp` or `amqp/ssl`, address, port).
    pub async fn amqp_listener(&self) -> anyhow::Result<Option<(String, String, u16)>> {
        let listeners: Vec<Listener> = self.eval(&exprs::AMQP_LISTENERS, &[], QUERY, true).await?;
        Ok(listeners
            .into_iter()
            .next()
            .map(|l| (l.protocol, l.ip, l.port)))
    }

    /// Whether the RabbitMQ application runs.
    pub async fn app_running(&self) -> anyhow::Result<bool> {
        self.eval(&exprs::APP_RUNNING, &[], QUERY, true).await
    }

    /// Every queue of `vhosts` with exact counts and the node its messages
    /// live on (classic: its home; quorum and stream: its leader; none for
    /// a queue that is down), sorted by vhost and name.
    pub async fn queues(
        &self,
        vhosts: &[String],
    ) -> anyhow::Result<Vec<(QueueStatus, Option<String>)>> {
        let arg = Arg::List(
            vhosts
                .iter()
                .map(|v| Arg::Bin(v.as_bytes().to_vec()))
                .collect(),
        );
        let rows: Vec<QueueRow> = self
            .eval(&exprs::QUEUES, &[("Vhosts", arg)], QUERY, true)
            .await
            .context("cannot list the queues")?;
        let mut queues: Vec<(QueueStatus, Option<String>)> = rows
            .into_iter()
            .map(|r| {
                let status = QueueStatus {
                    vhost: r.vhost,
                    name: r.name,
                    queue_type: r.queue_type,
                    durable: r.durable,
                    messages: r.messages.unwrap_or(0),
                    messages_persistent: r.messages_persistent,
                    consumers: r.consumers.unwrap_or(0),
                    policy: r.policy,
                    message_ttl: r.message_ttl,
                };
                (status, r.home)
            })
            .collect();
        queues.sort_by(|(a, _), (b, _)| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        Ok(queues)
    }

    /// Where each of `queues` (`(vhost, queue)`) is led: a classic queue's
    /// home, a quorum queue's leader as its Raft cluster says (none while
    /// the queue's record has not followed an election yet), a stream's
    /// leader; none for a queue that is down or gone.
    pub async fn live_leaders(
        &self,
        queues: &[(String, String)],
    ) -> anyhow::Result<Vec<(String, String, Option<String>)>> {
        let arg = Arg::List(
            queues
                .iter()
                .map(|(v, n)| Arg::List(vec![bin(v), bin(n)]))
                .collect(),
        );
        let rows: Vec<Leader> = self
            .eval(&exprs::LIVE_LEADERS, &[("Queues", arg)], QUERY, true)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.vhost, r.name, r.leader))
            .collect())
    }

    /// Asks each quorum queue (and, from RabbitMQ 4.0, each stream) of
    /// `queues` (`(vhost, queue, node)`) to hand its leadership to that
    /// node. Returns at once, with the queues that cannot be moved (streams
    /// before 4.0); [`Control::live_leaders`] tells when the others have.
    pub async fn transfer_leadership(
        &self,
        queues: &[(String, String, String)],
    ) -> anyhow::Result<Vec<(String, String)>> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let arg = Arg::List(
            queues
                .iter()
                .map(|(v, n, to)| Arg::List(vec![bin(v), bin(n), bin(to)]))
                .collect(),
        );
        self.eval(&exprs::TRANSFER_LEADERSHIP, &[("Queues", arg)], QUERY, true)
            .await
    }

    /// Starts the capture server on the node and returns its answer
    /// (`{"port", "token"}`), to be decoded by the capture.
    pub async fn start_capture_server<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        self.eval(&exprs::CAPTURE_SERVER, &[], QUERY, true).await
    }

    /// Stops the RabbitMQ application (the VM keeps running). With
    /// `watchdog`, a process on the node starts it again if the tool goes
    /// quiet that long or, over distribution, at once if the tool's
    /// connection closes (a backup's pause). Without (a restore), any
    /// earlier watchdog is stood down and none is left.
    pub async fn stop_app(&self, watchdog: Option<Duration>) -> anyhow::Result<()> {
        let watchdog_ms = watchdog.map(|d| d.as_millis().max(1) as i64).unwrap_or(0);
        let tool = match (&self.dist, self.transport()) {
            (Some(dist), Transport::Distribution) => Arg::Atom(dist.local_node().to_string()),
            _ => Arg::Atom("undefined".into()),
        };
        let fail = crate::failpoint::on_node("ctl:stop-app");
        let answer: Stopped = self
            .eval(
                &exprs::STOP_APP,
                &[
                    ("Watchdog", Arg::Int(watchdog_ms)),
                    ("Tool", tool),
                    ("Fail", Arg::Atom(fail.to_string())),
                    ("Patience", ms(SETTLE)),
                ],
                SLOW,
                false,
            )
            .await?;
        match answer.stop_failed {
            None => Ok(()),
            Some(reason) => {
                let reason: String = reason.chars().take(400).collect();
                anyhow::bail!(
                    "stopping the broker failed (the management agent's event handler was put back): {reason}"
                )
            }
        }
    }

    /// Stands the watchdog down and starts the application; returns once it
    /// has booted, with what the watchdog had done.
    pub async fn start_app(&self) -> anyhow::Result<WatchdogOutcome> {
        self.start_app_within(SETTLE).await
    }

    /// [`Control::start_app`], waiting on the node at most `patience` for
    /// a start under way and for the broker to run.
    pub async fn start_app_within(&self, patience: Duration) -> anyhow::Result<WatchdogOutcome> {
        let started: Started = self
            .eval(
                &exprs::START_APP,
                &[("Patience", ms(patience))],
                patience + (SLOW - SETTLE),
                true,
            )
            .await?;
        if let Some(state) = started.timeout {
            anyhow::bail!(
                "the broker did not come up within {} s of the start (boot state {state}): it may still be booting; see the node's log, and `rabbitmqctl await_startup`",
                patience.as_secs()
            );
        }
        if let Some(reason) = started.start_failed {
            let reason: String = reason.chars().take(400).collect();
            anyhow::bail!("starting the broker failed: {reason}; see the node's log");
        }
        Ok(started.watchdog)
    }

    /// Tells the pause watchdog the tool is alive.
    pub async fn pet_watchdog(&self) -> anyhow::Result<()> {
        if let (Some(dist), Transport::Distribution) = (&self.dist, self.transport()) {
            return dist
                .send_to_registered(exprs::WATCHDOG, &Term::Atom("pet"))
                .await
                .map_err(anyhow::Error::new);
        }
        let _: bool = self.eval(&exprs::PET, &[], QUERY, true).await?;
        Ok(())
    }
}

/// A duration in ms, as the node's `Patience`.
fn ms(d: Duration) -> Arg {
    Arg::Int(d.as_millis() as i64)
}

fn bin(text: &str) -> Arg {
    Arg::Bin(text.as_bytes().to_vec())
}

/// Connects to `node` over Erlang distribution with the cookie found as
/// `rabbitmqctl` finds it.
pub async fn attempt(
    node: &str,
    env_cookie: Option<&Secret>,
    home: Option<&Path>,
) -> anyhow::Result<Distribution> {
    let cookie = cookie::find(env_cookie, home)?;
    Distribution::connect(node, &cookie).await
}

/// The expression as `rabbitmqctl eval` takes it: inputs bound first, the
/// JSON printed as hex digits (whatever the terminal's encoding).
fn ctl_text(expr: &Expr, args: &[(&str, Arg)]) -> String {
    let mut text = String::new();
    for (name, arg) in args {
        text.push_str(&format!("{name} = {}, ", arg.literal()));
    }
    text.push_str(&format!(
        "R__ = begin {} end, lists:flatten([io_lib:format(\"~2.16.0B\", [X__]) || <<X__>> <= R__]).",
        expr.text
    ));
    text
}

/// `"7B22…"` (possibly wrapped over lines) → the bytes.
fn decode_hex_output(out: &str) -> anyhow::Result<Vec<u8>> {
    let trimmed = out.trim();
    if !trimmed.starts_with('"') || !trimmed.ends_with('"') {
        anyhow::bail!("not a string");
    }
    let digits: String = trimmed.chars().filter(char::is_ascii_hexdigit).collect();
    hex::decode(digits).context("not hex")
}

/// What `rabbitmqctl` takes as the default node: `rabbit@<short host name>`.
pub fn default_node_name() -> String {
    let uname = rustix::system::uname();
    let host = uname.nodename().to_string_lossy();
    let short = host.split('.').next().filter(|h| !h.is_empty());
    format!("rabbit@{}", short.unwrap_or("localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_need_no_quoting() {
        assert_eq!(Arg::Bin(b"a'\"\\".to_vec()).literal(), "<<97,39,34,92>>");
        assert_eq!(
            Arg::List(vec![Arg::Int(-3), Arg::Atom("it's".into())]).literal(),
            "[-3,'it\\'s']"
        );
    }

    #[test]
    fn ctl_text_binds_inputs_and_prints_hex() {
        let text = ctl_text(
            &exprs::QUEUES,
            &[("Vhosts", Arg::List(vec![Arg::Bin(b"/".to_vec())]))],
        );
        assert!(
            text.starts_with("Vhosts = [<<47>>], R__ = begin "),
            "{text}"
        );
        assert!(text.ends_with("<= R__])."), "{text}");
    }

    #[test]
    fn hex_output_decodes_even_when_wrapped() {
        assert_eq!(decode_hex_output("\"7B7D\"\n").unwrap(), b"{}".to_vec());
        assert_eq!(
            decode_hex_output("\"7B22\"\n \"7D\"\n").unwrap(),
            b"{\"}".to_vec()
        );
        assert_eq!(
            decode_hex_output("\"7B22\n 617D\"").unwrap(),
            b"{\"a}".to_vec()
        );
        assert!(decode_hex_output("{badrpc,nodedown}").is_err());
    }

    #[test]
    fn default_node_is_rabbit_at_the_short_host_name() {
        let name = default_node_name();
        assert!(name.starts_with("rabbit@"), "{name}");
        assert!(!name.contains('.'), "{name}");
    }
}
