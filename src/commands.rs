//! One module per command; each orchestrates, the domain modules do the work.

pub mod backup;
pub mod check_repo;
pub mod cluster;
pub mod decode;
pub mod deep;
pub mod exclude;
pub mod list;
pub mod messages;
pub mod pin;
pub mod prune;
pub mod restore;
pub mod restore_cluster;
pub mod verify;

use std::sync::Arc;

use crate::repo::Repository;
use crate::repo::local::LocalStorage;
use crate::repo::retry::Retrying;
use crate::repo::s3::{S3Options, S3Storage};
use crate::repo::storage::Storage;
use crate::repo::url::RepoUrl;
use crate::settings::Settings;

/// Opens the configured repository for a command that reads it: a local
/// directory must exist, so that a mistyped or unmounted path is an error
/// rather than "no snapshots" (no request is sent to S3 yet).
pub async fn open_repository(settings: &Settings) -> anyhow::Result<Repository> {
    if let RepoUrl::Local { path } = &settings.repo {
        crate::repo::local::require_directory(path)?;
    }
    open_any(settings).await
}

/// Opens the configured repository for `backup`, which creates a missing
/// local directory later (see [`crate::repo::local::plan_creation`]).
pub async fn open_repository_for_backup(settings: &Settings) -> anyhow::Result<Repository> {
    open_any(settings).await
}

async fn open_any(settings: &Settings) -> anyhow::Result<Repository> {
    let (storage, prefix): (Arc<dyn Storage>, &str) = match &settings.repo {
        RepoUrl::S3 { bucket, prefix } => {
            let s3 = S3Storage::open(&S3Options {
                bucket: bucket.clone(),
                addressing: settings.s3_addressing,
                timeout: settings.s3_timeout,
            })
            .await?;
            (Arc::new(s3), prefix)
        }
        RepoUrl::Local { path } => (Arc::new(LocalStorage::new(path.clone())), ""),
    };
    let storage: Arc<dyn Storage> = Arc::new(Retrying::new(storage, settings.retry));
    Ok(Repository::new(storage, prefix, settings.repo.clone()))
}
