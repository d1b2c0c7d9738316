//! The real node behind the state machine: RabbitMQ through the management
//! API and `rabbitmqctl` (`crate::rabbit`).

use std::path::Path;

use super::check;
use super::machine::{ExcludeSpec, Journal, Node};
use super::report::{ExclusionOutcome, QueueOutcome};
use crate::archive::manifest::Manifest;
use crate::exclude::Matcher;
use crate::exclude::mover::{self, AmqpConfig, Destination};
use crate::rabbit::{Broker, Imported};
use crate::settings::Settings;

/// A RabbitMQ node.
pub struct BrokerNode<'a> {
    /// The node.
    pub broker: &'a Broker,
    /// For the exclusion's AMQP connection.
    pub settings: &'a Settings,
}

impl Node for BrokerNode<'_> {
    async fn import(&self, definitions: &[u8], scratch: &Path) -> anyhow::Result<Imported> {
        self.broker.import_definitions(definitions, scratch).await
    }

    async fn stop(&self) -> anyhow::Result<()> {
        self.broker.control.stop_app(None).await
    }

    async fn start(&self) -> anyhow::Result<()> {
        self.broker.control.start_app().await.map(drop)
    }

    async fn check(&self, manifest: &Manifest) -> anyhow::Result<(Vec<QueueOutcome>, Vec<String>)> {
        check::counts(self.broker, manifest).await
    }

    async fn exclude(
        &self,
        manifest: &Manifest,
        spec: &ExcludeSpec,
    ) -> anyhow::Result<Vec<ExclusionOutcome>> {
        let matcher = Matcher::new(&spec.globs)?;
        let url = self.broker.amqp_url(self.settings).await?;
        let config = AmqpConfig::new(url, self.settings);
        let mut outcomes = Vec::new();
        for q in manifest
            .queues
            .iter()
            .filter(|q| q.in_files() && q.messages > 0)
        {
            let destination = if spec.drop {
                Destination::Drop
            } else {
                Destination::Queue(mover::excluded_queue_name(&q.name))
            };
            let outcome = mover::exclude(&config, &q.vhost, &q.name, &matcher, &destination)
                .await
                .map_err(|e| {
                    e.context(format!(
                        "excluding messages from {:?} in vhost {:?} failed",
                        q.name, q.vhost
                    ))
                })?;
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn replay(
        &self,
        area: &Path,
        manifest: &Manifest,
        journal: &Journal,
    ) -> anyhow::Result<(Vec<QueueOutcome>, Vec<String>)> {
        super::replay::run(self.broker, self.settings, area, manifest, journal).await
    }
}
