//! `manifest.json`: the description and commit marker of a snapshot.
//!
//! Format 1 is what version-1 tools restore correctly: a plain snapshot of
//! files. Format 2 (DESIGN §4) adds logical records, encryption and cluster
//! membership; a snapshot that uses any of them is written as format 2 so a
//! version-1 tool refuses it instead of restoring part of it. Every v2 field
//! is optional, so both formats share this one struct; readers accept both.

use serde::{Deserialize, Serialize};

use crate::error::{incompatible, integrity};
use crate::rabbit::datadir::{QueuePath, VhostDir};
use crate::rabbit::queue_type::QueueType;

/// The plain format, readable by every version of the tool.
pub const FORMAT: u32 = 1;

/// The newest format this version reads and writes.
pub const FORMAT_V2: u32 = 2;

/// How the message store was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// `stop_app`, local copy, `start_app`: a consistent copy.
    StopApp,
    /// Files read from the running node: may be inconsistent.
    Live,
}

impl Consistency {
    /// The name used in the manifest and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::StopApp => "stop-app",
            Consistency::Live => "live",
        }
    }
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The node the snapshot was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node name as RabbitMQ reports it (`rabbit@host`).
    pub name: String,
    /// RabbitMQ version, e.g. `3.10.8`.
    pub rabbitmq_version: String,
    /// Erlang/OTP version.
    pub erlang_version: String,
    /// The node's data directory at backup time.
    pub data_dir: String,
    /// The cluster's name, when the node is a member of a cluster (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// Every member of the node's cluster, when it is a cluster member: the
    /// snapshot then holds only the messages of queues whose home (classic)
    /// or leader (quorum, stream) is this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_members: Vec<String>,
}

/// How a queue's messages are in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capture {
    /// Its classic-queue files are in `msg_stores/`.
    Files,
    /// Its messages are logical records under `logical/` (quorum queues, streams).
    Logical,
    /// Its messages are not in the snapshot.
    None,
}

/// A classic queue's on-disk index format (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum IndexVersion {
    /// `journal.jif` + `N.idx`: the default up to 3.13; 4.3+ cannot read it.
    V1,
    /// `N.qi` + `N.qs`: the default from 4.0, the only one from 4.3.
    V2,
}

impl TryFrom<u8> for IndexVersion {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            1 => Ok(IndexVersion::V1),
            2 => Ok(IndexVersion::V2),
            other => Err(format!(
                "unknown queue index version {other} (expected 1 or 2)"
            )),
        }
    }
}

impl From<IndexVersion> for u8 {
    fn from(v: IndexVersion) -> u8 {
        match v {
            IndexVersion::V1 => 1,
            IndexVersion::V2 => 2,
        }
    }
}

/// One queue's logical records in the archive (format 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogicalEntry {
    /// Path in the archive, under `logical/`.
    pub path: String,
    /// Virtual host.
    pub vhost: String,
    /// Queue name.
    pub queue: String,
    /// Number of records (messages).
    pub messages: u64,
    /// Size of the records file in bytes.
    pub bytes: u64,
    /// SHA-256 (hex) of the records file.
    pub sha256: String,
}

/// The one encryption scheme this version reads and writes: each chunk is
/// one binary age file to X25519 recipients.
pub const AGE: &str = "age";

/// How the chunks are encrypted (format 2; DESIGN §14). No secret here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// The scheme: [`AGE`].
    pub scheme: String,
    /// The recipients' public keys.
    pub recipients: Vec<String>,
}

/// Why a queue's restored count may be lower than at backup time, as the
/// backup knew it (the restore reports such a shortfall, it does not roll back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Caveat {
    /// A message TTL applies (queue argument or policy): messages expire.
    Ttl,
    /// Consumers were attached (`--allow-consumers`): messages in flight.
    Consumers,
    /// Non-persistent messages were counted that a stop does not keep
    /// (`--allow-transient-loss`).
    Transient,
}

impl Caveat {
    /// Why, in words.
    pub fn reason(self) -> &'static str {
        match self {
            Caveat::Ttl => "a message TTL applies, so messages expire",
            Caveat::Consumers => "consumers were attached at backup time (--allow-consumers)",
            Caveat::Transient => {
                "it held non-persistent messages, which the broker's stop does not keep (--allow-transient-loss)"
            }
        }
    }
}

/// Digest and object counts of `definitions.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionsInfo {
    /// SHA-256 (hex) of the `definitions.json` bytes in the archive.
    pub sha256: String,
    /// Number of virtual hosts.
    pub vhosts: u64,
    /// Number of queues.
    pub queues: u64,
    /// Number of exchanges.
    pub exchanges: u64,
    /// Number of bindings.
    pub bindings: u64,
    /// Number of users.
    pub users: u64,
    /// Number of policies.
    pub policies: u64,
}

/// One queue at backup time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// Virtual host.
    pub vhost: String,
    /// Queue name.
    pub name: String,
    /// `classic`, `quorum`, `stream`…
    #[serde(rename = "type")]
    pub queue_type: QueueType,
    /// Whether the queue is durable.
    pub durable: bool,
    /// Messages in the queue (ready and unacknowledged) just before the capture.
    pub messages: u64,
    /// Whether the archive holds this queue's messages.
    pub covered: bool,
    /// The queue's directories in the archive (one per priority level in use).
    pub dirs: Vec<QueuePath>,
    /// How its messages are captured (absent in manifests of tools before
    /// it existed: see [`QueueEntry::captured_as`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<Capture>,
    /// A classic queue's index version, read from its directories (absent
    /// when the queue has no directory: nothing of it is on disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_version: Option<IndexVersion>,
    /// Why the restored count may be lower (see [`Caveat`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caveats: Vec<Caveat>,
    /// The cluster member holding the queue's messages, when it is not the
    /// snapshot's node: they are not in this snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_node: Option<String>,
}

impl QueueEntry {
    /// How its messages are captured; manifests without the field say it
    /// with `covered` (files or nothing).
    pub fn captured_as(&self) -> Capture {
        match self.capture {
            Some(c) => c,
            None if self.covered => Capture::Files,
            None => Capture::None,
        }
    }

    /// Its messages are in the snapshot's message store files: what a swap
    /// brings back (logical records need a replay).
    pub fn in_files(&self) -> bool {
        self.covered && self.captured_as() == Capture::Files
    }
}

/// A regular file in the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the data directory (`msg_stores/...`) or `definitions.json`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 (hex) of the content.
    pub sha256: String,
    /// Unix permission bits.
    pub mode: u32,
}

/// A directory in the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// Path relative to the data directory.
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
}

/// One stored chunk of the compressed tar stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    /// SHA-256 (hex) of the stored (compressed) bytes: also the object name.
    pub sha256: String,
    /// Stored size in bytes.
    pub size: u64,
    /// Size of the tar bytes it decompresses to.
    pub uncompressed_size: u64,
}

/// A virtual host whose message store is in the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostEntry {
    /// Virtual host name.
    pub name: String,
    /// Its directory, `msg_stores/vhosts/<base36 md5>`.
    pub dir: VhostDir,
}

/// Sums over the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Number of regular files.
    pub files: u64,
    /// Sum of file sizes.
    pub file_bytes: u64,
    /// Length of the tar stream.
    pub tar_bytes: u64,
    /// Sum of stored chunk sizes.
    pub stored_bytes: u64,
    /// Number of chunks.
    pub chunks: u64,
    /// Messages in all queues at backup time.
    pub messages: u64,
    /// Messages in queues whose messages the archive holds.
    pub covered_messages: u64,
}

/// The whole manifest. Field names are part of the repository format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`] or [`FORMAT_V2`]: see [`Manifest::required_format`].
    pub format: u32,
    /// Snapshot id, `YYYYMMDDTHHMMSSZ-<8 hex>`.
    pub id: String,
    /// RFC 3339 UTC time the backup started.
    pub created_at: String,
    /// Version of rabbitmq-backup that wrote it.
    pub tool_version: String,
    /// The source node.
    pub node: NodeInfo,
    /// How the message store was captured.
    pub consistency: Consistency,
    /// How long the broker was stopped for the capture (0 for live).
    pub pause_ms: u64,
    /// Definitions digest and counts.
    pub definitions: DefinitionsInfo,
    /// Virtual hosts whose message stores are in the archive.
    #[serde(default)]
    pub vhosts: Vec<VhostEntry>,
    /// Every queue at backup time.
    pub queues: Vec<QueueEntry>,
    /// Every regular file in the archive, in archive order.
    pub files: Vec<FileEntry>,
    /// Every directory in the archive, in archive order.
    #[serde(default)]
    pub dirs: Vec<DirEntry>,
    /// Chunks in stream order.
    pub chunks: Vec<ChunkEntry>,
    /// Sums.
    pub totals: Totals,
    /// Backup tier used for retention (`daily`, `weekly`, `monthly`).
    #[serde(default)]
    pub tier: String,
    /// Chunking parameters, for information.
    #[serde(default)]
    pub chunking: Chunking,
    /// Logical records, one entry per captured queue (format 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logical: Vec<LogicalEntry>,
    /// How the chunks are encrypted (format 2); absent when they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// How the stream was cut and compressed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunking {
    /// Target tar bytes per chunk.
    pub chunk_size: u64,
    /// Compression algorithm (`zstd`).
    pub compression: String,
    /// Compression level.
    pub level: i32,
}

impl Manifest {
    /// Parses a manifest, checking its format version first so that a newer
    /// format gets a clear "upgrade" message instead of a parse error.
    pub fn from_json(bytes: &[u8], origin: &str) -> anyhow::Result<Manifest> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| integrity(format!("the manifest {origin} is not valid JSON: {e}")))?;
        let format = value.get("format").and_then(|f| f.as_u64());
        match format {
            Some(f) if (u64::from(FORMAT)..=u64::from(FORMAT_V2)).contains(&f) => {}
            Some(f) => {
                return Err(incompatible(format!(
                    "the manifest {origin} has format version {f}; this rabbitmq-backup {} reads formats {FORMAT} to {FORMAT_V2}: use a newer rabbitmq-backup",
                    env!("CARGO_PKG_VERSION")
                )));
            }
            None => {
                return Err(integrity(format!(
                    "the manifest {origin} has no \"format\" field: it is not a rabbitmq-backup manifest or it is damaged"
                )));
            }
        }
        // An unknown scheme comes from a newer tool: say so, not "malformed".
        if let Some(scheme) = value
            .get("encryption")
            .and_then(|e| e.get("scheme"))
            .and_then(|s| s.as_str())
            && scheme != AGE
        {
            return Err(incompatible(format!(
                "the manifest {origin} says its chunks are encrypted with {scheme:?}, which this rabbitmq-backup {} cannot read: use a newer rabbitmq-backup",
                env!("CARGO_PKG_VERSION")
            )));
        }
        let manifest: Manifest = serde_json::from_value(value)
            .map_err(|e| integrity(format!("the manifest {origin} is malformed: {e}")))?;
        manifest.validate(origin)?;
        Ok(manifest)
    }

    /// The format the snapshot must be written as: [`FORMAT_V2`] when it
    /// holds logical records, is encrypted or belongs to a cluster (a
    /// version-1 tool would restore it partly), [`FORMAT`] otherwise.
    pub fn required_format(&self) -> u32 {
        let v2 = !self.logical.is_empty()
            || self.encryption.is_some()
            || self.node.cluster_name.is_some()
            || !self.node.cluster_members.is_empty();
        if v2 { FORMAT_V2 } else { FORMAT }
    }

    /// Serializes the manifest (pretty, for humans reading the bucket).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("manifest serializes");
        out.push(b'\n');
        out
    }

    /// Structural checks that do not need the data: digests look like
    /// digests, paths are safe, the chunk sizes add up.
    fn validate(&self, origin: &str) -> anyhow::Result<()> {
        let bad = |what: String| integrity(format!("the manifest {origin} is invalid: {what}"));
        if !crate::repo::snapshot_id::is_valid(&self.id) {
            return Err(bad(format!("snapshot id {:?} is malformed", self.id)));
        }
        if !is_sha256_hex(&self.definitions.sha256) {
            return Err(bad("the definitions digest is malformed".into()));
        }
        for chunk in &self.chunks {
            if !is_sha256_hex(&chunk.sha256) {
                return Err(bad(format!(
                    "chunk name {:?} is not a SHA-256",
                    chunk.sha256
                )));
            }
        }
        for file in &self.files {
            super::paths::check_archive_path(&file.path).map_err(|e| bad(e.to_string()))?;
            if !is_sha256_hex(&file.sha256) {
                return Err(bad(format!("the digest of {} is malformed", file.path)));
            }
        }
        for dir in &self.dirs {
            super::paths::check_archive_path(&dir.path).map_err(|e| bad(e.to_string()))?;
        }
        if self.format < self.required_format() {
            return Err(bad(format!(
                "it says format {} but holds logical records, encryption or a cluster, which need format {FORMAT_V2}",
                self.format
            )));
        }
        if let Some(encryption) = &self.encryption {
            if encryption.recipients.is_empty() {
                return Err(bad("it is encrypted to no recipient".into()));
            }
            for r in &encryption.recipients {
                crate::crypt::parse_recipient(r).map_err(|why| bad(format!("recipient {why}")))?;
            }
        }
        for entry in &self.logical {
            super::paths::check_archive_path(&entry.path).map_err(|e| bad(e.to_string()))?;
            if !entry.path.starts_with(super::paths::LOGICAL) {
                return Err(bad(format!(
                    "logical records {:?} are not under {}/",
                    entry.path,
                    super::paths::LOGICAL
                )));
            }
            if !is_sha256_hex(&entry.sha256) {
                return Err(bad(format!("the digest of {} is malformed", entry.path)));
            }
        }
        let sum: u64 = self.chunks.iter().map(|c| c.uncompressed_size).sum();
        if sum != self.totals.tar_bytes {
            return Err(bad(format!(
                "the chunks hold {sum} tar bytes but the totals say {}",
                self.totals.tar_bytes
            )));
        }
        Ok(())
    }

    /// Queues whose messages the archive does not hold, with messages.
    pub fn uncovered_queues(&self) -> impl Iterator<Item = &QueueEntry> {
        self.queues.iter().filter(|q| !q.covered)
    }
}

/// True for 64 lowercase hex digits.
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::{Kind, kind_of};
    use proptest::prelude::*;

    pub(crate) fn sample() -> Manifest {
        let digest = "a".repeat(64);
        Manifest {
            format: FORMAT,
            id: "20261121T051500Z-3fa2c1d9".into(),
            created_at: "2026-11-21T05:15:00Z".into(),
            tool_version: "0.1.0".into(),
            node: NodeInfo {
                name: "rabbit@host".into(),
                rabbitmq_version: "3.10.8".into(),
                erlang_version: "25.2.3".into(),
                data_dir: "/var/lib/rabbitmq/mnesia/rabbit@host".into(),
                cluster_name: None,
                cluster_members: vec![],
            },
            consistency: Consistency::StopApp,
            pause_ms: 840,
            definitions: DefinitionsInfo {
                sha256: digest.clone(),
                vhosts: 1,
                ..Default::default()
            },
            vhosts: vec![VhostEntry {
                name: "/".into(),
                dir: VhostDir::of("/"),
            }],
            queues: vec![QueueEntry {
                vhost: "/".into(),
                name: "oro.default".into(),
                queue_type: "classic".into(),
                durable: true,
                messages: 3,
                covered: true,
                dirs: vec![QueuePath::new(&VhostDir::of("/"), "X").unwrap()],
                capture: Some(Capture::Files),
                index_version: Some(IndexVersion::V1),
                caveats: vec![],
                home_node: None,
            }],
            files: vec![FileEntry {
                path: "msg_stores/vhosts/628WB79CIFDYO9LJI6DKMI09L/.vhost".into(),
                size: 1,
                sha256: digest.clone(),
                mode: 0o644,
            }],
            dirs: vec![],
            chunks: vec![ChunkEntry {
                sha256: digest,
                size: 10,
                uncompressed_size: 2048,
            }],
            totals: Totals {
                tar_bytes: 2048,
                chunks: 1,
                ..Default::default()
            },
            tier: "daily".into(),
            chunking: Chunking::default(),
            logical: vec![],
            encryption: None,
        }
    }

    /// A snapshot that needs format 2: logical records of a cluster member.
    fn sample_v2() -> Manifest {
        let mut m = sample();
        m.format = FORMAT_V2;
        m.node.cluster_name = Some("prod".into());
        m.node.cluster_members = vec!["rabbit@a".into(), "rabbit@b".into()];
        m.queues[0].index_version = Some(IndexVersion::V2);
        m.queues.push(QueueEntry {
            vhost: "/".into(),
            name: "orders".into(),
            queue_type: "quorum".into(),
            durable: true,
            messages: 2,
            covered: true,
            dirs: vec![],
            capture: Some(Capture::Logical),
            index_version: None,
            caveats: vec![Caveat::Consumers],
            home_node: None,
        });
        m.logical.push(LogicalEntry {
            path: "logical/628WB79CIFDYO9LJI6DKMI09L/orders.records".into(),
            vhost: "/".into(),
            queue: "orders".into(),
            messages: 2,
            bytes: 300,
            sha256: "b".repeat(64),
        });
        m.encryption = Some(Encryption {
            scheme: AGE.into(),
            recipients: vec![RECIPIENT.into()],
        });
        m
    }

    /// A recipient for tests (public: age's documentation example).
    const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    #[test]
    fn inconsistent_or_unknown_encryption_is_refused() {
        let mut none = sample_v2();
        none.encryption.as_mut().unwrap().recipients.clear();
        let mut bad = sample_v2();
        bad.encryption.as_mut().unwrap().recipients[0] = "age1nope".into();
        for m in [none, bad] {
            let err = Manifest::from_json(&m.to_json(), "m").unwrap_err();
            assert_eq!(kind_of(&err), Kind::Integrity, "{err}");
        }
        let mut v: serde_json::Value = serde_json::from_slice(&sample_v2().to_json()).unwrap();
        v["encryption"]["scheme"] = "quantum".into();
        let err = Manifest::from_json(v.to_string().as_bytes(), "m").unwrap_err();
        assert_eq!(kind_of(&err), Kind::Incompatible, "{err}");
        assert!(err.to_string().contains("quantum"), "{err}");
    }

    #[test]
    fn format_2_round_trips_and_is_required_by_what_v1_cannot_restore() {
        let m = sample_v2();
        assert_eq!(m.required_format(), FORMAT_V2);
        assert_eq!(Manifest::from_json(&m.to_json(), "t").unwrap(), m);
        let v: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        assert_eq!(v["queues"][0]["index_version"], 2);
        assert_eq!(v["queues"][1]["capture"], "logical");
        assert_eq!(v["node"]["cluster_members"][1], "rabbit@b");
        assert_eq!(v["logical"][0]["messages"], 2);
        assert_eq!(v["encryption"]["scheme"], "age");
        // Each of the three alone needs format 2.
        let mut only = sample();
        only.encryption = sample_v2().encryption;
        assert_eq!(only.required_format(), FORMAT_V2);
        let mut only = sample();
        only.node.cluster_name = Some("prod".into());
        assert_eq!(only.required_format(), FORMAT_V2);
        assert_eq!(sample().required_format(), FORMAT);
        // A format-1 manifest claiming v2 content is refused.
        let mut lying = sample_v2();
        lying.format = FORMAT;
        let err = Manifest::from_json(&lying.to_json(), "m").unwrap_err();
        assert_eq!(kind_of(&err), Kind::Integrity);
        assert!(err.to_string().contains("format 2"), "{err}");
    }

    #[test]
    fn version_1_manifests_without_the_new_fields_still_read() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        for key in ["capture", "index_version"] {
            v["queues"][0].as_object_mut().unwrap().remove(key);
        }
        let m = Manifest::from_json(v.to_string().as_bytes(), "m").unwrap();
        assert_eq!(m.queues[0].captured_as(), Capture::Files);
        assert_eq!(m.queues[0].index_version, None);
    }

    #[test]
    fn unknown_index_versions_and_stray_logical_paths_are_refused() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        v["queues"][0]["index_version"] = 3.into();
        let err = Manifest::from_json(v.to_string().as_bytes(), "m").unwrap_err();
        assert!(err.to_string().contains("index version 3"), "{err}");
        let mut m = sample_v2();
        m.logical[0].path = "msg_stores/x".into();
        let err = Manifest::from_json(&m.to_json(), "m").unwrap_err();
        assert_eq!(kind_of(&err), Kind::Integrity);
    }

    #[test]
    fn round_trips() {
        let m = sample();
        assert_eq!(Manifest::from_json(&m.to_json(), "t").unwrap(), m);
    }

    #[test]
    fn has_the_contract_field_names() {
        let v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        for key in [
            "format",
            "id",
            "created_at",
            "node",
            "consistency",
            "pause_ms",
            "definitions",
            "queues",
            "files",
            "chunks",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["consistency"], "stop-app");
        assert_eq!(v["queues"][0]["type"], "classic");
        for key in ["name", "rabbitmq_version", "erlang_version", "data_dir"] {
            assert!(v["node"].get(key).is_some(), "node.{key}");
        }
        for key in ["sha256", "size", "uncompressed_size"] {
            assert!(v["chunks"][0].get(key).is_some(), "chunks.{key}");
        }
    }

    #[test]
    fn newer_format_is_incompatible() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        v["format"] = 3.into();
        let err = Manifest::from_json(v.to_string().as_bytes(), "m").unwrap_err();
        assert_eq!(kind_of(&err), Kind::Incompatible);
        assert!(err.to_string().contains("format version 3"), "{err}");
    }

    #[test]
    fn hostile_paths_are_refused() {
        for path in [
            "../etc/passwd",
            "/etc/passwd",
            "msg_stores/../../x",
            "msg_stores/a/../../b",
        ] {
            let mut m = sample();
            m.files[0].path = path.into();
            let err = Manifest::from_json(&m.to_json(), "m").unwrap_err();
            assert_eq!(kind_of(&err), Kind::Integrity, "{path}");
        }
    }

    #[test]
    fn garbage_is_an_integrity_error() {
        for input in [&b"not json"[..], b"{}", b"[]", b"{\"format\":\"1\"}"] {
            let err = Manifest::from_json(input, "m").unwrap_err();
            assert!(
                matches!(kind_of(&err), Kind::Integrity | Kind::Incompatible),
                "{err}"
            );
        }
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Manifest::from_json(&bytes, "fuzz");
        }

        #[test]
        fn parser_never_panics_on_mutated_manifests(pos in 0usize..2000, byte in any::<u8>()) {
            let mut json = sample().to_json();
            let i = pos % json.len();
            json[i] = byte;
            let _ = Manifest::from_json(&json, "fuzz");
        }
    }
}
