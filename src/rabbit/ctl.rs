//! `rabbitmqctl`: the node's own CLI, the fallback when Erlang distribution
//! is not possible (see [`super::control`]) and the way to export and
//! import definitions without the management plugin. Every call starts an
//! Erlang VM (~0.3 s), so callers keep calls few.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

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

    /// Evaluates Erlang expressions on the node (`rabbitmqctl eval`) and
    /// returns what it prints (see [`super::control`]).
    pub async fn eval(&self, text: &str, patience: Duration) -> anyhow::Result<String> {
        self.run(&["eval", text], patience).await
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
