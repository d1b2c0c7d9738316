# Least-privilege policies for the three roles around a repository.
#
#   writer    the backup host: writes and tags new snapshots, reads them back
#             (verify, resume) and reads the lifecycle configuration (to warn
#             when a rule could expire a snapshot the policy keeps). It has NO
#             s3:DeleteObject*: a compromised host cannot destroy its backups;
#             retention is enforced by the lifecycle rules.
#   restorer  read only: list, download, read tags.
#   pruner    the restorer's rights plus delete and re-tag, for `prune` on
#             servers without lifecycle support and for `pin` / unpin.
#
# PutObjectTagging is in the writer's set because S3 authorises an upload that
# carries tags (x-amz-tagging) against s3:PutObjectTagging as well as
# s3:PutObject.
#
# Object permissions are scoped to <bucket>/<prefix>*, listing to keys under
# <prefix> (when the prefix is not empty).

locals {
  bucket_arn  = aws_s3_bucket.this.arn
  objects_arn = "${aws_s3_bucket.this.arn}/${var.prefix}*"

  # StringLike patterns for the s3:prefix condition of ListBucket; none when
  # the repository is the whole bucket (a listing without a prefix carries no
  # s3:prefix key, which a condition would then refuse).
  list_prefixes = var.prefix == "" ? [] : ["${var.prefix}*"]

  # Present when SSE-KMS is on.
  kms_keys = var.kms_key_arn == null ? [] : [var.kms_key_arn]
}

data "aws_iam_policy_document" "writer" {
  statement {
    sid       = "ListRepository"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]

    dynamic "condition" {
      for_each = local.list_prefixes
      content {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = [condition.value]
      }
    }
  }

  statement {
    sid    = "ReadBucketSettings"
    effect = "Allow"
    actions = [
      "s3:GetBucketLocation",
      "s3:GetLifecycleConfiguration",
    ]
    resources = [local.bucket_arn]
  }

  statement {
    sid    = "WriteSnapshots"
    effect = "Allow"
    actions = [
      "s3:PutObject",
      "s3:GetObject",
      "s3:GetObjectTagging",
      "s3:PutObjectTagging",
    ]
    resources = [local.objects_arn]
  }

  dynamic "statement" {
    for_each = local.kms_keys
    content {
      sid    = "UseKmsKey"
      effect = "Allow"
      actions = [
        "kms:GenerateDataKey",
        "kms:Decrypt",
      ]
      resources = [statement.value]
    }
  }
}

data "aws_iam_policy_document" "restorer" {
  statement {
    sid       = "ListRepository"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]

    dynamic "condition" {
      for_each = local.list_prefixes
      content {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = [condition.value]
      }
    }
  }

  statement {
    sid       = "ReadBucketSettings"
    effect    = "Allow"
    actions   = ["s3:GetBucketLocation"]
    resources = [local.bucket_arn]
  }

  statement {
    sid    = "ReadSnapshots"
    effect = "Allow"
    actions = [
      "s3:GetObject",
      "s3:GetObjectTagging",
    ]
    resources = [local.objects_arn]
  }

  dynamic "statement" {
    for_each = local.kms_keys
    content {
      sid       = "UseKmsKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

data "aws_iam_policy_document" "pruner" {
  statement {
    sid       = "ListRepository"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]

    dynamic "condition" {
      for_each = local.list_prefixes
      content {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = [condition.value]
      }
    }
  }

  statement {
    sid    = "ReadBucketSettings"
    effect = "Allow"
    actions = [
      "s3:GetBucketLocation",
      "s3:GetLifecycleConfiguration",
    ]
    resources = [local.bucket_arn]
  }

  statement {
    sid    = "ReadSnapshots"
    effect = "Allow"
    actions = [
      "s3:GetObject",
      "s3:GetObjectTagging",
    ]
    resources = [local.objects_arn]
  }

  # On this versioned bucket a DELETE adds a delete marker: the data stays
  # recoverable as a noncurrent version until the lifecycle rule removes it.
  # Deleting a specific version (s3:DeleteObjectVersion) is deliberately not
  # granted.
  statement {
    sid    = "PruneSnapshots"
    effect = "Allow"
    actions = [
      "s3:DeleteObject",
      "s3:PutObjectTagging",
    ]
    resources = [local.objects_arn]
  }

  dynamic "statement" {
    for_each = local.kms_keys
    content {
      sid       = "UseKmsKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

locals {
  policy_documents = {
    writer   = data.aws_iam_policy_document.writer.json
    restorer = data.aws_iam_policy_document.restorer.json
    pruner   = data.aws_iam_policy_document.pruner.json
  }

  policy_descriptions = {
    writer   = "rabbitmq-backup writer for s3://${var.bucket_name}/${var.prefix}: upload and tag snapshots, no delete"
    restorer = "rabbitmq-backup restorer for s3://${var.bucket_name}/${var.prefix}: read only"
    pruner   = "rabbitmq-backup pruner for s3://${var.bucket_name}/${var.prefix}: read, delete and re-tag snapshots"
  }
}

resource "aws_iam_policy" "this" {
  for_each = var.create_iam_policies ? local.policy_documents : {}

  name        = "${local.iam_name_prefix}${each.key}"
  path        = var.iam_policy_path
  description = local.policy_descriptions[each.key]
  policy      = each.value
  tags        = var.tags
}
