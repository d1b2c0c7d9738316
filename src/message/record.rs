//! Logical records: a queue's messages as a byte stream, independent of
//! any RabbitMQ file format (quorum queues and streams are captured this
//! way, §12). Format version 1, all integers big-endian:
//!
//! ```text
//! file    = magic "RBLR" | version u8 (1) | 3 zero bytes
//!         | vhost: length u8, bytes (UTF-8) | queue: length u8, bytes (UTF-8)
//!         | record*
//! record  = length u32 (of what follows, at most 1 GiB)
//!         | flags u8 (0; other values are refused)
//!         | exchange: length u8, bytes (UTF-8)
//!         | routing key count u32, then each: length u8, bytes (UTF-8);
//!           the first is the publish routing key, the rest CC/BCC keys
//!         | properties: length u32, AMQP 0-9-1 basic content properties
//!           (flags word and fields, as in a content header frame)
//!         | body: length u64, bytes
//! ```
//!
//! The records of a file are the queue's messages in queue order. The
//! decoder checks every length against the bytes left in the file and in
//! the record, so hostile input never makes it allocate more than is there.

use std::io::{self, Read, Write};

use bytes::Bytes;

use super::codec::{Reader, WireError};
use super::{Message, Properties};

/// The first bytes of a logical record file.
pub const MAGIC: &[u8; 4] = b"RBLR";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Largest record accepted (RabbitMQ's largest message is 512 MiB).
pub const MAX_RECORD: u64 = 1 << 30;
const HEADER: usize = 8;

/// Writes a logical record file.
pub struct RecordWriter<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> RecordWriter<W> {
    /// Starts the file of queue `queue` in `vhost` (writes the header).
    pub fn new(mut out: W, vhost: &str, queue: &str) -> io::Result<RecordWriter<W>> {
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&[VERSION, 0, 0, 0]);
        short(&mut header, "the vhost name", vhost).map_err(io::Error::other)?;
        short(&mut header, "the queue name", queue).map_err(io::Error::other)?;
        out.write_all(&header)?;
        Ok(RecordWriter {
            out,
            written: header.len() as u64,
        })
    }

    /// Appends one message.
    pub fn write(&mut self, message: &Message) -> io::Result<()> {
        let record = encode(message).map_err(io::Error::other)?;
        self.out.write_all(&(record.len() as u32).to_be_bytes())?;
        self.out.write_all(&record)?;
        self.written += 4 + record.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// One record's bytes after its length word.
pub fn encode(m: &Message) -> Result<Vec<u8>, String> {
    let properties = m.properties.encode()?;
    let mut out = Vec::with_capacity(16 + m.exchange.len() + properties.len() + m.body.len());
    out.push(0);
    short(&mut out, "the exchange name", &m.exchange)?;
    out.extend_from_slice(&(m.routing_keys.len() as u32).to_be_bytes());
    for key in &m.routing_keys {
        short(&mut out, "a routing key", key)?;
    }
    out.extend_from_slice(&(properties.len() as u32).to_be_bytes());
    out.extend_from_slice(&properties);
    out.extend_from_slice(&(m.body.len() as u64).to_be_bytes());
    out.extend_from_slice(&m.body);
    if out.len() as u64 > MAX_RECORD {
        return Err(format!(
            "a message of {} bytes is too large for a record",
            out.len()
        ));
    }
    Ok(out)
}

fn short(out: &mut Vec<u8>, what: &str, s: &str) -> Result<(), String> {
    let len = u8::try_from(s.len()).map_err(|_| format!("{what} is over 255 bytes"))?;
    out.push(len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Decodes one record's bytes (after its length word); `base` is their
/// offset in the file.
pub fn decode(bytes: &[u8], base: u64) -> Result<Message, WireError> {
    let mut r = Reader::new(bytes, base);
    let flags_at = r.offset();
    let flags = r.u8()?;
    if flags != 0 {
        return Err(r.error_at(
            flags_at,
            format!("record flags {flags} are unknown (written by a newer version?)"),
        ));
    }
    let exchange = utf8(&mut r, "the exchange name")?;
    let count_at = r.offset();
    let count = r.u32()? as usize;
    // Each key takes at least its length byte.
    if count > r.remaining() {
        return Err(r.error_at(
            count_at,
            format!("{count} routing keys cannot fit in {} bytes", r.remaining()),
        ));
    }
    let mut routing_keys = Vec::with_capacity(count);
    for _ in 0..count {
        routing_keys.push(utf8(&mut r, "a routing key")?);
    }
    let props_len = r.u32()? as usize;
    let props_base = r.offset();
    let properties = Properties::decode(r.bytes(props_len)?, props_base)?;
    let body_at = r.offset();
    let body_len = r.u64()?;
    if body_len != r.remaining() as u64 {
        return Err(r.error_at(
            body_at,
            format!(
                "the body is said to be {body_len} bytes but the record holds {}",
                r.remaining()
            ),
        ));
    }
    let body = Bytes::copy_from_slice(r.bytes(body_len as usize)?);
    Ok(Message {
        exchange,
        routing_keys,
        properties,
        body,
    })
}

fn utf8(r: &mut Reader<'_>, what: &str) -> Result<String, WireError> {
    let at = r.offset();
    let bytes = r.short_str()?;
    String::from_utf8(bytes.to_vec()).map_err(|_| r.error_at(at, format!("{what} is not UTF-8")))
}

/// Reads a logical record file of known length, one message at a time.
pub struct RecordReader<R: Read> {
    input: R,
    /// Bytes of the file not yet read.
    left: u64,
    offset: u64,
    vhost: String,
    queue: String,
}

impl<R: Read> RecordReader<R> {
    /// Checks the header of a file of `len` bytes.
    pub fn new(mut input: R, len: u64) -> Result<RecordReader<R>, WireError> {
        let bad = |problem: String| WireError { offset: 0, problem };
        if len < HEADER as u64 {
            return Err(bad(format!(
                "{len} bytes is too short for a logical record file"
            )));
        }
        let mut header = [0u8; HEADER];
        input
            .read_exact(&mut header)
            .map_err(|e| bad(format!("cannot read the header: {e}")))?;
        if &header[..4] != MAGIC {
            return Err(bad("not a logical record file (no RBLR magic)".into()));
        }
        if header[4] != VERSION {
            return Err(bad(format!(
                "logical record format version {} is not {VERSION}: use a newer rabbitmq-backup",
                header[4]
            )));
        }
        if header[5..] != [0, 0, 0] {
            return Err(WireError {
                offset: 5,
                problem: "the reserved header bytes are not zero".into(),
            });
        }
        let mut reader = RecordReader {
            input,
            left: len - HEADER as u64,
            offset: HEADER as u64,
            vhost: String::new(),
            queue: String::new(),
        };
        reader.vhost = reader.name("the vhost name")?;
        reader.queue = reader.name("the queue name")?;
        Ok(reader)
    }

    /// The vhost of the queue.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The queue whose messages these are.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    fn name(&mut self, what: &str) -> Result<String, WireError> {
        let at = self.offset;
        let bad = |problem: String| WireError {
            offset: at,
            problem,
        };
        let mut len = [0u8; 1];
        if self.left < 1 {
            return Err(bad(format!("the file ends before {what}")));
        }
        self.input
            .read_exact(&mut len)
            .map_err(|e| bad(format!("cannot read: {e}")))?;
        let n = u64::from(len[0]);
        if n > self.left - 1 {
            return Err(bad(format!("the file ends inside {what}")));
        }
        let mut bytes = vec![0u8; n as usize];
        self.input
            .read_exact(&mut bytes)
            .map_err(|e| bad(format!("cannot read: {e}")))?;
        self.left -= 1 + n;
        self.offset += 1 + n;
        String::from_utf8(bytes).map_err(|_| bad(format!("{what} is not UTF-8")))
    }

    /// The next message, or `None` at the end of the file.
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        if self.left == 0 {
            return Ok(None);
        }
        let at = self.offset;
        let bad = |problem: String| WireError {
            offset: at,
            problem,
        };
        if self.left < 4 {
            return Err(bad(format!(
                "{} stray bytes after the last record",
                self.left
            )));
        }
        let mut word = [0u8; 4];
        self.input
            .read_exact(&mut word)
            .map_err(|e| bad(format!("cannot read: {e}")))?;
        let len = u64::from(u32::from_be_bytes(word));
        if len > MAX_RECORD || len > self.left - 4 {
            return Err(bad(format!(
                "a record of {len} bytes, but {} bytes are left (at most {MAX_RECORD})",
                self.left - 4
            )));
        }
        let mut record = vec![0u8; len as usize];
        self.input
            .read_exact(&mut record)
            .map_err(|e| bad(format!("cannot read: {e}")))?;
        self.left -= 4 + len;
        self.offset += 4 + len;
        decode(&record, at + 4).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{FieldValue, Table};
    use proptest::prelude::*;

    fn sample() -> Message {
        Message {
            exchange: "orders".into(),
            routing_keys: vec!["order.created".into(), "audit".into()],
            properties: Properties {
                content_type: Some(b"application/json".to_vec()),
                delivery_mode: Some(2),
                priority: Some(3),
                headers: Some(Table(vec![
                    (b"x-n".to_vec(), FieldValue::I64(-5)),
                    (
                        b"CC".to_vec(),
                        FieldValue::Array(vec![FieldValue::LongStr(b"audit".to_vec())]),
                    ),
                ])),
                ..Default::default()
            },
            body: Bytes::from_static(b"{\"id\":1}"),
        }
    }

    fn file(messages: &[Message]) -> Vec<u8> {
        let mut w = RecordWriter::new(Vec::new(), "/", "orders.quorum").unwrap();
        for m in messages {
            w.write(m).unwrap();
        }
        w.into_inner()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Message>, WireError> {
        let mut r = RecordReader::new(bytes, bytes.len() as u64)?;
        let mut out = Vec::new();
        while let Some(m) = r.next_message()? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn a_file_round_trips_in_order() {
        let mut second = sample();
        second.body = Bytes::from(vec![0u8; 70_000]);
        second.routing_keys.truncate(1);
        let bytes = file(&[sample(), second.clone()]);
        assert_eq!(&bytes[..5], b"RBLR\x01");
        assert_eq!(read_all(&bytes).unwrap(), vec![sample(), second]);
        let r = RecordReader::new(&bytes[..], bytes.len() as u64).unwrap();
        assert_eq!((r.vhost(), r.queue()), ("/", "orders.quorum"));
    }

    #[test]
    fn a_newer_version_is_refused_plainly() {
        let mut bytes = file(&[sample()]);
        bytes[4] = 2;
        let err = read_all(&bytes).unwrap_err();
        assert!(err.problem.contains("newer rabbitmq-backup"), "{err}");
    }

    #[test]
    fn a_truncated_file_names_the_record() {
        let bytes = file(&[sample(), sample()]);
        let header = 8 + 2 + "/".len() + "orders.quorum".len();
        let first_len =
            4 + u32::from_be_bytes(bytes[header..header + 4].try_into().unwrap()) as usize;
        let cut = &bytes[..bytes.len() - 3];
        let err = read_all(cut).unwrap_err();
        assert_eq!(err.offset, (header + first_len) as u64, "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn hostile_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut input = b"RBLR\x01\0\0\0\x01/\x01q".to_vec();
            input.extend_from_slice(&bytes);
            let _ = read_all(&input);
        }

        #[test]
        fn mutated_files_never_panic_or_overallocate(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut bytes = file(&[sample(), sample()]);
            for (at, v) in flips {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            // The declared file length is the real one: nothing larger is read.
            let _ = read_all(&bytes);
        }

        #[test]
        fn messages_round_trip(
            exchange in "[a-z.]{0,20}",
            keys in proptest::collection::vec("[a-z.#*]{0,30}", 1..4),
            body in proptest::collection::vec(any::<u8>(), 0..200),
            props in crate::message::properties::tests::arb_properties(),
        ) {
            let m = Message { exchange, routing_keys: keys, properties: props, body: Bytes::from(body) };
            let bytes = file(std::slice::from_ref(&m));
            let back = read_all(&bytes).unwrap();
            prop_assert_eq!(back.len(), 1);
            prop_assert_eq!(back[0].properties.encode().unwrap(), m.properties.encode().unwrap());
            prop_assert_eq!(&back[0].routing_keys, &m.routing_keys);
            prop_assert_eq!(&back[0].body, &m.body);
        }
    }
}
