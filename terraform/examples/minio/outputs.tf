output "repository_url" {
  description = "Value for --repo / RABBITMQ_BACKUP_REPO (with AWS_ENDPOINT_URL_S3 pointing at MinIO)."
  value       = module.rabbitmq_backup.repository_url
}

output "endpoint_url" {
  description = "Value for AWS_ENDPOINT_URL_S3."
  value       = "${var.minio_ssl ? "https" : "http"}://${var.minio_server}"
}

output "writer_access_key" {
  value = minio_iam_user.backup_host.id
}

output "writer_secret_key" {
  value     = minio_iam_user.backup_host.secret
  sensitive = true
}

output "restorer_access_key" {
  value = minio_iam_user.restore.id
}

output "restorer_secret_key" {
  value     = minio_iam_user.restore.secret
  sensitive = true
}
