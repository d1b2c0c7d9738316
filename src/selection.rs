//! `--vhost` / `--queue` selections of `messages` and `restore`: an empty
//! list selects everything.

use crate::archive::manifest::Manifest;
use crate::error::usage;

/// Whether the queue `queue` of `vhost` is selected.
pub fn selects(vhosts: &[String], queues: &[String], vhost: &str, queue: &str) -> bool {
    (vhosts.is_empty() || vhosts.iter().any(|v| v == vhost))
        && (queues.is_empty() || queues.iter().any(|q| q == queue))
}

/// Refuses (exit 2) a `--queue` the snapshot does not hold in the selected
/// vhosts.
pub fn check_queues(
    manifest: &Manifest,
    vhosts: &[String],
    queues: &[String],
) -> anyhow::Result<()> {
    for name in queues {
        if !manifest
            .queues
            .iter()
            .any(|q| &q.name == name && selects(vhosts, queues, &q.vhost, name))
        {
            return Err(usage(format!(
                "snapshot {} has no queue {name:?}{}: `rabbitmq-backup show {}` lists its queues",
                manifest.id,
                if vhosts.is_empty() {
                    String::new()
                } else {
                    format!(" in vhost {vhosts:?}")
                },
                manifest.id
            )));
        }
    }
    Ok(())
}
