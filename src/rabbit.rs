//! Talking to a RabbitMQ node: the management HTTP API, `rabbitmqctl`, and
//! the layout of its data directory.

pub mod ctl;
pub mod datadir;
pub mod definitions;
pub mod http;
pub mod queue_type;
pub mod recovery;
pub mod upgrade;
pub mod version;

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::error::{data_dir as data_dir_error, usage};
use crate::settings::Settings;
use ctl::{Ctl, Probe, QueueStatus};
use http::{HttpFailureKind, Management, NodeIdentity, http_failure_kind};

/// A reachable node: its identity, and how to talk to it.
#[derive(Debug)]
pub struct Broker {
    /// The management API.
    pub http: Management,
    /// rabbitmqctl against this node.
    pub ctl: Ctl,
    /// Name and versions.
    pub identity: NodeIdentity,
    /// False when the management API did not answer (rabbitmqctl is used instead).
    pub via_http: bool,
    /// The data directory the node named when it was probed.
    probed_data_dir: Option<PathBuf>,
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

impl Broker {
    /// Identifies the node through the management API, or through
    /// rabbitmqctl when the API does not answer. Rejected credentials are an
    /// error, never a silent fallback.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Broker> {
        let (http, ctl) = clients(settings)?;
        let (identity, via_http) = match http.identity().await {
            Ok(identity) => (identity, true),
            Err(e) if http_failure_kind(&e) == Some(HttpFailureKind::Unreachable) => {
                if let Ok(false) = ctl.app_running().await {
                    return Err(anyhow::anyhow!(
                        "the RabbitMQ application is stopped (its Erlang VM answers, the broker does not). \
                         If a rabbitmq-backup restore was interrupted, finish it with `rabbitmq-backup restore --resume`; \
                         an interrupted backup's broker starts itself again within its --pause-watchdog time; \
                         otherwise start it with `rabbitmqctl start_app`"
                    ));
                }
                tracing::warn!("{e:#}; using rabbitmqctl instead");
                let (name, rabbitmq_version, erlang_version) = ctl.identity().await.map_err(|ctl_err| {
                    if ctl::is_cookie_mismatch(&ctl_err) {
                        return ctl_err.context(format!("the management API did not answer ({e:#})"));
                    }
                    anyhow::anyhow!(
                        "cannot reach the RabbitMQ node: {e:#}; and {ctl_err:#}. Check that the node is running, and --management-url, --node and --rabbitmqctl"
                    )
                })?;
                (
                    NodeIdentity {
                        name,
                        rabbitmq_version,
                        erlang_version,
                    },
                    false,
                )
            }
            Err(e) => return Err(e),
        };
        if let Some(node) = &settings.node
            && node != &identity.name
        {
            return Err(usage(format!(
                "the management API at {} belongs to node {}, but --node names {node}: point both at the same node",
                http.url(),
                identity.name
            )));
        }
        crate::repo::check_node_name(&identity.name)?;
        Ok(Broker {
            http,
            ctl,
            identity,
            via_http,
            probed_data_dir: None,
        })
    }

    /// A node whose broker may be stopped (a restore to finish, a backup
    /// killed in its pause): the management API when it answers, else
    /// rabbitmqctl's probe, which also says whether the broker runs.
    pub async fn reach(settings: &Settings) -> anyhow::Result<(Broker, AppState)> {
        let (http, ctl) = clients(settings)?;
        let unreachable = match http.identity().await {
            Ok(identity) => {
                let broker = Broker {
                    http,
                    ctl,
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
        let Probe {
            name,
            data_dir,
            running,
            watchdog,
        } = ctl.probe().await.map_err(|e| {
            anyhow::anyhow!("cannot reach the node's Erlang VM with rabbitmqctl: {e:#}; check that the node runs, and --node and --rabbitmqctl")
        })?;
        let identity = if running {
            // A running broker whose API does not answer: no management plugin.
            tracing::warn!("{unreachable:#}; using rabbitmqctl instead");
            let (name, rabbitmq_version, erlang_version) = ctl.identity().await?;
            NodeIdentity {
                name,
                rabbitmq_version,
                erlang_version,
            }
        } else {
            NodeIdentity {
                name,
                rabbitmq_version: "unknown".into(),
                erlang_version: "unknown".into(),
            }
        };
        let broker = Broker {
            http,
            ctl,
            identity,
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
                self.ctl.start_app().await?;
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

    /// Every member of the node's cluster (the node alone when it is not
    /// clustered), sorted.
    pub async fn cluster_members(&self) -> anyhow::Result<Vec<String>> {
        if self.via_http
            && let Some(nodes) = self.http.cluster_nodes().await
        {
            return Ok(nodes);
        }
        self.ctl.cluster_members().await
    }

    /// The name that groups the snapshots of the cluster whose `members`
    /// these are: the name set with `rabbitmqctl set_cluster_name`, shared
    /// by every member. Without one each member reports a name of its own,
    /// so the first member by name stands in, and a warning says so.
    pub async fn cluster_name(&self, members: &[String]) -> (String, Option<String>) {
        if let Ok(name) = self.ctl.cluster_name().await
            && !name.is_empty()
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
        let listener = match self.via_http {
            true => self.http.amqp_listener(&self.identity.name).await,
            false => None,
        };
        let listener = match listener {
            Some(l) => Some(l),
            None => self.ctl.amqp_listener().await.unwrap_or_else(|e| {
                tracing::warn!(
                    "cannot ask node {} for its AMQP listener: {e:#}",
                    self.identity.name
                );
                None
            }),
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

    /// The data directory: `override_dir` or the node's answer; checked to
    /// exist and be readable, with `msg_stores` inside.
    pub async fn data_dir(&self, override_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
        let from_api = match (override_dir, self.via_http) {
            (None, true) => self.http.data_dir(&self.identity.name).await,
            (None, false) => self.probed_data_dir.clone(),
            _ => None,
        };
        let dir = match (override_dir, from_api) {
            (Some(d), _) => d.to_path_buf(),
            (None, Some(d)) => d,
            (None, None) => self.ctl.data_dir().await.map_err(|e| {
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

    /// Imports definitions (management API, or rabbitmqctl without it).
    pub async fn import_definitions(&self, bytes: &[u8], scratch: &Path) -> anyhow::Result<()> {
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
    /// counts, asked in parallel. On a cluster member, counts are per node,
    /// never cluster-wide. `non_classic` says whether quorum queues or
    /// streams may exist: their exact counts need one more query.
    pub async fn queues(
        &self,
        vhosts: &[String],
        non_classic: bool,
    ) -> anyhow::Result<Vec<QueueStatus>> {
        let exact = async {
            if non_classic {
                self.ctl.non_classic_counts().await
            } else {
                Ok(Vec::new())
            }
        };
        let (lists, exact) = tokio::join!(
            futures::future::try_join_all(vhosts.iter().map(|v| self.ctl.list_queues(v, true))),
            exact
        );
        let mut all: Vec<QueueStatus> = lists?.into_iter().flatten().collect();
        match exact {
            Ok(exact) => {
                for q in all.iter_mut().filter(|q| !q.queue_type.is_classic()) {
                    let found = exact.iter().find(|(v, n, _)| *v == q.vhost && *n == q.name);
                    if let Some((_, _, count)) = found {
                        q.messages = *count;
                    }
                }
            }
            Err(e) => {
                tracing::warn!("quorum and stream message counts may lag by a few seconds: {e:#}")
            }
        }
        all.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        Ok(all)
    }

    /// The queues of the given vhosts whose messages live on other cluster
    /// members, with the member and the count it reports.
    pub async fn queues_elsewhere(
        &self,
        vhosts: &[String],
    ) -> anyhow::Result<Vec<(QueueStatus, String)>> {
        let (all, homes) = tokio::try_join!(
            futures::future::try_join_all(vhosts.iter().map(|v| self.ctl.list_queues(v, false))),
            self.ctl.queue_homes()
        )?;
        Ok(all
            .into_iter()
            .flatten()
            .filter_map(|q| {
                let home = homes
                    .iter()
                    .find(|(v, n, _)| *v == q.vhost && *n == q.name)
                    .map(|(_, _, node)| node.clone())?;
                (home != self.identity.name).then_some((q, home))
            })
            .collect())
    }
}
