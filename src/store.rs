//! The store reader (DESIGN §11): decodes RabbitMQ's classic message
//! stores (3.8 → 4.3) offline, read-only, without trusting them.
//!
//! [`Store::open`] finds the vhosts and queue directories under a
//! directory holding `msg_stores/`; [`Store::vhost`] prepares one vhost's
//! shared store (a scan of its `N.rdq` files, indexed on disk); then
//! [`VhostReader::queue`] yields a queue's messages in the order the broker
//! would deliver them after a restart: highest priority level first, then
//! by sequence number. Damaged or hostile bytes give a [`StoreError`]
//! naming the file and offset; nothing is skipped without being counted in
//! the queue's [`QueueSummary`].

mod content;
mod index_v1;
mod index_v2;
mod layout;
mod locator;
mod queue;
mod rdq;

use std::fmt;
use std::path::{Path, PathBuf};

pub use content::{Extra, decode as decode_message};
pub use layout::{QueueDirs, QueueLevel, VhostDir};
pub use queue::{QueueItem, QueueMessages, QueueSummary};
pub use rdq::VhostReader;

/// The largest message record accepted (RabbitMQ's limit is 512 MiB).
pub const MAX_MESSAGE: u64 = 1 << 30;

/// A store file that cannot be read as RabbitMQ wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    /// The file, relative to the directory holding `msg_stores`.
    pub file: String,
    /// The byte offset of the problem in that file, when it has one.
    pub offset: Option<u64>,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(o) => write!(f, "{} at offset {o}: {}", self.file, self.problem),
            None => write!(f, "{}: {}", self.file, self.problem),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// An error in `file` at `offset`.
    pub fn at(file: &str, offset: u64, problem: impl Into<String>) -> StoreError {
        StoreError {
            file: file.to_string(),
            offset: Some(offset),
            problem: problem.into(),
        }
    }

    /// An error about a whole file or directory.
    pub fn whole(file: &str, problem: impl Into<String>) -> StoreError {
        StoreError {
            file: file.to_string(),
            offset: None,
            problem: problem.into(),
        }
    }

    /// An I/O error reading `file`.
    pub fn io(file: &str, e: std::io::Error) -> StoreError {
        StoreError::whole(file, format!("cannot read: {e}"))
    }

    /// As an integrity error (exit code 3) for the command line.
    pub fn into_anyhow(self) -> anyhow::Error {
        crate::error::integrity(format!("the message store is damaged: {self}"))
    }
}

/// A message store found under a directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    vhosts: Vec<VhostDir>,
    /// What was found but will not be read, and why.
    pub notes: Vec<String>,
}

impl Store {
    /// Finds the vhosts and queues under `root` (which holds `msg_stores/`).
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let (vhosts, notes) = layout::scan(root)?;
        Ok(Store {
            root: root.to_path_buf(),
            vhosts,
            notes,
        })
    }

    /// The vhosts with a message store, in name order.
    pub fn vhosts(&self) -> &[VhostDir] {
        &self.vhosts
    }

    /// Every queue of every vhost.
    pub fn queues(&self) -> impl Iterator<Item = &QueueDirs> {
        self.vhosts.iter().flat_map(|v| v.queues.iter())
    }

    /// Prepares reading one vhost: scans its shared store for the messages
    /// its queues reference. `work` holds the on-disk location index
    /// (about twice the size of the queue indexes) until the reader drops.
    pub fn vhost(&self, name: &str, work: &Path) -> Result<VhostReader, StoreError> {
        let vhost = self.vhosts.iter().find(|v| v.name == name).ok_or_else(|| {
            StoreError::whole(
                "msg_stores/vhosts",
                format!("no message store for vhost {name:?}"),
            )
        })?;
        VhostReader::new(&self.root, vhost, work)
    }
}
