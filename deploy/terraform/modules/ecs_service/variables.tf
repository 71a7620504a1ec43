variable "name" {
  description = "Name of the service, its task definition family and its roles, e.g. \"mailroom-prod-api\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,46}[a-z0-9]$", var.name))
    error_message = "name must be 3-48 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "role" {
  description = "Which mailroom subcommand the container runs: \"api\", \"worker\" or \"serve\" (both)."
  type        = string

  validation {
    condition     = contains(["api", "worker", "serve"], var.role)
    error_message = "role must be \"api\", \"worker\" or \"serve\"."
  }
}

variable "cluster_arn" {
  description = "ARN of the ECS cluster (ecs_cluster module)."
  type        = string
}

variable "cluster_name" {
  description = "Name of the ECS cluster (for the Auto Scaling resource ID and metrics)."
  type        = string
}

variable "execution_role_arn" {
  description = "Task execution role shared by all services (ecs_cluster module)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::", var.execution_role_arn))
    error_message = "execution_role_arn must be an IAM role ARN."
  }
}

variable "task_policy_json" {
  description = "IAM policy (JSON) of this service's own task role: exactly the queues, buckets, parameters and identities it uses."
  type        = string

  validation {
    condition     = can(jsondecode(var.task_policy_json).Statement)
    error_message = "task_policy_json must be an IAM policy document in JSON."
  }
}

variable "image" {
  description = "Container image, e.g. \"<account>.dkr.ecr.<region>.amazonaws.com/mailroom:<commit>\". CD deploys later revisions."
  type        = string

  validation {
    condition     = length(var.image) > 0
    error_message = "image must not be empty."
  }
}

variable "cpu" {
  description = "Fargate task CPU units (256 = 0.25 vCPU)."
  type        = number
  default     = 256

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096], var.cpu)
    error_message = "cpu must be one of 256, 512, 1024, 2048, 4096."
  }
}

variable "memory" {
  description = "Fargate task memory in MiB; must be valid for the chosen cpu."
  type        = number
  default     = 512

  validation {
    condition     = var.memory >= 512 && var.memory <= 30720
    error_message = "memory must be between 512 and 30720 MiB."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture of the image: \"X86_64\" or \"ARM64\"."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be \"X86_64\" or \"ARM64\"."
  }
}

variable "environment" {
  description = "Plain environment variables of the container (names from mailroom's settings table). Never put secrets here."
  type        = map(string)
  default     = {}
}

variable "secrets" {
  description = "Environment variables resolved by ECS from SSM parameters at start: name => parameter ARN."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for v in values(var.secrets) : can(regex("^arn:aws[a-z-]*:(ssm|secretsmanager):", v))])
    error_message = "Every secret must be an SSM parameter or Secrets Manager ARN."
  }
}

variable "container_port" {
  description = "Port mailroom listens on (its PORT setting)."
  type        = number
  default     = 8080

  validation {
    condition     = var.container_port > 0 && var.container_port < 65536
    error_message = "container_port must be a TCP port number."
  }
}

variable "metrics_port" {
  description = "Separate Prometheus port (METRICS_PORT), or null when /metrics is served on container_port."
  type        = number
  default     = null

  validation {
    condition     = var.metrics_port == null || try(var.metrics_port > 0 && var.metrics_port < 65536, false)
    error_message = "metrics_port must be null or a TCP port number."
  }
}

variable "metrics_scraper_security_group_ids" {
  description = "Security groups (e.g. a Prometheus server's) allowed to scrape the metrics port."
  type        = list(string)
  default     = []
}

variable "stop_timeout_secs" {
  description = "Seconds between SIGTERM and SIGKILL; above SHUTDOWN_GRACE_SECS (25) so in-flight leases are settled."
  type        = number
  default     = 30

  validation {
    condition     = var.stop_timeout_secs >= 2 && var.stop_timeout_secs <= 120
    error_message = "stop_timeout_secs must be between 2 and 120 (the Fargate maximum)."
  }
}

variable "log_group_name" {
  description = "CloudWatch log group of the container (monitoring module)."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the tasks."
  type        = string

  validation {
    condition     = can(regex("^vpc-", var.vpc_id))
    error_message = "vpc_id must be a VPC ID (vpc-...)."
  }
}

variable "vpc_cidr_block" {
  description = "CIDR of the VPC, where PostgreSQL and Redis are."
  type        = string

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr_block))
    error_message = "vpc_cidr_block must be a valid IPv4 CIDR."
  }
}

variable "subnet_ids" {
  description = "Private subnets the tasks run in (no public IPs)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids must not be empty."
  }
}

variable "smtp_egress_ports" {
  description = "Outbound SMTP ports to open towards the relay (empty when DELIVERY=ses)."
  type        = list(number)
  default     = [587]

  validation {
    condition     = alltrue([for p in var.smtp_egress_ports : contains([25, 465, 587, 2525], p)])
    error_message = "smtp_egress_ports may contain only 25, 465, 587 and 2525."
  }
}

variable "load_balancer" {
  description = "ALB target group to register tasks in and the ALB's security group, allowed to reach container_port (api); null for none (worker)."
  type = object({
    target_group_arn  = string
    security_group_id = string
  })
  default = null
}

variable "desired_count" {
  description = "Tasks at creation; Auto Scaling adjusts it afterwards."
  type        = number
  default     = 1

  validation {
    condition     = var.desired_count >= 0
    error_message = "desired_count must not be negative."
  }
}

variable "min_capacity" {
  description = "Fewest tasks Auto Scaling keeps."
  type        = number
  default     = 1

  validation {
    condition     = var.min_capacity >= 1
    error_message = "min_capacity must be at least 1 (backlog-per-task scaling cannot scale up from zero tasks)."
  }
}

variable "max_capacity" {
  description = "Most tasks Auto Scaling starts."
  type        = number
  default     = 4

  validation {
    condition     = var.max_capacity >= 1 && var.max_capacity <= 100
    error_message = "max_capacity must be between 1 and 100."
  }
}

variable "cpu_target_percent" {
  description = "Average CPU utilisation the service is scaled to keep (70 for the api), or null for no CPU scaling."
  type        = number
  default     = null

  validation {
    condition     = var.cpu_target_percent == null || try(var.cpu_target_percent > 0 && var.cpu_target_percent <= 100, false)
    error_message = "cpu_target_percent must be null or between 1 and 100."
  }
}

variable "backlog_scaling" {
  description = "Scale on SQS backlog per running task (worker): the queue's name and the visible messages one task should have at most; null for none."
  type = object({
    queue_name        = string
    messages_per_task = number
  })
  default = null

  validation {
    condition     = var.backlog_scaling == null || try(var.backlog_scaling.messages_per_task > 0, false)
    error_message = "backlog_scaling.messages_per_task must be positive."
  }
}

variable "use_fargate_spot" {
  description = "Run on Fargate Spot (cheaper, may be interrupted with a SIGTERM two minutes ahead; fine for workers)."
  type        = bool
  default     = false
}

variable "wait_for_steady_state" {
  description = "Make terraform apply wait until the service is stable."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
