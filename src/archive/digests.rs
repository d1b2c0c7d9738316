//! SHA-256 of unpacked files, computed on other threads while the unpacking
//! thread goes on writing: each file goes to one hashing thread (its bytes
//! must be hashed in order), different files to different threads. Bounded
//! queues keep memory to a few buffers per thread.

use std::collections::HashMap;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

enum Msg {
    Data(usize, Vec<u8>),
    End(usize),
}

/// Hashing threads; files are numbered by the caller.
pub struct Digests {
    lanes: Vec<SyncSender<Msg>>,
    threads: Vec<JoinHandle<HashMap<usize, [u8; 32]>>>,
    assigned: HashMap<usize, usize>,
    next_lane: usize,
}

impl Digests {
    /// Starts `threads` hashing threads (at least one).
    pub fn new(threads: usize) -> Digests {
        let (lanes, threads) = (0..threads.max(1))
            .map(|_| {
                let (tx, rx) = sync_channel::<Msg>(4);
                let handle = std::thread::spawn(move || {
                    let mut open: HashMap<usize, Sha256> = HashMap::new();
                    let mut done = HashMap::new();
                    for msg in rx {
                        match msg {
                            Msg::Data(file, bytes) => open.entry(file).or_default().update(&bytes),
                            Msg::End(file) => {
                                let digest = open.remove(&file).unwrap_or_default().finalize();
                                done.insert(file, digest.into());
                            }
                        }
                    }
                    done
                });
                (tx, handle)
            })
            .unzip();
        Digests {
            lanes,
            threads,
            assigned: HashMap::new(),
            next_lane: 0,
        }
    }

    fn lane(&mut self, file: usize) -> &SyncSender<Msg> {
        let n = self.lanes.len();
        let next = &mut self.next_lane;
        let lane = *self.assigned.entry(file).or_insert_with(|| {
            *next = (*next + 1) % n;
            *next
        });
        &self.lanes[lane]
    }

    /// Adds `bytes` to file `file`'s digest.
    pub fn update(&mut self, file: usize, bytes: Vec<u8>) {
        // A send fails only if the thread died; `finish` reports that.
        let _ = self.lane(file).send(Msg::Data(file, bytes));
    }

    /// Ends file `file` (a file never updated is the empty digest).
    pub fn end(&mut self, file: usize) {
        let _ = self.lane(file).send(Msg::End(file));
        self.assigned.remove(&file);
    }

    /// Waits for every digest.
    pub fn finish(self) -> std::io::Result<HashMap<usize, [u8; 32]>> {
        drop(self.lanes);
        let mut all = HashMap::new();
        for t in self.threads {
            let done = t
                .join()
                .map_err(|_| std::io::Error::other("a hashing thread failed"))?;
            all.extend(done);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_files_get_their_own_digests() {
        let mut d = Digests::new(3);
        let parts: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 1000 + i as usize]).collect();
        for (i, p) in parts.iter().enumerate() {
            d.update(i, p[..500].to_vec());
        }
        for (i, p) in parts.iter().enumerate() {
            d.update(i, p[500..].to_vec());
            d.end(i);
        }
        d.end(10);
        let all = d.finish().unwrap();
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(all[&i], <[u8; 32]>::from(Sha256::digest(p)), "file {i}");
        }
        assert_eq!(all[&10], <[u8; 32]>::from(Sha256::digest(b"")));
    }
}
