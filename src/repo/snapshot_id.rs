//! Snapshot ids: `YYYYMMDDTHHMMSSZ-<8 hex>`, which sort by creation time.

use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// A new id for a snapshot created at `now` (UTC).
pub fn new_id(now: OffsetDateTime) -> String {
    let stamp = now
        .to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .expect("formats");
    format!("{stamp}-{:08x}", rand::random::<u32>())
}

/// True if `id` has the snapshot id shape and a valid timestamp.
pub fn is_valid(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 25
        && bytes[16] == b'-'
        && bytes[17..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        && timestamp(id).is_some()
}

/// The creation time encoded in an id.
pub fn timestamp(id: &str) -> Option<OffsetDateTime> {
    let stamp = id.get(..16)?;
    PrimitiveDateTime::parse(
        stamp,
        format_description!("[year][month][day]T[hour][minute][second]Z"),
    )
    .ok()
    .map(PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn ids_have_the_documented_shape() {
        let id = new_id(datetime!(2026-11-21 05:15:00 UTC));
        assert!(id.starts_with("20261121T051500Z-"), "{id}");
        assert!(is_valid(&id), "{id}");
        assert_eq!(timestamp(&id), Some(datetime!(2026-11-21 05:15:00 UTC)));
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "20261121T051500Z",
            "20261121T051500Z-3FA2C1D9",
            "20261121T051500Z-3fa2c1d",
            "20261341T051500Z-3fa2c1d9",
            "../../../../../etc/passwd",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn ids_sort_by_time() {
        let a = new_id(datetime!(2026-01-02 00:00:00 UTC));
        let b = new_id(datetime!(2026-01-10 00:00:00 UTC));
        assert!(a < b);
    }
}
