//! Errors that decide the process exit code.
//!
//! Everything inside the tool returns `anyhow::Result`; a failure that must
//! reach the operator as a specific exit code carries a [`Classified`] error
//! somewhere in its chain. `main` looks for it in one place ([`kind_of`]).

use std::fmt;

/// The stable exit codes documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 1: the operation failed (network, storage, broker, a hook command).
    Failure,
    /// 2: the command line or a setting is wrong; nothing was done.
    Usage,
    /// 3: stored data does not match its digest, or an object is missing.
    Integrity,
    /// 4: refused because going on could lose or overwrite messages.
    Refused,
    /// 5: the snapshot cannot be used here (format version, RabbitMQ downgrade).
    Incompatible,
    /// 6: the node's data directory cannot be found or read.
    DataDir,
    /// 7: a restore failed after the broker was stopped and was rolled back.
    RolledBack,
    /// 8: a restore failed and the node could not be put back: act now.
    NeedsAttention,
}

impl Kind {
    /// The process exit code for this kind.
    pub fn code(self) -> u8 {
        match self {
            Kind::Failure => 1,
            Kind::Usage => 2,
            Kind::Integrity => 3,
            Kind::Refused => 4,
            Kind::Incompatible => 5,
            Kind::DataDir => 6,
            Kind::RolledBack => 7,
            Kind::NeedsAttention => 8,
        }
    }

    /// A short machine-readable name, used in `--json` error output.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Failure => "failure",
            Kind::Usage => "usage",
            Kind::Integrity => "integrity",
            Kind::Refused => "refused",
            Kind::Incompatible => "incompatible",
            Kind::DataDir => "data-dir",
            Kind::RolledBack => "rolled-back",
            Kind::NeedsAttention => "needs-attention",
        }
    }
}

/// An error with an exit-code class and a message meant for the operator.
#[derive(Debug)]
pub struct Classified {
    /// Which exit code this error maps to.
    pub kind: Kind,
    /// What went wrong and, where we know it, what to do about it.
    pub message: String,
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Classified {}

/// A classification to attach as context (`err.context(class(..))`).
pub fn class(kind: Kind, message: impl Into<String>) -> Classified {
    Classified {
        kind,
        message: message.into(),
    }
}

/// Builds an `anyhow::Error` of the given kind.
pub fn classified(kind: Kind, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(class(kind, message))
}

/// A usage error (exit code 2).
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    classified(Kind::Usage, message)
}

/// An integrity error (exit code 3).
pub fn integrity(message: impl Into<String>) -> anyhow::Error {
    classified(Kind::Integrity, message)
}

/// A refusal for safety (exit code 4).
pub fn refused(message: impl Into<String>) -> anyhow::Error {
    classified(Kind::Refused, message)
}

/// An incompatible snapshot (exit code 5).
pub fn incompatible(message: impl Into<String>) -> anyhow::Error {
    classified(Kind::Incompatible, message)
}

/// A data directory that cannot be found or read (exit code 6).
pub fn data_dir(message: impl Into<String>) -> anyhow::Error {
    classified(Kind::DataDir, message)
}

/// The one message for credentials a server rejected, whichever server
/// (management API or AMQP) and command: exit code 1, like every failure
/// of a service to let us in. `in_url` says the user came from a URL.
pub fn rejected_credentials(service: &str, user: &str, in_url: Option<&str>) -> anyhow::Error {
    let fix = match in_url {
        Some(flag) => format!("correct the user and password in {flag}"),
        None => "set --username/--password (RABBITMQ_USERNAME, RABBITMQ_PASSWORD or RABBITMQ_PASSWORD_FILE)".to_string(),
    };
    classified(
        Kind::Failure,
        format!("{service} rejected the credentials of user {user:?}: {fix}"),
    )
}

/// The kind of the outermost classified error (`Failure` if none).
pub fn kind_of(err: &anyhow::Error) -> Kind {
    // anyhow's downcast sees context values; chain() sees wrapped sources.
    err.downcast_ref::<Classified>()
        .or_else(|| err.chain().find_map(|e| e.downcast_ref::<Classified>()))
        .map(|c| c.kind)
        .unwrap_or(Kind::Failure)
}

/// Renders the whole error chain on one line, outermost context first.
pub fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for (i, cause) in err.chain().enumerate() {
        let text = cause.to_string();
        // anyhow repeats a source's text when it is also the context: skip it.
        if i > 0 && out.ends_with(&text) {
            continue;
        }
        if i > 0 {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn kind_survives_context() {
        let err = Err::<(), _>(refused("consumers connected"))
            .context("backup of rabbit@a")
            .unwrap_err();
        assert_eq!(kind_of(&err), Kind::Refused);
        assert_eq!(kind_of(&err).code(), 4);
        assert_eq!(render(&err), "backup of rabbit@a: consumers connected");
    }

    #[test]
    fn a_classification_attached_as_context_wins() {
        let err = Err::<(), _>(integrity("chunk bad"))
            .context(class(Kind::RolledBack, "rolled back"))
            .context("restore")
            .unwrap_err();
        assert_eq!(kind_of(&err), Kind::RolledBack);
        assert_eq!(render(&err), "restore: rolled back: chunk bad");
    }

    #[test]
    fn unclassified_is_failure() {
        let err = anyhow::anyhow!("boom");
        assert_eq!(kind_of(&err).code(), 1);
    }

    #[test]
    fn codes_are_distinct() {
        let kinds = [
            Kind::Failure,
            Kind::Usage,
            Kind::Integrity,
            Kind::Refused,
            Kind::Incompatible,
            Kind::DataDir,
            Kind::RolledBack,
            Kind::NeedsAttention,
        ];
        let mut codes: Vec<u8> = kinds.iter().map(|k| k.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
    }
}
