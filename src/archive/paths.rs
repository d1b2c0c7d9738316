//! Archive path rules: what a path inside a snapshot may look like.
//!
//! Every path read from a manifest or a tar header passes [`check_archive_path`]
//! before it is joined to a directory, so no entry can escape the staging area.

/// The name of the definitions entry, always first in the archive.
pub const DEFINITIONS: &str = "definitions.json";

/// The top directory of message stores in the data directory.
pub const MSG_STORES: &str = "msg_stores";

/// The top directory of logical records (quorum queues, streams; format 2).
pub const LOGICAL: &str = "logical";

/// Checks that `path` is `definitions.json` or a plain relative path under
/// `msg_stores/` or `logical/` with no empty, `.` or `..` segments.
pub fn check_archive_path(path: &str) -> anyhow::Result<()> {
    let reason = if path.is_empty() {
        Some("it is empty")
    } else if path.starts_with('/') {
        Some("it is absolute")
    } else if path.contains('\0') || path.contains('\\') {
        Some("it contains a NUL or backslash")
    } else if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        Some("it has an empty, '.' or '..' segment")
    } else if path != DEFINITIONS
        && path != MSG_STORES
        && path != LOGICAL
        && !path.starts_with("msg_stores/")
        && !path.starts_with("logical/")
    {
        Some("it is neither definitions.json nor under msg_stores/ or logical/")
    } else {
        None
    };
    match reason {
        Some(reason) => anyhow::bail!("refusing archive path {path:?}: {reason}"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    #[test]
    fn accepts_normal_paths() {
        for ok in [
            "definitions.json",
            "msg_stores",
            "msg_stores/vhosts/628WB79CIFDYO9LJI6DKMI09L/.vhost",
            "msg_stores/vhosts/628WB79CIFDYO9LJI6DKMI09L/queues/1X/journal.jif",
        ] {
            check_archive_path(ok).unwrap();
        }
    }

    #[test]
    fn refuses_escapes() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "msg_stores/../x",
            "msg_stores/./x",
            "msg_stores//x",
            "msg_stores/x/",
            "etc/passwd",
            "msg_stores\\..\\x",
            "msg_stores/a\0b",
        ] {
            assert!(check_archive_path(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn checked_paths_stay_inside(path in "[a-z./_\\\\]{0,40}") {
            if check_archive_path(&path).is_ok() {
                let root = Path::new("/staging");
                let joined = root.join(&path);
                prop_assert!(joined.starts_with(root));
                prop_assert!(joined.components().all(|c| !matches!(c, std::path::Component::ParentDir)));
            }
        }
    }
}
