//! The Erlang external term format: a bounded decoder and an encoder,
//! shared by the store reader (`term_to_binary` of `#basic_message{}`,
//! `#mc{}` and their parts) and the distribution client (control messages,
//! call arguments and answers).
//!
//! Why not the `eetf` crate: its decoder allocates by the lengths the input
//! declares (`vec![0; size]`, `Vec::with_capacity(count)`) and recurses
//! without a depth limit, so five hostile bytes ask for gigabytes and a
//! deeply nested list overflows the stack. Here every count is checked
//! against the bytes actually left, nesting and the number of terms are
//! capped, and binaries borrow from the input instead of being copied.

mod encode;
mod notation;

use std::fmt;

pub use encode::encode;

/// Deepest nesting accepted; RabbitMQ's messages nest a handful of levels,
/// the parse trees the distribution client sends back a few dozen.
pub const MAX_DEPTH: usize = 128;
/// Most terms accepted in one decode (a message has a few dozen; a body
/// split into frames a few thousand binaries).
pub const MAX_TERMS: usize = 1 << 20;

const VERSION: u8 = 131;
const NEW_FLOAT: u8 = 70;
const NEW_PID: u8 = 88;
const NEW_PORT: u8 = 89;
const NEWER_REFERENCE: u8 = 90;
const FLOAT: u8 = 99;
const PORT: u8 = 102;
const PID: u8 = 103;
const NEW_REFERENCE: u8 = 114;
const NEW_FUN: u8 = 112;
const EXPORT: u8 = 113;
const V4_PORT: u8 = 120;
/// Longest reference id RabbitMQ's Erlang sends (OTP 24+: up to 5 words).
const MAX_REF_WORDS: usize = 5;
const BIT_BINARY: u8 = 77;
const SMALL_INTEGER: u8 = 97;
const INTEGER: u8 = 98;
const ATOM: u8 = 100;
const SMALL_TUPLE: u8 = 104;
const LARGE_TUPLE: u8 = 105;
const NIL: u8 = 106;
const STRING: u8 = 107;
const LIST: u8 = 108;
const BINARY: u8 = 109;
const SMALL_BIG: u8 = 110;
const LARGE_BIG: u8 = 111;
const SMALL_ATOM: u8 = 115;
const MAP: u8 = 116;
const ATOM_UTF8: u8 = 118;
const SMALL_ATOM_UTF8: u8 = 119;

/// A decoded term; binaries and strings borrow from the input.
#[derive(Debug, Clone, PartialEq)]
pub enum Term<'a> {
    /// An integer (bignums beyond 128 bits are refused).
    Int(i128),
    /// A float.
    Float(f64),
    /// An atom (`true`, `false` and `undefined` are atoms too).
    Atom(&'a str),
    /// A binary.
    Binary(&'a [u8]),
    /// A bitstring whose last byte holds only `bits` bits.
    BitBinary(&'a [u8], u8),
    /// A tuple.
    Tuple(Vec<Term<'a>>),
    /// A proper list (`STRING_EXT` lists of bytes become [`Term::Bytes`]).
    List(Vec<Term<'a>>),
    /// A list whose tail is not `[]`.
    Improper(Vec<Term<'a>>, Box<Term<'a>>),
    /// A list of small integers encoded as `STRING_EXT`.
    Bytes(&'a [u8]),
    /// The empty list.
    Nil,
    /// A map, in encoded order.
    Map(Vec<(Term<'a>, Term<'a>)>),
    /// A process identifier.
    Pid(Pid<'a>),
    /// A reference.
    Ref(Ref<'a>),
    /// A term of a kind nothing here looks into (a port, a fun, an old
    /// float): its encoding, tag first, kept verbatim so it can be sent on.
    Other(&'a [u8]),
}

/// A process identifier (`NEW_PID_EXT`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pid<'a> {
    /// The node it lives on.
    pub node: &'a str,
    /// Process number.
    pub id: u32,
    /// Serial.
    pub serial: u32,
    /// The node's incarnation.
    pub creation: u32,
}

/// A reference (`NEWER_REFERENCE_EXT`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ref<'a> {
    /// The node that made it.
    pub node: &'a str,
    /// The node's incarnation.
    pub creation: u32,
    /// Its id words (at most five).
    pub id: Vec<u32>,
}

impl<'a> Term<'a> {
    /// The atom's name, if this is an atom.
    pub fn atom(&self) -> Option<&'a str> {
        match self {
            Term::Atom(a) => Some(a),
            _ => None,
        }
    }

    /// The bytes, if this is a binary.
    pub fn binary(&self) -> Option<&'a [u8]> {
        match self {
            Term::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// The elements of a tuple.
    pub fn tuple(&self) -> Option<&[Term<'a>]> {
        match self {
            Term::Tuple(t) => Some(t),
            _ => None,
        }
    }

    /// The elements of a proper list (`[]` is empty; a byte string is not
    /// returned here, see [`Term::Bytes`]).
    pub fn list(&self) -> Option<&[Term<'a>]> {
        match self {
            Term::List(l) => Some(l),
            Term::Nil => Some(&[]),
            _ => None,
        }
    }

    /// The integer, if it is one.
    pub fn int(&self) -> Option<i128> {
        match self {
            Term::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// `true` or `false`.
    pub fn boolean(&self) -> Option<bool> {
        match self {
            Term::Atom("true") => Some(true),
            Term::Atom("false") => Some(false),
            _ => None,
        }
    }

    /// A tagged record `{Tag, ...}`: its fields after the tag.
    pub fn record(&self, tag: &str) -> Option<&[Term<'a>]> {
        match self.tuple()? {
            [Term::Atom(t), fields @ ..] if *t == tag => Some(fields),
            _ => None,
        }
    }
}

/// Why and where a term could not be decoded (offset within the input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermError {
    /// Byte offset of the problem within the decoded slice.
    pub offset: usize,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for TermError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (term byte {})", self.problem, self.offset)
    }
}

impl std::error::Error for TermError {}

/// Decodes one term (`131` version byte first) from the start of `input`;
/// returns it and the number of bytes it used (trailing bytes are allowed,
/// as `binary_to_term/1` allows them).
pub fn decode(input: &[u8]) -> Result<(Term<'_>, usize), TermError> {
    let mut d = Decoder {
        input,
        pos: 0,
        terms: 0,
    };
    let version = d.u8()?;
    if version != VERSION {
        return Err(d.error_at(
            0,
            format!("not an Erlang term (version byte {version}, not 131)"),
        ));
    }
    let term = d.term(0)?;
    Ok((term, d.pos))
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    terms: usize,
}

impl<'a> Decoder<'a> {
    fn error_at(&self, offset: usize, problem: impl Into<String>) -> TermError {
        TermError {
            offset,
            problem: problem.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TermError> {
        let left = self.input.len() - self.pos;
        if n > left {
            return Err(self.error_at(
                self.pos,
                format!("truncated: {n} bytes needed, {left} left"),
            ));
        }
        let out = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, TermError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, TermError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, TermError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Checks that `count` elements of at least `min_size` bytes each can
    /// still fit, so that no allocation exceeds what the input holds.
    fn check_count(&self, count: usize, min_size: usize, at: usize) -> Result<(), TermError> {
        let left = self.input.len() - self.pos;
        if count.saturating_mul(min_size) > left {
            return Err(self.error_at(
                at,
                format!("declares {count} elements but only {left} bytes are left"),
            ));
        }
        if self.terms.saturating_add(count) > MAX_TERMS {
            return Err(self.error_at(at, format!("more than {MAX_TERMS} terms")));
        }
        Ok(())
    }

    fn term(&mut self, depth: usize) -> Result<Term<'a>, TermError> {
        if depth > MAX_DEPTH {
            return Err(self.error_at(self.pos, format!("nested deeper than {MAX_DEPTH}")));
        }
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(self.error_at(self.pos, format!("more than {MAX_TERMS} terms")));
        }
        let at = self.pos;
        let tag = self.u8()?;
        Ok(match tag {
            SMALL_INTEGER => Term::Int(i128::from(self.u8()?)),
            INTEGER => Term::Int(i128::from(self.u32()? as i32)),
            NEW_FLOAT => {
                let b = self.take(8)?;
                Term::Float(f64::from_be_bytes(b.try_into().expect("8 bytes")))
            }
            SMALL_BIG => {
                let n = usize::from(self.u8()?);
                self.big(n, at)?
            }
            LARGE_BIG => {
                let n = self.u32()? as usize;
                self.big(n, at)?
            }
            ATOM | ATOM_UTF8 => {
                let n = usize::from(self.u16()?);
                self.atom(n, tag == ATOM, at)?
            }
            SMALL_ATOM | SMALL_ATOM_UTF8 => {
                let n = usize::from(self.u8()?);
                self.atom(n, tag == SMALL_ATOM, at)?
            }
            SMALL_TUPLE => {
                let n = usize::from(self.u8()?);
                Term::Tuple(self.elements(n, depth, at)?)
            }
            LARGE_TUPLE => {
                let n = self.u32()? as usize;
                Term::Tuple(self.elements(n, depth, at)?)
            }
            NIL => Term::Nil,
            STRING => {
                let n = usize::from(self.u16()?);
                Term::Bytes(self.take(n)?)
            }
            LIST => {
                let n = self.u32()? as usize;
                let elements = self.elements(n, depth, at)?;
                match self.term(depth + 1)? {
                    Term::Nil => Term::List(elements),
                    tail => Term::Improper(elements, Box::new(tail)),
                }
            }
            BINARY => {
                let n = self.u32()? as usize;
                Term::Binary(self.take(n)?)
            }
            BIT_BINARY => {
                let n = self.u32()? as usize;
                let bits = self.u8()?;
                if !(1..=8).contains(&bits) || n == 0 {
                    return Err(self.error_at(
                        at,
                        format!("bitstring with {bits} bits in its last of {n} bytes"),
                    ));
                }
                Term::BitBinary(self.take(n)?, bits)
            }
            MAP => {
                let n = self.u32()? as usize;
                self.check_count(n, 2, at)?;
                let mut pairs = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = self.term(depth + 1)?;
                    let v = self.term(depth + 1)?;
                    pairs.push((k, v));
                }
                Term::Map(pairs)
            }
            NEW_PID | PID => {
                let node = self.node_atom(depth)?;
                let (id, serial) = (self.u32()?, self.u32()?);
                let creation = if tag == NEW_PID {
                    self.u32()?
                } else {
                    u32::from(self.u8()?)
                };
                Term::Pid(Pid {
                    node,
                    id,
                    serial,
                    creation,
                })
            }
            NEWER_REFERENCE | NEW_REFERENCE => {
                let words = usize::from(self.u16()?);
                if words == 0 || words > MAX_REF_WORDS {
                    return Err(self.error_at(at, format!("a reference of {words} words")));
                }
                let node = self.node_atom(depth)?;
                let creation = if tag == NEWER_REFERENCE {
                    self.u32()?
                } else {
                    u32::from(self.u8()?)
                };
                let mut id = Vec::with_capacity(words);
                for _ in 0..words {
                    id.push(self.u32()?);
                }
                Term::Ref(Ref { node, creation, id })
            }
            PORT | NEW_PORT | V4_PORT => {
                self.node_atom(depth)?;
                self.take(match tag {
                    PORT => 5,
                    NEW_PORT => 8,
                    _ => 12,
                })?;
                Term::Other(&self.input[at..self.pos])
            }
            FLOAT => {
                self.take(31)?;
                Term::Other(&self.input[at..self.pos])
            }
            NEW_FUN => {
                // Its size counts itself.
                let size = self.u32()? as usize;
                if size < 4 {
                    return Err(self.error_at(at, format!("a fun of {size} bytes")));
                }
                self.take(size - 4)?;
                Term::Other(&self.input[at..self.pos])
            }
            EXPORT => {
                for _ in 0..3 {
                    self.term(depth + 1)?;
                }
                Term::Other(&self.input[at..self.pos])
            }
            other => {
                return Err(self.error_at(at, format!("term type {other} is not supported")));
            }
        })
    }

    /// The node atom of a pid, port or reference.
    fn node_atom(&mut self, depth: usize) -> Result<&'a str, TermError> {
        let at = self.pos;
        match self.term(depth + 1)? {
            Term::Atom(node) => Ok(node),
            _ => Err(self.error_at(at, "a node name that is not an atom")),
        }
    }

    fn elements(&mut self, n: usize, depth: usize, at: usize) -> Result<Vec<Term<'a>>, TermError> {
        self.check_count(n, 1, at)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.term(depth + 1)?);
        }
        Ok(out)
    }

    fn big(&mut self, n: usize, at: usize) -> Result<Term<'a>, TermError> {
        let sign = self.u8()?;
        let digits = self.take(n)?;
        // Little-endian magnitude; anything beyond 127 bits does not occur in a store.
        let significant = digits.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        if significant > 15 {
            return Err(self.error_at(at, format!("integer of {n} bytes is too large")));
        }
        let mut value: i128 = 0;
        for &b in digits[..significant].iter().rev() {
            value = (value << 8) | i128::from(b);
        }
        Ok(Term::Int(match sign {
            0 => value,
            1 => -value,
            s => return Err(self.error_at(at, format!("integer sign byte {s} is neither 0 nor 1"))),
        }))
    }

    fn atom(&mut self, n: usize, latin1: bool, at: usize) -> Result<Term<'a>, TermError> {
        let bytes = self.take(n)?;
        // Latin-1 atoms RabbitMQ writes are ASCII; anything else must be UTF-8.
        if latin1 && !bytes.is_ascii() {
            return Err(self.error_at(at, "an atom that is not ASCII"));
        }
        let name = std::str::from_utf8(bytes)
            .map_err(|_| self.error_at(at, "an atom that is not UTF-8"))?;
        Ok(Term::Atom(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // term_to_binary({basic_message, <<"x">>, [<<"rk">>], 1.5, -70000, 1 bsl 70, #{a => []}, "ab", [1|2]})
    // as printed by Erlang/OTP 25.
    const ERLANG: &[u8] = &[
        131, 104, 9, 100, 0, 13, 98, 97, 115, 105, 99, 95, 109, 101, 115, 115, 97, 103, 101, 109,
        0, 0, 0, 1, 120, 108, 0, 0, 0, 1, 109, 0, 0, 0, 2, 114, 107, 106, 70, 63, 248, 0, 0, 0, 0,
        0, 0, 98, 255, 254, 238, 144, 110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 116, 0, 0, 0, 1, 100,
        0, 1, 97, 106, 107, 0, 2, 97, 98, 108, 0, 0, 0, 1, 97, 1, 97, 2,
    ];

    #[test]
    fn decodes_what_erlang_writes() {
        let (term, used) = decode(ERLANG).unwrap();
        assert_eq!(used, ERLANG.len());
        let fields = term.record("basic_message").unwrap();
        assert_eq!(fields[0], Term::Binary(b"x"));
        assert_eq!(fields[1], Term::List(vec![Term::Binary(b"rk")]));
        assert_eq!(fields[2], Term::Float(1.5));
        assert_eq!(fields[3], Term::Int(-70000));
        assert_eq!(fields[4], Term::Int(1 << 70));
        assert_eq!(fields[5], Term::Map(vec![(Term::Atom("a"), Term::Nil)]));
        assert_eq!(fields[6], Term::Bytes(b"ab"));
        assert_eq!(
            fields[7],
            Term::Improper(vec![Term::Int(1)], Box::new(Term::Int(2)))
        );
    }

    // term_to_binary({self(), make_ref(), fun erlang:node/0, fun() -> ok end, Port, 1.5})
    // on a local Erlang/OTP 25 node (nonode@nohost).
    const DISTRIBUTION: &[u8] = &[
        131, 104, 6, 88, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115,
        116, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 90, 0, 3, 100, 0, 13, 110, 111, 110, 111, 100,
        101, 64, 110, 111, 104, 111, 115, 116, 0, 0, 0, 0, 0, 1, 250, 255, 75, 28, 0, 1, 130, 191,
        55, 71, 113, 100, 0, 6, 101, 114, 108, 97, 110, 103, 100, 0, 4, 110, 111, 100, 101, 97, 0,
        112, 0, 0, 0, 143, 0, 6, 83, 97, 170, 70, 21, 144, 209, 189, 241, 235, 98, 209, 166, 235,
        8, 0, 0, 0, 43, 0, 0, 0, 1, 100, 0, 8, 101, 114, 108, 95, 101, 118, 97, 108, 97, 43, 98, 0,
        50, 155, 13, 88, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115,
        116, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 104, 6, 97, 1, 106, 100, 0, 4, 110, 111, 110, 101,
        100, 0, 4, 110, 111, 110, 101, 116, 0, 0, 0, 0, 108, 0, 0, 0, 1, 104, 5, 100, 0, 6, 99,
        108, 97, 117, 115, 101, 97, 1, 106, 106, 108, 0, 0, 0, 1, 104, 3, 100, 0, 4, 97, 116, 111,
        109, 97, 1, 100, 0, 2, 111, 107, 106, 106, 89, 100, 0, 13, 110, 111, 110, 111, 100, 101,
        64, 110, 111, 104, 111, 115, 116, 0, 0, 0, 0, 0, 0, 0, 0, 70, 63, 248, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn decodes_pids_references_and_passes_funs_and_ports_through() {
        let (term, used) = decode(DISTRIBUTION).unwrap();
        assert_eq!(used, DISTRIBUTION.len());
        let items = term.tuple().unwrap();
        assert_eq!(
            items[0],
            Term::Pid(Pid {
                node: "nonode@nohost",
                id: 9,
                serial: 0,
                creation: 0
            })
        );
        let Term::Ref(r) = &items[1] else {
            panic!("{}", items[1])
        };
        assert_eq!((r.node, r.id.len()), ("nonode@nohost", 3));
        assert!(matches!(items[2], Term::Other([113, ..])), "{}", items[2]);
        assert!(matches!(items[3], Term::Other([112, ..])), "{}", items[3]);
        assert!(matches!(items[4], Term::Other([89, ..])), "{}", items[4]);
        assert_eq!(items[5], Term::Float(1.5));
        // Sent on unchanged (atoms re-encoded in their short UTF-8 form).
        let mut again = Vec::new();
        encode(&term, &mut again);
        assert_eq!(decode(&again).unwrap(), (term.clone(), again.len()));
        assert_eq!(
            term.to_string().split(',').next().unwrap(),
            "{<nonode@nohost.9.0>"
        );
    }

    #[test]
    fn empty_lists_and_long_strings_are_written_as_erlang_reads_them() {
        let mut empty = Vec::new();
        encode(&Term::List(vec![]), &mut empty);
        assert_eq!(empty, [VERSION, NIL]);
        let long = vec![b'x'; 70_000];
        let mut bytes = Vec::new();
        encode(&Term::Bytes(&long), &mut bytes);
        let (back, used) = decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        let items = back.list().unwrap();
        assert_eq!(items.len(), 70_000);
        assert!(items.iter().all(|t| *t == Term::Int(i128::from(b'x'))));
    }

    #[test]
    fn prints_like_erlang() {
        let t = Term::Tuple(vec![
            Term::Atom("error"),
            Term::Atom("Bad Name"),
            Term::Binary(b"ok"),
            Term::Bytes(b"ab"),
            Term::List(vec![Term::Int(-1), Term::Binary(&[0, 255])]),
            Term::Map(vec![(Term::Atom("a"), Term::Nil)]),
        ]);
        assert_eq!(
            t.to_string(),
            r#"{error,'Bad Name',<<"ok">>,"ab",[-1,<<0,255>>],#{a => []}}"#
        );
    }

    #[test]
    fn declared_sizes_beyond_the_input_are_refused_without_allocating() {
        // A list claiming 4 billion elements, a binary claiming 4 GiB.
        for hostile in [
            &[131, LIST, 255, 255, 255, 255, NIL][..],
            &[131, BINARY, 255, 255, 255, 255, 1, 2][..],
            &[131, LARGE_TUPLE, 255, 255, 255, 255][..],
            &[131, MAP, 255, 255, 255, 255][..],
            &[131, LARGE_BIG, 255, 255, 255, 255, 0][..],
        ] {
            let err = decode(hostile).unwrap_err();
            assert!(err.offset <= hostile.len(), "{err}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut deep = vec![131];
        for _ in 0..10_000 {
            deep.extend_from_slice(&[SMALL_TUPLE, 1]);
        }
        deep.push(NIL);
        let err = decode(&deep).unwrap_err();
        assert!(err.problem.contains("nested deeper"), "{err}");
    }

    fn arb_term() -> impl Strategy<Value = Term<'static>> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(|i| Term::Int(i128::from(i))),
            any::<f64>()
                .prop_filter("NaN never equals itself", |f| !f.is_nan())
                .prop_map(Term::Float),
            prop_oneof![Just("true"), Just("undefined"), Just("basic_message")]
                .prop_map(Term::Atom),
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|v| Term::Binary(Box::leak(v.into_boxed_slice()))),
            Just(Term::Nil),
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
                |(id, serial, creation)| Term::Pid(Pid {
                    node: "rabbit@host",
                    id,
                    serial,
                    creation
                })
            ),
            (any::<u32>(), proptest::collection::vec(any::<u32>(), 1..=5)).prop_map(
                |(creation, id)| Term::Ref(Ref {
                    node: "rabbitmq-backup-1@host",
                    creation,
                    id
                })
            ),
            "[a-z]{256,300}".prop_map(|a| Term::Atom(Box::leak(a.into_boxed_str()))),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Term::Tuple),
                proptest::collection::vec(inner.clone(), 1..8).prop_map(Term::List),
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Term::Map),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn round_trips(term in arb_term()) {
            let mut bytes = Vec::new();
            encode(&term, &mut bytes);
            let (back, used) = decode(&bytes).unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(back, term);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut input = vec![131];
            input.extend_from_slice(&bytes);
            if let Err(e) = decode(&input) {
                prop_assert!(e.offset <= input.len());
            }
        }

        #[test]
        fn mutated_terms_never_panic(term in arb_term(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
            let mut bytes = Vec::new();
            encode(&term, &mut bytes);
            for (at, value) in flips {
                let i = at % bytes.len();
                bytes[i] = value;
            }
            bytes.truncate(1 + cut % bytes.len());
            let _ = decode(&bytes);
        }
    }
}
