//! The configuration file against the command definitions.

use super::*;

/// The command definitions without environment variables, so that the
/// environment of the test run cannot change what is compared.
fn command() -> Command {
    fn no_env(command: Command) -> Command {
        command
            .mut_args(|a| a.env(None::<&str>))
            .mut_subcommands(no_env)
    }
    no_env(Cli::command())
}

fn argv(args: &[String]) -> Vec<OsString> {
    std::iter::once("rabbitmq-backup".to_string())
        .chain(args.iter().cloned())
        .map(OsString::from)
        .collect()
}

/// Parses `args` with `file` (TOML text) as the configuration file.
fn parse(args: &[String], file: Option<&str>) -> Result<Cli, ParseError> {
    let argv = argv(args);
    let probe = probe(command(), &argv);
    let file = file.map(|text| FileText {
        origin: "test.toml".into(),
        text: text.into(),
    });
    parse_with(command(), &argv, probe.as_ref(), file.as_ref())
}

fn parsed(args: &[String], file: Option<&str>) -> String {
    match parse(args, file) {
        Ok(cli) => format!("{cli:?}"),
        Err(e) => panic!("{args:?} with {file:?}: {e:?}"),
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// A value the flag's parser accepts: its last possible value, or a number
/// (which every string, path and number flag takes).
fn sample(arg: &Arg, n: u8) -> String {
    match arg.get_possible_values().last() {
        Some(v) => v.get_name().to_string(),
        None => format!("{}", 7 + n),
    }
}

/// Whether `a` and `b`, both of `command`, conflict, declared either way.
fn conflict(command: &Command, a: &Arg, b: &Arg) -> bool {
    let own = |x: &Arg| command.get_arguments().any(|a| a.get_id() == x.get_id());
    if !own(a) || !own(b) {
        return false;
    }
    let with = |x: &Arg, y: &Arg| {
        command
            .get_arg_conflicts_with(x)
            .iter()
            .any(|c| c.get_id() == y.get_id())
    };
    with(a, b) || with(b, a)
}

/// The command line that `sub` needs anyway (its positionals and required
/// flags), leaving out `tested` and whatever conflicts with it.
fn base(sub: &Command, tested: &Arg) -> Vec<String> {
    let mut args = vec![sub.get_name().to_string()];
    for arg in sub.get_arguments() {
        if arg.get_id() == tested.get_id() || conflict(sub, arg, tested) {
            continue;
        }
        if arg.is_positional() {
            args.push(sample(arg, 0));
        } else if arg.is_required_set() {
            args.push(format!("--{}", arg.get_long().unwrap()));
            args.push(sample(arg, 0));
        }
    }
    args
}

/// `base` with the flags that `flag` requires (`--window` needs
/// `--cluster`), as clap names them when they are missing.
fn requirements(mut base: Vec<String>, flag: &[String]) -> Vec<String> {
    for _ in 0..4 {
        let with_flag: Vec<String> = base.iter().cloned().chain(flag.iter().cloned()).collect();
        let Err(ParseError::Clap(e)) = parse(&with_flag, None) else {
            break;
        };
        if e.kind() != clap::error::ErrorKind::MissingRequiredArgument {
            break;
        }
        let Some(clap::error::ContextValue::Strings(missing)) =
            e.get(clap::error::ContextKind::InvalidArg)
        else {
            break;
        };
        for m in missing {
            let long = m.split(' ').next().unwrap_or(m);
            base.push(long.to_string());
            if m.contains('<') {
                base.push("7".into());
            }
        }
    }
    base
}

/// The flag on the command line, and the same setting as a TOML line.
fn flag_and_line(arg: &Arg) -> (Vec<String>, String) {
    let long = format!("--{}", arg.get_long().expect("a named flag"));
    let id = arg.get_id();
    match arg.get_action() {
        ArgAction::SetTrue => (vec![long], format!("{id} = true")),
        ArgAction::Count => (vec![long.clone(), long], format!("{id} = 2")),
        ArgAction::Append => {
            let (a, b) = (sample(arg, 1), sample(arg, 2));
            (
                vec![long.clone(), a.clone(), long, b.clone()],
                format!("{id} = [{a:?}, {b:?}]"),
            )
        }
        _ => {
            let v = sample(arg, 1);
            (vec![long, v.clone()], format!("{id} = {v:?}"))
        }
    }
}

/// Every flag of every command, enumerated from the clap definitions, is
/// accepted in the file and means there exactly what it means as a flag.
/// A flag added later that the file cannot set fails here.
#[test]
fn every_flag_is_settable_in_the_file() {
    let root = command();
    let mut checked = Vec::new();
    // Global flags, on a command that needs nothing else.
    let list = root.find_subcommand("list").unwrap().clone();
    for arg in root.get_arguments().filter(|a| is_settable(a)) {
        let (flag, line) = flag_and_line(arg);
        let base = base(&list, arg);
        let with_flag: Vec<String> = base.iter().cloned().chain(flag).collect();
        let expected = parsed(&with_flag, None);
        assert_eq!(parsed(&base, Some(&line)), expected, "`{line}` at the top");
        assert_ne!(parsed(&base, None), expected, "`{line}` changes nothing");
        checked.push(arg.get_id().to_string());
    }
    for sub in root.get_subcommands() {
        for arg in sub.get_arguments().filter(|a| is_settable(a)) {
            let (flag, line) = flag_and_line(arg);
            let base = requirements(base(sub, arg), &flag);
            let with_flag: Vec<String> = base.iter().cloned().chain(flag).collect();
            let expected = parsed(&with_flag, None);
            let file = format!("[{}]\n{line}\n", sub.get_name());
            assert_eq!(parsed(&base, Some(&file)), expected, "{file}");
            // Without the file the setting is absent (or required).
            if let Ok(without) = parse(&base, None) {
                assert_ne!(format!("{without:?}"), expected, "{file} changes nothing");
            }
            checked.push(format!("{}.{}", sub.get_name(), arg.get_id()));
        }
    }
    // The enumeration found the flags the issue named, and many more.
    for flag in [
        "repo",
        "json",
        "verbose",
        "backup.pause_watchdog",
        "backup.allow_transient_loss",
        "restore.exclude_routing_key",
        "prune.keep_daily",
        "exclude.vhost",
    ] {
        assert!(checked.iter().any(|c| c == flag), "{flag} in {checked:?}");
    }
    assert!(checked.len() > 50, "{}", checked.len());
}

#[test]
fn flags_and_the_environment_beat_the_file() {
    let file = "repo = \"/from-file\"\n[backup]\nchunk_size = 16\n";
    let cli = parse(&strings(&["backup", "--chunk-size", "8"]), Some(file)).unwrap();
    assert_eq!(cli.global.repo.as_deref(), Some("/from-file"));
    let crate::cli::Command::Backup(args) = cli.command else {
        panic!()
    };
    assert_eq!(args.chunk_size, Some(8));
    // An environment variable beats the file (PATH: set in every test run).
    let with_env = command().mut_arg("repo", |a| a.env("PATH"));
    let argv = argv(&strings(&["list"]));
    let text = FileText {
        origin: "t".into(),
        text: file.into(),
    };
    let cli = parse_with(with_env, &argv, None, Some(&text)).unwrap();
    assert_eq!(cli.global.repo, std::env::var("PATH").ok());
}

#[test]
fn a_flag_drops_the_file_value_it_conflicts_with() {
    // --password-file on the command line beats the file's password ...
    let file = "password = \"from-file\"\n";
    let cli = parse(&strings(&["list", "--password-file", "/pw"]), Some(file)).unwrap();
    assert_eq!(cli.global.password, None);
    assert_eq!(cli.global.password_file.as_deref(), Some(Path::new("/pw")));
    // ... and -v the file's quiet (they conflict in clap).
    let cli = parse(&strings(&["list", "-v"]), Some("quiet = true\n")).unwrap();
    assert!(!cli.global.quiet);
    assert_eq!(cli.global.verbose, 1);
    // A global flag given after the command counts too.
    let cli = parse(
        &strings(&["list", "--password", "x"]),
        Some("password_file = \"/pw\"\n"),
    )
    .unwrap();
    assert_eq!(cli.global.password_file, None);
}

#[test]
fn a_required_flag_can_come_from_the_file() {
    let file = "[exclude]\nvhost = \"/\"\nqueue = \"q\"\nrouting_key = [\"a.*\"]\n";
    let cli = parse(&strings(&["exclude"]), Some(file)).unwrap();
    let crate::cli::Command::Exclude(args) = cli.command else {
        panic!()
    };
    assert_eq!((args.vhost.as_str(), args.queue.as_str()), ("/", "q"));
    assert_eq!(args.routing_key, vec!["a.*"]);
    assert!(matches!(
        parse(&strings(&["exclude"]), None),
        Err(ParseError::Clap(_))
    ));
}

/// Unknown keys are errors, not warnings: a misspelt `alow_consumers` would
/// otherwise let a cron job run for months with settings nobody chose.
#[test]
fn wrong_files_are_usage_errors_naming_the_key() {
    for (file, named) in [
        ("repositry = \"x\"", "repositry"),
        ("[backup]\nchunk_sise = 1", "chunk_sise"),
        ("[backup]\nrepo = \"x\"", "top of the file"),
        ("config = \"/etc/x.toml\"", "not a setting"),
        ("[show]\nsnapshot = \"latest\"", "not a setting"),
        ("[backup]\nchunk_size = \"big\"", "chunk_size"),
        ("retries = \"many\"", "--retries"),
        ("[backup]\nlive = \"yes\"", "true or false"),
        ("s3_addressing = \"sideways\"", "sideways"),
        ("backup = 1", "section"),
        ("repo = [\"a\", \"b\"]", "one value"),
        ("not toml", "test.toml"),
    ] {
        let err = match parse(&strings(&["list"]), Some(file)) {
            Err(ParseError::Config(e)) => e,
            other => panic!("{file}: {other:?}"),
        };
        assert_eq!(crate::error::kind_of(&err), crate::error::Kind::Usage);
        let text = format!("{err:#}");
        assert!(text.contains(named), "{file}: {text}");
        assert!(text.contains("test.toml"), "{file}: {text}");
    }
}

#[test]
fn help_never_shows_file_values() {
    let file = "password = \"file-secret-31\"\n[backup]\nbefore = \"stop-it\"\n";
    match parse(&strings(&["backup", "--help"]), Some(file)) {
        Err(ParseError::Clap(e)) => {
            let help = e.to_string();
            assert!(help.contains("--before"), "{help}");
            assert!(!help.contains("file-secret-31") && !help.contains("stop-it"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_sample_config_is_valid() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/rabbitmq-backup.toml"),
    )
    .unwrap();
    check(&text).unwrap();
}

/// `restore --resume` keeps the interrupted restore's options: the file's
/// values for the flags it cannot change do not apply, and the flags
/// themselves are refused beside it.
#[test]
fn resume_ignores_the_file_values_it_cannot_change() {
    let file = "[restore]\ndownload_concurrency = 8\nkeep_old = true\nafter = \"true\"\n";
    let restore = |args: &[&str], file: Option<&str>| match parse(&strings(args), file) {
        Ok(Cli {
            command: crate::cli::Command::Restore(args),
            ..
        }) => Ok(args),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    };
    let args = restore(&["restore", "--resume"], Some(file)).unwrap();
    assert!(args.resume);
    assert_eq!((args.download_concurrency, args.keep_old), (None, false));
    assert_eq!(args.after.as_deref(), Some("true"), "a hook still applies");
    let args = restore(&["restore"], Some(file)).unwrap();
    assert_eq!((args.download_concurrency, args.keep_old), (Some(8), true));
    for flag in ["--keep-old", "--definitions-only", "--from-node=rabbit@x"] {
        assert!(
            matches!(
                restore(&["restore", "--resume", flag], None),
                Err(ParseError::Clap(_))
            ),
            "{flag}"
        );
    }
}
