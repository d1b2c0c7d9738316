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
        if let Some(problem) = looks_mistyped(input) {
            return Err(usage(problem));
        }
        Ok(RepoUrl::Local {
            path: PathBuf::from(input),
        })
    }
}

/// Why a location that is neither `s3://` nor `file://` is not taken as a
/// local directory, with its likely meaning. A typo in a URL must not back
/// up into a relative directory named like the URL (`./s3:/bucket/prod`).
/// Anything with `:` before its first `/`, or whose first component is a
/// scheme name, is refused; `./NAME` always means a local directory.
fn looks_mistyped(input: &str) -> Option<String> {
    let local = format!("if you mean a local directory, write ./{input}");
    if input.starts_with('~') {
        return Some(format!(
            "the repository {input:?} starts with '~', which only a shell expands: write the absolute path"
        ));
    }
    if input.starts_with('/') {
        return None;
    }
    let first = input.split('/').next().unwrap_or("");
    let (scheme, rest) = match first.split_once(':') {
        Some((scheme, _)) => (scheme, &input[scheme.len() + 1..]),
        // `s3//bucket`, `s3/bucket`: a scheme name without its colon.
        None if is_scheme_name(first) => (first, &input[first.len()..]),
        None => return None,
    };
    let target = rest.trim_start_matches('/');
    let lower = scheme.to_ascii_lowercase();
    let meant = match lower.as_str() {
        "s3" if target.is_empty() => "did you mean s3://BUCKET[/PREFIX]?".to_string(),
        "s3" => format!("did you mean s3://{target}?"),
        "file" => format!("did you mean file:///{target} (three slashes: an absolute path)?"),
        "http" | "https" => format!(
            "an S3 server's address is not a repository: set AWS_ENDPOINT_URL_S3={lower}://{target_host} and pass --repo s3://BUCKET[/PREFIX]",
            target_host = target.split('/').next().unwrap_or("")
        ),
        _ if rest.starts_with("//") => format!(
            "{scheme:?} is not a supported scheme: use s3://BUCKET[/PREFIX], file:///ABSOLUTE/PATH or a directory path"
        ),
        _ => "it has ':' before its first '/', like a URL: use s3://BUCKET[/PREFIX], file:///ABSOLUTE/PATH or a directory path".to_string(),
    };
    Some(format!(
        "the repository {input:?} looks like a mistyped URL, not a directory: {meant} ({local})"
    ))
}

/// `s3`, `file`, `http`, `https` in any case: a first path component named
/// so is a URL that lost its `:`.
fn is_scheme_name(component: &str) -> bool {
    ["s3", "file", "http", "https"]
        .iter()
        .any(|s| component.eq_ignore_ascii_case(s))
}

fn parse_s3(input: &str, rest: &str) -> anyhow::Result<RepoUrl> {
    let meant = rest.trim_start_matches('/');
    if rest.starts_with('/') && !meant.is_empty() {
        return Err(usage(format!(
            "the repository URL {input:?} names no bucket (one slash too many): did you mean s3://{meant}?"
        )));
    }
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

    #[test]
    fn mistyped_urls_are_refused_with_their_likely_meaning() {
        for (typo, meant) in [
            ("s3:/bucket/prod", "s3://bucket/prod"),
            ("s3:bucket", "s3://bucket"),
            ("s3//bucket", "s3://bucket"),
            ("s3/bucket/prod", "s3://bucket/prod"),
            ("S3://bucket/prod", "s3://bucket/prod"),
            ("s3:///bucket", "s3://bucket"),
            ("file:/var/backups", "file:///var/backups"),
            ("file:var/backups", "file:///var/backups"),
            (
                "https://minio:9000/bucket",
                "AWS_ENDPOINT_URL_S3=https://minio:9000",
            ),
            ("gs://bucket", "not a supported scheme"),
            ("backups:prod", "':' before its first '/'"),
            ("~/backups", "absolute path"),
        ] {
            let err = RepoUrl::parse(typo).unwrap_err();
            assert_eq!(kind_of(&err), Kind::Usage, "{typo:?}: {err}");
            let text = err.to_string();
            assert!(text.contains(meant), "{typo:?}: {text}");
        }
        // The way out for a directory really named so.
        for ok in [
            "./s3:/bucket/prod",
            "./backups:prod",
            "/srv/s3:x",
            "s3-backups",
            "s3.d/x",
        ] {
            assert!(
                matches!(RepoUrl::parse(ok), Ok(RepoUrl::Local { .. })),
                "{ok:?}"
            );
        }
    }

    /// Valid bucket names and prefixes.
    fn bucket_and_prefix() -> impl Strategy<Value = (String, String)> {
        (
            "[a-z0-9][a-z0-9-]{1,20}[a-z0-9]",
            proptest::collection::vec("[A-Za-z0-9_.-]{0,8}[A-Za-z0-9_-]", 0..4),
        )
            .prop_map(|(b, segments)| (b, segments.join("/")))
    }

    proptest! {
        #[test]
        fn never_panics(input in ".*") {
            let _ = RepoUrl::parse(&input);
        }

        /// Every common mistyping of an S3 URL is refused, and the message
        /// spells the URL that was meant.
        #[test]
        fn mistyped_s3_urls_name_the_meant_url((bucket, prefix) in bucket_and_prefix()) {
            let path = if prefix.is_empty() { bucket.clone() } else { format!("{bucket}/{prefix}") };
            let meant = format!("s3://{path}");
            prop_assert_eq!(RepoUrl::parse(&meant).unwrap().to_string(), meant.clone());
            for typo in [
                format!("s3:/{path}"),
                format!("s3:{path}"),
                format!("s3//{path}"),
                format!("s3/{path}"),
                format!("S3://{path}"),
                format!("S3:/{path}"),
            ] {
                let err = RepoUrl::parse(&typo).unwrap_err();
                prop_assert_eq!(kind_of(&err), Kind::Usage);
                prop_assert!(err.to_string().contains(&meant), "{}: {}", typo, err);
            }
        }

        /// A relative location is a directory only when it cannot be a URL:
        /// no ':' before its first '/', no scheme name as first component.
        #[test]
        fn relative_directories_never_look_like_urls(input in "[^\u{0}-\u{1f}\u{7f}-\u{9f}]{1,30}") {
            if let Ok(RepoUrl::Local { path }) = RepoUrl::parse(&input) {
                let text = path.to_string_lossy().to_string();
                if !text.starts_with('/') {
                    let first = text.split('/').next().unwrap();
                    prop_assert!(!first.contains(':'), "{}", text);
                    prop_assert!(!is_scheme_name(first), "{}", text);
                    prop_assert!(!text.starts_with('~'), "{}", text);
                }
            }
        }

        /// Whatever follows `./` or `/` is a directory (the way to name one
        /// that looks like a URL).
        #[test]
        fn explicit_paths_are_always_directories(rest in "[^\u{0}-\u{1f}\u{7f}-\u{9f}]{0,30}", absolute in any::<bool>()) {
            let input = if absolute { format!("/{rest}") } else { format!("./{rest}") };
            prop_assert_eq!(
                RepoUrl::parse(&input).unwrap(),
                RepoUrl::Local { path: PathBuf::from(&input) }
            );
        }

        /// ':' before the first '/' is never a directory, whatever precedes it.
        #[test]
        fn a_colon_before_the_first_slash_is_refused(head in "[^/:\u{0}-\u{1f}\u{7f}-\u{9f}]{0,10}", tail in "[^\u{0}-\u{1f}\u{7f}-\u{9f}]{0,20}") {
            let input = format!("{head}:{tail}");
            if !input.starts_with("s3://") && !input.starts_with("file://") && !input.starts_with('/') {
                prop_assert!(!matches!(RepoUrl::parse(&input), Ok(RepoUrl::Local { .. })), "{}", input);
            }
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
