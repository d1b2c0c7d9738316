variable "bucket_name" {
  description = "Name of the bucket to create. S3 rules apply: 3-63 characters, lower-case letters, digits, '.' and '-', starting and ending with a letter or digit, not shaped like an IP address. Avoid '.' if clients use virtual-hosted addressing over TLS."
  type        = string

  validation {
    condition = alltrue([
      can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name)),
      !can(regex("\\.\\.|\\.-|-\\.", var.bucket_name)),
      !can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$", var.bucket_name)),
      !can(regex("^(xn--|sthree-|amzn-s3-demo-)", var.bucket_name)),
      !can(regex("(-s3alias|--ol-s3|--x-s3|--table-s3|\\.mrap)$", var.bucket_name)),
    ])
    error_message = "bucket_name must be a valid S3 bucket name: 3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit, no '..', not an IP address, no reserved prefix (xn--, sthree-, amzn-s3-demo-) or suffix (-s3alias, --ol-s3, --x-s3, --table-s3, .mrap)."
  }
}

variable "prefix" {
  description = "Key prefix of the repository inside the bucket: \"\" for the bucket root, otherwise path segments ending with \"/\" (for example \"prod/rabbitmq/\"). It must match the repository URL given to rabbitmq-backup: prefix \"prod/rabbitmq/\" is --repo s3://BUCKET/prod/rabbitmq. Snapshots live under <prefix>snapshots/, which is what the lifecycle rules match."
  type        = string
  default     = ""
  nullable    = false

  validation {
    # "" or one or more non-empty segments, each followed by "/": no leading
    # "/", no "//", always a trailing "/". The tool builds keys the same way
    # (it trims slashes from the URL path and appends one).
    condition     = can(regex("^([^/]+/)*$", var.prefix))
    error_message = "prefix must be empty or end with \"/\" (for example \"rabbitmq/\"), with no leading \"/\" and no empty segment (\"//\")."
  }
}

variable "daily_retention_days" {
  description = "Days after which objects tagged tier=daily (every snapshot that is not the first of its ISO week or month) expire."
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
  description = "Safety net: every object under <prefix>snapshots/ expires after this many days whatever its tags (catches objects whose tag is missing or unknown). Must be >= every tier's retention. null disables the rule. WARNING: a prefix rule cannot exclude a tag, so it also expires snapshots pinned with `rabbitmq-backup pin` (tier=keep); set null if pinned snapshots must be kept longer than this."
  type        = number
  default     = 400

  validation {
    condition     = var.max_age_days == null ? true : (var.max_age_days >= 1 && floor(var.max_age_days) == var.max_age_days)
    error_message = "max_age_days must be null or a whole number of days, at least 1."
  }
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which incomplete multipart uploads under <prefix>snapshots/ are aborted (their parts are billed until then)."
  type        = number
  default     = 1
  nullable    = false

  validation {
    condition     = var.abort_incomplete_multipart_days >= 1 && floor(var.abort_incomplete_multipart_days) == var.abort_incomplete_multipart_days
    error_message = "abort_incomplete_multipart_days must be a whole number of days, at least 1."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which noncurrent object versions under <prefix>snapshots/ are deleted for good. An expired or deleted snapshot stays recoverable (as noncurrent versions) for this long."
  type        = number
  default     = 7
  nullable    = false

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days
    error_message = "noncurrent_version_expiration_days must be a whole number of days, at least 1."
  }
}

variable "object_lock_days" {
  description = "null (default) leaves Object Lock off. A number of days turns Object Lock on for the bucket (only possible when the bucket is created: changing it later replaces the bucket) with a default retention of that many days in object_lock_mode: no one, the pruner and lifecycle rules included, can delete an object version before then."
  type        = number
  default     = null

  validation {
    condition     = var.object_lock_days == null ? true : (var.object_lock_days >= 1 && floor(var.object_lock_days) == var.object_lock_days)
    error_message = "object_lock_days must be null or a whole number of days, at least 1."
  }
}

variable "object_lock_mode" {
  description = "Default Object Lock retention mode when object_lock_days is set: GOVERNANCE (principals with s3:BypassGovernanceRetention can still delete) or COMPLIANCE (no one can, not even the account root, until retention ends)."
  type        = string
  default     = "GOVERNANCE"
  nullable    = false

  validation {
    condition     = contains(["GOVERNANCE", "COMPLIANCE"], var.object_lock_mode)
    error_message = "object_lock_mode must be GOVERNANCE or COMPLIANCE."
  }
}

variable "kms_key_arn" {
  description = "null (default): default encryption is SSE-S3 (AES256, keys managed by S3, no KMS cost). An AWS KMS key ARN: default encryption is SSE-KMS with that key and an S3 Bucket Key (fewer KMS requests); the IAM policy documents then also grant the key use each role needs."
  type        = string
  default     = null

  validation {
    # A key ARN, not an alias: the IAM statements granting key use need it.
    condition     = var.kms_key_arn == null ? true : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be null or a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), not an alias."
  }
}

variable "access_log_bucket" {
  description = "Name of an existing bucket that receives S3 server access logs for this bucket; null (default) turns access logging off. The target bucket must allow the S3 logging service to write (see the AWS docs on server access logging)."
  type        = string
  default     = null
}

variable "access_log_prefix" {
  description = "Key prefix for the access logs in access_log_bucket."
  type        = string
  default     = "s3-access-logs/"
  nullable    = false
}

variable "create_iam_policies" {
  description = "Whether to create managed IAM policies (writer, restorer, pruner) from the policy documents. The documents are output either way, to attach them inline or elsewhere."
  type        = bool
  default     = false
  nullable    = false
}

variable "iam_policy_name_prefix" {
  description = "Prefix of the managed IAM policy names (<prefix>writer, <prefix>restorer, <prefix>pruner). null means \"rabbitmq-backup-<bucket_name>-\"."
  type        = string
  default     = null

  validation {
    condition     = var.iam_policy_name_prefix == null ? true : can(regex("^[A-Za-z0-9+=,.@_-]{1,100}$", var.iam_policy_name_prefix))
    error_message = "iam_policy_name_prefix may contain only A-Z a-z 0-9 + = , . @ _ - and be at most 100 characters."
  }
}

variable "iam_policy_path" {
  description = "IAM path of the managed policies."
  type        = string
  default     = "/"
  nullable    = false

  validation {
    condition     = can(regex("^/([^/]+/)*$", var.iam_policy_path))
    error_message = "iam_policy_path must start and end with \"/\"."
  }
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete the bucket with all its objects. Keep false for real backups."
  type        = bool
  default     = false
  nullable    = false
}

variable "tags" {
  description = "Tags for the bucket and the IAM policies (resource tags, not the object tags the lifecycle rules match)."
  type        = map(string)
  default     = {}
  nullable    = false
}
