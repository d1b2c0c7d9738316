//! `rabbitmqctl`: the node's own CLI. Works without the management plugin and
//! asks queues for exact message counts, but every call starts an Erlang VM
//! (about a second), so callers keep calls few and run them in parallel.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::queue_type::QueueType;

/// A queue as `rabbitmqctl list_queues` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStatus {
    /// Virtual host.
    pub vhost: String,
    /// Queue name.
    pub name: String,
    /// `classic`, `quorum` or `stream`.
    pub queue_type: QueueType,
    /// Durable flag.
    pub durable: bool,
    /// Ready plus unacknowledged messages.
    pub messages: u64,
    /// Persistent messages (classic queues only).
    pub messages_persistent: Option<u64>,
    /// Attached consumers.
    pub consumers: u64,
    /// The policy applied to the queue, if any.
    pub policy: Option<String>,
    /// The queue's own arguments set a message TTL (`x-message-ttl`).
    pub message_ttl: bool,
}

/// What the node's Erlang VM says about itself; answers whether or not
/// the RabbitMQ application runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Node name.
    pub name: String,
    /// Data directory (`rabbit_mnesia:dir()`).
    pub data_dir: PathBuf,
    /// Whether the RabbitMQ application runs.
    pub running: bool,
    /// Whether a backup's pause watchdog waits on the node.
    pub watchdog: bool,
}

/// `"q" in vhost "v" (2 consumers)` for every queue with consumers.
pub fn with_consumers(queues: &[QueueStatus]) -> Vec<String> {
    queues
        .iter()
        .filter(|q| q.consumers > 0)
        .map(|q| {
            format!(
                "{:?} in vhost {:?} ({})",
                q.name,
                q.vhost,
                crate::output::count(q.consumers, "consumer")
            )
        })
        .collect()
}

/// Runs `rabbitmqctl` against one node.
#[derive(Debug, Clone)]
pub struct Ctl {
    program: PathBuf,
    node: Option<String>,
}

/// Patience for commands that stop or start the broker.
const SLOW: Duration = Duration::from_secs(600);
/// Patience for queries.
const QUERY: Duration = Duration::from_secs(180);

impl Ctl {
    /// `program` is the `rabbitmqctl` to run; `node` is passed as `-n` if set.
    pub fn new(program: PathBuf, node: Option<String>) -> Ctl {
        Ctl { program, node }
    }

    async fn run(&self, args: &[&str], patience: Duration) -> anyhow::Result<String> {
        run_tool(&self.program, self.node.as_deref(), args, patience).await
    }

    /// The node's data directory: `rabbit:data_dir()` (3.12+; it outlives
    /// Mnesia), else `rabbit_mnesia:dir()` as in the procedure (3.8-4.3).
    pub async fn data_dir(&self) -> anyhow::Result<PathBuf> {
        const EXPR: &str = "try rabbit:data_dir() catch error:undef -> rabbit_mnesia:dir() end.";
        let out = self.run(&["eval", EXPR], QUERY).await?;
        let dir = parse_erlang_string(out.trim())
            .with_context(|| format!("unexpected answer to {EXPR}: {out:?}"))?;
        Ok(PathBuf::from(dir))
    }

    /// The node's name, from its VM (works while the broker is stopped).
    pub async fn node_name(&self) -> anyhow::Result<String> {
        let out = self.run(&["eval", "node()."], QUERY).await?;
        Ok(out.trim().trim_matches('\'').to_string())
    }

    /// Name, data directory, whether the application runs and whether a
    /// backup's pause watchdog waits: one call, which works while the
    /// application is stopped.
    pub async fn probe(&self) -> anyhow::Result<Probe> {
        const EXPR: &str = "io:format(\"~s~n~s~n~s~n~s~n\", [node(), \
            try rabbit:data_dir() catch error:undef -> rabbit_mnesia:dir() end, \
            rabbit:is_running(), is_pid(whereis(rabbitmq_backup_watchdog))]).";
        let out = self.run(&["eval", EXPR], QUERY).await?;
        parse_probe(&out).with_context(|| format!("unexpected answer to the node probe: {out:?}"))
    }

    /// Every node of the node's cluster (itself alone when it is not clustered).
    pub async fn cluster_members(&self) -> anyhow::Result<Vec<String>> {
        const EXPR: &str = "io:format(\"~s~n\", [lists:join(\" \", [atom_to_list(N) || N <- \
            try rabbit_nodes:all() catch error:undef -> rabbit_mnesia:cluster_nodes(all) end])]).";
        let out = self.run(&["eval", EXPR], QUERY).await?;
        let mut nodes: Vec<String> = out
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        nodes.sort();
        Ok(nodes)
    }

    /// The members of the node's cluster whose RabbitMQ application runs.
    pub async fn running_members(&self) -> anyhow::Result<Vec<String>> {
        const EXPR: &str = "io:format(\"~s~n\", [lists:join(\" \", [atom_to_list(N) || N <- \
            try rabbit_nodes:list_running() catch error:undef -> \
            try rabbit_nodes:all_running() catch error:undef -> \
            rabbit_mnesia:cluster_nodes(running) end end])]).";
        let out = self.run(&["eval", EXPR], QUERY).await?;
        let mut nodes: Vec<String> = out
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        nodes.sort();
        Ok(nodes)
    }

    /// The cluster's name as set by `rabbitmqctl set_cluster_name` (shared
    /// by every member), or "" when none is set: the default name differs
    /// from member to member (each one's own name).
    pub async fn cluster_name(&self) -> anyhow::Result<String> {
        const EXPR: &str = "io:format(\"~s~n\", [case rabbit_runtime_parameters:value_global(cluster_name) of \
            not_found -> <<>>; N -> N end]).";
        let out = self.run(&["eval", EXPR], QUERY).await?;
        Ok(out.lines().next().unwrap_or_default().trim().to_string())
    }

    /// The node's AMQP listener: (`amqp` or `amqp/ssl`, address, port).
    pub async fn amqp_listener(&self) -> anyhow::Result<Option<(String, String, u16)>> {
        const EXPR: &str = "[io:format(\"~s ~s ~b~n\", [P, inet:ntoa(IP), Port]) || \
            {listener, N, P, _H, IP, Port, _O} <- rabbit_networking:active_listeners(), \
            N =:= node(), P =:= amqp orelse P =:= 'amqp/ssl'], ok.";
        let out = self.run(&["eval", EXPR], QUERY).await?;
        Ok(out.lines().find_map(|line| {
            let mut parts = line.split_whitespace();
            let protocol = parts.next()?.to_string();
            let ip = parts.next()?.to_string();
            let port = parts.next()?.parse().ok()?;
            Some((protocol, ip, port))
        }))
    }

    /// Node name and versions from `rabbitmqctl status` (used when the
    /// management API is not available).
    pub async fn identity(&self) -> anyhow::Result<(String, String, String)> {
        let (status, node) = tokio::try_join!(
            self.run(&["status", "--formatter", "json"], QUERY),
            self.node_name()
        )?;
        let status: Value =
            serde_json::from_str(&status).context("rabbitmqctl status did not print JSON")?;
        let rabbitmq = status["rabbitmq_version"]
            .as_str()
            .unwrap_or("unknown")
            .to_string();
        let erlang = status["erlang_version"]
            .as_str()
            .map(erlang_release)
            .unwrap_or_else(|| "unknown".into());
        Ok((node, rabbitmq, erlang))
    }

    /// The queues of a vhost with exact counts, asked of the queues
    /// themselves: with `local`, only those whose messages live on this
    /// node (classic: its home; quorum and stream: its leader).
    pub async fn list_queues(&self, vhost: &str, local: bool) -> anyhow::Result<Vec<QueueStatus>> {
        let mut args = vec!["list_queues", "-q", "-p", vhost];
        if local {
            args.push("--local");
        }
        args.extend([
            "--formatter",
            "json",
            "name",
            "type",
            "durable",
            "messages",
            "messages_persistent",
            "consumers",
            "policy",
            "arguments",
        ]);
        let out = self
            .run(&args, QUERY)
            .await
            .with_context(|| format!("cannot list the queues of vhost {vhost:?}"))?;
        parse_queue_list(vhost, &out)
    }

    /// Exact ready-message counts of quorum queues and streams, asked of the
    /// queues themselves: `list_queues` reports them from metrics that lag
    /// by seconds. Names travel hex-encoded so any name parses safely (by
    /// hand: `binary:encode_hex` needs OTP 24, RabbitMQ 3.8 runs on 23).
    pub async fn non_classic_counts(&self) -> anyhow::Result<Vec<(String, String, u64)>> {
        const EXPR: &str = "H = fun(B) -> list_to_binary([io_lib:format(\"~2.16.0B\", [X]) || <<X>> <= B]) end, \
            lists:flatmap(fun(Q) -> case rabbit_amqqueue:stat(Q) of \
            {ok, M, _} -> {resource, V, queue, N} = amqqueue:get_name(Q), \
            [{H(V), H(N), M}]; _ -> [] end end, \
            [Q || Q <- rabbit_amqqueue:list(), amqqueue:get_type(Q) =/= rabbit_classic_queue]).";
        let out = self.run(&["eval", EXPR], QUERY).await?;
        parse_hex_counts(&out)
            .with_context(|| format!("unexpected answer to the queue count query: {out:?}"))
    }

    /// Where each queue's messages live: (vhost, queue, node), the node
    /// being a classic queue's home or a quorum queue's or stream's leader.
    pub async fn queue_homes(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        const EXPR: &str = "H = fun(B) -> [io_lib:format(\"~2.16.0B\", [X]) || <<X>> <= B] end, \
            [io:format(\"~s ~s ~s~n\", [H(V), H(N), \
            case amqqueue:get_pid(Q) of {_, Nd} -> Nd; P when is_pid(P) -> node(P); _ -> none end]) \
            || Q <- rabbit_amqqueue:list(), {resource, V, queue, N} <- [amqqueue:get_name(Q)]], ok.";
        let out = self.run(&["eval", EXPR], QUERY).await?;
        parse_hex_homes(&out)
    }

    /// Where each queue of `queues` is led, asked of its Raft cluster (a
    /// quorum queue) as well as read from the queue's record, which follows
    /// an election with a delay: `(vhost, queue, leader)`, the leader being
    /// `none` while the two disagree or no leader is known.
    pub async fn live_leaders(
        &self,
        queues: &[(String, String)],
    ) -> anyhow::Result<Vec<(String, String, String)>> {
        let list: Vec<String> = queues
            .iter()
            .map(|(v, n)| format!("{{<<\"{}\">>, <<\"{}\">>}}", hex::encode(v), hex::encode(n)))
            .collect();
        let expr = format!(
            "D = fun(H) -> << <<(list_to_integer([A, B], 16))>> || <<A, B>> <= H >> end, \
            L = fun(Q) -> case amqqueue:get_pid(Q) of \
              {{RaName, Nd}} -> case catch ra:members({{RaName, node()}}, 5000) of \
                {{ok, _, {{_, Nd}}}} -> Nd; _ -> none end; \
              P when is_pid(P) -> node(P); _ -> none end end, \
            [io:format(\"~s ~s ~s~n\", [V, N, case rabbit_amqqueue:lookup(rabbit_misc:r(D(V), queue, D(N))) of \
               {{ok, Q}} -> L(Q); _ -> none end]) || {{V, N}} <- [{}]], ok.",
            list.join(", ")
        );
        let out = self.run(&["eval", &expr], QUERY).await?;
        parse_hex_homes(&out)
    }

    /// Asks each quorum queue (and, from RabbitMQ 4.0, each stream) of
    /// `queues`, given as `(vhost, queue, node)`, to hand its leadership to
    /// that node. Returns at once, with the queues that cannot be moved
    /// (streams before 4.0); [`Ctl::live_leaders`] tells when the others have.
    /// Names travel hex-encoded, decoded by hand (OTP 23 lacks decode_hex).
    pub async fn transfer_leadership(
        &self,
        queues: &[(String, String, String)],
    ) -> anyhow::Result<Vec<(String, String)>> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = queues
            .iter()
            .map(|(v, n, to)| {
                format!(
                    "{{<<\"{}\">>, <<\"{}\">>, <<\"{}\">>}}",
                    hex::encode(v),
                    hex::encode(n),
                    hex::encode(to)
                )
            })
            .collect();
        let expr = format!(
            "D = fun(H) -> << <<(list_to_integer([A, B], 16))>> || <<A, B>> <= H >> end, \
            T = fun(Q, To) -> case amqqueue:get_pid(Q) of \
              {{_, Nd}} when Nd =:= To -> ok; \
              {{RaName, _}} = Pid -> ra:transfer_leadership(Pid, {{RaName, To}}); \
              P when is_pid(P), node(P) =/= To -> \
                code:ensure_loaded(rabbit_stream_queue), \
                case erlang:function_exported(rabbit_stream_queue, transfer_leadership, 2) of \
                  true -> rabbit_stream_queue:transfer_leadership(Q, To); false -> unsupported end; \
              _ -> ok end end, \
            [io:format(\"~s ~s ~p~n\", [V, N, case rabbit_amqqueue:lookup(rabbit_misc:r(D(V), queue, D(N))) of \
               {{ok, Q}} -> catch T(Q, binary_to_atom(D(To), utf8)); _ -> not_found end]) \
             || {{V, N, To}} <- [{}]], ok.",
            list.join(", ")
        );
        let out = self.run(&["eval", &expr], QUERY).await?;
        // Streams before RabbitMQ 4.0 cannot be moved: no use waiting.
        Ok(parse_hex_homes(&out)?
            .into_iter()
            .filter(|(_, _, result)| result == "unsupported")
            .map(|(v, n, _)| (v, n))
            .collect())
    }

    /// Stops the RabbitMQ application (the Erlang VM keeps running), as
    /// `rabbitmqctl stop_app` does (`rabbit:stop()`).
    ///
    /// The management agent's event handler is removed first: when it is
    /// removed during the stop instead, its cleanup waits on processes that
    /// are themselves stopping and stalls the stop for 5 s (RabbitMQ 3.10).
    /// The agent adds it back when the application starts. Where there is no
    /// such handler the removal is a harmless no-op. If the stop fails and
    /// the broker still runs, the handler is put back at once, on the node
    /// (removing it also turned statistics off): the broker is left as found.
    ///
    /// Any pause watchdog already on the node (left by a killed backup) is
    /// stood down first, in the same call: it must never start the broker
    /// behind the caller's back (a restore swapping stores). With
    /// `watchdog`, a new one starts the application again if it hears
    /// nothing for that long ([`Ctl::pet_watchdog`], [`Ctl::start_app`] keep
    /// it quiet): a backup killed during its pause never leaves the broker
    /// stopped for good.
    pub async fn stop_app(&self, watchdog: Option<Duration>) -> anyhow::Result<()> {
        let guard = match watchdog {
            Some(limit) => format!(
                "W = spawn(fun() -> L = fun(F) -> receive pet -> F(F); done -> ok \
                     after {ms} -> logger:warning(\"rabbitmq-backup: no word for {s} s during a \
                     backup pause; starting the broker again\"), rabbit:start() end end, L(L) end), \
                 register(rabbitmq_backup_watchdog, W), ",
                ms = limit.as_millis(),
                s = limit.as_secs()
            ),
            None => String::new(),
        };
        let stop = if crate::failpoint::on_node("ctl:stop-app") {
            "erlang:error(rabbitmq_backup_failpoint)"
        } else {
            "rabbit:stop()"
        };
        let expr = format!(
            "_ = (catch exit(whereis(rabbitmq_backup_watchdog), kill)), \
             HadMgmtHandler = (catch lists:member(rabbit_mgmt_db_handler, gen_event:which_handlers(rabbit_event))) =:= true, \
             _ = (catch gen_event:delete_handler(rabbit_event, rabbit_mgmt_db_handler, [])), \
             case (catch {stop}) of \
                 ok -> {guard}ok; \
                 StopFailed -> \
                     _ = case HadMgmtHandler andalso rabbit:is_running() of \
                         true -> (catch rabbit_mgmt_db_handler:add_handler()); \
                         false -> ok \
                     end, \
                     {{stop_failed, StopFailed}} \
             end."
        );
        let out = self.run(&["eval", &expr], SLOW).await?;
        if out.trim() != "ok" {
            let answer: String = out.trim().chars().take(400).collect();
            anyhow::bail!(
                "stopping the broker failed (the management agent's event handler was put back): {answer}"
            );
        }
        Ok(())
    }

    /// Tells the pause watchdog the tool is alive.
    pub async fn pet_watchdog(&self) -> anyhow::Result<()> {
        self.run(
            &["eval", "catch (rabbitmq_backup_watchdog ! pet), ok."],
            QUERY,
        )
        .await
        .map(drop)
    }

    /// Starts the RabbitMQ application; returns once it has booted. Stands
    /// the pause watchdog down first, if there is one.
    pub async fn start_app(&self) -> anyhow::Result<()> {
        let expr = "_ = (catch (rabbitmq_backup_watchdog ! done)), rabbit:start().";
        let out = self.run(&["eval", expr], SLOW).await?;
        if out.trim() != "ok" {
            anyhow::bail!("starting the broker returned {:?}", out.trim());
        }
        Ok(())
    }

    /// Whether the RabbitMQ application runs (the VM answers either way).
    pub async fn app_running(&self) -> anyhow::Result<bool> {
        let out = self.run(&["eval", "rabbit:is_running()."], QUERY).await?;
        Ok(out.trim() == "true")
    }

    /// Definitions as JSON, without the management plugin.
    pub async fn export_definitions(&self) -> anyhow::Result<Vec<u8>> {
        let out = self
            .run(
                &["export_definitions", "-", "--format", "json", "-q"],
                QUERY,
            )
            .await?;
        Ok(out.into_bytes())
    }

    /// Evaluates Erlang expressions whose value is a binary and returns its
    /// bytes (printed hex-encoded, so no terminal encoding can alter them).
    pub async fn eval_binary(&self, expr: &str) -> anyhow::Result<Vec<u8>> {
        let text = format!(
            "R__ = begin {expr} end, lists:flatten([io_lib:format(\"~2.16.0B\", [X__]) || <<X__>> <= R__])."
        );
        let out = self.run(&["eval", &text], QUERY).await?;
        let trimmed = out.trim();
        let digits: String = trimmed.chars().filter(char::is_ascii_hexdigit).collect();
        match hex::decode(&digits) {
            Ok(bytes) if trimmed.starts_with('"') && trimmed.ends_with('"') => Ok(bytes),
            _ => anyhow::bail!("unexpected answer from the node: {trimmed:?}"),
        }
    }

    /// Imports definitions from a JSON file (merging, like the HTTP API).
    pub async fn import_definitions(&self, file: &Path) -> anyhow::Result<()> {
        let path = file.to_string_lossy();
        self.run(&["import_definitions", &path, "--format", "json"], SLOW)
            .await
            .map(drop)
    }
}

/// Runs a RabbitMQ CLI tool and returns its standard output, or an error
/// holding the useful part of its (long) diagnostics.
async fn run_tool(
    program: &Path,
    node: Option<&str>,
    args: &[&str],
    patience: Duration,
) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new(program);
    if let Some(node) = node {
        cmd.arg("-n").arg(node);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = format!("{} {}", program.display(), args.join(" "));
    tracing::debug!("running {shown}");
    let child = cmd.spawn().map_err(|e| {
        anyhow::anyhow!(
            "cannot run {}: {e}; install RabbitMQ's CLI tools or point --rabbitmqctl (RABBITMQCTL) at rabbitmqctl",
            program.display()
        )
    })?;
    let output = tokio::time::timeout(patience, child.wait_with_output())
        .await
        .map_err(|_| {
            anyhow::anyhow!("`{shown}` did not finish within {} s", patience.as_secs())
        })??;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if is_cookie_failure(&stderr) || is_cookie_failure(&stdout) {
        return Err(anyhow::Error::new(CookieMismatch::new(node)));
    }
    anyhow::bail!(
        "`{shown}` failed ({}): {}",
        output.status,
        summarize_cli_error(if stderr.trim().is_empty() {
            &stdout
        } else {
            &stderr
        })
    )
}

/// rabbitmqctl reached the node but could not authenticate to it: the
/// Erlang cookie it used is not the node's.
#[derive(Debug)]
pub struct CookieMismatch {
    message: String,
}

impl CookieMismatch {
    /// Names the node and where rabbitmqctl looks for the cookie, as this
    /// process's environment sets it (never the cookie itself).
    fn new(node: Option<&str>) -> CookieMismatch {
        let node = node.map_or("the node".to_string(), |n| format!("node {n}"));
        let home = std::env::var("HOME").map_or_else(
            |_| "$HOME/.erlang.cookie (HOME is not set)".to_string(),
            |h| format!("{}/.erlang.cookie", h.trim_end_matches('/')),
        );
        let env = if std::env::var_os("RABBITMQ_ERLANG_COOKIE").is_some() {
            "RABBITMQ_ERLANG_COOKIE, which is set and overrides the file"
        } else {
            "RABBITMQ_ERLANG_COOKIE (not set)"
        };
        CookieMismatch {
            message: format!(
                "rabbitmqctl reached {node} but could not authenticate to it: its Erlang cookie is not the node's. \
                 rabbitmqctl reads the cookie from {home} or from {env}; \
                 copy the node's cookie there (Debian: /var/lib/rabbitmq/.erlang.cookie, mode 0400) or run as the user the broker runs as"
            ),
        }
    }
}

impl fmt::Display for CookieMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CookieMismatch {}

/// Whether an error is (or wraps) a [`CookieMismatch`].
pub fn is_cookie_mismatch(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<CookieMismatch>())
}

/// The CLI's diagnosis when the node answered on TCP but the Erlang
/// distribution handshake failed, which a wrong cookie causes.
fn is_cookie_failure(text: &str) -> bool {
    text.contains("Erlang distribution failed")
        || text.contains("Invalid challenge reply")
        || text.contains("Authentication failed")
}

/// The first error line of a RabbitMQ CLI failure plus the epmd diagnosis,
/// which together usually say what is wrong.
fn summarize_cli_error(text: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(first) = text.lines().map(str::trim).find(|l| !l.is_empty()) {
        parts.push(first.trim_start_matches("Error:").trim().to_string());
    }
    for line in text.lines().map(str::trim) {
        if line.starts_with("* epmd reports") || line.contains("cookie") && line.starts_with('*') {
            parts.push(line.trim_start_matches("* ").to_string());
        }
    }
    if parts.is_empty() {
        return "no output".into();
    }
    parts.join("; ")
}

/// Parses an Erlang string literal as printed by `eval` (`"/var/lib/..."`).
fn parse_erlang_string(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// `Erlang/OTP 25 [erts-13.1.5] ...` → `25`.
fn erlang_release(s: &str) -> String {
    s.strip_prefix("Erlang/OTP ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or(s)
        .to_string()
}

/// Parses `[{<<"HEX">>,<<"HEX">>,N},...]`.
/// Lines of `<hex vhost> <hex queue> <node>`, as the home and leader
/// queries print them.
fn parse_hex_homes(out: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    out.lines()
        .filter(|l| l.split_whitespace().count() == 3)
        .map(|line| {
            let mut parts = line.split_whitespace();
            let mut text =
                || -> Option<String> { String::from_utf8(hex::decode(parts.next()?).ok()?).ok() };
            let (vhost, name) = (text(), text());
            let node = parts.next().map(str::to_string);
            match (vhost, name, node) {
                (Some(v), Some(n), Some(node)) => Ok((v, n, node)),
                _ => anyhow::bail!("unexpected answer to the queue home query: {line:?}"),
            }
        })
        .collect()
}

fn parse_hex_counts(out: &str) -> Option<Vec<(String, String, u64)>> {
    let body = out.trim().strip_prefix('[')?.strip_suffix(']')?;
    let mut result = Vec::new();
    for item in body
        .split('}')
        .map(|s| s.trim_start_matches(',').trim())
        .filter(|s| !s.is_empty())
    {
        let item = item.strip_prefix('{')?;
        let mut parts = item.split(',');
        let hex = |p: Option<&str>| -> Option<String> {
            let h = p?.trim().strip_prefix("<<\"")?.strip_suffix("\">>")?;
            String::from_utf8(hex::decode(h).ok()?).ok()
        };
        let vhost = hex(parts.next())?;
        let name = hex(parts.next())?;
        let count = parts.next()?.trim().parse().ok()?;
        result.push((vhost, name, count));
    }
    Some(result)
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Whether `list_queues`' `arguments` (`[["x-message-ttl","long",60000]]`) holds `key`.
fn has_argument(arguments: &Value, key: &str) -> bool {
    arguments
        .as_array()
        .is_some_and(|a| a.iter().any(|arg| arg[0].as_str() == Some(key)))
}

/// Parses the probe's four lines.
fn parse_probe(out: &str) -> Option<Probe> {
    let mut lines = out.lines();
    let name = lines.next()?.trim().to_string();
    let data_dir = PathBuf::from(lines.next()?);
    let running = lines.next()?.trim() == "true";
    let watchdog = lines.next()?.trim() == "true";
    (!name.is_empty()).then_some(Probe {
        name,
        data_dir,
        running,
        watchdog,
    })
}

/// Parses `list_queues --formatter json` output.
fn parse_queue_list(vhost: &str, out: &str) -> anyhow::Result<Vec<QueueStatus>> {
    let rows: Vec<Value> = serde_json::from_str(out.trim()).with_context(|| {
        format!("rabbitmqctl list_queues printed something unexpected: {out:?}")
    })?;
    rows.iter()
        .map(|row| {
            let name = row["name"]
                .as_str()
                .context("a queue without a name")?
                .to_string();
            Ok(QueueStatus {
                vhost: vhost.to_string(),
                queue_type: QueueType::from(row["type"].as_str().unwrap_or("classic")),
                durable: row["durable"].as_bool().unwrap_or(false),
                messages: as_u64(&row["messages"]).unwrap_or(0),
                messages_persistent: as_u64(&row["messages_persistent"]),
                consumers: as_u64(&row["consumers"]).unwrap_or(0),
                policy: row["policy"]
                    .as_str()
                    .filter(|p| !p.is_empty())
                    .map(str::to_string),
                message_ttl: has_argument(&row["arguments"], "x-message-ttl"),
                name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_list_queues_json() {
        let out = r#"[
{"name":"qq","type":"quorum","durable":true,"messages":1,"messages_persistent":"","consumers":0,"policy":"","arguments":[["x-queue-type","longstr","quorum"]]}
,{"name":"prio","type":"classic","durable":true,"messages":1,"messages_persistent":1,"consumers":2,"policy":"ttl","arguments":[["x-message-ttl","long",60000]]}
]"#;
        let queues = parse_queue_list("/", out).unwrap();
        assert_eq!(queues.len(), 2);
        assert_eq!(queues[0].queue_type, QueueType::Quorum);
        assert_eq!(queues[0].messages_persistent, None);
        assert_eq!(queues[1].consumers, 2);
        assert_eq!(queues[1].messages_persistent, Some(1));
        assert_eq!(
            (queues[0].policy.as_deref(), queues[0].message_ttl),
            (None, false)
        );
        assert_eq!(
            (queues[1].policy.as_deref(), queues[1].message_ttl),
            (Some("ttl"), true)
        );
    }

    #[test]
    fn parses_the_probe() {
        let probe =
            parse_probe("rabbit@h\n/var/lib/rabbitmq/mnesia/rabbit@h\nfalse\ntrue\nok\n").unwrap();
        assert_eq!(probe.name, "rabbit@h");
        assert_eq!(
            probe.data_dir,
            PathBuf::from("/var/lib/rabbitmq/mnesia/rabbit@h")
        );
        assert!(!probe.running && probe.watchdog);
        assert_eq!(parse_probe("{badrpc,nodedown}"), None);
    }

    #[test]
    fn parses_hex_counts() {
        assert_eq!(
            parse_hex_counts("[{<<\"2F\">>,<<\"7171\">>,5},{<<\"6F726F\">>,<<\"73\">>,0}]\n"),
            Some(vec![
                ("/".into(), "qq".into(), 5),
                ("oro".into(), "s".into(), 0)
            ])
        );
        assert_eq!(parse_hex_counts("[]"), Some(vec![]));
        assert_eq!(parse_hex_counts("{badrpc,nodedown}"), None);
    }

    #[test]
    fn parses_erlang_strings() {
        assert_eq!(
            parse_erlang_string(r#""/var/lib/rabbitmq/mnesia/rabbit@h""#).as_deref(),
            Some("/var/lib/rabbitmq/mnesia/rabbit@h")
        );
        assert_eq!(parse_erlang_string(r#""a\"b""#).as_deref(), Some("a\"b"));
        assert_eq!(parse_erlang_string("no_quotes"), None);
    }

    #[test]
    fn summarizes_cli_errors() {
        let text = "Error: unable to perform an operation on node 'x@h'. Please see\n\n * epmd reports: node 'x' not running at all\n";
        let s = summarize_cli_error(text);
        assert!(
            s.starts_with("unable to perform an operation on node 'x@h'"),
            "{s}"
        );
        assert!(
            s.contains("epmd reports: node 'x' not running at all"),
            "{s}"
        );
    }

    #[test]
    fn a_failed_distribution_handshake_is_a_cookie_mismatch() {
        // rabbitmqctl 3.10.8 with a wrong cookie (abridged).
        let text = "Error: unable to perform an operation on node 'x@h'. Please see diagnostics information and suggestions below.\n\n * epmd reports node 'x' uses port 25672 for inter-node and CLI tool traffic\n  * TCP connection succeeded but Erlang distribution failed\n  * suggestion: check if the Erlang cookie is identical for all server nodes and CLI tools\n";
        assert!(is_cookie_failure(text));
        assert!(!is_cookie_failure(
            " * epmd reports: node 'x' not running at all"
        ));
        let err = anyhow::Error::new(CookieMismatch::new(Some("x@h")))
            .context("cannot ask node x@h for its data directory");
        assert!(is_cookie_mismatch(&err));
        let text = crate::error::render(&err);
        assert!(
            text.contains("node x@h") && text.contains(".erlang.cookie"),
            "{text}"
        );
        assert!(text.contains("RABBITMQ_ERLANG_COOKIE"), "{text}");
    }

    #[test]
    fn erlang_release_from_status() {
        assert_eq!(erlang_release("Erlang/OTP 25 [erts-13.1.5] [source]"), "25");
    }
}
