//! Log lines on standard error via `tracing`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use crate::settings::Verbosity;

/// Whether progress bars may draw: human logs at info level or more.
static BARS: AtomicBool = AtomicBool::new(false);

/// True when progress bars suit the logs (human text, not `-q`); the
/// caller still checks that standard error is a terminal.
pub fn bars_wanted() -> bool {
    BARS.load(Ordering::Relaxed)
}

/// Installs the global subscriber. `RUST_LOG` overrides the level.
pub fn init(format: LogFormat, verbosity: Verbosity) {
    BARS.store(
        matches!(format, LogFormat::Text) && !matches!(verbosity, Verbosity::Quiet),
        Ordering::Relaxed,
    );
    let level = match verbosity {
        Verbosity::Quiet => "warn",
        Verbosity::Normal => "info",
        Verbosity::Verbose => "debug,aws=info,hyper=info,hyper_util=info,reqwest=info,rustls=info",
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
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}
