//! A cluster member's pause (`stop_app`) hands the leadership of the quorum
//! queues and streams it leads to other members, and its return can take
//! the leadership of others: neither comes back by itself. Capture reads a
//! queue at its leader, and each member's snapshot holds the queues it led
//! when its backup counted them, so a leadership moved between the members'
//! backups would put a queue in two snapshots or in none. The backup
//! therefore leaves every leadership where it found it (DESIGN §13).

use std::time::{Duration, Instant};

use crate::rabbit::Broker;
use crate::rabbit::ctl::QueueStatus;
use crate::rabbit::queue_type::QueueType;

/// How long the queues get to elect their leaders again after the pause.
const PATIENCE: Duration = Duration::from_secs(60);

/// Where every quorum queue and stream is led before the pause: this
/// node's own (`here`, counted by this backup) and the other members'.
pub fn before_pause(
    node: &str,
    here: &[QueueStatus],
    elsewhere: &[(QueueStatus, String)],
) -> Vec<(String, String, String)> {
    let replicated =
        |q: &QueueStatus| matches!(q.queue_type, QueueType::Quorum | QueueType::Stream);
    here.iter()
        .filter(|q| replicated(q))
        .map(|q| (q.vhost.clone(), q.name.clone(), node.to_string()))
        .chain(
            elsewhere
                .iter()
                .filter(|(q, _)| replicated(q))
                .map(|(q, home)| (q.vhost.clone(), q.name.clone(), home.clone())),
        )
        .collect()
}

/// Asks every queue of `leaders` (`(vhost, queue, leader)`) led elsewhere
/// now to go back to its leader, until all have or [`PATIENCE`] is spent;
/// returns a warning per queue that did not.
pub async fn restore(broker: &Broker, leaders: &[(String, String, String)]) -> Vec<String> {
    if leaders.is_empty() {
        return Vec::new();
    }
    let node = &broker.identity.name;
    let names: Vec<(String, String)> = leaders
        .iter()
        .map(|(v, n, _)| (v.clone(), n.clone()))
        .collect();
    let started = Instant::now();
    let mut asked = false;
    let mut stuck: Vec<(String, String)> = Vec::new();
    loop {
        let now = match broker.control.live_leaders(&names).await {
            Ok(now) => now,
            Err(e) => {
                tracing::debug!("queue leaders not known yet: {e:#}");
                Vec::new()
            }
        };
        let moved: Vec<(&(String, String, String), String)> = leaders
            .iter()
            .filter_map(|want| {
                let (v, n, to) = want;
                let at = now
                    .iter()
                    .find(|(nv, nn, _)| nv == v && nn == n)
                    .and_then(|(_, _, at)| at.as_deref())
                    .unwrap_or("none");
                (at != to).then(|| (want, at.to_string()))
            })
            .collect();
        if moved.is_empty() {
            if asked {
                tracing::info!(
                    "every quorum queue and stream is led where it was before {node}'s pause ({} ms)",
                    started.elapsed().as_millis()
                );
            }
            return Vec::new();
        }
        let immovable = moved
            .iter()
            .all(|((v, n, _), _)| stuck.contains(&(v.clone(), n.clone())));
        if started.elapsed() > PATIENCE || immovable {
            let why = |v: &str, n: &str| {
                if stuck.iter().any(|(sv, sn)| sv == v && sn == n) {
                    ": RabbitMQ before 4.0 cannot move a stream's leader".to_string()
                } else {
                    format!(" within {} s", PATIENCE.as_secs())
                }
            };
            return moved
                .into_iter()
                .map(|((v, n, to), at)| {
                    let at = match at.as_str() {
                        "none" => "another member".to_string(),
                        _ => at,
                    };
                    if to == node {
                        format!(
                            "queue {n:?} in vhost {v:?}: its leadership moved to {at} during this node's pause and did not come back{}: this snapshot does not hold its messages",
                            why(v, n)
                        )
                    } else {
                        format!(
                            "queue {n:?} in vhost {v:?}: led by {to} before this node's pause, by {at} after it (it did not go back{}): unless {to} was backed up already, the snapshot of this round that holds it may be missing or doubled; `verify --cluster` tells",
                            why(v, n)
                        )
                    }
                })
                .collect();
        }
        let back: Vec<(String, String, String)> =
            moved.into_iter().map(|(want, _)| want.clone()).collect();
        match broker.control.transfer_leadership(&back).await {
            Ok(immovable) => stuck = immovable,
            Err(e) => tracing::debug!("leadership transfer not possible yet: {e:#}"),
        }
        asked = true;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
