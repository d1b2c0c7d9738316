//! Definitions exported by an older RabbitMQ made importable into a newer
//! one. An import stops at the first object the node rejects, after
//! creating everything before it; so every key a target would reject is
//! dealt with here, before the import, per key (README, "Restoring onto
//! another version"):
//!
//! - 4.0+ removed classic queue mirroring: the `ha-*` keys are taken out of
//!   policies and operator policies (a policy left empty is dropped).
//! - 4.3+ has no version-1 queue index: `x-queue-version: 1` is taken out of
//!   queue arguments (the queue is version 2, the only one).
//! - 4.3+ denies `queue-master-locator` by default: it becomes the
//!   equivalent `queue-leader-locator` (policies and `x-` arguments).
//! - 4.3+ denies non-durable, non-exclusive queues by default: they hold no
//!   message in a snapshot, so they and their bindings are left out.
//!
//! Each change is reported; the snapshot's own bytes are never altered.

use serde_json::{Map, Value};

use super::version::older;

/// Definitions ready for a target, and what was changed to get there.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapted {
    /// The document to import.
    pub bytes: Vec<u8>,
    /// One line per change, naming the object and why.
    pub changes: Vec<String>,
}

/// Policy keys of classic queue mirroring, removed in RabbitMQ 4.0.
const MIRRORING_KEYS: [&str; 6] = [
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-sync-batch-size",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
];

/// Adapts `bytes` (exported definitions) for a node running `target`.
/// Unchanged bytes come back as they were.
pub fn adapt(bytes: &[u8], target: &str) -> anyhow::Result<Adapted> {
    let unchanged = || Adapted {
        bytes: bytes.to_vec(),
        changes: Vec::new(),
    };
    if older(target, "4.0.0") {
        return Ok(unchanged());
    }
    let mut defs: Value = serde_json::from_slice(bytes)
        .map_err(|e| anyhow::anyhow!("the snapshot's definitions are not valid JSON: {e}"))?;
    let mut changes = Vec::new();
    for key in ["policies", "operator_policies"] {
        drop_mirroring(&mut defs, key, target, &mut changes);
    }
    if !older(target, "4.3.0") {
        drop_queue_version_1(&mut defs, target, &mut changes);
        rename_master_locator(&mut defs, target, &mut changes);
        drop_transient_queues(&mut defs, target, &mut changes);
    }
    if changes.is_empty() {
        return Ok(unchanged());
    }
    Ok(Adapted {
        bytes: serde_json::to_vec(&defs)?,
        changes,
    })
}

fn items<'a>(defs: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    defs.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

fn name_of(item: &Value) -> String {
    format!(
        "{:?} in vhost {:?}",
        item["name"].as_str().unwrap_or_default(),
        item["vhost"].as_str().unwrap_or_default()
    )
}

fn drop_mirroring(defs: &mut Value, key: &str, target: &str, changes: &mut Vec<String>) {
    let kind = key.trim_end_matches("ies").replace('_', " ") + "y";
    let mut emptied = Vec::new();
    for policy in items(defs, key) {
        let Some(definition) = policy.get_mut("definition").and_then(Value::as_object_mut) else {
            continue;
        };
        let removed: Vec<&str> = MIRRORING_KEYS
            .into_iter()
            .filter(|k| definition.remove(*k).is_some())
            .collect();
        if removed.is_empty() {
            continue;
        }
        let name = name_of(policy);
        if definition_is_empty(policy) {
            emptied.push((policy["vhost"].clone(), policy["name"].clone()));
            changes.push(format!(
                "{kind} {name} is left out: it only set classic queue mirroring ({}), which RabbitMQ {target} no longer has",
                removed.join(", ")
            ));
        } else {
            changes.push(format!(
                "{kind} {name}: {} removed (classic queue mirroring no longer exists in RabbitMQ {target}); its other keys are kept",
                removed.join(", ")
            ));
        }
    }
    if let Some(list) = defs.get_mut(key).and_then(Value::as_array_mut) {
        list.retain(|p| !emptied.contains(&(p["vhost"].clone(), p["name"].clone())));
    }
}

fn definition_is_empty(policy: &Value) -> bool {
    policy["definition"].as_object().is_some_and(Map::is_empty)
}

fn drop_queue_version_1(defs: &mut Value, target: &str, changes: &mut Vec<String>) {
    for queue in items(defs, "queues") {
        let Some(args) = queue.get_mut("arguments").and_then(Value::as_object_mut) else {
            continue;
        };
        if args.get("x-queue-version").and_then(Value::as_u64) == Some(1) {
            args.remove("x-queue-version");
            changes.push(format!(
                "queue {}: argument x-queue-version 1 removed (RabbitMQ {target} has queue index version 2 only)",
                name_of(queue)
            ));
        }
    }
}

/// `queue-master-locator` values and their `queue-leader-locator`
/// equivalents, as RabbitMQ 4.0-4.2 map them.
fn leader_locator(master: &str) -> &'static str {
    match master {
        "client-local" => "client-local",
        _ => "balanced",
    }
}

fn rename_master_locator(defs: &mut Value, target: &str, changes: &mut Vec<String>) {
    let mut rename = |map: &mut Map<String, Value>, from: &str, to: &str, what: String| {
        if let Some(value) = map.remove(from) {
            let new = leader_locator(value.as_str().unwrap_or_default());
            map.insert(to.into(), Value::String(new.into()));
            changes.push(format!(
                "{what}: {from} {value} became {to} \"{new}\" (RabbitMQ {target} denies {from} by default)"
            ));
        }
    };
    for key in ["policies", "operator_policies"] {
        for policy in items(defs, key) {
            let name = name_of(policy);
            if let Some(definition) = policy.get_mut("definition").and_then(Value::as_object_mut) {
                rename(
                    definition,
                    "queue-master-locator",
                    "queue-leader-locator",
                    format!("policy {name}"),
                );
            }
        }
    }
    for queue in items(defs, "queues") {
        let name = name_of(queue);
        if let Some(args) = queue.get_mut("arguments").and_then(Value::as_object_mut) {
            rename(
                args,
                "x-queue-master-locator",
                "x-queue-leader-locator",
                format!("queue {name}"),
            );
        }
    }
}

fn drop_transient_queues(defs: &mut Value, target: &str, changes: &mut Vec<String>) {
    let mut dropped: Vec<(Value, Value)> = Vec::new();
    if let Some(queues) = defs.get_mut("queues").and_then(Value::as_array_mut) {
        queues.retain(|q| {
            // Exports leave exclusive queues out; what is left and not
            // durable is a transient non-exclusive queue.
            if q["durable"].as_bool() != Some(false) {
                return true;
            }
            changes.push(format!(
                "queue {} is left out, with its bindings: RabbitMQ {target} denies non-durable queues by default (deprecated feature transient_nonexcl_queues); it holds no message in a snapshot, and applications declaring it need it durable or exclusive, or the feature permitted on the node",
                name_of(q)
            ));
            dropped.push((q["vhost"].clone(), q["name"].clone()));
            false
        });
    }
    if dropped.is_empty() {
        return;
    }
    if let Some(bindings) = defs.get_mut("bindings").and_then(Value::as_array_mut) {
        bindings.retain(|b| {
            !(b["destination_type"] == "queue"
                && dropped.contains(&(b["vhost"].clone(), b["destination"].clone())))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Definitions as RabbitMQ 3.10 exports them, with every key 4.x rejects.
    fn from_3_10() -> Value {
        json!({
            "rabbit_version": "3.10.8",
            "vhosts": [{"name": "/"}],
            "policies": [
                {"vhost": "/", "name": "ha-all", "pattern": ".*", "apply-to": "queues",
                 "definition": {"ha-mode": "all", "ha-sync-mode": "automatic"}, "priority": 0},
                {"vhost": "/", "name": "limits", "pattern": "^oro", "apply-to": "queues",
                 "definition": {"ha-mode": "exactly", "ha-params": 2, "max-length": 10,
                                "queue-master-locator": "min-masters"}, "priority": 1}
            ],
            "queues": [
                {"name": "v1", "vhost": "/", "durable": true, "auto_delete": false,
                 "arguments": {"x-queue-version": 1, "x-queue-master-locator": "client-local"}},
                {"name": "v2", "vhost": "/", "durable": true, "auto_delete": false,
                 "arguments": {"x-queue-version": 2}},
                {"name": "reply", "vhost": "/", "durable": false, "auto_delete": false, "arguments": {}}
            ],
            "bindings": [
                {"source": "amq.topic", "vhost": "/", "destination": "reply",
                 "destination_type": "queue", "routing_key": "r", "arguments": {}},
                {"source": "amq.topic", "vhost": "/", "destination": "v1",
                 "destination_type": "queue", "routing_key": "r", "arguments": {}}
            ]
        })
    }

    fn adapted(target: &str) -> (Value, Vec<String>) {
        let out = adapt(&serde_json::to_vec(&from_3_10()).unwrap(), target).unwrap();
        (serde_json::from_slice(&out.bytes).unwrap(), out.changes)
    }

    #[test]
    fn older_targets_get_the_exact_bytes() {
        let bytes = serde_json::to_vec(&from_3_10()).unwrap();
        for target in ["3.8.9", "3.10.8", "3.13.7"] {
            let out = adapt(&bytes, target).unwrap();
            assert_eq!(out.bytes, bytes, "{target}");
            assert!(out.changes.is_empty());
        }
    }

    #[test]
    fn mirroring_keys_leave_4_0_policies() {
        let (defs, changes) = adapted("4.0.5");
        let policies = defs["policies"].as_array().unwrap();
        assert_eq!(policies.len(), 1, "the mirroring-only policy is left out");
        assert_eq!(
            policies[0]["definition"],
            json!({"max-length": 10, "queue-master-locator": "min-masters"})
        );
        // 4.0 still reads version-1 queues and non-durable queues.
        assert_eq!(defs["queues"][0]["arguments"]["x-queue-version"], 1);
        assert_eq!(defs["queues"].as_array().unwrap().len(), 3);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes[0].contains("\"ha-all\"") && changes[0].contains("left out"));
        assert!(changes[1].contains("ha-mode, ha-params"), "{changes:?}");
    }

    #[test]
    fn version_1_locators_and_transient_queues_leave_4_3_definitions() {
        let (defs, changes) = adapted("4.3.6");
        let queues = defs["queues"].as_array().unwrap();
        let names: Vec<&str> = queues.iter().map(|q| q["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["v1", "v2"]);
        assert_eq!(
            queues[0]["arguments"],
            json!({"x-queue-leader-locator": "client-local"})
        );
        assert_eq!(queues[1]["arguments"]["x-queue-version"], 2);
        assert_eq!(
            defs["policies"][0]["definition"],
            json!({"max-length": 10, "queue-leader-locator": "balanced"})
        );
        let bindings = defs["bindings"].as_array().unwrap();
        assert_eq!(bindings.len(), 1);
        assert_eq!(bindings[0]["destination"], "v1");
        for expected in [
            "x-queue-version 1 removed",
            "queue-leader-locator",
            "\"reply\"",
        ] {
            assert!(
                changes.iter().any(|c| c.contains(expected)),
                "{expected}: {changes:?}"
            );
        }
    }

    #[test]
    fn definitions_without_such_keys_are_untouched_on_4_3() {
        let bytes = br#"{"queues":[{"name":"q","vhost":"/","durable":true,"arguments":{}}]}"#;
        let out = adapt(bytes, "4.3.6").unwrap();
        assert_eq!(out.bytes, bytes);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_mutated_definitions(pos in 0usize..4000, byte in proptest::prelude::any::<u8>()) {
            let mut bytes = serde_json::to_vec(&from_3_10()).unwrap();
            let i = pos % bytes.len();
            bytes[i] = byte;
            let _ = adapt(&bytes, "4.3.6");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(adapt(b"{", "4.3.6").is_err());
        for odd in [
            &br#"{"policies":7}"#[..],
            br#"{"queues":[1,null,{"arguments":3}]}"#,
        ] {
            adapt(odd, "4.3.6").unwrap();
        }
    }
}
