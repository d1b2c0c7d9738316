use super::*;
use crate::archive::manifest::QueueEntry;
use crate::archive::manifest::tests::sample;
use crate::error::{Kind, kind_of};

const MEMBERS: [&str; 3] = ["rabbit@a", "rabbit@b", "rabbit@c"];

/// A member snapshot of cluster "prod" taken at `hhmmss`, holding queue
/// `own` (3 messages) and naming `q-<other>` as held by each other member.
fn member(node: &str, hhmmss: &str) -> Manifest {
    let mut m = sample();
    m.id = format!("20261121T{hhmmss}Z-0000000{}", &node[7..]);
    m.node.name = node.into();
    m.node.cluster_name = Some("prod".into());
    m.node.cluster_members = MEMBERS.iter().map(|s| s.to_string()).collect();
    let queue = |name: String, home: Option<&str>| QueueEntry {
        name,
        messages: 3,
        covered: home.is_none(),
        home_node: home.map(str::to_string),
        ..sample().queues[0].clone()
    };
    m.queues = MEMBERS
        .iter()
        .map(|other| {
            let home = (*other != node).then_some(*other);
            queue(format!("q-{}", &other[7..]), home)
        })
        .collect();
    m.totals.covered_messages = 3;
    m.totals.stored_bytes = 100;
    m
}

#[test]
fn one_snapshot_per_member_within_the_window_is_one_cluster_snapshot() {
    let manifests = vec![
        member("rabbit@a", "051500"),
        member("rabbit@b", "051700"),
        member("rabbit@c", "052400"),
        // The next night's round, and another cluster's snapshot.
        member("rabbit@b", "151500"),
        {
            let mut other = member("rabbit@a", "051500");
            other.node.cluster_name = Some("staging".into());
            other
        },
    ];
    let rounds = group("prod", &manifests, DEFAULT_WINDOW);
    assert_eq!(rounds.len(), 2);
    let first = &rounds[0];
    assert_eq!(first.id, "20261121T051500Z-0000000a");
    assert!(first.is_complete(), "{:?}", first.missing());
    assert_eq!(first.created_at(), sample().created_at);
    let queues = first.queues();
    let held: Vec<(&str, &str, bool)> = queues
        .iter()
        .map(|q| (q.name.as_str(), q.held_by.as_str(), q.covered))
        .collect();
    assert_eq!(
        held,
        [
            ("q-a", "rabbit@a", true),
            ("q-b", "rabbit@b", true),
            ("q-c", "rabbit@c", true)
        ]
    );
    assert!(first.problems().is_empty(), "{:?}", first.problems());
    let t = first.totals();
    assert_eq!((t.queues, t.messages, t.covered_messages), (3, 9, 9));
    assert_eq!((t.missing_messages, t.stored_bytes), (0, 300));

    let second = &rounds[1];
    assert_eq!(second.missing(), ["rabbit@a", "rabbit@c"]);
    let t = second.totals();
    assert_eq!(
        (t.messages, t.covered_messages, t.missing_messages),
        (9, 3, 6)
    );
}

#[test]
fn a_window_is_counted_from_the_rounds_first_snapshot() {
    let manifests = [member("rabbit@a", "050000"), member("rabbit@b", "051600")];
    let rounds = group("prod", &manifests, DEFAULT_WINDOW);
    assert_eq!(rounds.len(), 2, "16 minutes apart: two rounds");
    let rounds = group("prod", &manifests, Duration::from_secs(20 * 60));
    assert_eq!(rounds.len(), 1);
}

#[test]
fn a_members_second_snapshot_in_a_window_begins_another_round() {
    // a retried after b; c joins the first round, which lacks it.
    let manifests = [
        member("rabbit@a", "050000"),
        member("rabbit@b", "050100"),
        member("rabbit@a", "050200"),
        member("rabbit@c", "050300"),
    ];
    let rounds = group("prod", &manifests, DEFAULT_WINDOW);
    assert_eq!(rounds.len(), 2);
    assert!(rounds[0].is_complete());
    assert_eq!(rounds[1].snapshots.len(), 1);
}

#[test]
fn a_queue_whose_leader_moved_between_backups_is_a_problem() {
    let a = member("rabbit@a", "050000");
    let mut b = member("rabbit@b", "050100");
    let c = member("rabbit@c", "050200");
    // b took over q-a before its backup: both a and b hold it.
    b.queues[0].home_node = None;
    let round = &group("prod", &[a.clone(), b, c.clone()], DEFAULT_WINDOW)[0];
    let problems = round.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("duplicate"), "{problems:?}");

    // c's queue moved to a after a's backup: nobody holds it.
    let mut c = c;
    c.queues[2].home_node = Some("rabbit@a".into());
    let b = member("rabbit@b", "050100");
    let round = &group("prod", &[a, b, c], DEFAULT_WINDOW)[0];
    let problems = round.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("in no member snapshot"),
        "{problems:?}"
    );
    let q = round
        .queues()
        .into_iter()
        .find(|q| q.name == "q-c")
        .unwrap();
    assert!(!q.covered && q.snapshot.is_none(), "{q:?}");
}

#[test]
fn latest_must_be_complete_unless_partial_is_allowed() {
    let manifests = [
        member("rabbit@a", "050000"),
        member("rabbit@b", "050100"),
        member("rabbit@c", "050200"),
        member("rabbit@a", "150000"),
        member("rabbit@b", "150100"),
    ];
    let rounds = group("prod", &manifests, DEFAULT_WINDOW);
    let err = select("prod", &rounds, "latest", false, &[]).unwrap_err();
    assert_eq!(kind_of(&err), Kind::Refused);
    let text = err.to_string();
    assert!(text.contains("no snapshot of rabbit@c"), "{text}");
    assert!(text.contains("--allow-partial"), "{text}");
    assert!(
        text.contains("the newest complete one is 20261121T050000Z-0000000a"),
        "{text}"
    );
    let partial = select("prod", &rounds, "latest", true, &[]).unwrap();
    assert_eq!(partial.id, "20261121T150000Z-0000000a");
    // Any member's id names its round.
    let by_b = select("prod", &rounds, "20261121T050100Z-0000000b", false, &[]).unwrap();
    assert_eq!(by_b.id, "20261121T050000Z-0000000a");
    let err = select("prod", &rounds, "20261121T", false, &[]).unwrap_err();
    assert!(err.to_string().contains("ambiguous"), "{err}");
    let err = select("prod", &rounds, "2025", false, &[]).unwrap_err();
    assert_eq!(kind_of(&err), Kind::Usage);
    let err = select("dev", &[], "latest", false, &["prod".into()]).unwrap_err();
    assert!(err.to_string().contains("cluster prod"), "{err}");
}
