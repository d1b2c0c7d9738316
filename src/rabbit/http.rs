//! The management plugin's HTTP API: the few calls the tool makes, on
//! hyper with hyper-rustls (the stack the S3 client already links).

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

/// How long connecting may take before the endpoint counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one call may take: exporting or importing a large broker's
/// definitions takes a while.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

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
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
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
        let uri: http::Uri = base
            .parse()
            .map_err(|e| crate::error::usage(format!("invalid --management-url {url:?}: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(crate::error::usage(format!(
                "invalid --management-url {url:?}: give http://host:port or https://host:port"
            )));
        }
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(crate::tls::provider())
            .map_err(|e| {
                crate::error::usage(format!(
                    "cannot load the system's TLS root certificates: {e}"
                ))
            })?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
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

    /// Sends `method` to `/api/<path>` with an optional JSON body; any
    /// answer but a success is a classified [`HttpFailure`]. Returns the body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
        what: &str,
    ) -> anyhow::Result<Bytes> {
        let credentials = format!("{}:{}", self.username, self.password.expose());
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}/api/{path}", self.base))
            .header(
                header::AUTHORIZATION,
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(credentials)
                ),
            );
        if json.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(json.unwrap_or_default())))
            .map_err(|e| {
                self.failure(
                    HttpFailureKind::Other,
                    format!("cannot build a request to {}: {e}", self.base),
                )
            })?;
        let unreachable = |reason: String| {
            self.failure(
                HttpFailureKind::Unreachable,
                format!("cannot reach the management API at {}: {reason}", self.base),
            )
        };
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(error_chain(&e)))?;
            let status = response.status();
            let body = response.into_body().collect().await.map_err(|e| {
                self.failure(
                    HttpFailureKind::Other,
                    format!(
                        "the answer of {} to {what} was cut off: {}",
                        self.base,
                        error_chain(&e)
                    ),
                )
            })?;
            Ok::<_, anyhow::Error>((status, body.to_bytes()))
        };
        let (status, body) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                unreachable(format!(
                    "no answer to {what} within {} s",
                    CALL_TIMEOUT.as_secs()
                ))
            })??;
        self.judge(status, body, what)
    }

    /// A success's body, or the failure the status stands for.
    fn judge(&self, status: StatusCode, body: Bytes, what: &str) -> anyhow::Result<Bytes> {
        if status.is_success() {
            return Ok(body);
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
                let reason = serde_json::from_slice::<serde_json::Value>(&body)
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

    /// Node name and versions (`GET /api/overview`).
    pub async fn identity(&self) -> anyhow::Result<NodeIdentity> {
        let what = "read the overview";
        let body = self.call(Method::GET, "overview", None, what).await?;
        let o: Overview = serde_json::from_slice(&body).map_err(|e| {
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
        let body = self.call(Method::GET, path, None, what).await.ok()?;
        serde_json::from_slice(&body).ok()
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
        let body = self.call(Method::GET, "definitions", None, what).await?;
        Ok(body.to_vec())
    }

    /// Imports (merges) definitions (`POST /api/definitions`).
    pub async fn import_definitions(&self, definitions: &[u8]) -> anyhow::Result<()> {
        self.call(
            Method::POST,
            "definitions",
            Some(definitions.to_vec()),
            "import definitions",
        )
        .await
        .map(drop)
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
