//! `exclude`.

use crate::cli::ExcludeArgs;
use crate::exclude::Matcher;
use crate::exclude::mover::{self, AmqpConfig, Destination, Outcome};
use crate::output::{Output, count};
use crate::rabbit::Broker;
use crate::settings::Settings;

/// The AMQP settings: `--amqp-url`, or the node's own listener.
pub async fn amqp_config(settings: &Settings) -> anyhow::Result<AmqpConfig> {
    let url = match &settings.amqp_url {
        Some(url) => url.clone(),
        None => Broker::connect(settings).await?.amqp_url(settings).await?,
    };
    Ok(AmqpConfig::new(url, settings))
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
        &amqp_config(settings).await?,
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
