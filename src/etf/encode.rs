//! Writing terms: the inverse of the decoder, for every form it reads.

use super::{
    ATOM_UTF8, BINARY, BIT_BINARY, INTEGER, LARGE_TUPLE, LIST, MAP, NEW_FLOAT, NEW_PID,
    NEWER_REFERENCE, NIL, SMALL_ATOM_UTF8, SMALL_BIG, SMALL_INTEGER, SMALL_TUPLE, STRING, Term,
    VERSION,
};

/// Encodes a term, version byte first; [`super::decode`] reads back what it writes.
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
        Term::Atom(a) => encode_atom(a, out),
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
        // `[]` is NIL_EXT: a LIST_EXT of no elements is not how Erlang writes it.
        Term::List(items) if items.is_empty() => out.push(NIL),
        Term::List(items) | Term::Improper(items, _) => {
            out.push(LIST);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            items.iter().for_each(|t| encode_inner(t, out));
            match term {
                Term::Improper(_, tail) => encode_inner(tail, out),
                _ => out.push(NIL),
            }
        }
        Term::Bytes(b) => match u16::try_from(b.len()) {
            Ok(n) => {
                out.push(STRING);
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(b);
            }
            // Longer than STRING_EXT holds: the same list, element by element.
            Err(_) => {
                out.push(LIST);
                out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                for &c in b.iter() {
                    out.extend_from_slice(&[SMALL_INTEGER, c]);
                }
                out.push(NIL);
            }
        },
        Term::Nil => out.push(NIL),
        Term::Map(pairs) => {
            out.push(MAP);
            out.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
            for (k, v) in pairs {
                encode_inner(k, out);
                encode_inner(v, out);
            }
        }
        Term::Pid(p) => {
            out.push(NEW_PID);
            encode_atom(p.node, out);
            for word in [p.id, p.serial, p.creation] {
                out.extend_from_slice(&word.to_be_bytes());
            }
        }
        Term::Ref(r) => {
            out.push(NEWER_REFERENCE);
            out.extend_from_slice(&(r.id.len() as u16).to_be_bytes());
            encode_atom(r.node, out);
            out.extend_from_slice(&r.creation.to_be_bytes());
            for word in &r.id {
                out.extend_from_slice(&word.to_be_bytes());
            }
        }
        Term::Other(raw) => out.extend_from_slice(raw),
    }
}

fn encode_atom(a: &str, out: &mut Vec<u8>) {
    match u8::try_from(a.len()) {
        Ok(n) => {
            out.push(SMALL_ATOM_UTF8);
            out.push(n);
        }
        Err(_) => {
            out.push(ATOM_UTF8);
            out.extend_from_slice(&(a.len() as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(a.as_bytes());
}
