variable "region" {
  description = "AWS region of the bucket."
  type        = string
  default     = "eu-west-1"
}

variable "bucket_name" {
  description = "Name of the backup bucket (globally unique)."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key ARN for SSE-KMS; null keeps SSE-S3."
  type        = string
  default     = null
}

variable "object_lock_days" {
  description = "Object Lock default retention in days (GOVERNANCE); null leaves Object Lock off. Only effective when the bucket is created."
  type        = number
  default     = null
}

variable "backup_host_role_name" {
  description = "Name of an existing IAM role used by the backup host; gets the writer policy. null: attach nothing."
  type        = string
  default     = null
}

variable "restore_role_name" {
  description = "Name of an existing IAM role used for restores; gets the restorer policy. null: attach nothing."
  type        = string
  default     = null
}
