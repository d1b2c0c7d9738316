//! Log lines on standard error via `tracing`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::cli::LogFormat;
use crate::settings::Verbosity;

/// Whether progress bars may draw: human logs at info level or more.
static BARS: AtomicBool = AtomicBool::new(false);

/// True when progress bars suit the logs (human text, not `-q`); the
/// caller still checks that standard error is a terminal.
pub fn bars_wanted() -> bool {
    BARS.load(Ordering::Relaxed)
}

/// Installs the global subscriber. `RUST_LOG` overrides the level with
/// `level` and `target=level` directives (`debug,aws=info`); one it cannot
/// parse leaves the default.
pub fn init(format: LogFormat, verbosity: Verbosity) {
    BARS.store(
        matches!(format, LogFormat::Text) && !matches!(verbosity, Verbosity::Quiet),
        Ordering::Relaxed,
    );
    let level = match verbosity {
        Verbosity::Quiet => "warn",
        Verbosity::Normal => "info",
        Verbosity::Verbose => "debug,aws=info,hyper=info,hyper_util=info,rustls=info",
        Verbosity::Debug => "debug",
    };
    // lapin logs the broker's refusals itself, raw; the tool reports them
    // in its own words (one message per cause), so they show only at -vv.
    let lapin = match verbosity {
        Verbosity::Debug => "warn",
        _ => "off",
    };
    let default =
        format!("{level},aws_config=warn,aws_smithy_runtime=warn,lapin={lapin},amq_protocol=warn");
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref(), &default);
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(filter)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .finish()
            .with(filter)
            .try_init(),
    };
}

/// `RUST_LOG` if it is set and parses, else `default`.
fn filter(rust_log: Option<&str>, default: &str) -> Targets {
    rust_log
        .filter(|s| !s.trim().is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| default.parse().expect("the default directives parse"))
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    #[test]
    fn rust_log_overrides_the_default_and_a_bad_one_is_ignored() {
        let default = "info,lapin=off";
        let quiet = filter(None, default);
        assert!(quiet.would_enable("rabbitmq_backup::restore", &Level::INFO));
        assert!(!quiet.would_enable("rabbitmq_backup::restore", &Level::DEBUG));
        assert!(!quiet.would_enable("lapin::channel", &Level::ERROR));
        let loud = filter(Some("debug,aws=warn"), default);
        assert!(loud.would_enable("rabbitmq_backup::restore", &Level::DEBUG));
        assert!(!loud.would_enable("aws::s3", &Level::INFO));
        let bad = filter(Some("debug,=[nonsense"), default);
        assert!(!bad.would_enable("rabbitmq_backup::restore", &Level::DEBUG));
    }
}
