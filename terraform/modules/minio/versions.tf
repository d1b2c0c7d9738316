terraform {
  required_version = ">= 1.3.0"

  required_providers {
    minio = {
      source = "aminueza/minio"
      # 3.x: minio_ilm_policy rules with `filter` + `tags`, `noncurrent_expiration { days }`
      # and `expiration = "DeleteMarker"`; minio_s3_bucket_retention; and
      # encryption_type "AES256" in minio_s3_bucket_server_side_encryption
      # (added in early 2026, hence the floor).
      version = "~> 3.20"
    }
  }
}
