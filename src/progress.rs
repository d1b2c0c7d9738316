//! Progress of long work: a bar on a terminal, a log line every few seconds
//! otherwise (cron mails and journald stay readable).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::output::bytes;

/// A shareable progress counter of bytes.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    label: String,
    total: u64,
    bar: Option<ProgressBar>,
    state: Mutex<(u64, Instant)>,
    started: Instant,
}

/// How often a non-terminal progress line is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    /// Starts tracking `label` up to `total` bytes: a bar when standard
    /// error is a terminal and the logs are human, log lines otherwise.
    pub fn new(label: &str, total: u64) -> Progress {
        let bar = (crate::logging::bars_wanted() && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Progress {
            inner: Arc::new(Inner {
                label: label.to_string(),
                total,
                bar,
                state: Mutex::new((0, now)),
                started: now,
            }),
        }
    }

    /// Adds `n` bytes.
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.inner.bar {
            bar.inc(n);
            return;
        }
        let mut state = self.inner.state.lock().expect("progress lock");
        state.0 += n;
        if state.1.elapsed() >= LOG_EVERY {
            state.1 = Instant::now();
            let done = state.0;
            drop(state);
            self.log(done);
        }
    }

    fn log(&self, done: u64) {
        let rate = done as f64 / self.inner.started.elapsed().as_secs_f64().max(0.001);
        tracing::info!(
            "{}: {} of {} ({:.0}%), {}/s",
            self.inner.label,
            bytes(done),
            bytes(self.inner.total),
            100.0 * done as f64 / self.inner.total.max(1) as f64,
            bytes(rate as u64)
        );
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.inner.bar {
            bar.finish_and_clear();
        }
    }
}
