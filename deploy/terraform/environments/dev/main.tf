provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = "mailroom"
      Environment = "dev"
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

  environment          = "dev"
  name                 = "mailroom-dev"
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

  # Sizes: the smallest that still runs both roles apart; nothing here survives a destroy.
  vpc_cidr_block           = "10.40.0.0/16"
  single_nat_gateway       = true
  deletion_protection      = false
  api_min_count            = 1
  api_max_count            = 2
  worker_min_count         = 1
  worker_max_count         = 2
  worker_fargate_spot      = true
  db_instance_class        = "db.t4g.micro"
  db_multi_az              = false
  db_backup_retention_days = 1
  redis_num_cache_clusters = 1
  send_rate_per_second     = 1 # the SES sandbox rate
  log_retention_days       = 30
  rust_log                 = "info,mailroom=debug"
}
