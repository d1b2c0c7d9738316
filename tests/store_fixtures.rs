//! The store reader against real stores written by every RabbitMQ version
//! Debian ships (tests/fixtures/store/, made by scripts/make-store-fixtures):
//! each queue decodes to exactly the messages left in it, in delivery order.

use std::path::{Path, PathBuf};

use rabbitmq_backup::message::json;
use rabbitmq_backup::store::Store;
use serde_json::{Map, Value};

const VERSIONS: [&str; 4] = ["3.8.9", "3.10.8", "4.0.5", "4.3.6"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store")
}

/// The fields a fixture's expectation states, from a decoded message.
fn rendered(vhost: &str, queue: &str, item: &rabbitmq_backup::store::QueueItem) -> Value {
    let mut m = Map::new();
    m.insert("vhost".into(), vhost.into());
    m.insert("queue".into(), queue.into());
    if let Some(l) = item.facts.priority_level {
        m.insert("priority_level".into(), l.into());
    }
    json::message(&item.message, true, &mut m);
    Value::Object(m)
}

struct Decoded {
    queue: Value,
    messages: Vec<Value>,
    transient_skipped: u64,
}

fn decode(dir: &Path) -> Vec<Decoded> {
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let store = Store::open(dir).unwrap();
    assert!(store.notes.is_empty(), "{:?}", store.notes);
    let work = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for q in expected["queues"].as_array().unwrap() {
        let (vhost, name) = (q["vhost"].as_str().unwrap(), q["name"].as_str().unwrap());
        let dirs = store
            .queues()
            .find(|d| d.vhost == vhost && d.name == name)
            .unwrap_or_else(|| panic!("{}: no queue {name} in {vhost}", dir.display()));
        let reader = store.vhost(vhost, work.path()).unwrap();
        let mut messages = reader.queue(dirs);
        let mut decoded = Vec::new();
        for item in messages.by_ref() {
            let item = item.unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            assert_eq!(item.position, decoded.len() as u64);
            assert!(item.facts.persistent);
            decoded.push(rendered(vhost, name, &item));
        }
        let summary = messages.summary();
        assert!(
            summary.dropped.is_empty(),
            "{}: {:?}",
            dir.display(),
            summary.dropped
        );
        out.push(Decoded {
            queue: q.clone(),
            messages: decoded,
            transient_skipped: summary.transient_skipped,
        });
    }
    out
}

#[test]
fn every_version_decodes_to_the_messages_left_in_each_queue_in_order() {
    for version in VERSIONS {
        let dir = fixtures().join(version);
        assert!(
            dir.join("expected.json").exists(),
            "no fixture for {version}"
        );
        for d in decode(&dir) {
            let expected = d.queue["messages"].as_array().unwrap();
            let name = d.queue["name"].as_str().unwrap();
            assert_eq!(
                d.messages.len(),
                expected.len(),
                "{version} {name}: message count"
            );
            for (i, (got, want)) in d.messages.iter().zip(expected).enumerate() {
                assert_eq!(got, want, "{version} {name}: message {i}");
            }
            let transient = d.queue["transient_published"].as_u64().unwrap();
            assert!(d.transient_skipped <= transient, "{version} {name}");
        }
    }
}

#[test]
fn version_3_lazy_queues_keep_transient_messages_in_the_index_and_they_are_skipped() {
    for version in ["3.8.9", "3.10.8"] {
        let decoded = decode(&fixtures().join(version));
        let q = decoded
            .iter()
            .find(|d| d.queue["name"] == "fx.transient")
            .unwrap();
        assert_eq!(q.transient_skipped, 2, "{version}");
    }
}

/// Files copied from a running node: the journal may lag (acknowledgements
/// not yet written), so acknowledged messages may still appear, but every
/// message left in a queue is there, in order, and nothing else.
#[test]
fn a_live_copy_holds_every_remaining_message_in_order() {
    let dir = fixtures().join("3.10.8-live");
    for d in decode(&dir) {
        let name = d.queue["name"].as_str().unwrap();
        let remaining = d.queue["messages"].as_array().unwrap();
        let acked = d.queue["acked"].as_array().unwrap();
        let kept: Vec<&Value> = d.messages.iter().filter(|m| !acked.contains(m)).collect();
        assert_eq!(kept.len(), remaining.len(), "{name}");
        for (got, want) in kept.iter().zip(remaining) {
            assert_eq!(*got, want, "{name}");
        }
    }
}
