//! Talking to a RabbitMQ node: the management HTTP API, `rabbitmqctl`, and
//! the layout of its data directory.

pub mod control;
pub mod ctl;
pub mod datadir;
pub mod definitions;
pub mod dist;
pub mod exprs;
pub mod http;
pub mod queue_type;
pub mod recovery;
pub mod upgrade;
pub mod version;

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::error::{data_dir as data_dir_error, usage};
use crate::settings::Settings;
use control::{Control, Probe, Transport, default_node_name};
use ctl::{Ctl, QueueStatus};
use http::{HttpFailureKind, Management, NodeIdentity, http_failure_kind};

/// A reachable node: its identity, and how to talk to it.
#[derive(Debug)]
pub struct Broker {
    /// The management API.
    pub http: Management,
    /// rabbitmqctl against this node.
    pub ctl: Ctl,
    /// Queries, stop and start: over Erlang distribution, or rabbitmqctl.
    pub control: Control,
    /// Name and versions.
    pub identity: NodeIdentity,
    /// False when the management API did not answer (rabbitmqctl is used instead).
    pub via_http: bool,
    /// The data directory the node named when it was probed.
    probed_data_dir: Option<PathBuf>,
}

/// What an import of definitions did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// The definitions were merged into the node's.
    Merged,
    /// The node already held every one of them unchanged; nothing was sent.
    AlreadyHeld,
}

/// Whether the RabbitMQ application of a reachable node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppState {
    /// It runs.
    Running,
    /// Only the Erlang VM answers; `watchdog` if a backup's pause watchdog
    /// waits on the node (the backup was killed while the broker was paused).
    Stopped {
        /// A backup's pause watchdog waits.
        watchdog: bool,
    },
}

/// The management API client and rabbitmqctl, as configured (no I/O).
fn clients(settings: &Settings) -> anyhow::Result<(Management, Ctl)> {
    let http = Management::new(
        &settings.management_url,
        &settings.username,
        settings.password.expose(),
    )?;
    let ctl = Ctl::new(settings.rabbitmqctl.clone(), settings.node.clone());
    Ok((http, ctl))
}

/// Connects to `node` over Erlang distribution, or settles for rabbitmqctl.
async fn control(settings: &Settings, ctl: Ctl, node: &str) -> Control {
    Control::new(ctl, node, attempt(settings, node).await)
}

/// Tries Erlang distribution to `node` (no log: the caller decides).
async fn attempt(settings: &Settings, node: &str) -> anyhow::Result<dist::Distribution> {
    control::attempt(
        node,
        settings.erlang_cookie.as_ref(),
        settings.home.as_deref(),
    )
    .await
}

impl Broker {
    /// Identifies the running node through the management API, or through
    /// the node itself when the API does not answer. Rejected credentials
    /// are an error, never a silent fallback.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Broker> {
        match Broker::reach(settings).await? {
            (broker, AppState::Running) => Ok(broker),
            (_, AppState::Stopped { .. }) => Err(anyhow::anyhow!(
                "the RabbitMQ application is stopped (its Erlang VM answers, the broker does not). \
                 If a rabbitmq-backup restore was interrupted, finish it with `rabbitmq-backup restore --resume`; \
                 an interrupted backup's broker starts itself again within its --pause-watchdog time; \
                 otherwise start it with `rabbitmqctl start_app`"
            )),
        }
    }

    /// A node whose broker may be stopped (a restore to finish, a backup
    /// killed in its pause): the management API when it answers, else the
    /// node's own probe, which also says whether the broker runs. The
    /// Erlang distribution connection (to `--node`, else rabbitmqctl's
    /// default node) is made while the API answers.
    pub async fn reach(settings: &Settings) -> anyhow::Result<(Broker, AppState)> {
        let (http, ctl) = clients(settings)?;
        let guess = settings.node.clone().unwrap_or_else(default_node_name);
        let (answer, early) = tokio::join!(http.identity(), attempt(settings, &guess));
        let unreachable = match answer {
            Ok(identity) => {
                // The API may name another node than the guess: that one is
                // asked (a named --node that differs is refused below).
                let control = if identity.name == guess || settings.node.is_some() {
                    Control::new(ctl.clone(), &guess, early)
                } else {
                    drop(early);
                    control(settings, ctl.clone(), &identity.name).await
                };
                let broker = Broker {
                    http,
                    ctl,
                    control,
                    identity,
                    via_http: true,
                    probed_data_dir: None,
                };
                broker.check_names(settings)?;
                return Ok((broker, AppState::Running));
            }
            Err(e) if http_failure_kind(&e) == Some(HttpFailureKind::Unreachable) => e,
            Err(e) => return Err(e),
        };
        let control = Control::new(ctl.clone(), &guess, early);
        let Probe {
            node,
            rabbitmq,
            erlang,
            running,
            data_dir,
            watchdog,
        } = control.probe().await.map_err(|node_err| {
            if ctl::is_cookie_mismatch(&node_err) {
                return node_err.context(format!("the management API did not answer ({unreachable:#})"));
            }
            anyhow::anyhow!(
                "cannot reach the RabbitMQ node: {unreachable:#}; and {node_err:#}. Check that the node runs, and --management-url, --node and --rabbitmqctl"
            )
        })?;
        if running {
            // A running broker whose API does not answer: no management plugin.
            tracing::warn!("{unreachable:#}; asking the node itself instead");
        }
        let broker = Broker {
            http,
            ctl,
            control,
            identity: NodeIdentity {
                name: node,
                rabbitmq_version: rabbitmq,
                erlang_version: erlang,
            },
            via_http: false,
            probed_data_dir: Some(data_dir),
        };
        broker.check_names(settings)?;
        let state = if running {
            AppState::Running
        } else {
            AppState::Stopped { watchdog }
        };
        Ok((broker, state))
    }

    /// This broker, running. One stopped by a backup killed during its
    /// pause (its watchdog waits) is started again when `may_start` — call
    /// only holding the node lock, which proves that backup dead — as the
    /// watchdog would do later; any other stopped broker is refused.
    pub async fn running(
        self,
        state: AppState,
        settings: &Settings,
        may_start: bool,
    ) -> anyhow::Result<Broker> {
        let name = self.identity.name.clone();
        match state {
            AppState::Running => Ok(self),
            AppState::Stopped { watchdog: true } if may_start => {
                tracing::warn!(
                    "the broker on {name} was stopped by a backup that was killed during its pause; starting it again"
                );
                self.control.start_app().await?;
                Broker::connect(settings).await
            }
            AppState::Stopped { watchdog } => Err(crate::error::refused(format!(
                "the RabbitMQ application on {name} is stopped (its Erlang VM answers, the broker does not){}; start it with `rabbitmqctl start_app`",
                if watchdog {
                    ": a backup killed during its pause stopped it, and its watchdog starts it again"
                } else {
                    ". If a rabbitmq-backup restore was interrupted, finish it with `rabbitmq-backup restore --resume`"
                }
            ))),
        }
    }

    fn check_names(&self, settings: &Settings) -> anyhow::Result<()> {
        if let Some(node) = &settings.node
            && node != &self.identity.name
        {
            return Err(usage(format!(
                "the management API at {} belongs to node {}, but --node names {node}: point both at the same node",
                self.http.url(),
                self.identity.name
            )));
        }
        crate::repo::check_node_name(&self.identity.name)
    }

    /// Whether the management API is the cheaper way to ask: it answers
    /// and each question to the node would boot a rabbitmqctl VM.
    fn http_first(&self) -> bool {
        self.via_http && self.control.transport() == Transport::Rabbitmqctl
    }

    /// Every member of the node's cluster (the node alone when it is not
    /// clustered), sorted.
    pub async fn cluster_members(&self) -> anyhow::Result<Vec<String>> {
        if self.http_first()
            && let Some(nodes) = self.http.cluster_nodes().await
        {
            return Ok(nodes);
        }
        Ok(self.control.cluster().await?.members)
    }

    /// The members of the node's cluster whose RabbitMQ application runs,
    /// sorted.
    pub async fn running_members(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.control.cluster().await?.running)
    }

    /// The name that groups the snapshots of the cluster whose `members`
    /// these are: the name set with `rabbitmqctl set_cluster_name`, shared
    /// by every member. Without one each member reports a name of its own,
    /// so the first member by name stands in, and a warning says so.
    pub async fn cluster_name(&self, members: &[String]) -> (String, Option<String>) {
        if let Ok(cluster) = self.control.cluster().await
            && let Some(name) = cluster.name.filter(|n| !n.is_empty())
        {
            return (name, None);
        }
        let first = members.first().cloned().unwrap_or_default();
        let warning = format!(
            "the cluster has no name set, so its snapshots are grouped under its first member's name, {first}, which changes if that member leaves: set one with `rabbitmqctl set_cluster_name NAME`"
        );
        (first, Some(warning))
    }

    /// The AMQP URL to reach this node: `--amqp-url` if given, else the
    /// node's own AMQP listener (asked of the management API, or of the
    /// node), reached at the management API's host when it listens on
    /// every address.
    pub async fn amqp_url(&self, settings: &Settings) -> anyhow::Result<String> {
        if let Some(url) = &settings.amqp_url {
            return Ok(url.clone());
        }
        let listener = match self.http_first() {
            true => self.http.amqp_listener(&self.identity.name).await,
            false => None,
        };
        let listener = match listener {
            Some(l) => Some(l),
            None => self.node_amqp_listener().await,
        };
        // The management API answers while the broker still boots, and the
        // listeners start last: once the boot has settled, ask again.
        let listener = match listener {
            Some(l) => Some(l),
            None => {
                tracing::info!(
                    "node {} has no AMQP listener yet; waiting for its boot to finish",
                    self.identity.name
                );
                match self.control.probe().await {
                    Ok(probe) if probe.running => self.node_amqp_listener().await,
                    _ => None,
                }
            }
        };
        let Some((protocol, ip, port)) = listener else {
            return Err(anyhow::anyhow!(
                "node {} has no AMQP listener that rabbitmq-backup can see; pass --amqp-url (RABBITMQ_AMQP_URL)",
                self.identity.name
            ));
        };
        let scheme = if protocol == "amqp/ssl" {
            "amqps"
        } else {
            "amqp"
        };
        let host = match ip.as_str() {
            "::" | "0.0.0.0" => settings.management_host.clone(),
            ip if ip.contains(':') => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        Ok(format!("{scheme}://{host}:{port}/"))
    }

    /// The node's own answer on its AMQP listener; a failure to ask is
    /// logged and taken as none.
    async fn node_amqp_listener(&self) -> Option<(String, String, u16)> {
        self.control.amqp_listener().await.unwrap_or_else(|e| {
            tracing::warn!(
                "cannot ask node {} for its AMQP listener: {e:#}",
                self.identity.name
            );
            None
        })
    }

    /// The data directory: `override_dir` or the node's answer; checked to
    /// exist and be readable, with `msg_stores` inside.
    pub async fn data_dir(&self, override_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
        // The node itself answers exactly (and cheaply over distribution);
        // the management API only when its node record has `db_dir` (not
        // always right after boot).
        let from_api = match (override_dir, &self.probed_data_dir) {
            (Some(_), _) => None,
            (None, Some(probed)) => Some(probed.clone()),
            (None, None) if self.http_first() => self.http.data_dir(&self.identity.name).await,
            (None, None) => None,
        };
        let dir = match (override_dir, from_api) {
            (Some(d), _) => d.to_path_buf(),
            (None, Some(d)) => d,
            (None, None) => self.control.data_dir().await.map_err(|e| {
                // --data-dir does not help a CLI that cannot authenticate.
                if ctl::is_cookie_mismatch(&e) {
                    return e;
                }
                data_dir_error(format!(
                    "cannot ask node {} for its data directory: {e:#}; pass --data-dir (RABBITMQ_DATA_DIR)",
                    self.identity.name
                ))
            })?,
        };
        let msg_stores = dir.join("msg_stores");
        std::fs::read_dir(&msg_stores).map_err(|e| {
            data_dir_error(format!(
                "cannot read {}: {e}; is {} the data directory of node {}? Run as the user the broker runs as (or root), or pass --data-dir",
                msg_stores.display(),
                dir.display(),
                self.identity.name
            ))
        })?;
        Ok(dir)
    }

    /// Exported definitions (management API, or rabbitmqctl without it).
    pub async fn export_definitions(&self) -> anyhow::Result<Vec<u8>> {
        if self.via_http {
            self.http.export_definitions().await
        } else {
            self.ctl
                .export_definitions()
                .await
                .context("cannot export definitions")
        }
    }

    /// Imports definitions (management API, or rabbitmqctl without it),
    /// unless the node already holds every object they define unchanged:
    /// RabbitMQ's import takes 0.2-0.6 s even when it changes nothing, and
    /// a restore onto the node it was taken from usually finds its
    /// definitions in place (one export, ~10 ms, tells).
    pub async fn import_definitions(
        &self,
        bytes: &[u8],
        scratch: &Path,
    ) -> anyhow::Result<Imported> {
        // Without the management API an export boots rabbitmqctl: no gain.
        let held = match self.via_http {
            true => Some(self.http.export_definitions().await),
            false => None,
        };
        match held {
            Some(Ok(held)) if definitions::already_held(bytes, &held) => {
                tracing::info!(
                    "the node already holds every definition of the snapshot unchanged: nothing to import"
                );
                return Ok(Imported::AlreadyHeld);
            }
            Some(Err(e)) => tracing::debug!("importing without comparing first: {e:#}"),
            _ => {}
        }
        self.import_all_definitions(bytes, scratch)
            .await
            .map(|()| Imported::Merged)
    }

    async fn import_all_definitions(&self, bytes: &[u8], scratch: &Path) -> anyhow::Result<()> {
        if self.via_http {
            return self.http.import_definitions(bytes).await;
        }
        let file = scratch.join("definitions.json");
        std::fs::write(&file, bytes)?;
        let result = self.ctl.import_definitions(&file).await;
        let _ = std::fs::remove_file(&file);
        result.context("cannot import definitions")
    }

    /// The queues of the given vhosts whose messages live on this node
    /// (classic: its home node; quorum and stream: its leader), with exact
    /// counts (quorum queues and streams asked themselves: their listed
    /// counts lag by seconds). On a cluster member, counts are per node,
    /// never cluster-wide.
    pub async fn queues(&self, vhosts: &[String]) -> anyhow::Result<Vec<QueueStatus>> {
        Ok(self
            .control
            .queues(vhosts)
            .await?
            .into_iter()
            .filter(|(_, home)| home.as_deref() == Some(self.identity.name.as_str()))
            .map(|(q, _)| q)
            .collect())
    }

    /// The queues of the given vhosts whose messages live on other cluster
    /// members, with the member and the count it reports.
    pub async fn queues_elsewhere(
        &self,
        vhosts: &[String],
    ) -> anyhow::Result<Vec<(QueueStatus, String)>> {
        Ok(self
            .control
            .queues(vhosts)
            .await?
            .into_iter()
            .filter_map(|(q, home)| {
                let home = home?;
                (home != self.identity.name).then_some((q, home))
            })
            .collect())
    }
}
