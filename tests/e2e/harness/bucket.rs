//! Inspecting and tampering with a bucket from tests, on any S3 server.

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleAndOperator, LifecycleRuleFilter, Tag,
};

use super::amqp::rt;

/// A path-style S3 client for `endpoint` with static test credentials, on
/// the tool's own HTTP client (the SDK has no default one here).
pub fn s3_client(endpoint: String, region: &str, key_id: &str, secret: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .http_client(rabbitmq_backup::repo::s3::http_client().unwrap())
        .endpoint_url(endpoint)
        .region(aws_sdk_s3::config::Region::new(region.to_string()))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            key_id, secret, None, None, "tests",
        ))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A bucket and a client for it.
pub struct Bucket {
    /// The client.
    pub client: aws_sdk_s3::Client,
    /// The bucket name.
    pub name: String,
}

impl Bucket {
    /// Every key under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        rt().block_on(async {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.name)
                .prefix(prefix)
                .send()
                .await
                .unwrap();
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string))
                .collect()
        })
    }

    /// One object's bytes.
    pub fn get(&self, key: &str) -> Vec<u8> {
        rt().block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(&self.name)
                .key(key)
                .send()
                .await
                .unwrap();
            out.body.collect().await.unwrap().into_bytes().to_vec()
        })
    }

    /// Writes (or overwrites) an object.
    pub fn put(&self, key: &str, bytes: Vec<u8>) {
        rt().block_on(async {
            self.client
                .put_object()
                .bucket(&self.name)
                .key(key)
                .body(bytes.into())
                .send()
                .await
                .unwrap()
        });
    }

    /// An object's tags.
    pub fn tags(&self, key: &str) -> Vec<(String, String)> {
        rt().block_on(async {
            let out = self
                .client
                .get_object_tagging()
                .bucket(&self.name)
                .key(key)
                .send()
                .await
                .unwrap();
            out.tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect()
        })
    }

    /// Replaces the lifecycle rules: (id, prefix, optional tier tag, days).
    pub fn set_lifecycle(&self, rules: &[(&str, &str, Option<&str>, i32)]) {
        let rules: Vec<LifecycleRule> = rules
            .iter()
            .map(|(id, prefix, tier, days)| {
                let filter = match tier {
                    Some(tier) => LifecycleRuleFilter::builder()
                        .and(
                            LifecycleRuleAndOperator::builder()
                                .prefix(*prefix)
                                .tags(Tag::builder().key("tier").value(*tier).build().unwrap())
                                .build(),
                        )
                        .build(),
                    None => LifecycleRuleFilter::builder().prefix(*prefix).build(),
                };
                LifecycleRule::builder()
                    .id(*id)
                    .status(ExpirationStatus::Enabled)
                    .filter(filter)
                    .expiration(LifecycleExpiration::builder().days(*days).build())
                    .build()
                    .unwrap()
            })
            .collect();
        let config = BucketLifecycleConfiguration::builder()
            .set_rules(Some(rules))
            .build()
            .unwrap();
        rt().block_on(async {
            self.client
                .put_bucket_lifecycle_configuration()
                .bucket(&self.name)
                .lifecycle_configuration(config)
                .send()
                .await
                .unwrap()
        });
    }
}
