//! AMQP 0-9-1 basic content properties (`properties_bin` in RabbitMQ's
//! `#content{}`), decoded without loss: `encode(decode(b)) == b` for every
//! `b` RabbitMQ accepts (its flags word, the fields it announces, nothing
//! after them).

use lapin::BasicProperties;
use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};

use super::codec::{Reader, WireError};
use super::table::{FieldValue, Table};

/// The fourteen basic properties, in wire order. Short strings are bytes:
/// RabbitMQ does not check that they are UTF-8.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    /// `content_type`
    pub content_type: Option<Vec<u8>>,
    /// `content_encoding`
    pub content_encoding: Option<Vec<u8>>,
    /// `headers`
    pub headers: Option<Table>,
    /// `delivery_mode` (2 = persistent)
    pub delivery_mode: Option<u8>,
    /// `priority`
    pub priority: Option<u8>,
    /// `correlation_id`
    pub correlation_id: Option<Vec<u8>>,
    /// `reply_to`
    pub reply_to: Option<Vec<u8>>,
    /// `expiration` (milliseconds, as text)
    pub expiration: Option<Vec<u8>>,
    /// `message_id`
    pub message_id: Option<Vec<u8>>,
    /// `timestamp` (seconds since the epoch)
    pub timestamp: Option<u64>,
    /// `type`
    pub kind: Option<Vec<u8>>,
    /// `user_id`
    pub user_id: Option<Vec<u8>>,
    /// `app_id`
    pub app_id: Option<Vec<u8>>,
    /// `cluster_id` (deprecated)
    pub cluster_id: Option<Vec<u8>>,
    /// The two low bits of the flags word, which RabbitMQ ignores; kept so
    /// that the encoding round-trips.
    pub reserved_flags: u8,
}

/// Flag bit of each property, from the most significant bit down.
const CONTENT_TYPE: u16 = 1 << 15;
const CONTENT_ENCODING: u16 = 1 << 14;
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const CORRELATION_ID: u16 = 1 << 10;
const REPLY_TO: u16 = 1 << 9;
const EXPIRATION: u16 = 1 << 8;
const MESSAGE_ID: u16 = 1 << 7;
const TIMESTAMP: u16 = 1 << 6;
const TYPE: u16 = 1 << 5;
const USER_ID: u16 = 1 << 4;
const APP_ID: u16 = 1 << 3;
const CLUSTER_ID: u16 = 1 << 2;

impl Properties {
    /// Decodes `properties_bin`. `base` is its offset in the enclosing
    /// input, for error messages.
    pub fn decode(bytes: &[u8], base: u64) -> Result<Properties, WireError> {
        let mut r = Reader::new(bytes, base);
        let flags = r.u16()?;
        let short = |r: &mut Reader<'_>, bit: u16| -> Result<Option<Vec<u8>>, WireError> {
            Ok(if flags & bit != 0 {
                Some(r.short_str()?.to_vec())
            } else {
                None
            })
        };
        let octet = |r: &mut Reader<'_>, bit: u16| -> Result<Option<u8>, WireError> {
            Ok(if flags & bit != 0 {
                Some(r.u8()?)
            } else {
                None
            })
        };
        let content_type = short(&mut r, CONTENT_TYPE)?;
        let content_encoding = short(&mut r, CONTENT_ENCODING)?;
        let headers = if flags & HEADERS != 0 {
            Some(Table::decode(&mut r)?)
        } else {
            None
        };
        let delivery_mode = octet(&mut r, DELIVERY_MODE)?;
        let priority = octet(&mut r, PRIORITY)?;
        let correlation_id = short(&mut r, CORRELATION_ID)?;
        let reply_to = short(&mut r, REPLY_TO)?;
        let expiration = short(&mut r, EXPIRATION)?;
        let message_id = short(&mut r, MESSAGE_ID)?;
        let timestamp = if flags & TIMESTAMP != 0 {
            Some(r.u64()?)
        } else {
            None
        };
        let props = Properties {
            content_type,
            content_encoding,
            headers,
            delivery_mode,
            priority,
            correlation_id,
            reply_to,
            expiration,
            message_id,
            timestamp,
            kind: short(&mut r, TYPE)?,
            user_id: short(&mut r, USER_ID)?,
            app_id: short(&mut r, APP_ID)?,
            cluster_id: short(&mut r, CLUSTER_ID)?,
            reserved_flags: (flags & 0b11) as u8,
        };
        if !r.is_empty() {
            return Err(r.error_at(
                r.offset(),
                format!("{} bytes follow the last property", r.remaining()),
            ));
        }
        Ok(props)
    }

    /// Encodes as `properties_bin`; fails only for values that no AMQP
    /// 0-9-1 peer could have sent (a short string over 255 bytes).
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        enum Field<'a> {
            Short(&'static str, &'a Option<Vec<u8>>),
            Octet(Option<u8>),
            Table(&'a Option<Table>),
            Long(Option<u64>),
        }
        let fields = [
            (
                CONTENT_TYPE,
                Field::Short("content_type", &self.content_type),
            ),
            (
                CONTENT_ENCODING,
                Field::Short("content_encoding", &self.content_encoding),
            ),
            (HEADERS, Field::Table(&self.headers)),
            (DELIVERY_MODE, Field::Octet(self.delivery_mode)),
            (PRIORITY, Field::Octet(self.priority)),
            (
                CORRELATION_ID,
                Field::Short("correlation_id", &self.correlation_id),
            ),
            (REPLY_TO, Field::Short("reply_to", &self.reply_to)),
            (EXPIRATION, Field::Short("expiration", &self.expiration)),
            (MESSAGE_ID, Field::Short("message_id", &self.message_id)),
            (TIMESTAMP, Field::Long(self.timestamp)),
            (TYPE, Field::Short("type", &self.kind)),
            (USER_ID, Field::Short("user_id", &self.user_id)),
            (APP_ID, Field::Short("app_id", &self.app_id)),
            (CLUSTER_ID, Field::Short("cluster_id", &self.cluster_id)),
        ];
        let mut out = vec![0, 0];
        let mut flags = u16::from(self.reserved_flags & 0b11);
        for (bit, field) in fields {
            let present = match field {
                Field::Short(name, Some(v)) => {
                    let len = u8::try_from(v.len())
                        .map_err(|_| format!("{name} is {} bytes, more than 255", v.len()))?;
                    out.push(len);
                    out.extend_from_slice(v);
                    true
                }
                Field::Octet(Some(v)) => {
                    out.push(v);
                    true
                }
                Field::Table(Some(t)) => {
                    t.encode_into(&mut out)?;
                    true
                }
                Field::Long(Some(v)) => {
                    out.extend_from_slice(&v.to_be_bytes());
                    true
                }
                _ => false,
            };
            if present {
                flags |= bit;
            }
        }
        out[..2].copy_from_slice(&flags.to_be_bytes());
        Ok(out)
    }

    /// True if the message asks to be persistent (`delivery_mode` 2).
    pub fn is_persistent(&self) -> bool {
        self.delivery_mode == Some(2)
    }

    /// The properties as lapin publishes them, and what that loses: an
    /// empty list means lapin's encoding is byte-for-byte this one.
    /// lapin keeps header tables as sorted maps of UTF-8 names, folds the
    /// `L`/`U` tags into `l`/`s` and needs UTF-8 short strings.
    pub fn to_lapin(&self) -> (BasicProperties, Vec<String>) {
        let mut lost = Vec::new();
        let mut text = |name: &str, v: &Option<Vec<u8>>| -> Option<ShortString> {
            let v = v.as_ref()?;
            Some(ShortString::from(match String::from_utf8(v.clone()) {
                Ok(s) => s,
                Err(_) => {
                    lost.push(format!("{name} is not UTF-8"));
                    String::from_utf8_lossy(v).into_owned()
                }
            }))
        };
        let mut p = BasicProperties::default();
        if let Some(v) = text("content_type", &self.content_type) {
            p = p.with_content_type(v);
        }
        if let Some(v) = text("content_encoding", &self.content_encoding) {
            p = p.with_content_encoding(v);
        }
        if let Some(v) = text("correlation_id", &self.correlation_id) {
            p = p.with_correlation_id(v);
        }
        if let Some(v) = text("reply_to", &self.reply_to) {
            p = p.with_reply_to(v);
        }
        if let Some(v) = text("expiration", &self.expiration) {
            p = p.with_expiration(v);
        }
        if let Some(v) = text("message_id", &self.message_id) {
            p = p.with_message_id(v);
        }
        if let Some(v) = text("type", &self.kind) {
            p = p.with_type(v);
        }
        if let Some(v) = text("user_id", &self.user_id) {
            p = p.with_user_id(v);
        }
        if let Some(v) = text("app_id", &self.app_id) {
            p = p.with_app_id(v);
        }
        if let Some(v) = text("cluster_id", &self.cluster_id) {
            p = p.with_cluster_id(v);
        }
        if let Some(v) = self.delivery_mode {
            p = p.with_delivery_mode(v);
        }
        if let Some(v) = self.priority {
            p = p.with_priority(v);
        }
        if let Some(v) = self.timestamp {
            p = p.with_timestamp(v);
        }
        if let Some(h) = &self.headers {
            p = p.with_headers(lapin_table(h, "headers", &mut lost));
        }
        if self.reserved_flags != 0 {
            lost.push("the reserved flag bits are set".into());
        }
        (p, lost)
    }
}

fn lapin_table(t: &Table, path: &str, lost: &mut Vec<String>) -> FieldTable {
    let mut out = FieldTable::default();
    let mut previous: Option<&[u8]> = None;
    for (name, value) in &t.0 {
        let key = String::from_utf8_lossy(name).into_owned();
        let here = format!("{path}.{key}");
        if std::str::from_utf8(name).is_err() {
            lost.push(format!("{here}: the name is not UTF-8"));
        }
        match previous {
            Some(p) if p == name.as_slice() => lost.push(format!("{here} appears twice")),
            Some(p) if p > name.as_slice() => {
                lost.push(format!("{here}: lapin sorts header names"))
            }
            _ => {}
        }
        previous = Some(name);
        out.insert(ShortString::from(key), lapin_value(value, &here, lost));
    }
    out
}

fn lapin_value(v: &FieldValue, path: &str, lost: &mut Vec<String>) -> AMQPValue {
    match v {
        FieldValue::Bool(b) => AMQPValue::Boolean(*b),
        FieldValue::BoolByte(_) => {
            lost.push(format!("{path}: a boolean byte other than 0 or 1"));
            AMQPValue::Boolean(true)
        }
        FieldValue::I8(i) => AMQPValue::ShortShortInt(*i),
        FieldValue::U8(i) => AMQPValue::ShortShortUInt(*i),
        FieldValue::I16(i) => AMQPValue::ShortInt(*i),
        FieldValue::I16Spec(i) => {
            lost.push(format!("{path}: type U becomes s"));
            AMQPValue::ShortInt(*i)
        }
        FieldValue::U16(i) => AMQPValue::ShortUInt(*i),
        FieldValue::I32(i) => AMQPValue::LongInt(*i),
        FieldValue::U32(i) => AMQPValue::LongUInt(*i),
        FieldValue::I64(i) => AMQPValue::LongLongInt(*i),
        FieldValue::I64Spec(i) => {
            lost.push(format!("{path}: type L becomes l"));
            AMQPValue::LongLongInt(*i)
        }
        FieldValue::F32(f) => AMQPValue::Float(*f),
        FieldValue::F64(f) => AMQPValue::Double(*f),
        FieldValue::Decimal { scale, value } => AMQPValue::DecimalValue(DecimalValue {
            scale: *scale,
            value: *value,
        }),
        FieldValue::LongStr(b) => AMQPValue::LongString(LongString::from(b.clone())),
        FieldValue::Bytes(b) => AMQPValue::ByteArray(ByteArray::from(b.clone())),
        FieldValue::Timestamp(t) => AMQPValue::Timestamp(*t),
        FieldValue::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| lapin_value(v, &format!("{path}[{i}]"), lost))
                .collect::<Vec<_>>(),
        )),
        FieldValue::Table(t) => AMQPValue::FieldTable(lapin_table(t, path, lost)),
        FieldValue::Void => AMQPValue::Void,
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_value() -> impl Strategy<Value = FieldValue> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..12);
        let leaf = prop_oneof![
            any::<bool>().prop_map(FieldValue::Bool),
            (2u8..).prop_map(FieldValue::BoolByte),
            any::<i8>().prop_map(FieldValue::I8),
            any::<u8>().prop_map(FieldValue::U8),
            any::<i16>().prop_map(FieldValue::I16),
            any::<i16>().prop_map(FieldValue::I16Spec),
            any::<u16>().prop_map(FieldValue::U16),
            any::<i32>().prop_map(FieldValue::I32),
            any::<u32>().prop_map(FieldValue::U32),
            any::<i64>().prop_map(FieldValue::I64),
            any::<i64>().prop_map(FieldValue::I64Spec),
            any::<f32>().prop_map(FieldValue::F32),
            any::<f64>().prop_map(FieldValue::F64),
            (any::<u8>(), any::<u32>())
                .prop_map(|(scale, value)| FieldValue::Decimal { scale, value }),
            bytes().prop_map(FieldValue::LongStr),
            bytes().prop_map(FieldValue::Bytes),
            any::<u64>().prop_map(FieldValue::Timestamp),
            Just(FieldValue::Void),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(FieldValue::Array),
                proptest::collection::vec(
                    (proptest::collection::vec(any::<u8>(), 0..8), inner),
                    0..5
                )
                .prop_map(|e| FieldValue::Table(Table(e))),
            ]
        })
    }

    /// Any properties an AMQP 0-9-1 peer can send.
    pub fn arb_properties() -> impl Strategy<Value = Properties> {
        let short = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20));
        let headers = proptest::option::of(
            proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..10), arb_value()),
                0..6,
            )
            .prop_map(Table),
        );
        (
            (
                short(),
                short(),
                headers,
                any::<Option<u8>>(),
                any::<Option<u8>>(),
                short(),
                short(),
            ),
            (
                short(),
                short(),
                any::<Option<u64>>(),
                short(),
                short(),
                short(),
                short(),
                0u8..4,
            ),
        )
            .prop_map(
                |((ct, ce, h, dm, p, cid, rt), (exp, mid, ts, ty, uid, aid, clid, res))| {
                    Properties {
                        content_type: ct,
                        content_encoding: ce,
                        headers: h,
                        delivery_mode: dm,
                        priority: p,
                        correlation_id: cid,
                        reply_to: rt,
                        expiration: exp,
                        message_id: mid,
                        timestamp: ts,
                        kind: ty,
                        user_id: uid,
                        app_id: aid,
                        cluster_id: clid,
                        reserved_flags: res,
                    }
                },
            )
    }

    #[test]
    fn decodes_what_a_client_sends() {
        // content_type "text/plain", headers {"a": long 7, "b": array [longstr "x"]},
        // delivery_mode 2, priority 4, timestamp 1700000000.
        let mut bin = vec![0b1011_1000, 0b0100_0000, 10];
        bin.extend_from_slice(b"text/plain");
        let table: &[u8] = &[
            1, b'a', b'l', 0, 0, 0, 0, 0, 0, 0, 7, 1, b'b', b'A', 0, 0, 0, 6, b'S', 0, 0, 0, 1,
            b'x',
        ];
        bin.extend_from_slice(&(table.len() as u32).to_be_bytes());
        bin.extend_from_slice(table);
        bin.extend_from_slice(&[2, 4]);
        bin.extend_from_slice(&1_700_000_000u64.to_be_bytes());
        let p = Properties::decode(&bin, 0).unwrap();
        assert_eq!(p.content_type.as_deref(), Some(&b"text/plain"[..]));
        assert_eq!(p.delivery_mode, Some(2));
        assert_eq!(p.priority, Some(4));
        assert_eq!(p.timestamp, Some(1_700_000_000));
        let h = p.headers.as_ref().unwrap();
        assert_eq!(h.get("a"), Some(&FieldValue::I64(7)));
        assert_eq!(
            h.get("b"),
            Some(&FieldValue::Array(vec![FieldValue::LongStr(b"x".to_vec())]))
        );
        assert_eq!(p.encode().unwrap(), bin);
    }

    #[test]
    fn trailing_bytes_and_unknown_types_are_named() {
        let err = Properties::decode(&[0, 0, 9], 100).unwrap_err();
        assert_eq!(err.offset, 102);
        let bad_table = [0b0010_0000, 0, 0, 0, 0, 3, 1, b'k', b'?'];
        let err = Properties::decode(&bad_table, 0).unwrap_err();
        assert!(err.problem.contains("unknown field type"), "{err}");
        assert_eq!(err.offset, 8);
    }

    #[test]
    fn lapin_sees_the_same_properties_when_nothing_is_lost() {
        let p = Properties {
            content_type: Some(b"a/b".to_vec()),
            headers: Some(Table(vec![
                (b"a".to_vec(), FieldValue::I16(-2)),
                (
                    b"b".to_vec(),
                    FieldValue::Decimal {
                        scale: 2,
                        value: 314,
                    },
                ),
                (
                    b"c".to_vec(),
                    FieldValue::Table(Table(vec![(b"d".to_vec(), FieldValue::Void)])),
                ),
            ])),
            priority: Some(9),
            ..Default::default()
        };
        let bin = p.encode().unwrap();
        let (converted, lost) = p.to_lapin();
        assert!(lost.is_empty(), "{lost:?}");
        let (_, parsed) = lapin::protocol::basic::parse_properties(&bin[..]).unwrap();
        assert_eq!(parsed, converted);
        let unsorted = Properties {
            headers: Some(Table(vec![
                (b"z".to_vec(), FieldValue::Void),
                (b"a".to_vec(), FieldValue::I64Spec(1)),
            ])),
            ..Default::default()
        };
        assert_eq!(unsorted.to_lapin().1.len(), 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn encoding_round_trips(p in arb_properties()) {
            let bin = p.encode().unwrap();
            let back = Properties::decode(&bin, 0).unwrap();
            prop_assert_eq!(back.encode().unwrap(), bin);
        }

        #[test]
        fn hostile_bytes_never_panic(bin in proptest::collection::vec(any::<u8>(), 0..200)) {
            match Properties::decode(&bin, 7) {
                Ok(p) => prop_assert_eq!(p.encode().unwrap(), bin),
                Err(e) => prop_assert!(e.offset >= 7 && e.offset <= 7 + bin.len() as u64),
            }
        }

        #[test]
        fn mutated_properties_never_panic(p in arb_properties(), at in any::<usize>(), v in any::<u8>(), cut in any::<usize>()) {
            let mut bin = p.encode().unwrap();
            let i = at % bin.len();
            bin[i] = v;
            bin.truncate(cut % (bin.len() + 1));
            if let Ok(p) = Properties::decode(&bin, 0) {
                prop_assert_eq!(p.encode().unwrap(), bin);
            }
        }
    }
}
