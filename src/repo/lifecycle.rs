//! Bucket lifecycle rules, reduced to what retention checks need.

use aws_sdk_s3::types::{ExpirationStatus, LifecycleRule};

use super::storage::Tags;

/// One lifecycle rule as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Rule {
    /// The rule's id, if it has one.
    pub id: String,
    /// Whether the rule is enabled.
    pub enabled: bool,
    /// Key prefix the rule applies to ("" for the whole bucket).
    pub prefix: String,
    /// Tags an object must carry for the rule to apply (all of them).
    pub tags: Tags,
    /// Days after creation when current objects expire.
    pub expiration_days: Option<i32>,
    /// Days after which noncurrent versions expire.
    pub noncurrent_expiration_days: Option<i32>,
    /// Days after which incomplete multipart uploads are aborted.
    pub abort_incomplete_days: Option<i32>,
}

impl Rule {
    /// Converts an S3 API lifecycle rule.
    pub fn from_s3(rule: &LifecycleRule) -> Rule {
        let filter = rule.filter();
        let and = filter.and_then(|f| f.and());
        #[allow(deprecated)]
        let legacy_prefix = rule.prefix();
        let prefix = filter
            .and_then(|f| f.prefix())
            .or_else(|| and.and_then(|a| a.prefix()))
            .or(legacy_prefix)
            .unwrap_or("")
            .to_string();
        let mut tags: Tags = Vec::new();
        if let Some(tag) = filter.and_then(|f| f.tag()) {
            tags.push((tag.key().to_string(), tag.value().to_string()));
        }
        if let Some(and) = and {
            tags.extend(
                and.tags()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string())),
            );
        }
        Rule {
            id: rule.id().unwrap_or("").to_string(),
            enabled: *rule.status() == ExpirationStatus::Enabled,
            prefix,
            tags,
            expiration_days: rule.expiration().and_then(|e| e.days()),
            noncurrent_expiration_days: rule
                .noncurrent_version_expiration()
                .and_then(|e| e.noncurrent_days()),
            abort_incomplete_days: rule
                .abort_incomplete_multipart_upload()
                .and_then(|a| a.days_after_initiation()),
        }
    }
}
