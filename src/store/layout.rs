//! Where things are: `msg_stores/vhosts/<VH>/` holds `.vhost` (the vhost's
//! name), `.config` (the version-1 index's segment size, 3.8.17+),
//! `msg_store_persistent/N.rdq` and `queues/<Q>/` with `.queue_name`.
//! A priority queue has one directory per level, named after
//! `<name>\0<level>`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::StoreError;
use crate::rabbit::datadir::{base36_md5, parse_queue_name, queue_dir_name};

/// The version-1 index's segment size before 3.8.17 (and with no `.config`).
const LEGACY_SEGMENT_ENTRY_COUNT: u32 = 16384;

/// One vhost's message store.
#[derive(Debug, Clone)]
pub struct VhostDir {
    /// The vhost's name (from `.vhost`).
    pub name: String,
    /// Its directory, relative to the root (`msg_stores/vhosts/<VH>`).
    pub dir: String,
    /// Entries per version-1 index segment (`.config`).
    pub segment_entry_count: u32,
    /// Its queues, by name.
    pub queues: Vec<QueueDirs>,
}

/// One queue's directories: one, or one per priority level in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDirs {
    /// The vhost.
    pub vhost: String,
    /// The queue's name.
    pub name: String,
    /// Its levels, highest priority first (the order the broker serves).
    pub levels: Vec<QueueLevel>,
}

/// One index directory of a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLevel {
    /// The priority level, for `x-max-priority` queues.
    pub priority: Option<u8>,
    /// The directory, relative to the root.
    pub dir: String,
}

impl QueueDirs {
    /// True for an `x-max-priority` queue.
    pub fn is_priority(&self) -> bool {
        self.levels.iter().any(|l| l.priority.is_some())
    }
}

fn read_dir_sorted(root: &Path, rel: &str) -> Result<Vec<String>, StoreError> {
    let entries = match fs::read_dir(root.join(rel)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(rel, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(rel, e))?;
        match entry.file_name().into_string() {
            Ok(name) => names.push(name),
            Err(name) => {
                return Err(StoreError::whole(
                    rel,
                    format!("holds {name:?}, a name RabbitMQ never writes"),
                ));
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Finds every vhost and queue; returns them and notes on what is ignored.
pub fn scan(root: &Path) -> Result<(Vec<VhostDir>, Vec<String>), StoreError> {
    let mut notes = Vec::new();
    let mut vhosts = Vec::new();
    for vh in read_dir_sorted(root, "msg_stores/vhosts")? {
        let dir = format!("msg_stores/vhosts/{vh}");
        if !root.join(&dir).is_dir() {
            continue;
        }
        let name_file = format!("{dir}/.vhost");
        let name = match fs::read(root.join(&name_file)) {
            Ok(bytes) => String::from_utf8(bytes)
                .map_err(|_| StoreError::whole(&name_file, "the vhost name is not UTF-8"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                notes.push(format!(
                    "{dir} has no .vhost file: not a vhost store, ignored"
                ));
                continue;
            }
            Err(e) => return Err(StoreError::io(&name_file, e)),
        };
        if base36_md5(name.as_bytes()) != vh {
            notes.push(format!(
                "{dir} says it belongs to vhost {name:?}, whose directory is {}; RabbitMQ would not use it, ignored",
                base36_md5(name.as_bytes())
            ));
            continue;
        }
        let segment_entry_count = read_segment_entry_count(root, &dir)?;
        let queues = scan_queues(root, &dir, &name, &mut notes)?;
        vhosts.push(VhostDir {
            name,
            dir,
            segment_entry_count,
            queues,
        });
    }
    vhosts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((vhosts, notes))
}

/// `{segment_entry_count, N}.` from `.config`, or the legacy default.
fn read_segment_entry_count(root: &Path, dir: &str) -> Result<u32, StoreError> {
    let file = format!("{dir}/.config");
    let text = match fs::read(root.join(&file)) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LEGACY_SEGMENT_ENTRY_COUNT);
        }
        Err(e) => return Err(StoreError::io(&file, e)),
    };
    let bad = || {
        StoreError::whole(
            &file,
            "has no {segment_entry_count, N} term RabbitMQ can use",
        )
    };
    let at = text.find("{segment_entry_count,").ok_or_else(bad)?;
    let digits: String = text[at + "{segment_entry_count,".len()..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    // A relative sequence number has 14 bits in a segment.
    match digits.parse::<u32>() {
        Ok(n) if (1..=LEGACY_SEGMENT_ENTRY_COUNT).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

fn scan_queues(
    root: &Path,
    vhost_dir: &str,
    vhost: &str,
    notes: &mut Vec<String>,
) -> Result<Vec<QueueDirs>, StoreError> {
    let mut by_name: BTreeMap<(String, bool), Vec<QueueLevel>> = BTreeMap::new();
    let queues_dir = format!("{vhost_dir}/queues");
    for q in read_dir_sorted(root, &queues_dir)? {
        let dir = format!("{queues_dir}/{q}");
        let name_file = format!("{dir}/.queue_name");
        let content = match fs::read(root.join(&name_file)) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                notes.push(format!("{dir} has no .queue_name file: ignored"));
                continue;
            }
            Err(e) => return Err(StoreError::io(&name_file, e)),
        };
        let Some(parsed) = parse_queue_name(&content) else {
            return Err(StoreError::whole(
                &name_file,
                "is not a RabbitMQ queue name file (or the names are not UTF-8)",
            ));
        };
        // The name as the directory is hashed from: with the level suffix.
        let mut raw = parsed.queue.as_bytes().to_vec();
        if let Some(p) = parsed.priority {
            raw.extend_from_slice(&[0, p]);
        }
        if parsed.vhost != vhost || queue_dir_name(vhost, &raw) != q {
            notes.push(format!(
                "{dir} names queue {:?} in vhost {:?}, which does not live there; RabbitMQ deletes it at boot, ignored",
                parsed.queue, parsed.vhost
            ));
            continue;
        }
        let (name, priority) = (parsed.queue, parsed.priority);
        by_name
            .entry((name, priority.is_some()))
            .or_default()
            .push(QueueLevel { priority, dir });
    }
    Ok(by_name
        .into_iter()
        .map(|((name, _), mut levels)| {
            levels.sort_by_key(|l| std::cmp::Reverse(l.priority));
            QueueDirs {
                vhost: vhost.to_string(),
                name,
                levels,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_levels_are_grouped_highest_first_and_strays_noted() {
        let root = tempfile::tempdir().unwrap();
        let vh = format!("msg_stores/vhosts/{}", base36_md5(b"/"));
        let add = |name: &[u8], dir: Option<&str>| {
            let d = dir.map_or_else(|| queue_dir_name("/", name), str::to_string);
            let path = root.path().join(format!("{vh}/queues/{d}"));
            fs::create_dir_all(&path).unwrap();
            let mut content = b"VHOST: /\nQUEUE: ".to_vec();
            content.extend_from_slice(name);
            content.push(b'\n');
            fs::write(path.join(".queue_name"), content).unwrap();
        };
        fs::create_dir_all(root.path().join(&vh)).unwrap();
        fs::write(root.path().join(format!("{vh}/.vhost")), "/").unwrap();
        fs::write(
            root.path().join(format!("{vh}/.config")),
            "%% auto\n{segment_entry_count, 2048}.",
        )
        .unwrap();
        add(b"plain", None);
        add(b"prio\0\x00", None);
        add(b"prio\0\x05", None);
        add(b"moved", Some("NOTITSDIR"));
        let (vhosts, notes) = scan(root.path()).unwrap();
        assert_eq!(vhosts.len(), 1);
        assert_eq!(vhosts[0].segment_entry_count, 2048);
        let names: Vec<_> = vhosts[0].queues.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["plain", "prio"]);
        let prio = &vhosts[0].queues[1];
        assert_eq!(
            prio.levels.iter().map(|l| l.priority).collect::<Vec<_>>(),
            [Some(5), Some(0)]
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("NOTITSDIR"), "{notes:?}");
    }
}
