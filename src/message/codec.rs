//! A bounds-checked big-endian reader for wire formats: every read is
//! checked against the bytes left, errors carry the offset.

use std::fmt;

/// A wire-format error at a byte offset of the decoded input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// Offset of the problem from the start of the input.
    pub offset: u64,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.problem)
    }
}

impl std::error::Error for WireError {}

/// Reads a byte slice front to back.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of `data[0]` in the whole input, for error messages.
    base: u64,
}

impl<'a> Reader<'a> {
    /// A reader over `data`, which starts at `base` in the whole input.
    pub fn new(data: &'a [u8], base: u64) -> Reader<'a> {
        Reader { data, pos: 0, base }
    }

    /// Offset of the next byte in the whole input.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// True when everything was read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// An error at an offset of the whole input.
    pub fn error_at(&self, offset: u64, problem: impl Into<String>) -> WireError {
        WireError {
            offset,
            problem: problem.into(),
        }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.remaining() {
            return Err(self.error_at(
                self.offset(),
                format!("truncated: {n} bytes needed, {} left", self.remaining()),
            ));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// A reader over the next `n` bytes (which this one skips).
    pub fn sub(&mut self, n: usize) -> Result<Reader<'a>, WireError> {
        let base = self.offset();
        Ok(Reader::new(self.bytes(n)?, base))
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.bytes(1)?[0])
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A big-endian u64.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        Ok(self.bytes(N)?.try_into().expect("N bytes"))
    }

    /// A short string: a length byte, then that many bytes.
    pub fn short_str(&mut self) -> Result<&'a [u8], WireError> {
        let n = usize::from(self.u8()?);
        self.bytes(n)
    }

    /// A long string: a 32-bit length, then that many bytes.
    pub fn long_str(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }
}
