# A bucket for rabbitmq-backup on AWS S3, with the backup host allowed to write
# (never delete) and an optional restore role allowed to read.

terraform {
  required_version = ">= 1.3.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

provider "aws" {
  region = var.region
}

module "rabbitmq_backup" {
  source = "../../modules/aws-s3"

  bucket_name = var.bucket_name
  # rabbitmq-backup --repo s3://<bucket_name>/rabbitmq
  prefix = "rabbitmq/"

  # Grandfather-father-son: a week of dailies, five weeks of weeklies, a year
  # of monthlies; anything left under snapshots/ goes after 400 days.
  daily_retention_days   = 7
  weekly_retention_days  = 35
  monthly_retention_days = 365
  max_age_days           = 400

  noncurrent_version_expiration_days = 7
  abort_incomplete_multipart_days    = 1

  kms_key_arn      = var.kms_key_arn
  object_lock_days = var.object_lock_days

  create_iam_policies = true

  tags = {
    Application = "rabbitmq-backup"
  }
}

# The backup host's role (for example its EC2 instance profile role) may write.
resource "aws_iam_role_policy_attachment" "writer" {
  count = var.backup_host_role_name == null ? 0 : 1

  role       = var.backup_host_role_name
  policy_arn = module.rabbitmq_backup.iam_policy_arns["writer"]
}

# A separate role for disaster recovery may only read.
resource "aws_iam_role_policy_attachment" "restorer" {
  count = var.restore_role_name == null ? 0 : 1

  role       = var.restore_role_name
  policy_arn = module.rabbitmq_backup.iam_policy_arns["restorer"]
}
