//! A snapshot's logical records (quorum queues and streams, DESIGN §12),
//! unpacked: each captured queue's messages as one source, in queue order,
//! for `messages`, `verify --deep` and a replay restore (the classic
//! queues' counterpart is the store reader's `VhostReader::queue`).
//!
//! A queue's records are the files of its directory under `logical/`
//! (`000000.rblr`, `000001.rblr`…), read in name order; only queues the
//! manifest's `logical[]` names are read (files of a capture that failed
//! part-way are not).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::archive::manifest::LogicalEntry;
use crate::error::integrity;
use crate::message::Message;
use crate::message::record::RecordReader;

/// One captured queue's record files in an unpacked snapshot.
#[derive(Debug, Clone)]
pub struct LogicalQueue {
    /// The vhost, as the manifest names it.
    pub vhost: String,
    /// The queue, as the manifest names it.
    pub queue: String,
    /// Its record files, in order.
    pub paths: Vec<PathBuf>,
}

impl LogicalQueue {
    /// Its messages in queue order, from the first record.
    pub fn messages(&self) -> LogicalRecords {
        LogicalRecords {
            vhost: self.vhost.clone(),
            queue: self.queue.clone(),
            files: self.paths.clone().into_iter(),
            current: None,
            done: false,
        }
    }

    /// Where its records are in the archive.
    pub fn display(&self) -> String {
        self.paths
            .first()
            .map_or_else(String::new, |p| archive_path(p))
    }
}

/// The messages of one queue, file after file. Damage is an integrity error
/// (exit 3) naming the file and offset; the iterator ends after an error.
pub struct LogicalRecords {
    vhost: String,
    queue: String,
    files: std::vec::IntoIter<PathBuf>,
    current: Option<(RecordReader<BufReader<File>>, String)>,
    done: bool,
}

impl LogicalRecords {
    /// The next message, or `None` after the last file.
    pub fn next_message(&mut self) -> anyhow::Result<Option<Message>> {
        loop {
            if let Some((reader, name)) = self.current.as_mut() {
                match reader.next_message() {
                    Ok(Some(m)) => return Ok(Some(m)),
                    Ok(None) => self.current = None,
                    Err(e) => {
                        return Err(integrity(format!(
                            "the logical records {name} are damaged {e}"
                        )));
                    }
                }
            }
            let Some(path) = self.files.next() else {
                return Ok(None);
            };
            let name = archive_path(&path);
            let reader = open_records(&path, &name)?;
            if (reader.vhost(), reader.queue()) != (self.vhost.as_str(), self.queue.as_str()) {
                return Err(integrity(format!(
                    "the logical records {name} are said to be those of queue {:?} in vhost {:?}, but hold queue {:?} in vhost {:?}",
                    self.queue,
                    self.vhost,
                    reader.queue(),
                    reader.vhost()
                )));
            }
            self.current = Some((reader, name));
        }
    }
}

impl Iterator for LogicalRecords {
    type Item = anyhow::Result<Message>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_message().transpose();
        self.done = !matches!(next, Some(Ok(_)));
        next
    }
}

/// A path of the unpacked copy as it is in the archive.
fn archive_path(path: &Path) -> String {
    path.iter()
        .skip_while(|c| *c != "logical")
        .collect::<PathBuf>()
        .display()
        .to_string()
}

fn open_records(path: &Path, name: &str) -> anyhow::Result<RecordReader<BufReader<File>>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    RecordReader::new(BufReader::new(file), len)
        .map_err(|e| integrity(format!("the logical records {name} are damaged {e}")))
}

/// The record files of every queue `entries` (the manifest's `logical[]`)
/// names, under `root` (where the archive was unpacked), by vhost and
/// queue: the files in its directory in name order (or the one file it
/// names). A path outside `logical/` is an integrity error.
pub fn find(root: &Path, entries: &[LogicalEntry]) -> anyhow::Result<Vec<LogicalQueue>> {
    let mut out = Vec::new();
    for entry in entries {
        crate::archive::paths::check_archive_path(&entry.path)
            .map_err(|e| integrity(format!("{e:#}")))?;
        let logical = crate::archive::paths::LOGICAL;
        if !entry.path.starts_with(&format!("{logical}/")) {
            return Err(integrity(format!(
                "the manifest puts the logical records of queue {:?} in vhost {:?} at {:?}, outside logical/",
                entry.queue, entry.vhost, entry.path
            )));
        }
        let at = root.join(&entry.path);
        let paths = if at.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&at)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            files.retain(|p| p.is_file());
            files.sort();
            files
        } else if at.is_file() {
            vec![at]
        } else {
            Vec::new()
        };
        if paths.is_empty() {
            continue;
        }
        out.push(LogicalQueue {
            vhost: entry.vhost.clone(),
            queue: entry.queue.clone(),
            paths,
        });
    }
    out.sort_by(|a, b| (&a.vhost, &a.queue).cmp(&(&b.vhost, &b.queue)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Properties;
    use crate::message::record::RecordWriter;
    use bytes::Bytes;

    fn message(i: usize) -> Message {
        Message {
            exchange: String::new(),
            routing_keys: vec![format!("k{i}")],
            properties: Properties::default(),
            body: Bytes::from(vec![i as u8; 10 + i]),
        }
    }

    /// Record files of `queue` under `root`, `per_file` messages each.
    fn write(root: &Path, queue: &str, messages: &[Message], per_file: usize) -> LogicalEntry {
        let dir = format!("logical/V/{queue}");
        std::fs::create_dir_all(root.join(&dir)).unwrap();
        for (n, chunk) in messages.chunks(per_file).enumerate() {
            let file = File::create(root.join(format!("{dir}/{n:06}.rblr"))).unwrap();
            let mut w = RecordWriter::new(file, "/", queue).unwrap();
            for m in chunk {
                w.write(m).unwrap();
            }
        }
        LogicalEntry {
            path: dir,
            vhost: "/".into(),
            queue: queue.into(),
            messages: messages.len() as u64,
            bytes: 0,
            sha256: String::new(),
        }
    }

    #[test]
    fn a_queue_reads_its_files_in_order() {
        let root = tempfile::tempdir().unwrap();
        let all: Vec<Message> = (0..25).map(message).collect();
        let entries = vec![
            write(root.path(), "b", &all[..3], 10),
            write(root.path(), "a", &all, 4),
        ];
        let queues = find(root.path(), &entries).unwrap();
        assert_eq!(queues.len(), 2);
        assert_eq!(queues[0].queue, "a", "sorted by vhost and queue");
        assert_eq!(queues[0].paths.len(), 7);
        assert_eq!(queues[0].display(), "logical/V/a/000000.rblr");
        let read: Vec<Message> = queues[0].messages().map(Result::unwrap).collect();
        assert_eq!(read, all);
        assert_eq!(queues[1].messages().count(), 3);
    }

    #[test]
    fn damage_and_mix_ups_are_integrity_errors_naming_the_file() {
        let root = tempfile::tempdir().unwrap();
        let all: Vec<Message> = (0..6).map(message).collect();
        let mut entry = write(root.path(), "a", &all, 3);
        // Truncated second file: the first file's messages, then an error.
        let second = root.path().join("logical/V/a/000001.rblr");
        let len = std::fs::metadata(&second).unwrap().len();
        let bytes = std::fs::read(&second).unwrap();
        std::fs::write(&second, &bytes[..len as usize - 3]).unwrap();
        let queue = &find(root.path(), std::slice::from_ref(&entry)).unwrap()[0];
        let read: Vec<anyhow::Result<Message>> = queue.messages().collect();
        assert!(read[..5].iter().all(Result::is_ok), "{read:?}");
        let err = format!("{:#}", read.last().unwrap().as_ref().unwrap_err());
        assert!(err.contains("logical/V/a/000001.rblr"), "{err}");
        assert_eq!(read.len(), 6, "the iterator ends after the error");

        // A file of another queue in this queue's directory.
        std::fs::write(&second, &bytes).unwrap();
        entry.queue = "other".into();
        let queue = &find(root.path(), &[entry.clone()]).unwrap()[0];
        let err = format!("{:#}", queue.messages().next().unwrap().unwrap_err());
        assert!(err.contains("\"other\"") && err.contains("\"a\""), "{err}");

        // A manifest pointing elsewhere.
        entry.path = "msg_stores/vhosts/V".into();
        assert!(find(root.path(), &[entry.clone()]).is_err());
        entry.path = "logical/../x".into();
        assert!(find(root.path(), &[entry]).is_err());
    }
}
