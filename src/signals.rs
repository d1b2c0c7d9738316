//! SIGINT/SIGTERM handling: the first signal asks the running command to
//! stop at its next safe point (never while the broker is paused or a
//! restore is swapping files); the second one exits at once.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Starts listening for SIGINT and SIGTERM (call once, inside the runtime).
pub fn install() {
    tokio::spawn(async {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        for round in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                CANCELLED.store(true, Ordering::SeqCst);
                tracing::warn!(
                    "interrupted: stopping at the next safe point (a paused broker is started again first); interrupt again to exit at once"
                );
            } else {
                tracing::error!(
                    "exiting at once; if the broker was stopped, run `rabbitmqctl start_app`; an interrupted restore can be finished with `rabbitmq-backup restore --resume`"
                );
                std::process::exit(130);
            }
        }
    });
}

/// True once an interrupt was received.
fn cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// An `Interrupted` error if an interrupt was received.
pub fn check() -> io::Result<()> {
    if cancelled() {
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "interrupted by a signal",
        ));
    }
    Ok(())
}
