//! Named points for tests. `RABBITMQ_BACKUP_FAILPOINT` holds `;`-separated
//! rules `<name>[@<n>]=<action>`: `fail` makes the tool fail at the n-th
//! pass (default: the first) through the point, `wait` writes
//! `<name>@<n>.reached` into `RABBITMQ_BACKUP_FAILPOINT_DIR` and hangs there
//! so a test can kill the tool at an exact instant, `sleep:<secs>` stalls
//! the thread there that long, then goes on (the tool alive but silent),
//! and a number is a value the tool reads instead of measuring it
//! ([`value`]).
//! `RABBITMQ_BACKUP_FAILPOINT_RECORD=<file>` appends `<name>@<n>` to the file
//! at every pass, so tests enumerate the points of a run instead of listing
//! them by hand. Unset, a point costs one lookup.
//!
//! `<name>=fail-on-node` makes a node-side step fail on the node itself
//! (see [`on_node`]).
//!
//! The restore's points are named by its state machine
//! (`crate::restore::machine`); others: `backup:stop-app`,
//! `backup:after-stop-app`, `backup:start-app`, `upload:after-first-chunk`,
//! `backup:before-manifest`, `exclude:before-ack`, `exclude:after-batch`;
//! values: `staging:free-bytes`; on the node: `ctl:stop-app` (the stop
//! fails after the management agent's handler was removed).

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

struct Config {
    rules: Vec<(String, u32, String)>,
    record: Option<std::path::PathBuf>,
    passes: Mutex<HashMap<String, u32>>,
}

fn config() -> Option<&'static Config> {
    static CONFIG: OnceLock<Option<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let spec = std::env::var("RABBITMQ_BACKUP_FAILPOINT").unwrap_or_default();
            let record = std::env::var_os("RABBITMQ_BACKUP_FAILPOINT_RECORD").map(Into::into);
            let rules: Vec<(String, u32, String)> = spec
                .split(';')
                .filter_map(|rule| {
                    let (point, action) = rule.trim().rsplit_once('=')?;
                    let (name, nth) = match point.rsplit_once('@') {
                        Some((name, n)) => (name, n.parse().ok()?),
                        None => (point, 1),
                    };
                    Some((name.to_string(), nth, action.to_string()))
                })
                .collect();
            (!rules.is_empty() || record.is_some()).then(|| Config {
                rules,
                record,
                passes: Mutex::new(HashMap::new()),
            })
        })
        .as_ref()
}

/// Passes the point `name`: records it, and fails or waits if told to.
pub fn hit(name: &str) -> anyhow::Result<()> {
    #[cfg(test)]
    local::pass(name)?;
    let Some(config) = config() else {
        return Ok(());
    };
    let nth = {
        let mut passes = config.passes.lock().expect("failpoint counter");
        let n = passes.entry(name.to_string()).or_insert(0);
        *n += 1;
        *n
    };
    if let Some(path) = &config.record {
        // Appended and synced line by line: a test may kill the tool next.
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(file, "{name}@{nth}")?;
    }
    let rule = config
        .rules
        .iter()
        .find(|(point, n, _)| point == name && *n == nth);
    match rule.map(|(_, _, action)| action.as_str()) {
        Some("fail") => anyhow::bail!("failpoint {name} triggered"),
        Some("wait") => {
            if let Ok(dir) = std::env::var("RABBITMQ_BACKUP_FAILPOINT_DIR") {
                let _ = std::fs::write(
                    std::path::Path::new(&dir).join(format!("{name}@{nth}.reached")),
                    b"",
                );
            }
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        other => {
            let sleep = other.and_then(|a| a.strip_prefix("sleep:"));
            if let Some(secs) = sleep.and_then(|s| s.parse().ok()) {
                std::thread::sleep(Duration::from_secs(secs));
            }
            Ok(())
        }
    }
}

/// Whether the node-side failpoint `name` is set (`<name>=fail-on-node`):
/// the caller then sends the node a step that fails there.
pub fn on_node(name: &str) -> bool {
    config().is_some_and(|c| {
        c.rules
            .iter()
            .any(|(point, _, action)| point == name && action == "fail-on-node")
    })
}

/// A value a test imposes at point `name` (`<name>=<number>`), if any.
pub fn value(name: &str) -> Option<u64> {
    config()?
        .rules
        .iter()
        .find(|(point, _, _)| point == name)
        .and_then(|(_, _, action)| action.parse().ok())
}

/// Unit tests' failpoints, per thread: record the points passed, fail at
/// one, or panic at one (a crash: no cleanup code runs).
#[cfg(test)]
pub mod local {
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// What the current thread's failpoints do.
    #[derive(Debug, Default)]
    pub struct Rules {
        /// Fail at this `name@n`.
        pub fail_at: Option<String>,
        /// Panic at this `name@n`.
        pub crash_at: Option<String>,
        /// Every `name@n` passed, in order.
        pub passed: Vec<String>,
        /// Passes per name so far.
        pub passes: HashMap<String, u32>,
    }

    thread_local! {
        static RULES: RefCell<Option<Rules>> = const { RefCell::new(None) };
    }

    /// Sets this thread's rules.
    pub fn set(rules: Rules) {
        RULES.with(|r| *r.borrow_mut() = Some(rules));
    }

    /// Takes this thread's rules back (with what was passed).
    pub fn take() -> Rules {
        RULES.with(|r| r.borrow_mut().take().unwrap_or_default())
    }

    pub(super) fn pass(name: &str) -> anyhow::Result<()> {
        RULES.with(|r| {
            let mut r = r.borrow_mut();
            let Some(rules) = r.as_mut() else {
                return Ok(());
            };
            let n = rules.passes.entry(name.to_string()).or_insert(0);
            *n += 1;
            let point = format!("{name}@{n}");
            rules.passed.push(point.clone());
            if rules.crash_at.as_deref() == Some(point.as_str()) {
                panic!("crash at {point}");
            }
            if rules.fail_at.as_deref() == Some(point.as_str()) {
                anyhow::bail!("failpoint {point} triggered");
            }
            Ok(())
        })
    }
}
