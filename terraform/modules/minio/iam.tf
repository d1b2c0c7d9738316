# MinIO IAM policies for the three roles around a repository; same model as
# modules/aws-s3/iam.tf (see its header and terraform/README.md):
#
#   writer    list, upload + tag (s3:PutObjectTagging is checked for uploads
#             that carry tags), read back, read the lifecycle configuration.
#             No delete.
#   restorer  read only.
#   pruner    restorer + delete + re-tag + read the lifecycle configuration.
#
# Attach them to users or groups with minio_iam_user_policy_attachment /
# minio_iam_group_policy_attachment (see examples/minio).

locals {
  bucket_arn  = "arn:aws:s3:::${minio_s3_bucket.this.bucket}"
  objects_arn = "${local.bucket_arn}/${var.prefix}*"

  # Listing limited to keys under the prefix (none for a whole-bucket
  # repository: a listing without a prefix has no s3:prefix to match).
  list_statement = merge(
    {
      Sid      = "ListRepository"
      Effect   = "Allow"
      Action   = ["s3:ListBucket"]
      Resource = [local.bucket_arn]
    },
    var.prefix == "" ? {} : { Condition = { StringLike = { "s3:prefix" = ["${var.prefix}*"] } } },
  )

  policy_documents = {
    writer = jsonencode({
      Version = "2012-10-17"
      Statement = [
        local.list_statement,
        {
          Sid      = "ReadBucketSettings"
          Effect   = "Allow"
          Action   = ["s3:GetBucketLocation", "s3:GetLifecycleConfiguration"]
          Resource = [local.bucket_arn]
        },
        {
          Sid      = "WriteSnapshots"
          Effect   = "Allow"
          Action   = ["s3:PutObject", "s3:GetObject", "s3:GetObjectTagging", "s3:PutObjectTagging"]
          Resource = [local.objects_arn]
        },
      ]
    })

    restorer = jsonencode({
      Version = "2012-10-17"
      Statement = [
        local.list_statement,
        {
          Sid      = "ReadBucketSettings"
          Effect   = "Allow"
          Action   = ["s3:GetBucketLocation"]
          Resource = [local.bucket_arn]
        },
        {
          Sid      = "ReadSnapshots"
          Effect   = "Allow"
          Action   = ["s3:GetObject", "s3:GetObjectTagging"]
          Resource = [local.objects_arn]
        },
      ]
    })

    pruner = jsonencode({
      Version = "2012-10-17"
      Statement = [
        local.list_statement,
        {
          Sid      = "ReadBucketSettings"
          Effect   = "Allow"
          Action   = ["s3:GetBucketLocation", "s3:GetLifecycleConfiguration"]
          Resource = [local.bucket_arn]
        },
        {
          Sid      = "ReadSnapshots"
          Effect   = "Allow"
          Action   = ["s3:GetObject", "s3:GetObjectTagging"]
          Resource = [local.objects_arn]
        },
        {
          # A DELETE on this versioned bucket adds a delete marker; the data
          # stays recoverable until the noncurrent-version rule removes it.
          Sid      = "PruneSnapshots"
          Effect   = "Allow"
          Action   = ["s3:DeleteObject", "s3:PutObjectTagging"]
          Resource = [local.objects_arn]
        },
      ]
    })
  }
}

resource "minio_iam_policy" "this" {
  for_each = var.create_iam_policies ? local.policy_documents : {}

  name   = "${local.iam_name_prefix}${each.key}"
  policy = each.value
}
