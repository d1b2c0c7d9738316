//! Command-line arguments (clap only: no I/O, no validation beyond syntax).
//!
//! Every value is optional here so that [`crate::settings`] can apply the
//! built-in defaults in one place; the config file's values arrive as clap
//! defaults ([`crate::config`]), so flag > environment > file > default.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::repo::s3::Addressing;

/// Back up a RabbitMQ node (definitions and message store) to S3-compatible
/// storage or a local directory, and restore it onto the same node or a new
/// host.
#[derive(Debug, Parser)]
#[command(name = "rabbitmq-backup", version = env!("RABBITMQ_BACKUP_VERSION"), max_term_width = 100)]
#[command(after_help = "Examples:
  rabbitmq-backup backup --repo s3://backups/prod
  rabbitmq-backup list --repo s3://backups/prod
  rabbitmq-backup restore latest --from-node rabbit@old-host --exclude-routing-key 'oro.email.*'

Exit codes: 0 success, 1 failure, 2 usage, 3 integrity check failed, 4 refused for safety,
5 incompatible snapshot, 6 data directory not found, 7 restore failed and rolled back,
8 restore failed and the node needs attention.")]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of log lines on standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Plain text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags accepted before or after the command name. Listed after each
/// command's own flags, under their own heading.
#[derive(Debug, Args, Default, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Repository: s3://BUCKET[/PREFIX], file:///ABS/PATH or a directory [default: ./rabbitmq-backups]
    #[arg(long, global = true, env = "RABBITMQ_BACKUP_REPO", value_name = "URL")]
    pub repo: Option<String>,

    /// Management API base URL [default: http://127.0.0.1:15672]
    #[arg(
        long,
        global = true,
        env = "RABBITMQ_MANAGEMENT_URL",
        value_name = "URL"
    )]
    pub management_url: Option<String>,

    /// Management API user [default: guest]
    #[arg(long, global = true, env = "RABBITMQ_USERNAME", value_name = "NAME")]
    pub username: Option<String>,

    /// Management API password (prefer the environment or --password-file) [default: guest]
    #[arg(
        long,
        global = true,
        env = "RABBITMQ_PASSWORD",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub password: Option<String>,

    /// File holding the management API password
    #[arg(
        long,
        global = true,
        env = "RABBITMQ_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,

    /// AMQP URL for `exclude` (credentials default to --username/--password) [default: the node's AMQP listener, asked of the management API]
    #[arg(
        long,
        global = true,
        env = "RABBITMQ_AMQP_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub amqp_url: Option<String>,

    /// Node name passed to rabbitmqctl -n [default: what rabbitmqctl uses]
    #[arg(long, global = true, env = "RABBITMQ_NODENAME", value_name = "NAME")]
    pub node: Option<String>,

    /// rabbitmqctl to run (rabbitmq-diagnostics is looked for beside it) [default: rabbitmqctl on PATH]
    #[arg(long, global = true, env = "RABBITMQCTL", value_name = "PATH")]
    pub rabbitmqctl: Option<PathBuf>,

    /// The node's data directory [default: asked from the node]
    #[arg(long, global = true, env = "RABBITMQ_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Encrypt backups to this age recipient (age1…, from age-keygen); repeatable.
    /// The environment variable takes several, separated by commas or whitespace
    #[arg(
        long,
        global = true,
        env = "RABBITMQ_BACKUP_RECIPIENTS",
        value_name = "RECIPIENT"
    )]
    pub encrypt_to: Vec<String>,

    /// Identity file (age-keygen's AGE-SECRET-KEY-1… lines) that reads encrypted
    /// snapshots, for restore, messages and verify --read-data/--deep
    #[arg(
        long,
        global = true,
        env = "RABBITMQ_BACKUP_IDENTITY_FILE",
        value_name = "FILE"
    )]
    pub identity: Option<PathBuf>,

    /// S3 URL style: path-style is used with a custom endpoint unless told otherwise
    #[arg(
        long,
        global = true,
        env = "RABBITMQ_BACKUP_S3_ADDRESSING",
        value_name = "STYLE"
    )]
    pub s3_addressing: Option<Addressing>,

    /// Attempts per storage request before giving up [default: 6]
    #[arg(long, global = true, env = "RABBITMQ_BACKUP_RETRIES", value_name = "N")]
    pub retries: Option<u32>,

    /// Seconds to wait for an S3 response before retrying [default: 60]
    #[arg(
        long,
        global = true,
        env = "RABBITMQ_BACKUP_S3_TIMEOUT",
        value_name = "SECS"
    )]
    pub s3_timeout: Option<u64>,

    /// Configuration file (TOML) [default: /etc/rabbitmq-backup.toml if present]
    #[arg(
        long,
        global = true,
        env = "RABBITMQ_BACKUP_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Print the result as JSON on standard output
    #[arg(long, global = true)]
    pub json: bool,

    /// Log format on standard error [default: text]
    #[arg(
        long,
        global = true,
        env = "RABBITMQ_BACKUP_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: Option<LogFormat>,

    /// Only warnings and errors on standard error
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// More detail on standard error (-vv for debug traces)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Write Prometheus textfile-collector metrics to this file
    #[arg(
        long,
        global = true,
        env = "RABBITMQ_BACKUP_METRICS_FILE",
        value_name = "FILE"
    )]
    pub metrics_file: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up definitions and messages; prints the new snapshot's id
    #[command(after_help = "Examples:
  rabbitmq-backup backup --repo s3://backups/prod
  rabbitmq-backup backup --before 'systemctl stop consumers' --after 'systemctl start consumers'
  rabbitmq-backup backup --live --json")]
    Backup(BackupArgs),
    /// Restore a snapshot onto this node
    #[command(after_help = "Examples:
  rabbitmq-backup restore --dry-run
  rabbitmq-backup restore latest --from-node rabbit@old-host
  rabbitmq-backup restore 20261121T0515 --exclude-routing-key 'oro.email.*' --replace-messages
  rabbitmq-backup restore --from-node rabbit@old-host --queue orders --append

  rabbitmq-backup restore latest --cluster prod --dry-run")]
    Restore(RestoreArgs),
    /// List committed snapshots
    #[command(after_help = "Examples:
  rabbitmq-backup list
  rabbitmq-backup list --from-node rabbit@old-host --json
  rabbitmq-backup list --cluster prod")]
    List(ListArgs),
    /// Show one snapshot's manifest summary
    #[command(after_help = "Examples:
  rabbitmq-backup show latest
  rabbitmq-backup show 20261121T0515 --json
  rabbitmq-backup show latest --cluster prod")]
    Show(ShowArgs),
    /// Check that a snapshot's objects are present and intact
    #[command(after_help = "Examples:
  rabbitmq-backup verify latest
  rabbitmq-backup verify --all --read-data
  rabbitmq-backup verify latest --from-node rabbit@old-host --deep
  rabbitmq-backup verify latest --cluster prod")]
    Verify(VerifyArgs),
    /// Print a snapshot's messages as JSON lines, decoded without a broker
    #[command(after_help = "Examples:
  rabbitmq-backup messages latest --from-node rabbit@old-host --limit 10
  rabbitmq-backup messages 20261121T0515 --vhost / --queue oro.default --bodies | jq .routing_key")]
    Messages(MessagesArgs),
    /// Move messages whose routing key matches out of a queue (on a running node)
    #[command(
        after_help = "Kept messages stay in place, in order, with their properties, but they are
delivered to the tool and requeued: afterwards each is marked redelivered, and on
a quorum queue its delivery count (x-delivery-count) is one higher (RabbitMQ 4.0+
dead-letters or drops a message after 20 by default). This cannot be avoided on a
running queue. When restoring, exclude in flight with a replay restore
(restore --method replay --exclude-routing-key GLOB), which touches nothing it keeps.

Examples:
  rabbitmq-backup exclude --vhost / --queue oro.default --routing-key 'oro.email.*'
  rabbitmq-backup exclude --vhost / --queue oro.default --routing-key 'oro.integration.*' --drop"
    )]
    Exclude(ExcludeArgs),
    /// Delete old snapshots by a keep-last/daily/weekly/monthly policy
    #[command(after_help = "Examples:
  rabbitmq-backup prune --keep-last 3 --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run
  rabbitmq-backup prune --keep-daily 14")]
    Prune(PruneArgs),
    /// Keep a snapshot forever (tag tier=keep; prune honours it)
    #[command(after_help = "Example:
  rabbitmq-backup pin 20261121T051500Z-3fa2c1d9")]
    Pin(PinArgs),
    /// Report whether the bucket's lifecycle rules match the retention tiers
    #[command(after_help = "Example:
  rabbitmq-backup check-repo --repo s3://backups/prod")]
    CheckRepo,
    /// Print shell completions
    #[command(after_help = "Example:
  rabbitmq-backup completions bash > /etc/bash_completion.d/rabbitmq-backup")]
    Completions(CompletionsArgs),
    /// Print the man page (roff)
    #[command(after_help = "Example:
  rabbitmq-backup man > /usr/local/share/man/man1/rabbitmq-backup.1")]
    Man,
}

/// `backup` flags.
#[derive(Debug, Args, Default, Clone)]
pub struct BackupArgs {
    /// Read the files of the running node instead of pausing it (may be inconsistent)
    #[arg(long)]
    pub live: bool,
    /// Back up even though consumers are connected
    #[arg(long)]
    pub allow_consumers: bool,
    /// Stop the broker even though it holds non-persistent messages or
    /// non-durable queues with messages, which a stop loses
    #[arg(long)]
    pub allow_transient_loss: bool,
    /// Leave the messages of quorum queues out of the snapshot (they are read from the
    /// running broker, without changing them; this saves that time)
    #[arg(long, env = "RABBITMQ_BACKUP_SKIP_QUORUM")]
    pub skip_quorum: bool,
    /// Leave the messages of streams out of the snapshot (read from the first offset
    /// to the end at backup time otherwise)
    #[arg(long, env = "RABBITMQ_BACKUP_SKIP_STREAMS")]
    pub skip_streams: bool,
    /// Shell command to run first (e.g. stop the application's consumers)
    #[arg(long, value_name = "CMD")]
    pub before: Option<String>,
    /// Shell command to run last, also after a failed backup but not after a failed
    /// --before (RABBITMQ_BACKUP_STATUS says success or failure)
    #[arg(long, value_name = "CMD")]
    pub after: Option<String>,
    /// Uncompressed MiB per chunk [default: 32]
    #[arg(long, value_name = "MIB")]
    pub chunk_size: Option<u64>,
    /// zstd level, 1-19 (higher: smaller, slower) [default: 1]
    #[arg(long, value_name = "LEVEL")]
    pub compression_level: Option<i32>,
    /// Chunks uploaded at once [default: 4]
    #[arg(long, value_name = "N")]
    pub upload_concurrency: Option<usize>,
    /// Compression threads [default: number of CPUs]
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,
    /// If this tool dies while the broker is stopped, the broker starts
    /// itself again after this many seconds without word from it [default: 300]
    #[arg(long, env = "RABBITMQ_BACKUP_PAUSE_WATCHDOG", value_name = "SECS")]
    pub pause_watchdog: Option<u64>,
}

/// `restore` flags.
#[derive(Debug, Args, Default, Clone)]
pub struct RestoreArgs {
    /// Snapshot id, unambiguous id prefix, or `latest` [default: latest]
    pub snapshot: Option<String>,
    /// Node whose snapshots to use [default: this node's name]
    #[arg(long, value_name = "NAME")]
    pub from_node: Option<String>,
    /// Move messages whose routing key matches out of every restored queue (replay: in
    /// flight; swap: after the restore)
    #[arg(long, value_name = "GLOB")]
    pub exclude_routing_key: Vec<String>,
    /// With --exclude-routing-key: drop matching messages instead of moving them to <queue>.excluded
    #[arg(long)]
    pub drop_excluded: bool,
    /// Download and verify, then print what would be done; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Import definitions only; leave messages alone
    #[arg(long)]
    pub definitions_only: bool,
    /// Replace the messages of queues on this node that the restore overwrites
    /// (replay: empty them first)
    #[arg(long)]
    pub replace_messages: bool,
    /// Replay: add the snapshot's messages to what the target queues hold
    #[arg(long, conflicts_with = "replace_messages")]
    pub append: bool,
    /// How messages get onto the node: swap (files, broker paused), replay (published
    /// into the running broker), auto (swap where possible, the quorum queues and streams
    /// replayed after it; else replay) [default: auto]
    #[arg(long, value_enum, value_name = "METHOD")]
    pub method: Option<MethodArg>,
    /// Replay only the queues of this vhost (repeatable; implies replay)
    #[arg(long, value_name = "V")]
    pub vhost: Vec<String>,
    /// Replay only this queue (repeatable; implies replay)
    #[arg(long, value_name = "Q")]
    pub queue: Vec<String>,
    /// Restore onto an older RabbitMQ than the snapshot's
    #[arg(long)]
    pub force_downgrade: bool,
    /// Keep the node's previous message store beside the data directory
    #[arg(long)]
    pub keep_old: bool,
    /// Shell command to run before definitions are imported
    #[arg(long, value_name = "CMD")]
    pub before: Option<String>,
    /// Shell command to run last, also after a failed restore but not after a failed
    /// --before (RABBITMQ_BACKUP_STATUS says success or failure)
    #[arg(long, value_name = "CMD")]
    pub after: Option<String>,
    /// Chunks downloaded at once [default: 4]
    #[arg(long, value_name = "N")]
    pub download_concurrency: Option<usize>,
    /// Finish or undo a restore that was interrupted after the broker was stopped,
    /// with the options it was started with (with --dry-run: say what it would do);
    /// with --cluster NAME: finish an interrupted cluster restore
    // The journal holds those options: a flag that would change them is
    // refused, and the config file's value for it does not apply.
    #[arg(
        long,
        conflicts_with_all = [
            "from_node",
            "exclude_routing_key",
            "drop_excluded",
            "definitions_only",
            "replace_messages",
            "force_downgrade",
            "keep_old",
            "append",
            "method",
            "vhost",
            "queue",
            "download_concurrency",
        ]
    )]
    pub resume: bool,
    /// The cluster whose snapshot to restore onto this node's cluster (or this lone node).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// With --cluster: restore a cluster snapshot missing a member's snapshot (its
    /// queues' messages are not restored)
    #[arg(long, requires = "cluster")]
    pub allow_partial: bool,
}

/// Choosing a cluster's snapshots instead of one node's.
#[derive(Debug, Args, Default, Clone)]
pub struct ClusterArgs {
    /// Cluster snapshots of this cluster (its `set_cluster_name` name, else its first
    /// member's): one snapshot per member, taken within --window of each other, named
    /// by the earliest one's id (any member's id names it too)
    #[arg(long, value_name = "NAME", conflicts_with = "from_node")]
    pub cluster: Option<String>,
    /// With --cluster: the minutes within which one round's member snapshots were taken [default: 15]
    #[arg(long, value_name = "MINUTES", requires = "cluster")]
    pub window: Option<u64>,
}

/// `restore --method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    /// Swap where possible and the whole node is restored (quorum queues and
    /// streams replayed after the swap), else replay.
    Auto,
    /// Move the message stores in while the broker is stopped.
    Swap,
    /// Publish the messages into the running broker.
    Replay,
}

/// `list` flags.
#[derive(Debug, Args, Default, Clone)]
pub struct ListArgs {
    /// Only snapshots of this node
    #[arg(long, value_name = "NAME")]
    pub from_node: Option<String>,
    /// The cluster to list.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `show` flags.
#[derive(Debug, Args, Default, Clone)]
pub struct ShowArgs {
    /// Snapshot id, unambiguous prefix, or `latest`
    pub snapshot: String,
    /// Node whose snapshots to search (required for `latest` unless it is this node)
    #[arg(long, value_name = "NAME")]
    pub from_node: Option<String>,
    /// The cluster whose snapshot to show.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `verify` flags.
#[derive(Debug, Args, Default, Clone)]
pub struct VerifyArgs {
    /// Snapshot id, unambiguous prefix, or `latest`
    // Not `required_unless_present = "all"`: `all` may come from the config
    // file, which clap's requirement rules do not see (the command checks).
    #[arg(conflicts_with = "all")]
    pub snapshot: Option<String>,
    /// Verify every snapshot
    #[arg(long)]
    pub all: bool,
    /// Download every chunk and check every digest
    #[arg(long)]
    pub read_data: bool,
    /// Also decode every message of every classic queue and compare each
    /// queue's count with the manifest (implies --read-data)
    #[arg(long)]
    pub deep: bool,
    /// Node whose snapshots to search
    #[arg(long, value_name = "NAME")]
    pub from_node: Option<String>,
    /// The cluster whose snapshots to verify.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// With --cluster: a cluster snapshot missing a member's snapshot is not a failure
    #[arg(long, requires = "cluster")]
    pub allow_partial: bool,
}

/// `messages` flags.
#[derive(Debug, Args, Default, Clone)]
pub struct MessagesArgs {
    /// Snapshot id, unambiguous prefix, or `latest`
    pub snapshot: String,
    /// Node whose snapshots to search (required for `latest` unless it is this node)
    #[arg(long, value_name = "NAME")]
    pub from_node: Option<String>,
    /// Only this vhost (repeatable)
    #[arg(long, value_name = "VHOST")]
    pub vhost: Vec<String>,
    /// Only this queue (repeatable)
    #[arg(long, value_name = "QUEUE")]
    pub queue: Vec<String>,
    /// At most N messages of each queue
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Include each message's body (a string if it is UTF-8, else base64)
    #[arg(long)]
    pub bodies: bool,
}

/// `exclude` flags.
#[derive(Debug, Args, Default, Clone)]
pub struct ExcludeArgs {
    /// Virtual host of the queue
    #[arg(long, value_name = "VHOST")]
    pub vhost: String,
    /// Queue to filter
    #[arg(long, value_name = "QUEUE")]
    pub queue: String,
    /// Glob on the routing key (`*` any text, `?` one character); repeatable
    #[arg(long, value_name = "GLOB", required = true)]
    pub routing_key: Vec<String>,
    /// Where matching messages go [default: <queue>.excluded]
    #[arg(long, value_name = "NAME", conflicts_with = "drop")]
    pub to_queue: Option<String>,
    /// Delete matching messages instead of moving them
    #[arg(long)]
    pub drop: bool,
}

/// `prune` flags.
#[derive(Debug, Args, Default, Clone)]
pub struct PruneArgs {
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Keep the newest snapshot of each of the last N days
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<usize>,
    /// Keep the newest snapshot of each of the last N ISO weeks
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<usize>,
    /// Keep the newest snapshot of each of the last N months
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<usize>,
    /// Only this node's snapshots [default: every node]
    #[arg(long, value_name = "NAME")]
    pub from_node: Option<String>,
    /// Print what would be deleted; delete nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// `pin` flags.
#[derive(Debug, Args, Default, Clone)]
pub struct PinArgs {
    /// Snapshot id or unambiguous prefix
    pub snapshot: String,
    /// Node whose snapshots to search
    #[arg(long, value_name = "NAME")]
    pub from_node: Option<String>,
}

/// `completions` flags.
#[derive(Debug, Args, Clone)]
pub struct CompletionsArgs {
    /// Shell to generate completions for
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command's help lists its own flags first and the global ones
    /// under their own heading; an option that the environment can set is
    /// never required, so usage lines never show it as such.
    #[test]
    fn help_puts_own_flags_first_and_never_requires_what_the_environment_sets() {
        let mut top = Cli::command();
        top.build();
        let globals: Vec<String> = top
            .get_arguments()
            .filter(|a| a.is_global_set())
            .map(|a| a.get_id().to_string())
            .collect();
        assert!(globals.len() > 10, "{globals:?}");
        for cmd in top.get_subcommands_mut() {
            let name = cmd.get_name().to_string();
            let usage = cmd.render_usage().to_string();
            for arg in cmd.get_arguments() {
                let id = arg.get_id().to_string();
                let heading = arg.get_help_heading();
                if globals.contains(&id) {
                    assert_eq!(heading, Some("Global options"), "{name} --{id}");
                } else {
                    assert_eq!(
                        heading, None,
                        "{name} --{id} belongs with the command's own"
                    );
                }
                if arg.get_env().is_some() {
                    assert!(!arg.is_required_set(), "{name} --{id}");
                    if let Some(long) = arg.get_long() {
                        assert!(!usage.contains(&format!("--{long} ")), "{name}: {usage}");
                    }
                }
            }
            let help = cmd.render_long_help().to_string();
            if let (Some(own), Some(global)) = (help.find("Options:"), help.find("Global options:"))
            {
                assert!(own < global, "{name}:\n{help}");
            }
        }
    }

    #[test]
    fn the_amqp_default_shown_is_the_one_used() {
        let mut top = Cli::command();
        top.build();
        let help = top
            .find_subcommand_mut("exclude")
            .unwrap()
            .render_long_help()
            .to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            help.contains("[default: the node's AMQP listener, asked of the management API]"),
            "{help}"
        );
        // Unset, the node is asked (crate::rabbit::Broker::amqp_url); a
        // listener on every address is reached at the management host.
        let args = GlobalArgs {
            management_url: Some("http://10.1.2.3:15672".into()),
            ..Default::default()
        };
        let s = crate::settings::Settings::new(&args).unwrap();
        assert_eq!(s.amqp_url, None);
        assert_eq!(s.management_host, "10.1.2.3");
    }
}
