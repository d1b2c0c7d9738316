//! How the target recovers the message stores a swap puts in place.
//!
//! RabbitMQ before 3.10 writes a version-1 queue index entry when a message
//! is published and a separate delivery mark when a consumer first gets it.
//! 3.10 and later write both at once, and after a clean shutdown they take a
//! queue's recovery terms (`recovery.dets` in each vhost's store) as proof
//! that the index is in that shape: a message an older node never delivered
//! then cannot be acknowledged, and the queue crashes in
//! `rabbit_queue_index` on the first consumer's ack. Without those terms the
//! target recovers as after a crash, which first marks every message
//! delivered: the same messages, each flagged redelivered, as the clean
//! path would flag them too (3.10 counts every recovered message as
//! delivered once when the terms lack `next_deliver_seq_id`).

use std::path::{Path, PathBuf};

use super::version::older;

/// The first version that writes publish and delivery marks together.
const DELIVERY_WITH_PUBLISH_FROM: &str = "3.10.0";

/// The file each vhost's store keeps its queues' recovery terms in.
const RECOVERY_TERMS: &str = "recovery.dets";

/// Whether stores written by `source` need the crash recovery on `target`.
pub fn needs_crash_recovery(source: &str, target: &str) -> bool {
    older(source, DELIVERY_WITH_PUBLISH_FROM) && !older(target, DELIVERY_WITH_PUBLISH_FROM)
}

/// Prepares the stores unpacked under `staged` (`msg_stores/vhosts/<VH>`)
/// for a node running `target`: when written by `source` before 3.10 and
/// read by 3.10 or later, their recovery terms are removed. Returns the
/// files removed.
pub fn prepare(staged: &Path, source: &str, target: &str) -> anyhow::Result<Vec<PathBuf>> {
    if !needs_crash_recovery(source, target) {
        return Ok(Vec::new());
    }
    let vhosts = staged.join("msg_stores/vhosts");
    let entries = match std::fs::read_dir(&vhosts) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => anyhow::bail!("cannot read {}: {e}", vhosts.display()),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let terms = entry?.path().join(RECOVERY_TERMS);
        match std::fs::remove_file(&terms) {
            Ok(()) => removed.push(terms),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("cannot remove {}: {e}", terms.display()),
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for vh in ["A", "B"] {
            let store = dir.path().join("msg_stores/vhosts").join(vh);
            std::fs::create_dir_all(store.join("queues")).unwrap();
            std::fs::write(store.join(RECOVERY_TERMS), b"terms").unwrap();
        }
        dir
    }

    #[test]
    fn only_a_pre_3_10_store_read_by_3_10_or_later_loses_its_terms() {
        assert!(needs_crash_recovery("3.8.9", "3.10.8"));
        assert!(needs_crash_recovery("3.9.29", "4.0.5"));
        assert!(!needs_crash_recovery("3.8.9", "3.8.9"));
        assert!(!needs_crash_recovery("3.10.8", "4.0.5"));
        assert!(!needs_crash_recovery("3.10.8", "3.10.8"));
    }

    #[test]
    fn removes_every_vhost_stores_terms_and_nothing_else() {
        let dir = staged();
        let removed = prepare(dir.path(), "3.8.9", "3.10.8").unwrap();
        let vhosts = dir.path().join("msg_stores/vhosts");
        assert_eq!(
            removed,
            vec![
                vhosts.join("A").join(RECOVERY_TERMS),
                vhosts.join("B").join(RECOVERY_TERMS)
            ]
        );
        assert!(removed.iter().all(|f| !f.exists()));
        assert!(vhosts.join("A/queues").is_dir());
    }

    #[test]
    fn a_same_version_swap_keeps_its_clean_shutdown() {
        let dir = staged();
        assert!(prepare(dir.path(), "3.10.8", "4.0.5").unwrap().is_empty());
        assert!(
            dir.path()
                .join("msg_stores/vhosts/A")
                .join(RECOVERY_TERMS)
                .exists()
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(prepare(empty.path(), "3.8.9", "3.10.8").unwrap().is_empty());
    }
}
