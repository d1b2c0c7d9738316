//! The JSON form of a message (one line of `messages`; README "Message
//! lines"). Nothing is lost: bytes that are UTF-8 become strings, others
//! `{"base64": "..."}`; every header value carries its AMQP type.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::{FieldValue, Message, Properties, Table};

/// A byte string: a JSON string when it is UTF-8, else `{"base64": ...}`.
pub fn bytes(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

fn float(f: f64) -> Value {
    if f.is_finite() {
        json!(f)
    } else {
        // JSON has no NaN or infinity.
        Value::String(f.to_string())
    }
}

/// A field value: `{"type": ..., "value": ...}`.
pub fn field_value(v: &FieldValue) -> Value {
    let value = match v {
        FieldValue::Bool(b) => json!(b),
        FieldValue::BoolByte(b) => {
            return json!({ "type": v.type_name(), "value": true, "byte": b });
        }
        FieldValue::I8(i) => json!(i),
        FieldValue::U8(i) => json!(i),
        FieldValue::I16(i) | FieldValue::I16Spec(i) => json!(i),
        FieldValue::U16(i) => json!(i),
        FieldValue::I32(i) => json!(i),
        FieldValue::U32(i) => json!(i),
        FieldValue::I64(i) | FieldValue::I64Spec(i) => json!(i),
        FieldValue::F32(f) => float(f64::from(*f)),
        FieldValue::F64(f) => float(*f),
        FieldValue::Decimal { scale, value } => json!({ "scale": scale, "value": value }),
        FieldValue::LongStr(b) | FieldValue::Bytes(b) => bytes(b),
        FieldValue::Timestamp(t) => json!(t),
        FieldValue::Array(items) => Value::Array(items.iter().map(field_value).collect()),
        FieldValue::Table(t) => table(t),
        FieldValue::Void => Value::Null,
    };
    json!({ "type": v.type_name(), "value": value })
}

/// A table: a list of `{"name", "type", "value"}` in stored order.
pub fn table(t: &Table) -> Value {
    Value::Array(
        t.0.iter()
            .map(|(name, v)| {
                let mut entry = match field_value(v) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                entry.insert("name".into(), bytes(name));
                Value::Object(entry)
            })
            .collect(),
    )
}

/// The properties that are present, by their AMQP names.
pub fn properties(p: &Properties) -> Value {
    let mut m = Map::new();
    let mut short = |name: &str, v: &Option<Vec<u8>>| {
        if let Some(v) = v {
            m.insert(name.into(), bytes(v));
        }
    };
    short("content_type", &p.content_type);
    short("content_encoding", &p.content_encoding);
    short("correlation_id", &p.correlation_id);
    short("reply_to", &p.reply_to);
    short("expiration", &p.expiration);
    short("message_id", &p.message_id);
    short("type", &p.kind);
    short("user_id", &p.user_id);
    short("app_id", &p.app_id);
    short("cluster_id", &p.cluster_id);
    if let Some(v) = p.delivery_mode {
        m.insert("delivery_mode".into(), json!(v));
    }
    if let Some(v) = p.priority {
        m.insert("priority".into(), json!(v));
    }
    if let Some(v) = p.timestamp {
        m.insert("timestamp".into(), json!(v));
    }
    if let Some(h) = &p.headers {
        m.insert("headers".into(), table(h));
    }
    if p.reserved_flags != 0 {
        m.insert("reserved_flags".into(), json!(p.reserved_flags));
    }
    Value::Object(m)
}

/// The message's own fields (exchange, routing keys, properties, body
/// size, and the body itself if asked).
pub fn message(m: &Message, with_body: bool, out: &mut Map<String, Value>) {
    out.insert("exchange".into(), json!(m.exchange));
    out.insert("routing_key".into(), json!(m.routing_key()));
    out.insert("routing_keys".into(), json!(m.routing_keys));
    out.insert("properties".into(), properties(&m.properties));
    out.insert("body_size".into(), json!(m.body.len()));
    if with_body {
        out.insert("body".into(), bytes(&m.body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_tagged_and_bytes_fall_back_to_base64() {
        let t = Table(vec![
            (b"s".to_vec(), FieldValue::LongStr(b"hi".to_vec())),
            (b"x".to_vec(), FieldValue::Bytes(vec![0xff, 0])),
            (
                b"d".to_vec(),
                FieldValue::Decimal {
                    scale: 2,
                    value: 314,
                },
            ),
            (b"n".to_vec(), FieldValue::F64(f64::NAN)),
            (b"v".to_vec(), FieldValue::Void),
            (
                b"a".to_vec(),
                FieldValue::Array(vec![FieldValue::I64Spec(-1)]),
            ),
        ]);
        assert_eq!(
            table(&t),
            json!([
                {"name": "s", "type": "longstr", "value": "hi"},
                {"name": "x", "type": "binary", "value": {"base64": "/wA="}},
                {"name": "d", "type": "decimal", "value": {"scale": 2, "value": 314}},
                {"name": "n", "type": "double", "value": "NaN"},
                {"name": "v", "type": "void", "value": null},
                {"name": "a", "type": "array", "value": [{"type": "long-spec", "value": -1}]},
            ])
        );
    }
}
