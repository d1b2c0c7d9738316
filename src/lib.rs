//! rabbitmq-backup: back up a RabbitMQ node's definitions and message store
//! to S3-compatible storage or a local directory, and restore it.
//!
//! `main` calls [`run`]; arguments become a validated [`settings::Settings`]
//! before any I/O, and errors become exit codes in one place ([`error`]).

pub mod archive;
pub mod capture;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod crypt;
pub mod error;
pub mod etf;
pub mod exclude;
pub mod failpoint;
pub mod hooks;
pub mod logging;
pub mod logical;
pub mod message;
pub mod metrics;
pub mod output;
pub mod progress;
pub mod rabbit;
pub mod replay;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod selection;
pub mod settings;
pub mod signals;
pub mod staging;
pub mod store;
pub mod tls;
pub mod transfer;

use clap::CommandFactory;

use cli::{Cli, Command};
use output::Output;
use settings::{BackupSettings, MessagesSettings, RestoreSettings, Settings};

/// Runs the command line and returns the process exit code.
pub fn run() -> u8 {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match config::parse_cli(&argv) {
        Ok(cli) => cli,
        Err(config::ParseError::Config(err)) => {
            let message = error::render(&err);
            eprintln!("error: {message}");
            if std::env::args().any(|a| a == "--json") {
                print_json_error(error::kind_of(&err), &message);
            }
            return error::kind_of(&err).code();
        }
        Err(config::ParseError::Clap(e)) => {
            // --help and --version are "errors" that print and exit 0.
            let _ = e.print();
            if !e.use_stderr() {
                return 0;
            }
            if std::env::args().any(|a| a == "--json") {
                let message = e.to_string();
                let first = message.lines().next().unwrap_or("");
                print_json_error(error::Kind::Usage, first.trim_start_matches("error: "));
            }
            return error::Kind::Usage.code();
        }
    };
    let json = cli.global.json;
    match execute(cli) {
        Ok(()) => 0,
        Err(err) => {
            let kind = error::kind_of(&err);
            let message = error::render(&err);
            tracing::debug!("{err:?}");
            eprintln!("error: {message}");
            if json {
                print_json_error(kind, &message);
            }
            kind.code()
        }
    }
}

/// The `--json` error document on standard output.
fn print_json_error(kind: error::Kind, message: &str) {
    let doc = serde_json::json!({
        "error": { "kind": kind.name(), "exit_code": kind.code(), "message": message }
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    // Commands that need no settings at all.
    match &cli.command {
        Command::Completions(args) => {
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "rabbitmq-backup",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            return Ok(());
        }
        _ => {}
    }
    let settings = Settings::new(&cli.global)?;
    logging::init(settings.log_format, settings.verbosity);
    tls::install_default_provider();
    let out = Output::new(settings.json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        signals::install();
        match &cli.command {
            Command::Backup(args) => {
                let args = BackupSettings::new(args)?;
                let started = std::time::Instant::now();
                let result = commands::backup::run(&settings, &args, out).await;
                if let Some(path) = &settings.metrics_file {
                    let node = match &result {
                        Ok(report) => report.node.clone(),
                        Err(_) => settings.node.clone().unwrap_or_else(|| "unknown".into()),
                    };
                    let seconds = started.elapsed().as_secs_f64();
                    if let Err(e) = metrics::write(path, &node, result.as_ref().ok(), seconds) {
                        tracing::error!("{e:#}");
                    }
                }
                result.map(drop)
            }
            Command::List(args) => match cluster::Selection::new(&args.cluster)? {
                Some(selection) => commands::cluster::list(&settings, &selection, out).await,
                None => commands::list::list(&settings, args.from_node.as_deref(), out).await,
            },
            Command::Show(args) => match cluster::Selection::new(&args.cluster)? {
                Some(selection) => {
                    commands::cluster::show(&settings, &selection, &args.snapshot, out).await
                }
                None => {
                    commands::list::show(&settings, &args.snapshot, args.from_node.as_deref(), out)
                        .await
                }
            },
            Command::Restore(args) => {
                let args = RestoreSettings::new(args)?;
                match &args.cluster {
                    Some(selection) => {
                        commands::restore_cluster::run(&settings, &args, selection, out)
                            .await
                            .map(drop)
                    }
                    None => commands::restore::run(&settings, &args, out)
                        .await
                        .map(drop),
                }
            }
            Command::Exclude(args) => commands::exclude::run(&settings, args, out).await.map(drop),
            Command::Verify(args) => commands::verify::run(&settings, args, out).await,
            Command::Messages(args) => {
                let args = MessagesSettings::new(args)?;
                commands::messages::run(&settings, &args).await
            }
            Command::Prune(args) => commands::prune::run(&settings, args, out).await.map(drop),
            Command::Pin(args) => {
                commands::pin::run(&settings, &args.snapshot, args.from_node.as_deref(), out)
                    .await
                    .map(drop)
            }
            Command::CheckRepo => commands::check_repo::run(&settings, out).await.map(drop),
            // Printed above, before any settings were needed.
            Command::Completions(_) | Command::Man => Ok(()),
        }
    })
}
