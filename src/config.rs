//! The optional TOML configuration file. Every flag can be set there: a key
//! is the flag's long name with `_` for `-`; global flags at the top, each
//! command's flags in its section (`[backup]`, `[restore]`, `[prune]`…).
//!
//! The file's values become the defaults of the clap command before the
//! command line is parsed, so clap applies flag > environment > file >
//! built-in default and checks file values exactly as it checks flags. No
//! flag needs code here: a new one is settable in the file the day it is
//! added (`every_flag_is_settable_in_the_file` checks that it stays so).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};
use toml::{Table, Value};

use crate::cli::Cli;
use crate::error::usage;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_PATH: &str = "/etc/rabbitmq-backup.toml";

/// Flags that are two spellings of one setting: either given on the command
/// line (or in the environment) drops the file's value for the other, as
/// flags that conflict in clap do.
const ALTERNATIVES: [(&str, &str); 1] = [("password", "password_file")];

/// Why the command line could not be turned into a [`Cli`].
#[derive(Debug)]
pub enum ParseError {
    /// Clap's own outcome: usage errors, but also `--help` and `--version`.
    Clap(clap::Error),
    /// The configuration file is unreadable or wrong (a usage error).
    Config(anyhow::Error),
}

/// A configuration file's text and where it came from (for messages).
#[derive(Debug, Clone)]
pub struct FileText {
    /// The path, as shown in messages.
    pub origin: String,
    /// The TOML text.
    pub text: String,
}

/// Parses the process's command line with the configuration file (from
/// `--config`, `RABBITMQ_BACKUP_CONFIG` or [`DEFAULT_PATH`]) layered in.
pub fn parse_cli(argv: &[OsString]) -> Result<Cli, ParseError> {
    let probe = probe(Cli::command(), argv);
    let explicit = probe
        .as_ref()
        .and_then(|m| m.get_one::<PathBuf>("config").cloned());
    let file = load(explicit.as_deref()).map_err(ParseError::Config)?;
    parse_with(Cli::command(), argv, probe.as_ref(), file.as_ref())
}

/// Parses `argv` by `command` (the [`Cli`] definition) with `file` layered
/// in. `probe` is [`probe`]'s answer: which flags the command line and
/// environment set.
pub fn parse_with(
    mut command: Command,
    argv: &[OsString],
    probe: Option<&ArgMatches>,
    file: Option<&FileText>,
) -> Result<Cli, ParseError> {
    if let Some(file) = file {
        let table: Table = toml::from_str(&file.text).map_err(|e| {
            ParseError::Config(usage(format!(
                "in the configuration file {}: {e}",
                file.origin
            )))
        })?;
        command = layer(command, &table, probe).map_err(|e| {
            ParseError::Config(usage(format!(
                "in the configuration file {}: {e}",
                file.origin
            )))
        })?;
    }
    let matches = command
        .try_get_matches_from(argv)
        .map_err(ParseError::Clap)?;
    Cli::from_arg_matches(&matches).map_err(ParseError::Clap)
}

/// What the command line and environment alone say, leniently (nothing is
/// required, errors are skipped): enough to find `--config` and to know
/// which flags were given. None when even that fails (e.g. `--help`).
pub fn probe(command: Command, argv: &[OsString]) -> Option<ArgMatches> {
    fn relax(command: Command) -> Command {
        command
            .mut_args(|a| a.required(false))
            .mut_subcommands(relax)
            .subcommand_required(false)
    }
    relax(command)
        .ignore_errors(true)
        .try_get_matches_from(argv)
        .ok()
}

/// Reads `explicit` (an error if unreadable) or the default file if present.
pub fn load(explicit: Option<&Path>) -> anyhow::Result<Option<FileText>> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_PATH).is_file() => PathBuf::from(DEFAULT_PATH),
        None => return Ok(None),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        usage(format!(
            "cannot read the configuration file {}: {e}",
            path.display()
        ))
    })?;
    Ok(Some(FileText {
        origin: path.display().to_string(),
        text,
    }))
}

/// Checks configuration text against the command definitions (for the
/// sample file's test and `--config` users who want to check theirs).
pub fn check(text: &str) -> anyhow::Result<()> {
    let table: Table = toml::from_str(text)?;
    layer(Cli::command(), &table, None).map(drop)
}

/// Makes every key of `table` the default of its flag in `command`.
fn layer(command: Command, table: &Table, probe: Option<&ArgMatches>) -> anyhow::Result<Command> {
    let mut top = Vec::new();
    let mut sections = Vec::new();
    for (key, value) in table {
        match command.find_subcommand(key) {
            Some(sub) => {
                let Value::Table(section) = value else {
                    anyhow::bail!("`{key}` must be a section: [{key}]");
                };
                let given = probe.and_then(|m| m.subcommand_matches(key));
                for (name, value) in section {
                    if command
                        .get_arguments()
                        .any(|a| a.is_global_set() && a.get_id() == name)
                    {
                        anyhow::bail!(
                            "[{key}] {name}: `{name}` applies to every command; set it at the top of the file, above the sections"
                        );
                    }
                    let default = default_for(sub, name, value, given)
                        .map_err(|e| anyhow::anyhow!("[{key}] {name}: {e}"))?;
                    sections.extend(default.map(|d| (key.clone(), d)));
                }
            }
            None => {
                let default = default_for(&command, key, value, probe)
                    .map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
                top.extend(default);
            }
        }
    }
    let mut command = command;
    for (id, values) in top {
        command = command.mut_arg(id, |a| with_default(a, values));
    }
    for (section, (id, values)) in sections {
        command =
            command.mut_subcommand(section, |sub| sub.mut_arg(id, |a| with_default(a, values)));
    }
    Ok(command)
}

/// The file's value makes the flag's default, no longer required.
fn with_default(arg: Arg, values: Vec<String>) -> Arg {
    let takes_values = arg.get_action().takes_values();
    let arg = arg.default_values(values).required(false);
    // The help text must not show file values (a password, say).
    if takes_values {
        arg.hide_default_value(true)
    } else {
        arg
    }
}

/// The flag `name` of `command` and the default the file's `value` gives
/// it; None when the command line or environment gives a flag that
/// conflicts with it (the file's value then does not apply).
fn default_for(
    command: &Command,
    name: &str,
    value: &Value,
    given: Option<&ArgMatches>,
) -> anyhow::Result<Option<(String, Vec<String>)>> {
    let Some(arg) = command.get_arguments().find(|a| a.get_id() == name) else {
        let known = settable(command).join(", ");
        if command.has_subcommands() {
            let sections: Vec<&str> = command
                .get_subcommands()
                .filter(|c| !settable(c).is_empty())
                .map(|c| c.get_name())
                .collect();
            anyhow::bail!(
                "unknown setting; the top of the file takes {known}, and the sections [{}]",
                sections.join("], [")
            );
        }
        anyhow::bail!("unknown setting; this section takes {known}");
    };
    if !is_settable(arg) {
        anyhow::bail!(
            "`{name}` is not a setting: give it on the command line; the file takes {}",
            settable(command).join(", ")
        );
    }
    let values = file_values(arg, value).map_err(anyhow::Error::msg)?;
    validate(arg, &values).map_err(anyhow::Error::msg)?;
    if overridden(command, arg, given) {
        return Ok(None);
    }
    Ok(Some((name.to_string(), values)))
}

/// Whether `arg` may be set in the file: a named flag other than `--config`
/// (which names the file) and clap's `--help`/`--version`.
fn is_settable(arg: &Arg) -> bool {
    !arg.is_positional()
        && arg.get_id() != "config"
        && !matches!(
            arg.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        )
}

/// The keys a command's part of the file takes.
fn settable(command: &Command) -> Vec<String> {
    command
        .get_arguments()
        .filter(|a| is_settable(a))
        .map(|a| a.get_id().to_string())
        .collect()
}

/// True when the command line or environment sets a flag that conflicts
/// with `arg` (or is its alternative spelling): the file then stays silent.
fn overridden(command: &Command, arg: &Arg, given: Option<&ArgMatches>) -> bool {
    let Some(given) = given else { return false };
    let explicit = |id: &str| {
        matches!(
            given.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let id = arg.get_id().as_str();
    let alternatives = ALTERNATIVES.iter().filter_map(|&(a, b)| match id {
        _ if id == a => Some(b),
        _ if id == b => Some(a),
        _ => None,
    });
    let conflicts: Vec<String> = command
        .get_arguments()
        .filter(|other| {
            other.get_id() != arg.get_id()
                && command
                    .get_arg_conflicts_with(other)
                    .iter()
                    .any(|c| c.get_id() == arg.get_id())
        })
        .map(|other| other.get_id().to_string())
        .chain(
            command
                .get_arg_conflicts_with(arg)
                .iter()
                .map(|c| c.get_id().to_string()),
        )
        .collect();
    conflicts
        .iter()
        .map(String::as_str)
        .chain(alternatives)
        .any(explicit)
}

/// The file's value as the strings the flag would take on the command line.
fn file_values(arg: &Arg, value: &Value) -> Result<Vec<String>, String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("expected a single value, not {}", other.type_str())),
    };
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, Value::Boolean(b)) => Ok(vec![b.to_string()]),
        (ArgAction::SetTrue, other) => {
            Err(format!("expected true or false, not {}", other.type_str()))
        }
        (ArgAction::Count, Value::Integer(n)) if (0..=255).contains(n) => Ok(vec![n.to_string()]),
        (ArgAction::Count, _) => Err("expected a number from 0 to 255".into()),
        (ArgAction::Append, Value::Array(items)) => items.iter().map(scalar).collect(),
        (_, Value::Array(_)) => Err("takes one value, not a list".into()),
        (ArgAction::Set | ArgAction::Append, v) => Ok(vec![scalar(v)?]),
        (action, _) => Err(format!("cannot be set in the file ({action:?})")),
    }
}

/// Runs the flag's own value parser over each value, so a bad file value is
/// reported with the file's name rather than as a bad default.
fn validate(arg: &Arg, values: &[String]) -> Result<(), String> {
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::Count) {
        return Ok(());
    }
    let long = arg.get_long().unwrap_or("value").to_string();
    let mut probe = Arg::new("value")
        .long(long.clone())
        .action(ArgAction::Append)
        .value_parser(arg.get_value_parser().clone());
    if let Some(names) = arg.get_value_names() {
        probe = probe.value_names(names.to_vec());
    }
    let mut argv: Vec<String> = vec!["config".into()];
    for v in values {
        argv.push(format!("--{long}={v}"));
    }
    Command::new("config")
        .arg(probe)
        .try_get_matches_from(argv)
        .map(drop)
        .map_err(|e| {
            // Clap's message without its "try --help" advice.
            let text = e.to_string();
            let lines: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            lines.join(" ").trim_start_matches("error: ").to_string()
        })
}

#[cfg(test)]
mod tests;
