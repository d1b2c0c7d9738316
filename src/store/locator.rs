//! Where each referenced message lives in the shared store: an
//! open-addressing hash table in a temporary file, so that memory stays
//! flat however many messages a vhost holds (the page cache does the
//! caching). Keys are 16-byte message ids, hashed with a per-process
//! random key so that crafted ids cannot make probing quadratic.

use std::fs::File;
use std::hash::BuildHasher;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A message's place in the shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The `N` of `N.rdq`.
    pub file: u32,
    /// Offset of the record (its size field).
    pub offset: u64,
    /// Bytes of the whole record (size field, id, term, marker).
    pub total: u32,
}

const SLOT: u64 = 32;
/// `total` of an empty slot, and of a referenced id not found yet.
const EMPTY: u32 = 0;
const REFERENCED: u32 = 1;

/// The table. Slot: id (16) | file u32 | total u32 | offset u64.
pub struct Locator {
    file: File,
    mask: u64,
    capacity: u64,
    used: u64,
    hasher: std::collections::hash_map::RandomState,
}

impl Locator {
    /// A table for at most `capacity` ids, in a new temporary file in `dir`.
    pub fn new(dir: &Path, capacity: u64) -> io::Result<Locator> {
        let slots = (capacity.max(8) * 2).next_power_of_two();
        let file = tempfile::tempfile_in(dir)?;
        file.set_len(slots * SLOT)?;
        Ok(Locator {
            file,
            mask: slots - 1,
            capacity,
            used: 0,
            hasher: std::collections::hash_map::RandomState::new(),
        })
    }

    fn read(&self, slot: u64) -> io::Result<[u8; SLOT as usize]> {
        let mut buf = [0u8; SLOT as usize];
        self.file.read_exact_at(&mut buf, slot * SLOT)?;
        Ok(buf)
    }

    /// The slot holding `id`, or the empty slot where it would go.
    fn find(&self, id: &[u8; 16]) -> io::Result<(u64, [u8; SLOT as usize])> {
        let mut slot = self.hasher.hash_one(id) & self.mask;
        loop {
            let buf = self.read(slot)?;
            let total = u32::from_be_bytes(buf[20..24].try_into().expect("4 bytes"));
            if total == EMPTY || &buf[..16] == id {
                return Ok((slot, buf));
            }
            slot = (slot + 1) & self.mask;
        }
    }

    /// Notes that a queue references `id`.
    pub fn reference(&mut self, id: &[u8; 16]) -> io::Result<()> {
        let (slot, buf) = self.find(id)?;
        if u32::from_be_bytes(buf[20..24].try_into().expect("4 bytes")) != EMPTY {
            return Ok(());
        }
        if self.used >= self.capacity {
            return Err(io::Error::other(
                "more message ids than the queue indexes can hold",
            ));
        }
        let mut new = [0u8; SLOT as usize];
        new[..16].copy_from_slice(id);
        new[20..24].copy_from_slice(&REFERENCED.to_be_bytes());
        self.file.write_all_at(&new, slot * SLOT)?;
        self.used += 1;
        Ok(())
    }

    /// Records where `id` is if it is referenced and not found yet;
    /// returns whether it was.
    pub fn place(&mut self, id: &[u8; 16], at: Location) -> io::Result<bool> {
        let (slot, buf) = self.find(id)?;
        if u32::from_be_bytes(buf[20..24].try_into().expect("4 bytes")) != REFERENCED {
            return Ok(false);
        }
        let mut new = [0u8; SLOT as usize];
        new[..16].copy_from_slice(id);
        new[16..20].copy_from_slice(&at.file.to_be_bytes());
        new[20..24].copy_from_slice(&at.total.to_be_bytes());
        new[24..32].copy_from_slice(&at.offset.to_be_bytes());
        self.file.write_all_at(&new, slot * SLOT)?;
        Ok(true)
    }

    /// Where `id` was found, if it was.
    pub fn get(&self, id: &[u8; 16]) -> io::Result<Option<Location>> {
        let (_, buf) = self.find(id)?;
        let total = u32::from_be_bytes(buf[20..24].try_into().expect("4 bytes"));
        if total <= REFERENCED {
            return Ok(None);
        }
        Ok(Some(Location {
            file: u32::from_be_bytes(buf[16..20].try_into().expect("4 bytes")),
            total,
            offset: u64::from_be_bytes(buf[24..32].try_into().expect("8 bytes")),
        }))
    }

    /// Ids referenced.
    pub fn referenced(&self) -> u64 {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_referenced_ids_are_placed_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Locator::new(dir.path(), 1000).unwrap();
        let ids: Vec<[u8; 16]> = (0..1000u32)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&i.to_be_bytes());
                id
            })
            .collect();
        for id in &ids[..500] {
            l.reference(id).unwrap();
            l.reference(id).unwrap();
        }
        assert_eq!(l.referenced(), 500);
        let at = |i: u64| Location {
            file: 3,
            offset: i,
            total: 100,
        };
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(l.place(id, at(i as u64)).unwrap(), i < 500);
        }
        // A second copy of a placed message does not move it.
        assert!(!l.place(&ids[7], at(99_999)).unwrap());
        assert_eq!(l.get(&ids[7]).unwrap(), Some(at(7)));
        assert_eq!(l.get(&ids[700]).unwrap(), None);
    }

    #[test]
    fn more_ids_than_declared_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Locator::new(dir.path(), 2).unwrap();
        l.reference(&[1; 16]).unwrap();
        l.reference(&[2; 16]).unwrap();
        assert!(l.reference(&[3; 16]).is_err());
    }
}
