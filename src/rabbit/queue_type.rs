//! The type of a queue, as RabbitMQ names it (`list_queues`, definitions'
//! `x-queue-type`, the manifest's `type`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A queue's type. Only classic queues keep their messages in the message
/// store the archive copies; the others are named with their counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum QueueType {
    /// `classic`: messages in the vhost's message store and queue index.
    Classic,
    /// `quorum`: a Raft log of its own.
    Quorum,
    /// `stream`: segment files of its own.
    Stream,
    /// Any other name (a plugin's queue type, a later RabbitMQ's): kept as
    /// given, treated like a non-classic queue.
    Other(String),
}

impl QueueType {
    /// The name RabbitMQ uses.
    pub fn as_str(&self) -> &str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
            QueueType::Other(name) => name,
        }
    }

    /// Whether the archive's copy of the message store holds its messages.
    pub fn is_classic(&self) -> bool {
        *self == QueueType::Classic
    }
}

impl From<String> for QueueType {
    fn from(name: String) -> QueueType {
        QueueType::from(name.as_str())
    }
}

impl From<&str> for QueueType {
    fn from(name: &str) -> QueueType {
        match name {
            "classic" => QueueType::Classic,
            "quorum" => QueueType::Quorum,
            "stream" => QueueType::Stream,
            other => QueueType::Other(other.to_string()),
        }
    }
}

impl From<QueueType> for String {
    fn from(t: QueueType) -> String {
        t.as_str().to_string()
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_types_survive() {
        for name in ["classic", "quorum", "stream", "x-delayed"] {
            let t = QueueType::from(name);
            assert_eq!(t.as_str(), name);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<QueueType>(&json).unwrap(), t);
        }
        assert!(QueueType::from("classic").is_classic());
        assert!(!QueueType::from("x-delayed").is_classic());
    }
}
