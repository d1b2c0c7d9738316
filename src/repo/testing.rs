//! A storage for unit tests: a local directory that records every call and
//! can fail chosen operations a given number of times.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::lifecycle::Rule;
use super::local::LocalStorage;
use super::storage::{ObjectMeta, Storage, StorageError, StorageErrorKind, Tags};

/// Records `op key` lines and injects failures.
#[derive(Debug)]
pub struct Instrumented {
    inner: LocalStorage,
    /// Every call, as `"get a/b"`, in order.
    pub log: Mutex<Vec<String>>,
    failures: Mutex<HashMap<&'static str, (u32, StorageErrorKind)>>,
}

impl Instrumented {
    /// Wraps a directory.
    pub fn new(dir: &std::path::Path) -> Instrumented {
        Instrumented {
            inner: LocalStorage::new(dir),
            log: Mutex::new(Vec::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Makes the next `times` calls of `op` fail with `kind`.
    pub fn fail(&self, op: &'static str, times: u32, kind: StorageErrorKind) {
        self.failures.lock().unwrap().insert(op, (times, kind));
    }

    fn enter(&self, op: &'static str, key: &str) -> anyhow::Result<()> {
        self.log.lock().unwrap().push(format!("{op} {key}"));
        let mut failures = self.failures.lock().unwrap();
        if let Some((left, kind)) = failures.get_mut(op)
            && *left > 0
        {
            *left -= 1;
            return Err(StorageError::new(*kind, format!("injected {op} failure")).into());
        }
        Ok(())
    }

    /// The logged calls of one operation, in order.
    pub fn calls(&self, op: &str) -> Vec<String> {
        let prefix = format!("{op} ");
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }
}

#[async_trait]
impl Storage for Instrumented {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn check(&self) -> anyhow::Result<()> {
        self.enter("check", "")?;
        self.inner.check().await
    }
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        sha256: &[u8; 32],
        tags: &Tags,
    ) -> anyhow::Result<()> {
        self.enter("put", key)?;
        self.inner.put(key, body, sha256, tags).await
    }
    async fn get(&self, key: &str) -> anyhow::Result<Bytes> {
        self.enter("get", key)?;
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> anyhow::Result<Option<ObjectMeta>> {
        self.enter("head", key)?;
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<ObjectMeta>> {
        self.enter("list", prefix)?;
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.enter("delete", key)?;
        self.inner.delete(key).await
    }
    async fn put_tags(&self, key: &str, tags: &Tags) -> anyhow::Result<()> {
        self.enter("put_tags", key)?;
        self.inner.put_tags(key, tags).await
    }
    async fn get_tags(&self, key: &str) -> anyhow::Result<Tags> {
        self.enter("get_tags", key)?;
        self.inner.get_tags(key).await
    }
    async fn lifecycle(&self) -> anyhow::Result<Option<Vec<Rule>>> {
        self.enter("lifecycle", "")?;
        self.inner.lifecycle().await
    }
}
