//! What the tool needs to know about a definitions document.

use std::collections::BTreeSet;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::archive::manifest::DefinitionsInfo;

/// Parsed definitions with their digest and counts.
#[derive(Debug, Clone)]
pub struct Definitions {
    /// The exact bytes the node exported (kept as-is in the archive).
    pub bytes: Vec<u8>,
    /// Digest and counts for the manifest.
    pub info: DefinitionsInfo,
    /// Virtual host names, sorted.
    pub vhosts: Vec<String>,
    /// Whether any queue may be a quorum queue or a stream (explicitly, or
    /// through its vhost's default queue type).
    pub non_classic: bool,
    /// Policies (vhost, name) that set a message TTL.
    pub ttl_policies: BTreeSet<(String, String)>,
    /// Vhosts with a classic queue mirroring policy (`ha-mode`, 3.x).
    pub mirrored_vhosts: BTreeSet<String>,
}

impl Definitions {
    /// Parses exported definitions.
    pub fn parse(bytes: Vec<u8>) -> anyhow::Result<Definitions> {
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("the exported definitions are not valid JSON: {e}"))?;
        let count = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_array)
                .map_or(0, |a| a.len() as u64)
        };
        let mut vhosts: Vec<String> = value
            .get("vhosts")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.get("name")?.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        vhosts.sort();
        let info = DefinitionsInfo {
            sha256: hex::encode(Sha256::digest(&bytes)),
            vhosts: count("vhosts"),
            queues: count("queues"),
            exchanges: count("exchanges"),
            bindings: count("bindings"),
            users: count("users"),
            policies: count("policies"),
        };
        let non_classic = has_non_classic(&value);
        let ttl_policies = value
            .get("policies")
            .and_then(Value::as_array)
            .map(|policies| {
                policies
                    .iter()
                    .filter(|p| p["definition"].get("message-ttl").is_some())
                    .filter_map(|p| Some((p["vhost"].as_str()?.into(), p["name"].as_str()?.into())))
                    .collect()
            })
            .unwrap_or_default();
        let mirrored_vhosts = value
            .get("policies")
            .and_then(Value::as_array)
            .map(|policies| {
                policies
                    .iter()
                    .filter(|p| p["definition"].get("ha-mode").is_some())
                    .filter_map(|p| Some(p["vhost"].as_str()?.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Definitions {
            bytes,
            info,
            vhosts,
            non_classic,
            ttl_policies,
            mirrored_vhosts,
        })
    }
}

/// Top-level keys that describe the exporting node, not objects to import.
const ABOUT_THE_EXPORT: [&str; 4] = [
    "rabbit_version",
    "rabbitmq_version",
    "product_name",
    "product_version",
];

/// Whether importing `wanted` into a node that exports `held` would change
/// nothing: every object of every list in `wanted` (users, vhosts,
/// permissions, parameters, policies, queues, exchanges, bindings…) is in
/// `held` exactly as it is (the import merges, so `held`'s other objects do
/// not matter). Anything unexpected — a top-level value that is not a
/// list, JSON that does not parse — answers false: the import then runs.
pub fn already_held(wanted: &[u8], held: &[u8]) -> bool {
    let (Ok(Value::Object(wanted)), Ok(Value::Object(held))) = (
        serde_json::from_slice::<Value>(wanted),
        serde_json::from_slice::<Value>(held),
    ) else {
        return false;
    };
    wanted.iter().all(|(key, objects)| {
        if ABOUT_THE_EXPORT.contains(&key.as_str()) {
            return true;
        }
        let (Some(objects), Some(present)) =
            (objects.as_array(), held.get(key).and_then(Value::as_array))
        else {
            return objects.as_array().is_some_and(Vec::is_empty);
        };
        objects.iter().all(|o| present.contains(o))
    })
}

fn has_non_classic(defs: &Value) -> bool {
    let classic = |t: Option<&str>| matches!(t, None | Some("classic"));
    let explicit = defs
        .get("queues")
        .and_then(Value::as_array)
        .is_some_and(|qs| {
            qs.iter()
                .any(|q| !classic(q["arguments"]["x-queue-type"].as_str()))
        });
    // RabbitMQ 3.11+ exports a per-vhost default queue type.
    let defaults = defs
        .get("vhosts")
        .and_then(Value::as_array)
        .is_some_and(|vs| {
            vs.iter().any(|v| {
                !classic(v["default_queue_type"].as_str())
                    || !classic(v["metadata"]["default_queue_type"].as_str())
            })
        });
    explicit || defaults
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_objects() {
        let d = Definitions::parse(
            br#"{"vhosts":[{"name":"b"},{"name":"/"}],"queues":[{},{},{}],"users":[{}],"bindings":[]}"#.to_vec(),
        )
        .unwrap();
        assert_eq!(d.vhosts, vec!["/", "b"]);
        assert_eq!(d.info.queues, 3);
        assert_eq!(d.info.users, 1);
        assert_eq!(d.info.exchanges, 0);
        assert_eq!(d.info.sha256.len(), 64);
        assert!(!d.non_classic);
    }

    #[test]
    fn finds_quorum_queues_and_defaults() {
        let explicit = br#"{"queues":[{"name":"q","arguments":{"x-queue-type":"quorum"}}]}"#;
        assert!(Definitions::parse(explicit.to_vec()).unwrap().non_classic);
        let default = br#"{"vhosts":[{"name":"v","metadata":{"default_queue_type":"quorum"}}]}"#;
        assert!(Definitions::parse(default.to_vec()).unwrap().non_classic);
        let classic = br#"{"queues":[{"name":"q","arguments":{"x-queue-type":"classic"}}]}"#;
        assert!(!Definitions::parse(classic.to_vec()).unwrap().non_classic);
    }

    #[test]
    fn finds_policies_that_set_a_ttl() {
        let d = Definitions::parse(
            br#"{"policies":[{"vhost":"v","name":"ttl","definition":{"message-ttl":5000}},
                {"vhost":"v","name":"limit","definition":{"max-length":10}}]}"#
                .to_vec(),
        )
        .unwrap();
        assert_eq!(
            d.ttl_policies.into_iter().collect::<Vec<_>>(),
            vec![("v".to_string(), "ttl".to_string())]
        );
    }
    #[test]
    fn definitions_already_held_only_when_every_object_is_there_unchanged() {
        let held = br#"{"rabbit_version":"3.10.8","users":[{"name":"guest","password_hash":"h","tags":["administrator"]}],
            "vhosts":[{"name":"/"}],"queues":[{"name":"a","vhost":"/","durable":true,"arguments":{"x-max-priority":4,"x-queue-type":"classic"}},
            {"name":"extra","vhost":"/","durable":true,"arguments":{}}],"bindings":[],"parameters":[]}"#;
        // The same objects, fields in another order, another exporter version, an empty list the node lacks.
        let same = br#"{"rabbitmq_version":"3.8.9","queues":[{"arguments":{"x-queue-type":"classic","x-max-priority":4},"durable":true,"vhost":"/","name":"a"}],
            "users":[{"tags":["administrator"],"password_hash":"h","name":"guest"}],"vhosts":[{"name":"/"}],"topic_permissions":[]}"#;
        assert!(already_held(same, held));
        assert!(already_held(held, held));
        // One field differs, an object is missing, a list the node does not have, not a list, not JSON.
        let changed = br#"{"queues":[{"name":"a","vhost":"/","durable":true,"arguments":{"x-max-priority":5,"x-queue-type":"classic"}}]}"#;
        assert!(!already_held(changed, held));
        let missing = br#"{"vhosts":[{"name":"/"},{"name":"shop"}]}"#;
        assert!(!already_held(missing, held));
        let new_list = br#"{"policies":[{"vhost":"/","name":"p","pattern":".*","definition":{}}]}"#;
        assert!(!already_held(new_list, held));
        assert!(!already_held(
            br#"{"global_parameters":{"name":"x"}}"#,
            held
        ));
        assert!(!already_held(b"not json", held));
        assert!(!already_held(same, b"[]"));
    }
}
