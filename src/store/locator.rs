//! Where each referenced message lives in the shared store: an
//! open-addressing hash table, in memory up to [`MEMORY_LIMIT`] and in a
//! temporary file beyond, so that memory stays flat however many messages
//! a vhost holds (the page cache does the caching). Keys are 16-byte
//! message ids, hashed with a per-process random key so that crafted ids
//! cannot make probing quadratic.

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
/// The largest table kept in memory (a million slots: half a million
/// messages); a larger one is a file, read and written slot by slot.
pub const MEMORY_LIMIT: u64 = 32 << 20;
/// Slots of a new table (it doubles when half full).
const INITIAL_SLOTS: u64 = 64;
/// `total` of an empty slot, and of a referenced id not found yet.
const EMPTY: u32 = 0;
const REFERENCED: u32 = 1;

fn total_of(slot: &[u8; SLOT as usize]) -> u32 {
    u32::from_be_bytes(slot[20..24].try_into().expect("4 bytes"))
}

/// Where the slots are.
enum Slots {
    Memory(Vec<u8>),
    File(File),
}

/// The table. Slot: id (16) | file u32 | total u32 | offset u64.
pub struct Locator {
    slots: Slots,
    mask: u64,
    capacity: u64,
    used: u64,
    hasher: std::collections::hash_map::RandomState,
    /// Where a file goes, and the most bytes kept in memory.
    dir: std::path::PathBuf,
    memory_limit: u64,
}

/// Slots for `ids` ids: at most half full.
fn slots_for(ids: u64) -> u64 {
    (ids.max(8) * 2).next_power_of_two()
}

impl Locator {
    /// A table for at most `capacity` ids. It starts small in memory and
    /// doubles as ids come; past `memory_limit` bytes it moves into a
    /// temporary file in `dir`, sized for `capacity` at once. (In memory,
    /// syscalls per lookup are none; the file keeps memory flat.)
    pub fn new(dir: &Path, capacity: u64, memory_limit: u64) -> io::Result<Locator> {
        let mut l = Locator {
            slots: Slots::Memory(Vec::new()),
            mask: 0,
            capacity,
            used: 0,
            hasher: std::collections::hash_map::RandomState::new(),
            dir: dir.to_path_buf(),
            memory_limit,
        };
        l.resize(INITIAL_SLOTS)?;
        Ok(l)
    }

    /// Moves the entries into a table of `slots` slots, or past the
    /// memory limit into a file sized for the capacity (never resized
    /// again: it is at most half full).
    fn resize(&mut self, slots: u64) -> io::Result<()> {
        let (slots, new) = if slots * SLOT <= self.memory_limit {
            (slots, Slots::Memory(vec![0; (slots * SLOT) as usize]))
        } else {
            let slots = slots_for(self.capacity).max(slots);
            let file = tempfile::tempfile_in(&self.dir)?;
            file.set_len(slots * SLOT)?;
            (slots, Slots::File(file))
        };
        let old = std::mem::replace(&mut self.slots, new);
        self.mask = slots - 1;
        if let Slots::Memory(old) = old {
            for entry in old.chunks_exact(SLOT as usize) {
                let entry: &[u8; SLOT as usize] = entry.try_into().expect("a slot");
                if total_of(entry) != EMPTY {
                    let id: &[u8; 16] = entry[..16].try_into().expect("16 bytes");
                    let (slot, _) = self.find(id)?;
                    self.write(slot, entry)?;
                }
            }
        }
        Ok(())
    }

    fn read(&self, slot: u64) -> io::Result<[u8; SLOT as usize]> {
        let mut buf = [0u8; SLOT as usize];
        let at = slot * SLOT;
        match &self.slots {
            Slots::Memory(m) => buf.copy_from_slice(&m[at as usize..(at + SLOT) as usize]),
            Slots::File(f) => f.read_exact_at(&mut buf, at)?,
        }
        Ok(buf)
    }

    fn write(&mut self, slot: u64, buf: &[u8; SLOT as usize]) -> io::Result<()> {
        let at = slot * SLOT;
        match &mut self.slots {
            Slots::Memory(m) => m[at as usize..(at + SLOT) as usize].copy_from_slice(buf),
            Slots::File(f) => f.write_all_at(buf, at)?,
        }
        Ok(())
    }

    /// The slot holding `id`, or the empty slot where it would go.
    fn find(&self, id: &[u8; 16]) -> io::Result<(u64, [u8; SLOT as usize])> {
        let mut slot = self.hasher.hash_one(id) & self.mask;
        loop {
            let buf = self.read(slot)?;
            if total_of(&buf) == EMPTY || &buf[..16] == id {
                return Ok((slot, buf));
            }
            slot = (slot + 1) & self.mask;
        }
    }

    /// Notes that a queue references `id`.
    pub fn reference(&mut self, id: &[u8; 16]) -> io::Result<()> {
        let (mut slot, buf) = self.find(id)?;
        if total_of(&buf) != EMPTY {
            return Ok(());
        }
        if self.used >= self.capacity {
            return Err(io::Error::other(
                "more message ids than the queue indexes can hold",
            ));
        }
        if matches!(self.slots, Slots::Memory(_)) && (self.used + 1) * 2 > self.mask + 1 {
            self.resize((self.mask + 1) * 2)?;
            slot = self.find(id)?.0;
        }
        let mut new = [0u8; SLOT as usize];
        new[..16].copy_from_slice(id);
        new[20..24].copy_from_slice(&REFERENCED.to_be_bytes());
        self.write(slot, &new)?;
        self.used += 1;
        Ok(())
    }

    /// Records where `id` is if it is referenced and not found yet;
    /// returns whether it was.
    pub fn place(&mut self, id: &[u8; 16], at: Location) -> io::Result<bool> {
        let (slot, buf) = self.find(id)?;
        if total_of(&buf) != REFERENCED {
            return Ok(false);
        }
        let mut new = [0u8; SLOT as usize];
        new[..16].copy_from_slice(id);
        new[16..20].copy_from_slice(&at.file.to_be_bytes());
        new[20..24].copy_from_slice(&at.total.to_be_bytes());
        new[24..32].copy_from_slice(&at.offset.to_be_bytes());
        self.write(slot, &new)?;
        Ok(true)
    }

    /// Where `id` was found, if it was.
    pub fn get(&self, id: &[u8; 16]) -> io::Result<Option<Location>> {
        let (_, buf) = self.find(id)?;
        let total = total_of(&buf);
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
        // In memory; moved from memory into a file on the way; a file from
        // the start.
        for limit in [MEMORY_LIMIT, 16 << 10, 0] {
            placed_once(limit);
        }
    }

    fn placed_once(limit: u64) {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Locator::new(dir.path(), 1000, limit).unwrap();
        assert_eq!(matches!(l.slots, Slots::File(_)), limit == 0);
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
        assert_eq!(matches!(l.slots, Slots::File(_)), limit < MEMORY_LIMIT);
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
        for limit in [MEMORY_LIMIT, 16 << 10, 0] {
            let dir = tempfile::tempdir().unwrap();
            let mut l = Locator::new(dir.path(), 2, limit).unwrap();
            l.reference(&[1; 16]).unwrap();
            l.reference(&[2; 16]).unwrap();
            assert!(l.reference(&[3; 16]).is_err());
        }
    }
}
