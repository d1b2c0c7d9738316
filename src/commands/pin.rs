//! `pin`: keep a snapshot forever. A `pinned` marker object is written
//! beside the manifest (prune honours it on every backend), and where the
//! server keeps tags every object is re-tagged `tier=keep`, which lifecycle
//! rules filtering on the tier never expire.

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::output::Output;
use crate::retention::check::Support;
use crate::retention::{TIER_TAG, Tier};
use crate::settings::Settings;

/// `pin --json` schema.
#[derive(Debug, Serialize)]
pub struct PinReport {
    /// Snapshot id.
    pub id: String,
    /// Source node.
    pub node: String,
    /// Objects re-tagged `tier=keep` (0 where the server has no tags).
    pub objects_tagged: usize,
    /// Anything the operator should know.
    pub warnings: Vec<String>,
}

/// Runs `pin`.
pub async fn run(
    settings: &Settings,
    spec: &str,
    from_node: Option<&str>,
    out: Output,
) -> anyhow::Result<PinReport> {
    let repo = super::open_repository(settings).await?;
    let snapshot = super::list::resolve(settings, &repo, spec, from_node).await?;
    // The manifest must be there and sound before anything is written.
    repo.manifest(&snapshot).await?;
    let marker = serde_json::to_vec_pretty(&serde_json::json!({
        "pinned_at": crate::commands::backup::rfc3339(time::OffsetDateTime::now_utc()),
        "by": format!("rabbitmq-backup {}", env!("CARGO_PKG_VERSION")),
    }))?;
    let digest: [u8; 32] = Sha256::digest(&marker).into();
    let keep = Tier::Keep.tags();
    repo.storage()
        .put(
            &repo.pin_key(&snapshot.node, &snapshot.id),
            Bytes::from(marker),
            &digest,
            &keep,
        )
        .await?;
    let mut report = PinReport {
        id: snapshot.id.clone(),
        node: snapshot.node.clone(),
        objects_tagged: 0,
        warnings: Vec::new(),
    };
    match repo.tagging_support().await? {
        Support::Yes => {
            for key in repo.snapshot_keys(&snapshot).await? {
                repo.storage().put_tags(&key, &keep).await?;
                report.objects_tagged += 1;
            }
        }
        Support::No => report.warnings.push(
            "the server does not support object tags: lifecycle rules cannot see the pin; only `prune` honours it".into(),
        ),
        Support::NotApplicable => {}
    }
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    out.result(&report, || {
        format!(
            "pinned snapshot {} of {}{}\n",
            report.id,
            report.node,
            if report.objects_tagged > 0 {
                format!(
                    " ({} tagged {TIER_TAG}=keep)",
                    crate::output::count(report.objects_tagged as u64, "object")
                )
            } else {
                String::new()
            }
        )
    })?;
    Ok(report)
}
