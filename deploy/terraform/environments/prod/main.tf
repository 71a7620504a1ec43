provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = "mailroom"
      Environment = "prod"
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

  environment          = "prod"
  name                 = "mailroom-prod"
  bucket_suffix        = data.aws_caller_identity.current.account_id
  compute              = var.compute
  image_repository_url = data.aws_ecr_repository.mailroom.repository_url
  ecr_repository_arn   = data.aws_ecr_repository.mailroom.arn
  image_tag            = var.image_tag
  certificate_arn      = var.certificate_arn
  allowed_cidr_blocks  = var.allowed_cidr_blocks
  delivery             = var.delivery
  default_from         = var.default_from
  compat_recipient     = var.compat_recipient
  ses_identity_arns    = var.ses_identity_arns
  alarm_emails         = var.alarm_emails

  # Sizes: a NAT gateway per AZ, Multi-AZ database and cache, 35 days of point-in-time recovery.
  vpc_cidr_block                = "10.42.0.0/16"
  single_nat_gateway            = false
  deletion_protection           = true
  api_cpu                       = 512
  api_memory                    = 1024
  api_min_count                 = 2
  api_max_count                 = 10
  worker_cpu                    = 512
  worker_memory                 = 1024
  worker_min_count              = 2
  worker_max_count              = 8
  db_instance_class             = "db.m7g.large"
  db_allocated_storage_gib      = 50
  db_max_allocated_storage_gib  = 500
  db_multi_az                   = true
  db_backup_retention_days      = 35
  redis_node_type               = "cache.m7g.large"
  redis_num_cache_clusters      = 2
  send_rate_per_second          = 7
  log_retention_days            = 365
  oldest_message_age_alarm_secs = 600
}
