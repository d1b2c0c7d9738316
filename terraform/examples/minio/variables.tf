variable "minio_server" {
  description = "MinIO endpoint as host:port, without scheme."
  type        = string
  default     = "minio.example.internal:9000"
}

variable "minio_ssl" {
  description = "Talk to MinIO over HTTPS. Keep true outside a lab: backups hold password hashes."
  type        = bool
  default     = true
}

variable "bucket_name" {
  description = "Name of the backup bucket."
  type        = string
  default     = "rabbitmq-backups"
}

variable "object_lock_days" {
  description = "Default object-lock retention in days (GOVERNANCE); null leaves locking off. Only effective when the bucket is created."
  type        = number
  default     = null
}

variable "writer_user_name" {
  description = "MinIO user for the backup host (writer policy)."
  type        = string
  default     = "rabbitmq-backup-writer"
}

variable "restorer_user_name" {
  description = "MinIO user for restores (restorer policy)."
  type        = string
  default     = "rabbitmq-backup-restorer"
}
