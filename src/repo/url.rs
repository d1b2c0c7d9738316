//! Parsing of repository locations: `s3://bucket[/prefix]`, `file:///abs/path`
//! or a plain path.

use std::fmt;
use std::path::PathBuf;

use crate::error::usage;

/// Where a repository lives, validated but not yet opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoUrl {
    /// An S3 bucket, with an optional key prefix (no leading or trailing `/`).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket; empty for the bucket root.
        prefix: String,
    },
    /// A directory on a local (or mounted) filesystem.
    Local {
        /// The directory; relative paths are relative to the working directory.
        path: PathBuf,
    },
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            RepoUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            RepoUrl::Local { path } => write!(f, "{}", path.display()),
        }
    }
}

impl RepoUrl {
    /// Parses a repository location. Errors are usage errors that name the
    /// offending part and say what a valid location looks like.
    pub fn parse(input: &str) -> anyhow::Result<RepoUrl> {
        let hint = "use s3://BUCKET[/PREFIX], file:///ABSOLUTE/PATH or a directory path";
        if input.trim().is_empty() {
            return Err(usage(format!("the repository location is empty; {hint}")));
        }
        if input.chars().any(char::is_control) {
            return Err(usage(format!(
                "the repository location {input:?} contains control characters; {hint}"
            )));
        }
        if let Some(rest) = input.strip_prefix("s3://") {
            return parse_s3(input, rest);
        }
        if let Some(rest) = input.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(usage(format!(
                    "the repository URL {input:?} is not an absolute file URL; write file:///absolute/path (three slashes) or a plain path"
                )));
            }
            return Ok(RepoUrl::Local {
                path: PathBuf::from(rest),
            });
        }
        if let Some((scheme, _)) = input.split_once("://") {
            return Err(usage(format!(
                "the repository URL {input:?} has the unsupported scheme {scheme:?}; {hint}"
            )));
        }
        Ok(RepoUrl::Local {
            path: PathBuf::from(input),
        })
    }
}

fn parse_s3(input: &str, rest: &str) -> anyhow::Result<RepoUrl> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    validate_bucket(input, bucket)?;
    let prefix = prefix.trim_matches('/');
    let bad_segment = |s: &str| s.is_empty() || s == "." || s == "..";
    if !prefix.is_empty() && prefix.split('/').any(bad_segment) {
        return Err(usage(format!(
            "the repository URL {input:?} has an invalid prefix {prefix:?}: empty, '.' and '..' path segments are not allowed"
        )));
    }
    Ok(RepoUrl::S3 {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
    })
}

/// S3 bucket naming rules (the common subset every S3-compatible server accepts).
fn validate_bucket(input: &str, bucket: &str) -> anyhow::Result<()> {
    if bucket.is_empty() {
        return Err(usage(format!(
            "the repository URL {input:?} names no bucket; write s3://BUCKET[/PREFIX]"
        )));
    }
    let valid_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ends_ok = bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
    if !(3..=63).contains(&bucket.len()) || !valid_chars || !ends_ok || bucket.contains("..") {
        return Err(usage(format!(
            "the bucket name {bucket:?} in {input:?} is not valid: use 3-63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Kind, kind_of};
    use proptest::prelude::*;

    fn s3(bucket: &str, prefix: &str) -> RepoUrl {
        RepoUrl::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn parses_s3() {
        assert_eq!(RepoUrl::parse("s3://backups").unwrap(), s3("backups", ""));
        assert_eq!(RepoUrl::parse("s3://backups/").unwrap(), s3("backups", ""));
        assert_eq!(
            RepoUrl::parse("s3://backups/prod/rabbit/").unwrap(),
            s3("backups", "prod/rabbit")
        );
    }

    #[test]
    fn parses_local() {
        assert_eq!(
            RepoUrl::parse("file:///var/backups/rmq").unwrap(),
            RepoUrl::Local {
                path: "/var/backups/rmq".into()
            }
        );
        assert_eq!(
            RepoUrl::parse("./rabbitmq-backups").unwrap(),
            RepoUrl::Local {
                path: "./rabbitmq-backups".into()
            }
        );
    }

    #[test]
    fn rejects_bad_urls_as_usage_errors() {
        for bad in [
            "",
            "s3://",
            "s3:///prefix",
            "s3://Bad_Bucket",
            "s3://ab",
            "s3://-bucket",
            "s3://bucket/a//b",
            "s3://bucket/../x",
            "file://relative/path",
            "gs://bucket",
            "http://host/x",
        ] {
            let err = RepoUrl::parse(bad).unwrap_err();
            assert_eq!(kind_of(&err), Kind::Usage, "{bad:?}: {err}");
        }
    }

    #[test]
    fn error_names_the_bucket() {
        let err = RepoUrl::parse("s3://My_Bucket/x").unwrap_err().to_string();
        assert!(err.contains("My_Bucket"), "{err}");
    }

    #[test]
    fn display_round_trips() {
        for ok in ["s3://backups", "s3://backups/a/b", "/abs/dir"] {
            let url = RepoUrl::parse(ok).unwrap();
            assert_eq!(RepoUrl::parse(&url.to_string()).unwrap(), url);
        }
    }

    proptest! {
        #[test]
        fn never_panics(input in ".*") {
            let _ = RepoUrl::parse(&input);
        }

        #[test]
        fn s3_prefixes_never_escape(input in "s3://[a-z0-9.-]{0,70}(/[^\u{0}]{0,40}){0,4}") {
            if let Ok(RepoUrl::S3 { prefix, .. }) = RepoUrl::parse(&input) {
                prop_assert!(!prefix.starts_with('/') && !prefix.ends_with('/'));
                prop_assert!(prefix.is_empty() || prefix.split('/').all(|s| !s.is_empty() && s != ".." && s != "."));
            }
        }
    }
}
