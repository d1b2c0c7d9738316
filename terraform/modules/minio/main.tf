# A MinIO bucket that holds a rabbitmq-backup repository (repository format v1):
#
#   <prefix>snapshots/<node>/<id>/data/<sha256-hex>   chunks
#   <prefix>snapshots/<node>/<id>/manifest.json       written last
#
# Same model as modules/aws-s3: retention by ILM (lifecycle.tf), no delete
# permission for the backup host (iam.tf).
#
# Not managed here, because MinIO sets them server-wide rather than per bucket:
# - TLS: serve MinIO over HTTPS only (certificates in ~/.minio/certs or
#   --certs-dir); there is no plain-HTTP listener to deny in a bucket policy.
# - Incomplete multipart uploads: MinIO aborts them itself after the `api`
#   setting stale_uploads_expiry (default 24h). The provider does not send
#   AbortIncompleteMultipartUpload in ILM rules.
# - Public access: a new MinIO bucket is private (no anonymous policy); this
#   module never adds one.

locals {
  iam_name_prefix = coalesce(var.iam_policy_name_prefix, "rabbitmq-backup-${var.bucket_name}-")
}

resource "minio_s3_bucket" "this" {
  bucket        = var.bucket_name
  acl           = "private"
  force_destroy = var.force_destroy

  # Only possible at creation; it also turns versioning on.
  object_locking = var.object_lock_days != null
}

resource "minio_s3_bucket_versioning" "this" {
  bucket = minio_s3_bucket.this.bucket

  versioning_configuration {
    status = "Enabled"
  }
}

resource "minio_s3_bucket_retention" "this" {
  count = var.object_lock_days == null ? 0 : 1

  bucket          = minio_s3_bucket.this.bucket
  mode            = var.object_lock_mode
  unit            = "DAYS"
  validity_period = var.object_lock_days

  depends_on = [minio_s3_bucket_versioning.this]
}

resource "minio_s3_bucket_server_side_encryption" "this" {
  count = var.encryption == "none" ? 0 : 1

  bucket          = minio_s3_bucket.this.bucket
  encryption_type = var.encryption == "sse-kms" ? "aws:kms" : "AES256"
  kms_key_id      = var.encryption == "sse-kms" ? var.kms_key_id : null

  lifecycle {
    precondition {
      condition     = var.encryption != "sse-kms" || var.kms_key_id != null
      error_message = "encryption = \"sse-kms\" needs kms_key_id (the name of a key on the MinIO server's KMS)."
    }
  }
}
