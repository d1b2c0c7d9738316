//! `exclude`, and the exclusion step of `restore --exclude-routing-key`.

use crate::archive::manifest::Manifest;
use crate::cli::ExcludeArgs;
use crate::exclude::Matcher;
use crate::exclude::mover::{self, AmqpConfig, Destination, Outcome};
use crate::output::{Output, count};
use crate::settings::Settings;

/// The AMQP settings of the command line.
pub fn amqp_config(settings: &Settings) -> AmqpConfig {
    AmqpConfig {
        url: settings.amqp_url.clone(),
        username: settings.username.clone(),
        password: settings.password.clone(),
    }
}

/// Runs `exclude`.
pub async fn run(settings: &Settings, args: &ExcludeArgs, out: Output) -> anyhow::Result<Outcome> {
    let matcher = Matcher::new(&args.routing_key)?;
    let destination = if args.drop {
        Destination::Drop
    } else {
        Destination::Queue(
            args.to_queue
                .clone()
                .unwrap_or_else(|| mover::excluded_queue_name(&args.queue)),
        )
    };
    let outcome = mover::exclude(
        &amqp_config(settings),
        &args.vhost,
        &args.queue,
        &matcher,
        &destination,
    )
    .await?;
    out.result(&outcome, || match &outcome.to_queue {
        Some(to) => format!(
            "queue {:?} in vhost {:?}: moved {} to {to:?}, kept {}\n",
            outcome.queue,
            outcome.vhost,
            count(outcome.excluded, "message"),
            outcome.kept
        ),
        None => format!(
            "queue {:?} in vhost {:?}: dropped {}, kept {}\n",
            outcome.queue,
            outcome.vhost,
            count(outcome.excluded, "message"),
            outcome.kept
        ),
    })?;
    Ok(outcome)
}

/// Filters every restored queue that holds messages (§6 step 6).
pub async fn after_restore(
    settings: &Settings,
    manifest: &Manifest,
    matcher: &Matcher,
    drop: bool,
) -> anyhow::Result<Vec<Outcome>> {
    let config = amqp_config(settings);
    let mut outcomes = Vec::new();
    for q in manifest
        .queues
        .iter()
        .filter(|q| q.covered && q.messages > 0)
    {
        let destination = if drop {
            Destination::Drop
        } else {
            Destination::Queue(mover::excluded_queue_name(&q.name))
        };
        let outcome = mover::exclude(&config, &q.vhost, &q.name, matcher, &destination)
            .await
            .map_err(|e| {
                e.context(format!(
                    "the restore succeeded, but excluding messages from {:?} failed",
                    q.name
                ))
            })?;
        outcomes.push(outcome);
    }
    Ok(outcomes)
}
