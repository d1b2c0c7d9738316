use super::*;
use crate::archive::manifest::IndexVersion;
use crate::cluster::journal::{PartState, PlannedQueue};
use crate::rabbit::queue_type::QueueType;

const NODE: &str = "rabbit@a";

/// The member snapshots of `rabbit@a` and `rabbit@b`, each holding one
/// classic queue in files (`cq-a`, `cq-b`), `rabbit@a` also a quorum queue.
fn members() -> Vec<Manifest> {
    ["rabbit@a", "rabbit@b"]
        .iter()
        .map(|node| {
            let mut m = crate::archive::manifest::tests::sample();
            m.node.name = node.to_string();
            m.node.rabbitmq_version = "3.10.8".into();
            m.id = format!("20261201T000000Z-0000000{}", &node[7..]);
            let mut q = m.queues[0].clone();
            q.name = format!("cq-{}", &node[7..]);
            q.vhost = m.vhosts[0].name.clone();
            q.index_version = Some(IndexVersion::V1);
            q.messages = 3;
            m.queues = vec![q];
            m
        })
        .collect()
}

fn parts(members: &[Manifest]) -> Vec<PartJournal> {
    members
        .iter()
        .map(|m| {
            let mut queues: Vec<PlannedQueue> = m
                .queues
                .iter()
                .map(|q| PlannedQueue {
                    vhost: q.vhost.clone(),
                    name: q.name.clone(),
                    queue_type: QueueType::Classic,
                    messages: q.messages,
                })
                .collect();
            if m.node.name == NODE {
                queues.push(PlannedQueue {
                    vhost: m.vhosts[0].name.clone(),
                    name: "qq".into(),
                    queue_type: QueueType::Quorum,
                    messages: 2,
                });
            }
            PartJournal {
                node: m.node.name.clone(),
                snapshot: m.id.clone(),
                queues,
                state: PartState::Todo,
                method: PartMethod::Replay,
                reason: String::new(),
                published: Vec::new(),
                excluded: 0,
                interrupted: Vec::new(),
            }
        })
        .collect()
}

fn facts() -> Facts {
    Facts {
        node: NODE.into(),
        version: "3.10.8".into(),
        ..Facts::default()
    }
}

/// The methods and reasons `decide` gives with `facts`.
fn decided(facts: &Facts) -> Vec<(PartMethod, String)> {
    let m = members();
    let mut p = parts(&m);
    decide(&mut p, &m, facts).unwrap();
    p.into_iter().map(|p| (p.method, p.reason)).collect()
}

#[test]
fn only_the_part_of_the_node_restored_through_is_swapped() {
    let d = decided(&facts());
    assert_eq!(d[0].0, PartMethod::Swap, "{d:?}");
    assert!(d[0].1.contains("quorum queues and streams"), "{d:?}");
    assert_eq!(d[1].0, PartMethod::Replay);
    assert!(
        d[1].1.contains("rabbit@b") && d[1].1.contains(NODE),
        "{d:?}"
    );
    // Not a member of the source cluster: every part replayed.
    let other = Facts {
        node: "rabbit@z".into(),
        ..facts()
    };
    assert!(
        decided(&other)
            .iter()
            .all(|(m, _)| *m == PartMethod::Replay)
    );
}

#[test]
fn every_reason_against_the_swap_replays_that_part_and_says_why() {
    let cases: Vec<(Facts, &str)> = vec![
        (
            Facts {
                method: Some(MethodArg::Replay),
                ..facts()
            },
            "--method replay",
        ),
        (
            Facts {
                subset: true,
                ..facts()
            },
            "--vhost/--queue",
        ),
        (
            Facts {
                append: true,
                ..facts()
            },
            "--append",
        ),
        (
            Facts {
                version: "4.3.6".into(),
                ..facts()
            },
            "version-1 queue indexes",
        ),
        (
            Facts {
                version: "3.8.9".into(),
                ..facts()
            },
            "older 3.8.9",
        ),
        (
            Facts {
                mirrored: vec![members()[0].vhosts[0].name.clone()],
                ..facts()
            },
            "ha-mode",
        ),
        (
            Facts {
                homes: vec![(
                    members()[0].vhosts[0].name.clone(),
                    "cq-a".into(),
                    "rabbit@c".into(),
                )],
                ..facts()
            },
            "lives on rabbit@c",
        ),
        (
            Facts {
                holding: vec![(members()[0].vhosts[0].name.clone(), "other".into(), 4)],
                ..facts()
            },
            "holds 4 messages",
        ),
        (
            Facts {
                other_filesystem: Some("another filesystem".into()),
                ..facts()
            },
            "another filesystem",
        ),
    ];
    for (f, why) in cases {
        let d = decided(&f);
        assert_eq!(d[0].0, PartMethod::Replay, "{why}: {d:?}");
        assert!(d[0].1.contains(why), "{why}: {d:?}");
    }
    // Mirroring exists only before 4.0; homes on the node itself, and
    // messages in queues the restore replaces anyway, do not prevent it.
    let fine = [
        Facts {
            version: "4.0.5".into(),
            mirrored: vec![members()[0].vhosts[0].name.clone()],
            ..facts()
        },
        Facts {
            homes: vec![(
                members()[0].vhosts[0].name.clone(),
                "cq-a".into(),
                NODE.into(),
            )],
            holding: vec![(members()[0].vhosts[0].name.clone(), "cq-b".into(), 4)],
            ..facts()
        },
    ];
    for f in fine {
        assert_eq!(decided(&f)[0].0, PartMethod::Swap, "{f:?}");
    }
}

#[test]
fn method_swap_is_refused_when_the_part_cannot_be_swapped() {
    let m = members();
    let mut p = parts(&m);
    let f = Facts {
        method: Some(MethodArg::Swap),
        version: "4.3.6".into(),
        ..facts()
    };
    let e = decide(&mut p, &m, &f).unwrap_err();
    assert_eq!(crate::error::kind_of(&e), crate::error::Kind::Refused);
    assert!(e.to_string().contains("version-1"), "{e}");
    let f = Facts {
        method: Some(MethodArg::Swap),
        node: "rabbit@z".into(),
        ..facts()
    };
    assert!(decide(&mut p, &m, &f).is_err());
    let f = Facts {
        method: Some(MethodArg::Swap),
        ..facts()
    };
    decide(&mut p, &m, &f).unwrap();
    assert_eq!(p[0].method, PartMethod::Swap);
}
