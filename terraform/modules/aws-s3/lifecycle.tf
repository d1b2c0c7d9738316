# Lifecycle rules matching the repository layout and the object tags that
# rabbitmq-backup writes (DESIGN.md §4, §7):
#
#   every object of a snapshot carries  tier=daily | tier=weekly | tier=monthly
#   `rabbitmq-backup pin` re-tags it    tier=keep   (no rule matches: kept)
#
# A snapshot is self-contained (no object is shared between snapshots), so
# expiring its objects never breaks another snapshot. Every rule is scoped to
# <prefix>snapshots/, so nothing else in the bucket is touched.
#
# Each rule's prefix is written out as "${var.prefix}snapshots/" rather than
# through a local: tests/terraform_layout.rs reads this file and checks the
# literal suffix against the tool's constants.

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  #checkov:skip=CKV_AWS_300: The rule "abort-incomplete-multipart-uploads" below does abort incomplete uploads (after abort_incomplete_multipart_days). CKV_AWS_300 only accepts such a rule without a filter, i.e. over the whole bucket; this module deliberately scopes every rule to <prefix>snapshots/ so that it never acts on other data in a shared bucket.
  bucket = aws_s3_bucket.this.id

  # Grandfather-father-son tiers, by object tag.

  rule {
    id     = "tier-daily"
    status = "Enabled"

    filter {
      and {
        prefix = "${var.prefix}snapshots/"
        tags = {
          tier = "daily"
        }
      }
    }

    expiration {
      days = var.daily_retention_days
    }
  }

  rule {
    id     = "tier-weekly"
    status = "Enabled"

    filter {
      and {
        prefix = "${var.prefix}snapshots/"
        tags = {
          tier = "weekly"
        }
      }
    }

    expiration {
      days = var.weekly_retention_days
    }
  }

  rule {
    id     = "tier-monthly"
    status = "Enabled"

    filter {
      and {
        prefix = "${var.prefix}snapshots/"
        tags = {
          tier = "monthly"
        }
      }
    }

    expiration {
      days = var.monthly_retention_days
    }
  }

  # Safety net for objects whose tag is missing or unknown. S3 filters cannot
  # exclude a tag, so this rule also expires pinned (tier=keep) snapshots:
  # set max_age_days = null to keep pinned snapshots forever.
  dynamic "rule" {
    for_each = var.max_age_days == null ? [] : [var.max_age_days]

    content {
      id     = "max-age"
      status = "Enabled"

      filter {
        prefix = "${var.prefix}snapshots/"
      }

      expiration {
        days = rule.value
      }
    }
  }

  # rabbitmq-backup uploads chunks with single PUTs today, but other clients
  # (or a future version) may use multipart uploads; their orphaned parts are
  # billed until aborted.
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {
      prefix = "${var.prefix}snapshots/"
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }

  # The bucket is versioned: an expiration (or a pruner's DELETE) only adds a
  # delete marker and makes the data a noncurrent version. This rule deletes
  # those versions for good after a grace period, then the orphaned markers.
  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"

    filter {
      prefix = "${var.prefix}snapshots/"
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    expiration {
      expired_object_delete_marker = true
    }
  }

  # Noncurrent-version rules need versioning to be configured first.
  depends_on = [aws_s3_bucket_versioning.this]

  lifecycle {
    precondition {
      condition     = var.weekly_retention_days >= var.daily_retention_days && var.monthly_retention_days >= var.weekly_retention_days
      error_message = "Retention must not shrink with the tier: daily_retention_days <= weekly_retention_days <= monthly_retention_days."
    }

    precondition {
      condition     = var.max_age_days == null ? true : var.max_age_days >= max(var.daily_retention_days, var.weekly_retention_days, var.monthly_retention_days)
      error_message = "max_age_days must be null or at least the largest tier retention (monthly_retention_days); otherwise it would expire snapshots that a tier rule keeps."
    }
  }
}
