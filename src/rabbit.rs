//! Talking to a RabbitMQ node: the management HTTP API, `rabbitmqctl`, and
//! the layout of its data directory.

pub mod ctl;
pub mod datadir;
pub mod definitions;
pub mod http;
pub mod upgrade;
pub mod version;

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::error::{data_dir as data_dir_error, usage};
use crate::settings::Settings;
use ctl::{Ctl, QueueStatus};
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
        })
    }

    /// A node whose broker may be stopped (to finish an interrupted restore):
    /// only rabbitmqctl is used, and the versions are not known.
    pub async fn stopped(settings: &Settings) -> anyhow::Result<Broker> {
        let (http, ctl) = clients(settings)?;
        let name = ctl.node_name().await.map_err(|e| {
            anyhow::anyhow!("cannot reach the node's Erlang VM with rabbitmqctl: {e:#}; check --node and --rabbitmqctl")
        })?;
        crate::repo::check_node_name(&name)?;
        Ok(Broker {
            http,
            ctl,
            identity: NodeIdentity {
                name,
                rabbitmq_version: "unknown".into(),
                erlang_version: "unknown".into(),
            },
            via_http: false,
        })
    }

    /// The data directory: `override_dir` or the node's answer; checked to
    /// exist and be readable, with `msg_stores` inside.
    pub async fn data_dir(&self, override_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
        let from_api = match (override_dir, self.via_http) {
            (None, true) => self.http.data_dir(&self.identity.name).await,
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

    /// Every queue of the given vhosts with exact counts (in parallel).
    /// `non_classic` says whether quorum queues or streams may exist: their
    /// exact counts need one more query.
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
            futures::future::try_join_all(vhosts.iter().map(|v| self.ctl.list_queues(v))),
            exact
        );
        let mut all: Vec<QueueStatus> = lists?.into_iter().flatten().collect();
        match exact {
            Ok(exact) => {
                for q in all.iter_mut().filter(|q| q.queue_type != "classic") {
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
}
