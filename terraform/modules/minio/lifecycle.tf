# ILM rules matching the repository layout and the object tags rabbitmq-backup
# writes: tier=daily | tier=weekly | tier=monthly on every object of a
# snapshot; `rabbitmq-backup pin` re-tags a snapshot tier=keep, which no rule
# matches. Same semantics as modules/aws-s3/lifecycle.tf.
#
# In minio_ilm_policy a rule's `filter` is the key prefix and `tags` the object
# tags that must all match (sent as an And filter). Days are strings "<N>d".
# Each prefix is written out as "${var.prefix}snapshots/" so that
# tests/terraform_layout.rs can check it against the tool's constants.

resource "minio_ilm_policy" "this" {
  bucket = minio_s3_bucket.this.bucket

  rule {
    id         = "tier-daily"
    filter     = "${var.prefix}snapshots/"
    tags       = { tier = "daily" }
    expiration = "${var.daily_retention_days}d"
  }

  rule {
    id         = "tier-weekly"
    filter     = "${var.prefix}snapshots/"
    tags       = { tier = "weekly" }
    expiration = "${var.weekly_retention_days}d"
  }

  rule {
    id         = "tier-monthly"
    filter     = "${var.prefix}snapshots/"
    tags       = { tier = "monthly" }
    expiration = "${var.monthly_retention_days}d"
  }

  # Safety net for objects without a known tier tag. A prefix filter cannot
  # exclude a tag: this also expires pinned (tier=keep) snapshots. null
  # max_age_days removes it.
  dynamic "rule" {
    for_each = var.max_age_days == null ? [] : [var.max_age_days]

    content {
      id         = "max-age"
      filter     = "${var.prefix}snapshots/"
      expiration = "${rule.value}d"
    }
  }

  # Versioned bucket: expiring (or deleting) an object leaves a delete marker
  # and a noncurrent version. Remove such versions after a grace period, then
  # the delete markers left with no version behind them.
  rule {
    id     = "expire-noncurrent-versions"
    filter = "${var.prefix}snapshots/"

    noncurrent_expiration {
      days = "${var.noncurrent_version_expiration_days}d"
    }

    expiration = "DeleteMarker"
  }

  depends_on = [minio_s3_bucket_versioning.this]

  lifecycle {
    precondition {
      condition     = var.weekly_retention_days >= var.daily_retention_days && var.monthly_retention_days >= var.weekly_retention_days
      error_message = "Retention must not shrink with the tier: daily_retention_days <= weekly_retention_days <= monthly_retention_days."
    }

    precondition {
      condition     = var.max_age_days == null ? true : var.max_age_days >= max(var.daily_retention_days, var.weekly_retention_days, var.monthly_retention_days)
      error_message = "max_age_days must be null or at least the largest tier retention (monthly_retention_days)."
    }
  }
}
