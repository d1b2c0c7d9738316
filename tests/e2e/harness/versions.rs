//! Every RabbitMQ version Debian ships, as the harness runs them: the host's
//! own package (bookworm) and the others from Debian's packages in
//! `mmdebstrap` chroots that `scripts/install-deps --tests` builds and caches
//! under `<tool cache>/chroots/<suite>`.

use std::path::PathBuf;

/// A RabbitMQ release from a Debian suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// 3.8.9, Debian 11 (bullseye): `#basic_message{}`, queue index v1 only.
    V3_8,
    /// 3.10.8, Debian 12 (bookworm): the host's package.
    V3_10,
    /// 4.0.5, Debian 13 (trixie): index v2 by default, converts v1 at boot.
    V4_0,
    /// 4.3.6, Debian sid: index v2 only; cannot read a v1 index.
    V4_3,
}

impl Version {
    /// Every version, oldest first.
    pub const ALL: [Version; 4] = [Version::V3_8, Version::V3_10, Version::V4_0, Version::V4_3];

    /// The version the host's Debian package installs.
    pub const HOST: Version = Version::V3_10;

    /// The full version string the node reports (`3.10.8`).
    pub fn number(self) -> &'static str {
        match self {
            Version::V3_8 => "3.8.9",
            Version::V3_10 => "3.10.8",
            Version::V4_0 => "4.0.5",
            Version::V4_3 => "4.3.6",
        }
    }

    /// The Debian suite whose package it is.
    pub fn suite(self) -> &'static str {
        match self {
            Version::V3_8 => "bullseye",
            Version::V3_10 => "bookworm",
            Version::V4_0 => "trixie",
            Version::V4_3 => "sid",
        }
    }

    /// A short name for node names and messages (`4.3`).
    pub fn short(self) -> &'static str {
        let n = self.number();
        &n[..n.rfind('.').unwrap()]
    }

    /// The chroot this version runs in; `None` for the host's own package.
    pub fn chroot(self) -> Option<PathBuf> {
        if self == Version::HOST {
            return None;
        }
        let dir = super::process::tool_cache()
            .join("chroots")
            .join(self.suite());
        let server = dir.join("usr/lib/rabbitmq/bin/rabbitmq-server");
        assert!(
            server.is_file() && dir.join("etc/hosts").is_file(),
            "no RabbitMQ {} chroot at {} (with /etc/hosts): run scripts/install-deps --tests",
            self.number(),
            dir.display()
        );
        Some(dir)
    }

    /// The queue index version of a classic queue a fresh node creates.
    pub fn default_index(self) -> u64 {
        if self >= Version::V4_0 { 2 } else { 1 }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.number())
    }
}

/// `in-chroot CHROOT DIR PROGRAM ARG…`: runs PROGRAM inside CHROOT in a
/// private mount namespace with `/proc`, `/sys`, `/dev` and DIR mounted at
/// the same paths (see the script).
pub fn in_chroot_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/harness/in-chroot")
}
