data "aws_region" "current" {}

locals {
  ecs           = var.compute == "ecs"
  ec2           = var.compute == "ec2"
  use_smtp      = var.delivery == "smtp"
  use_ses       = var.delivery == "ses"
  param_prefix  = "/mailroom/${var.environment}"
  image         = "${var.image_repository_url}:${var.image_tag}"
  tags          = merge(var.tags, { Application = "mailroom", Environment = var.environment })
  smtp_ports    = local.use_smtp ? [var.smtp_port] : []
  archive_items = "${module.archive.bucket_arn}/emails/*"

  # Plain settings, the same for both roles so `mailroom config` agrees everywhere (each task
  # checks its own role: `mailroom check --role api|worker`). Only names from mailroom's
  # settings table; secrets go below.
  environment = merge(
    {
      PORT                    = "8080"
      BIND_ADDRESS            = "0.0.0.0"
      DATA_DIR                = "/data"
      LOG_FORMAT              = "json"
      RUST_LOG                = var.rust_log
      AWS_REGION              = data.aws_region.current.name
      QUEUE_BACKEND           = "sqs"
      SQS_QUEUE_URL           = module.sqs.queue_url
      SQS_DLQ_URL             = module.sqs.dlq_url
      VISIBILITY_TIMEOUT_SECS = tostring(var.visibility_timeout_secs)
      S3_BUCKET_NAME          = module.archive.bucket_name
      SSM_TOKEN_PARAMETER     = module.ssm.api_token_name
      DELIVERY                = var.delivery
      SEND_RATE_PER_SECOND    = tostring(var.send_rate_per_second)
      SEND_BURST              = tostring(var.send_burst)
      MAX_ATTEMPTS            = tostring(var.max_attempts)
      WORKER_CONCURRENCY      = tostring(var.worker_concurrency)
      SHUTDOWN_GRACE_SECS     = "25"
      DEFAULT_FROM            = var.default_from
    },
    var.compat_recipient == null ? tomap({}) : tomap({ COMPAT_RECIPIENT = var.compat_recipient }),
  )

  # Secrets: variable => SSM parameter (ECS resolves ARNs; on EC2 mailroom resolves ssm:<name>).
  secret_arns = merge(
    { DATABASE_URL = module.ssm.database_url_arn },
    var.enable_redis ? tomap({ REDIS_URL = module.ssm.redis_url_arn }) : tomap({}),
    local.use_smtp ? tomap({ SMTP_URL = module.ssm.smtp_url_arn }) : tomap({}),
  )
  secret_names = merge(
    { DATABASE_URL = module.ssm.database_url_name },
    var.enable_redis ? tomap({ REDIS_URL = module.ssm.redis_url_name }) : tomap({}),
    local.use_smtp ? tomap({ SMTP_URL = module.ssm.smtp_url_name }) : tomap({}),
  )
}

module "kms" {
  source = "../kms"
  name   = var.name
  tags   = local.tags
}

module "network" {
  source             = "../network"
  name               = var.name
  cidr_block         = var.vpc_cidr_block
  availability_zones = var.availability_zones
  single_nat_gateway = var.single_nat_gateway
  kms_key_arn        = module.kms.key_arn
  tags               = local.tags
}

module "alb" {
  source              = "../alb"
  name                = var.name
  vpc_id              = module.network.vpc_id
  vpc_cidr_block      = module.network.vpc_cidr_block
  subnet_ids          = module.network.public_subnet_ids
  allowed_cidr_blocks = var.allowed_cidr_blocks
  certificate_arn     = var.certificate_arn
  target_type         = local.ecs ? "ip" : "instance"
  deletion_protection = var.deletion_protection
  access_logs_bucket  = var.alb_access_logs_bucket
  kms_key_arn         = module.kms.key_arn
  log_retention_days  = var.log_retention_days
  tags                = local.tags
}

module "sqs" {
  source                  = "../sqs"
  name                    = var.name
  visibility_timeout_secs = var.visibility_timeout_secs
  max_receive_count       = var.max_attempts + 2
  kms_key_arn             = module.kms.key_arn
  tags                    = local.tags
}

module "archive" {
  source          = "../s3_archive"
  bucket_name     = "${var.name}-archive-${var.bucket_suffix}"
  kms_key_arn     = module.kms.key_arn
  expiration_days = var.archive_expiration_days
  force_destroy   = !var.deletion_protection
  tags            = local.tags
}

module "rds" {
  source                    = "../rds"
  name                      = var.name
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnet_ids
  client_security_group_ids = local.app_security_group_ids
  instance_class            = var.db_instance_class
  allocated_storage_gib     = var.db_allocated_storage_gib
  max_allocated_storage_gib = var.db_max_allocated_storage_gib
  multi_az                  = var.db_multi_az
  backup_retention_days     = var.db_backup_retention_days
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = !var.deletion_protection
  kms_key_arn               = module.kms.key_arn
  tags                      = local.tags
}

module "redis" {
  count                     = var.enable_redis ? 1 : 0
  source                    = "../redis"
  name                      = var.name
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnet_ids
  client_security_group_ids = local.app_security_group_ids
  node_type                 = var.redis_node_type
  num_cache_clusters        = var.redis_num_cache_clusters
  multi_az                  = var.redis_num_cache_clusters > 1
  kms_key_arn               = module.kms.key_arn
  tags                      = local.tags
}

module "ssm" {
  source           = "../ssm"
  prefix           = local.param_prefix
  kms_key_arn      = module.kms.key_arn
  database_url     = module.rds.database_url
  create_redis_url = var.enable_redis
  redis_url        = var.enable_redis ? module.redis[0].redis_url : null
  create_smtp_url  = local.use_smtp
  tags             = local.tags
}

module "monitoring" {
  source                            = "../monitoring"
  name                              = var.name
  kms_key_arn                       = module.kms.key_arn
  log_retention_days                = var.log_retention_days
  alarm_emails                      = var.alarm_emails
  load_balancer                     = { arn_suffix = module.alb.arn_suffix, target_group_arn_suffix = module.alb.target_group_arn_suffix }
  sqs                               = { queue_name = module.sqs.queue_name, dlq_name = module.sqs.dlq_name }
  ecs_cluster_name                  = local.ecs ? module.cluster[0].cluster_name : null
  ecs_service_names                 = local.ecs ? tomap({ api = module.api_ecs[0].service_name, worker = module.worker_ecs[0].service_name }) : tomap({})
  autoscaling_group_names           = local.ec2 ? tomap({ api = module.api_ec2[0].autoscaling_group_name, worker = module.worker_ec2[0].autoscaling_group_name }) : tomap({})
  rds_instance_identifier           = module.rds.instance_identifier
  oldest_message_age_threshold_secs = var.oldest_message_age_alarm_secs
  tags                              = local.tags
}

# ---------------------------------------------------------------------------------------------
# IAM: what each role of mailroom may do, and nothing more.
# ---------------------------------------------------------------------------------------------
data "aws_iam_policy_document" "api" {
  statement {
    sid       = "EnqueueAndReadDepth"
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
    resources = [module.sqs.queue_arn]
  }

  statement {
    sid       = "ReadApiToken"
    actions   = ["ssm:GetParameter"]
    resources = [module.ssm.api_token_arn]
  }

  statement {
    sid       = "UseEnvironmentKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [module.kms.key_arn]
  }
}

data "aws_iam_policy_document" "worker" {
  statement {
    sid = "ConsumeQueue"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:SendMessage",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
    ]
    resources = [module.sqs.queue_arn, module.sqs.dlq_arn]
  }

  statement {
    sid       = "WriteArchive"
    actions   = ["s3:PutObject", "s3:GetObject"]
    resources = [local.archive_items]
  }

  # `mailroom check` writes and deletes this one probe key; archived messages stay undeletable.
  statement {
    sid       = "ArchiveCheckProbe"
    actions   = ["s3:DeleteObject"]
    resources = ["${module.archive.bucket_arn}/emails/.mailroom-check"]
  }

  statement {
    sid       = "UseEnvironmentKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [module.kms.key_arn]
  }

  dynamic "statement" {
    for_each = local.use_ses ? [1] : []
    content {
      sid       = "SendThroughSes"
      actions   = ["ses:SendEmail", "ses:SendRawEmail"]
      resources = var.ses_identity_arns
    }
  }

  # The send quota checked at start-up, and whether a paused account may send again.
  dynamic "statement" {
    for_each = local.use_ses ? [1] : []
    content {
      sid       = "ReadSesAccount"
      actions   = ["ses:GetAccount"]
      resources = ["*"]
    }
  }
}

# ---------------------------------------------------------------------------------------------
# Compute: ECS Fargate (default) ...
# ---------------------------------------------------------------------------------------------
locals {
  app_security_group_ids = local.ecs ? [
    module.api_ecs[0].security_group_id, module.worker_ecs[0].security_group_id,
    ] : [
    module.api_ec2[0].security_group_id, module.worker_ec2[0].security_group_id,
  ]
}

module "cluster" {
  count              = local.ecs ? 1 : 0
  source             = "../ecs_cluster"
  name               = var.name
  ecr_repository_arn = var.ecr_repository_arn
  log_group_arns     = values(module.monitoring.log_group_arns)
  ssm_parameter_arns = values(local.secret_arns)
  kms_key_arn        = module.kms.key_arn
  tags               = local.tags
}

module "api_ecs" {
  count                              = local.ecs ? 1 : 0
  source                             = "../ecs_service"
  name                               = "${var.name}-api"
  role                               = "api"
  cluster_arn                        = module.cluster[0].cluster_arn
  cluster_name                       = module.cluster[0].cluster_name
  execution_role_arn                 = module.cluster[0].execution_role_arn
  task_policy_json                   = data.aws_iam_policy_document.api.json
  image                              = local.image
  cpu                                = var.api_cpu
  memory                             = var.api_memory
  environment                        = local.environment
  secrets                            = local.secret_arns
  log_group_name                     = module.monitoring.log_group_names["api"]
  vpc_id                             = module.network.vpc_id
  vpc_cidr_block                     = module.network.vpc_cidr_block
  subnet_ids                         = module.network.private_subnet_ids
  metrics_port                       = var.metrics_port
  metrics_scraper_security_group_ids = var.metrics_scraper_security_group_ids
  smtp_egress_ports                  = []
  load_balancer = {
    target_group_arn  = module.alb.target_group_arn
    security_group_id = module.alb.security_group_id
  }
  desired_count      = var.api_min_count
  min_capacity       = var.api_min_count
  max_capacity       = var.api_max_count
  cpu_target_percent = 70
  tags               = local.tags
}

module "worker_ecs" {
  count                              = local.ecs ? 1 : 0
  source                             = "../ecs_service"
  name                               = "${var.name}-worker"
  role                               = "worker"
  cluster_arn                        = module.cluster[0].cluster_arn
  cluster_name                       = module.cluster[0].cluster_name
  execution_role_arn                 = module.cluster[0].execution_role_arn
  task_policy_json                   = data.aws_iam_policy_document.worker.json
  image                              = local.image
  cpu                                = var.worker_cpu
  memory                             = var.worker_memory
  environment                        = local.environment
  secrets                            = local.secret_arns
  log_group_name                     = module.monitoring.log_group_names["worker"]
  vpc_id                             = module.network.vpc_id
  vpc_cidr_block                     = module.network.vpc_cidr_block
  subnet_ids                         = module.network.private_subnet_ids
  metrics_port                       = var.metrics_port
  metrics_scraper_security_group_ids = var.metrics_scraper_security_group_ids
  smtp_egress_ports                  = local.smtp_ports
  desired_count                      = var.worker_min_count
  min_capacity                       = var.worker_min_count
  max_capacity                       = var.worker_max_count
  use_fargate_spot                   = var.worker_fargate_spot
  backlog_scaling = {
    queue_name        = module.sqs.queue_name
    messages_per_task = var.worker_backlog_per_task
  }
  tags = local.tags
}

# ---------------------------------------------------------------------------------------------
# ... or an EC2 Auto Scaling group per role.
# ---------------------------------------------------------------------------------------------
module "api_ec2" {
  count                 = local.ec2 ? 1 : 0
  source                = "../asg_service"
  name                  = "${var.name}-api"
  role                  = "api"
  image_repository_url  = var.image_repository_url
  ecr_repository_arn    = var.ecr_repository_arn
  initial_image_tag     = var.image_tag
  task_policy_json      = data.aws_iam_policy_document.api.json
  environment           = local.environment
  secret_parameters     = local.secret_names
  secret_parameter_arns = values(local.secret_arns)
  kms_key_arn           = module.kms.key_arn
  log_group_name        = module.monitoring.log_group_names["api"]
  log_group_arn         = module.monitoring.log_group_arns["api"]
  instance_type         = var.ec2_instance_type
  vpc_id                = module.network.vpc_id
  vpc_cidr_block        = module.network.vpc_cidr_block
  subnet_ids            = module.network.private_subnet_ids
  metrics_port          = var.metrics_port
  smtp_egress_ports     = []
  load_balancer = {
    target_group_arn  = module.alb.target_group_arn
    security_group_id = module.alb.security_group_id
  }
  min_size           = var.api_min_count
  max_size           = var.api_max_count
  desired_capacity   = var.api_min_count
  cpu_target_percent = 70
  tags               = local.tags
}

module "worker_ec2" {
  count                 = local.ec2 ? 1 : 0
  source                = "../asg_service"
  name                  = "${var.name}-worker"
  role                  = "worker"
  image_repository_url  = var.image_repository_url
  ecr_repository_arn    = var.ecr_repository_arn
  initial_image_tag     = var.image_tag
  task_policy_json      = data.aws_iam_policy_document.worker.json
  environment           = local.environment
  secret_parameters     = local.secret_names
  secret_parameter_arns = values(local.secret_arns)
  kms_key_arn           = module.kms.key_arn
  log_group_name        = module.monitoring.log_group_names["worker"]
  log_group_arn         = module.monitoring.log_group_arns["worker"]
  instance_type         = var.ec2_instance_type
  vpc_id                = module.network.vpc_id
  vpc_cidr_block        = module.network.vpc_cidr_block
  subnet_ids            = module.network.private_subnet_ids
  metrics_port          = var.metrics_port
  smtp_egress_ports     = local.smtp_ports
  min_size              = var.worker_min_count
  max_size              = var.worker_max_count
  desired_capacity      = var.worker_min_count
  cpu_target_percent    = 70
  tags                  = local.tags
}

module "static_site" {
  count               = var.enable_static_site ? 1 : 0
  source              = "../static_site"
  bucket_name         = "${var.name}-dashboard-${var.bucket_suffix}"
  kms_key_arn         = module.kms.key_arn
  aliases             = var.static_site_aliases
  acm_certificate_arn = var.static_site_certificate_arn
  tags                = local.tags
}
