//! The management plugin's HTTP API: the four calls the tool makes, on
//! reqwest (the same hyper/rustls stack as the S3 client).

use std::fmt;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

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
    client: reqwest::Client,
    password: crate::settings::Secret,
    base: String,
    username: String,
}

impl fmt::Debug for Management {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password.
        f.debug_struct("Management")
            .field("base", &self.base)
            .field("username", &self.username)
            .finish()
    }
}

/// A path segment keeps RFC 3986's unreserved characters and `@` (node names).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'@');

/// The fields of `GET /api/overview` the tool reads.
#[derive(Deserialize)]
struct Overview {
    node: String,
    rabbitmq_version: String,
    erlang_version: String,
}

impl Management {
    /// `url` is the management base URL (`http://host:15672`, `/api` optional).
    pub fn new(url: &str, username: &str, password: &str) -> anyhow::Result<Management> {
        let base = url
            .trim_end_matches('/')
            .trim_end_matches("/api")
            .to_string();
        reqwest::Url::parse(&base)
            .map_err(|e| crate::error::usage(format!("invalid --management-url {url:?}: {e}")))?;
        crate::tls::install_default_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Exporting or importing a large broker's definitions takes a while.
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| crate::error::usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(Management {
            client,
            password: crate::settings::Secret::new(password),
            base,
            username: username.to_string(),
        })
    }

    /// The base URL, for messages.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Sends a request to `/api/<path>`; any answer but a success is a
    /// classified [`HttpFailure`].
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let response = request
            .basic_auth(&self.username, Some(self.password.expose()))
            .send()
            .await
            .map_err(|e| {
                self.failure(
                    HttpFailureKind::Unreachable,
                    format!(
                        "cannot reach the management API at {}: {}",
                        self.base,
                        error_chain(&e.without_url())
                    ),
                )
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let (kind, message) = match status.as_u16() {
            401 => (
                HttpFailureKind::Unauthorized,
                crate::error::rejected_credentials(
                    &format!("the management API at {}", self.base),
                    &self.username,
                    None,
                )
                .to_string(),
            ),
            403 => (
                HttpFailureKind::Unauthorized,
                format!(
                    "user {:?} may not {what} through the management API at {}: it needs the administrator tag",
                    self.username, self.base
                ),
            ),
            404 => (
                HttpFailureKind::Unreachable,
                format!("{} does not serve the management API (404)", self.base),
            ),
            _ => {
                let body = response.text().await.unwrap_or_default();
                let reason = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_string))
                    .unwrap_or_default();
                (
                    HttpFailureKind::Other,
                    format!(
                        "the management API at {} failed to {what}: HTTP {status} {reason}",
                        self.base
                    )
                    .trim_end()
                    .to_string(),
                )
            }
        };
        Err(self.failure(kind, message))
    }

    fn failure(&self, kind: HttpFailureKind, message: String) -> anyhow::Error {
        anyhow::Error::new(HttpFailure { kind, message })
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/{path}", self.base)
    }

    /// Node name and versions (`GET /api/overview`).
    pub async fn identity(&self) -> anyhow::Result<NodeIdentity> {
        let what = "read the overview";
        let response = self
            .call(self.client.get(self.api("overview")), what)
            .await?;
        let o: Overview = response.json().await.map_err(|e| {
            self.failure(
                HttpFailureKind::Other,
                format!(
                    "the management API at {} answered the overview with something unexpected: {e}",
                    self.base
                ),
            )
        })?;
        Ok(NodeIdentity {
            name: o.node,
            rabbitmq_version: o.rabbitmq_version,
            erlang_version: o.erlang_version,
        })
    }

    /// `GET /api/<path>` as JSON, for fields read opportunistically; `None`
    /// on any failure (callers have another way).
    async fn get_json(&self, path: &str, what: &str) -> Option<serde_json::Value> {
        let response = self
            .call(self.client.get(self.api(path)), what)
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// The node's data directory (`db_dir` of `GET /api/nodes/<node>`), if
    /// the API reports it: a millisecond call instead of a CLI start.
    pub async fn data_dir(&self, node: &str) -> Option<std::path::PathBuf> {
        let path = format!("nodes/{}", utf8_percent_encode(node, SEGMENT));
        let body = self.get_json(&path, "read the node").await?;
        body.get("db_dir")?.as_str().map(std::path::PathBuf::from)
    }

    /// The cluster's nodes (`GET /api/nodes`), sorted.
    pub async fn cluster_nodes(&self) -> Option<Vec<String>> {
        let body = self.get_json("nodes", "list the nodes").await?;
        let mut nodes: Vec<String> = body
            .as_array()?
            .iter()
            .filter_map(|n| n.get("name")?.as_str().map(str::to_string))
            .collect();
        nodes.sort();
        (!nodes.is_empty()).then_some(nodes)
    }

    /// The cluster's name (`cluster_name` of `GET /api/overview`).
    pub async fn cluster_name(&self) -> Option<String> {
        let body = self.get_json("overview", "read the overview").await?;
        body.get("cluster_name")?.as_str().map(str::to_string)
    }

    /// `node`'s AMQP listener from `GET /api/overview`: (`amqp` or
    /// `amqp/ssl`, address, port), plain AMQP preferred.
    pub async fn amqp_listener(&self, node: &str) -> Option<(String, String, u16)> {
        let body = self.get_json("overview", "read the overview").await?;
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
        let what = "export definitions";
        let response = self
            .call(self.client.get(self.api("definitions")), what)
            .await?;
        let body = response.bytes().await.map_err(|e| {
            self.failure(
                HttpFailureKind::Other,
                format!(
                    "the definitions from {} were cut off: {}",
                    self.base,
                    error_chain(&e.without_url())
                ),
            )
        })?;
        Ok(body.to_vec())
    }

    /// Imports (merges) definitions (`POST /api/definitions`).
    pub async fn import_definitions(&self, definitions: &[u8]) -> anyhow::Result<()> {
        let request = self
            .client
            .post(self.api("definitions"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(definitions.to_vec());
        self.call(request, "import definitions").await.map(drop)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_one_path_segment() {
        let encoded = utf8_percent_encode("rabbit@host-1.example/x y", SEGMENT).to_string();
        assert_eq!(encoded, "rabbit@host-1.example%2Fx%20y");
    }

    #[test]
    fn a_bad_base_url_is_a_usage_error() {
        let err = Management::new("not a url", "u", "p").unwrap_err();
        assert_eq!(
            crate::error::kind_of(&err),
            crate::error::Kind::Usage,
            "{err}"
        );
        let ok = Management::new("http://127.0.0.1:15672/api/", "u", "secret-9").unwrap();
        assert_eq!(ok.url(), "http://127.0.0.1:15672");
        assert!(!format!("{ok:?}").contains("secret-9"));
    }
}
