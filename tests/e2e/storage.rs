//! One set of storage tests, run against every backend the tool supports:
//! three independent S3 implementations (Garage, moto, SeaweedFS), each
//! started by the harness on loopback, and a local directory. Each backend
//! test calls the same checks in turn (the `object_store` crate's style);
//! where servers differ (tags, checksums), the backend says what it does
//! and the check holds it to that.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::try_join_all;
use rabbitmq_backup::repo::local::LocalStorage;
use rabbitmq_backup::repo::s3::{Addressing, S3Options, S3Storage};
use rabbitmq_backup::repo::storage::{Storage, StorageErrorKind, Tags, storage_kind};
use sha2::{Digest, Sha256};

use crate::backup::loaded_node;
use crate::harness::amqp::{drain, publish, rt};
use crate::harness::bucket::Bucket;
use crate::harness::fixtures::{classic_messages, oro_messages, priority_order};
use crate::harness::garage::garage;
use crate::harness::moto::moto;
use crate::harness::seaweedfs::seaweedfs;
use crate::harness::tool::Tool;
use crate::restore::assert_same_messages;

/// What a backend does where S3 servers differ.
struct Traits {
    /// It refuses an upload whose `x-amz-checksum-sha256` does not match.
    verifies_checksums: bool,
    /// It keeps object tags (Garage and directories do not).
    keeps_tags: bool,
    /// It has lifecycle rules to read.
    has_lifecycle: bool,
    /// It refuses a request signed with the wrong secret (moto accepts any).
    checks_credentials: bool,
}

/// A backend under test.
struct Backend {
    name: &'static str,
    storage: Arc<dyn Storage>,
    traits: Traits,
    /// The same storage with a wrong secret, for S3 servers.
    wrong_secret: Option<Arc<dyn Storage>>,
    /// A bucket that does not exist, for S3 servers.
    missing_bucket: Option<Arc<dyn Storage>>,
    /// The repository URL and environment for the binary.
    repo: String,
    env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

fn s3(endpoint: &str, region: &str, key: &str, secret: &str, bucket: &str) -> Arc<dyn Storage> {
    use aws_sdk_s3::config::{Credentials, Region};
    let sdk = rt().block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new(region.to_string()))
            .credentials_provider(Credentials::new(key, secret, None, None, "tests"))
            .load(),
    );
    let options = S3Options {
        bucket: bucket.to_string(),
        addressing: Addressing::Auto,
        timeout: std::time::Duration::from_secs(30),
    };
    Arc::new(S3Storage::with_config(&sdk, Some(endpoint.to_string()), &options).unwrap())
}

/// Builds a backend on an S3 server from its environment and a new bucket.
fn s3_backend(
    name: &'static str,
    env: Vec<(String, String)>,
    bucket: Bucket,
    traits: Traits,
) -> Backend {
    let var = |k: &str| env.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let (endpoint, region) = (var("AWS_ENDPOINT_URL_S3"), var("AWS_REGION"));
    let (key, secret) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"));
    Backend {
        name,
        storage: s3(&endpoint, &region, &key, &secret, &bucket.name),
        traits,
        wrong_secret: Some(s3(&endpoint, &region, &key, "not-the-secret", &bucket.name)),
        missing_bucket: Some(s3(&endpoint, &region, &key, &secret, "no-such-bucket-here")),
        repo: format!("s3://{}/conformance", bucket.name),
        env,
        _dir: None,
    }
}

fn digest(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

async fn put(storage: &dyn Storage, key: &str, body: &[u8], tags: &Tags) -> anyhow::Result<()> {
    storage
        .put(key, Bytes::copy_from_slice(body), &digest(body), tags)
        .await
}

#[track_caller]
fn assert_kind(result: anyhow::Result<impl std::fmt::Debug>, kind: StorageErrorKind, what: &str) {
    match result {
        Ok(v) => panic!("{what}: expected {kind:?}, got Ok({v:?})"),
        Err(e) => assert_eq!(storage_kind(&e), Some(kind), "{what}: {e:#}"),
    }
}

/// Objects go in, come out byte for byte, are listed in key order under
/// their prefix only, and go away; missing objects say so.
async fn objects_round_trip(b: &Backend) {
    let s = b.storage.as_ref();
    // Node names hold '@'; a chunk can be empty or larger than one part.
    let big: Vec<u8> = (0..9 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
    let objects: [(&str, &[u8]); 4] = [
        (
            "snapshots/rabbit@host-a/20261121T051500Z-3fa2c1d9/data/b",
            b"second",
        ),
        (
            "snapshots/rabbit@host-a/20261121T051500Z-3fa2c1d9/data/a",
            &big,
        ),
        (
            "snapshots/rabbit@host-a/20261121T051500Z-3fa2c1d9/manifest.json",
            b"",
        ),
        ("snapshots/rabbit@host-b/x", b"other node"),
    ];
    for (key, body) in objects {
        put(s, key, body, &Vec::new()).await.unwrap();
    }
    for (key, body) in objects {
        assert!(s.get(key).await.unwrap() == body, "{}: {key}", b.name);
        let meta = s.head(key).await.unwrap().unwrap();
        assert_eq!(meta.size, body.len() as u64, "{}: {key}", b.name);
        if let Some(sha) = meta.sha256 {
            assert_eq!(
                sha,
                digest(body),
                "{}: the server's checksum of {key}",
                b.name
            );
        }
    }
    let listed = s.list("snapshots/rabbit@host-a/").await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    let mut expected: Vec<&str> = objects[..3].iter().map(|(k, _)| *k).collect();
    expected.sort();
    assert_eq!(keys, expected, "{}", b.name);
    assert_eq!(listed[0].size, big.len() as u64, "{}", b.name);

    let gone = objects[0].0;
    s.delete(gone).await.unwrap();
    s.delete(gone)
        .await
        .expect("deleting a missing object is not an error");
    assert_eq!(s.head(gone).await.unwrap(), None, "{}", b.name);
    assert_kind(s.get(gone).await, StorageErrorKind::NotFound, b.name);
    assert_eq!(s.list("snapshots/rabbit@host-a/").await.unwrap().len(), 2);
    assert!(s.list("nothing/here/").await.unwrap().is_empty());
}

/// More keys than one listing page (1000) come back, all of them, in order.
async fn listings_span_pages(b: &Backend) {
    let keys: Vec<String> = (0..1010).map(|i| format!("pages/k{i:05}")).collect();
    let s = b.storage.as_ref();
    let none: Tags = Vec::new();
    try_join_all(keys.iter().map(|k| put(s, k, b"x", &none)))
        .await
        .unwrap();
    let listed: Vec<String> = s
        .list("pages/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, keys, "{}", b.name);
}

/// An upload whose declared SHA-256 does not match is refused, never
/// stored, by servers that check; the others are named in `Traits`.
async fn checksums_are_verified(b: &Backend) {
    let s = b.storage.as_ref();
    let key = "checksums/corrupt";
    let wrong = digest(b"something else");
    let result = s
        .put(key, Bytes::from_static(b"the body"), &wrong, &Vec::new())
        .await;
    if b.traits.verifies_checksums {
        assert_kind(result, StorageErrorKind::ChecksumMismatch, b.name);
        assert_eq!(
            s.head(key).await.unwrap(),
            None,
            "{}: nothing stored",
            b.name
        );
    } else {
        result.unwrap();
    }
}

/// Tags travel with an upload and can be replaced, where the server keeps
/// them; elsewhere the call says Unsupported (never a silent success).
async fn tags_are_kept_or_refused(b: &Backend) {
    let s = b.storage.as_ref();
    let key = "tags/object";
    let daily: Tags = vec![("tier".into(), "daily".into())];
    let keep: Tags = vec![("tier".into(), "keep".into())];
    if b.traits.keeps_tags {
        put(s, key, b"tagged", &daily).await.unwrap();
        assert_eq!(s.get_tags(key).await.unwrap(), daily, "{}", b.name);
        s.put_tags(key, &keep).await.unwrap();
        assert_eq!(s.get_tags(key).await.unwrap(), keep, "{}", b.name);
    } else {
        put(s, key, b"tagged", &Vec::new()).await.unwrap();
        assert_kind(
            s.put_tags(key, &keep).await,
            StorageErrorKind::Unsupported,
            b.name,
        );
    }
}

/// Lifecycle rules are read where there are any; a directory has none.
async fn lifecycle_is_readable(b: &Backend) {
    let rules = b.storage.lifecycle().await.unwrap();
    assert_eq!(
        rules.is_some(),
        b.traits.has_lifecycle,
        "{}: {rules:?}",
        b.name
    );
}

/// Wrong credentials and a missing bucket are told apart, up front.
async fn bad_settings_are_classified(b: &Backend) {
    b.storage.check().await.unwrap();
    if let Some(wrong) = &b.wrong_secret {
        let checked = wrong.check().await;
        if b.traits.checks_credentials {
            assert_kind(checked, StorageErrorKind::AccessDenied, b.name);
        } else {
            checked.unwrap();
        }
    }
    if let Some(missing) = &b.missing_bucket {
        assert_kind(
            missing.check().await,
            StorageErrorKind::NoSuchContainer,
            b.name,
        );
    }
}

fn conformance(b: Backend) {
    rt().block_on(async {
        objects_round_trip(&b).await;
        listings_span_pages(&b).await;
        checksums_are_verified(&b).await;
        tags_are_kept_or_refused(&b).await;
        lifecycle_is_readable(&b).await;
        bad_settings_are_classified(&b).await;
    });
}

fn garage_backend() -> Backend {
    let g = garage();
    let traits = Traits {
        verifies_checksums: true,
        keeps_tags: false,
        has_lifecycle: true,
        checks_credentials: true,
    };
    s3_backend("garage", g.env(), g.new_bucket(), traits)
}

fn moto_backend() -> Backend {
    let m = moto();
    let traits = Traits {
        // moto stores what it gets: the tool's own digests catch it on read.
        verifies_checksums: false,
        keeps_tags: true,
        has_lifecycle: true,
        checks_credentials: false,
    };
    s3_backend("moto", m.env(), m.new_bucket(), traits)
}

fn seaweedfs_backend() -> Backend {
    let w = seaweedfs();
    let traits = Traits {
        verifies_checksums: true,
        keeps_tags: true,
        has_lifecycle: true,
        checks_credentials: true,
    };
    s3_backend("seaweedfs", w.env(), w.new_bucket(), traits)
}

fn local_backend() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    Backend {
        name: "local",
        storage: Arc::new(LocalStorage::new(dir.path().to_path_buf())),
        traits: Traits {
            verifies_checksums: false,
            keeps_tags: false,
            has_lifecycle: false,
            checks_credentials: true,
        },
        wrong_secret: None,
        missing_bucket: None,
        repo: dir.path().display().to_string(),
        env: Vec::new(),
        _dir: Some(dir),
    }
}

#[test]
fn garage_passes_the_storage_tests() {
    conformance(garage_backend());
}

#[test]
fn moto_passes_the_storage_tests() {
    conformance(moto_backend());
}

#[test]
fn seaweedfs_passes_the_storage_tests() {
    conformance(seaweedfs_backend());
}

#[test]
fn a_local_directory_passes_the_storage_tests() {
    conformance(local_backend());
}

/// The binary on every backend, one node for all: a backup, every byte
/// read back by `verify --read-data`, and a restore that brings every
/// message back.
#[test]
fn every_backend_holds_a_real_backup_and_gives_it_back() {
    let node = loaded_node();
    for b in [
        garage_backend(),
        moto_backend(),
        seaweedfs_backend(),
        local_backend(),
    ] {
        let tool = Tool::new().with(node.env()).with(b.env.clone());
        let id = tool
            .run(&["backup", "--repo", &b.repo, "--json", "--chunk-size", "1"])
            .ok()
            .json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let verified = tool.run(&["verify", &id, "--read-data", "--repo", &b.repo]);
        verified.ok();
        node.ctl(&["purge_queue", "-p", "/", "classic"]);
        node.ctl(&["purge_queue", "-p", "oro", "oro.default"]);
        node.ctl(&["purge_queue", "-p", "/", "quorum"]);
        tool.run(&["restore", &id, "--repo", &b.repo]).ok();
        assert_same_messages(
            &drain(&node, "/", "classic"),
            &classic_messages("classic", 30),
            b.name,
        );
        assert_same_messages(
            &drain(&node, "oro", "oro.default"),
            &priority_order(&oro_messages(40)),
            b.name,
        );
        // Back to the loaded state for the next backend.
        publish(&node, "/", "", &classic_messages("classic", 30));
        publish(&node, "oro", "oro.default", &oro_messages(40));
    }
}
