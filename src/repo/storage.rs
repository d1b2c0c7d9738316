//! The narrow object-storage interface every backend implements.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

/// An object's key, size and, where the backend reports it, its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Full key, relative to the storage root (bucket or directory).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the object's bytes as recorded by the server, if it keeps one.
    pub sha256: Option<[u8; 32]>,
}

/// Key/value tags attached to an object (S3 object tagging).
pub type Tags = Vec<(String, String)>;

/// What kind of storage failure happened; decides retries and exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageErrorKind {
    /// The object does not exist.
    NotFound,
    /// The bucket (or repository directory) does not exist.
    NoSuchContainer,
    /// Credentials are missing or lack permission.
    AccessDenied,
    /// The server rejected the upload because its checksum did not match.
    ChecksumMismatch,
    /// The feature is not implemented by this server (e.g. object tagging).
    Unsupported,
    /// A fault that may pass: connection reset, timeout, 500, 503 SlowDown.
    Transient,
    /// Anything else; not retried.
    Other,
}

/// A storage failure with a message naming the object and what to do.
#[derive(Debug)]
pub struct StorageError {
    /// The class of failure.
    pub kind: StorageErrorKind,
    /// Operator-facing message.
    pub message: String,
}

impl StorageError {
    /// Builds an error of the given kind.
    pub fn new(kind: StorageErrorKind, message: impl Into<String>) -> Self {
        StorageError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StorageError {}

/// The storage kind of an error, if a [`StorageError`] is in its chain.
pub fn storage_kind(err: &anyhow::Error) -> Option<StorageErrorKind> {
    err.chain()
        .find_map(|e| e.downcast_ref::<StorageError>())
        .map(|e| e.kind)
}

/// Object storage: a flat namespace of immutable objects.
///
/// Implementations do not retry; wrap them in [`super::retry::Retrying`].
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug {
    /// Where this storage is, for messages (`s3://bucket`, `/var/backups`).
    fn location(&self) -> String;

    /// Checks that the bucket or directory exists and is reachable with the
    /// configured credentials. Writes nothing.
    async fn check(&self) -> anyhow::Result<()>;

    /// Stores `body` under `key`. `sha256` is the digest of `body`; servers
    /// that support it verify the upload against it.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        sha256: &[u8; 32],
        tags: &Tags,
    ) -> anyhow::Result<()>;

    /// Reads a whole object.
    async fn get(&self, key: &str) -> anyhow::Result<Bytes>;

    /// Metadata of one object, `None` if it does not exist.
    async fn head(&self, key: &str) -> anyhow::Result<Option<ObjectMeta>>;

    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<ObjectMeta>>;

    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> anyhow::Result<()>;

    /// Replaces an object's tags. Errors of kind `Unsupported` when the
    /// backend has no tagging.
    async fn put_tags(&self, key: &str, tags: &Tags) -> anyhow::Result<()>;

    /// Reads an object's tags. Errors of kind `Unsupported` when the backend
    /// has no tagging.
    async fn get_tags(&self, key: &str) -> anyhow::Result<Tags>;

    /// The bucket's lifecycle rules as raw descriptions; `None` when the
    /// backend has no lifecycle management (a local directory).
    async fn lifecycle(&self) -> anyhow::Result<Option<Vec<super::lifecycle::Rule>>>;
}
