//! The layout of a node's data directory: where each vhost's and queue's
//! messages live. Names depend only on vhost and queue names, never on the
//! node name, which is what makes a restore onto another host possible.

use std::fmt;
use std::path::Path;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::archive::manifest::IndexVersion;
use crate::archive::paths::check_archive_path;

/// `msg_stores/vhosts/<VH>`: a vhost's message store, relative to the data
/// directory. Made from the vhost's name ([`VhostDir::of`]) or read from a
/// manifest or journal, where it is checked ([`VhostDir::parse`]), so that
/// a path of this type never leaves the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VhostDir(String);

impl VhostDir {
    /// The directory of `vhost`: VH is the base-36 MD5 of its name.
    pub fn of(vhost: &str) -> VhostDir {
        VhostDir(format!("msg_stores/vhosts/{}", vhost_dir_name(vhost)))
    }

    /// Checks a stored path: exactly `msg_stores/vhosts/<one safe segment>`.
    pub fn parse(path: &str) -> anyhow::Result<VhostDir> {
        check_archive_path(path)?;
        match path.split('/').collect::<Vec<_>>()[..] {
            ["msg_stores", "vhosts", _] => Ok(VhostDir(path.to_string())),
            _ => anyhow::bail!("vhost directory {path:?} is not msg_stores/vhosts/<name>"),
        }
    }

    /// The path, relative to the data directory.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment (`<VH>`), for naming copies of it elsewhere.
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl TryFrom<String> for VhostDir {
    type Error = anyhow::Error;
    fn try_from(path: String) -> anyhow::Result<VhostDir> {
        VhostDir::parse(&path)
    }
}

impl From<VhostDir> for String {
    fn from(dir: VhostDir) -> String {
        dir.0
    }
}

impl AsRef<Path> for VhostDir {
    fn as_ref(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl std::borrow::Borrow<str> for VhostDir {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VhostDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `msg_stores/vhosts/<VH>/queues/<Q>`: a classic queue's index directory,
/// relative to the data directory (one per priority level in use).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueuePath(String);

impl QueuePath {
    /// The index directory `queue` (a directory name) of `vhost`.
    pub fn new(vhost: &VhostDir, queue: &str) -> anyhow::Result<QueuePath> {
        QueuePath::parse(&format!("{vhost}/queues/{queue}"))
    }

    /// Checks a stored path: `msg_stores/vhosts/<VH>/queues/<Q>`.
    pub fn parse(path: &str) -> anyhow::Result<QueuePath> {
        check_archive_path(path)?;
        match path.split('/').collect::<Vec<_>>()[..] {
            ["msg_stores", "vhosts", _, "queues", _] => Ok(QueuePath(path.to_string())),
            _ => anyhow::bail!(
                "queue directory {path:?} is not msg_stores/vhosts/<name>/queues/<name>"
            ),
        }
    }

    /// The path, relative to the data directory.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The vhost directory it is in.
    pub fn vhost_dir(&self) -> VhostDir {
        let end = self.0.find("/queues/").unwrap_or(self.0.len());
        VhostDir(self.0[..end].to_string())
    }
}

impl TryFrom<String> for QueuePath {
    type Error = anyhow::Error;
    fn try_from(path: String) -> anyhow::Result<QueuePath> {
        QueuePath::parse(&path)
    }
}

impl From<QueuePath> for String {
    fn from(path: QueuePath) -> String {
        path.0
    }
}

impl AsRef<Path> for QueuePath {
    fn as_ref(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl fmt::Display for QueuePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The base-36 (upper case) MD5 of the vhost name, as RabbitMQ computes it.
fn vhost_dir_name(vhost: &str) -> String {
    base36_md5(vhost.as_bytes())
}

/// A queue's directory name: the base-36 MD5 of `"queue"`, the vhost and
/// the queue name (with its priority suffix, for a priority level).
pub fn queue_dir_name(vhost: &str, queue: &[u8]) -> String {
    base36_md5(&[b"queue", vhost.as_bytes(), queue].concat())
}

/// The base-36 (upper case) MD5 of `data`, as RabbitMQ names directories.
pub fn base36_md5(data: &[u8]) -> String {
    let digest = Md5::digest(data);
    let mut n = u128::from_be_bytes(digest.into());
    if n == 0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while n > 0 {
        let d = (n % 36) as u8;
        out.push(if d < 10 { b'0' + d } else { b'A' + d - 10 });
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// A classic queue's index directory found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDir {
    /// The vhost named in `.queue_name`.
    pub vhost: String,
    /// The queue named in `.queue_name`, without a priority suffix.
    pub queue: String,
    /// The priority level for `x-max-priority` queues (one directory each).
    pub priority: Option<u8>,
    /// The index format of the directory.
    pub index: IndexVersion,
    /// Path relative to the directory holding `msg_stores`.
    pub dir: QueuePath,
}

/// What a `.queue_name` file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueName {
    /// The vhost.
    pub vhost: String,
    /// The queue, without a priority suffix.
    pub queue: String,
    /// The priority level, for a sub-queue of an `x-max-priority` queue.
    pub priority: Option<u8>,
    /// Version 2 indexes say so in a third line.
    pub index: IndexVersion,
}

/// The line version-2 indexes add (`rabbit_classic_queue_index_v2`).
const INDEX_V2_LINE: &[u8] = b"INDEX: v2\n";

/// Parses a `.queue_name` file: `VHOST: <vhost>\nQUEUE: <name>\n`, plus
/// `INDEX: v2\n` for a version-2 index (3.10+). Priority sub-queues are
/// named `<name>\0<priority byte>`.
pub fn parse_queue_name(content: &[u8]) -> Option<QueueName> {
    let rest = content.strip_prefix(b"VHOST: ")?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let vhost = String::from_utf8(rest[..nl].to_vec()).ok()?;
    let rest = rest[nl + 1..].strip_prefix(b"QUEUE: ")?;
    let (rest, index) = match rest.strip_suffix(INDEX_V2_LINE) {
        Some(rest) => (rest, IndexVersion::V2),
        None => (rest, IndexVersion::V1),
    };
    let rest = rest.strip_suffix(b"\n").unwrap_or(rest);
    let (name, priority) = match rest {
        [name @ .., 0, p] => (name, Some(*p)),
        name => (name, None),
    };
    Some(QueueName {
        vhost,
        queue: String::from_utf8(name.to_vec()).ok()?,
        priority,
        index,
    })
}

/// Every queue directory under `<root>/msg_stores/vhosts/*/queues/`, sorted.
/// Directories without a readable `.queue_name` are skipped.
pub fn scan_queue_dirs(root: &Path) -> std::io::Result<Vec<QueueDir>> {
    let mut out = Vec::new();
    let vhosts = root.join("msg_stores/vhosts");
    let entries = match std::fs::read_dir(&vhosts) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for vhost in entries {
        let vhost = vhost?;
        let queues = vhost.path().join("queues");
        let Ok(queue_entries) = std::fs::read_dir(&queues) else {
            continue;
        };
        for queue in queue_entries {
            let queue = queue?;
            let Ok(content) = std::fs::read(queue.path().join(".queue_name")) else {
                continue;
            };
            // Directory names RabbitMQ did not make (not a path segment) are skipped.
            let dir = QueuePath::parse(&format!(
                "msg_stores/vhosts/{}/queues/{}",
                vhost.file_name().to_string_lossy(),
                queue.file_name().to_string_lossy()
            ));
            if let (Some(parsed), Ok(dir)) = (parse_queue_name(&content), dir) {
                out.push(QueueDir {
                    vhost: parsed.vhost,
                    queue: parsed.queue,
                    priority: parsed.priority,
                    index: parsed.index,
                    dir,
                });
            }
        }
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhost_dir_names_match_rabbitmq() {
        // Read off a RabbitMQ 3.10.8 node.
        assert_eq!(vhost_dir_name("/"), "628WB79CIFDYO9LJI6DKMI09L");
        assert_eq!(vhost_dir_name("second"), "A26Y8S436VBXHTCMALWHOTAFM");
    }

    fn parsed(vhost: &str, queue: &str, priority: Option<u8>, index: IndexVersion) -> QueueName {
        QueueName {
            vhost: vhost.into(),
            queue: queue.into(),
            priority,
            index,
        }
    }

    #[test]
    fn stored_paths_stay_in_the_store() {
        let vh = VhostDir::of("/");
        assert_eq!(vh.as_str(), "msg_stores/vhosts/628WB79CIFDYO9LJI6DKMI09L");
        assert_eq!(vh.name(), "628WB79CIFDYO9LJI6DKMI09L");
        assert_eq!(VhostDir::parse(vh.as_str()).unwrap(), vh);
        let q = QueuePath::new(&vh, "ABC").unwrap();
        assert_eq!(q.vhost_dir(), vh);
        for bad in [
            "msg_stores/vhosts",
            "msg_stores/vhosts/A/queues",
            "msg_stores/vhosts/..",
            "/msg_stores/vhosts/A",
            "msg_stores/other/A",
        ] {
            assert!(VhostDir::parse(bad).is_err(), "{bad}");
        }
        for bad in [
            "msg_stores/vhosts/A/queues/..",
            "msg_stores/vhosts/A/other/Q",
            "msg_stores/vhosts/A/queues/Q/x",
        ] {
            assert!(QueuePath::parse(bad).is_err(), "{bad}");
        }
        let json: VhostDir = serde_json::from_str("\"msg_stores/vhosts/A\"").unwrap();
        assert_eq!(json.name(), "A");
        assert!(serde_json::from_str::<VhostDir>("\"../etc\"").is_err());
    }

    #[test]
    fn parses_queue_names() {
        assert_eq!(
            parse_queue_name(b"VHOST: /\nQUEUE: oro.default\n"),
            Some(parsed("/", "oro.default", None, IndexVersion::V1))
        );
        assert_eq!(
            parse_queue_name(b"VHOST: /\nQUEUE: prio\x00\x02\n"),
            Some(parsed("/", "prio", Some(2), IndexVersion::V1))
        );
        assert_eq!(parse_queue_name(b"garbage"), None);
    }

    #[test]
    fn parses_version_2_queue_names() {
        // As written by RabbitMQ 4.3.6 (and 3.10+ for x-queue-version 2).
        assert_eq!(
            parse_queue_name(b"VHOST: /\nQUEUE: cq\nINDEX: v2\n"),
            Some(parsed("/", "cq", None, IndexVersion::V2))
        );
        assert_eq!(
            parse_queue_name(b"VHOST: oro\nQUEUE: pq\x00\x01\nINDEX: v2\n"),
            Some(parsed("oro", "pq", Some(1), IndexVersion::V2))
        );
    }

    #[test]
    fn scans_a_layout() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir
            .path()
            .join("msg_stores/vhosts/628WB79CIFDYO9LJI6DKMI09L/queues/ABC");
        std::fs::create_dir_all(&q).unwrap();
        std::fs::write(q.join(".queue_name"), b"VHOST: /\nQUEUE: q1\n").unwrap();
        let q2 = q.with_file_name("DEF");
        std::fs::create_dir_all(&q2).unwrap();
        std::fs::write(q2.join(".queue_name"), b"VHOST: /\nQUEUE: q2\nINDEX: v2\n").unwrap();
        let found = scan_queue_dirs(dir.path()).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].queue, "q1");
        assert_eq!(found[0].index, IndexVersion::V1);
        assert_eq!(
            (found[1].queue.as_str(), found[1].index),
            ("q2", IndexVersion::V2)
        );
        assert_eq!(
            found[0].dir.as_str(),
            "msg_stores/vhosts/628WB79CIFDYO9LJI6DKMI09L/queues/ABC"
        );
    }
}
