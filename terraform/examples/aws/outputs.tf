output "repository_url" {
  description = "Value for --repo / RABBITMQ_BACKUP_REPO."
  value       = module.rabbitmq_backup.repository_url
}

output "bucket_arn" {
  value = module.rabbitmq_backup.bucket_arn
}

output "iam_policy_arns" {
  value = module.rabbitmq_backup.iam_policy_arns
}

output "writer_policy_json" {
  value = module.rabbitmq_backup.writer_policy_json
}
