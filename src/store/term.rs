//! A bounded decoder of the Erlang external term format, for the subset
//! RabbitMQ writes into its message stores (`term_to_binary` of
//! `#basic_message{}`, `#mc{}` and their parts).
//!
//! Why not the `eetf` crate: its decoder allocates by the lengths the input
//! declares (`vec![0; size]`, `Vec::with_capacity(count)`) and recurses
//! without a depth limit, so five hostile bytes ask for gigabytes and a
//! deeply nested list overflows the stack. Here every count is checked
//! against the bytes actually left, nesting and the number of terms are
//! capped, and binaries borrow from the input instead of being copied.

use std::fmt;

/// Deepest nesting accepted; RabbitMQ's messages nest a handful of levels.
pub const MAX_DEPTH: usize = 64;
/// Most terms accepted in one decode (a message has a few dozen; a body
/// split into frames a few thousand binaries).
pub const MAX_TERMS: usize = 1 << 20;

const VERSION: u8 = 131;
const NEW_FLOAT: u8 = 70;
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
            other => {
                return Err(self.error_at(
                    at,
                    format!("term type {other} is not one RabbitMQ stores in a message"),
                ));
            }
        })
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

/// Encodes a term (used by tests and the fixture writer; not a general
/// encoder: it writes the forms [`decode`] reads).
pub fn encode(term: &Term<'_>, out: &mut Vec<u8>) {
    out.push(VERSION);
    encode_inner(term, out);
}

fn encode_inner(term: &Term<'_>, out: &mut Vec<u8>) {
    match term {
        Term::Int(i) if (0..=255).contains(i) => {
            out.push(SMALL_INTEGER);
            out.push(*i as u8);
        }
        Term::Int(i) if i32::try_from(*i).is_ok() => {
            out.push(INTEGER);
            out.extend_from_slice(&(*i as i32).to_be_bytes());
        }
        Term::Int(i) => {
            let magnitude = i.unsigned_abs().to_le_bytes();
            let n = magnitude.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            out.push(SMALL_BIG);
            out.push(n as u8);
            out.push(u8::from(*i < 0));
            out.extend_from_slice(&magnitude[..n]);
        }
        Term::Float(f) => {
            out.push(NEW_FLOAT);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Term::Atom(a) => {
            out.push(SMALL_ATOM_UTF8);
            out.push(a.len() as u8);
            out.extend_from_slice(a.as_bytes());
        }
        Term::Binary(b) => {
            out.push(BINARY);
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        Term::BitBinary(b, bits) => {
            out.push(BIT_BINARY);
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.push(*bits);
            out.extend_from_slice(b);
        }
        Term::Tuple(items) => {
            if items.len() < 256 {
                out.push(SMALL_TUPLE);
                out.push(items.len() as u8);
            } else {
                out.push(LARGE_TUPLE);
                out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            }
            items.iter().for_each(|t| encode_inner(t, out));
        }
        Term::List(items) | Term::Improper(items, _) => {
            out.push(LIST);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            items.iter().for_each(|t| encode_inner(t, out));
            match term {
                Term::Improper(_, tail) => encode_inner(tail, out),
                _ => out.push(NIL),
            }
        }
        Term::Bytes(b) => {
            out.push(STRING);
            out.extend_from_slice(&(b.len() as u16).to_be_bytes());
            out.extend_from_slice(b);
        }
        Term::Nil => out.push(NIL),
        Term::Map(pairs) => {
            out.push(MAP);
            out.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
            for (k, v) in pairs {
                encode_inner(k, out);
                encode_inner(v, out);
            }
        }
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
