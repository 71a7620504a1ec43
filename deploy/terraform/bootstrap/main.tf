# Account-level pieces that every environment shares and that must exist before them:
# the Terraform state bucket, the ECR repository, and the role GitHub Actions deploys with.
provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project   = "mailroom"
      ManagedBy = "terraform"
      Stack     = "bootstrap"
    }
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
}

module "kms" {
  source = "../modules/kms"
  name   = "mailroom-shared"
}

# ---------------------------------------------------------------------------------------------
# Terraform state: versioned, encrypted, private, TLS only. Locking uses S3 conditional writes
# (use_lockfile), so no DynamoDB table is needed.
# ---------------------------------------------------------------------------------------------
resource "aws_s3_bucket" "state" {
  #checkov:skip=CKV_AWS_144:state is versioned; cross-region replication is an account-wide disaster-recovery decision outside this stack.
  #checkov:skip=CKV2_AWS_62:nothing consumes events of the state bucket.
  #checkov:skip=CKV_AWS_18:state access is audited through CloudTrail; a second log bucket would need its own bootstrap.
  bucket = "mailroom-tfstate-${local.account_id}"
}

resource "aws_s3_bucket_ownership_controls" "state" {
  bucket = aws_s3_bucket.state.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "state" {
  bucket                  = aws_s3_bucket.state.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "state" {
  bucket = aws_s3_bucket.state.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "state" {
  bucket = aws_s3_bucket.state.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = module.kms.key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    id     = "old-state-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 90
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.state]
}

data "aws_iam_policy_document" "state" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.state.arn,
      "${aws_s3_bucket.state.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "state" {
  bucket     = aws_s3_bucket.state.id
  policy     = data.aws_iam_policy_document.state.json
  depends_on = [aws_s3_bucket_public_access_block.state]
}

# ---------------------------------------------------------------------------------------------
# The image repository every environment pulls from.
# ---------------------------------------------------------------------------------------------
module "ecr" {
  source      = "../modules/ecr"
  name        = "mailroom"
  kms_key_arn = module.kms.key_arn
}

# ---------------------------------------------------------------------------------------------
# GitHub Actions deploys through OIDC: no long-lived keys. The role may push the image and roll
# out new versions of mailroom's services, and nothing else. (Terraform applies run with a role
# the account's administrators own; see docs/deployment.md.)
# ---------------------------------------------------------------------------------------------
resource "aws_iam_openid_connect_provider" "github" {
  count          = var.github_repository == null ? 0 : 1
  url            = "https://token.actions.githubusercontent.com"
  client_id_list = ["sts.amazonaws.com"]
  # AWS validates GitHub's certificate chain itself; the thumbprint is only a required placeholder.
  thumbprint_list = ["6938fd4d98bab03faadb97b34396831e3780aea1"]
}

data "aws_iam_policy_document" "deploy_assume" {
  count = var.github_repository == null ? 0 : 1
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.github[0].arn]
    }
    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringLike"
      variable = "token.actions.githubusercontent.com:sub"
      values = [
        "repo:${var.github_repository}:ref:refs/heads/main",
        "repo:${var.github_repository}:environment:*",
      ]
    }
  }
}

resource "aws_iam_role" "deploy" {
  count              = var.github_repository == null ? 0 : 1
  name               = "mailroom-github-deploy"
  assume_role_policy = data.aws_iam_policy_document.deploy_assume[0].json
}

data "aws_iam_policy_document" "deploy" {
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # GetAuthorizationToken has no resource-level permissions.
  }

  statement {
    sid = "PushImage"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:CompleteLayerUpload",
      "ecr:DescribeImages",
      "ecr:DescribeRepositories", # deploy/scripts/ecs-deploy finds the repository's URL
      "ecr:GetDownloadUrlForLayer",
      "ecr:InitiateLayerUpload",
      "ecr:PutImage",
      "ecr:UploadLayerPart",
    ]
    resources = [module.ecr.repository_arn]
  }

  statement {
    sid       = "EncryptImageLayers"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [module.kms.key_arn]
  }

  statement {
    sid       = "ReadTaskDefinitions"
    actions   = ["ecs:DescribeTaskDefinition", "ecs:RegisterTaskDefinition"]
    resources = ["*"] # these two ECS actions have no resource-level permissions.
  }

  statement {
    sid       = "RollOutServices"
    actions   = ["ecs:UpdateService", "ecs:DescribeServices"]
    resources = ["arn:${local.partition}:ecs:${var.region}:${local.account_id}:service/mailroom-*/mailroom-*"]
  }

  statement {
    sid       = "PassTaskRoles"
    actions   = ["iam:PassRole"]
    resources = ["arn:${local.partition}:iam::${local.account_id}:role/mailroom-*"]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }

  statement {
    sid     = "RefreshInstances"
    actions = ["autoscaling:StartInstanceRefresh"]
    # The stack's groups by their tag: the provider's default_tags (Project) do not reach an
    # autoscaling group, whose tags the stack sets itself (Application, Environment, Name).
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/Application"
      values   = ["mailroom"]
    }
  }

  statement {
    sid       = "WatchInstanceRefreshes"
    actions   = ["autoscaling:DescribeInstanceRefreshes"]
    resources = ["*"] # no resource-level permissions, so no tag condition can match either.
  }

  statement {
    sid       = "SetImageTag"
    actions   = ["ssm:PutParameter"]
    resources = ["arn:${local.partition}:ssm:${var.region}:${local.account_id}:parameter/mailroom/mailroom-*/image-tag"]
  }
}

resource "aws_iam_role_policy" "deploy" {
  count  = var.github_repository == null ? 0 : 1
  name   = "push-and-roll-out"
  role   = aws_iam_role.deploy[0].id
  policy = data.aws_iam_policy_document.deploy.json
}
