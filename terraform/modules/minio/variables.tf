variable "bucket_name" {
  description = "Name of the bucket to create: 3-63 characters of lower-case letters, digits, '.' and '-', starting and ending with a letter or digit, not shaped like an IP address (MinIO follows the S3 naming rules)."
  type        = string

  validation {
    condition = alltrue([
      can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name)),
      !can(regex("\\.\\.|\\.-|-\\.", var.bucket_name)),
      !can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$", var.bucket_name)),
    ])
    error_message = "bucket_name must be 3-63 characters of a-z, 0-9, '.' and '-', start and end with a letter or digit, contain no '..', and not be an IP address."
  }
}

variable "prefix" {
  description = "Key prefix of the repository inside the bucket: \"\" for the bucket root, otherwise path segments ending with \"/\" (for example \"prod/rabbitmq/\"). It must match the repository URL given to rabbitmq-backup: prefix \"prod/rabbitmq/\" is --repo s3://BUCKET/prod/rabbitmq. Snapshots live under <prefix>snapshots/, which is what the ILM rules match."
  type        = string
  default     = ""
  nullable    = false

  validation {
    condition     = can(regex("^([^/]+/)*$", var.prefix))
    error_message = "prefix must be empty or end with \"/\" (for example \"rabbitmq/\"), with no leading \"/\" and no empty segment (\"//\")."
  }
}

variable "daily_retention_days" {
  description = "Days after which objects tagged tier=daily expire."
  type        = number
  default     = 7
  nullable    = false

  validation {
    condition     = var.daily_retention_days >= 1 && floor(var.daily_retention_days) == var.daily_retention_days
    error_message = "daily_retention_days must be a whole number of days, at least 1."
  }
}

variable "weekly_retention_days" {
  description = "Days after which objects tagged tier=weekly (the first snapshot of an ISO week) expire. Must be >= daily_retention_days."
  type        = number
  default     = 35
  nullable    = false

  validation {
    condition     = var.weekly_retention_days >= 1 && floor(var.weekly_retention_days) == var.weekly_retention_days
    error_message = "weekly_retention_days must be a whole number of days, at least 1."
  }
}

variable "monthly_retention_days" {
  description = "Days after which objects tagged tier=monthly (the first snapshot of a calendar month, UTC) expire. Must be >= weekly_retention_days."
  type        = number
  default     = 365
  nullable    = false

  validation {
    condition     = var.monthly_retention_days >= 1 && floor(var.monthly_retention_days) == var.monthly_retention_days
    error_message = "monthly_retention_days must be a whole number of days, at least 1."
  }
}

variable "max_age_days" {
  description = "Safety net: every object under <prefix>snapshots/ expires after this many days whatever its tags. Must be >= every tier's retention. null disables the rule. WARNING: it also expires snapshots pinned with `rabbitmq-backup pin` (tier=keep); set null if pinned snapshots must be kept longer."
  type        = number
  default     = 400

  validation {
    condition     = var.max_age_days == null ? true : (var.max_age_days >= 1 && floor(var.max_age_days) == var.max_age_days)
    error_message = "max_age_days must be null or a whole number of days, at least 1."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which noncurrent object versions under <prefix>snapshots/ are deleted for good (the grace period during which an expired or deleted snapshot can still be recovered)."
  type        = number
  default     = 7
  nullable    = false

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days
    error_message = "noncurrent_version_expiration_days must be a whole number of days, at least 1."
  }
}

variable "object_lock_days" {
  description = "null (default) leaves object locking off. A number of days creates the bucket with object locking and a default retention of that many days in object_lock_mode. Locking can only be chosen when the bucket is created (changing it replaces the bucket)."
  type        = number
  default     = null

  validation {
    condition     = var.object_lock_days == null ? true : (var.object_lock_days >= 1 && floor(var.object_lock_days) == var.object_lock_days)
    error_message = "object_lock_days must be null or a whole number of days, at least 1."
  }
}

variable "object_lock_mode" {
  description = "Default retention mode when object_lock_days is set: GOVERNANCE or COMPLIANCE."
  type        = string
  default     = "GOVERNANCE"
  nullable    = false

  validation {
    condition     = contains(["GOVERNANCE", "COMPLIANCE"], var.object_lock_mode)
    error_message = "object_lock_mode must be GOVERNANCE or COMPLIANCE."
  }
}

variable "encryption" {
  description = "Default bucket encryption: \"none\" (default), \"sse-s3\" (AES256) or \"sse-kms\" (key kms_key_id). Both SSE modes need a KMS configured on the MinIO server (MINIO_KMS_KES_* or MINIO_KMS_SECRET_KEY); without one, uploads fail. Encryption in transit is the server's TLS configuration."
  type        = string
  default     = "none"
  nullable    = false

  validation {
    condition     = contains(["none", "sse-s3", "sse-kms"], var.encryption)
    error_message = "encryption must be \"none\", \"sse-s3\" or \"sse-kms\"."
  }
}

variable "kms_key_id" {
  description = "Name of the MinIO KMS key for encryption = \"sse-kms\"."
  type        = string
  default     = null
}

variable "create_iam_policies" {
  description = "Whether to create the MinIO IAM policies (writer, restorer, pruner). Their JSON documents are output either way."
  type        = bool
  default     = true
  nullable    = false
}

variable "iam_policy_name_prefix" {
  description = "Prefix of the IAM policy names (<prefix>writer, <prefix>restorer, <prefix>pruner). null means \"rabbitmq-backup-<bucket_name>-\"."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete the bucket with all its objects (locked objects included). Keep false for real backups."
  type        = bool
  default     = false
  nullable    = false
}
