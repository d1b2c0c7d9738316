//! A repository: snapshots laid out in object storage (format 1, §4).
//!
//! ```text
//! <prefix>/snapshots/<node>/<id>/data/<sha256-hex>
//! <prefix>/snapshots/<node>/<id>/manifest.json   (written last)
//! ```

pub mod lifecycle;
pub mod local;
pub mod orphans;
pub mod retry;
pub mod s3;
pub mod snapshot_id;
pub mod storage;
#[cfg(test)]
pub mod testing;
pub mod url;

use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;

use crate::archive::manifest::Manifest;
use crate::error::{integrity, usage};
use storage::{Storage, StorageErrorKind, storage_kind};
use url::RepoUrl;

/// The name of the commit marker.
const MANIFEST: &str = "manifest.json";

/// A marker object beside the manifest: the snapshot is pinned (kept forever).
const PIN_MARKER: &str = "pinned";

/// The directory under the prefix that holds every snapshot (lifecycle
/// rules match `<prefix>/snapshots/`).
pub const SNAPSHOTS_DIR: &str = "snapshots";

/// One committed snapshot (its manifest exists).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotRef {
    /// Node name the snapshot was taken from.
    pub node: String,
    /// Snapshot id.
    pub id: String,
}

/// A committed snapshot and whether it carries a pin marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The snapshot.
    pub snapshot: SnapshotRef,
    /// A `pinned` marker exists beside its manifest.
    pub pinned: bool,
}

/// A repository opened on some storage.
#[derive(Debug, Clone)]
pub struct Repository {
    storage: Arc<dyn Storage>,
    prefix: String,
    url: RepoUrl,
}

/// Checks that a node name can be a path segment.
pub fn check_node_name(node: &str) -> anyhow::Result<()> {
    if node.is_empty()
        || node == "."
        || node == ".."
        || node.contains('/')
        || node.chars().any(char::is_control)
    {
        return Err(usage(format!(
            "{node:?} is not a valid node name (expected name@host, without '/')"
        )));
    }
    Ok(())
}

impl Repository {
    /// A repository on `storage` under key prefix `prefix` ("" for the root).
    pub fn new(storage: Arc<dyn Storage>, prefix: &str, url: RepoUrl) -> Repository {
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", prefix.trim_matches('/'))
        };
        Repository {
            storage,
            prefix,
            url,
        }
    }

    /// The repository's location as the operator wrote it.
    pub fn url(&self) -> &RepoUrl {
        &self.url
    }

    /// The underlying storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The prefix of every snapshot (`<prefix>snapshots/`), under which
    /// lifecycle rules must match them.
    pub fn snapshots_prefix(&self) -> String {
        format!("{}{SNAPSHOTS_DIR}/", self.prefix)
    }

    /// The key prefix of one snapshot, ending in `/`.
    fn snapshot_prefix(&self, node: &str, id: &str) -> String {
        format!("{}{node}/{id}/", self.snapshots_prefix())
    }

    /// Where the repository is, spelled out: the absolute directory, or the
    /// bucket, key prefix and endpoint.
    pub fn describe(&self) -> String {
        match &self.url {
            RepoUrl::Local { path } => local::absolute(path).display().to_string(),
            RepoUrl::S3 { .. } if self.prefix.is_empty() => self.storage.location(),
            RepoUrl::S3 { .. } => format!(
                "{}, key prefix {}",
                self.storage.location(),
                self.prefix.trim_end_matches('/')
            ),
        }
    }

    /// Where one snapshot's objects are, spelled out: its absolute
    /// directory, or its bucket, key prefix and endpoint.
    pub fn snapshot_location(&self, node: &str, id: &str) -> String {
        let key = self.snapshot_prefix(node, id);
        match &self.url {
            RepoUrl::Local { path } => local::absolute(path)
                .join(key.trim_end_matches('/'))
                .display()
                .to_string(),
            RepoUrl::S3 { .. } => format!("{}, key prefix {key}", self.storage.location()),
        }
    }

    /// The key of a chunk object.
    pub fn chunk_key(&self, node: &str, id: &str, sha256_hex: &str) -> String {
        format!("{}{sha256_hex}", self.data_prefix(node, id))
    }

    /// [`Self::chunk_key`] for one snapshot, as the transfers take it.
    pub fn chunk_keys(&self, node: &str, id: &str) -> Box<dyn Fn(&str) -> String + Send + Sync> {
        let prefix = self.data_prefix(node, id);
        Box::new(move |sha256_hex| format!("{prefix}{sha256_hex}"))
    }

    fn data_prefix(&self, node: &str, id: &str) -> String {
        format!("{}data/", self.snapshot_prefix(node, id))
    }

    /// The key of a snapshot's manifest.
    pub fn manifest_key(&self, node: &str, id: &str) -> String {
        format!("{}{MANIFEST}", self.snapshot_prefix(node, id))
    }

    /// Committed snapshots, oldest first; of one node if `node` is given.
    pub async fn list(&self, node: Option<&str>) -> anyhow::Result<Vec<SnapshotRef>> {
        Ok(self
            .list_with_pins(node)
            .await?
            .into_iter()
            .map(|l| l.snapshot)
            .collect())
    }

    /// Committed snapshots with their pin markers, oldest first.
    pub async fn list_with_pins(&self, node: Option<&str>) -> anyhow::Result<Vec<Listed>> {
        let root = self.snapshots_prefix();
        let prefix = match node {
            Some(node) => format!("{root}{node}/"),
            None => root.clone(),
        };
        let objects = self
            .storage
            .list(&prefix)
            .await
            .with_context(|| format!("cannot list snapshots in {}", self.url))?;
        let mut committed = Vec::new();
        let mut pins = std::collections::HashSet::new();
        for o in &objects {
            let Some(rest) = o.key.strip_prefix(&root) else {
                continue;
            };
            let parts: Vec<&str> = rest.split('/').collect();
            if let [node, id, file] = parts.as_slice() {
                if !snapshot_id::is_valid(id) {
                    continue;
                }
                let snapshot = SnapshotRef {
                    node: node.to_string(),
                    id: id.to_string(),
                };
                match *file {
                    MANIFEST => committed.push(snapshot),
                    PIN_MARKER => {
                        pins.insert(snapshot);
                    }
                    _ => {}
                }
            }
        }
        let mut out: Vec<Listed> = committed
            .into_iter()
            .map(|snapshot| Listed {
                pinned: pins.contains(&snapshot),
                snapshot,
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.snapshot.id, &a.snapshot.node).cmp(&(&b.snapshot.id, &b.snapshot.node))
        });
        Ok(out)
    }

    /// The key of a snapshot's pin marker.
    pub fn pin_key(&self, node: &str, id: &str) -> String {
        format!("{}{PIN_MARKER}", self.snapshot_prefix(node, id))
    }

    /// Every object key of a snapshot (chunks, manifest, marker).
    pub async fn snapshot_keys(&self, snapshot: &SnapshotRef) -> anyhow::Result<Vec<String>> {
        let prefix = self.snapshot_prefix(&snapshot.node, &snapshot.id);
        Ok(self
            .storage
            .list(&prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect())
    }

    /// Deletes a snapshot: the manifest first, so that a half-deleted
    /// snapshot is never listed, then every other object. Returns the
    /// number of objects deleted.
    pub async fn delete_snapshot(&self, snapshot: &SnapshotRef) -> anyhow::Result<usize> {
        let manifest = self.manifest_key(&snapshot.node, &snapshot.id);
        self.storage.delete(&manifest).await?;
        let rest: Vec<String> = self
            .snapshot_keys(snapshot)
            .await?
            .into_iter()
            .filter(|k| *k != manifest)
            .collect();
        let deleted = rest.len() + 1;
        futures::stream::iter(rest.into_iter().map(|key| {
            let storage = self.storage.clone();
            async move { storage.delete(&key).await }
        }))
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
        Ok(deleted)
    }

    /// Whether the storage keeps object tags, probed without writing: a tag
    /// read of a key that does not exist answers "no such key" where tagging
    /// works and "not implemented" where it does not (Garage).
    pub async fn tagging_support(&self) -> anyhow::Result<crate::retention::check::Support> {
        use crate::retention::check::Support;
        if matches!(self.url, RepoUrl::Local { .. }) {
            return Ok(Support::NotApplicable);
        }
        let probe = format!("{}.rabbitmq-backup-tag-probe", self.snapshots_prefix());
        match self.storage.get_tags(&probe).await {
            Ok(_) => Ok(Support::Yes),
            Err(e) => match storage_kind(&e) {
                Some(StorageErrorKind::NotFound) => Ok(Support::Yes),
                Some(StorageErrorKind::Unsupported) => Ok(Support::No),
                _ => Err(e),
            },
        }
    }

    /// Resolves `latest`, a full id or an unambiguous id prefix. `node`
    /// restricts the search; `latest` needs it.
    pub async fn resolve(&self, spec: &str, node: Option<&str>) -> anyhow::Result<SnapshotRef> {
        let snapshots = self.list(node).await?;
        let scope = match node {
            Some(n) => format!("node {n} in {}", self.describe()),
            None => self.describe(),
        };
        if spec == "latest" {
            if let Some(latest) = snapshots.last() {
                return Ok(latest.clone());
            }
            let mut others: Vec<String> =
                self.list(None).await?.into_iter().map(|s| s.node).collect();
            others.sort();
            others.dedup();
            let hint = if others.is_empty() {
                "the repository holds no snapshots at all: check --repo".to_string()
            } else {
                format!(
                    "the repository holds snapshots of {}: pass --from-node NAME",
                    others.join(", ")
                )
            };
            return Err(anyhow::anyhow!("there are no snapshots of {scope}; {hint}"));
        }
        let matches: Vec<&SnapshotRef> = snapshots
            .iter()
            .filter(|s| s.id.starts_with(spec))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(usage(format!(
                "no snapshot matches {spec:?} in {scope}; run `rabbitmq-backup list` to see the snapshots"
            ))),
            many => Err(usage(format!(
                "{spec:?} is ambiguous in {scope}: it matches {}; give more of the id{}",
                many.iter()
                    .map(|s| format!("{} ({})", s.id, s.node))
                    .collect::<Vec<_>>()
                    .join(", "),
                if node.is_none() {
                    " or pass --from-node"
                } else {
                    ""
                }
            ))),
        }
    }

    /// Reads and parses a snapshot's manifest, checking that it belongs there.
    pub async fn manifest(&self, snapshot: &SnapshotRef) -> anyhow::Result<Manifest> {
        let key = self.manifest_key(&snapshot.node, &snapshot.id);
        let origin = format!("{}{key}", self.location_prefix());
        // A manifest has no digest to check it by: one that does not parse is
        // read again, in case its bytes were damaged in transit. A missing
        // one is final: it comes back as the inner error, never read again.
        let manifest = retry::reread_on_integrity(|| async {
            let bytes = match self.storage.get(&key).await {
                Ok(bytes) => bytes,
                Err(e) if storage_kind(&e) == Some(StorageErrorKind::NotFound) => {
                    return Ok(Err(integrity(format!(
                        "snapshot {} of {} has no manifest: it is incomplete or was deleted",
                        snapshot.id, snapshot.node
                    ))));
                }
                Err(e) => return Err(e),
            };
            Manifest::from_json(&bytes, &origin).map(Ok)
        })
        .await??;
        if manifest.id != snapshot.id || manifest.node.name != snapshot.node {
            return Err(integrity(format!(
                "the manifest {origin} describes snapshot {} of {}, not {} of {}: refusing a manifest copied from elsewhere",
                manifest.id, manifest.node.name, snapshot.id, snapshot.node
            )));
        }
        Ok(manifest)
    }

    fn location_prefix(&self) -> String {
        match &self.url {
            RepoUrl::S3 { bucket, .. } => format!("s3://{bucket}/"),
            RepoUrl::Local { path } => format!("{}/", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::local::LocalStorage;
    use bytes::Bytes;

    async fn repo_with(manifests: &[(&str, &str)]) -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(LocalStorage::new(dir.path()));
        let repo = Repository::new(
            storage.clone(),
            "pre/fix",
            RepoUrl::Local {
                path: dir.path().into(),
            },
        );
        for (node, id) in manifests {
            let key = repo.manifest_key(node, id);
            storage
                .put(&key, Bytes::from_static(b"{}"), &[0; 32], &Vec::new())
                .await
                .unwrap();
        }
        // An incomplete snapshot: chunks but no manifest.
        let orphan = repo.chunk_key("rabbit@a", "20261121T000000Z-00000000", &"f".repeat(64));
        storage
            .put(&orphan, Bytes::from_static(b"x"), &[0; 32], &Vec::new())
            .await
            .unwrap();
        (dir, repo)
    }

    #[tokio::test]
    async fn lists_only_committed_snapshots() {
        let (_d, repo) = repo_with(&[
            ("rabbit@a", "20261120T000000Z-aaaaaaaa"),
            ("rabbit@b", "20261119T000000Z-bbbbbbbb"),
        ])
        .await;
        let all = repo.list(None).await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].node, "rabbit@b");
        let a = repo.list(Some("rabbit@a")).await.unwrap();
        assert_eq!(
            a,
            vec![SnapshotRef {
                node: "rabbit@a".into(),
                id: "20261120T000000Z-aaaaaaaa".into()
            }]
        );
    }

    #[tokio::test]
    async fn resolves_latest_and_prefixes() {
        let (_d, repo) = repo_with(&[
            ("rabbit@a", "20261120T000000Z-aaaaaaaa"),
            ("rabbit@a", "20261121T000000Z-cccccccc"),
            ("rabbit@b", "20261121T000000Z-bbbbbbbb"),
        ])
        .await;
        assert_eq!(
            repo.resolve("latest", Some("rabbit@a")).await.unwrap().id,
            "20261121T000000Z-cccccccc"
        );
        assert_eq!(
            repo.resolve("20261120", None).await.unwrap().node,
            "rabbit@a"
        );
        let err = repo.resolve("20261121", None).await.unwrap_err();
        assert!(err.to_string().contains("ambiguous"), "{err}");
        assert!(repo.resolve("2025", None).await.is_err());
        assert!(repo.resolve("latest", Some("rabbit@zzz")).await.is_err());
    }

    #[tokio::test]
    async fn deleting_a_snapshot_removes_the_manifest_first() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(crate::repo::testing::Instrumented::new(dir.path()));
        let repo = Repository::new(
            storage.clone(),
            "",
            RepoUrl::Local {
                path: dir.path().into(),
            },
        );
        let snap = SnapshotRef {
            node: "rabbit@a".into(),
            id: "20261120T000000Z-aaaaaaaa".into(),
        };
        for key in [
            repo.chunk_key(&snap.node, &snap.id, &"1".repeat(64)),
            repo.chunk_key(&snap.node, &snap.id, &"2".repeat(64)),
            repo.manifest_key(&snap.node, &snap.id),
        ] {
            storage
                .put(&key, Bytes::from_static(b"x"), &[0; 32], &Vec::new())
                .await
                .unwrap();
        }
        assert_eq!(repo.delete_snapshot(&snap).await.unwrap(), 3);
        let deletes = storage.calls("delete");
        assert_eq!(deletes[0], repo.manifest_key(&snap.node, &snap.id));
        assert_eq!(deletes.len(), 3);
        assert!(repo.list(None).await.unwrap().is_empty());
    }

    #[test]
    fn node_names_are_checked() {
        check_node_name("rabbit@host").unwrap();
        for bad in ["", "..", "a/b", "a\nb"] {
            assert!(check_node_name(bad).is_err(), "{bad:?}");
        }
    }
}
