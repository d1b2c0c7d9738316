//! AMQP 0-9-1 field tables and arrays, decoded without loss: entries keep
//! their order (and duplicates), every type tag RabbitMQ accepts keeps its
//! tag, so that encoding a decoded table gives back the same bytes.
//!
//! amq-protocol's `FieldTable` is a `BTreeMap` of UTF-8 keys and folds `L`
//! into `l` and `U` into `s`: fine for publishing, not for a faithful copy.

use super::codec::{Reader, WireError};

/// One field value with its exact wire type.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `t` with 0 or 1.
    Bool(bool),
    /// `t` with another byte (true to RabbitMQ; kept to round-trip).
    BoolByte(u8),
    /// `b`: signed 8-bit.
    I8(i8),
    /// `B`: unsigned 8-bit.
    U8(u8),
    /// `s`: signed 16-bit (RabbitMQ's tag).
    I16(i16),
    /// `U`: signed 16-bit (the specification's tag, kept apart to round-trip).
    I16Spec(i16),
    /// `u`: unsigned 16-bit.
    U16(u16),
    /// `I`: signed 32-bit.
    I32(i32),
    /// `i`: unsigned 32-bit.
    U32(u32),
    /// `l`: signed 64-bit.
    I64(i64),
    /// `L`: 64-bit that RabbitMQ reads as signed (kept apart to round-trip).
    I64Spec(i64),
    /// `f`
    F32(f32),
    /// `d`
    F64(f64),
    /// `D`: `value / 10^scale`.
    Decimal {
        /// Decimal places.
        scale: u8,
        /// Unscaled value.
        value: u32,
    },
    /// `S`: long string (bytes; usually UTF-8).
    LongStr(Vec<u8>),
    /// `x`: byte array.
    Bytes(Vec<u8>),
    /// `T`: seconds since the epoch.
    Timestamp(u64),
    /// `A`
    Array(Vec<FieldValue>),
    /// `F`
    Table(Table),
    /// `V`
    Void,
}

/// A field table: ordered `(name, value)` entries, names as bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table(pub Vec<(Vec<u8>, FieldValue)>);

impl Table {
    /// The first value named `name`.
    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.0
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v)
    }
}

/// Nesting accepted in tables and arrays (RabbitMQ's x-death is three deep).
const MAX_DEPTH: usize = 32;

impl FieldValue {
    /// The wire type tag.
    pub fn tag(&self) -> u8 {
        match self {
            FieldValue::Bool(_) | FieldValue::BoolByte(_) => b't',
            FieldValue::I8(_) => b'b',
            FieldValue::U8(_) => b'B',
            FieldValue::I16(_) => b's',
            FieldValue::I16Spec(_) => b'U',
            FieldValue::U16(_) => b'u',
            FieldValue::I32(_) => b'I',
            FieldValue::U32(_) => b'i',
            FieldValue::I64(_) => b'l',
            FieldValue::I64Spec(_) => b'L',
            FieldValue::F32(_) => b'f',
            FieldValue::F64(_) => b'd',
            FieldValue::Decimal { .. } => b'D',
            FieldValue::LongStr(_) => b'S',
            FieldValue::Bytes(_) => b'x',
            FieldValue::Timestamp(_) => b'T',
            FieldValue::Array(_) => b'A',
            FieldValue::Table(_) => b'F',
            FieldValue::Void => b'V',
        }
    }

    /// The type's name as used in the JSON output (README).
    pub fn type_name(&self) -> &'static str {
        match self {
            FieldValue::Bool(_) | FieldValue::BoolByte(_) => "bool",
            FieldValue::I8(_) => "byte",
            FieldValue::U8(_) => "unsignedbyte",
            FieldValue::I16(_) => "short",
            FieldValue::I16Spec(_) => "short-spec",
            FieldValue::U16(_) => "unsignedshort",
            FieldValue::I32(_) => "signedint",
            FieldValue::U32(_) => "unsignedint",
            FieldValue::I64(_) => "long",
            FieldValue::I64Spec(_) => "long-spec",
            FieldValue::F32(_) => "float",
            FieldValue::F64(_) => "double",
            FieldValue::Decimal { .. } => "decimal",
            FieldValue::LongStr(_) => "longstr",
            FieldValue::Bytes(_) => "binary",
            FieldValue::Timestamp(_) => "timestamp",
            FieldValue::Array(_) => "array",
            FieldValue::Table(_) => "table",
            FieldValue::Void => "void",
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), String> {
        out.push(self.tag());
        match self {
            FieldValue::Bool(b) => out.push(u8::from(*b)),
            FieldValue::BoolByte(b) => out.push(*b),
            FieldValue::I8(v) => out.push(*v as u8),
            FieldValue::U8(v) => out.push(*v),
            FieldValue::I16(v) | FieldValue::I16Spec(v) => out.extend_from_slice(&v.to_be_bytes()),
            FieldValue::U16(v) => out.extend_from_slice(&v.to_be_bytes()),
            FieldValue::I32(v) => out.extend_from_slice(&v.to_be_bytes()),
            FieldValue::U32(v) => out.extend_from_slice(&v.to_be_bytes()),
            FieldValue::I64(v) | FieldValue::I64Spec(v) => out.extend_from_slice(&v.to_be_bytes()),
            FieldValue::F32(v) => out.extend_from_slice(&v.to_bits().to_be_bytes()),
            FieldValue::F64(v) => out.extend_from_slice(&v.to_bits().to_be_bytes()),
            FieldValue::Decimal { scale, value } => {
                out.push(*scale);
                out.extend_from_slice(&value.to_be_bytes());
            }
            FieldValue::LongStr(b) | FieldValue::Bytes(b) => {
                let len = u32::try_from(b.len()).map_err(|_| "a string over 4 GiB".to_string())?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(b);
            }
            FieldValue::Timestamp(v) => out.extend_from_slice(&v.to_be_bytes()),
            FieldValue::Array(items) => {
                with_length(out, |out| items.iter().try_for_each(|v| v.encode_into(out)))?
            }
            FieldValue::Table(t) => t.encode_into(out)?,
            FieldValue::Void => {}
        }
        Ok(())
    }
}

impl Table {
    /// Appends the wire form: a 32-bit length, then the entries.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), String> {
        with_length(out, |out| {
            for (name, value) in &self.0 {
                let len = u8::try_from(name.len())
                    .map_err(|_| format!("a field name of {} bytes, more than 255", name.len()))?;
                out.push(len);
                out.extend_from_slice(name);
                value.encode_into(out)?;
            }
            Ok(())
        })
    }

    /// Reads a table (length-prefixed) from `r`.
    pub fn decode(r: &mut Reader<'_>) -> Result<Table, WireError> {
        decode_table(r, 0)
    }
}

/// Writes a 32-bit length placeholder, the body, then patches the length.
fn with_length(
    out: &mut Vec<u8>,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
) -> Result<(), String> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out)?;
    let len = u32::try_from(out.len() - at - 4).map_err(|_| "a table over 4 GiB".to_string())?;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn decode_table(r: &mut Reader<'_>, depth: usize) -> Result<Table, WireError> {
    let len = r.u32()? as usize;
    let mut inner = r.sub(len)?;
    let mut entries = Vec::new();
    while !inner.is_empty() {
        let name_len = usize::from(inner.u8()?);
        let name = inner.bytes(name_len)?.to_vec();
        let value = decode_value(&mut inner, depth)?;
        entries.push((name, value));
    }
    Ok(Table(entries))
}

fn decode_array(r: &mut Reader<'_>, depth: usize) -> Result<Vec<FieldValue>, WireError> {
    let len = r.u32()? as usize;
    let mut inner = r.sub(len)?;
    let mut items = Vec::new();
    while !inner.is_empty() {
        items.push(decode_value(&mut inner, depth)?);
    }
    Ok(items)
}

fn decode_value(r: &mut Reader<'_>, depth: usize) -> Result<FieldValue, WireError> {
    let at = r.offset();
    let tag = r.u8()?;
    Ok(match tag {
        b't' => match r.u8()? {
            0 => FieldValue::Bool(false),
            1 => FieldValue::Bool(true),
            other => FieldValue::BoolByte(other),
        },
        b'b' => FieldValue::I8(r.u8()? as i8),
        b'B' => FieldValue::U8(r.u8()?),
        b's' => FieldValue::I16(r.u16()? as i16),
        b'U' => FieldValue::I16Spec(r.u16()? as i16),
        b'u' => FieldValue::U16(r.u16()?),
        b'I' => FieldValue::I32(r.u32()? as i32),
        b'i' => FieldValue::U32(r.u32()?),
        b'l' => FieldValue::I64(r.u64()? as i64),
        b'L' => FieldValue::I64Spec(r.u64()? as i64),
        b'f' => FieldValue::F32(f32::from_bits(r.u32()?)),
        b'd' => FieldValue::F64(f64::from_bits(r.u64()?)),
        b'D' => {
            let scale = r.u8()?;
            FieldValue::Decimal {
                scale,
                value: r.u32()?,
            }
        }
        b'S' | b'x' => {
            let len = r.u32()? as usize;
            let bytes = r.bytes(len)?.to_vec();
            if tag == b'S' {
                FieldValue::LongStr(bytes)
            } else {
                FieldValue::Bytes(bytes)
            }
        }
        b'T' => FieldValue::Timestamp(r.u64()?),
        b'A' | b'F' => {
            if depth >= MAX_DEPTH {
                return Err(r.error_at(at, format!("tables nested deeper than {MAX_DEPTH}")));
            }
            if tag == b'A' {
                FieldValue::Array(decode_array(r, depth + 1)?)
            } else {
                FieldValue::Table(decode_table(r, depth + 1)?)
            }
        }
        b'V' => FieldValue::Void,
        other => {
            return Err(r.error_at(
                at,
                format!("unknown field type {:?} (byte {other})", char::from(other)),
            ));
        }
    })
}
