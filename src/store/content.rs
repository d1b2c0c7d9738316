//! A stored message term to a [`Message`]: `#basic_message{}` (3.8–3.12,
//! and 3.13 before its `message_containers` feature flag) or a message
//! container `#mc{}` (3.13+) of protocol `mc_amqpl` (AMQP 0-9-1).
//!
//! `#basic_message{exchange_name = #resource{name = X}, routing_keys,
//! content, id, is_persistent}`; `#mc{protocol, data, annotations}` with
//! the exchange in annotation `x` and the routing keys in `rk`. Either way
//! the content is `#content{class_id = 60, properties, properties_bin,
//! protocol, payload_fragments_rev}`: the properties as the client sent
//! them (`properties_bin`) or, when the broker rewrote them, only decoded
//! (`#'P_basic'{}`); the body as a reversed list of fragments.
//!
//! Messages of other protocols (`mc_amqp`: AMQP 1.0, `mc_stomp`, MQTT…) are
//! refused by name: turning them into AMQP 0-9-1 is the broker's
//! conversion, which this reader does not reproduce.

use bytes::{Bytes, BytesMut};

use crate::etf::{self as term, Term};
use crate::message::{FieldValue, Message, Properties, Table};

/// What a stored message term holds besides the message.
#[derive(Debug, Default)]
pub struct Extra {
    /// Things about the message the [`Message`] does not carry.
    pub notes: Vec<String>,
}

/// Decodes a message term (`term_to_binary` output, trailing bytes
/// allowed); a body in one fragment is shared with `bytes`, not copied.
pub fn decode(bytes: &Bytes) -> Result<(Message, Extra), String> {
    let (t, _) = term::decode(bytes).map_err(|e| e.to_string())?;
    if let Some(f) = t.record("basic_message") {
        return basic_message(f, bytes);
    }
    if let Some(f) = t.record("mc") {
        return container(f, bytes);
    }
    Err("neither a #basic_message{} nor an #mc{} term".into())
}

fn text(t: &Term<'_>, what: &str) -> Result<String, String> {
    let b = bytes_of(t).ok_or_else(|| format!("{what} is not a binary"))?;
    String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

/// A binary, or a list of bytes (an Erlang string).
fn bytes_of<'a>(t: &Term<'a>) -> Option<std::borrow::Cow<'a, [u8]>> {
    match t {
        Term::Binary(b) | Term::Bytes(b) => Some(std::borrow::Cow::Borrowed(b)),
        Term::Nil => Some(std::borrow::Cow::Borrowed(&[])),
        Term::List(items) => items
            .iter()
            .map(|i| i.int().and_then(|v| u8::try_from(v).ok()))
            .collect::<Option<Vec<u8>>>()
            .map(std::borrow::Cow::Owned),
        _ => None,
    }
}

fn routing_keys(t: &Term<'_>) -> Result<Vec<String>, String> {
    let list = t.list().ok_or("the routing keys are not a list")?;
    list.iter().map(|k| text(k, "a routing key")).collect()
}

fn basic_message(f: &[Term<'_>], buf: &Bytes) -> Result<(Message, Extra), String> {
    let [exchange, keys, content, ..] = f else {
        return Err("a #basic_message{} with too few fields".into());
    };
    let resource = exchange
        .record("resource")
        .ok_or("the exchange is not a #resource{}")?;
    let [_vhost, _kind, name, ..] = resource else {
        return Err("a #resource{} with too few fields".into());
    };
    let (properties, body) = self::content(content, buf)?;
    Ok((
        Message {
            exchange: text(name, "the exchange name")?,
            routing_keys: routing_keys(keys)?,
            properties,
            body,
        },
        Extra::default(),
    ))
}

fn container(f: &[Term<'_>], buf: &Bytes) -> Result<(Message, Extra), String> {
    let [protocol, data, annotations, ..] = f else {
        return Err("an #mc{} with too few fields".into());
    };
    match protocol.atom() {
        Some("mc_amqpl") => {}
        Some(other) => {
            return Err(format!(
                "the message was published with protocol {other} (not AMQP 0-9-1); converting it is not supported"
            ));
        }
        None => return Err("the #mc{} protocol is not an atom".into()),
    }
    let Term::Map(anns) = annotations else {
        return Err("the #mc{} annotations are not a map".into());
    };
    let ann = |key: &str| {
        anns.iter()
            .find(|(k, _)| k.atom() == Some(key))
            .map(|(_, v)| v)
    };
    let exchange = match ann("x") {
        Some(x) => text(x, "the exchange annotation")?,
        None => return Err("no exchange annotation (x)".into()),
    };
    let keys = match ann("rk") {
        Some(rk) => routing_keys(rk)?,
        None => return Err("no routing keys annotation (rk)".into()),
    };
    let (properties, body) = self::content(data, buf)?;
    let mut extra = Extra::default();
    // The broker turns these into headers only as it delivers (mc_amqpl:protocol_state/2).
    if anns
        .iter()
        .any(|(k, _)| matches!(k, Term::Binary(b) if b.starts_with(b"x-")))
    {
        extra
            .notes
            .push("carries x- annotations, which RabbitMQ adds to the headers at delivery".into());
    }
    if ann("deaths").is_some() {
        extra.notes.push(
            "dead-lettered: its x-death history is kept in annotations, which RabbitMQ turns into headers at delivery".into(),
        );
    }
    Ok((
        Message {
            exchange,
            routing_keys: keys,
            properties,
            body,
        },
        extra,
    ))
}

fn content(t: &Term<'_>, buf: &Bytes) -> Result<(Properties, Bytes), String> {
    let f = t
        .record("content")
        .ok_or("the content is not a #content{}")?;
    let [class_id, decoded, encoded, _protocol, fragments, ..] = f else {
        return Err("a #content{} with too few fields".into());
    };
    if class_id.int() != Some(60) {
        return Err(format!("content class {class_id:?} is not basic (60)"));
    }
    let properties = match (encoded, decoded) {
        (Term::Binary(bin), _) => {
            Properties::decode(bin, 0).map_err(|e| format!("properties_bin {e}"))?
        }
        (_, decoded) if decoded.record("P_basic").is_some() => p_basic(decoded)?,
        _ => return Err("the content has neither encoded nor decoded properties".into()),
    };
    let fragments = fragments
        .list()
        .ok_or("the payload fragments are not a list")?;
    let parts: Vec<&[u8]> = fragments
        .iter()
        .rev()
        .map(|f| f.binary().ok_or("a payload fragment is not a binary"))
        .collect::<Result<_, _>>()?;
    let body = match parts[..] {
        [] => Bytes::new(),
        // The common case: the body is a slice of what was read.
        [one] => buf.slice_ref(one),
        _ => {
            let mut body = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum());
            parts.iter().for_each(|p| body.extend_from_slice(p));
            body.freeze()
        }
    };
    Ok((properties, body))
}

/// Properties the broker holds decoded only (after it rewrote them).
fn p_basic(t: &Term<'_>) -> Result<Properties, String> {
    let f = t.record("P_basic").expect("checked");
    if f.len() != 14 {
        return Err(format!("a #'P_basic'{{}} with {} fields, not 14", f.len()));
    }
    let short = |i: usize, name: &str| -> Result<Option<Vec<u8>>, String> {
        match &f[i] {
            Term::Atom("undefined") => Ok(None),
            v => Ok(Some(
                bytes_of(v)
                    .ok_or(format!("{name} is not a string"))?
                    .into_owned(),
            )),
        }
    };
    let int = |i: usize, name: &str| -> Result<Option<i128>, String> {
        match &f[i] {
            Term::Atom("undefined") => Ok(None),
            v => v.int().map(Some).ok_or(format!("{name} is not an integer")),
        }
    };
    let octet = |i: usize, name: &str| -> Result<Option<u8>, String> {
        int(i, name)?
            .map(|v| u8::try_from(v).map_err(|_| format!("{name} {v} does not fit a byte")))
            .transpose()
    };
    Ok(Properties {
        content_type: short(0, "content_type")?,
        content_encoding: short(1, "content_encoding")?,
        headers: match &f[2] {
            Term::Atom("undefined") => None,
            h => Some(erlang_table(h, 0)?),
        },
        delivery_mode: octet(3, "delivery_mode")?,
        priority: octet(4, "priority")?,
        correlation_id: short(5, "correlation_id")?,
        reply_to: short(6, "reply_to")?,
        expiration: short(7, "expiration")?,
        message_id: short(8, "message_id")?,
        timestamp: int(9, "timestamp")?
            .map(|v| u64::try_from(v).map_err(|_| format!("timestamp {v} is out of range")))
            .transpose()?,
        kind: short(10, "type")?,
        user_id: short(11, "user_id")?,
        app_id: short(12, "app_id")?,
        cluster_id: short(13, "cluster_id")?,
        reserved_flags: 0,
    })
}

fn erlang_table(t: &Term<'_>, depth: usize) -> Result<Table, String> {
    let entries = t.list().ok_or("a header table is not a list")?;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Some([name, kind, value]) = e.tuple() else {
            return Err("a header is not a {Name, Type, Value} tuple".into());
        };
        let name = bytes_of(name)
            .ok_or("a header name is not a binary")?
            .into_owned();
        out.push((name, erlang_value(kind, value, depth)?));
    }
    Ok(Table(out))
}

/// One `{Type, Value}` of RabbitMQ's decoded tables (rabbit_binary_generator).
fn erlang_value(kind: &Term<'_>, v: &Term<'_>, depth: usize) -> Result<FieldValue, String> {
    if depth > 32 {
        return Err("header tables nested too deep".into());
    }
    let kind = kind.atom().ok_or("a header type is not an atom")?;
    let int = || v.int().ok_or(format!("a {kind} header is not an integer"));
    Ok(match kind {
        "longstr" => FieldValue::LongStr(
            bytes_of(v)
                .ok_or("a longstr header is not a binary")?
                .into_owned(),
        ),
        "binary" => FieldValue::Bytes(
            bytes_of(v)
                .ok_or("a binary header is not a binary")?
                .into_owned(),
        ),
        "signedint" => FieldValue::I32(fit::<i32>(int()?, kind)?),
        "unsignedint" => FieldValue::U32(fit::<u32>(int()?, kind)?),
        "long" => FieldValue::I64(fit::<i64>(int()?, kind)?),
        "short" => FieldValue::I16(fit::<i16>(int()?, kind)?),
        "unsignedshort" => FieldValue::U16(fit::<u16>(int()?, kind)?),
        "byte" => FieldValue::I8(fit::<i8>(int()?, kind)?),
        "unsignedbyte" => FieldValue::U8(fit::<u8>(int()?, kind)?),
        "timestamp" => FieldValue::Timestamp(fit::<u64>(int()?, kind)?),
        "bool" => FieldValue::Bool(v.boolean().ok_or("a bool header is not a boolean")?),
        "double" | "float" => {
            let Term::Float(f) = v else {
                return Err(format!("a {kind} header is not a float"));
            };
            if kind == "double" {
                FieldValue::F64(*f)
            } else {
                FieldValue::F32(*f as f32)
            }
        }
        "decimal" => match v.tuple() {
            Some([scale, value]) => FieldValue::Decimal {
                scale: fit::<u8>(
                    scale.int().ok_or("a decimal scale is not an integer")?,
                    kind,
                )?,
                value: fit::<u32>(
                    value.int().ok_or("a decimal value is not an integer")?,
                    kind,
                )?,
            },
            _ => return Err("a decimal header is not {Scale, Value}".into()),
        },
        "table" => FieldValue::Table(erlang_table(v, depth + 1)?),
        "array" => {
            let items = v.list().ok_or("an array header is not a list")?;
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let Some([k, x]) = item.tuple() else {
                    return Err("an array element is not {Type, Value}".into());
                };
                out.push(erlang_value(k, x, depth + 1)?);
            }
            FieldValue::Array(out)
        }
        "void" => FieldValue::Void,
        other => return Err(format!("header type {other} is unknown")),
    })
}

fn fit<T: TryFrom<i128>>(v: i128, kind: &str) -> Result<T, String> {
    T::try_from(v).map_err(|_| format!("a {kind} header value {v} is out of range"))
}
