variable "environment" {
  description = "Environment name: dev, staging or prod. Used in names, tags and the SSM prefix /mailroom/<environment>."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,11}$", var.environment))
    error_message = "environment must be 2-12 lower-case letters and digits, e.g. \"prod\"."
  }
}

variable "name" {
  description = "Name prefix of every resource, e.g. \"mailroom-prod\" (at most 24 characters, leaving room for suffixes)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name))
    error_message = "name must be 3-24 lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "bucket_suffix" {
  description = "Suffix that makes the bucket names globally unique, e.g. the AWS account ID."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9-]{3,20}$", var.bucket_suffix))
    error_message = "bucket_suffix must be 3-20 lower-case letters, digits and hyphens."
  }
}

variable "compute" {
  description = "Where mailroom runs: \"ecs\" (Fargate services) or \"ec2\" (Auto Scaling groups)."
  type        = string
  default     = "ecs"

  validation {
    condition     = contains(["ecs", "ec2"], var.compute)
    error_message = "compute must be \"ecs\" or \"ec2\"."
  }
}

variable "image_repository_url" {
  description = "ECR repository URL of mailroom's image (bootstrap output ecr_repository_url)."
  type        = string
}

variable "ecr_repository_arn" {
  description = "ARN of that repository (bootstrap output ecr_repository_arn)."
  type        = string
}

variable "image_tag" {
  description = "Image tag of the first deployment; CD deploys later ones."
  type        = string
  default     = "latest"
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}

# --- network and edge --------------------------------------------------------------------------
variable "vpc_cidr_block" {
  description = "CIDR of the VPC."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "Zone names to pin; empty means the first two of the region's zones a-d."
  type        = list(string)
  default     = []
}

variable "single_nat_gateway" {
  description = "One NAT gateway instead of one per AZ (cheaper, less available)."
  type        = bool
  default     = false
}

variable "allowed_cidr_blocks" {
  description = "Client networks allowed to reach the API."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "certificate_arn" {
  description = "ACM certificate of the API's HTTPS listener, or null for HTTP only (dev)."
  type        = string
  default     = null
}

variable "alb_access_logs_bucket" {
  description = "S3 bucket for ALB access logs, or null."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Protect the load balancer and database from deletion and keep final snapshots and non-empty buckets (staging, prod)."
  type        = bool
  default     = true
}

# --- mailroom settings --------------------------------------------------------------------------
variable "delivery" {
  description = "DELIVERY: \"ses\" (Amazon SES v2) or \"smtp\" (a relay; write SMTP_URL to its parameter out of band)."
  type        = string
  default     = "ses"

  validation {
    condition     = contains(["ses", "smtp"], var.delivery)
    error_message = "delivery must be \"ses\" or \"smtp\" on AWS."
  }
}

variable "smtp_port" {
  description = "Port of the SMTP relay, opened for egress when delivery is smtp."
  type        = number
  default     = 587
}

variable "ses_identity_arns" {
  description = "SES identities (domains or addresses) the workers may send as, when delivery is ses."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.ses_identity_arns : can(regex("^arn:aws[a-z-]*:ses:", a))])
    error_message = "ses_identity_arns must hold SES identity ARNs."
  }

  # Without one, the workers' policy would have a statement with no resource, which IAM refuses
  # with a message that names neither variable.
  validation {
    condition     = var.delivery != "ses" || length(var.ses_identity_arns) > 0
    error_message = "With delivery = \"ses\", ses_identity_arns must name at least one SES identity ARN the workers may send as."
  }
}

variable "default_from" {
  description = "DEFAULT_FROM: sender address of messages that name none (compat API)."
  type        = string

  validation {
    condition     = can(regex("@", var.default_from))
    error_message = "default_from must be an e-mail address."
  }
}

variable "compat_recipient" {
  description = "COMPAT_RECIPIENT: where /api/email messages are delivered, or null to only archive them."
  type        = string
  default     = null
}

variable "send_rate_per_second" {
  description = "SEND_RATE_PER_SECOND: global delivery ceiling across all workers (the provider's limit)."
  type        = number
  default     = 7

  validation {
    condition     = var.send_rate_per_second >= 0
    error_message = "send_rate_per_second must not be negative (0 turns the limit off)."
  }
}

variable "send_burst" {
  description = "SEND_BURST: messages that may go out at once above the steady rate."
  type        = number
  default     = 1

  validation {
    condition     = var.send_burst >= 1 && var.send_burst <= 10000 && floor(var.send_burst) == var.send_burst
    error_message = "send_burst must be a whole number from 1 to 10000 (mailroom refuses other SEND_BURST values)."
  }
}

variable "max_attempts" {
  description = "MAX_ATTEMPTS before a message is dead-lettered; SQS's own redrive is set two above it."
  type        = number
  default     = 8

  validation {
    condition     = var.max_attempts >= 1 && var.max_attempts <= 100
    error_message = "max_attempts must be between 1 and 100."
  }
}

variable "worker_concurrency" {
  description = "WORKER_CONCURRENCY: deliveries one worker task runs at once."
  type        = number
  default     = 8
}

variable "visibility_timeout_secs" {
  description = "VISIBILITY_TIMEOUT_SECS and the queue's visibility timeout."
  type        = number
  default     = 120

  validation {
    # mailroom requires SMTP_TIMEOUT_SECS (default 30) to be below the visibility timeout, so a
    # stalled relay cannot outlive a lease; SQS allows at most 12 hours.
    condition     = var.visibility_timeout_secs > 30 && var.visibility_timeout_secs <= 43200
    error_message = "visibility_timeout_secs must be above 30 (mailroom's SMTP timeout) and at most 43200."
  }
}

variable "rust_log" {
  description = "RUST_LOG filter."
  type        = string
  default     = "info"
}

variable "archive_expiration_days" {
  description = "Days after which archived messages are deleted, or null to keep them."
  type        = number
  default     = null
}

# --- sizes ----------------------------------------------------------------------------------------
variable "api_cpu" {
  description = "Fargate CPU units of an api task."
  type        = number
  default     = 256
}

variable "api_memory" {
  description = "Fargate memory (MiB) of an api task."
  type        = number
  default     = 512
}

variable "api_min_count" {
  description = "Fewest api tasks or instances."
  type        = number
  default     = 2
}

variable "api_max_count" {
  description = "Most api tasks or instances."
  type        = number
  default     = 6
}

variable "worker_cpu" {
  description = "Fargate CPU units of a worker task."
  type        = number
  default     = 256
}

variable "worker_memory" {
  description = "Fargate memory (MiB) of a worker task."
  type        = number
  default     = 512
}

variable "worker_min_count" {
  description = "Fewest worker tasks or instances."
  type        = number
  default     = 1
}

variable "worker_max_count" {
  description = "Most worker tasks or instances."
  type        = number
  default     = 4
}

variable "worker_backlog_per_task" {
  description = "Visible SQS messages per worker task that the backlog scaling keeps."
  type        = number
  default     = 500
}

variable "worker_fargate_spot" {
  description = "Run workers on Fargate Spot."
  type        = bool
  default     = false
}

variable "ec2_instance_type" {
  description = "Instance type when compute is ec2."
  type        = string
  default     = "t3.small"
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.small"
}

variable "db_allocated_storage_gib" {
  description = "Initial RDS storage (GiB)."
  type        = number
  default     = 20
}

variable "db_max_allocated_storage_gib" {
  description = "RDS storage autoscaling ceiling (GiB)."
  type        = number
  default     = 100
}

variable "db_multi_az" {
  description = "RDS standby in a second AZ."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of RDS automated backups."
  type        = number
  default     = 7
}

variable "enable_redis" {
  description = "Create ElastiCache Redis and hand REDIS_URL over, sharing the rate limit across replicas. Without it, each worker limits itself (run one worker)."
  type        = bool
  default     = true
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.micro"
}

variable "redis_num_cache_clusters" {
  description = "Redis nodes (2+ for failover)."
  type        = number
  default     = 2
}

# --- observability ------------------------------------------------------------------------------
variable "log_retention_days" {
  description = "Days to keep logs in CloudWatch."
  type        = number
  default     = 365
}

variable "alarm_emails" {
  description = "Addresses subscribed to the alarm topic."
  type        = list(string)
  default     = []
}

variable "oldest_message_age_alarm_secs" {
  description = "Age of the oldest queued message that raises an alarm."
  type        = number
  default     = 900
}

# --- dashboard pages ------------------------------------------------------------------------------
variable "enable_static_site" {
  description = "Serve the dashboard pages from S3 and CloudFront as well."
  type        = bool
  default     = false
}

variable "static_site_aliases" {
  description = "Custom domains of the dashboard distribution."
  type        = list(string)
  default     = []
}

variable "static_site_certificate_arn" {
  description = "ACM certificate (us-east-1) for those domains."
  type        = string
  default     = null
}

variable "metrics_port" {
  description = "METRICS_PORT for both roles: /metrics and /health on a port of their own, which the load balancer never reaches. null serves them on the API port (the load balancer answers /metrics there with 404)."
  type        = number
  default     = null

  validation {
    condition     = var.metrics_port == null || try(var.metrics_port > 0 && var.metrics_port < 65536 && var.metrics_port != 8080, false)
    error_message = "metrics_port must be null or a TCP port other than 8080, the API's port (mailroom refuses METRICS_PORT equal to PORT)."
  }
}

variable "metrics_scraper_security_group_ids" {
  description = "Security groups (a Prometheus, an ADOT collector) allowed to reach the tasks' metrics port (ECS)."
  type        = list(string)
  default     = []
}
