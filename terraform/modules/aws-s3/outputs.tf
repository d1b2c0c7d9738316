output "bucket_name" {
  description = "Name of the bucket."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the bucket."
  value       = aws_s3_bucket.this.arn
}

output "repository_url" {
  description = "The --repo / RABBITMQ_BACKUP_REPO value for rabbitmq-backup."
  value       = var.prefix == "" ? "s3://${aws_s3_bucket.this.id}" : "s3://${aws_s3_bucket.this.id}/${trimsuffix(var.prefix, "/")}"
}

output "writer_policy_json" {
  description = "IAM policy document (JSON) for the backup host: list, upload, tag and read snapshots, read the lifecycle configuration; no delete."
  value       = data.aws_iam_policy_document.writer.json
}

output "restorer_policy_json" {
  description = "IAM policy document (JSON) for restores: read only."
  value       = data.aws_iam_policy_document.restorer.json
}

output "pruner_policy_json" {
  description = "IAM policy document (JSON) for `prune` and `pin`: read, delete (a delete marker on this versioned bucket) and re-tag."
  value       = data.aws_iam_policy_document.pruner.json
}

output "iam_policy_arns" {
  description = "ARNs of the managed policies by role (writer, restorer, pruner); empty unless create_iam_policies is true."
  value       = { for role, policy in aws_iam_policy.this : role => policy.arn }
}
