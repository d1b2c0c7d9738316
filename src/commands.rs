//! One module per command; each orchestrates, the domain modules do the work.

pub mod backup;
pub mod check_repo;
pub mod exclude;
pub mod list;
pub mod pin;
pub mod prune;
pub mod restore;
pub mod resume;
pub mod verify;

use std::sync::Arc;

use crate::repo::Repository;
use crate::repo::local::LocalStorage;
use crate::repo::retry::Retrying;
use crate::repo::s3::{S3Options, S3Storage};
use crate::repo::storage::Storage;
use crate::repo::url::RepoUrl;
use crate::settings::Settings;

/// Opens the configured repository (no request is sent yet).
pub async fn open_repository(settings: &Settings) -> anyhow::Result<Repository> {
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
