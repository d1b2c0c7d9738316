//! Validated settings: the parsed command line (flags, environment and the
//! config file, merged by clap: see [`crate::config`]) with the built-in
//! defaults applied, checked before any I/O.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cli::{BackupArgs, GlobalArgs, LogFormat, MessagesArgs, RestoreArgs};
use crate::crypt::{Identities, Recipients};
use crate::error::usage;
use crate::repo::retry::RetryPolicy;
use crate::repo::s3::Addressing;
use crate::repo::url::RepoUrl;

/// A secret that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Warnings and errors.
    Quiet,
    /// Progress of each step.
    Normal,
    /// Details.
    Verbose,
    /// Debug traces.
    Debug,
}

/// Settings shared by every command.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where snapshots are stored.
    pub repo: RepoUrl,
    /// S3 URL style.
    pub s3_addressing: Addressing,
    /// Storage retry policy.
    pub retry: RetryPolicy,
    /// How long to wait for an S3 response.
    pub s3_timeout: std::time::Duration,
    /// Management API base URL.
    pub management_url: String,
    /// Management API user.
    pub username: String,
    /// Management API password.
    pub password: Secret,
    /// AMQP URL without credentials, for `exclude`, if given; otherwise the
    /// node is asked for its listener.
    pub amqp_url: Option<String>,
    /// The management URL's host (where a listener on every address is reached).
    pub management_host: String,
    /// Node name for rabbitmqctl, if given.
    pub node: Option<String>,
    /// The rabbitmqctl program.
    pub rabbitmqctl: PathBuf,
    /// Data directory override.
    pub data_dir: Option<PathBuf>,
    /// Whom backups are encrypted to; `None`: plain backups.
    pub encrypt_to: Option<Arc<Recipients>>,
    /// The identity that reads encrypted snapshots (never printed).
    pub identity: Option<Arc<Identities>>,
    /// Result as JSON.
    pub json: bool,
    /// Log line format.
    pub log_format: LogFormat,
    /// Log verbosity.
    pub verbosity: Verbosity,
    /// Prometheus textfile output.
    pub metrics_file: Option<PathBuf>,
    /// `RABBITMQ_ERLANG_COOKIE`, for Erlang distribution (as rabbitmqctl).
    pub erlang_cookie: Option<Secret>,
    /// `HOME`, where the cookie file is looked for otherwise.
    pub home: Option<PathBuf>,
}

impl Settings {
    /// Merges and validates the global settings.
    pub fn new(args: &GlobalArgs) -> anyhow::Result<Settings> {
        let repo_text = args.repo.as_deref().unwrap_or("./rabbitmq-backups");
        let repo = RepoUrl::parse(repo_text)?;

        let management_url = args
            .management_url
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:15672".into());
        let host = management_host(&management_url)?;

        let username = args.username.clone().unwrap_or_else(|| "guest".into());
        let password = match (&args.password, &args.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(path)) => read_secret_file(path)?,
            (None, None) => "guest".into(),
        };

        let amqp_url = args.amqp_url.clone();
        if let Some(url) = &amqp_url
            && !(url.starts_with("amqp://") || url.starts_with("amqps://"))
        {
            return Err(usage(format!(
                "--amqp-url must start with amqp:// or amqps://, not {:?}",
                redact_url(url)
            )));
        }

        let node = args.node.clone();
        if let Some(node) = &node {
            crate::repo::check_node_name(node)?;
        }
        let retries = args.retries.unwrap_or(RetryPolicy::default().attempts);
        if retries == 0 {
            return Err(usage("--retries must be at least 1"));
        }
        let s3_timeout = args.s3_timeout.unwrap_or(60);
        if !(1..=3600).contains(&s3_timeout) {
            return Err(usage(format!(
                "--s3-timeout must be 1 to 3600 seconds, not {s3_timeout}"
            )));
        }
        let encrypt_to = Recipients::parse(&args.encrypt_to)?.map(Arc::new);
        let identity = match args.identity.as_ref() {
            Some(path) => Some(Arc::new(Identities::load(path)?)),
            None => None,
        };
        let verbosity = match (args.quiet, args.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            (false, 1) => Verbosity::Verbose,
            (false, _) => Verbosity::Debug,
        };
        Ok(Settings {
            repo,
            s3_addressing: args.s3_addressing.unwrap_or(Addressing::Auto),
            retry: RetryPolicy {
                attempts: retries,
                ..RetryPolicy::default()
            },
            s3_timeout: std::time::Duration::from_secs(s3_timeout),
            management_url,
            username,
            password: Secret::new(password),
            amqp_url,
            management_host: host,
            node,
            rabbitmqctl: args
                .rabbitmqctl
                .clone()
                .unwrap_or_else(|| "rabbitmqctl".into()),
            data_dir: args.data_dir.clone(),
            encrypt_to,
            identity,
            json: args.json,
            log_format: args.log_format.unwrap_or(LogFormat::Text),
            verbosity,
            metrics_file: args.metrics_file.clone(),
            erlang_cookie: std::env::var("RABBITMQ_ERLANG_COOKIE")
                .ok()
                .map(Secret::new),
            home: std::env::var_os("HOME").map(PathBuf::from),
        })
    }
}

/// The host part of the management URL (for the default AMQP URL).
fn management_host(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            usage(format!(
                "--management-url must start with http:// or https://, not {url:?}"
            ))
        })?;
    let authority = rest.split('/').next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host = if host_port.starts_with('[') {
        host_port
            .split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or("").to_string()
    };
    if host.is_empty() {
        return Err(usage(format!("--management-url {url:?} names no host")));
    }
    Ok(host)
}

fn read_secret_file(path: &PathBuf) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        usage(format!(
            "cannot read the password file {}: {e}",
            path.display()
        ))
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// A URL with any `user:password@` part replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Validated `backup` settings.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// Read the running node's files.
    pub live: bool,
    /// Go on with consumers connected.
    pub allow_consumers: bool,
    /// Go on although a stop loses transient messages.
    pub allow_transient_loss: bool,
    /// Leave quorum queues' messages out.
    pub skip_quorum: bool,
    /// Leave streams' messages out.
    pub skip_streams: bool,
    /// Hook run first.
    pub before: Option<String>,
    /// Hook run last.
    pub after: Option<String>,
    /// Uncompressed bytes per chunk.
    pub chunk_size: u64,
    /// zstd level.
    pub level: i32,
    /// Parallel uploads.
    pub upload_concurrency: usize,
    /// Compression threads.
    pub threads: u32,
    /// How long the broker stays stopped without word from the tool.
    pub pause_watchdog: std::time::Duration,
}

/// The number of CPUs (at least 1).
pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl BackupSettings {
    /// Validates `backup` flags (the file's `[backup]` section included).
    pub fn new(args: &BackupArgs) -> anyhow::Result<BackupSettings> {
        let chunk_mib = args.chunk_size.unwrap_or(32);
        if !(1..=1024).contains(&chunk_mib) {
            return Err(usage(format!(
                "--chunk-size must be 1 to 1024 MiB, not {chunk_mib}"
            )));
        }
        // Level 1 compressed message stores as well as level 3 in our
        // measurements (BENCHMARKS.md) at 60% of the CPU, which the broker's
        // host shares with the broker.
        let level = args.compression_level.unwrap_or(1);
        if !(1..=19).contains(&level) {
            return Err(usage(format!(
                "--compression-level must be 1 to 19, not {level}"
            )));
        }
        let upload_concurrency = args.upload_concurrency.unwrap_or(4);
        if !(1..=64).contains(&upload_concurrency) {
            return Err(usage(format!(
                "--upload-concurrency must be 1 to 64, not {upload_concurrency}"
            )));
        }
        let threads = args.threads.unwrap_or(cpus() as u32);
        if !(1..=256).contains(&threads) {
            return Err(usage(format!("--threads must be 1 to 256, not {threads}")));
        }
        let watchdog = args.pause_watchdog.unwrap_or(300);
        if !(3..=86_400).contains(&watchdog) {
            return Err(usage(format!(
                "--pause-watchdog must be 3 to 86400 seconds, not {watchdog}"
            )));
        }
        Ok(BackupSettings {
            pause_watchdog: std::time::Duration::from_secs(watchdog),
            live: args.live,
            allow_consumers: args.allow_consumers,
            allow_transient_loss: args.allow_transient_loss,
            skip_quorum: args.skip_quorum,
            skip_streams: args.skip_streams,
            before: args.before.clone(),
            after: args.after.clone(),
            chunk_size: chunk_mib << 20,
            level,
            upload_concurrency,
            threads,
        })
    }
}

/// Validated `restore` settings.
#[derive(Debug, Clone)]
pub struct RestoreSettings {
    /// Snapshot spec (`latest`, id or prefix), if given.
    pub snapshot: Option<String>,
    /// Source node name.
    pub from_node: Option<String>,
    /// Routing-key globs to exclude after the restore.
    pub exclude: Option<crate::exclude::Matcher>,
    /// Drop excluded messages instead of moving them.
    pub drop_excluded: bool,
    /// Change nothing.
    pub dry_run: bool,
    /// Definitions only.
    pub definitions_only: bool,
    /// Overwrite queues that hold messages.
    pub replace_messages: bool,
    /// Allow a RabbitMQ downgrade.
    pub force_downgrade: bool,
    /// Keep the previous message store.
    pub keep_old: bool,
    /// Hook run before definitions are imported.
    pub before: Option<String>,
    /// Hook run last.
    pub after: Option<String>,
    /// Parallel downloads.
    pub download_concurrency: usize,
    /// Resume an interrupted restore.
    pub resume: bool,
    /// `--method` (auto when not given).
    pub method: crate::cli::MethodArg,
    /// `--vhost`: only these vhosts (replay).
    pub vhosts: Vec<String>,
    /// `--queue`: only these queues (replay).
    pub queues: Vec<String>,
    /// `--append`: add to non-empty target queues (replay).
    pub append: bool,
    /// `--cluster`: restore a cluster snapshot of this cluster.
    pub cluster: Option<crate::cluster::Selection>,
    /// `--allow-partial`: a cluster snapshot may lack members.
    pub allow_partial: bool,
}

impl RestoreSettings {
    /// A subset of the snapshot is selected (`--vhost`, `--queue`).
    pub fn is_subset(&self) -> bool {
        !self.vhosts.is_empty() || !self.queues.is_empty()
    }

    /// The queue is selected.
    pub fn selects(&self, vhost: &str, queue: &str) -> bool {
        crate::selection::selects(&self.vhosts, &self.queues, vhost, queue)
    }
}

impl RestoreSettings {
    /// Validates `restore` flags (the file's `[restore]` section included).
    /// The flags `--resume` cannot change conflict with it in clap, so that
    /// the command line refuses them and the file's values do not apply.
    pub fn new(args: &RestoreArgs) -> anyhow::Result<RestoreSettings> {
        if let Some(node) = &args.from_node {
            crate::repo::check_node_name(node)?;
        }
        let download_concurrency = args.download_concurrency.unwrap_or(4);
        if !(1..=64).contains(&download_concurrency) {
            return Err(usage(format!(
                "--download-concurrency must be 1 to 64, not {download_concurrency}"
            )));
        }
        if args.definitions_only && !args.exclude_routing_key.is_empty() {
            return Err(usage(
                "--exclude-routing-key has nothing to do with --definitions-only",
            ));
        }
        let subset = !args.vhost.is_empty() || !args.queue.is_empty();
        if args.method == Some(crate::cli::MethodArg::Swap) && (subset || args.append) {
            return Err(usage(format!(
                "{} needs --method replay (a swap restores every vhost's whole store)",
                if subset {
                    "--vhost/--queue"
                } else {
                    "--append"
                }
            )));
        }
        if args.definitions_only && (subset || args.method.is_some()) {
            return Err(usage(
                "--definitions-only restores no message: --method, --vhost and --queue do not apply",
            ));
        }
        if args.drop_excluded && args.exclude_routing_key.is_empty() {
            return Err(usage("--drop-excluded needs --exclude-routing-key"));
        }
        let cluster = crate::cluster::Selection::new(&args.cluster)?;
        let exclude = if args.exclude_routing_key.is_empty() {
            None
        } else {
            Some(crate::exclude::Matcher::new(&args.exclude_routing_key)?)
        };
        Ok(RestoreSettings {
            snapshot: args.snapshot.clone(),
            from_node: args.from_node.clone(),
            exclude,
            drop_excluded: args.drop_excluded,
            dry_run: args.dry_run,
            definitions_only: args.definitions_only,
            replace_messages: args.replace_messages,
            force_downgrade: args.force_downgrade,
            keep_old: args.keep_old,
            before: args.before.clone(),
            after: args.after.clone(),
            download_concurrency,
            resume: args.resume,
            method: args.method.unwrap_or(crate::cli::MethodArg::Auto),
            vhosts: args.vhost.clone(),
            queues: args.queue.clone(),
            append: args.append,
            cluster,
            allow_partial: args.allow_partial,
        })
    }
}

/// Validated `messages` settings.
#[derive(Debug, Clone)]
pub struct MessagesSettings {
    /// Snapshot spec (`latest`, id or prefix).
    pub snapshot: String,
    /// Source node name.
    pub from_node: Option<String>,
    /// Only these vhosts (all if empty).
    pub vhosts: Vec<String>,
    /// Only these queues (all if empty).
    pub queues: Vec<String>,
    /// At most this many messages per queue.
    pub limit: Option<u64>,
    /// Print bodies.
    pub bodies: bool,
}

impl MessagesSettings {
    /// Validates `messages` flags.
    pub fn new(args: &MessagesArgs) -> anyhow::Result<MessagesSettings> {
        if let Some(node) = &args.from_node {
            crate::repo::check_node_name(node)?;
        }
        if args.limit == Some(0) {
            return Err(usage("--limit must be at least 1"));
        }
        if let Some(q) = args.queue.iter().find(|q| q.is_empty() || q.len() > 255) {
            return Err(usage(format!(
                "--queue {q:?} is not a queue name (1 to 255 bytes)"
            )));
        }
        Ok(MessagesSettings {
            snapshot: args.snapshot.clone(),
            from_node: args.from_node.clone(),
            vhosts: args.vhost.clone(),
            queues: args.queue.clone(),
            limit: args.limit,
            bodies: args.bodies,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Kind, kind_of};

    #[test]
    fn restore_methods_and_their_selections() {
        let make = |args: RestoreArgs| RestoreSettings::new(&args);
        let auto = make(RestoreArgs::default()).unwrap();
        assert_eq!(auto.method, crate::cli::MethodArg::Auto);
        assert!(!auto.is_subset());
        let one = make(RestoreArgs {
            queue: vec!["q".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(one.is_subset() && one.selects("any", "q") && !one.selects("any", "r"));
        for args in [
            RestoreArgs {
                method: Some(crate::cli::MethodArg::Swap),
                vhost: vec!["v".into()],
                ..Default::default()
            },
            RestoreArgs {
                method: Some(crate::cli::MethodArg::Swap),
                append: true,
                ..Default::default()
            },
            RestoreArgs {
                definitions_only: true,
                queue: vec!["q".into()],
                ..Default::default()
            },
        ] {
            let e = make(args.clone()).unwrap_err();
            assert_eq!(kind_of(&e), Kind::Usage, "{args:?}: {e}");
        }
    }

    #[test]
    fn messages_bounds() {
        let ok = MessagesSettings::new(&MessagesArgs {
            snapshot: "latest".into(),
            limit: Some(5),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.limit, Some(5));
        for args in [
            MessagesArgs {
                limit: Some(0),
                ..Default::default()
            },
            MessagesArgs {
                queue: vec![String::new()],
                ..Default::default()
            },
            MessagesArgs {
                from_node: Some("a/b".into()),
                ..Default::default()
            },
        ] {
            assert_eq!(
                kind_of(&MessagesSettings::new(&args).unwrap_err()),
                Kind::Usage
            );
        }
    }

    #[test]
    fn defaults() {
        let s = Settings::new(&GlobalArgs::default()).unwrap();
        assert_eq!(s.repo, RepoUrl::parse("./rabbitmq-backups").unwrap());
        assert_eq!(s.management_url, "http://127.0.0.1:15672");
        assert_eq!(s.username, "guest");
        assert_eq!(s.password.expose(), "guest");
        assert_eq!(s.amqp_url, None, "asked of the node");
        assert_eq!(s.management_host, "127.0.0.1");
    }

    #[test]
    fn password_file_is_read_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        let args = GlobalArgs {
            password_file: Some(path),
            ..Default::default()
        };
        let s = Settings::new(&args).unwrap();
        assert_eq!(s.password.expose(), "s3cr3t");
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }

    #[test]
    fn recipients_and_identity_come_from_flags_or_the_file_and_are_checked_first() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public, secret) = crate::crypt::tests::keypair(dir.path(), "key.txt");
        let (_, other, _) = crate::crypt::tests::keypair(dir.path(), "other.txt");
        let file = crate::config::FileText {
            origin: "test.toml".into(),
            text: format!(
                "encrypt_to = [\"{other}\"]\nidentity = \"{}\"",
                key.display()
            ),
        };
        let global = |argv: &[&str]| {
            let argv: Vec<std::ffi::OsString> = argv.iter().map(Into::into).collect();
            let command = <crate::cli::Cli as clap::CommandFactory>::command();
            let probe = crate::config::probe(command.clone(), &argv);
            crate::config::parse_with(command, &argv, probe.as_ref(), Some(&file))
                .unwrap()
                .global
        };
        let s = Settings::new(&global(&["rabbitmq-backup", "list"])).unwrap();
        assert_eq!(
            s.encrypt_to.as_ref().unwrap().names(),
            std::slice::from_ref(&other)
        );
        assert_eq!(
            s.identity.as_ref().unwrap().public_keys(),
            std::slice::from_ref(&public)
        );
        assert!(!format!("{s:?}").contains(&secret));
        let both = format!("{public},{other}");
        let args = global(&["rabbitmq-backup", "list", "--encrypt-to", &both]);
        let s = Settings::new(&args).unwrap();
        assert_eq!(s.encrypt_to.unwrap().names(), [public, other]);
        for args in [
            GlobalArgs {
                encrypt_to: vec!["age1wrong".into()],
                ..Default::default()
            },
            GlobalArgs {
                identity: Some(dir.path().join("nonexistent")),
                ..Default::default()
            },
        ] {
            let err = Settings::new(&args).unwrap_err();
            assert_eq!(kind_of(&err), Kind::Usage, "{err}");
        }
    }

    #[test]
    fn bad_values_are_usage_errors() {
        let bad = [
            GlobalArgs {
                management_url: Some("localhost:15672".into()),
                ..Default::default()
            },
            GlobalArgs {
                repo: Some("gs://x".into()),
                ..Default::default()
            },
            GlobalArgs {
                node: Some("a/b".into()),
                ..Default::default()
            },
            GlobalArgs {
                password_file: Some("/nonexistent/pw".into()),
                ..Default::default()
            },
        ];
        for args in bad {
            let err = Settings::new(&args).unwrap_err();
            assert_eq!(kind_of(&err), Kind::Usage, "{err}");
        }
    }

    #[test]
    fn backup_bounds() {
        let ok = BackupSettings::new(&BackupArgs::default()).unwrap();
        assert_eq!(ok.chunk_size, 32 << 20);
        for args in [
            BackupArgs {
                chunk_size: Some(0),
                ..Default::default()
            },
            BackupArgs {
                compression_level: Some(30),
                ..Default::default()
            },
            BackupArgs {
                upload_concurrency: Some(0),
                ..Default::default()
            },
        ] {
            assert_eq!(
                kind_of(&BackupSettings::new(&args).unwrap_err()),
                Kind::Usage
            );
        }
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("amqp://u:p@h:5672/"), "amqp://***@h:5672/");
        assert_eq!(redact_url("amqp://h:5672/"), "amqp://h:5672/");
        assert_eq!(
            management_host("http://user@10.0.0.5:15672/").unwrap(),
            "10.0.0.5"
        );
    }
}
