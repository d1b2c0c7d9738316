//! Terms in Erlang's notation, for messages and errors.

use std::fmt;

use super::Term;

/// Erlang's own notation, near enough for messages: `{error,badarg}`,
/// `<<"text">>`, `"string"`, `#{k => v}`.
impl fmt::Display for Term<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, items: &[Term<'_>]) -> fmt::Result {
            for (i, t) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{t}")?;
            }
            Ok(())
        }
        let printable = |b: &[u8]| b.iter().all(|&c| c == b'\n' || (b' '..=b'~').contains(&c));
        match self {
            Term::Int(i) => write!(f, "{i}"),
            Term::Float(x) => write!(f, "{x:?}"),
            Term::Atom(a) => {
                let bare = a.starts_with(|c: char| c.is_ascii_lowercase())
                    && a.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@');
                if bare {
                    f.write_str(a)
                } else {
                    write!(f, "'{}'", a.escape_default())
                }
            }
            Term::Binary(b) if printable(b) => {
                write!(f, "<<\"{}\">>", String::from_utf8_lossy(b).escape_default())
            }
            Term::Binary(b) | Term::BitBinary(b, _) => {
                let bytes: Vec<String> = b.iter().map(u8::to_string).collect();
                write!(f, "<<{}>>", bytes.join(","))
            }
            Term::Tuple(items) => {
                f.write_str("{")?;
                seq(f, items)?;
                f.write_str("}")
            }
            Term::List(items) => {
                f.write_str("[")?;
                seq(f, items)?;
                f.write_str("]")
            }
            Term::Improper(items, tail) => {
                f.write_str("[")?;
                seq(f, items)?;
                write!(f, "|{tail}]")
            }
            Term::Bytes(b) if printable(b) => {
                write!(f, "\"{}\"", String::from_utf8_lossy(b).escape_default())
            }
            Term::Bytes(b) => {
                let bytes: Vec<String> = b.iter().map(u8::to_string).collect();
                write!(f, "[{}]", bytes.join(","))
            }
            Term::Nil => f.write_str("[]"),
            Term::Map(pairs) => {
                f.write_str("#{")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{k} => {v}")?;
                }
                f.write_str("}")
            }
            Term::Pid(p) => write!(f, "<{}.{}.{}>", p.node, p.id, p.serial),
            Term::Ref(r) => {
                let words: Vec<String> = r.id.iter().rev().map(u32::to_string).collect();
                write!(f, "#Ref<{}.{}>", r.node, words.join("."))
            }
            Term::Other(raw) => write!(f, "#Term<type {}>", raw.first().copied().unwrap_or(0)),
        }
    }
}
