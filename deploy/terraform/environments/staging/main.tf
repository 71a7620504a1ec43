provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = "mailroom"
      Environment = "staging"
      ManagedBy   = "terraform"
    }
  }
}

data "aws_caller_identity" "current" {}

data "aws_ecr_repository" "mailroom" {
  name = var.ecr_repository_name
}

module "mailroom" {
  source = "../../modules/stack"

  environment          = "staging"
  name                 = "mailroom-staging"
  bucket_suffix        = data.aws_caller_identity.current.account_id
  compute              = var.compute
  image_repository_url = data.aws_ecr_repository.mailroom.repository_url
  ecr_repository_arn   = data.aws_ecr_repository.mailroom.arn
  image_tag            = var.image_tag
  certificate_arn      = var.certificate_arn != "" ? var.certificate_arn : null # CI passes "" for none
  allowed_cidr_blocks  = var.allowed_cidr_blocks
  delivery             = var.delivery
  default_from         = var.default_from
  compat_recipient     = var.compat_recipient
  ses_identity_arns    = var.ses_identity_arns
  alarm_emails         = var.alarm_emails

  # Sizes: production's shape (Multi-AZ, two of everything) on smaller machines.
  vpc_cidr_block           = "10.41.0.0/16"
  single_nat_gateway       = true
  deletion_protection      = true
  api_min_count            = 2
  api_max_count            = 4
  worker_min_count         = 1
  worker_max_count         = 3
  db_instance_class        = "db.t4g.small"
  db_multi_az              = true
  db_backup_retention_days = 7
  redis_num_cache_clusters = 2
  send_rate_per_second     = 7
  log_retention_days       = 90
}
