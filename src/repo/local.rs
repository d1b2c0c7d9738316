//! A repository in a local directory: one file per object.
//!
//! Writes go to a temporary file beside the target, are synced, then renamed
//! into place, so a reader never sees a partial object.

use std::path::{Path, PathBuf};

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;

use super::lifecycle::Rule;
use super::storage::{ObjectMeta, Storage, StorageError, StorageErrorKind, Tags};
use crate::error::usage;

/// Suffix of in-progress writes; never listed.
const TMP_MARK: &str = ".tmp-";

/// Object storage in a directory.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// A storage rooted at `root` (created on first write if missing).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage { root: root.into() }
    }

    fn path_of(&self, key: &str) -> anyhow::Result<PathBuf> {
        if key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            anyhow::bail!("invalid object key {key:?}");
        }
        Ok(self.root.join(key))
    }
}

/// The path made absolute (without resolving links), for messages.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Refuses a local repository that does not exist or is not a directory
/// (usage error, exit 2): reading commands must not report "no snapshots"
/// for a mistyped or unmounted path.
pub fn require_directory(path: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(usage(format!(
            "the repository {} is not a directory: check --repo (RABBITMQ_BACKUP_REPO, or `repo` in the config file)",
            absolute(path).display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(usage(format!(
            "the repository directory {} does not exist: check --repo (RABBITMQ_BACKUP_REPO, or `repo` in the config file) and that its filesystem is mounted; `backup` creates it",
            absolute(path).display()
        ))),
        Err(e) => Err(io_error(
            e,
            format!("cannot access the repository {}", absolute(path).display()),
        )),
    }
}

/// What `backup` does about its local repository directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creation {
    /// It exists.
    Exists,
    /// It is missing but its parent exists: [`create`] makes it.
    Create(PathBuf),
}

/// Checks, before anything else happens, that `backup` may use `path`: it
/// exists, or its parent does (the directory alone is created; a missing
/// parent means a typo or an unmounted filesystem, never `mkdir -p`).
pub fn plan_creation(path: &Path) -> anyhow::Result<Creation> {
    let abs = absolute(path);
    match std::fs::metadata(&abs) {
        Ok(meta) if meta.is_dir() => return Ok(Creation::Exists),
        Ok(_) => {
            return Err(usage(format!(
                "the repository {} is not a directory: check --repo",
                abs.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(io_error(
                e,
                format!("cannot access the repository {}", abs.display()),
            ));
        }
    }
    let parent = abs.parent().unwrap_or(Path::new("/"));
    if !parent.is_dir() {
        return Err(usage(format!(
            "neither the repository directory {} nor its parent {} exists: check --repo (RABBITMQ_BACKUP_REPO, or `repo` in the config file) and that the filesystem is mounted, or create it first (mkdir -p)",
            abs.display(),
            parent.display()
        )));
    }
    Ok(Creation::Create(abs))
}

/// Carries out a [`Creation`]: makes the directory (its parent only was
/// checked to exist) and says so.
pub fn create(plan: &Creation) -> anyhow::Result<()> {
    if let Creation::Create(path) = plan {
        match std::fs::create_dir(path) {
            Ok(()) => tracing::info!("created the repository directory {}", path.display()),
            // Another backup made it meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => {
                return Err(io_error(
                    e,
                    format!("cannot create the repository directory {}", path.display()),
                ));
            }
        }
    }
    Ok(())
}

fn not_found(what: &str) -> anyhow::Error {
    StorageError::new(StorageErrorKind::NotFound, format!("{what} does not exist")).into()
}

fn io_error(err: std::io::Error, what: String) -> anyhow::Error {
    let kind = match err.kind() {
        std::io::ErrorKind::NotFound => StorageErrorKind::NotFound,
        std::io::ErrorKind::PermissionDenied => StorageErrorKind::AccessDenied,
        _ => StorageErrorKind::Other,
    };
    anyhow::Error::new(StorageError::new(kind, format!("{what}: {err}")))
}

fn write_atomically(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("object path has no parent")?;
    std::fs::create_dir_all(dir)
        .map_err(|e| io_error(e, format!("cannot create directory {}", dir.display())))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    // Unique per write: identical chunks share a key and may be written at once.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{name}{TMP_MARK}{}-{n}", std::process::id()));
    crate::staging::replace_durably(path, &tmp, body)
        .map_err(|err| io_error(err, format!("cannot write {}", path.display())))
}

fn list_dir(
    root: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<ObjectMeta>,
) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(e, format!("cannot list {}", dir.display()))),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error(e, format!("cannot list {}", dir.display())))?;
        let path = entry.path();
        let file_type = entry.file_type()?;
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .to_string();
        if file_type.is_dir() {
            // Only descend where keys below could still match the prefix.
            let as_dir = format!("{rel}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                list_dir(root, &path, prefix, out)?;
            }
        } else if file_type.is_file() && rel.starts_with(prefix) && !rel.contains(TMP_MARK) {
            out.push(ObjectMeta {
                key: rel,
                size: entry.metadata()?.len(),
                sha256: None,
            });
        }
    }
    Ok(())
}

#[async_trait]
impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn check(&self) -> anyhow::Result<()> {
        match std::fs::metadata(&self.root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => anyhow::bail!(
                "the repository path {} exists but is not a directory",
                self.root.display()
            ),
            // A missing directory is created by the first write.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(io_error(
                    e,
                    format!("cannot access {}", self.root.display()),
                ));
            }
        }
        // Writable? Probe with a temporary file that is removed at once.
        let probe = tempfile::Builder::new()
            .prefix(".rabbitmq-backup-probe")
            .tempfile_in(&self.root)
            .map_err(|e| {
                io_error(
                    e,
                    format!(
                        "the repository directory {} is not writable",
                        self.root.display()
                    ),
                )
            })?;
        drop(probe);
        Ok(())
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        _sha256: &[u8; 32],
        _tags: &Tags,
    ) -> anyhow::Result<()> {
        let path = self.path_of(key)?;
        tokio::task::spawn_blocking(move || write_atomically(&path, &body)).await?
    }

    async fn get(&self, key: &str) -> anyhow::Result<Bytes> {
        let path = self.path_of(key)?;
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) => Err(io_error(e, format!("cannot read {}", path.display()))),
        }
    }

    async fn head(&self, key: &str) -> anyhow::Result<Option<ObjectMeta>> {
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: meta.len(),
                sha256: None,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(e, format!("cannot stat {}", path.display()))),
        }
    }

    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let mut out = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            list_dir(&root, &root, &prefix, &mut out).map(|_| out)
        })
        .await??;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(e, format!("cannot delete {}", path.display()))),
        }
        // Empty snapshot directories are removed so listings stay short.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    async fn put_tags(&self, key: &str, _tags: &Tags) -> anyhow::Result<()> {
        if self.head(key).await?.is_none() {
            return Err(not_found(key));
        }
        Err(StorageError::new(
            StorageErrorKind::Unsupported,
            "a local directory has no object tags",
        )
        .into())
    }

    async fn get_tags(&self, key: &str) -> anyhow::Result<Tags> {
        self.put_tags(key, &Vec::new()).await.map(|_| Vec::new())
    }

    async fn lifecycle(&self) -> anyhow::Result<Option<Vec<Rule>>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::new(dir.path().join("repo"));
        store.check().await.unwrap();
        let body = Bytes::from_static(b"hello");
        store
            .put("a/b/c", body.clone(), &[0; 32], &Vec::new())
            .await
            .unwrap();
        store
            .put("a/d", body.clone(), &[0; 32], &Vec::new())
            .await
            .unwrap();
        assert_eq!(store.get("a/b/c").await.unwrap(), body);
        let keys: Vec<_> = store
            .list("a/")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, vec!["a/b/c", "a/d"]);
        let keys: Vec<_> = store
            .list("a/b")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, vec!["a/b/c"]);
        assert_eq!(store.head("a/d").await.unwrap().unwrap().size, 5);
        store.delete("a/b/c").await.unwrap();
        assert!(store.head("a/b/c").await.unwrap().is_none());
        assert!(!dir.path().join("repo/a/b").exists());
        let err = store.get("a/b/c").await.unwrap_err();
        assert_eq!(
            super::super::storage::storage_kind(&err),
            Some(StorageErrorKind::NotFound)
        );
    }

    #[tokio::test]
    async fn rejects_escaping_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::new(dir.path());
        for key in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
            assert!(store.get(key).await.is_err(), "{key}");
        }
    }
}
