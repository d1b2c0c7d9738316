output "bucket_name" {
  description = "Name of the bucket."
  value       = minio_s3_bucket.this.bucket
}

output "bucket_arn" {
  description = "ARN of the bucket, as MinIO policies name it (arn:aws:s3:::BUCKET)."
  value       = local.bucket_arn
}

output "repository_url" {
  description = "The --repo / RABBITMQ_BACKUP_REPO value for rabbitmq-backup (set AWS_ENDPOINT_URL_S3 to the MinIO endpoint)."
  value       = var.prefix == "" ? "s3://${minio_s3_bucket.this.bucket}" : "s3://${minio_s3_bucket.this.bucket}/${trimsuffix(var.prefix, "/")}"
}

output "writer_policy_json" {
  description = "Policy document (JSON) for the backup host: list, upload, tag and read snapshots, read the lifecycle configuration; no delete."
  value       = local.policy_documents.writer
}

output "restorer_policy_json" {
  description = "Policy document (JSON) for restores: read only."
  value       = local.policy_documents.restorer
}

output "pruner_policy_json" {
  description = "Policy document (JSON) for `prune` and `pin`: read, delete (a delete marker on this versioned bucket) and re-tag."
  value       = local.policy_documents.pruner
}

output "iam_policy_names" {
  description = "Names of the MinIO IAM policies by role (writer, restorer, pruner); empty unless create_iam_policies is true."
  value       = { for role, policy in minio_iam_policy.this : role => policy.name }
}
