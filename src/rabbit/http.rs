//! The management plugin's HTTP API, through `rabbitmq_http_client`.

use std::fmt;
use std::time::Duration;

use rabbitmq_http_client::api::Client;
use rabbitmq_http_client::error::{Error as ApiError, HttpClientError};

/// Why a management API call failed, as far as callers need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpFailureKind {
    /// Nothing answered (no plugin, wrong port, node down): fall back to rabbitmqctl.
    Unreachable,
    /// The credentials were rejected: never fall back silently.
    Unauthorized,
    /// Anything else.
    Other,
}

/// A management API failure with an operator-facing message.
#[derive(Debug)]
pub struct HttpFailure {
    /// The class of failure.
    pub kind: HttpFailureKind,
    /// Message naming the endpoint and what to do (never the password).
    pub message: String,
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpFailure {}

/// Node name and versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// Node name (`rabbit@host`).
    pub name: String,
    /// RabbitMQ version.
    pub rabbitmq_version: String,
    /// Erlang/OTP version.
    pub erlang_version: String,
}

/// A management API endpoint with credentials.
pub struct Management {
    client: Client<String, String, String>,
    /// For the few fields the typed client does not model (`db_dir`).
    raw: reqwest::Client,
    password: crate::settings::Secret,
    base: String,
    username: String,
}

impl fmt::Debug for Management {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client holds the password: never print it.
        f.debug_struct("Management")
            .field("base", &self.base)
            .field("username", &self.username)
            .finish()
    }
}

impl Management {
    /// `url` is the management base URL (`http://host:15672`, `/api` optional).
    pub fn new(url: &str, username: &str, password: &str) -> anyhow::Result<Management> {
        let base = url
            .trim_end_matches('/')
            .trim_end_matches("/api")
            .to_string();
        let endpoint = format!("{base}/api");
        let client = Client::<String, String, String>::builder()
            .with_endpoint(endpoint)
            .with_basic_auth_credentials(username.to_string(), password.to_string())
            .with_connect_timeout(Duration::from_secs(10))
            .with_request_timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| crate::error::usage(format!("invalid --management-url {url:?}: {e}")))?;
        let raw = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| crate::error::usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(Management {
            client,
            raw,
            password: crate::settings::Secret::new(password),
            base,
            username: username.to_string(),
        })
    }

    /// The base URL, for messages.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn failure(&self, what: &str, err: HttpClientError) -> anyhow::Error {
        let (kind, detail) = match &err {
            ApiError::ClientErrorResponse { status_code, .. } if status_code.as_u16() == 401 => (
                HttpFailureKind::Unauthorized,
                crate::error::rejected_credentials(
                    &format!("the management API at {}", self.base),
                    &self.username,
                    None,
                )
                .to_string(),
            ),
            ApiError::ClientErrorResponse { status_code, .. } if status_code.as_u16() == 403 => (
                HttpFailureKind::Unauthorized,
                format!(
                    "user {:?} may not {what} through the management API at {}: it needs the administrator tag",
                    self.username, self.base
                ),
            ),
            ApiError::RequestError { error, .. } => (
                HttpFailureKind::Unreachable,
                format!(
                    "cannot reach the management API at {}: {}",
                    self.base,
                    error_chain(error)
                ),
            ),
            ApiError::NotFound => (
                HttpFailureKind::Unreachable,
                format!("{} does not serve the management API (404)", self.base),
            ),
            other => (
                HttpFailureKind::Other,
                format!(
                    "the management API at {} failed to {what}: {other}",
                    self.base
                ),
            ),
        };
        anyhow::Error::new(HttpFailure {
            kind,
            message: detail,
        })
    }

    /// Node name and versions (`GET /api/overview`).
    pub async fn identity(&self) -> anyhow::Result<NodeIdentity> {
        let o = self
            .client
            .overview()
            .await
            .map_err(|e| self.failure("read the overview", e))?;
        Ok(NodeIdentity {
            name: o.node,
            rabbitmq_version: o.rabbitmq_version,
            erlang_version: o.erlang_version,
        })
    }

    /// `GET /api/<path>` as JSON, for the few fields the typed client does
    /// not model; `None` on any failure (callers have another way).
    async fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        let response = self
            .raw
            .get(format!("{}/api/{path}", self.base))
            .basic_auth(&self.username, Some(self.password.expose()))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// The node's data directory (`db_dir` of `GET /api/nodes/<node>`), if
    /// the API reports it: a millisecond call instead of a CLI start.
    pub async fn data_dir(&self, node: &str) -> Option<std::path::PathBuf> {
        let body = self.get_json(&format!("nodes/{}", urlencode(node))).await?;
        body.get("db_dir")?.as_str().map(std::path::PathBuf::from)
    }

    /// The cluster's nodes (`GET /api/nodes`), sorted.
    pub async fn cluster_nodes(&self) -> Option<Vec<String>> {
        let body = self.get_json("nodes").await?;
        let mut nodes: Vec<String> = body
            .as_array()?
            .iter()
            .filter_map(|n| n.get("name")?.as_str().map(str::to_string))
            .collect();
        nodes.sort();
        (!nodes.is_empty()).then_some(nodes)
    }

    /// `node`'s AMQP listener from `GET /api/overview`: (`amqp` or
    /// `amqp/ssl`, address, port), plain AMQP preferred.
    pub async fn amqp_listener(&self, node: &str) -> Option<(String, String, u16)> {
        let body = self.get_json("overview").await?;
        let mut found: Vec<(String, String, u16)> = body
            .get("listeners")?
            .as_array()?
            .iter()
            .filter(|l| l["node"].as_str() == Some(node))
            .filter_map(|l| {
                let protocol = l["protocol"].as_str()?;
                (protocol == "amqp" || protocol == "amqp/ssl").then(|| {
                    Some((
                        protocol.to_string(),
                        l["ip_address"].as_str()?.to_string(),
                        u16::try_from(l["port"].as_u64()?).ok()?,
                    ))
                })?
            })
            .collect();
        found.sort();
        found.into_iter().next()
    }

    /// All definitions as the node exports them (`GET /api/definitions`).
    pub async fn export_definitions(&self) -> anyhow::Result<Vec<u8>> {
        let text = self
            .client
            .export_cluster_wide_definitions_as_string()
            .await
            .map_err(|e| self.failure("export definitions", e))?;
        Ok(text.into_bytes())
    }

    /// Imports (merges) definitions (`POST /api/definitions`).
    pub async fn import_definitions(&self, definitions: &[u8]) -> anyhow::Result<()> {
        let value: serde_json::Value = serde_json::from_slice(definitions)?;
        self.client
            .import_cluster_wide_definitions(value)
            .await
            .map_err(|e| self.failure("import definitions", e))
    }
}

/// Percent-encodes a path segment.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = e.source();
    }
    out
}

/// The kind of an HTTP failure in an error chain.
pub fn http_failure_kind(err: &anyhow::Error) -> Option<HttpFailureKind> {
    err.chain()
        .find_map(|e| e.downcast_ref::<HttpFailure>())
        .map(|f| f.kind)
}
