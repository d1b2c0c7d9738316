//! S3-compatible object storage (AWS S3, MinIO, Garage, Ceph RGW) via aws-sdk-s3.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Region, RequestChecksumCalculation, ResponseChecksumValidation, StalledStreamProtectionConfig,
    retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumMode, Tag, Tagging};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use base64::Engine;
use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::lifecycle::Rule;
use super::storage::{ObjectMeta, Storage, StorageError, StorageErrorKind, Tags};

/// How bucket names are put into request URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Addressing {
    /// Path-style with a custom endpoint (MinIO, Garage), virtual-hosted on AWS.
    #[default]
    Auto,
    /// `https://endpoint/bucket/key`.
    Path,
    /// `https://bucket.endpoint/key`.
    Virtual,
}

/// Settings for opening a bucket; credentials come from the AWS chain.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Bucket name.
    pub bucket: String,
    /// URL addressing style.
    pub addressing: Addressing,
    /// How long to wait for a response before the attempt counts as failed.
    pub timeout: Duration,
}

/// A bucket on an S3-compatible server.
#[derive(Debug, Clone)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    endpoint: Option<String>,
    region: Option<String>,
}

/// The custom endpoint from the standard AWS variables, if any.
fn custom_endpoint() -> Option<String> {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// The HTTP client for S3 and the AWS credential providers: hyper 1 and
/// rustls with ring (see `crate::tls`), trusting the system's roots plus
/// the PEM bundle named by `AWS_CA_BUNDLE`.
pub fn http_client() -> anyhow::Result<SharedHttpClient> {
    let mut trust = TrustStore::empty().with_native_roots(true);
    if let Some(pem) = crate::tls::aws_ca_bundle()? {
        trust = trust.with_pem_certificate(pem);
    }
    let context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| crate::error::usage(format!("invalid TLS settings for S3: {e}")))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .tls_context(context)
        .build_https())
}

impl S3Storage {
    /// Builds a client from the standard AWS configuration (credential chain,
    /// `AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`,
    /// `AWS_CA_BUNDLE`).
    pub async fn open(options: &S3Options) -> anyhow::Result<S3Storage> {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client()?)
            .load()
            .await;
        S3Storage::with_config(&sdk, custom_endpoint(), options)
    }

    /// Builds a client from an SDK configuration made elsewhere (the shared
    /// storage tests give each server its own), with `endpoint` as the
    /// custom endpoint the configuration names, if any. Without an HTTP
    /// client in `sdk`, [`http_client`] is used.
    pub fn with_config(
        sdk: &aws_config::SdkConfig,
        endpoint: Option<String>,
        options: &S3Options,
    ) -> anyhow::Result<S3Storage> {
        let mut builder = aws_sdk_s3::config::Builder::from(sdk)
            // One retry policy for every backend: see `retry.rs`.
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10).min(options.timeout))
                    .read_timeout(options.timeout)
                    // A whole attempt: a chunk upload on a slow link may take a while.
                    .operation_attempt_timeout(options.timeout.max(Duration::from_secs(60)) * 5)
                    .build(),
            )
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(Duration::from_secs(20))
                    .build(),
            )
            // We send our own SHA-256 and verify downloads ourselves.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        let region = sdk.region().map(|r| r.to_string());
        if sdk.http_client().is_none() {
            builder = builder.http_client(http_client()?);
        }
        if sdk.region().is_none() {
            if endpoint.is_none() {
                anyhow::bail!(
                    "no AWS region is configured for bucket {}: set AWS_REGION (or AWS_ENDPOINT_URL_S3 for an S3-compatible server)",
                    options.bucket
                );
            }
            builder = builder.region(Region::new("us-east-1"));
        }
        let path_style = match options.addressing {
            Addressing::Auto => endpoint.is_some(),
            Addressing::Path => true,
            Addressing::Virtual => false,
        };
        builder = builder.force_path_style(path_style);
        Ok(S3Storage {
            client: Client::from_conf(builder.build()),
            bucket: options.bucket.clone(),
            endpoint,
            region,
        })
    }

    fn where_(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("bucket {} at {e}", self.bucket),
            None => format!("bucket {}", self.bucket),
        }
    }
}

/// Turns an SDK error into a classified [`StorageError`] naming the object.
fn classify<E>(
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
    what: &str,
) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use StorageErrorKind::*;
    let (kind, detail) = match &err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("").to_string();
            let message = se.err().message().unwrap_or("").to_string();
            let kind = match (status, code.as_str()) {
                // A success whose body does not parse: damaged in transit.
                (200..=299, _) => Transient,
                (_, "NoSuchBucket") => NoSuchContainer,
                (404, _) | (_, "NoSuchKey") | (_, "NotFound") => NotFound,
                (_, "BadDigest" | "InvalidDigest" | "XAmzContentChecksumMismatch") => {
                    ChecksumMismatch
                }
                (400, _) if message.to_ascii_lowercase().contains("checksum") => ChecksumMismatch,
                (501, _) | (_, "NotImplemented") => Unsupported,
                (403, _) | (_, "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
                    AccessDenied
                }
                (429 | 500..=599, _) | (_, "SlowDown" | "RequestTimeout" | "InternalError") => {
                    Transient
                }
                _ => Other,
            };
            let detail = match (code.is_empty(), message.is_empty()) {
                (true, true) => format!("HTTP {status}"),
                (false, true) => format!("{code} (HTTP {status})"),
                _ => format!("{code}: {message} (HTTP {status})"),
            };
            (kind, detail)
        }
        SdkError::TimeoutError(_) => (Transient, "timed out".to_string()),
        SdkError::DispatchFailure(df) => {
            let detail = std::error::Error::source(&err)
                .map(source_chain)
                .unwrap_or_else(|| "request failed".into());
            if let Some(tls) = tls_failure(&err) {
                // Retrying cannot make a certificate trusted.
                (
                    Other,
                    format!(
                        "cannot reach the S3 endpoint over TLS: {tls}; if the server's certificate is signed by a private CA, set AWS_CA_BUNDLE to that CA's PEM file"
                    ),
                )
            } else if df.is_io() || df.is_timeout() || df.is_other() {
                (Transient, format!("cannot reach the S3 endpoint: {detail}"))
            } else {
                (Other, format!("cannot reach the S3 endpoint: {detail}"))
            }
        }
        SdkError::ResponseError(_) => (Transient, "the response was cut off or malformed".into()),
        SdkError::ConstructionFailure(_) => {
            let detail = source_chain(&err);
            (Other, format!("the request could not be built: {detail}"))
        }
        _ => (Other, source_chain(&err)),
    };
    let hint = match kind {
        AccessDenied => {
            "; check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and the bucket policy"
        }
        NoSuchContainer => "; create the bucket first or fix --repo",
        _ => "",
    };
    StorageError::new(kind, format!("{what}: {detail}{hint}")).into()
}

/// Every message of an error chain, each once (wrappers often repeat
/// their source's text).
fn source_chain(err: &dyn std::error::Error) -> String {
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

/// The rustls error in a chain, if the failure was the TLS handshake's.
/// hyper-rustls nests it as the payload of `io::Error`s, which `source`
/// skips: the walk enters each payload instead.
fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        cur = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(payload) => Some(payload as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn decode_sha256(b64: Option<&str>) -> Option<[u8; 32]> {
    // Composite (multipart) checksums look like "…-N" and are not a digest of the object.
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64?)
        .ok()?;
    raw.try_into().ok()
}

/// Everything but RFC 3986's unreserved characters is escaped in a tag.
const TAG: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode_tags(tags: &Tags) -> String {
    tags.iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, TAG),
                utf8_percent_encode(v, TAG)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[async_trait]
impl Storage for S3Storage {
    fn location(&self) -> String {
        match (&self.endpoint, &self.region) {
            (Some(endpoint), _) => format!("bucket {} at endpoint {endpoint}", self.bucket),
            (None, Some(region)) => format!("bucket {} in AWS region {region}", self.bucket),
            (None, None) => format!("bucket {} on AWS", self.bucket),
        }
    }

    async fn check(&self) -> anyhow::Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| {
                let err = classify(e, &format!("cannot open {}", self.where_()));
                // HeadBucket has no body, so a missing bucket is a bare 404.
                match super::storage::storage_kind(&err) {
                    Some(StorageErrorKind::NotFound) => StorageError::new(
                        StorageErrorKind::NoSuchContainer,
                        format!(
                            "the {} does not exist; create it first or fix --repo",
                            self.where_()
                        ),
                    )
                    .into(),
                    _ => err,
                }
            })?;
        Ok(())
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        sha256: &[u8; 32],
        tags: &Tags,
    ) -> anyhow::Result<()> {
        let checksum = base64::engine::general_purpose::STANDARD.encode(sha256);
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(body.len() as i64)
            .checksum_sha256(checksum)
            .body(ByteStream::from(body));
        if !tags.is_empty() {
            request = request.tagging(encode_tags(tags));
        }
        request
            .customize()
            // The SHA-256 checksum header (signed) already protects the body;
            // hashing it again for the signature would cost a full pass.
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| classify(e, &format!("cannot upload {key} to {}", self.where_())))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> anyhow::Result<Bytes> {
        let what = format!("cannot download {key} from {}", self.where_());
        let response = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(e, &what))?;
        let body = response.body.collect().await.map_err(|e| {
            StorageError::new(
                StorageErrorKind::Transient,
                format!("{what}: body cut off: {e}"),
            )
        })?;
        Ok(body.into_bytes())
    }

    async fn head(&self, key: &str) -> anyhow::Result<Option<ObjectMeta>> {
        let result = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                sha256: decode_sha256(out.checksum_sha256()),
            })),
            Err(e) => {
                let err = classify(e, &format!("cannot stat {key} in {}", self.where_()));
                match super::storage::storage_kind(&err) {
                    Some(StorageErrorKind::NotFound) => Ok(None),
                    _ => Err(err),
                }
            }
        }
    }

    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<ObjectMeta>> {
        let pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let what = format!("cannot list {prefix} in {}", self.where_());
        let pages: Vec<_> = pages.try_collect().await.map_err(|e| classify(e, &what))?;
        let mut out: Vec<ObjectMeta> = pages
            .iter()
            .flat_map(|page| page.contents())
            .filter_map(|o| {
                Some(ObjectMeta {
                    key: o.key()?.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    sha256: None,
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(e, &format!("cannot delete {key} from {}", self.where_())))?;
        Ok(())
    }

    async fn put_tags(&self, key: &str, tags: &Tags) -> anyhow::Result<()> {
        let tag_set = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()?;
        let tagging = Tagging::builder().set_tag_set(Some(tag_set)).build()?;
        self.client
            .put_object_tagging()
            .bucket(&self.bucket)
            .key(key)
            .tagging(tagging)
            .send()
            .await
            .map_err(|e| classify(e, &format!("cannot tag {key} in {}", self.where_())))?;
        Ok(())
    }

    async fn get_tags(&self, key: &str) -> anyhow::Result<Tags> {
        let out = self
            .client
            .get_object_tagging()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                classify(
                    e,
                    &format!("cannot read the tags of {key} in {}", self.where_()),
                )
            })?;
        Ok(out
            .tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect())
    }

    async fn lifecycle(&self) -> anyhow::Result<Option<Vec<Rule>>> {
        let result = self
            .client
            .get_bucket_lifecycle_configuration()
            .bucket(&self.bucket)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(out.rules().iter().map(Rule::from_s3).collect())),
            Err(e) => {
                let code = e.code().map(str::to_string);
                let err = classify(
                    e,
                    &format!("cannot read the lifecycle rules of {}", self.where_()),
                );
                match (code.as_deref(), super::storage::storage_kind(&err)) {
                    (Some("NoSuchLifecycleConfiguration"), _) => Ok(Some(Vec::new())),
                    (_, Some(StorageErrorKind::Unsupported)) => Ok(None),
                    _ => Err(err),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_url_encoded() {
        let tags = vec![
            ("tier".to_string(), "daily".to_string()),
            ("a b".into(), "c&d".into()),
            ("é".into(), "x-y_z.~".into()),
        ];
        assert_eq!(encode_tags(&tags), "tier=daily&a%20b=c%26d&%C3%A9=x-y_z.~");
    }

    #[test]
    fn tls_failures_are_found_inside_io_errors() {
        let rustls_error =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let nested = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls_error,
        ));
        let found = tls_failure(&nested).unwrap();
        assert!(found.contains("UnknownIssuer"), "{found}");
        assert_eq!(tls_failure(&std::io::Error::other("reset")), None);
    }

    #[test]
    fn sha256_decoding() {
        let digest = [7u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        assert_eq!(decode_sha256(Some(&b64)), Some(digest));
        assert_eq!(decode_sha256(Some("abc-2")), None);
        assert_eq!(decode_sha256(None), None);
    }
}
