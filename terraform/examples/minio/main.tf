# A bucket for rabbitmq-backup on MinIO, a user for the backup host with the
# writer policy (no delete) and a user for restores with the restorer policy.
#
# Provider credentials come from the environment (MINIO_USER, MINIO_PASSWORD,
# or MINIO_ENDPOINT for the server) so that no secret sits in a .tfvars file.

terraform {
  required_version = ">= 1.3.0"

  required_providers {
    minio = {
      source  = "aminueza/minio"
      version = "~> 3.20"
    }
  }
}

provider "minio" {
  minio_server = var.minio_server
  minio_ssl    = var.minio_ssl
}

module "rabbitmq_backup" {
  source = "../../modules/minio"

  bucket_name = var.bucket_name
  # rabbitmq-backup --repo s3://<bucket_name>/rabbitmq
  prefix = "rabbitmq/"

  daily_retention_days               = 7
  weekly_retention_days              = 35
  monthly_retention_days             = 365
  max_age_days                       = 400
  noncurrent_version_expiration_days = 7

  object_lock_days = var.object_lock_days
}

resource "minio_iam_user" "backup_host" {
  name = var.writer_user_name
}

resource "minio_iam_user_policy_attachment" "backup_host" {
  user_name   = minio_iam_user.backup_host.id
  policy_name = module.rabbitmq_backup.iam_policy_names["writer"]
}

resource "minio_iam_user" "restore" {
  name = var.restorer_user_name
}

resource "minio_iam_user_policy_attachment" "restore" {
  user_name   = minio_iam_user.restore.id
  policy_name = module.rabbitmq_backup.iam_policy_names["restorer"]
}
