//! A cluster member's pause (`stop_app`) hands the leadership of the quorum
//! queues and streams it leads to other members, and it does not come back
//! by itself. Their capture reads the leader, so without this the member's
//! snapshot would hold none of them and the new leader's snapshot (taken
//! earlier or later) might hold them or not: after the pause the backup
//! takes the leadership back, so every member snapshot holds exactly the
//! queues its node led when the backup counted them (DESIGN §13).

use std::time::{Duration, Instant};

use crate::rabbit::Broker;
use crate::rabbit::ctl::QueueStatus;

/// How long the queues get to elect this node again after the pause.
const PATIENCE: Duration = Duration::from_secs(60);

/// The quorum queues and streams among `queues` (this node's, counted
/// before the pause).
pub fn led(queues: &[QueueStatus]) -> Vec<(String, String)> {
    queues
        .iter()
        .filter(|q| q.queue_type == "quorum" || q.queue_type == "stream")
        .map(|q| (q.vhost.clone(), q.name.clone()))
        .collect()
}

/// Asks every queue of `led` whose leader moved away to come back, until
/// all have or [`PATIENCE`] is spent; returns a warning per queue that did
/// not (its messages are then in no snapshot of this round: say so).
pub async fn reclaim(broker: &Broker, led: &[(String, String)]) -> Vec<String> {
    if led.is_empty() {
        return Vec::new();
    }
    let node = &broker.identity.name;
    let started = Instant::now();
    let mut asked = false;
    loop {
        let away: Vec<(String, String, String)> = match broker.ctl.queue_homes().await {
            Ok(homes) => led
                .iter()
                .map(|(v, n)| {
                    let home = homes
                        .iter()
                        .find(|(hv, hn, _)| hv == v && hn == n)
                        .map_or_else(|| "nobody".to_string(), |(_, _, h)| h.clone());
                    (v.clone(), n.clone(), home)
                })
                .filter(|(_, _, home)| home != node)
                .collect(),
            Err(e) => {
                tracing::debug!("queue leaders not known yet: {e:#}");
                led.iter()
                    .map(|(v, n)| (v.clone(), n.clone(), "unknown".to_string()))
                    .collect()
            }
        };
        if away.is_empty() {
            if asked {
                tracing::info!(
                    "{node} leads its {} quorum queues and streams again after the pause ({} ms)",
                    led.len(),
                    started.elapsed().as_millis()
                );
            }
            return Vec::new();
        }
        if started.elapsed() > PATIENCE {
            return away
                .into_iter()
                .map(|(v, n, home)| {
                    format!(
                        "queue {n:?} in vhost {v:?}: its leadership moved to {home} during this node's pause and did not come back within {} s; this snapshot does not hold its messages, and {home}'s snapshot holds them only if taken after now",
                        PATIENCE.as_secs()
                    )
                })
                .collect();
        }
        let pending: Vec<(String, String)> = away.into_iter().map(|(v, n, _)| (v, n)).collect();
        if let Err(e) = broker.ctl.transfer_leadership_here(&pending).await {
            tracing::debug!("leadership transfer not possible yet: {e:#}");
        }
        asked = true;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
