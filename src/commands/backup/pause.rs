//! The stop-app pause: stop the broker, copy the store, start it again
//! whatever happened.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use crate::error::{Kind, class};
use crate::output::bytes;
use crate::rabbit::control::{Control, WatchdogOutcome};
use crate::rabbit::datadir::VhostDir;
use crate::settings::BackupSettings;
use crate::staging::copy_store;

/// Stops the broker, copies the message store beside the data directory,
/// starts the broker again whatever happened. Returns the pause in ms.
/// A watchdog on the node starts the broker by itself should this process
/// die (over Erlang distribution: at once, when its connection closes) or
/// go quiet meanwhile; it is petted while the copy runs. Nothing but the
/// copy happens between stop and start.
pub(super) async fn pause_and_copy(
    ctl: &Control,
    node: &str,
    data_dir: &Path,
    staging: &Path,
    vhost_dirs: &[VhostDir],
    args: &BackupSettings,
) -> anyhow::Result<u64> {
    tracing::info!("stopping the broker (stop_app) for a consistent copy of the message store");
    crate::failpoint::hit("backup:stop-app")?;
    let paused = Instant::now();
    if let Err(e) = ctl.stop_app(Some(args.pause_watchdog)).await {
        let restarted = ctl.start_app().await;
        return Err(match restarted {
            Ok(_) => e.context("stop_app failed; the broker was started again"),
            Err(start) => needs_start(
                node,
                e.context(format!("and start_app failed too: {start:#}")),
            ),
        });
    }
    let (src, dst, dirs) = (
        data_dir.to_path_buf(),
        staging.to_path_buf(),
        vhost_dirs.to_vec(),
    );
    let threads = (args.threads as usize).max(4);
    let copy = async {
        crate::failpoint::hit("backup:after-stop-app")?;
        tokio::task::spawn_blocking(move || copy_store(&src, &dst, &dirs, threads))
            .await
            .context("the copy thread failed")?
            .context("copying the message store failed (the broker was started again)")
    };
    let mut ticks = tokio::time::interval(args.pause_watchdog / 3);
    ticks.tick().await; // the first tick is immediate
    tokio::pin!(copy);
    let copied = loop {
        tokio::select! {
            copied = &mut copy => break copied,
            _ = ticks.tick() => {
                if let Err(e) = ctl.pet_watchdog().await {
                    tracing::warn!("cannot reach the pause watchdog: {e:#}");
                }
            }
        }
    };
    // A failpoint failing here stands for start_app failing.
    let started = match crate::failpoint::hit("backup:start-app") {
        Ok(()) => ctl.start_app().await,
        Err(e) => Err(e),
    };
    let pause_ms = paused.elapsed().as_millis() as u64;
    match started {
        Err(e) => return Err(needs_start(node, e)),
        Ok(WatchdogOutcome::Fired) => {
            return Err(anyhow::anyhow!(
                "the pause watchdog started the broker again before the copy was finished (no word from this tool for --pause-watchdog, or its connection to the node broke): the copy may be inconsistent, so no snapshot was made; the broker is running"
            ));
        }
        Ok(_) => {}
    }
    tracing::info!("the broker is running again after a pause of {pause_ms} ms");
    tracing::debug!("copied {} during the pause", bytes(copied?));
    Ok(pause_ms)
}

fn needs_start(node: &str, err: anyhow::Error) -> anyhow::Error {
    err.context(class(
        Kind::NeedsAttention,
        format!("the broker on node {node} is STOPPED: start it now with `rabbitmqctl -n {node} start_app`"),
    ))
}
