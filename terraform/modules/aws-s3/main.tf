# The bucket that holds a rabbitmq-backup repository (repository format v1):
#
#   <prefix>snapshots/<node>/<id>/data/<sha256-hex>   chunks
#   <prefix>snapshots/<node>/<id>/manifest.json       written last
#
# Retention belongs to the bucket (lifecycle.tf), so the backup host needs no
# delete permission (iam.tf).

locals {
  # Managed IAM policy names.
  iam_name_prefix = coalesce(var.iam_policy_name_prefix, "rabbitmq-backup-${var.bucket_name}-")
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_144: Cross-region replication needs a second bucket in another region, a replication IAM role and a decision on which copy lifecycle rules and Object Lock govern; that belongs to the root module, not to this one. A snapshot is already an off-host copy of the broker; where a second region is required, add aws_s3_bucket_replication_configuration next to this module (versioning, which replication needs, is already on).
  #checkov:skip=CKV2_AWS_62: Event notifications have no consumer here: rabbitmq-backup reports success or failure itself (exit code, --json), and `rabbitmq-backup check-repo` / `verify` check the repository. Add aws_s3_bucket_notification in the root module to feed an alerting pipeline if wanted.
  #checkov:skip=CKV_AWS_145: SSE-KMS is available (variable kms_key_arn) but not the default: SSE-S3 (AES256) already encrypts every object at rest, needs no key to create, rotate or grant, and adds no KMS request cost; choose KMS when key-level access control or audit is required. (checkov would pass this check anyway, not being able to evaluate the conditional sse_algorithm; the skip records the real default.)
  #checkov:skip=CKV_AWS_18: Server access logging is optional (variable access_log_bucket, default off) because it needs a separate, pre-existing log bucket with its own retention, and logging a bucket into itself loops. Set access_log_bucket to enable it; CloudTrail data events are the alternative. (checkov passes this check because of the optional aws_s3_bucket_logging resource; the skip records that logging is off by default.)
  bucket        = var.bucket_name
  force_destroy = var.force_destroy

  # Object Lock can only be switched on when the bucket is created.
  object_lock_enabled = var.object_lock_days != null

  tags = var.tags
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    # ACLs disabled: the bucket owner owns every object.
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket = aws_s3_bucket.this.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id

  versioning_configuration {
    # Required by Object Lock and replication; with the noncurrent-version
    # rule it makes a deleted or expired snapshot recoverable for
    # noncurrent_version_expiration_days.
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    # An S3 Bucket Key cuts KMS requests (and their cost) for SSE-KMS; it has
    # no meaning for SSE-S3.
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_object_lock_configuration" "this" {
  count = var.object_lock_days == null ? 0 : 1

  bucket = aws_s3_bucket.this.id

  rule {
    default_retention {
      mode = var.object_lock_mode
      days = var.object_lock_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_logging" "this" {
  count = var.access_log_bucket == null ? 0 : 1

  bucket        = aws_s3_bucket.this.id
  target_bucket = var.access_log_bucket
  target_prefix = var.access_log_prefix
}

# TLS only: deny every request made over plain HTTP, and TLS older than 1.2.
data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.this.arn,
      "${aws_s3_bucket.this.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid     = "DenyOutdatedTLS"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.this.arn,
      "${aws_s3_bucket.this.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = data.aws_iam_policy_document.bucket.json

  # S3 rejects concurrent changes to a bucket's access settings.
  depends_on = [aws_s3_bucket_public_access_block.this, aws_s3_bucket_ownership_controls.this]
}
