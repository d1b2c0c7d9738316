//! A storage wrapper that retries transient failures with exponential backoff.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::lifecycle::Rule;
use super::storage::{ObjectMeta, Storage, StorageErrorKind, Tags, storage_kind};

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, retry: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << retry.min(16));
        let capped = exp.min(self.max_delay);
        // Up to 25% jitter so parallel uploads do not retry in lockstep.
        let jitter = rand::random_range(0..=capped.as_millis() as u64 / 4);
        capped + Duration::from_millis(jitter)
    }
}

/// Retries the operations of an inner storage on transient errors.
#[derive(Debug, Clone)]
pub struct Retrying {
    inner: Arc<dyn Storage>,
    policy: RetryPolicy,
}

impl Retrying {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: Arc<dyn Storage>, policy: RetryPolicy) -> Self {
        Retrying { inner, policy }
    }

    async fn run<T, F, Fut>(&self, what: &str, retry_checksum: bool, op: F) -> anyhow::Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(err) => {
                    let retryable = match storage_kind(&err) {
                        Some(StorageErrorKind::Transient) => true,
                        // Bytes damaged in transit: ours are intact, send them again.
                        Some(StorageErrorKind::ChecksumMismatch) => retry_checksum,
                        _ => false,
                    };
                    if !retryable || attempt >= self.policy.attempts {
                        if retryable {
                            return Err(err.context(format!(
                                "{what} failed after {}",
                                crate::output::count(attempt, "attempt")
                            )));
                        }
                        return Err(err);
                    }
                    let delay = self.policy.delay(attempt - 1);
                    tracing::warn!(
                        "{what}: {} (attempt {attempt} of {}); retrying in {} ms",
                        crate::error::render(&err),
                        self.policy.attempts,
                        delay.as_millis()
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[async_trait]
impl Storage for Retrying {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn check(&self) -> anyhow::Result<()> {
        self.run("checking the repository", false, || self.inner.check())
            .await
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        sha256: &[u8; 32],
        tags: &Tags,
    ) -> anyhow::Result<()> {
        self.run(&format!("upload of {key}"), true, || {
            self.inner.put(key, body.clone(), sha256, tags)
        })
        .await
    }

    async fn get(&self, key: &str) -> anyhow::Result<Bytes> {
        self.run(&format!("download of {key}"), false, || self.inner.get(key))
            .await
    }

    async fn head(&self, key: &str) -> anyhow::Result<Option<ObjectMeta>> {
        self.run(&format!("stat of {key}"), false, || self.inner.head(key))
            .await
    }

    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<ObjectMeta>> {
        self.run(&format!("listing of {prefix}"), false, || {
            self.inner.list(prefix)
        })
        .await
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.run(&format!("deletion of {key}"), false, || {
            self.inner.delete(key)
        })
        .await
    }

    async fn put_tags(&self, key: &str, tags: &Tags) -> anyhow::Result<()> {
        self.run(&format!("tagging of {key}"), false, || {
            self.inner.put_tags(key, tags)
        })
        .await
    }

    async fn get_tags(&self, key: &str) -> anyhow::Result<Tags> {
        self.run(&format!("reading tags of {key}"), false, || {
            self.inner.get_tags(key)
        })
        .await
    }

    async fn lifecycle(&self) -> anyhow::Result<Option<Vec<Rule>>> {
        self.run("reading lifecycle rules", false, || self.inner.lifecycle())
            .await
    }
}

/// Reads of an object whose bytes fail their check before it counts as
/// damaged: bytes damaged in transit come right on a second read, bytes
/// damaged in storage never do.
pub const READS: u32 = 3;

/// Runs `read` (a download and its check) up to [`READS`] times while it
/// fails with an integrity error; any other outcome is returned at once.
pub async fn reread_on_integrity<T, F, Fut>(mut read: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match read().await {
            Err(e)
                if attempt < READS
                    && crate::error::kind_of(&e) == crate::error::Kind::Integrity =>
            {
                tracing::warn!("{e}; reading it again ({attempt} of {READS})");
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::testing::Instrumented;

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    async fn setup(
        failures: u32,
        kind: StorageErrorKind,
    ) -> (tempfile::TempDir, Arc<Instrumented>, Retrying) {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(Instrumented::new(dir.path()));
        inner
            .put("k", Bytes::from_static(b"v"), &[0; 32], &Vec::new())
            .await
            .unwrap();
        inner.fail("get", failures, kind);
        let retrying = Retrying::new(inner.clone(), fast());
        (dir, inner, retrying)
    }

    #[tokio::test]
    async fn retries_transient_errors_until_success() {
        let (_dir, inner, store) = setup(2, StorageErrorKind::Transient).await;
        assert_eq!(store.get("k").await.unwrap(), Bytes::from_static(b"v"));
        assert_eq!(inner.calls("get").len(), 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_last_attempt() {
        let (_dir, inner, store) = setup(3, StorageErrorKind::Transient).await;
        let err = store.get("k").await.unwrap_err();
        assert!(format!("{err:#}").contains("after 3 attempts"), "{err:#}");
        assert_eq!(inner.calls("get").len(), 3);
    }

    #[tokio::test]
    async fn does_not_retry_permanent_errors() {
        let (_dir, inner, store) = setup(1, StorageErrorKind::AccessDenied).await;
        let err = store.get("k").await.unwrap_err();
        assert_eq!(storage_kind(&err), Some(StorageErrorKind::AccessDenied));
        assert_eq!(inner.calls("get").len(), 1);
    }

    #[tokio::test]
    async fn uploads_rejected_for_their_checksum_are_sent_again() {
        let (_dir, inner, store) = setup(0, StorageErrorKind::Other).await;
        inner.fail("put", 1, StorageErrorKind::ChecksumMismatch);
        store
            .put("k2", Bytes::from_static(b"x"), &[0; 32], &Vec::new())
            .await
            .unwrap();
        assert_eq!(
            inner.calls("put").len(),
            3,
            "the setup put, the rejected one, the retry"
        );
    }

    #[tokio::test]
    async fn integrity_failures_are_read_again_a_bounded_number_of_times() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let reads = AtomicU32::new(0);
        // Damaged twice, then right.
        let got = reread_on_integrity(|| async {
            match reads.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(crate::error::integrity("damaged")),
                _ => Ok(7),
            }
        })
        .await
        .unwrap();
        assert_eq!((got, reads.load(Ordering::SeqCst)), (7, 3));
        // Always damaged: READS reads, then the integrity error.
        reads.store(0, Ordering::SeqCst);
        let err = reread_on_integrity(|| async {
            reads.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(crate::error::integrity("damaged"))
        })
        .await
        .unwrap_err();
        assert_eq!(reads.load(Ordering::SeqCst), READS);
        assert_eq!(crate::error::kind_of(&err), crate::error::Kind::Integrity);
        // Other errors are not read again.
        reads.store(0, Ordering::SeqCst);
        reread_on_integrity(|| async {
            reads.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(anyhow::anyhow!("refused"))
        })
        .await
        .unwrap_err();
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }
}
